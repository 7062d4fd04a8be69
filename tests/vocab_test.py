"""Tests for elmo_tf.vocab: character ids, vocabulary building, files, lookup."""

import os
import random
import tempfile
import tracemalloc
import unittest

import numpy as np
import tensorflow as tf

from elmo_tf import vocab as vocab_lib


def _row(*prefix):
  """A 50-slot character-id row: `prefix` then padding-within-token (261)."""
  return list(prefix) + [261] * (50 - len(prefix))


class CharIdsTest(unittest.TestCase):

  def test_known_tokens(self):
    tokens = ["the", "中", "<S>", "</S>", ""]
    expected = [
        _row(259, 117, 105, 102, 260),
        # '中' is UTF-8 e4 b8 ad = 228, 184, 173; +1.
        _row(259, 229, 185, 174, 260),
        _row(259, 257, 260),
        _row(259, 258, 260),
        [0] * 50,
    ]
    ids = vocab_lib.char_ids(tf.constant(tokens))
    self.assertEqual(ids.dtype, tf.int32)
    self.assertEqual(ids.numpy().tolist(), expected)
    for token, row in zip(tokens, expected):
      self.assertEqual(vocab_lib.char_ids_numpy(token).tolist(), row, token)

  def test_long_tokens_are_cut_at_48_bytes(self):
    long_token = "abcdefghij" * 6  # 60 bytes.
    self.assertEqual(
        vocab_lib.char_ids(tf.constant([long_token])).numpy()[0].tolist(),
        [259] + [ord(c) + 1 for c in long_token[:48]] + [260])
    exact = "x" * 48
    self.assertEqual(vocab_lib.char_ids_numpy(exact).tolist(),
                     [259] + [ord("x") + 1] * 48 + [260])
    short = "x" * 47
    self.assertEqual(vocab_lib.char_ids_numpy(short).tolist(),
                     [259] + [ord("x") + 1] * 47 + [260, 261])
    # 20 Chinese characters = 60 bytes: 16 whole characters kept.
    chinese = "中" * 20
    self.assertEqual(vocab_lib.char_ids_numpy(chinese).tolist(),
                     [259] + [229, 185, 174] * 16 + [260])

  def test_matches_numpy_reference_for_any_shape(self):
    rng = random.Random(0)
    alphabet = "abcXYZ09.,中文字€é\u0301🍜"
    tokens = ["<S>", "</S>", "", "<UNK>", "x" * 49] + [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
        for _ in range(40)]
    reference = np.stack([vocab_lib.char_ids_numpy(t) for t in tokens])
    # 1-D.
    self.assertTrue(
        (vocab_lib.char_ids(tf.constant(tokens)).numpy() == reference).all())
    # 2-D (batch, time) -> (batch, time, 50).
    dense = vocab_lib.char_ids(tf.reshape(tf.constant(tokens), [5, 9]))
    self.assertEqual(dense.shape, (5, 9, 50))
    self.assertTrue((dense.numpy().reshape(45, 50) == reference).all())
    # Scalar -> (50,).
    self.assertEqual(vocab_lib.char_ids(tokens[5]).numpy().tolist(),
                     reference[5].tolist())
    # Ragged (batch, (time)) -> (batch, (time), 50).
    ragged = tf.RaggedTensor.from_row_lengths(tokens, [3, 0, 42])
    ragged_ids = vocab_lib.char_ids(ragged)
    self.assertIsInstance(ragged_ids, tf.RaggedTensor)
    self.assertEqual(ragged_ids.shape.as_list(), [3, None, 50])
    self.assertTrue((ragged_ids.flat_values.numpy() == reference).all())
    # Empty and graph mode with unknown shape.
    self.assertEqual(vocab_lib.char_ids(tf.constant([], tf.string)).shape,
                     (0, 50))
    fn = tf.function(vocab_lib.char_ids,
                     input_signature=[tf.TensorSpec([None, None], tf.string)])
    self.assertTrue((fn(tf.reshape(tf.constant(tokens), [9, 5])).numpy()
                     .reshape(45, 50) == reference).all())

  def test_constants(self):
    self.assertEqual(vocab_lib.MAX_CHARACTERS_PER_TOKEN, 50)
    self.assertEqual(vocab_lib.N_CHARACTERS, 262)
    self.assertEqual(
        (vocab_lib.BOS_CHAR, vocab_lib.EOS_CHAR, vocab_lib.BOW_CHAR,
         vocab_lib.EOW_CHAR, vocab_lib.PADDING_CHAR),
        (257, 258, 259, 260, 261))
    self.assertEqual(vocab_lib.BOS_CHAR_IDS.tolist(), _row(259, 257, 260))


CORPUS = [
    "the cat sat on the mat".split(),
    "the dog sat".split(),
    "a cat <unk> <unk> <S> </S> <UNK>".split(),
    ["", "zebra"],
]


class BuildVocabularyTest(unittest.TestCase):

  def test_order_specials_and_ids(self):
    vocab = vocab_lib.build_vocabulary(CORPUS)
    # the 3; cat, sat, <unk> 2; then ties by string: a, dog, mat, on, zebra.
    self.assertEqual(vocab.tokens, [
        "<S>", "</S>", "<UNK>", "the", "<unk>", "cat", "sat", "a", "dog", "mat",
        "on", "zebra"])
    self.assertEqual(vocab.size, 12)
    self.assertEqual(len(vocab), 12)
    self.assertEqual((vocab.bos_id, vocab.eos_id, vocab.unk_id), (1, 2, 3))
    self.assertEqual(vocab.token_to_id("<S>"), 1)
    self.assertEqual(vocab.token_to_id("the"), 4)
    self.assertEqual(vocab.token_to_id("<unk>"), 5)  # An ordinary word.
    self.assertEqual(vocab.token_to_id("zebra"), 12)
    self.assertEqual(vocab.token_to_id("emu"), 3)
    self.assertEqual(vocab.token_to_id(""), 0)
    self.assertEqual(vocab.id_to_token(4), "the")
    self.assertEqual(vocab.id_to_token(12), "zebra")
    self.assertEqual(vocab.id_to_token(0), "")
    with self.assertRaisesRegex(IndexError, "13"):
      vocab.id_to_token(13)
    self.assertIn("cat", vocab)
    self.assertNotIn("emu", vocab)

  def test_min_count_and_max_size(self):
    vocab = vocab_lib.build_vocabulary(CORPUS, min_count=2)
    self.assertEqual(vocab.tokens[3:], ["the", "<unk>", "cat", "sat"])
    # max_size counts the three specials.
    vocab = vocab_lib.build_vocabulary(CORPUS, max_size=5)
    self.assertEqual(vocab.tokens, ["<S>", "</S>", "<UNK>", "the", "<unk>"])
    vocab = vocab_lib.build_vocabulary(CORPUS, max_size=3)
    self.assertEqual(vocab.tokens, ["<S>", "</S>", "<UNK>"])
    with self.assertRaisesRegex(ValueError, "max_size"):
      vocab_lib.build_vocabulary(CORPUS, max_size=2)
    with self.assertRaisesRegex(ValueError, "min_count"):
      vocab_lib.build_vocabulary(CORPUS, min_count=0)

  def test_memory_does_not_grow_with_corpus_size(self):
    rng = random.Random(1)
    lines = [" ".join(f"w{rng.randint(0, 1999)}" for _ in range(12))
             for _ in range(300)]

    def corpus(repeats):
      for _ in range(repeats):
        for line in lines:
          yield line.split()  # Fresh strings, as when reading a file.

    def peak(repeats):
      tracemalloc.start()
      try:
        vocab = vocab_lib.build_vocabulary(corpus(repeats))
        return tracemalloc.get_traced_memory()[1], vocab
      finally:
        tracemalloc.stop()

    peak_1, vocab_1 = peak(1)
    peak_50, vocab_50 = peak(50)
    self.assertEqual(vocab_1.size, vocab_50.size)
    self.assertLess(peak_50, 1.5 * peak_1, (peak_1, peak_50))


class VocabularyFileTest(unittest.TestCase):

  def setUp(self):
    self._tmp = tempfile.TemporaryDirectory()
    self.tmp = self._tmp.name

  def tearDown(self):
    self._tmp.cleanup()

  def _write(self, text, name="vocab.txt"):
    path = os.path.join(self.tmp, name)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    return path

  def test_save_load_round_trip(self):
    vocab = vocab_lib.build_vocabulary(CORPUS + [["中文", "中文", "中文"]])
    path = os.path.join(self.tmp, "vocab.txt")
    vocab.save(path)
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
    self.assertEqual(lines[:5], ["<S>", "</S>", "<UNK>", "the", "中文"])
    self.assertEqual(lines[-1], "")  # Ends with a newline.
    loaded = vocab_lib.Vocabulary.load(path)
    self.assertEqual(loaded.tokens, vocab.tokens)
    self.assertEqual(loaded.token_to_id("中文"), 5)

  def test_load_errors_name_file_and_line(self):
    path = self._write("<S>\n</S>\nthe\n")
    with self.assertRaisesRegex(ValueError, f"{path}:3: .*'<UNK>'"):
      vocab_lib.Vocabulary.load(path)
    path = self._write("<S>\n</S>\n<UNK>\nthe\n\ncat\n")
    with self.assertRaisesRegex(ValueError, f"{path}:5: empty line"):
      vocab_lib.Vocabulary.load(path)
    path = self._write("<S>\n</S>\n<UNK>\nthe\ncat\nthe\n")
    with self.assertRaisesRegex(ValueError, f"{path}:6: duplicate .*'the'.*4"):
      vocab_lib.Vocabulary.load(path)
    path = self._write("<S>\n</S>\n")
    with self.assertRaisesRegex(ValueError, f"{path}: 2 line"):
      vocab_lib.Vocabulary.load(path)
    path = self._write("")
    with self.assertRaisesRegex(ValueError, f"{path}: 0 line"):
      vocab_lib.Vocabulary.load(path)

  def test_bilm_tf_order_of_specials(self):
    path = self._write("</S>\n<S>\n<UNK>\nthe\n,\n")
    with self.assertRaisesRegex(ValueError, "reorder_specials=True"):
      vocab_lib.Vocabulary.load(path)
    vocab = vocab_lib.Vocabulary.load(path, reorder_specials=True)
    self.assertEqual(vocab.tokens, ["<S>", "</S>", "<UNK>", "the", ","])

  def test_windows_line_endings(self):
    path = self._write("<S>\r\n</S>\r\n<UNK>\r\nthe\r\n")
    self.assertEqual(vocab_lib.Vocabulary.load(path).tokens[3], "the")

  def test_constructor_validates(self):
    with self.assertRaisesRegex(ValueError, "first three"):
      vocab_lib.Vocabulary(["the", "<S>", "</S>", "<UNK>"])
    with self.assertRaisesRegex(ValueError, "duplicate"):
      vocab_lib.Vocabulary(["<S>", "</S>", "<UNK>", "a", "a"])
    with self.assertRaisesRegex(ValueError, "whitespace"):
      vocab_lib.Vocabulary(["<S>", "</S>", "<UNK>", "a "])


class LookupTest(unittest.TestCase):

  def setUp(self):
    self.vocab = vocab_lib.build_vocabulary(CORPUS)

  def test_dense_and_ragged(self):
    ids = self.vocab.lookup(tf.constant([["the", "emu", ""], ["<S>", "</S>",
                                                             "<UNK>"]]))
    self.assertEqual(ids.dtype, tf.int32)
    self.assertEqual(ids.numpy().tolist(), [[4, 3, 0], [1, 2, 3]])
    ragged = self.vocab.lookup(tf.ragged.constant([["zebra"], [], ["a", "x"]]))
    self.assertIsInstance(ragged, tf.RaggedTensor)
    self.assertEqual(ragged.to_list(), [[12], [], [8, 3]])
    self.assertEqual(self.vocab.lookup("cat").numpy(), 6)

  def test_in_tf_function_and_tf_data(self):
    fn = tf.function(self.vocab.lookup,
                     input_signature=[tf.TensorSpec([None], tf.string)])
    self.assertEqual(fn(tf.constant(["mat", "gnu"])).numpy().tolist(), [10, 3])
    dataset = tf.data.Dataset.from_tensor_slices(["on", "", "dog"]).map(
        self.vocab.lookup)
    self.assertEqual([int(x) for x in dataset], [11, 0, 9])

  def test_matches_python_ids(self):
    tokens = ["the", "<unk>", "emu", "", "zebra", "<S>"]
    self.assertEqual(self.vocab.lookup(tf.constant(tokens)).numpy().tolist(),
                     [self.vocab.token_to_id(t) for t in tokens])


if __name__ == "__main__":
  unittest.main()
