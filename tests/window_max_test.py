"""The window max op (elmo_tf/ops/window_max) against tf.math.segment_max:
outputs, gradients, ties and bad input; in the character encoder, in
training, and its absence from exported SavedModels."""

import os
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import trainer as trainer_lib
from elmo_tf.layers.char_cnn import CharacterEncoder
from elmo_tf.ops import window_max
from tests import export_testutil


def _windows(seed, n_tokens=9, n_filters=37, dtype=tf.float32):
  """Random features of 1-6 windows per token; (features, rows)."""
  rng = np.random.default_rng(seed)
  counts = rng.integers(1, 7, size=n_tokens)
  rows = np.repeat(np.arange(n_tokens), counts).astype(np.int32)
  features = rng.normal(size=(len(rows), n_filters)).astype(np.float32)
  return tf.cast(features, dtype), tf.constant(rows)


def _max_and_gradient(pool, features, rows, d_pooled):
  with tf.GradientTape() as tape:
    tape.watch(features)
    pooled = pool(features, rows)
  return pooled, tape.gradient(pooled, features, output_gradients=d_pooled)


def _ours(features, rows):
  return window_max.window_max(features, rows, int(rows[-1]) + 1)


def _graph_op_types(encoder, char_ids):
  @tf.function
  def step(ids):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.cast(encoder(ids), tf.float32))
    return tape.gradient(loss, encoder.trainable_variables)
  graph = step.get_concrete_function(char_ids).graph
  types = [op.type for op in graph.get_operations()]
  for function in graph.as_graph_def().library.function:
    types += [node.op for node in function.node_def]
  return types


class WindowMaxOpTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # The op must build where the tests run (make setup builds it).
    assert window_max.load() is not None, window_max.failure()

  def test_matches_segment_max_and_its_gradient_without_ties(self):
    for dtype in (tf.float32, tf.bfloat16):
      features, rows = _windows(1, dtype=dtype)
      # Per filter a permutation of the windows: small integers, exact and
      # distinct in bfloat16 too, so no ties.
      rng = np.random.default_rng(3)
      n_windows = features.shape[0]
      features = tf.cast(np.stack(
          [rng.permutation(n_windows) for _ in range(37)], axis=1), dtype)
      d_pooled = tf.cast(tf.random.normal((9, 37), seed=2), dtype)
      want, want_grad = _max_and_gradient(tf.math.segment_max, features,
                                          rows, d_pooled)
      got, got_grad = _max_and_gradient(_ours, features, rows, d_pooled)
      self.assertEqual(got.dtype, dtype)
      self.assertAllEqual(got, want)
      self.assertAllEqual(got_grad, want_grad)

  def test_random_values_exact_max_and_argmax(self):
    for dtype in (tf.float32, tf.bfloat16):
      features, rows = _windows(5, n_tokens=40, n_filters=300, dtype=dtype)
      pooled, argmax = window_max.load().elmo_window_max(
          features=features, rows=rows, num_rows=40)
      self.assertAllEqual(pooled, tf.math.segment_max(features, rows))
      values = np.asarray(tf.cast(features, tf.float32))
      argmax = argmax.numpy()
      # The first window holding the max, inside its own token's windows.
      for r in range(40):
        own = np.flatnonzero(rows.numpy() == r)
        first = own[np.argmax(values[own], axis=0)]
        self.assertAllEqual(argmax[r], first)

  def test_ties_give_the_whole_gradient_to_the_first_window(self):
    features = tf.constant([[1., 5.], [3., 5.], [3., 2.], [7., 7.]])
    rows = tf.constant([0, 0, 0, 1])
    pooled, grad = _max_and_gradient(_ours, features, rows,
                                     tf.constant([[10., 20.], [30., 40.]]))
    self.assertAllEqual(pooled, [[3., 5.], [7., 7.]])
    self.assertAllEqual(grad, [[0., 20.], [10., 0.], [0., 0.], [30., 40.]])
    # TensorFlow splits it; per token, the sums agree.
    _, tf_grad = _max_and_gradient(tf.math.segment_max, features, rows,
                                   tf.constant([[10., 20.], [30., 40.]]))
    self.assertAllEqual(tf_grad[:3], [[0., 10.], [5., 10.], [5., 0.]])
    self.assertAllEqual(tf.math.segment_sum(grad, rows),
                        tf.math.segment_sum(tf_grad, rows))

  def test_no_tokens(self):
    pooled = window_max.window_max(tf.zeros((0, 4)), tf.zeros((0,), tf.int32),
                                   0)
    self.assertEqual(pooled.shape, (0, 4))

  def test_bad_rows_are_errors_that_say_what_is_wrong(self):
    features = tf.zeros((4, 2))
    for rows, num_rows, message in (
        ([0, 1, 0, 1], 2, r"rows must be ascending: rows\[2\] = 0 follows 1"),
        ([0, 0, 2, 2], 3, r"token 1 has no window"),
        ([0, 0, 1, 1], 3, r"token 2 has no window \(num_rows = 3"),
        ([0, 0, 1, 5], 3, r"rows\[3\] = 5 is outside \[0, num_rows = 3\)"),
    ):
      with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
        window_max.window_max(features, tf.constant(rows), num_rows)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"rows must be \(windows,\) = \(4,\)"):
      window_max.window_max(features, tf.constant([0, 0, 1]), 2)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "argmax names a window outside its token"):
      window_max.load().elmo_window_max_grad(
          d_pooled=tf.ones((2, 2)), argmax=tf.constant([[0, 0], [0, 3]]),
          rows=tf.constant([0, 0, 1, 1]))


class WindowEmbeddingsTest(tf.test.TestCase):

  def test_gather_and_a_dense_table_gradient(self):
    rng = np.random.default_rng(4)
    ids = tf.constant(rng.integers(0, 9, size=(13, 3)).astype(np.int32))
    d_windows = rng.normal(size=(13, 3 * 5)).astype(np.float32)
    for dtype in (tf.float32, tf.bfloat16):
      table = tf.cast(rng.normal(size=(9, 5)).astype(np.float32), dtype)
      with self.subTest(dtype=dtype.name):
        with tf.GradientTape(persistent=True) as tape:
          tape.watch(table)
          got = window_max.window_embeddings(table, ids)
          want = tf.reshape(tf.gather(table, ids), (13, 15))
          got_loss = tf.reduce_sum(got * tf.cast(d_windows, dtype))
          want_loss = tf.reduce_sum(want * tf.cast(d_windows, dtype))
        self.assertAllEqual(got, want)
        got_grad = tape.gradient(got_loss, table)
        want_grad = tf.convert_to_tensor(tape.gradient(want_loss, table))
        self.assertIsInstance(got_grad, tf.Tensor)  # Dense, not slices.
        self.assertEqual(got_grad.dtype, dtype)
        tolerance = 1e-5 if dtype == tf.float32 else 0.05
        self.assertAllClose(got_grad, want_grad, atol=tolerance,
                            rtol=tolerance)

  def test_bad_ids_are_errors(self):
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"ids\[1, 0\] = 9 is not in \[0, 9\)"):
      window_max.window_embeddings(tf.zeros((9, 5)),
                                   tf.constant([[0, 1], [9, 2]]))


class EncoderWithWindowMaxTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.kwargs = dict(projection_dim=6, filters=((1, 4), (2, 4), (3, 8)),
                       n_highway=1, embedding_dim=5, max_characters_per_token=12,
                       name="char_encoder")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 262, size=(3, 7, 12)).astype(np.int32)
    lengths = rng.integers(1, 10, size=(3, 7))
    ids[np.arange(12)[None, None, :] >= lengths[..., None]] = 261
    ids[2, 5:] = 0  # padding tokens
    ids[1, 3] = ids[0, 0]  # a repeated token
    self.char_ids = tf.constant(ids)

  def _outputs_and_gradients(self, window_max_kernel):
    keras.utils.set_random_seed(11)
    encoder = CharacterEncoder(window_max_kernel=window_max_kernel,
                               **self.kwargs)
    with tf.GradientTape() as tape:
      out = encoder(self.char_ids)
      loss = tf.reduce_sum(tf.cast(out, tf.float32) ** 2)
    grads = tape.gradient(loss, encoder.trainable_variables)
    return encoder, out, [tf.convert_to_tensor(g) for g in grads]

  def test_same_outputs_and_gradients_as_segment_max(self):
    _, want, want_grads = self._outputs_and_gradients(False)
    encoder, got, got_grads = self._outputs_and_gradients(True)
    self.assertAllClose(got, want, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
      self.assertAllClose(g, w, atol=1e-5)
    types = _graph_op_types(encoder, self.char_ids)
    self.assertIn("ElmoWindowMax", types)
    self.assertIn("ElmoWindowMaxGrad", types)
    self.assertNotIn("SegmentMax", types)

  def test_mixed_bfloat16(self):
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      _, want, want_grads = self._outputs_and_gradients(False)
      encoder, got, got_grads = self._outputs_and_gradients(True)
      types = _graph_op_types(encoder, self.char_ids)
    finally:
      keras.mixed_precision.set_global_policy(policy)
    self.assertEqual(got.dtype, tf.bfloat16)
    self.assertIn("ElmoWindowMax", types)
    # The same forward; the gradients differ only where bfloat16 values tie
    # (this op gives the first window what TensorFlow splits).
    self.assertAllEqual(got, want)
    for g, w in zip(got_grads, want_grads):
      self.assertAllClose(g, w, atol=0.05, rtol=0.05)

  def test_off_or_missing_uses_segment_max(self):
    encoder, _, _ = self._outputs_and_gradients(False)
    self.assertNotIn("ElmoWindowMax",
                     _graph_op_types(encoder, self.char_ids))
    with mock.patch.object(window_max, "load", return_value=None):
      encoder, _, _ = self._outputs_and_gradients(True)
      types = _graph_op_types(encoder, self.char_ids)
    self.assertNotIn("ElmoWindowMax", types)
    self.assertIn("SegmentMax", types)

  def test_config_round_trip(self):
    encoder = CharacterEncoder(window_max_kernel=False, **self.kwargs)
    clone = CharacterEncoder.from_config(encoder.get_config())
    self.assertFalse(clone.window_max_kernel)
    model_config = config_lib.preset("tiny")
    self.assertTrue(model_config.char_cnn.window_max_kernel)
    self.assertFalse(export_lib.without_custom_ops(
        model_config).char_cnn.window_max_kernel)


class WindowMaxTrainingTest(tf.test.TestCase):

  def test_training_with_the_op_matches_and_exports_without_it(self):
    tmp = tempfile.mkdtemp()
    corpus, cache = export_testutil.prepare_toy_corpus(tmp)
    losses = {}
    for use_op in (False, True):
      model = config_lib.preset("tiny")
      model = model.replace(
          char_cnn=model.char_cnn.replace(window_max_kernel=use_op))
      config = config_lib.ExperimentConfig(
          model=model,
          data=config_lib.DataConfig(corpus=corpus, batching="stream",
                                     batch_size=8, unroll_steps=10),
          train=config_lib.TrainConfig(
              max_steps=5, log_every_steps=5, checkpoint_every_steps=5,
              eval_every_steps=0, seed=3, learning_rate=0.5))
      model_dir = os.path.join(tmp, f"run_{use_op}")
      with trainer_lib.make_trainer(config, model_dir,
                                    cache_root=cache) as trainer:
        losses[use_op] = [trainer.train_step()["loss"] for _ in range(5)]
        trainer.manager.save(checkpoint_number=5)
    self.assertAllClose(losses[True], losses[False], rtol=1e-4)

    saved = export_lib.export_saved_model(os.path.join(tmp, "run_True"),
                                          os.path.join(tmp, "export"))
    with open(os.path.join(saved, "saved_model.pb"), "rb") as f:
      graph = f.read()
    self.assertNotIn(b"ElmoWindowMax", graph)
    # Nor the highway gate op, which both runs trained with (its default).
    self.assertNotIn(b"ElmoHighwayGate", graph)
    config, _ = export_lib.read_export(saved)
    self.assertTrue(config.model.char_cnn.window_max_kernel)


if __name__ == "__main__":
  tf.test.main()
