"""elmo_tf.polysemy and bin/polysemy: one word's vectors across sentences.

Pure functions on toy arrays; a tiny exported model (layer 0 is
context-free, matrices are cosine matrices, a multi-token word is the mean
of its positions, the PNG and the program); and the shipped Chinese model,
whose top layer must keep the two senses of 包袱 apart.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
import tensorflow as tf

from elmo_tf import export as export_lib
from elmo_tf import polysemy
from elmo_tf import tokenizers
from tests import export_testutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAVEDMODELS = os.path.join(REPO_ROOT, "savedmodels")
BENCH = os.path.join(REPO_ROOT, "bench", "polysemy")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Sentences for the tiny (whitespace, toy-grammar) model; line 2 is empty.
TOY_LINES = [
    "the cat sees a dog .",
    "",
    "my sister likes the green tree near the school .",
    "a green tree hears her friend and the cat",
    "The Cat sees the green tree",
]


def _write_lines(path: str, lines, encoding="utf-8") -> str:
  with open(path, "wb") as f:
    for line in lines:
      f.write((line.encode(encoding) if isinstance(line, str) else line)
              + b"\n")
  return path


def _subprocess_env(**extra) -> dict:
  return dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_NUM_INTRAOP_THREADS="1",
              TF_NUM_INTEROP_THREADS="1", **extra)


class FunctionsTest(tf.test.TestCase):
  """The pure functions, on small hand-made inputs."""

  def setUp(self):
    super().setUp()
    self.tmp = self.get_temp_dir()

  def test_find_occurrence_takes_the_first(self):
    tokens = ["a", "包", "袱", "b", "包", "袱"]
    self.assertEqual(polysemy.find_occurrence(tokens, ["包", "袱"]), 1)
    self.assertEqual(polysemy.find_occurrence(tokens, ["b"]), 3)
    self.assertEqual(polysemy.find_occurrence(tokens, ["袱", "a"]), -1)
    self.assertEqual(polysemy.find_occurrence(tokens, []), -1)
    self.assertEqual(polysemy.find_occurrence(["包"], ["包", "袱"]), -1)

  def test_cosine_matrix(self):
    vectors = np.array([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0], [0.0, 0.0]])
    matrix = polysemy.cosine_matrix(vectors)
    self.assertAllClose(matrix[:3, :3],
                        [[1.0, 2**-0.5, -1.0], [2**-0.5, 1.0, -2**-0.5],
                         [-1.0, -2**-0.5, 1.0]])
    self.assertAllEqual(matrix[3], np.zeros(4))  # A zero vector.
    self.assertAllEqual(matrix, matrix.T)

  def test_sense_separation(self):
    matrix = np.array([[1.0, 0.9, 0.2, 0.4],
                       [0.9, 1.0, 0.3, 0.5],
                       [0.2, 0.3, 1.0, 0.7],
                       [0.4, 0.5, 0.7, 1.0]])
    result = polysemy.sense_separation(matrix, ["a", "a", "b", "b"])
    self.assertAlmostEqual(result.within, (0.9 + 0.7) / 2)
    self.assertAlmostEqual(result.across, (0.2 + 0.4 + 0.3 + 0.5) / 4)
    self.assertEqual((result.n_within, result.n_across), (2, 4))
    # No pair within a sense: NaN, not an error.
    alone = polysemy.sense_separation(matrix[:2, :2], ["a", "b"])
    self.assertTrue(np.isnan(alone.within))
    self.assertAlmostEqual(alone.across, 0.9)
    with self.assertRaisesRegex(ValueError, "3 labels"):
      polysemy.sense_separation(matrix, ["a", "a", "b"])

  def test_read_sentences_skips_empty_lines_and_keeps_line_numbers(self):
    path = _write_lines(os.path.join(self.tmp, "s.txt"),
                        ["第一句。", "", "  ", "third line\r"])
    sentences = polysemy.read_sentences(path)
    self.assertEqual([(s.line_number, s.text) for s in sentences],
                     [(1, "第一句。"), (4, "third line")])
    self.assertEqual(sentences[1].location, f"{path}:4")

  def test_read_sentences_names_an_invalid_line(self):
    path = _write_lines(os.path.join(self.tmp, "bad.txt"),
                        ["good", b"bad \xff\xfe", "good"])
    with self.assertRaisesRegex(polysemy.PolysemyError,
                                f"{path}:2: invalid UTF-8"):
      polysemy.read_sentences(path)
    with self.assertRaisesRegex(polysemy.PolysemyError, "no such file"):
      polysemy.read_sentences(os.path.join(self.tmp, "missing.txt"))
    empty = _write_lines(os.path.join(self.tmp, "empty.txt"), ["", " "])
    with self.assertRaisesRegex(polysemy.PolysemyError, "no sentences"):
      polysemy.read_sentences(empty)

  def test_read_senses_by_line_number(self):
    sentences = polysemy.read_sentences(_write_lines(
        os.path.join(self.tmp, "s.txt"), ["a x", "", "b x"]))
    senses = _write_lines(os.path.join(self.tmp, "s.senses"),
                          ["one", "", "two"])
    self.assertEqual(polysemy.read_senses(senses, sentences), ["one", "two"])
    short = _write_lines(os.path.join(self.tmp, "short.senses"), ["one"])
    with self.assertRaisesRegex(polysemy.PolysemyError,
                                f"{short}:3: no sense label"):
      polysemy.read_senses(short, sentences)

  def test_locate_first_occurrence_of_a_multi_token_word(self):
    tokenizer = tokenizers.get_tokenizer("chinese_chars")
    sentences = [polysemy.Sentence("f", 1, "他背起包袱，又放下包袱。"),
                 polysemy.Sentence("f", 2, "包袱太重")]
    occurrences = polysemy.locate(sentences, "包袱", tokenizer)
    self.assertEqual([(o.start, o.length) for o in occurrences],
                     [(3, 2), (0, 2)])
    with self.assertRaisesRegex(polysemy.PolysemyError,
                                "f:7: the sentence does not contain '包袱'"):
      polysemy.locate([polysemy.Sentence("f", 7, "没有这个词")], "包袱",
                      tokenizer)
    with self.assertRaisesRegex(polysemy.PolysemyError, "has no tokens"):
      polysemy.locate(sentences, " ", tokenizer)

  def test_locate_lowercase(self):
    tokenizer = tokenizers.get_tokenizer("whitespace")
    sentences = [polysemy.Sentence("f", 1, "One Apple A Day")]
    with self.assertRaises(polysemy.PolysemyError):
      polysemy.locate(sentences, "apple", tokenizer)
    (occurrence,) = polysemy.locate(sentences, "APPLE", tokenizer,
                                    lowercase=True)
    self.assertEqual(occurrence.tokens, ("one", "apple", "a", "day"))
    self.assertEqual(occurrence.start, 1)

  def test_excerpt_and_table_widths(self):
    self.assertEqual(polysemy.display_width("包袱ab"), 6)
    text = "她手里抱着一个小红包袱，步履轻易的朝我走来"
    short = polysemy.excerpt(text, "包袱", width=16)
    self.assertIn("包袱", short)
    self.assertLessEqual(polysemy.display_width(short), 16)
    self.assertEqual(polysemy.excerpt("short", "x", width=16), "short")
    table = polysemy.format_table(np.array([[1.0, 0.5], [0.5, 1.0]]),
                                  ["L1 包袱", "L3 bundle"])
    lines = table.split("\n")
    self.assertEqual(len(lines), 3)
    self.assertEqual(len({polysemy.display_width(l) for l in lines}), 1)
    self.assertIn("0.500", lines[1])
    self.assertEqual(lines[0].split(), ["L1", "L3"])


class TinyModelTest(tf.test.TestCase):
  """A tiny whitespace model trained for a few steps and exported."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.saved_model = export_lib.export_saved_model(
        model_dir, os.path.join(cls.tmp, "saved_model"))
    cls.text = _write_lines(os.path.join(cls.tmp, "toy.txt"), TOY_LINES)
    cls.sentences = polysemy.read_sentences(cls.text)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_layer0_is_context_free_and_matrices_are_cosines(self):
    result = polysemy.analyze(self.saved_model, "cat",
                              [self.sentences[i] for i in (0, 2)])
    self.assertEqual(result.layers,
                     ["word_emb", "lstm_outputs1", "lstm_outputs2"])
    self.assertEqual(
        [o.sentence.line_number for o in result.occurrences], [1, 4])
    self.assertAllClose(result.matrices["word_emb"], np.ones((2, 2)),
                        atol=1e-5)
    projection = 16  # The tiny preset's P.
    self.assertEqual(result.vectors["word_emb"].shape, (2, projection))
    for layer in result.layers[1:]:
      self.assertEqual(result.vectors[layer].shape, (2, 2 * projection))
    # The contextual layers see different sentences.
    self.assertLess(result.matrices["lstm_outputs1"][0, 1], 1.0 - 1e-4)
    for layer, matrix in result.matrices.items():
      self.assertAllClose(matrix, matrix.T, atol=1e-12, msg=layer)
      self.assertAllClose(np.diag(matrix), np.ones(2), atol=1e-6, msg=layer)
      self.assertTrue(np.all(np.abs(matrix) <= 1.0), layer)

  def test_multi_token_word_is_the_mean_of_its_positions(self):
    sentences = self.sentences[1:]  # Lines 3, 4 and 5 ("The Cat ...").
    result = polysemy.analyze(self.saved_model, "Green Tree", sentences,
                              lowercase=True)
    self.assertEqual([(o.start, o.length) for o in result.occurrences],
                     [(4, 2), (1, 2), (4, 2)])
    # The same word (two tokens): the same layer-0 vector everywhere.
    self.assertAllClose(result.matrices["word_emb"], np.ones((3, 3)),
                        atol=1e-5)
    # Against a direct call of the `tokens` signature, one sentence at a
    # time (no padding).
    signature = tf.saved_model.load(self.saved_model).signatures["tokens"]
    for i, occurrence in enumerate(result.occurrences):
      outputs = signature(
          tokens=tf.constant([list(occurrence.tokens)]),
          sequence_len=tf.constant([len(occurrence.tokens)], tf.int32))
      for layer in result.layers:
        positions = outputs[layer][0].numpy()[
            occurrence.start:occurrence.start + 2]  # (2, width)
        self.assertAllClose(result.vectors[layer][i], positions.mean(axis=0),
                            atol=1e-5, msg=f"{layer}, sentence {i}")
    # Batching does not change the vectors.
    single = polysemy.analyze(self.saved_model, "green tree", sentences,
                              lowercase=True, batch_size=1)
    for layer in result.layers:
      self.assertAllClose(single.vectors[layer], result.vectors[layer],
                          atol=1e-5)

  def test_a_sentence_without_the_word_is_an_error_naming_it(self):
    with self.assertRaisesRegex(
        polysemy.PolysemyError,
        f"{self.text}:3: the sentence does not contain 'cat'"):
      polysemy.analyze(self.saved_model, "cat", self.sentences)
    with self.assertRaisesRegex(polysemy.PolysemyError, "not a SavedModel"):
      polysemy.analyze(self.tmp, "cat", self.sentences)

  def test_heatmap_png(self):
    result = polysemy.analyze(self.saved_model, "green tree",
                              self.sentences[1:], lowercase=True)
    path = polysemy.plot_heatmaps(
        result, os.path.join(self.tmp, "plots", "toy.png"),
        senses=["x", "y", "x"])
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), PNG_MAGIC)
    from matplotlib import image  # pylint: disable=g-import-not-at-top
    pixels = image.imread(path)  # (height, width, 4)
    self.assertGreater(pixels.shape[1], pixels.shape[0])  # 3 panels wide.
    self.assertGreater(float(pixels.std()), 0.0)

  def test_program(self):
    # Lines 1 and 3 mention the cat; line 2 is empty.
    _write_lines(os.path.join(self.tmp, "cat.txt"),
                 [TOY_LINES[0], "", TOY_LINES[4]])
    # Relative paths are resolved against BUILD_WORKING_DIRECTORY (bazel run).
    result = subprocess.run(
        [sys.executable, "-m", "bin.polysemy", "--saved_model=saved_model",
         "--word=cat", "--input=cat.txt", "--lowercase",
         "--output=out/cat.png"],
        cwd=REPO_ROOT, env=_subprocess_env(BUILD_WORKING_DIRECTORY=self.tmp),
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    for index, layer in enumerate(["word_emb", "lstm_outputs1",
                                   "lstm_outputs2"]):
      self.assertIn(f"layer {index} ({layer}): cosine similarity of 'cat'",
                    result.stdout)
    self.assertIn("L1 the cat sees a dog .", result.stdout)
    self.assertIn("L3 The Cat sees the green tree", result.stdout)
    with open(os.path.join(self.tmp, "out", "cat.png"), "rb") as f:
      self.assertEqual(f.read(8), PNG_MAGIC)


class ShippedChineseModelTest(tf.test.TestCase):
  """savedmodels/peoples_daily_chars on bench/polysemy/baofu.txt."""

  def test_top_layer_separates_the_senses_of_baofu(self):
    saved_model = os.path.join(SAVEDMODELS, "peoples_daily_chars")
    sentences = polysemy.read_sentences(os.path.join(BENCH, "baofu.txt"))
    senses = polysemy.read_senses(os.path.join(BENCH, "baofu.senses"),
                                  sentences)
    for sense in set(senses):
      self.assertGreaterEqual(senses.count(sense), 3, sense)
    result = polysemy.analyze(saved_model, "包袱", sentences)
    self.assertTrue(all(o.length == 2 for o in result.occurrences))
    self.assertAllClose(result.matrices["word_emb"],
                        np.ones((len(sentences),) * 2), atol=1e-5)
    top = result.layers[-1]
    separation = polysemy.sense_separation(result.matrices[top], senses)
    self.assertGreater(
        separation.within, separation.across,
        f"{top}: mean cosine within a sense {separation.within:.4f}, "
        f"across senses {separation.across:.4f}")


if __name__ == "__main__":
  unittest.main()
