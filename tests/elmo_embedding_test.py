"""Tests for elmo_tf.ElmoEmbedding, the native Keras 3 layer."""

import os
import shutil
import tempfile
import unittest
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

import elmo_tf
from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf.elmo_embedding import ElmoEmbedding
from elmo_tf.models.backbone import ElmoBackbone
from tests import export_testutil

L2_COEF = 0.01


def _labelled_sentences():
  sentences = export_testutil.SENTENCES + [
      "a dog follows the ball", "the bird finds a red box .",
      "the dog hears my sister at home", "a child sees the small house"]
  return sentences, [int("dog" in s.split()) for s in sentences]


class ElmoEmbeddingTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.path = export_lib.export_saved_model(
        model_dir, os.path.join(cls.tmp, "elmo"),
        config_lib.ExportConfig(l2_coef=L2_COEF))
    cls.loaded = tf.saved_model.load(cls.path)
    cls.sentences, cls.labels = _labelled_sentences()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _classifier(self, **layer_kwargs):
    keras.utils.set_random_seed(0)
    text = keras.Input(shape=(), dtype="string", name="text")
    elmo = ElmoEmbedding(self.path, output="default", name="elmo",
                         **layer_kwargs)
    logits = keras.layers.Dense(2, name="head")(elmo(text))
    model = keras.Model(text, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return elmo, model

  def _fit(self, model, epochs=3):
    # Keras 3 does not take numpy string arrays: strings go through tf.data.
    data = tf.data.Dataset.from_tensor_slices(
        (self.sentences, self.labels)).batch(4)
    return model.fit(data, epochs=epochs, verbose=0)

  def test_outputs_equal_the_saved_model(self):
    self.assertIs(elmo_tf.ElmoEmbedding, ElmoEmbedding)
    layer = ElmoEmbedding(self.path, output="all")
    sentences = self.sentences + ["", "\u6211\u7231 New York \U0001F431"]
    got = layer(tf.constant(sentences))
    expected = self.loaded.signatures["default"](tf.constant(sentences))
    self.assertCountEqual(got, expected)
    for key in expected:
      self.assertAllClose(got[key], expected[key], atol=1e-5, msg=key)
    # The tokens form too.
    tokens = tf.constant([["the", "cat", ""], ["a", "dog", "sees"]])
    lengths = tf.constant([2, 3], tf.int32)
    got = layer({"tokens": tokens, "sequence_len": lengths})
    expected = self.loaded.signatures["tokens"](tokens=tokens,
                                                sequence_len=lengths)
    for key in expected:
      self.assertAllClose(got[key], expected[key], atol=1e-5, msg=key)

  def test_config_and_symbolic_shapes(self):
    layer = ElmoEmbedding(self.path, output="elmo", l2_coef=0.5,
                          name="embed")
    config = layer.get_config()
    self.assertEqual(config["path"], self.path)
    self.assertEqual(config["output"], "elmo")
    self.assertEqual(config["l2_coef"], 0.5)
    # Defaults not given take the export's values.
    self.assertEqual(ElmoEmbedding(self.path).l2_coef, L2_COEF)
    clone = ElmoEmbedding.from_config(config)
    self.assertEqual(clone.get_config(), config)
    text = keras.Input(shape=(), dtype="string")
    p = 16  # The tiny preset's projection_dim.
    self.assertEqual(tuple(layer(text).shape), (None, None, 2 * p))
    word = ElmoEmbedding(self.path, output="word_emb")(text)
    self.assertEqual(tuple(word.shape), (None, None, p))
    with self.assertRaisesRegex(ValueError, "Unknown output 'lstm_outputs3'"):
      ElmoEmbedding(self.path, output="lstm_outputs3")
    with self.assertRaisesRegex(ValueError, "not a SavedModel written by"):
      ElmoEmbedding(self.tmp)

  def test_trains_with_adam_and_saves_and_reloads(self):
    elmo, model = self._classifier()
    backbone_before = {v.path: v.numpy().copy()
                       for v in elmo.backbone.weights}
    mix_before = [v.numpy().copy() for v in elmo.scalar_mix.weights]
    self.assertLen(model.trainable_weights, 4)  # s, gamma, head kernel, bias
    history = self._fit(model)
    self.assertTrue(np.all(np.isfinite(history.history["loss"])))
    for v in elmo.backbone.weights:
      self.assertAllEqual(v.numpy(), backbone_before[v.path], msg=v.path)
    for v, before in zip(elmo.scalar_mix.weights, mix_before):
      self.assertNotAllClose(v.numpy(), before, msg=v.path)
    # The L2 penalty on s is one of the model's losses.
    model(tf.constant(self.sentences[:2]))
    s = elmo.scalar_mix.scalar_weights.numpy()
    self.assertLen(model.losses, 1)
    self.assertAllClose(model.losses[0], L2_COEF * np.sum(s ** 2), rtol=1e-5)

    predictions = model.predict(tf.constant(self.sentences), verbose=0)
    file = os.path.join(self.tmp, "classifier.keras")
    model.save(file)
    reloaded = keras.models.load_model(file)
    self.assertAllClose(reloaded.predict(tf.constant(self.sentences),
                                         verbose=0), predictions, atol=1e-6)
    # Still only the mix and the head train; the fine-tuned mix came back
    # from the .keras file, not from the export.
    self.assertLen(reloaded.trainable_weights, 4)
    self.assertAllClose(reloaded.get_layer("elmo").scalar_mix.scalar_weights,
                        s)

  def test_trainable_biLM_fine_tunes_the_backbone(self):
    elmo, model = self._classifier(trainable_biLM=True)
    self.assertLen(model.trainable_weights,
                   len(elmo.backbone.weights) + 4)
    before = {v.path: v.numpy().copy() for v in elmo.backbone.weights}
    self._fit(model, epochs=2)
    changed = {v.path.split("/backbone/")[1] for v in elmo.backbone.weights
               if not np.allclose(v.numpy(), before[v.path])}
    for name in ("char_encoder/projection/kernel", "forward_lstm_0/kernel",
                 "backward_lstm_1/projection"):
      self.assertIn(name, changed)

  # --- Several mixes from one biLM pass ---

  def test_mixes_share_one_biLM_pass_and_start_from_the_export(self):
    layer = ElmoEmbedding(self.path, output="elmo", n_mixes=3, name="elmo")
    text = tf.constant(self.sentences)
    layer(text)  # Builds the layer.
    self.assertEqual([mix.name for mix in layer.scalar_mixes],
                     ["scalar_mix", "scalar_mix_1", "scalar_mix_2"])
    self.assertIs(layer.scalar_mix, layer.scalar_mixes[0])
    self.assertLen(layer.trainable_weights, 6)  # (s, gamma) x 3
    self.assertLen(layer.weights, len(layer.backbone.weights) + 6)
    original_call = ElmoBackbone.call
    backbone_calls = []

    def counting_call(backbone, *args, **kwargs):
      backbone_calls.append(backbone.name)
      return original_call(backbone, *args, **kwargs)

    with mock.patch.object(ElmoBackbone, "call", counting_call):
      outputs = layer(text)
    self.assertEqual(backbone_calls, ["backbone"])
    self.assertIsInstance(outputs, list)
    self.assertLen(outputs, 3)
    # Every mix starts from the exported s and gamma: the same vectors as
    # the SavedModel's.
    expected = self.loaded.signatures["default"](text)["elmo"]
    for output in outputs:
      self.assertAllClose(output, expected, atol=1e-5)
    self.assertLen(layer.losses, 3)  # One L2 penalty per mix.

  def test_mixes_config_shapes_and_errors(self):
    layer = ElmoEmbedding(self.path, output="default", n_mixes=2)
    config = layer.get_config()
    self.assertEqual(config["n_mixes"], 2)
    self.assertEqual(ElmoEmbedding.from_config(config).get_config(), config)
    self.assertEqual(ElmoEmbedding(self.path).get_config()["n_mixes"], 1)
    text = keras.Input(shape=(), dtype="string")
    outputs = layer(text)
    self.assertLen(outputs, 2)
    p = 16  # The tiny preset's projection_dim.
    for output in outputs:
      self.assertEqual(tuple(output.shape), (None, 2 * p))
    with self.assertRaisesRegex(ValueError, "n_mixes=2 needs output"):
      ElmoEmbedding(self.path, output="word_emb", n_mixes=2)
    with self.assertRaisesRegex(ValueError, "n_mixes must be at least 1"):
      ElmoEmbedding(self.path, n_mixes=0)

  def test_mixes_train_independently_and_save_and_reload(self):
    keras.utils.set_random_seed(0)
    text = keras.Input(shape=(), dtype="string", name="text")
    elmo = ElmoEmbedding(self.path, output="default", n_mixes=2,
                         name="elmo")
    first, second = elmo(text)  # 2 x (B, 2P)
    logits = keras.layers.Dense(2, name="head")(first)
    # The loss uses mix 0 only.
    model = keras.Model(text, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    first_mix, second_mix = elmo.scalar_mixes
    before = [[v.numpy().copy() for v in mix.weights]
              for mix in elmo.scalar_mixes]
    self._fit(model)
    for v, value in zip(first_mix.weights, before[0]):
      self.assertNotAllClose(v.numpy(), value, msg=v.path)
    # No gradient reached mix 1 (its L2 penalty is 0 at the exported s = 0,
    # and Adam does not move a weight whose gradient stays 0).
    for v, value in zip(second_mix.weights, before[1]):
      self.assertAllEqual(v.numpy(), value, msg=v.path)
    # Each mix's L2 penalty is a loss of the model (in no set order).
    model(tf.constant(self.sentences[:2]))
    penalty = L2_COEF * np.sum(first_mix.scalar_weights.numpy() ** 2)
    self.assertGreater(penalty, 0.0)
    self.assertAllClose(sorted(float(loss) for loss in model.losses),
                        [0.0, penalty], rtol=1e-5)

    # Save and reload a model with both mixes' outputs; mix 1 gets values
    # of its own, which must come back from the .keras file.
    second_mix.gamma.assign(2.5)
    second_mix.scalar_weights.assign([0.3, -0.2, 0.1])
    both = keras.Model(text, [logits, second])
    sentences = tf.constant(self.sentences)
    predictions = both.predict(sentences, verbose=0)
    self.assertNotAllClose(predictions[1],
                           self.loaded.signatures["default"](
                               sentences)["default"])
    file = os.path.join(self.tmp, "two_mixes.keras")
    both.save(file)
    reloaded = keras.models.load_model(file)
    got = reloaded.predict(sentences, verbose=0)
    for value, expected in zip(got, predictions):
      self.assertAllClose(value, expected, atol=1e-6)
    reloaded_elmo = reloaded.get_layer("elmo")
    self.assertEqual(reloaded_elmo.n_mixes, 2)
    for mix, original in zip(reloaded_elmo.scalar_mixes,
                             elmo.scalar_mixes):
      for v, w in zip(mix.weights, original.weights):
        self.assertAllClose(v.numpy(), w.numpy(), msg=v.path)

  def test_moved_saved_model(self):
    moved = os.path.join(self.tmp, "moved", "elmo")
    shutil.copytree(self.path, moved)
    layer = ElmoEmbedding(moved, output="elmo")
    expected = self.loaded.signatures["default"](tf.constant(self.sentences))
    self.assertAllClose(layer(tf.constant(self.sentences)), expected["elmo"],
                        atol=1e-5)


if __name__ == "__main__":
  unittest.main()
