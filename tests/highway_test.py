"""Tests for elmo_tf.layers.highway."""

import numpy as np
import tensorflow as tf

from elmo_tf.layers.highway import Highway


class HighwayTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.rng = np.random.default_rng(7)
    self.x = self.rng.normal(size=(3, 4, 6)).astype(np.float32)

  def test_matches_formula(self):
    layer = Highway(name="highway_0")
    layer.build(self.x.shape)
    for v in layer.weights:
      v.assign(self.rng.normal(size=v.shape).astype(np.float32))
    out = layer(tf.constant(self.x)).numpy()
    x = self.x.astype(np.float64)
    g = 1 / (1 + np.exp(-(x @ layer.carry_kernel.numpy()
                          + layer.carry_bias.numpy())))
    t = np.maximum(x @ layer.transform_kernel.numpy()
                   + layer.transform_bias.numpy(), 0)
    self.assertAllClose(out, g * t + (1 - g) * x, atol=1e-5)

  def test_initial_carry_bias_and_names(self):
    layer = Highway(name="highway_0")
    layer.build((None, 6))
    self.assertAllClose(layer.carry_bias.numpy(), np.full(6, -2.0))
    self.assertAllClose(layer.transform_bias.numpy(), np.zeros(6))
    self.assertEqual([v.name for v in layer.weights],
                     ["carry_kernel", "carry_bias", "transform_kernel",
                      "transform_bias"])
    self.assertEqual(tuple(layer.carry_kernel.shape), (6, 6))
    self.assertEqual(layer.compute_output_shape((None, 4, 6)), (None, 4, 6))

  def test_config_round_trip(self):
    layer = Highway(activation="tanh", carry_bias_init=-1.0, name="h")
    clone = Highway.from_config(layer.get_config())
    self.assertEqual(clone.get_config(), layer.get_config())
    clone.build(self.x.shape)
    layer.build(self.x.shape)
    clone.set_weights(layer.get_weights())
    self.assertAllClose(clone(self.x), layer(self.x))

  def test_gradients(self):
    layer = Highway()
    x = tf.constant(self.x)
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.trainable_variables)
    self.assertLen(grads, 4)
    for g in grads:
      self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)


if __name__ == "__main__":
  tf.test.main()
