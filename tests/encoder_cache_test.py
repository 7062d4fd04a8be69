"""Tests for the character encoder's cache in exported SavedModels.

A tiny network with random weights and a toy vocabulary is exported twice
with `export.save_module`: with a frozen biLM (the cache: every vocabulary
word's encoder output, looked up instead of running the CNN) and with
`trainable_biLM=True` (no cache: the CNN for every token). Same weights, so
every output must agree; tampering with the cache or the CNN weights of a
loaded copy shows which tokens read which.
"""

import json
import os
import shutil
import tempfile
import unittest

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.layers import char_cnn
from elmo_tf.models.backbone import ElmoBackbone

ATOL = 1e-5
# Two words longer than 48 bytes with the same first 48 bytes: the same
# character ids, hence one key for both.
LONG = "x" * 48 + "long"
LONG_TOO = "x" * 48 + "longer"
WORDS = ["the", "cat", "sees", "a", "dog", ".", "my", "sister", "likes",
         "green", "tree", "caf\u00e9", "\u5979", LONG, LONG_TOO]
SENTENCES = {
    "in_vocabulary": "the cat sees a dog .",
    "unknown": "zebras juggle quietly",
    "mixed": "my sister likes zebras near the green tree .",
    "specials": "<UNK> <S> the </S> cat",
    # Cut to 48 bytes, "x" * 48 + "other" is LONG for the encoder.
    "long": LONG + " caf\u00e9 \u5979 " + "x" * 48 + "other",
    "long_unknown": "y" * 50 + " the",
    "empty": "",
}
FLOAT_KEYS = ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo", "default")


def _numpy(outputs):
  return {key: np.asarray(value) for key, value in outputs.items()}


def _tokens_inputs(sentences):
  token_lists = [s.split() for s in sentences]
  width = max(len(t) for t in token_lists) + 2  # Some padding too.
  return (tf.constant([t + [""] * (width - len(t)) for t in token_lists]),
          tf.constant([len(t) for t in token_lists], tf.int32))


class EncoderCacheTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    keras.utils.set_random_seed(7)
    cls.vocab = vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + WORDS)
    cls.config = config_lib.ExperimentConfig(
        model=config_lib.preset("tiny").replace(vocab_size=cls.vocab.size),
        data=config_lib.DataConfig(tokenization="whitespace"))
    cls.backbone = ElmoBackbone(cls.config.model, name="backbone",
                                dtype="float32")
    cls.backbone.build()
    softmax = export_lib.build_softmax(cls.config.model)
    cls.cached_dir = export_lib.save_module(
        cls.config, cls.vocab, cls.backbone, os.path.join(cls.tmp, "cached"),
        softmax=softmax)
    cls.cnn_dir = export_lib.save_module(
        cls.config, cls.vocab, cls.backbone, os.path.join(cls.tmp, "cnn"),
        config_lib.ExportConfig(trainable_biLM=True), softmax=softmax)
    cls.cached = tf.saved_model.load(cls.cached_dir)
    cls.cnn = tf.saved_model.load(cls.cnn_dir)
    cls.p = cls.backbone.projection_dim

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def info(self, path):
    with open(os.path.join(path, "assets", export_lib.INFO_ASSET)) as f:
      return json.load(f)

  def assertOutputsClose(self, got, expected, msg=""):
    self.assertCountEqual(got, expected)
    for key, value in expected.items():
      self.assertEqual(got[key].shape, value.shape, f"{msg} {key}")
      if value.dtype.kind == "f":
        self.assertAllClose(got[key], value, atol=ATOL, msg=f"{msg} {key}")
      else:  # Lengths, masks, counts, the tokens scored.
        self.assertAllEqual(got[key], value, msg=f"{msg} {key}")

  def test_the_cache_holds_every_vocabulary_word(self):
    self.assertTrue(self.info(self.cached_dir)["encoder_cache"])
    vectors = self.cached.encoder_cache.numpy()
    self.assertEqual(vectors.shape, (self.vocab.size + 1, self.p))
    self.assertEqual(vectors.dtype, np.float32)
    self.assertFalse(self.cached.encoder_cache.trainable)
    self.assertNotIn(self.cached.encoder_cache.name,
                     [v.name for v in self.cached.trainable_variables])
    self.assertIn(self.cached.encoder_cache.name,
                  [v.name for v in self.cached.variables])
    self.assertAllEqual(vectors[0], np.zeros(self.p))  # Padding.
    # Row i: the CNN on word id i's character ids.
    char_ids = np.stack([vocab_lib.char_ids_numpy(t)
                         for t in self.vocab.tokens])
    encoder = ElmoBackbone(self.config.model, dtype="float32")
    encoder.build()
    export_lib.restore_weights(self.cached_dir, encoder)
    self.assertAllClose(vectors[1:], encoder.char_encoder.encode_rows(
        char_ids), atol=1e-6)
    # Rows by character ids; an unknown word has none (-1), not <UNK>'s.
    # (A restored table has no Python `lookup`: the op itself.)
    lookup = lambda tokens: tf.raw_ops.LookupTableFindV2(
        table_handle=self.cached.encoder_cache_table.resource_handle,
        keys=char_cnn.char_row_keys(vocab_lib.char_ids(tf.constant(tokens))),
        default_value=tf.constant(-1, tf.int32))
    self.assertAllEqual(
        lookup(["", "<S>", "</S>", "<UNK>", "the", "zebras", LONG,
                LONG_TOO, "x" * 48 + "other", "y" * 50]),
        [0, 1, 2, 3, self.vocab.token_to_id("the"), -1,
         self.vocab.token_to_id(LONG), self.vocab.token_to_id(LONG),
         self.vocab.token_to_id(LONG), -1])

  def test_outputs_equal_the_cnn_for_every_function(self):
    names = list(SENTENCES)
    for name in names:
      sentences = [SENTENCES[name]]
      text = tf.constant(sentences)
      tokens, lengths = _tokens_inputs(sentences)
      pairs = {
          "default": lambda m: m.signatures["default"](text),
          "tokens": lambda m: m.signatures["tokens"](
              tokens=tokens, sequence_len=lengths),
          "__call__ text": lambda m: m(text),
          "__call__ dict, training": lambda m: m(
              {"tokens": tokens, "sequence_len": lengths}, training=True),
          "log_probs": lambda m: m.signatures["log_probs"](text),
      }
      for function, call in pairs.items():
        got = _numpy(call(self.cached))
        expected = _numpy(call(self.cnn))
        self.assertOutputsClose(got, expected, msg=f"{name}, {function}:")
    # All in one batch (distinct tokens of all sentences at once, padding).
    batch = tf.constant([SENTENCES[name] for name in names])
    self.assertOutputsClose(_numpy(self.cached.signatures["default"](batch)),
                            _numpy(self.cnn.signatures["default"](batch)),
                            msg="batch")

  def test_vocabulary_words_read_the_cache_and_others_the_cnn(self):
    # A separate copy: its variables are changed.
    loaded = tf.saved_model.load(self.cached_dir)
    before = {name: _numpy(loaded.signatures["default"](tf.constant([text])))
              for name, text in SENTENCES.items()}
    # Tampered cache: vocabulary words move by 1, other words do not.
    loaded.encoder_cache.assign_add(tf.ones_like(loaded.encoder_cache))
    mixed = SENTENCES["mixed"].split()
    got = _numpy(loaded.signatures["default"](tf.constant([" ".join(mixed)])))
    for position, token in enumerate(mixed):
      shift = got["word_emb"][0, position] - before["mixed"]["word_emb"][
          0, position]
      expected = 1.0 if token in self.vocab else 0.0
      self.assertAllClose(shift, np.full(self.p, expected), atol=ATOL,
                          msg=token)
    loaded.encoder_cache.assign_sub(tf.ones_like(loaded.encoder_cache))
    # Broken CNN: sentences of vocabulary words never run it.
    kernel = loaded.bilm_weights["char_encoder/projection/kernel"]
    kernel.assign(tf.fill(kernel.shape, np.nan))
    for name, text in SENTENCES.items():
      got = _numpy(loaded.signatures["default"](tf.constant([text])))
      if name in ("in_vocabulary", "specials", "long", "empty"):
        self.assertOutputsClose(got, before[name], msg=name)
      else:  # An unknown word went through the (broken) CNN.
        self.assertFalse(np.all(np.isfinite(got["elmo"])), name)

  def test_no_cache_when_the_biLM_is_trainable(self):
    self.assertFalse(self.info(self.cnn_dir)["encoder_cache"])
    self.assertFalse(hasattr(self.cnn, "encoder_cache"))
    self.assertLen(self.cnn.variables, len(self.cached.variables) - 1)
    # The module built last detached the cache from the shared backbone.
    self.assertIsNone(self.backbone.char_encoder.vector_cache)

  def test_resave_computes_the_cache_again(self):
    out = export_lib.resave(self.cnn_dir, os.path.join(self.tmp, "resaved"))
    info = self.info(out)
    self.assertTrue(info["trainable_biLM"])  # Options are kept...
    self.assertFalse(info["encoder_cache"])  # ...so no cache.
    # A frozen export written again: the cache is recomputed, same numbers.
    out = export_lib.resave(self.cached_dir,
                            os.path.join(self.tmp, "resaved_cached"))
    resaved = tf.saved_model.load(out)
    self.assertAllClose(resaved.encoder_cache, self.cached.encoder_cache,
                        atol=1e-6)
    text = tf.constant(list(SENTENCES.values()))
    self.assertOutputsClose(_numpy(resaved.signatures["default"](text)),
                            _numpy(self.cnn.signatures["default"](text)))


if __name__ == "__main__":
  unittest.main()
