"""Tests for elmo_tf.layers.scalar_mix."""

import numpy as np
import tensorflow as tf

from elmo_tf.layers.scalar_mix import ScalarMix


class ScalarMixTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(9)
    self.layers = rng.normal(size=(2, 3, 5, 4)).astype(np.float32) * 3 + 1
    self.mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], bool)
    self.weights = np.array([0.3, -1.0, 2.0], np.float32)

  def _mix(self, **kwargs):
    mix = ScalarMix(num_layers=3, name="mix", **kwargs)
    mix.build()
    mix.scalar_weights.assign(self.weights)
    mix.gamma.assign(1.5)
    return mix

  def test_weighted_sum(self):
    mix = self._mix()
    out = mix(tf.constant(self.layers)).numpy()
    w = np.exp(self.weights) / np.exp(self.weights).sum()
    expected = 1.5 * np.einsum("l,bltd->btd", w, self.layers)
    self.assertAllClose(out, expected, atol=1e-5)
    # A list of layers gives the same result; the mask zeroes padding.
    listed = mix([self.layers[:, j] for j in range(3)],
                 mask=tf.constant(self.mask)).numpy()
    self.assertAllClose(listed, expected * self.mask[..., None], atol=1e-5)

  def test_masked_layer_norm(self):
    mix = self._mix(do_layer_norm=True)
    out = mix(tf.constant(self.layers), mask=tf.constant(self.mask)).numpy()
    w = np.exp(self.weights) / np.exp(self.weights).sum()
    expected = np.zeros((2, 5, 4))
    for j in range(3):
      values = self.layers[:, j][self.mask]  # (n_unmasked, dim)
      normed = (self.layers[:, j] - values.mean()) / np.sqrt(
          values.var() + 1e-12)
      expected += w[j] * normed
    expected = 1.5 * expected * self.mask[..., None]
    self.assertAllClose(out, expected, atol=1e-4)

  def test_top_only(self):
    mix = self._mix(use_top_only=True)
    out = mix(tf.constant(self.layers))
    self.assertAllClose(out, 1.5 * self.layers[:, -1], atol=1e-6)
    self.assertEqual([v.name for v in mix.trainable_variables], ["gamma"])

  def test_l2_loss_and_gradients(self):
    mix = self._mix(l2_coef=0.1)
    self.assertAllClose(mix.regularization_loss(),
                        0.1 * np.sum(self.weights ** 2))
    with tf.GradientTape() as tape:
      out = mix(tf.constant(self.layers))
      self.assertLen(mix.losses, 1)
      self.assertAllClose(mix.losses[0], 0.1 * np.sum(self.weights ** 2))
      loss = tf.reduce_sum(out) + tf.add_n(mix.losses)
    grads = tape.gradient(loss, mix.trainable_variables)
    for g in grads:
      self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)
    # No penalty without l2_coef.
    self.assertEmpty(self._mix().losses)

  def test_initial_values_and_shape(self):
    mix = ScalarMix(num_layers=3)
    out = mix(tf.constant(self.layers))
    self.assertAllClose(mix.scalar_weights.numpy(), np.zeros(3))
    self.assertAllClose(mix.gamma.numpy(), 1.0)
    self.assertAllClose(out, self.layers.mean(axis=1), atol=1e-5)
    self.assertEqual(mix.compute_output_shape((2, 3, 5, 4)), (2, 5, 4))
    self.assertEqual(mix.compute_output_shape([(2, 5, 4)] * 3), (2, 5, 4))
    with self.assertRaisesRegex(ValueError, "expects 3 layers"):
      mix(tf.constant(self.layers[:, :2]))

  def test_config_round_trip(self):
    mix = ScalarMix(num_layers=3, l2_coef=0.01, do_layer_norm=True,
                    use_top_only=False, name="m")
    clone = ScalarMix.from_config(mix.get_config())
    self.assertEqual(clone.get_config(), mix.get_config())


if __name__ == "__main__":
  tf.test.main()
