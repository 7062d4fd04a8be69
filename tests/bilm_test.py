"""Tests for elmo_tf.models.bilm."""

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.models.bilm import BidirectionalLM

_VOCAB = ["<S>", "</S>", "<UNK>"] + [f"w{i}" for i in range(25)]  # id = i + 1


def _char_row(token):
  row = np.full(50, 261, np.int32)
  row[0] = 259
  data = {"<S>": [257], "</S>": [258]}.get(
      token, [b + 1 for b in token.encode("utf-8")])
  row[1:1 + len(data)] = data
  row[1 + len(data)] = 260
  return row


_CHAR_TABLE = np.stack([np.zeros(50, np.int32)] + [_char_row(t)
                                                   for t in _VOCAB])


def _sentence_batch(sentences):
  """`sentences`-mode batch of lists of word ids (without <S>, </S>)."""
  rows = [[1] + list(s) + [2] for s in sentences]
  time = max(len(r) for r in rows)
  token_ids = np.zeros((len(rows), time), np.int32)
  for b, r in enumerate(rows):
    token_ids[b, :len(r)] = r
  forward_targets = np.zeros_like(token_ids)
  forward_targets[:, :-1] = token_ids[:, 1:]
  backward_targets = np.zeros_like(token_ids)
  backward_targets[:, 1:] = token_ids[:, :-1]
  backward_targets[token_ids == 0] = 0
  return {
      "token_ids": tf.constant(token_ids),
      "char_ids": tf.constant(_CHAR_TABLE[token_ids]),
      "mask": tf.constant(token_ids > 0),
      "forward_targets": tf.constant(forward_targets),
      "backward_targets": tf.constant(backward_targets),
      # The sampled training loss draws its negatives from this seed.
      "sampler_seed": tf.constant([1, 2]),
  }


def _config(**changes):
  config = config_lib.preset("tiny").replace(vocab_size=len(_VOCAB),
                                             n_negative_samples=8)
  return config.replace(**changes)


class BidirectionalLMTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(1)
    self.batch = _sentence_batch([[4, 5, 6, 7, 8], [9, 10], [11, 12, 13]])

  def test_outputs(self):
    model = BidirectionalLM(_config())
    out = model(self.batch, training=True)
    for key in ("loss", "forward_loss", "backward_loss"):
      self.assertEqual(out[key].shape, ())
      self.assertEqual(out[key].dtype, tf.float32)
      self.assertTrue(np.isfinite(out[key].numpy()))
    # One target per real token and direction, minus </S> / <S>.
    self.assertEqual(float(out["forward_tokens"]), 5 + 1 + 2 + 1 + 3 + 1)
    self.assertEqual(float(out["backward_tokens"]), 13.0)
    self.assertAllClose(out["loss"],
                        0.5 * (out["forward_loss"] + out["backward_loss"]))
    self.assertLen(out["forward_state"], 2)
    self.assertLen(out["backward_state"], 2)

  def test_eval_loss_is_full_softmax_cross_entropy(self):
    model = BidirectionalLM(_config())
    out = model(self.batch, training=False)
    backbone = model.backbone(
        {k: self.batch[k] for k in ("token_ids", "char_ids", "mask")})
    for direction in ("forward", "backward"):
      hidden = tf.reshape(backbone[f"{direction}_outputs"][-1], (-1, 16))
      logits = (tf.matmul(hidden, model.softmax.kernel, transpose_b=True)
                + model.softmax.bias).numpy()  # (N, classes)
      logits[:, 0] = -np.inf  # Class 0 (padding) is never predicted.
      log_probs = logits - np.logaddexp.reduce(logits, axis=-1,
                                               keepdims=True)
      targets = self.batch[f"{direction}_targets"].numpy().reshape(-1)
      valid = targets > 0
      expected = -log_probs[np.arange(len(targets)), targets][valid].mean()
      self.assertAllClose(out[f"{direction}_loss"], expected, atol=1e-5)

  def test_gradients_reach_every_variable(self):
    for mode in ("chars", "concat"):
      model = BidirectionalLM(_config(token_encoder=mode, dropout=0.1))
      model.build()
      with tf.GradientTape() as tape:
        out = model(self.batch, training=True)
      grads = tape.gradient(out["loss"], model.trainable_variables)
      self.assertLen(grads, len(model.trainable_variables))
      for v, g in zip(model.trainable_variables, grads):
        self.assertIsNotNone(g, v.path)
        g = tf.convert_to_tensor(g)
        self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0, v.path)

  def test_learns_a_repeating_pattern(self):
    model = BidirectionalLM(_config(dropout=0.0))
    steps = 200
    # A decaying rate, so the loss settles at the end: at a constant 0.02
    # it oscillates around the floor and the last step's loss depended on
    # rounding (the fused LSTM kernel's ended 0.01 above the bound, the
    # TensorFlow ops' 0.01 below). Here both end at 0.28-0.29.
    optimizer = keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(0.02, steps))
    pattern = [4, 5, 6, 7, 8, 9]
    # All rotations: <S> p_i .. p_{i-1} </S>.
    batch = _sentence_batch([pattern[i:] + pattern[:i] for i in range(6)])
    model.build()

    @tf.function
    def train_step(batch, step):
      # New negatives every step.
      batch = dict(batch, sampler_seed=tf.stack([1, step]))
      with tf.GradientTape() as tape:
        out = model(batch, training=True)
      grads = tape.gradient(out["loss"], model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return out["loss"]

    initial = float(model(batch, training=False)["loss"])
    for step in range(steps):
      train_step(batch, tf.constant(step))
    final = model(batch, training=False)
    self.assertGreater(initial, 3.0)  # ~log(28) for a fresh model.
    # Every target is determined by the context except the first word after
    # <S> (forward) or before </S> (backward), a uniform choice among 6:
    # the best possible loss is log(6) / 7 per direction.
    floor = np.log(6) / 7
    for key in ("loss", "forward_loss", "backward_loss"):
      self.assertLess(float(final[key]), floor + 0.1, key)

  def test_mixed_bfloat16_gives_float32_loss(self):
    try:
      keras.mixed_precision.set_global_policy("mixed_bfloat16")
      model = BidirectionalLM(_config())
      with tf.GradientTape() as tape:
        out = model(self.batch, training=True)
      grads = tape.gradient(out["loss"], model.trainable_variables)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertEqual(out["loss"].dtype, tf.float32)
    self.assertTrue(np.isfinite(out["loss"].numpy()))
    self.assertEqual(model.softmax.compute_dtype, "float32")
    self.assertEqual(model.backbone.forward_lstms[0].compute_dtype, "bfloat16")
    for v, g in zip(model.trainable_variables, grads):
      self.assertEqual(v.dtype, "float32")
      self.assertIsNotNone(g, v.path)
    self.assertEqual(keras.mixed_precision.global_policy().name, "float32")

  def test_stream_mode_batch_with_states(self):
    model = BidirectionalLM(_config())
    text = np.array([[4, 5, 6, 7, 8, 9, 10, 11],
                     [12, 13, 14, 15, 16, 17, 18, 19]], np.int32)
    # Two windows of 4 per part; the forward reads them left to right, the
    # backward right to left (window order reversed).
    def window(k):
      ids = text[:, 4 * k:4 * k + 4]
      return ids

    def targets(k):
      forward = text[:, 4 * k + 1:4 * k + 5]
      if forward.shape[1] < 4:
        forward = np.pad(forward, [[0, 0], [0, 4 - forward.shape[1]]])
      backward = text[:, max(4 * k - 1, 0):4 * k + 3]
      if backward.shape[1] < 4:
        backward = np.pad(backward, [[0, 0], [4 - backward.shape[1], 0]])
      return forward, backward

    f_state = b_state = None
    losses = []
    for step, (fk, bk) in enumerate([(0, 1), (1, 0)]):
      f_ids, b_ids = window(fk), window(bk)
      batch = {
          "token_ids": f_ids, "char_ids": _CHAR_TABLE[f_ids],
          "mask": f_ids > 0, "forward_targets": targets(fk)[0],
          "backward_token_ids": b_ids, "backward_char_ids": _CHAR_TABLE[b_ids],
          "backward_mask": b_ids > 0, "backward_targets": targets(bk)[1],
      }
      batch = {k: tf.constant(v) for k, v in batch.items()}
      if f_state is not None:
        batch["forward_state"] = f_state
        batch["backward_state"] = b_state
      out = model(batch, training=False)
      f_state, b_state = out["forward_state"], out["backward_state"]
      losses.append(out)
    # Every token is a target once per direction, except the first forward
    # and the last backward one.
    self.assertEqual(sum(float(o["forward_tokens"]) for o in losses), 14.0)
    self.assertEqual(sum(float(o["backward_tokens"]) for o in losses), 14.0)
    # Same total loss as one pass over the whole text.
    whole = {
        "token_ids": text, "char_ids": _CHAR_TABLE[text], "mask": text > 0,
        "forward_targets": np.pad(text[:, 1:], [[0, 0], [0, 1]]),
        "backward_targets": np.pad(text[:, :-1], [[0, 0], [1, 0]]),
    }
    out = model({k: tf.constant(v) for k, v in whole.items()}, training=False)
    for direction in ("forward", "backward"):
      total = sum(float(o[f"{direction}_loss"] * o[f"{direction}_tokens"])
                  for o in losses)
      self.assertAllClose(total / 14.0, out[f"{direction}_loss"], atol=1e-5)

  def test_config_round_trip_and_errors(self):
    model = BidirectionalLM(_config())
    clone = BidirectionalLM.from_config(model.get_config())
    self.assertEqual(clone.model_config, model.model_config)
    with self.assertRaisesRegex(ValueError, "n_negative_samples"):
      BidirectionalLM(_config(n_negative_samples=len(_VOCAB)))
    with self.assertRaisesRegex(ValueError, "vocab_size"):
      BidirectionalLM(_config(vocab_size=0))


if __name__ == "__main__":
  tf.test.main()
