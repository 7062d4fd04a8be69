"""Softmax output layer over the word vocabulary, sampled in training."""

import math

import keras
import tensorflow as tf

# Classes per block when the full softmax is computed in blocks (evaluation
# with a large vocabulary): bounds the (rows, classes) logits in memory.
_FULL_SOFTMAX_BLOCK = 16384
# Logit given to the padding class 0 in the full softmax: never predicted.
_PADDING_LOGIT = -1e9


def _log_uniform_probability(ids, range_max):
  """P(k) = log((k + 2) / (k + 1)) / log(range_max + 1), k in [0, range_max)."""
  ids = tf.cast(ids, tf.float64)
  return tf.math.log1p(1.0 / (ids + 1.0)) / math.log(range_max + 1.0)


def stateless_log_uniform_unique_sampler(true_classes, num_sampled, range_max,
                                         seed, oversample=4):
  """`tf.random.log_uniform_candidate_sampler(unique=True)`, but stateless.

  Same distribution and the same expected-count formula as TensorFlow's
  sampler (distinct candidates from repeated draws; expected count of class
  k is 1 - (1 - P(k))^tries, where tries is the number of draws it took to
  collect `num_sampled` distinct ones). Draws `oversample * num_sampled`
  candidates at once; in the rare case they hold fewer distinct classes,
  the distinct ones are padded with the most frequent class ids.

  Args:
    true_classes: (N, 1) int64 targets in [0, range_max).
    num_sampled: distinct negatives wanted.
    range_max: number of classes.
    seed: int (2,) tensor for `tf.random.stateless_uniform`.

  Returns:
    (sampled (num_sampled,) int64, true_expected (N, 1) float32,
     sampled_expected (num_sampled,) float32).
  """
  draws = oversample * num_sampled
  uniform = tf.random.stateless_uniform((draws,), seed=tf.cast(seed, tf.int64),
                                        dtype=tf.float64)
  # Inverse CDF of the log-uniform distribution: (draws,) in [0, range_max).
  ids = tf.cast(tf.floor(tf.exp(uniform * math.log(range_max + 1.0))) - 1,
                tf.int64)
  ids = tf.clip_by_value(ids, 0, range_max - 1)
  unique_ids, index = tf.unique(ids)  # In order of first appearance.
  n_unique = tf.shape(unique_ids, out_type=tf.int64)[0]
  first_draw = tf.math.unsorted_segment_min(
      tf.range(draws, dtype=tf.int64), index, tf.cast(n_unique, tf.int32))
  enough = n_unique >= num_sampled
  tries = tf.where(enough,
                   first_draw[tf.minimum(tf.constant(num_sampled, tf.int64), n_unique) - 1] + 1,
                   tf.cast(draws, tf.int64))
  padding = tf.range(num_sampled, dtype=tf.int64)
  sampled = tf.concat([unique_ids, padding], 0)[:num_sampled]
  tries = tf.cast(tries, tf.float64)

  def expected(ids):
    p = _log_uniform_probability(ids, range_max)
    return tf.cast(-tf.math.expm1(tries * tf.math.log1p(-p)), tf.float32)

  return (tf.stop_gradient(sampled), tf.stop_gradient(expected(true_classes)),
          tf.stop_gradient(expected(sampled)))


@keras.saving.register_keras_serializable(package="elmo_tf")
class SampledSoftmax(keras.layers.Layer):
  """Word softmax with sampled training loss and exact evaluation loss.

  There are `vocab_size + 1` classes: class 0 is padding (never a target,
  never sampled, zero probability in the full softmax) and class `k` is the
  word on line `k - 1` of `vocab.txt`, which is sorted by descending
  frequency, as the log-uniform (Zipfian) sampler assumes.

  In training (`training=True`) the loss is the sampled softmax loss of
  `tf.nn.sampled_softmax_loss`: `n_negative_samples` distinct negatives per
  call, shared by all rows, drawn with `tf.random.log_uniform_candidate_sampler`
  over classes 1..vocab_size, with accidental hits removed and the
  log-expected-count correction. Otherwise it is the exact softmax
  cross-entropy (computed in blocks of classes for large vocabularies), so
  `exp(mean loss)` is the perplexity.

  Logits and losses are float32 whatever the global policy: the layer's
  dtype defaults to "float32".

  Weights: `kernel` (vocab_size + 1, dim) and `bias` (vocab_size + 1,)
  (bilm-tf's `softmax/W` and `softmax/b` with a padding row 0 in front).

  Args:
    vocab_size: number of words (`Vocabulary.size`, lines of vocab.txt).
    n_negative_samples: negatives per training call; must be smaller than
      `vocab_size`.
    **kwargs: standard `keras.layers.Layer` arguments.

  Call arguments:
    inputs: hidden states (N, dim).
    targets: (N,) int32 class ids; 0 = no target (its loss is 0).
    training: sampled loss if True, full softmax otherwise.

  Returns:
    per-row losses (N,) float32 (0 where `targets == 0`).

  Example:
  ```python
  softmax = SampledSoftmax(vocab_size=100, n_negative_samples=10)
  hidden = tf.random.normal((6, 8))
  targets = tf.constant([4, 5, 6, 7, 0, 0])
  losses = softmax(hidden, targets, training=True)  # (6,)
  ```
  """

  def __init__(self, vocab_size, n_negative_samples, **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.vocab_size = int(vocab_size)
    self.n_negative_samples = int(n_negative_samples)
    if self.vocab_size < 1:
      raise ValueError(f"vocab_size must be positive, got {vocab_size}.")
    if not 0 < self.n_negative_samples < self.vocab_size:
      raise ValueError(
          f"n_negative_samples={self.n_negative_samples} must be positive and "
          f"smaller than the vocabulary size {self.vocab_size} (distinct "
          f"negatives are drawn from the vocabulary); lower "
          f"model.n_negative_samples or use a larger vocabulary.")
    self.num_classes = self.vocab_size + 1

  def build(self, input_shape):
    dim = input_shape[-1]
    if dim is None:
      raise ValueError(
          f"SampledSoftmax {self.name!r}: the last input dimension must be "
          f"known; got input shape {input_shape}.")
    # bilm-tf: N(0, 1 / dim) weights, zero bias.
    self.kernel = self.add_weight(
        name="kernel", shape=(self.num_classes, dim),
        initializer=keras.initializers.RandomNormal(stddev=(1.0 / dim) ** 0.5))
    self.bias = self.add_weight(
        name="bias", shape=(self.num_classes,), initializer="zeros")
    self.built = True

  def call(self, inputs, targets, training=None, seed=None):
    """Per-example losses (N,), 0 where the target is 0 (padding).

    `seed`: optional int (2,) tensor. When given, negatives are drawn with
    stateless random ops from it, so a run resumed from a checkpoint draws
    exactly the negatives an uninterrupted run would (the trainer passes
    (seed, step)); otherwise TensorFlow's stateful sampler is used.
    """
    hidden = tf.cast(inputs, tf.float32)  # (N, dim)
    targets = tf.cast(targets, tf.int32)  # (N,)
    if training:
      losses = self._sampled_losses(hidden, targets, seed)
    else:
      losses = self._full_losses(hidden, targets)
    return losses * tf.cast(targets > 0, tf.float32)  # (N,)

  def _sampled_losses(self, hidden, targets, seed=None):
    # The sampler works on 0..vocab_size-1 = classes 1..vocab_size.
    true_shifted = tf.cast(tf.maximum(targets - 1, 0), tf.int64)[:, None]
    if seed is None:
      sampled, true_expected, sampled_expected = (
          tf.random.log_uniform_candidate_sampler(
              true_classes=true_shifted, num_true=1,
              num_sampled=self.n_negative_samples, unique=True,
              range_max=self.vocab_size))
    else:
      sampled, true_expected, sampled_expected = (
          stateless_log_uniform_unique_sampler(
              true_shifted, self.n_negative_samples, self.vocab_size, seed))
    labels = tf.cast(targets, tf.int64)[:, None]  # (N, 1)
    return tf.nn.sampled_softmax_loss(
        weights=tf.cast(self.kernel, tf.float32),
        biases=tf.cast(self.bias, tf.float32),
        labels=labels,
        inputs=hidden,
        num_sampled=self.n_negative_samples,
        num_classes=self.num_classes,
        num_true=1,
        sampled_values=(sampled + 1, true_expected, sampled_expected),
        remove_accidental_hits=True)  # (N,)

  def _full_losses(self, hidden, targets):
    kernel = tf.cast(self.kernel, tf.float32)  # (classes, dim)
    bias = tf.cast(self.bias, tf.float32)  # (classes,)
    # Logit of the target: (N,)
    target_logits = (tf.reduce_sum(hidden * tf.gather(kernel, targets), -1)
                     + tf.gather(bias, targets))
    # log-sum-exp over classes 1.., one block of classes at a time.
    block_lse = []
    for start in range(0, self.num_classes, _FULL_SOFTMAX_BLOCK):
      end = min(start + _FULL_SOFTMAX_BLOCK, self.num_classes)
      logits = tf.matmul(hidden, kernel[start:end], transpose_b=True)
      logits += bias[start:end]  # (N, block)
      if start == 0:
        logits = self._mask_padding_class(logits)
      block_lse.append(tf.reduce_logsumexp(logits, axis=-1))
    lse = tf.reduce_logsumexp(tf.stack(block_lse, axis=-1), axis=-1)  # (N,)
    return lse - target_logits

  def _mask_padding_class(self, logits):
    # logits: (N, classes in block starting at class 0)
    n_block = tf.shape(logits)[1]
    offset = tf.one_hot(0, n_block, on_value=_PADDING_LOGIT, off_value=0.0)
    return logits + offset

  def logits(self, inputs):
    """Full logits (N, vocab_size + 1) float32; class 0 gets -1e9."""
    hidden = tf.cast(inputs, tf.float32)
    logits = tf.matmul(hidden, tf.cast(self.kernel, tf.float32),
                       transpose_b=True) + tf.cast(self.bias, tf.float32)
    return self._mask_padding_class(logits)

  def full_log_probs(self, inputs):
    """Log-probabilities (N, vocab_size + 1) float32 of the full softmax.

    Materializes all logits: meant for evaluation of modest vocabularies
    (use `call(..., training=False)` for losses with large ones).
    """
    return tf.nn.log_softmax(self.logits(inputs), axis=-1)

  def compute_output_shape(self, input_shape, targets_shape=None):
    return tuple(input_shape[:-1])

  def get_config(self):
    config = super().get_config()
    config.update({
        "vocab_size": self.vocab_size,
        "n_negative_samples": self.n_negative_samples,
    })
    return config
