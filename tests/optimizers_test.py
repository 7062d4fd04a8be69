"""SparseAdagrad: Keras's Adagrad on IndexedSlices, touching only their rows."""

import unittest

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import optimizers as optimizers_lib

ROWS, DIM = 40, 3


def _gradients(rng, steps):
  """Per step: an IndexedSlices of (ROWS, DIM) with duplicate indices, and a
  dense gradient of a (DIM,) variable."""
  out = []
  for _ in range(steps):
    indices = rng.integers(0, 8, size=12).astype(np.int32)  # Many repeats.
    indices[:3] = [5, 5, 5]
    values = rng.normal(size=(12, DIM)).astype(np.float32)
    dense = rng.normal(size=(DIM,)).astype(np.float32)
    out.append((tf.IndexedSlices(tf.constant(values), tf.constant(indices),
                                 tf.constant([ROWS, DIM])),
                tf.constant(dense)))
  return out


def _adagrad(cls):
  return cls(learning_rate=0.2, initial_accumulator_value=1.0, epsilon=1e-10)


def _variables():
  rng = np.random.default_rng(0)
  return [keras.Variable(rng.normal(size=(ROWS, DIM)).astype(np.float32),
                         name="table"),
          keras.Variable(rng.normal(size=(DIM,)).astype(np.float32),
                         name="bias")]


def _run(optimizer, gradients, densify, use_tf_function):
  variables = _variables()
  optimizer.build(variables)

  def apply(sparse, dense):
    if densify:
      sparse = tf.convert_to_tensor(sparse)
    optimizer.apply([sparse, dense], variables)

  if use_tf_function:
    apply = tf.function(apply)
  for sparse, dense in gradients:
    apply(sparse, dense)
  return ([v.numpy() for v in variables],
          [v.numpy() for v in optimizer.variables])


class SparseAdagradTest(unittest.TestCase):

  def test_matches_keras_adagrad_on_the_dense_gradients(self):
    gradients = _gradients(np.random.default_rng(1), steps=6)
    expected, expected_slots = _run(_adagrad(keras.optimizers.Adagrad),
                                    gradients, densify=True,
                                    use_tf_function=False)
    for use_tf_function in (False, True):
      got, got_slots = _run(_adagrad(optimizers_lib.SparseAdagrad),
                            gradients, densify=False,
                            use_tf_function=use_tf_function)
      for a, b in zip(got + got_slots, expected + expected_slots):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # Dense gradients take TensorFlow's fused kernel: Keras's numbers to
    # float32 rounding (eps outside the square root instead of inside).
    for use_tf_function in (False, True):
      got, got_slots = _run(_adagrad(optimizers_lib.SparseAdagrad),
                            gradients, densify=True,
                            use_tf_function=use_tf_function)
      for a, b in zip(got + got_slots, expected + expected_slots):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

  def test_rows_without_gradient_keep_their_bits(self):
    gradients = _gradients(np.random.default_rng(2), steps=3)
    before = _variables()[0].numpy()
    (table, _), slots = _run(
        _adagrad(optimizers_lib.SparseAdagrad), gradients, densify=False,
        use_tf_function=True)
    [accumulator] = [s for s in slots if s.shape == (ROWS, DIM)]
    touched = np.unique(np.concatenate(
        [g.indices.numpy() for g, _ in gradients]))
    untouched = np.setdiff1d(np.arange(ROWS), touched)
    self.assertGreater(len(untouched), 20)
    np.testing.assert_array_equal(table[untouched], before[untouched])
    np.testing.assert_array_equal(accumulator[untouched], 1.0)
    self.assertTrue(np.all(table[touched] != before[touched]))

  def test_traced_update_never_touches_the_whole_matrix(self):
    rows, dim = 1000, 8
    table = keras.Variable(tf.zeros((rows, dim)))
    optimizer = _adagrad(optimizers_lib.SparseAdagrad)
    optimizer.build([table])

    @tf.function
    def apply(values, indices):
      optimizer.apply(
          [tf.IndexedSlices(values, indices, tf.constant([rows, dim]))],
          [table])

    graph = apply.get_concrete_function(
        tf.TensorSpec((None, dim)), tf.TensorSpec((None,), tf.int32)).graph
    full = [op.name for op in graph.get_operations()
            for out in op.outputs[:1]
            if out.shape.rank and out.shape[0] == rows]
    self.assertEqual(full, [])
    types = {op.type for op in graph.get_operations()}
    self.assertIn("ResourceGather", types)
    self.assertIn("ResourceScatterSub", types)

  def test_name_config_and_row_only_predicate(self):
    optimizer = _adagrad(optimizers_lib.SparseAdagrad)
    self.assertEqual(optimizer.name, "adagrad")
    config = optimizer.get_config()
    self.assertEqual(config["epsilon"], 1e-10)
    self.assertEqual(config["initial_accumulator_value"], 1.0)
    again = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer))
    self.assertIsInstance(again, optimizers_lib.SparseAdagrad)
    rows_only = optimizers_lib.updates_only_gradient_rows
    self.assertTrue(rows_only(optimizer))
    self.assertTrue(rows_only(keras.optimizers.SGD(0.1)))
    self.assertFalse(rows_only(keras.optimizers.SGD(0.1, momentum=0.9)))
    self.assertFalse(rows_only(keras.optimizers.Adam(0.1)))
    self.assertFalse(rows_only(keras.optimizers.Adagrad(0.1)))
    self.assertFalse(rows_only(optimizers_lib.SparseAdagrad(
        0.1, weight_decay=0.01)))

  def test_keras_sgd_keeps_untouched_rows(self):
    # The divergence guard relies on it (updates_only_gradient_rows).
    gradients = _gradients(np.random.default_rng(3), steps=2)
    before = _variables()[0].numpy()
    (table, _), _ = _run(keras.optimizers.SGD(0.1), gradients,
                         densify=False, use_tf_function=True)
    (expected, _), _ = _run(keras.optimizers.SGD(0.1), gradients,
                            densify=True, use_tf_function=True)
    np.testing.assert_allclose(table, expected, rtol=1e-6, atol=1e-6)
    touched = np.unique(np.concatenate(
        [g.indices.numpy() for g, _ in gradients]))
    untouched = np.setdiff1d(np.arange(ROWS), touched)
    np.testing.assert_array_equal(table[untouched], before[untouched])



class FusedAdamTest(unittest.TestCase):

  def test_matches_keras_adam(self):
    # Eager and traced, over 6 steps: Keras's weights and moments, to the
    # rounding of 1 - beta on dense gradients (TensorFlow's kernel takes it
    # in float32, Keras in Python floats: the second moment differs by ~1e-5
    # relative). IndexedSlices (densify=False; index 5 repeated) take
    # Keras's own sparse update, which dense Adam would miss by far more.
    gradients = _gradients(np.random.default_rng(4), steps=6)
    for densify in (True, False):
      expected, expected_slots = _run(keras.optimizers.Adam(0.05), gradients,
                                      densify=densify, use_tf_function=False)
      for use_tf_function in (False, True):
        got, got_slots = _run(optimizers_lib.FusedAdam(0.05), gradients,
                              densify=densify,
                              use_tf_function=use_tf_function)
        for a, b in zip(got + got_slots, expected + expected_slots):
          np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  def test_one_kernel_per_variable_name_and_config(self):
    optimizer = optimizers_lib.FusedAdam(0.05)
    self.assertEqual(optimizer.name, "adam")
    variable = keras.Variable(tf.zeros((4, 3)))
    optimizer.build([variable])
    apply = tf.function(lambda g: optimizer.apply([g], [variable]))
    graph = apply.get_concrete_function(tf.TensorSpec((4, 3))).graph
    types = [op.type for op in graph.get_operations()]
    self.assertEqual(types.count("ResourceApplyAdam"), 1)
    self.assertNotIn("AssignSubVariableOp", types)
    again = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer))
    self.assertIsInstance(again, optimizers_lib.FusedAdam)
    self.assertFalse(optimizers_lib.updates_only_gradient_rows(optimizer))


if __name__ == "__main__":
  unittest.main()
