"""One packing rule: the training pipeline and the inference head agree.

The same sentence gives identical token ids, character ids and mask through
`elmo_tf.data` (sentences and stream modes) and through the inference head
(`elmo_tf.models.elmo`, which the SavedModel and ElmoEmbedding run). Length
limits behave as documented in `elmo_tf.sentences`: training in sentences
mode cuts at `max_sentence_length` words, inference reads sentences whole.
"""

import os
import shutil
import tempfile
import unittest

import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import data as data_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf import sentences as sentences_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.models import elmo as elmo_lib
from elmo_tf.models.backbone import ElmoBackbone

LIMIT = 10
SHORT = "the cat sat on the mat ."
# 23 words: cut into pieces of 10, 10 and 3 words in training.
LONG = " ".join(f"w{i % 7}" for i in range(23))
UNKNOWN = "zebras juggle xylophones"  # Not in the training vocabulary.


def _trimmed(features: dict, row: int) -> dict:
  """One row of a batch without its padding columns."""
  width = int(np.sum(features["mask"][row]))
  return {key: np.asarray(features[key][row][:width])
          for key in ("token_ids", "char_ids", "mask")}


class SentencesTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    text = os.path.join(cls.tmp, "text")
    os.makedirs(text)
    lines = {"train": [SHORT, LONG, "a dog ran ."] * 3,
             "valid": [SHORT, LONG, UNKNOWN], "test": [SHORT]}
    for split, rows in lines.items():
      with open(os.path.join(text, f"{split}.txt"), "w",
                encoding="utf-8") as f:
        f.write("\n".join(rows) + "\n")
    spec = ";".join(f"{s}={os.path.join(text, s + '.txt')}" for s in lines)
    cls.prepared = prepare_lib.prepare_cached(spec, "whitespace",
                                              os.path.join(cls.tmp, "cache"))
    cls.vocab = cls.prepared.vocab

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _inference_features(self, words: list[str]) -> dict:
    """What the inference head feeds the backbone for one sentence."""
    tokens = tf.ragged.constant([words], dtype=tf.string)
    features = sentences_lib.pack_sentences(tokens, self.vocab.lookup)
    return _trimmed({k: v.numpy() for k, v in features.items()}, 0)

  def _training_rows(self, batching: str) -> list[dict]:
    data_config = config_lib.DataConfig(
        batching=batching, batch_size=1, unroll_steps=64,
        max_sentence_length=LIMIT)
    rows = []
    for batch in data_lib.make_dataset(self.prepared, "valid", data_config,
                                       shuffle=False, seed=0):
      rows.append(_trimmed({k: v.numpy() for k, v in batch.items()}, 0))
    return rows

  def test_sentence_batches_equal_the_inference_packing(self):
    rows = self._training_rows("sentences")
    long_words = LONG.split()
    expected = [SHORT.split(), UNKNOWN.split()] + [
        long_words[i:i + LIMIT] for i in range(0, len(long_words), LIMIT)]
    self.assertEqual(len(rows), len(expected))
    unmatched = [self._inference_features(words) for words in expected]
    for row in rows:
      for i, candidate in enumerate(unmatched):
        if (row["token_ids"].shape == candidate["token_ids"].shape and
            np.array_equal(row["token_ids"], candidate["token_ids"])):
          for key in ("char_ids", "mask"):
            np.testing.assert_array_equal(row[key], candidate[key], key)
          del unmatched[i]
          break
      else:
        self.fail(f"A training row matches no inference packing: "
                  f"{row['token_ids']}")
    self.assertEqual(unmatched, [])
    # Unknown words are <UNK> (id 3) on both sides.
    unknown = self._inference_features(UNKNOWN.split())["token_ids"]
    np.testing.assert_array_equal(unknown, [vocab_lib.BOS_ID] +
                                  [vocab_lib.UNK_ID] * 3 + [vocab_lib.EOS_ID])

  def test_stream_windows_pack_tokens_like_the_inference_head(self):
    # One row of 64-token windows holds the whole valid text: <S> w .. </S>
    # for each sentence, back to back; each sentence's slice must equal its
    # inference packing.
    (row,) = self._training_rows("stream")[:1]
    position = 0
    for line in (SHORT, LONG, UNKNOWN):
      packed = self._inference_features(line.split())
      width = len(packed["token_ids"])
      for key in ("token_ids", "char_ids", "mask"):
        np.testing.assert_array_equal(
            row[key][position:position + width], packed[key], key)
      position += width

  def test_inference_reads_long_sentences_whole(self):
    model_config = config_lib.preset("tiny")
    backbone = ElmoBackbone(model_config, name="backbone")
    backbone.build()
    words = [f"w{i % 7}" for i in range(3 * LIMIT + 5)]
    tokens = tf.ragged.constant([words, words[:4]], dtype=tf.string)
    outputs = elmo_lib.run_bilm(backbone, tokens)
    self.assertEqual(outputs["sequence_len"].numpy().tolist(),
                     [len(words), 4])
    self.assertEqual(outputs["lstm_outputs1"].shape[1], len(words))
    # The last word's vector is not a cut piece's: it depends on the first
    # word (the forward LSTM carries it through the whole sentence).
    changed = tf.ragged.constant([["other"] + words[1:]], dtype=tf.string)
    last = outputs["lstm_outputs1"][0, -1].numpy()
    last_changed = elmo_lib.run_bilm(backbone, changed)["lstm_outputs1"][0, -1]
    self.assertGreater(np.abs(last - last_changed.numpy()).max(), 0.0)

  def test_precomputed_character_ids_equal_those_of_the_strings(self):
    # Distinct tokens, "" first: multi-byte UTF-8, sentence markers, longer
    # than 48 bytes (cut on a character boundary and inside one).
    distinct = ["", "<S>", "</S>", "the", "naïve", "日本語", "é" * 30,
                "a" + "日" * 20, "<UNK>", "zebras"]
    vocab = vocab_lib.Vocabulary(["<S>", "</S>", "<UNK>", "the", "naïve",
                                  "日本語", "é" * 30, "a" + "日" * 20])
    indices = np.array([[1, 3, 4, 5, 2, 0], [1, 6, 7, 8, 9, 2],
                        [0, 0, 0, 0, 0, 0]], np.int32)  # (3, 6)
    tokens = tf.constant(np.array(distinct, dtype=object)[indices].astype(str))
    token_ids = vocab.lookup(tokens)  # (3, 6); zebras -> <UNK>
    expected = sentences_lib.token_features(tokens, token_ids)
    # Per distinct token (stream batching).
    char_table = tf.cast(vocab_lib.char_ids(distinct), tf.uint16)
    indexed = sentences_lib.indexed_token_features(
        indices, char_table, vocab.lookup(tf.constant(distinct)))
    # Per word id, unknown words from their strings (sentence batching).
    by_id = tf.cast(vocab_lib.char_ids([""] + vocab.tokens), tf.uint16)
    looked_up = sentences_lib.token_features(tokens, token_ids, by_id)
    for features in (indexed, looked_up):
      self.assertEqual(sorted(features), sorted(expected))
      for key, value in expected.items():
        self.assertEqual(features[key].dtype, value.dtype, key)
        np.testing.assert_array_equal(features[key], value, key)

  def test_cut_sentences_pieces(self):
    tokens = tf.ragged.constant([["a"] * 23, [], ["b"] * 10, ["c"]])
    pieces = sentences_lib.cut_sentences(tokens, LIMIT)
    self.assertEqual(pieces.row_lengths().numpy().tolist(),
                     [10, 10, 3, 10, 1])


if __name__ == "__main__":
  unittest.main()
