"""The exported SavedModel in a tf_keras model through `hub.KerasLayer`.

tensorflow_hub 0.16 builds `hub.KerasLayer` on tf_keras (Keras 2), so the
downstream models here are tf_keras models. Fine-tuning goes through the
reusable SavedModel API (`__call__`, `trainable_variables`,
`regularization_losses`); signatures serve inference only.
"""

import os
import shutil
import tempfile
import unittest

import numpy as np
import tensorflow as tf
import tensorflow_hub as hub
import tf_keras

from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from tests import export_testutil

L2_COEF = 0.01
MIX_NAMES = ("scalar_mix/scalar_weights:0", "scalar_mix/gamma:0")


def _labelled_sentences():
  """Sentences labelled by whether they contain "dog": learnable."""
  sentences = export_testutil.SENTENCES + [
      "a dog follows the ball", "the bird finds a red box .",
      "the dog hears my sister at home", "a child sees the small house"]
  labels = [int("dog" in s.split()) for s in sentences]
  return sentences, labels


def _values(layer) -> dict[str, np.ndarray]:
  return {w.name: w.numpy().copy() for w in layer.weights}


class HubKerasLayerTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    model_dir = export_testutil.train_tiny_model(cls.tmp)
    options = config_lib.ExportConfig(l2_coef=L2_COEF)
    cls.frozen = export_lib.export_saved_model(
        model_dir, os.path.join(cls.tmp, "frozen"), options)
    cls.full = export_lib.export_saved_model(
        model_dir, os.path.join(cls.tmp, "full"),
        options.replace(trainable_biLM=True))
    cls.sentences, cls.labels = _labelled_sentences()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _fit(self, model, inputs, epochs=3):
    tf_keras.utils.set_random_seed(0)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(0.05),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices(
        (inputs, self.labels)).batch(4)
    return model.fit(data, epochs=epochs, verbose=0)

  def _sentence_classifier(self, path, output_key="default"):
    layer = hub.KerasLayer(path, trainable=True, output_key=output_key)
    text = tf_keras.Input(shape=(), dtype=tf.string)
    logits = tf_keras.layers.Dense(2, name="head")(layer(text))
    return layer, tf_keras.Model(text, logits)

  def assertL2LossInModel(self, model, layer):
    s = [w for w in layer.trainable_weights if w.name == MIX_NAMES[0]][0]
    expected = L2_COEF * np.sum(np.square(s.numpy()))
    self.assertGreater(expected, 0.0)  # s moved away from 0.
    losses = [float(loss) for loss in model.losses]
    self.assertLen(losses, 1)
    self.assertAllClose(losses[0], expected, rtol=1e-5)

  def test_fine_tunes_only_the_mix_by_default(self):
    layer, model = self._sentence_classifier(self.frozen)
    self.assertCountEqual([w.name for w in layer.trainable_weights],
                          MIX_NAMES)
    self.assertGreater(len(layer.non_trainable_weights), 20)
    before = _values(layer)
    history = self._fit(model, self.sentences)
    self.assertTrue(np.all(np.isfinite(history.history["loss"])))
    after = _values(layer)
    for name in before:
      changed = not np.allclose(before[name], after[name])
      self.assertEqual(changed, name in MIX_NAMES, name)
    self.assertL2LossInModel(model, layer)
    # The layer computes what the SavedModel's signature computes (with the
    # fine-tuned s and gamma: the variables are shared).
    loaded = layer.resolved_object
    expected = loaded.signatures["default"](tf.constant(self.sentences))
    got = layer(tf.constant(self.sentences))
    self.assertAllClose(got, expected["default"], atol=1e-5)

  def test_tokens_input_through_call(self):
    # The tokens form reaches __call__ as a dict (signatures cannot train).
    layer = hub.KerasLayer(self.frozen, trainable=True, output_key="elmo")
    tokens_in = tf_keras.Input(shape=(None,), dtype=tf.string, name="tokens")
    lengths_in = tf_keras.Input(shape=(), dtype=tf.int32, name="sequence_len")
    elmo = layer({"tokens": tokens_in, "sequence_len": lengths_in})
    pooled = tf_keras.layers.GlobalAveragePooling1D()(elmo)
    model = tf_keras.Model({"tokens": tokens_in, "sequence_len": lengths_in},
                           tf_keras.layers.Dense(2)(pooled))
    token_lists = [s.split() for s in self.sentences]
    width = max(len(t) for t in token_lists)
    inputs = {
        "tokens": tf.constant([t + [""] * (width - len(t))
                               for t in token_lists]),
        "sequence_len": tf.constant([len(t) for t in token_lists], tf.int32),
    }
    before = _values(layer)
    self._fit(model, inputs, epochs=2)
    after = _values(layer)
    for name in before:
      changed = not np.allclose(before[name], after[name])
      self.assertEqual(changed, name in MIX_NAMES, name)
    self.assertL2LossInModel(model, layer)

  def test_fully_trainable_export_fine_tunes_the_biLM(self):
    layer, model = self._sentence_classifier(self.full)
    self.assertEqual(len(layer.trainable_weights),
                     len(layer.resolved_object.variables))
    before = _values(layer)
    self._fit(model, self.sentences, epochs=2)
    after = _values(layer)
    changed = {name for name in before
               if not np.allclose(before[name], after[name])}
    for name in (*MIX_NAMES, "backbone/char_encoder/projection/kernel:0",
                 "backbone/forward_lstm_0/kernel:0",
                 "backbone/backward_lstm_1/projection:0"):
      self.assertIn(name, changed)
    self.assertL2LossInModel(model, layer)

  def test_frozen_layer_and_signatures_for_inference(self):
    # trainable=False: no trainable weights and no regularization loss.
    layer = hub.KerasLayer(self.frozen, trainable=False, output_key="elmo")
    text = tf_keras.Input(shape=(), dtype=tf.string)
    model = tf_keras.Model(text, layer(text))
    self.assertEmpty(layer.trainable_weights)
    self.assertAllClose(sum(float(loss) for loss in model.losses), 0.0)
    # A signature through hub.KerasLayer gives the same vectors.
    by_signature = hub.KerasLayer(self.frozen, signature="tokens",
                                  output_key="elmo")
    token_lists = [s.split() for s in self.sentences]
    width = max(len(t) for t in token_lists)
    elmo_tokens = by_signature({
        "tokens": tf.constant([t + [""] * (width - len(t))
                               for t in token_lists]),
        "sequence_len": tf.constant([len(t) for t in token_lists], tf.int32)})
    elmo_text = model(tf.constant(self.sentences))
    self.assertAllClose(elmo_tokens, elmo_text, atol=1e-5)


if __name__ == "__main__":
  unittest.main()
