"""Tests for elmo_tf.layers.sampled_softmax."""

import keras
import numpy as np
import tensorflow as tf

from elmo_tf.layers import sampled_softmax
from elmo_tf.layers.sampled_softmax import SampledSoftmax


def _log_softmax_without_padding(logits):
  logits = logits[:, 1:]
  lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1))
  return logits - logits.max(-1, keepdims=True) - lse[:, None]


class SampledSoftmaxTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(5)
    self.vocab_size, self.dim, self.n = 40, 8, 300
    rng = np.random.default_rng(5)
    self.hidden = tf.constant(rng.normal(size=(self.n, self.dim)), tf.float32)
    targets = rng.integers(1, self.vocab_size + 1, size=self.n)
    targets[:7] = 0  # Some rows without a target.
    self.targets = tf.constant(targets, tf.int32)

  def _layer(self, n_negative_samples=10):
    layer = SampledSoftmax(self.vocab_size, n_negative_samples, name="softmax")
    layer.build((None, self.dim))
    layer.bias.assign(np.linspace(-1, 1, self.vocab_size + 1))
    return layer

  def test_rejects_too_many_negatives(self):
    for n in (40, 41, 0):
      with self.assertRaisesRegex(ValueError, "n_negative_samples"):
        SampledSoftmax(self.vocab_size, n)
    SampledSoftmax(self.vocab_size, 39)

  def test_full_softmax_matches_numpy(self):
    layer = self._layer()
    losses = layer(self.hidden, self.targets, training=False).numpy()
    logits = (self.hidden.numpy() @ layer.kernel.numpy().T
              + layer.bias.numpy())
    log_probs = _log_softmax_without_padding(logits.astype(np.float64))
    targets = self.targets.numpy()
    expected = np.where(
        targets > 0, -log_probs[np.arange(self.n), np.maximum(targets, 1) - 1],
        0.0)
    self.assertAllClose(losses, expected, atol=1e-4)
    self.assertEqual(losses.dtype, np.float32)

  def test_blocked_full_softmax_equals_unblocked(self):
    layer = self._layer()
    whole = layer(self.hidden, self.targets, training=False)
    old = sampled_softmax._FULL_SOFTMAX_BLOCK
    try:
      sampled_softmax._FULL_SOFTMAX_BLOCK = 7  # 41 classes -> 6 blocks.
      blocked = layer(self.hidden, self.targets, training=False)
    finally:
      sampled_softmax._FULL_SOFTMAX_BLOCK = old
    self.assertAllClose(blocked, whole, atol=1e-5)

  def test_sampled_loss_trains_and_never_samples_padding(self):
    layer = self._layer(n_negative_samples=5)
    optimizer = keras.optimizers.Adam(0.05)
    # Learnable data: each target has its own hidden vector (up to noise).
    rng = np.random.default_rng(6)
    prototypes = rng.normal(size=(self.vocab_size + 1, self.dim)) * 2
    targets = self.targets.numpy()
    hidden = tf.constant(prototypes[targets] + 0.1 * rng.normal(
        size=(self.n, self.dim)), tf.float32)

    @tf.function
    def step(index):
      with tf.GradientTape() as tape:
        loss = tf.reduce_mean(layer(hidden, self.targets, training=True,
                                    seed=tf.stack([6, index])))
      grads = tape.gradient(loss, layer.trainable_variables)
      optimizer.apply_gradients(zip(grads, layer.trainable_variables))
      return loss

    full_before = float(tf.reduce_mean(
        layer(hidden, self.targets, training=False)))
    losses = [float(step(tf.constant(i))) for i in range(60)]
    full_after = float(tf.reduce_mean(
        layer(hidden, self.targets, training=False)))
    self.assertTrue(np.all(np.isfinite(losses)))
    self.assertLess(np.mean(losses[-10:]), np.mean(losses[:10]))
    self.assertLess(full_after, full_before)
    # Class 0 is never a sampled negative nor a target: no gradient reaches
    # its softmax row.
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(layer(hidden, self.targets, training=True,
                                 seed=tf.constant([6, 60])))
    kernel_grad = tf.convert_to_tensor(tape.gradient(loss, layer.kernel))
    self.assertAllEqual(kernel_grad[0], np.zeros(self.dim))

  def test_stateless_sampler_draws_distinct_classes_until_enough(self):
    # 80 of 100 classes: the 4 * 80 draws of the first chunk hold far fewer
    # distinct classes, so the sampler must keep drawing (not pad with
    # repeated frequent classes, which would bias the loss).
    true_classes = tf.constant([[0], [5], [99]], tf.int64)
    sampled, tries = sampled_softmax.stateless_log_uniform_unique_draws(
        80, 100, tf.constant([3, 4]))
    true_expected = sampled_softmax.log_uniform_expected_count(
        true_classes, tries, 100)
    sampled_expected = sampled_softmax.log_uniform_expected_count(
        sampled, tries, 100)
    sampled = sampled.numpy()
    self.assertEqual(sampled.shape, (80,))
    self.assertLen(set(sampled.tolist()), 80)
    self.assertTrue(np.all((sampled >= 0) & (sampled < 100)))
    self.assertEqual(true_expected.shape, (3, 1))
    self.assertTrue(np.all((sampled_expected.numpy() > 0)
                           & (sampled_expected.numpy() <= 1)))
    # The same seed gives the same negatives (resume draws what an
    # uninterrupted run drew); another seed gives others.
    again = sampled_softmax.stateless_log_uniform_unique_draws(
        80, 100, tf.constant([3, 4]))[0].numpy()
    other = sampled_softmax.stateless_log_uniform_unique_draws(
        80, 100, tf.constant([3, 5]))[0].numpy()
    self.assertAllEqual(again, sampled)
    self.assertNotAllEqual(np.sort(other), np.sort(sampled))
    # Compiled (as in training, where Grappler rewrites the graph) it draws
    # the same: PTB's case, 8192 of 10k words, takes ~80k draws.
    eager = sampled_softmax.stateless_log_uniform_unique_draws(
        8192, 10000, tf.constant([1, 2]))
    compiled = tf.function(
        sampled_softmax.stateless_log_uniform_unique_draws,
        reduce_retracing=True)(8192, 10000, tf.constant([1, 2]))
    self.assertAllEqual(compiled[0], eager[0])
    self.assertEqual(float(compiled[1]), float(eager[1]))
    self.assertGreater(float(eager[1]), 3 * 8192)  # Several chunks drawn.
    self.assertLen(set(compiled[0].numpy().tolist()), 8192)

  def test_stateless_sampler_expected_counts_are_inclusion_probabilities(self):
    # For an unbiased correction, class k must be among the negatives with
    # probability ~ its expected count, as with TensorFlow's own sampler.
    range_max, num_sampled, runs = 30, 20, 1000
    all_classes = tf.range(range_max, dtype=tf.int64)[:, None]
    included = np.zeros(range_max)
    expected = np.zeros(range_max)
    tf_expected = np.zeros(range_max)
    for run in range(runs):
      sampled, tries = sampled_softmax.stateless_log_uniform_unique_draws(
          num_sampled, range_max, tf.constant([7, run]))
      classes_expected = sampled_softmax.log_uniform_expected_count(
          all_classes, tries, range_max)
      included[sampled.numpy()] += 1
      expected += classes_expected.numpy()[:, 0]
      tf_expected += tf.random.log_uniform_candidate_sampler(
          all_classes, 1, num_sampled, True, range_max)[1].numpy()[:, 0]
    self.assertAllClose(included / runs, expected / runs, atol=0.06)
    self.assertAllClose(expected / runs, tf_expected / runs, atol=0.05)

  def test_stateless_sampled_loss_approximates_full_with_many_negatives(self):
    layer = self._layer(n_negative_samples=self.vocab_size - 5)
    full = layer(self.hidden, self.targets, training=False).numpy()
    sampled = np.mean(
        [layer(self.hidden, self.targets, training=True,
               seed=tf.constant([1, i])).numpy() for i in range(5)], axis=0)
    self.assertAllEqual(sampled[:7], np.zeros(7))  # Rows without a target.
    self.assertAllClose(sampled.mean(), full.mean(), rtol=0.03)

  def test_sampled_loss_needs_a_seed_or_negatives(self):
    layer = self._layer()
    with self.assertRaisesRegex(ValueError, "`seed`.*or `negatives`"):
      layer(self.hidden, self.targets, training=True)
    # The exact loss needs neither.
    layer(self.hidden, self.targets, training=False)

  def test_full_training_softmax_is_the_exact_loss(self):
    layer = SampledSoftmax(self.vocab_size, 0, training_softmax="full")
    layer.build((None, self.dim))
    self.assertAllClose(
        layer(self.hidden, self.targets, training=True),
        layer(self.hidden, self.targets, training=False))
    with self.assertRaisesRegex(ValueError, "training_softmax"):
      SampledSoftmax(self.vocab_size, 5, training_softmax="exact")
    with self.assertRaisesRegex(ValueError, "training_softmax='full'"):
      SampledSoftmax(self.vocab_size, self.vocab_size)

  def test_sampled_loss_equals_tensorflow_sampled_softmax_loss(self):
    layer = self._layer(n_negative_samples=12)
    targets = tf.cast(self.targets, tf.int64)
    # Negatives that include some rows' targets (accidental hits).
    sampled = tf.constant([0, 1, 2, 3, 5, 8, 13, 21, 30, 33, 35, 38],
                          tf.int64)
    tries = tf.constant(25.0, tf.float64)
    true_expected = sampled_softmax.log_uniform_expected_count(
        tf.maximum(targets - 1, 0), tries, self.vocab_size)
    sampled_expected = sampled_softmax.log_uniform_expected_count(
        sampled, tries, self.vocab_size)
    with tf.GradientTape(persistent=True) as tape:
      ours = layer(self.hidden, self.targets, training=True,
                   negatives=(sampled, tries))
      reference = tf.nn.sampled_softmax_loss(
          weights=layer.kernel, biases=layer.bias, labels=targets[:, None],
          inputs=self.hidden, num_sampled=12,
          num_classes=self.vocab_size + 1,
          sampled_values=(sampled + 1, true_expected[:, None],
                          sampled_expected),
          remove_accidental_hits=True) * tf.cast(targets > 0, tf.float32)
      ours_total, reference_total = (tf.reduce_sum(ours),
                                     tf.reduce_sum(reference))
    self.assertAllClose(ours, reference, rtol=1e-5, atol=1e-5)
    self.assertAllClose(
        tf.convert_to_tensor(tape.gradient(ours_total, layer.kernel)),
        tf.convert_to_tensor(tape.gradient(reference_total, layer.kernel)),
        atol=1e-5)
    # Passing the seed draws the same negatives as drawing them beforehand.
    seed = tf.constant([4, 2])
    drawn = sampled_softmax.stateless_log_uniform_unique_draws(
        12, self.vocab_size, seed)
    self.assertAllClose(
        layer(self.hidden, self.targets, training=True, seed=seed),
        layer(self.hidden, self.targets, training=True, negatives=drawn))

  def test_sampled_loss_reads_only_the_rows_it_needs(self):
    # Issue 12: the training step must not read the whole (classes, dim)
    # kernel (800k x 128 words is 400 MB); its gradients are the gathered
    # rows (IndexedSlices), which the optimizer applies row by row.
    layer = self._layer(n_negative_samples=12)
    classes = self.vocab_size + 1

    @tf.function
    def loss_and_grads(hidden, targets):
      with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(hidden, targets, training=True,
                                    seed=tf.constant([3, 4])))
      return tape.gradient(total, [layer.kernel, layer.bias])

    kernel_grad, bias_grad = loss_and_grads(self.hidden, self.targets)
    self.assertIsInstance(kernel_grad, tf.IndexedSlices)
    self.assertIsInstance(bias_grad, tf.IndexedSlices)
    graph = loss_and_grads.get_concrete_function(
        self.hidden, self.targets).graph
    whole = [f"{op.type} {op.name}" for op in graph.get_operations()
             if any(out.shape.rank and out.shape[0] == classes
                    for out in op.outputs)]
    self.assertEqual(whole, [])
    self.assertIn("ResourceGather",
                  {op.type for op in graph.get_operations()})

  def test_float32_under_mixed_precision(self):
    try:
      keras.mixed_precision.set_global_policy("mixed_bfloat16")
      layer = SampledSoftmax(self.vocab_size, 10)
      losses = layer(tf.cast(self.hidden, tf.bfloat16), self.targets,
                     training=True, seed=tf.constant([1, 2]))
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertEqual(layer.compute_dtype, "float32")
    self.assertEqual(losses.dtype, tf.float32)

  def test_config_round_trip(self):
    layer = SampledSoftmax(100, 17, training_softmax="full", name="softmax")
    clone = SampledSoftmax.from_config(layer.get_config())
    self.assertEqual(clone.get_config(), layer.get_config())
    self.assertEqual(clone.num_classes, 101)
    self.assertEqual(clone.training_softmax, "full")
    clone.build((None, 4))
    self.assertEqual(tuple(clone.kernel.shape), (101, 4))
    self.assertEqual(tuple(clone.bias.shape), (101,))


if __name__ == "__main__":
  tf.test.main()
