"""Helpers of the scale benchmarks (bench/scale_utils.py): the synthetic Zipf
corpus, the markdown table, peak RSS. Standard library and numpy only."""

import os
import tempfile
import unittest

import numpy as np

from bench import scale_utils


class ZipfCorpusTest(unittest.TestCase):

  def test_counts_follow_the_law_with_a_floor_of_one(self):
    counts = scale_utils.zipf_counts(n_words=1000, n_tokens=5000,
                                     exponent=1.0)
    self.assertEqual(counts.shape, (1000,))
    self.assertTrue(np.all(np.diff(counts) <= 0))  # Non-increasing.
    self.assertEqual(counts.min(), 1)  # Every word occurs.
    # Rank 1 against rank 10: about 10x under exponent 1.
    self.assertAlmostEqual(counts[0] / counts[9], 10.0, delta=0.5)
    self.assertGreaterEqual(counts.sum(), 5000)
    self.assertLess(counts.sum(), 5000 * 1.2)

  def test_bad_arguments(self):
    with self.assertRaises(ValueError):
      scale_utils.zipf_counts(0, 10, 1.0)
    with self.assertRaises(ValueError):
      scale_utils.zipf_counts(10, 10, 0.0)

  def test_sentences_are_deterministic_and_hold_every_token(self):
    first = list(scale_utils.zipf_sentences(300, 3000, 1.05, seed=3))
    again = list(scale_utils.zipf_sentences(300, 3000, 1.05, seed=3))
    other = list(scale_utils.zipf_sentences(300, 3000, 1.05, seed=4))
    self.assertEqual(first, again)
    self.assertNotEqual(first, other)
    words = [w for sentence in first for w in sentence]
    counts = scale_utils.zipf_counts(300, 3000, 1.05)
    self.assertEqual(len(words), counts.sum())
    self.assertEqual(len(set(words)), 300)
    self.assertEqual(words.count("w0"), counts[0])
    self.assertEqual(words.count("w299"), counts[299])
    self.assertTrue(all(5 <= len(s) for s in first[:-1]))
    self.assertTrue(all(len(s) <= 40 for s in first))

  def test_written_corpus(self):
    with tempfile.TemporaryDirectory() as tmp:
      info = scale_utils.write_zipf_corpus(tmp, n_words=200, n_tokens=2000,
                                           exponent=1.1, seed=0,
                                           valid_sentences=7)
      train = os.path.join(tmp, "train.txt")
      valid = os.path.join(tmp, "valid.txt")
      self.assertEqual(info["spec"], f"train={train};valid={valid}")
      with open(train, encoding="utf-8") as f:
        lines = f.read().splitlines()
      self.assertEqual(len(lines), info["train_sentences"])
      words = " ".join(lines).split(" ")
      self.assertEqual(len(words), info["train_tokens"])
      self.assertEqual(len(set(words)), 200)
      with open(valid, encoding="utf-8") as f:
        self.assertEqual(len(f.read().splitlines()), 7)
      self.assertEqual(scale_utils.directory_bytes(tmp),
                       os.path.getsize(train) + os.path.getsize(valid))


class TableTest(unittest.TestCase):

  def test_markdown_table(self):
    table = scale_utils.markdown_table(
        ["vocab", "s/step", "ratio", "note"],
        [[10000, 1.23456, 1.0, None], [800000, 0.5, 12345.6, "x"]])
    self.assertEqual(table.splitlines(), [
        "| vocab | s/step | ratio | note |",
        "|---|---|---|---|",
        "| 10,000 | 1.23 | 1 | - |",
        "| 800,000 | 0.5 | 12,346 | x |",
    ])

  def test_row_of_wrong_width(self):
    with self.assertRaises(ValueError):
      scale_utils.markdown_table(["a", "b"], [[1]])


class ProcessTest(unittest.TestCase):

  def test_peak_rss_is_positive(self):
    self.assertGreater(scale_utils.peak_rss_bytes(), 1 << 20)

  def test_free_ports(self):
    ports = scale_utils.free_ports(2)
    self.assertEqual(len(ports), 2)
    self.assertTrue(all(0 < p < 65536 for p in ports))


if __name__ == "__main__":
  unittest.main()
