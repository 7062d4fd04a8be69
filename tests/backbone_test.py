"""Tests for elmo_tf.models.backbone."""

import os

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.models.backbone import ElmoBackbone
from elmo_tf.models.backbone import count_parameters

_WORDS = ["<S>", "</S>", "<UNK>", "the", "cat", "sat", "on", "mat", "a",
          "dog", "ran", "far"]  # id = index + 1


def _char_row(word):
  """bilm-tf "+1" char ids of one token (see elmo_tf/vocab.py)."""
  row = np.full(50, 261, np.int32)
  row[0] = 259
  if word == "<S>":
    data = [257]
  elif word == "</S>":
    data = [258]
  else:
    data = [b + 1 for b in word.encode("utf-8")[:48]]
  row[1:1 + len(data)] = data
  row[1 + len(data)] = 260
  return row


def _inputs(sentences, time=None):
  """Right-padded `token_ids` / `char_ids` for lists of words."""
  time = time or max(len(s) for s in sentences)
  token_ids = np.zeros((len(sentences), time), np.int32)
  char_ids = np.zeros((len(sentences), time, 50), np.int32)
  for b, words in enumerate(sentences):
    for t, w in enumerate(words):
      token_ids[b, t] = _WORDS.index(w) + 1
      char_ids[b, t] = _char_row(w)
  return {"token_ids": tf.constant(token_ids),
          "char_ids": tf.constant(char_ids)}


def _config(**changes):
  config = config_lib.preset("tiny").replace(vocab_size=len(_WORDS),
                                             dropout=0.0)
  return config.replace(**changes)


class ElmoBackboneTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(42)
    self.sentences = [
        ["<S>", "the", "cat", "sat", "on", "the", "mat", "</S>"],
        ["<S>", "a", "dog", "ran", "</S>"],
        ["<S>", "far", "</S>"],
    ]
    self.inputs = _inputs(self.sentences)
    self.mask = self.inputs["token_ids"].numpy() > 0

  def test_outputs_shapes_and_masks_for_every_encoder(self):
    for mode in ("chars", "tokens", "concat", "sum"):
      config = _config(token_encoder=mode, token_embedding_dim=5)
      backbone = ElmoBackbone(config)
      out = backbone(self.inputs)
      p = config.lstm.projection_dim
      n_layers = config.lstm.n_layers
      self.assertEqual(out["token_representation"].shape, (3, 8, p))
      self.assertLen(out["forward_outputs"], n_layers)
      self.assertLen(out["backward_outputs"], n_layers)
      self.assertEqual(out["layer_activations"].shape,
                       (3, n_layers + 1, 8, 2 * p))
      self.assertAllEqual(out["mask"], self.mask)
      for h, c in out["forward_state"] + out["backward_state"]:
        self.assertEqual(h.shape, (3, p))
        self.assertEqual(c.shape, (3, config.lstm.cell_dim))
      activations = out["layer_activations"].numpy()
      self.assertAllEqual(activations.transpose(0, 2, 1, 3)[~self.mask],
                          np.zeros((int((~self.mask).sum()), n_layers + 1,
                                    2 * p)))
      self.assertGreater(np.abs(activations[0, :, :8]).min(axis=-1).max(), 0)
      self.assertEqual(count_parameters(config),
                       sum(int(np.prod(v.shape))
                           for v in backbone.trainable_variables), mode)

  def test_layer_activations_layout(self):
    backbone = ElmoBackbone(_config())
    out = backbone(self.inputs)
    acts = out["layer_activations"]
    x = out["token_representation"]
    self.assertAllClose(acts[:, 0], tf.concat([x, x], -1))
    for l in range(2):
      self.assertAllClose(acts[:, l + 1], tf.concat(
          [out["forward_outputs"][l], out["backward_outputs"][l]], -1))

  def test_backward_reads_right_to_left(self):
    backbone = ElmoBackbone(_config())
    out = backbone(self.inputs)
    # The backward output at position t depends only on tokens t.. of its
    # row: changing the first word of row 0 changes only position 0 (and
    # every forward position).
    changed = [["<S>", "a", "cat", "sat", "on", "the", "mat", "</S>"]]
    out2 = backbone(_inputs(changed + self.sentences[1:]))
    for l in range(2):
      self.assertAllClose(out["backward_outputs"][l][0, 2:],
                          out2["backward_outputs"][l][0, 2:], atol=1e-6)
      self.assertNotAllClose(out["backward_outputs"][l][0, 1],
                             out2["backward_outputs"][l][0, 1])
      self.assertAllClose(out["forward_outputs"][l][0, :1],
                          out2["forward_outputs"][l][0, :1], atol=1e-6)
      self.assertNotAllClose(out["forward_outputs"][l][0, 7],
                             out2["forward_outputs"][l][0, 7])

  def test_same_sentence_same_outputs_whatever_the_padding(self):
    backbone = ElmoBackbone(_config())
    batched = backbone(self.inputs)["layer_activations"]
    for b, sentence in enumerate(self.sentences):
      alone = backbone(_inputs([sentence]))["layer_activations"]
      self.assertAllClose(batched[b, :, :len(sentence)], alone[0], atol=1e-5)
      longer = backbone(_inputs([sentence], time=11))["layer_activations"]
      self.assertAllClose(longer[0, :, :len(sentence)], alone[0], atol=1e-5)

  def test_residual_from_second_layer_on(self):
    backbone = ElmoBackbone(_config())
    backbone.build()
    # LSTM layer 1 outputs zeros: with the residual its layer output is
    # its input (layer 0's output).
    backbone.forward_lstms[1].projection.assign(
        np.zeros(backbone.forward_lstms[1].projection.shape))
    out = backbone(self.inputs)
    self.assertAllClose(out["forward_outputs"][1], out["forward_outputs"][0])
    self.assertGreater(float(tf.reduce_sum(tf.abs(
        out["forward_outputs"][0]))), 0.0)
    # LSTM layer 0 outputs zeros: no residual, so its layer output is 0.
    backbone.forward_lstms[0].projection.assign(
        np.zeros(backbone.forward_lstms[0].projection.shape))
    out = backbone(self.inputs)
    self.assertAllClose(out["forward_outputs"][0],
                        tf.zeros_like(out["forward_outputs"][0]))
    # Without residual connections layer 1 gives zeros too.
    plain = ElmoBackbone(_config().replace(
        lstm=_config().lstm.replace(use_residual=False)))
    plain.build()
    plain.set_weights(backbone.get_weights())
    self.assertAllClose(plain(self.inputs)["forward_outputs"][1],
                        tf.zeros((3, 8, 16)))

  def test_stream_mode_with_backward_windows_and_carried_state(self):
    backbone = ElmoBackbone(_config())
    text = [["<S>", "the", "cat", "sat", "on", "the", "mat", "</S>"],
            ["<S>", "a", "dog", "ran", "far", "</S>", "<S>", "far"]]
    whole = backbone(_inputs(text))
    first = _inputs([t[:4] for t in text])
    second = _inputs([t[4:] for t in text])
    zeros_f, zeros_b = backbone.initial_state(2)
    # Batch 1: forward reads window 1, backward reads window 2 (the end of
    # the text); batch 2: the other way round, with the carried states.
    out1 = backbone({
        **first, "backward_token_ids": second["token_ids"],
        "backward_char_ids": second["char_ids"],
        "forward_state": zeros_f, "backward_state": zeros_b})
    out2 = backbone({
        **second, "backward_token_ids": first["token_ids"],
        "backward_char_ids": first["char_ids"],
        "forward_state": out1["forward_state"],
        "backward_state": out1["backward_state"]})
    self.assertNotIn("layer_activations", out1)
    for l in range(2):
      forward = tf.concat([out1["forward_outputs"][l],
                           out2["forward_outputs"][l]], axis=1)
      backward = tf.concat([out2["backward_outputs"][l],
                            out1["backward_outputs"][l]], axis=1)
      self.assertAllClose(forward, whole["forward_outputs"][l], atol=1e-5)
      self.assertAllClose(backward, whole["backward_outputs"][l], atol=1e-5)
      self.assertAllClose(out2["forward_state"][l][0],
                          whole["forward_state"][l][0], atol=1e-5)
      self.assertAllClose(out2["backward_state"][l][1],
                          whole["backward_state"][l][1], atol=1e-5)
    self.assertAllClose(out1["backward_token_representation"],
                        whole["token_representation"][:, 4:], atol=1e-6)

  def test_default_mask_from_token_ids_for_token_encoder(self):
    backbone = ElmoBackbone(_config(token_encoder="tokens"))
    out = backbone({"token_ids": self.inputs["token_ids"]})
    self.assertAllEqual(out["mask"], self.mask)

  def test_encode_tokens_zero_at_padding(self):
    for mode in ("chars", "tokens", "concat", "sum"):
      backbone = ElmoBackbone(_config(token_encoder=mode))
      x = backbone.encode_tokens(**self.inputs).numpy()
      self.assertEqual(x.shape, (3, 8, 16))
      self.assertAllEqual(x[~self.mask], np.zeros(((~self.mask).sum(), 16)))
      self.assertGreater(np.abs(x[self.mask]).sum(-1).min(), 0.0, mode)

  def test_config_round_trip_and_weights(self):
    config = _config(token_encoder="concat", token_embedding_dim=6)
    backbone = ElmoBackbone(config)
    expected = backbone(self.inputs)["layer_activations"]
    clone = ElmoBackbone.from_config(backbone.get_config())
    self.assertEqual(clone.model_config, config)
    self.assertEqual(clone.get_config(), backbone.get_config())
    path = os.path.join(self.get_temp_dir(), "backbone.weights.h5")
    backbone.save_weights(path)
    clone.build()
    clone.load_weights(path)
    self.assertAllClose(clone(self.inputs)["layer_activations"], expected)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(backbone))
    self.assertIsInstance(restored, ElmoBackbone)
    self.assertEqual(restored.model_config, config)

  def test_stable_sublayer_names(self):
    backbone = ElmoBackbone(_config(token_encoder="concat"), name="elmo")
    backbone.build()
    paths = {v.path for v in backbone.weights}
    for expected in ("elmo/char_encoder/cnn_0/kernel",
                     "elmo/char_encoder/highway_0/carry_kernel",
                     "elmo/char_encoder/projection/kernel",
                     "elmo/token_embedding/embeddings",
                     "elmo/token_projection/kernel",
                     "elmo/forward_lstm_0/kernel",
                     "elmo/backward_lstm_1/projection"):
      self.assertIn(expected, paths)

  def test_invalid_config(self):
    with self.assertRaisesRegex(ValueError, "token_encoder"):
      ElmoBackbone(_config(token_encoder="bytes"))
    with self.assertRaisesRegex(ValueError, "vocab_size"):
      ElmoBackbone(_config(token_encoder="tokens", vocab_size=0))

  def test_dropout_only_in_training(self):
    backbone = ElmoBackbone(_config(dropout=0.5))
    a = backbone(self.inputs, training=False)["layer_activations"]
    b = backbone(self.inputs, training=False)["layer_activations"]
    c = backbone(self.inputs, training=True)["layer_activations"]
    self.assertAllClose(a, b)
    self.assertNotAllClose(a[:, 1:], c[:, 1:])
    # Layer 0 (token representation) has no dropout.
    self.assertAllClose(a[:, 0], c[:, 0])


if __name__ == "__main__":
  tf.test.main()
