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


def stateless_log_uniform_unique_draws(num_sampled, range_max, seed,
                                       chunk_size=None):
  """Distinct log-uniform candidates, as TensorFlow's unique sampler draws them.

  Same semantics as `tf.random.log_uniform_candidate_sampler(unique=True)`,
  but stateless: candidates are drawn with replacement until `num_sampled`
  distinct ones have appeared, and `tries` is the number of draws that took.

  Draws come in chunks of `chunk_size` (default 4 * num_sampled), chunk i
  from `seed` folded with i, until enough distinct classes have appeared.
  When `num_sampled` is a large fraction of `range_max` (8192 of PTB's 10k
  words) this takes many chunks (~100k draws): the rare classes must turn up
  too. Padding the distinct ones with frequent classes instead would repeat
  those classes among the negatives and bias the loss.

  The number of draws depends on the data, so this cannot run inside an
  XLA-compiled function; the trainer draws outside it and passes the result.

  Args:
    num_sampled: distinct negatives wanted; must be < range_max.
    range_max: number of classes.
    seed: int (2,) tensor for the stateless random ops.

  Returns:
    (sampled (num_sampled,) int64 in [0, range_max), tries () float64).
  """
  if not 0 < num_sampled < range_max:
    raise ValueError(f"num_sampled={num_sampled} must be in (0, {range_max}).")
  chunk_size = chunk_size or 4 * num_sampled
  seed = tf.cast(seed, tf.int64)
  log_range = math.log(range_max + 1.0)

  def draw(chunk_index):
    # Inverse CDF of the log-uniform distribution: (chunk_size,) ids.
    chunk_seed = tf.random.experimental.stateless_fold_in(seed, chunk_index)
    uniform = tf.random.stateless_uniform((chunk_size,), seed=chunk_seed,
                                          dtype=tf.float64)
    ids = tf.cast(tf.floor(tf.exp(uniform * log_range)) - 1, tf.int64)
    return tf.clip_by_value(ids, 0, range_max - 1)

  def not_enough(chunk_index, ids):
    del chunk_index
    return tf.size(tf.unique(ids).y) < num_sampled

  def draw_more(chunk_index, ids):
    return chunk_index + 1, tf.concat([ids, draw(chunk_index)], 0)

  _, ids = tf.while_loop(
      not_enough, draw_more, (tf.constant(1, tf.int64), draw(0)),
      shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])))
  unique_ids, index = tf.unique(ids)  # In order of first appearance.
  # The draw that brought the num_sampled-th distinct class: the first
  # position whose index is num_sampled - 1. (Not via tf.size(ids): in a
  # tf.function, Grappler folds the size of this loop output to the size of
  # the first chunk.)
  is_last_needed = tf.cast(tf.equal(index, num_sampled - 1), tf.int32)
  tries = tf.cast(tf.argmax(is_last_needed, output_type=tf.int64) + 1,
                  tf.float64)
  sampled = unique_ids[:num_sampled]
  return tf.stop_gradient(sampled), tf.stop_gradient(tries)


def log_uniform_expected_count(ids, tries, range_max):
  """Expected count of classes `ids` in `tries` draws: 1 - (1 - P(k))^tries.

  TensorFlow's formula for its unique samplers. Returns float32, ids' shape.
  """
  p = _log_uniform_probability(ids, range_max)
  tries = tf.cast(tries, tf.float64)
  return tf.stop_gradient(
      tf.cast(-tf.math.expm1(tries * tf.math.log1p(-p)), tf.float32))


@keras.saving.register_keras_serializable(package="elmo_tf")
class SampledSoftmax(keras.layers.Layer):
  """Word softmax with sampled training loss and exact evaluation loss.

  There are `vocab_size + 1` classes: class 0 is padding (never a target,
  never sampled, zero probability in the full softmax) and class `k` is the
  word on line `k - 1` of `vocab.txt`, which is sorted by descending
  frequency, as the log-uniform (Zipfian) sampler assumes.

  In training (`training=True`) the loss is the sampled softmax loss of
  `tf.nn.sampled_softmax_loss` (computed in an XLA-compatible form):
  `n_negative_samples` distinct negatives per call, shared by all rows,
  drawn like `tf.random.log_uniform_candidate_sampler(unique=True)` over
  classes 1..vocab_size, with accidental hits removed and the
  log-expected-count correction. Otherwise it is the exact softmax
  cross-entropy (computed in blocks of classes for large vocabularies), so
  `exp(mean loss)` is the perplexity.

  Logits and losses are float32 whatever the global policy: the layer's
  dtype defaults to "float32".

  Weights: `kernel` (vocab_size + 1, dim) and `bias` (vocab_size + 1,)
  (bilm-tf's `softmax/W` and `softmax/b` with a padding row 0 in front).

  With `training_softmax="full"` the training loss is the exact softmax too
  (worth it for small vocabularies, where the sampled negatives would be
  most of the classes anyway).

  Args:
    vocab_size: number of words (`Vocabulary.size`, lines of vocab.txt).
    n_negative_samples: negatives per training call; must be smaller than
      `vocab_size` (unused with `training_softmax="full"`).
    training_softmax: "sampled" or "full": the loss when `training=True`.
    **kwargs: standard `keras.layers.Layer` arguments.

  Call arguments:
    inputs: hidden states (N, dim).
    targets: (N,) int32 class ids; 0 = no target (its loss is 0).
    training: sampled loss if True (unless training_softmax='full'), full
      softmax otherwise.
    seed: int (2,) tensor the negatives are drawn from (stateless).
    negatives: (sampled, tries) drawn beforehand; overrides `seed`. The
      sampled loss needs `seed` or `negatives` (ValueError otherwise).

  Returns:
    per-row losses (N,) float32 (0 where `targets == 0`).

  Example:
  ```python
  softmax = SampledSoftmax(vocab_size=100, n_negative_samples=10)
  hidden = tf.random.normal((6, 8))
  targets = tf.constant([4, 5, 6, 7, 0, 0])
  losses = softmax(hidden, targets, training=True,
                   seed=tf.constant([1, 2]))  # (6,)
  ```
  """

  def __init__(self, vocab_size, n_negative_samples,
               training_softmax="sampled", **kwargs):
    kwargs.setdefault("dtype", "float32")
    super().__init__(**kwargs)
    self.vocab_size = int(vocab_size)
    self.n_negative_samples = int(n_negative_samples)
    self.training_softmax = training_softmax
    if self.vocab_size < 1:
      raise ValueError(f"vocab_size must be positive, got {vocab_size}.")
    if training_softmax not in ("sampled", "full"):
      raise ValueError(f"training_softmax must be 'sampled' or 'full', got "
                       f"{training_softmax!r}.")
    if (training_softmax == "sampled"
        and not 0 < self.n_negative_samples < self.vocab_size):
      raise ValueError(
          f"n_negative_samples={self.n_negative_samples} must be positive and "
          f"smaller than the vocabulary size {self.vocab_size} (distinct "
          f"negatives are drawn from the vocabulary); lower "
          f"model.n_negative_samples, use a larger vocabulary, or train "
          f"with the exact softmax (model.training_softmax='full').")
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

  def call(self, inputs, targets, training=None, seed=None, negatives=None):
    """Per-example losses (N,), 0 where the target is 0 (padding).

    The sampled loss (`training=True`, `training_softmax="sampled"`) needs
    one of:
    `seed`: int (2,) tensor; negatives are drawn from it with stateless
      random ops, so a run resumed from a checkpoint draws exactly the
      negatives an uninterrupted run would (the trainer passes
      (seed, step)).
    `negatives`: (sampled, tries) from
      `stateless_log_uniform_unique_draws(n_negative_samples, vocab_size,
      ...)` drawn beforehand (outside an XLA-compiled step); overrides
      `seed`.
    """
    hidden = tf.cast(inputs, tf.float32)  # (N, dim)
    targets = tf.cast(targets, tf.int32)  # (N,)
    if training and self.training_softmax == "sampled":
      losses = self._sampled_losses(hidden, targets, seed, negatives)
    else:
      losses = self._full_losses(hidden, targets)
    return losses * tf.cast(targets > 0, tf.float32)  # (N,)

  def _sampled_losses(self, hidden, targets, seed, negatives):
    if negatives is None:
      if seed is None:
        raise ValueError(
            f"SampledSoftmax {self.name!r}: the sampled training loss needs "
            f"`seed` (an int (2,) tensor) or `negatives` (from "
            f"stateless_log_uniform_unique_draws); got neither. Pass one, "
            f"or call with training=False for the exact loss.")
      negatives = stateless_log_uniform_unique_draws(
          self.n_negative_samples, self.vocab_size, seed)
    sampled, tries = negatives
    # The sampler works on 0..vocab_size-1 = classes 1..vocab_size.
    true_shifted = tf.cast(tf.maximum(targets - 1, 0), tf.int64)  # (N,)
    true_expected = log_uniform_expected_count(true_shifted, tries,
                                               self.vocab_size)
    sampled_expected = log_uniform_expected_count(sampled, tries,
                                                  self.vocab_size)
    return self._sampled_softmax_loss(
        hidden, tf.cast(targets, tf.int64), tf.cast(sampled, tf.int64) + 1,
        true_expected, sampled_expected)

  def _sampled_softmax_loss(self, hidden, targets, sampled, true_expected,
                            sampled_expected):
    """`tf.nn.sampled_softmax_loss(remove_accidental_hits=True)`, XLA-ready.

    The same loss (tests compare the two), written with a mask instead of
    the `ComputeAccidentalHits` op, which XLA cannot compile, and without
    its sparse-to-dense step (also a little faster on CPU).

    hidden (N, dim) float32; targets (N,) int64 classes; sampled (S,) int64
    classes; true_expected (N,), sampled_expected (S,) float32.
    """
    n = tf.shape(targets)[0]
    classes = tf.concat([targets, sampled], 0)  # (N + S,)
    # Only the N + S rows are read (ResourceGather on the tf.Variable behind
    # the Keras variable; gathering from the Keras variable itself, or
    # casting it first, would read the whole (classes, dim) matrix every
    # step), and their gradient stays IndexedSlices of those rows.
    rows = tf.cast(tf.gather(self.kernel.value, classes),
                   tf.float32)  # (N + S, dim)
    row_bias = tf.cast(tf.gather(self.bias.value, classes),
                       tf.float32)  # (N + S,)
    # Logits corrected by the log expected counts (log Q).
    true_logits = (tf.reduce_sum(hidden * rows[:n], -1) + row_bias[:n]
                   - tf.math.log(true_expected))  # (N,)
    sampled_rows = rows[n:]  # (S, dim)
    sampled_bias = row_bias[n:] - tf.math.log(sampled_expected)  # (S,)

    def losses(part_hidden, part_targets, part_true_logits):
      """Losses of some of the rows: (n', dim), (n',), (n',) -> (n',)."""
      sampled_logits = (tf.matmul(part_hidden, sampled_rows, transpose_b=True)
                        + sampled_bias)  # (n', S)
      # A negative that is the row's own target is no negative.
      hits = part_targets[:, None] == sampled[None, :]  # (n', S)
      sampled_logits = tf.where(hits, tf.float32.min, sampled_logits)
      all_logits = tf.concat([part_true_logits[:, None], sampled_logits], 1)
      return tf.reduce_logsumexp(all_logits, -1) - part_true_logits

    # The (N, S) logits in two halves of the rows: independent ops, which
    # TensorFlow runs side by side (one core each where the training step
    # runs one thread per op); the negatives' rows and their gradient stay
    # one gather, so the gradient is what one (N, S) product gives.
    sizes = tf.stack([n // 2, n - n // 2])
    halves = zip(tf.split(hidden, sizes, num=2),
                 tf.split(targets, sizes, num=2),
                 tf.split(true_logits, sizes, num=2))
    return tf.concat([losses(*half) for half in halves], 0)  # (N,)

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

  def compute_output_shape(self, input_shape, targets_shape=None):
    return tuple(input_shape[:-1])

  def get_config(self):
    config = super().get_config()
    config.update({
        "vocab_size": self.vocab_size,
        "n_negative_samples": self.n_negative_samples,
        "training_softmax": self.training_softmax,
    })
    return config
