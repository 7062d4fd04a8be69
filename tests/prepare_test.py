"""Tests for elmo_tf.prepare (writer and cache), elmo_tf.prepared_corpus
(reader) and bin/prepare_corpus."""

import json
import os
import shutil
import tempfile
import unittest
from unittest import mock

from absl import flags

from elmo_tf import corpora
from elmo_tf import prepare
from elmo_tf import prepared_corpus
from elmo_tf import vocab as vocab_lib

LONG_TOKEN = "x" * 70  # 70 bytes: cut to 48 by the character ids only.


def _write(path, lines):
  with open(path, "wb") as f:
    for line in lines:
      f.write(line if isinstance(line, bytes) else line.encode("utf-8"))
      f.write(b"\n")
  return path


class PrepareTest(unittest.TestCase):

  def setUp(self):
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)
    self.train = _write(os.path.join(self.tmp, "train.txt"), [
        "the cat sat", "", "the dog  sat\t down", "   ", f"the {LONG_TOKEN}",
        "a cat", "the end"])
    self.valid = _write(os.path.join(self.tmp, "valid.txt"),
                        ["the cat ran", "zebra"])
    self.spec = f"train={self.train};valid={self.valid}"

  def _leftovers(self):
    return [n for n in os.listdir(self.tmp) if ".tmp-" in n]

  def test_shards_vocab_and_manifest(self):
    out = os.path.join(self.tmp, "out")
    prepared = prepare.prepare_corpus(self.spec, "whitespace", out,
                                      lines_per_shard=2)
    self.assertEqual(prepared.directory, out)
    # 5 sentences in shards of 2.
    self.assertEqual([os.path.basename(f) for f in prepared.files("train")],
                     ["train-00000.txt", "train-00001.txt", "train-00002.txt"])
    self.assertEqual(list(prepared.sentences("train")), [
        ["the", "cat", "sat"], ["the", "dog", "sat", "down"],
        ["the", LONG_TOKEN], ["a", "cat"], ["the", "end"]])
    self.assertEqual(prepared.files("test"), [])
    # Vocabulary from train only ("ran", "zebra" are valid-only), by count.
    self.assertEqual(prepared.vocab.tokens[:6],
                     ["<S>", "</S>", "<UNK>", "the", "cat", "sat"])
    self.assertIn(LONG_TOKEN, prepared.vocab)
    self.assertNotIn("zebra", prepared.vocab)
    m = prepared.manifest
    self.assertEqual(m["tokenization"], "whitespace")
    self.assertEqual(m["source"]["corpus"], self.spec)
    train = m["splits"]["train"]
    self.assertEqual(
        (train["lines"], train["tokens"], train["source_lines"],
         train["skipped_empty_lines"], train["skipped_bad_lines"]),
        (5, 13, 7, 2, 0))
    self.assertEqual(train["sentence_lengths"], {"2": 3, "3": 1, "4": 1})
    self.assertEqual(m["splits"]["valid"]["tokens"], 4)
    self.assertEqual(m["vocabulary"]["size"], prepared.vocab.size)
    self.assertEqual(m["vocabulary"]["size"], 3 + 8)
    self.assertEqual(m["validation"]["oov_tokens"], 2)  # ran, zebra
    self.assertAlmostEqual(m["validation"]["oov_rate"], 0.5)
    self.assertAlmostEqual(m["validation"]["coverage"], 0.5)
    self.assertIn("elmo_tf_version", m)
    self.assertEqual(prepared.sentence_lengths("train"), {2: 3, 3: 1, 4: 1})
    self.assertEqual(self._leftovers(), [])
    # Loading again gives the same manifest.
    self.assertEqual(prepare.PreparedCorpus.load(out).manifest, m)
    # Another vocabulary (a trained model's) over the same shards.
    other = prepared.with_vocab(vocab_lib.Vocabulary(
        ["<S>", "</S>", "<UNK>", "cat"]))
    self.assertEqual(other.vocab.size, 4)
    self.assertEqual(other.files("train"), prepared.files("train"))
    self.assertEqual(prepared.vocab.size, 11)

  def test_min_count_and_max_vocab(self):
    prepared = prepare.prepare_corpus(self.spec, "whitespace",
                                      os.path.join(self.tmp, "a"), min_count=2)
    self.assertEqual(prepared.vocab.tokens[3:], ["the", "cat", "sat"])
    prepared = prepare.prepare_corpus(self.spec, "whitespace",
                                      os.path.join(self.tmp, "b"), max_vocab=4)
    self.assertEqual(prepared.vocab.tokens, ["<S>", "</S>", "<UNK>", "the"])
    self.assertEqual(prepared.manifest["vocabulary"]["max_vocab"], 4)

  def test_bad_utf8_errors_with_file_and_line(self):
    _write(self.train, ["good line", "still good", b"bad \xff byte", "ok"])
    out = os.path.join(self.tmp, "out")
    with self.assertRaisesRegex(corpora.CorpusError,
                                rf"{self.train}:3: invalid UTF-8"):
      prepare.prepare_corpus(self.spec, "whitespace", out)
    # Nothing half-written.
    self.assertFalse(os.path.exists(out))
    self.assertEqual(self._leftovers(), [])

  def test_bad_utf8_skip_mode_counts_and_lists_lines(self):
    _write(self.train, ["good line", b"\xc3", "ok", b"\xff\xfe"])
    prepared = prepare.prepare_corpus(self.spec, "whitespace",
                                      os.path.join(self.tmp, "out"),
                                      on_bad_line="skip")
    train = prepared.manifest["splits"]["train"]
    self.assertEqual(train["skipped_bad_lines"], 2)
    self.assertEqual(train["bad_lines"],
                     [f"{self.train}:2", f"{self.train}:4"])
    self.assertEqual(train["lines"], 2)
    self.assertEqual(prepared.manifest["on_bad_line"], "skip")

  def test_errors_before_any_work(self):
    out = os.path.join(self.tmp, "out")
    with mock.patch.object(prepare, "_write_split") as write_split:
      with self.assertRaisesRegex(corpora.CorpusError, "matched no files"):
        prepare.prepare_corpus(f"{self.train},{self.tmp}/none-*.txt",
                               "whitespace", out)
      with self.assertRaisesRegex(corpora.CorpusError, "does not exist"):
        prepare.prepare_corpus(f"train={self.train};test={self.tmp}/no.txt",
                               "whitespace", out)
      with self.assertRaisesRegex(corpora.CorpusError, "tokenization"):
        prepare.prepare_corpus(self.spec, "nonsense", out)
      with self.assertRaisesRegex(corpora.CorpusError, "on_bad_line"):
        prepare.prepare_corpus(self.spec, "whitespace", out,
                               on_bad_line="ignore")
      empty = _write(os.path.join(self.tmp, "empty.txt"), [])
      with self.assertRaisesRegex(corpora.CorpusError, "no training text"):
        prepare.prepare_corpus(empty, "whitespace", out)
      write_split.assert_not_called()
    self.assertFalse(os.path.exists(out))

  def test_corpus_without_tokens(self):
    blank = _write(os.path.join(self.tmp, "blank.txt"), ["  ", "\t", ""])
    out = os.path.join(self.tmp, "out")
    with self.assertRaisesRegex(corpora.CorpusError, "no tokens"):
      prepare.prepare_corpus(blank, "whitespace", out)
    self.assertFalse(os.path.exists(out))
    self.assertEqual(self._leftovers(), [])

  def test_existing_output_is_not_overwritten_unless_asked(self):
    out = os.path.join(self.tmp, "out")
    prepare.prepare_corpus(self.spec, "whitespace", out)
    with self.assertRaisesRegex(corpora.CorpusError, "already exists"):
      prepare.prepare_corpus(self.spec, "whitespace", out)
    prepared = prepare.prepare_corpus(self.spec, "whitespace", out,
                                      min_count=2, overwrite=True)
    self.assertEqual(prepared.manifest["vocabulary"]["min_count"], 2)
    self.assertEqual(self._leftovers(), [])

  def test_chinese_chars_tokenization(self):
    path = _write(os.path.join(self.tmp, "zh.txt"), ["我爱北京。", "我们"])
    prepared = prepare.prepare_corpus(path, "chinese_chars",
                                      os.path.join(self.tmp, "out"))
    self.assertEqual(list(prepared.sentences("train")),
                     [["我", "爱", "北", "京", "。"], ["我", "们"]])

  def test_reader_is_prepared_corpus_and_old_names_stay(self):
    self.assertIs(prepare.PreparedCorpus, prepared_corpus.PreparedCorpus)
    self.assertIs(prepare.PreparedCorpusError,
                  prepared_corpus.PreparedCorpusError)
    out = os.path.join(self.tmp, "out")
    with mock.patch.object(prepared_corpus, "read_sentences",
                           wraps=prepared_corpus.read_sentences) as read:
      prepared = prepare.prepare_corpus(self.spec, "whitespace", out,
                                        lines_per_shard=2)
    # The writer reads back the train (vocabulary) and valid (coverage)
    # shards it wrote with the reader's function.
    self.assertEqual(
        [[os.path.basename(p) for p in call.args[0]]
         for call in read.call_args_list],
        [["train-00000.txt", "train-00001.txt", "train-00002.txt"],
         ["valid-00000.txt"]])
    self.assertEqual(
        list(prepared_corpus.read_sentences(prepared.files("valid"))),
        [["the", "cat", "ran"], ["zebra"]])

  def test_load_errors(self):
    with self.assertRaisesRegex(prepared_corpus.PreparedCorpusError,
                                "manifest.json is missing"):
      prepared_corpus.PreparedCorpus.load(self.tmp)
    out = os.path.join(self.tmp, "out")
    prepare.prepare_corpus(self.spec, "whitespace", out)
    with open(os.path.join(out, "manifest.json"), "w") as f:
      f.write("{not json")
    with self.assertRaisesRegex(prepared_corpus.PreparedCorpusError,
                                "Corrupt"):
      prepared_corpus.PreparedCorpus.load(out)
    with open(os.path.join(out, "manifest.json"), "w") as f:
      json.dump({"format_version": 1}, f)
    with self.assertRaisesRegex(prepared_corpus.PreparedCorpusError,
                                "splits"):
      prepared_corpus.PreparedCorpus.load(out)

  def test_prepare_cached_caches_and_checks_tokenization(self):
    cache = os.path.join(self.tmp, "cache")
    first = prepare.prepare_cached(self.spec, None, cache)
    self.assertTrue(first.directory.startswith(cache))
    self.assertEqual(first.tokenization, "whitespace")
    with mock.patch.object(prepare, "prepare_corpus") as prepare_corpus:
      again = prepare.prepare_cached(self.spec, "whitespace", cache)
      prepare_corpus.assert_not_called()
    self.assertEqual(again.directory, first.directory)
    # Other settings give another cache entry.
    other = prepare.prepare_cached(self.spec, "whitespace", cache,
                                    min_count=2)
    self.assertNotEqual(other.directory, first.directory)
    # A prepared directory is used as is.
    direct = prepare.prepare_cached(first.directory, None, "/nonexistent")
    self.assertEqual(direct.directory, first.directory)
    with self.assertRaisesRegex(prepare.PreparedCorpusError,
                                "tokenized with 'whitespace'"):
      prepare.prepare_cached(first.directory, "chinese_chars", cache)


class PrepareCorpusProgramTest(unittest.TestCase):

  def setUp(self):
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp)
    from bin import prepare_corpus  # pylint: disable=g-import-not-at-top
    self.program = prepare_corpus
    self.addCleanup(flags.FLAGS.unparse_flags)

  def _run(self, *args):
    flags.FLAGS.unparse_flags()
    argv = flags.FLAGS(["prepare_corpus", *args])
    return self.program.main(argv)

  def test_relative_paths_under_bazel_run(self):
    os.makedirs(os.path.join(self.tmp, "text"))
    _write(os.path.join(self.tmp, "text", "a.txt"), ["hello world"] * 3)
    with mock.patch.dict(os.environ, {"BUILD_WORKING_DIRECTORY": self.tmp}):
      self.assertEqual(self._run("--corpus=text/*.txt", "--out=prepared"), 0)
    prepared = prepare.PreparedCorpus.load(os.path.join(self.tmp, "prepared"))
    self.assertEqual(prepared.num_tokens("train"), 6)
    self.assertEqual(prepared.tokenization, "whitespace")

  def test_user_error_returns_non_zero(self):
    out = os.path.join(self.tmp, "out")
    self.assertEqual(
        self._run(f"--corpus={self.tmp}/missing-*.txt", f"--out={out}"), 1)
    self.assertFalse(os.path.exists(out))


class BuiltinPrepareTest(unittest.TestCase):

  def test_ptb(self):
    with tempfile.TemporaryDirectory() as tmp:
      prepared = prepare.prepare_corpus("ptb", "whitespace",
                                        os.path.join(tmp, "ptb"))
      self.assertEqual(prepared.num_tokens("train"), 887521)
      self.assertEqual(prepared.num_lines("train"), 42068)
      # 9,999 words (with PTB's <unk>) + <S>, </S>, <UNK>.
      self.assertEqual(prepared.vocab.size, 10002)
      self.assertEqual(prepared.manifest["validation"]["oov_tokens"], 0)


if __name__ == "__main__":
  unittest.main()
