"""Tests for elmo_tf.ops.fused_adagrad and SparseAdagrad.apply_clipped: the
fused clipped update against the clip's multiply followed by
ResourceApplyAdagradV2 (the op compiles here if make setup did not build
it; the tests fail when it cannot)."""

import unittest

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import optimizers as optimizers_lib
from elmo_tf.ops import fused_adagrad


def _reference_step(weights, accumulator, grad, scale, lr=0.2, epsilon=1e-7):
  """clip's multiply + TensorFlow's fused Adagrad, on fresh variables."""
  variable, slot = tf.Variable(weights), tf.Variable(accumulator)
  tf.raw_ops.ResourceApplyAdagradV2(
      var=variable.handle, accum=slot.handle, lr=tf.constant(lr),
      epsilon=tf.constant(epsilon), grad=grad * scale, use_locking=False,
      update_slots=True)
  return variable.numpy(), slot.numpy()


class FusedAdagradOpTest(unittest.TestCase):

  def setUp(self):
    super().setUp()
    assert fused_adagrad.load() is not None, fused_adagrad.failure()
    rng = np.random.default_rng(0)
    # 23,100 values: whole vectors of 16 and a tail.
    self.weights = rng.normal(size=(300, 77)).astype(np.float32)
    self.accumulator = rng.uniform(0.1, 2.0, size=(300, 77)).astype(
        np.float32)
    self.grad = rng.normal(size=(300, 77)).astype(np.float32)

  def test_matches_the_clip_and_tensorflows_adagrad(self):
    for scale in (1.0, 0.37):
      variable = tf.Variable(self.weights)
      slot = tf.Variable(self.accumulator)
      abs_max = fused_adagrad.apply(variable, slot, 0.2, 1e-7, self.grad,
                                    tf.constant(scale))
      want_w, want_a = _reference_step(self.weights, self.accumulator,
                                       self.grad, scale)
      np.testing.assert_allclose(variable.numpy(), want_w, rtol=1e-6,
                                 atol=1e-7)
      np.testing.assert_allclose(slot.numpy(), want_a, rtol=1e-6)
      self.assertEqual(float(abs_max), float(np.abs(variable.numpy()).max()))

  def test_a_nan_weight_gives_nan(self):
    grad = self.grad.copy()
    grad[299, 76] = np.nan  # In the tail.
    variable = tf.Variable(self.weights)
    abs_max = fused_adagrad.apply(variable, tf.Variable(self.accumulator),
                                  0.2, 1e-7, grad, tf.constant(1.0))
    self.assertTrue(np.isnan(float(abs_max)))
    grad = self.grad.copy()
    grad[3, 5] = np.nan  # In the vector loop.
    abs_max = fused_adagrad.apply(tf.Variable(self.weights),
                                  tf.Variable(self.accumulator), 0.2, 1e-7,
                                  grad, tf.constant(1.0))
    self.assertTrue(np.isnan(float(abs_max)))

  def test_a_value_read_before_the_update_keeps_its_numbers(self):
    variable = tf.Variable(self.weights)
    slot = tf.Variable(self.accumulator)

    @tf.function
    def read_then_update():
      before = variable.read_value()
      abs_max = fused_adagrad.apply(variable, slot, 0.2, 1e-7, self.grad,
                                    tf.constant(1.0))
      return before, abs_max

    before, _ = read_then_update()
    np.testing.assert_array_equal(before.numpy(), self.weights)

  def test_bad_shapes_are_errors(self):
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "must be shaped as the variables"):
      fused_adagrad.apply(tf.Variable(self.weights),
                          tf.Variable(self.accumulator), 0.2, 1e-7,
                          self.grad[:10], tf.constant(1.0))


class ApplyClippedTest(unittest.TestCase):

  def test_matches_clip_by_global_norm_then_apply_gradients(self):
    rng = np.random.default_rng(3)
    table = rng.normal(size=(20, 4)).astype(np.float32)
    bias = rng.normal(size=(4,)).astype(np.float32)
    sparse = tf.IndexedSlices(
        tf.constant(rng.normal(size=(5, 4)).astype(np.float32)),
        tf.constant([1, 3, 3, 7, 19]), tf.constant([20, 4]))
    dense = tf.constant(rng.normal(size=(4,)).astype(np.float32) * 30)

    def run(clipped):
      variables = [keras.Variable(table, name="table"),
                   keras.Variable(bias, name="bias")]
      optimizer = optimizers_lib.SparseAdagrad(
          learning_rate=0.2, initial_accumulator_value=1.0)
      optimizer.build(variables)

      @tf.function
      def step():
        norm = tf.linalg.global_norm([sparse, dense])
        scale = 10.0 * tf.minimum(1.0 / norm, 1.0 / 10.0)
        if clipped:
          return optimizer.apply_clipped(
              zip([sparse, dense], variables), scale)
        grads, _ = tf.clip_by_global_norm([sparse, dense], 10.0)
        optimizer.apply_gradients(zip(grads, variables))
        return {}

      maxima = step()
      return [v.numpy() for v in variables], maxima, variables

    (want_table, want_bias), _, _ = run(False)
    (got_table, got_bias), maxima, variables = run(True)
    np.testing.assert_allclose(got_table, want_table, rtol=1e-6)
    np.testing.assert_allclose(got_bias, want_bias, rtol=1e-6)
    # The dense variable's max came from the fused op; the sparse one's
    # rows are the trainer's to read.
    self.assertEqual(list(maxima), [optimizers_lib.variable_key(
        variables[1])])
    self.assertAlmostEqual(float(maxima[optimizers_lib.variable_key(
        variables[1])]), float(np.abs(got_bias).max()), places=6)


if __name__ == "__main__":
  unittest.main()
