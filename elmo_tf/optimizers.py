"""Adagrad whose sparse updates cost what the touched rows cost.

The softmax (vocab_size + 1, dim) and the embeddings receive their
gradients as `tf.IndexedSlices`: only the rows gathered in the step (the
targets and the sampled negatives; the characters of the batch). Keras 3's
`Adagrad.update_step` then still works on the whole matrix: it computes
sqrt(accumulator + epsilon) over every row, and its sparse-by-dense division
checks the whole divisor for zeros. At 800k words that is several full
passes over a 400 MB matrix per step, whatever the number of negatives.

Adagrad leaves a row whose gradient is zero exactly as it was (its
accumulator gains 0, the variable moves by lr * 0 / sqrt(...) = 0), so
updating only the touched rows is the same algorithm. Adam is not: the
moments of untouched rows decay every step, so a "lazy" Adam would be
another optimizer; the trainer keeps Adam dense (`FusedAdam`: Keras's Adam
through TensorFlow's one-pass kernel).
"""

import keras
import tensorflow as tf

from elmo_tf.ops import fused_adagrad


@keras.saving.register_keras_serializable(package="elmo_tf")
class SparseAdagrad(keras.optimizers.Adagrad):
  """`keras.optimizers.Adagrad` with exact row-wise updates for IndexedSlices.

  A dense gradient is applied by TensorFlow's fused Adagrad kernel
  (`ResourceApplyAdagradV2`, one pass). An `IndexedSlices`
  gradient (rows `indices` of the variable) is applied to those rows only,
  with Keras's formula:

    accumulator += g^2
    variable -= learning_rate * g / sqrt(accumulator + epsilon)

  where g is the dense gradient's row: duplicate indices are summed first,
  as `tf.convert_to_tensor(gradient)` would. (Keras's own sparse path
  squares each duplicate separately, so its accumulator gains the sum of
  squares rather than the square of the sum; `SparseAdagrad` equals Keras's
  Adagrad on the dense gradient, and TF1's `tf.train.AdagradOptimizer`,
  which bilm-tf used.) Reads and writes go through `ResourceGather` and
  `ResourceScatterUpdate`/`ResourceScatterSub`, so a step costs O(touched
  rows x dim), independent of the number of rows.

  The default name is "adagrad", as Keras's, so that op names (profiles)
  and variable paths stay those of `keras.optimizers.Adagrad`.

  Args:
    as `keras.optimizers.Adagrad`.

  Example:
  ```python
  embedding = keras.Variable(tf.zeros((1000, 8)))
  optimizer = SparseAdagrad(learning_rate=0.2, initial_accumulator_value=1.0)
  optimizer.build([embedding])
  gradient = tf.IndexedSlices(tf.ones((3, 8)), tf.constant([4, 9, 4]),
                              tf.constant([1000, 8]))
  optimizer.apply([gradient], [embedding])  # Rows 4 and 9 only.
  ```
  """

  def __init__(self, *args, name=None, **kwargs):
    super().__init__(*args, name=name or "adagrad", **kwargs)
    # Set by `apply_clipped` while it applies (traced) gradients.
    self._clip_scale = None
    self._weight_maxima = None

  def apply_clipped(self, grads_and_vars, scale):
    """`apply_gradients` of every gradient times `scale` (a () float32
    tensor: the global-norm clip's factor), without writing the scaled
    gradients: each dense one is applied by `elmo_tf.ops.fused_adagrad`
    (where it loads) together with its scale, in one pass that also returns
    the variable's largest |weight| after the update.

    Returns:
      {variable_key(variable): () float32 max |weight| after the update}
      for the variables updated by the fused op (maybe none).
    """
    self._clip_scale = tf.convert_to_tensor(scale, tf.float32)
    self._weight_maxima = {}
    try:
      self.apply_gradients(grads_and_vars)
      return self._weight_maxima
    finally:
      self._clip_scale = None
      self._weight_maxima = None

  def update_step(self, gradient, variable, learning_rate):
    accumulator = self._accumulators[self._get_variable_index(variable)]
    # The tf.Variables behind Keras variables: the fused kernel takes their
    # handles, and gather / scatter on them read and write rows in place (a
    # Keras variable would be read whole first).
    variable = _tf_variable(variable)
    accumulator = _tf_variable(accumulator)
    scale = self._clip_scale
    if scale is not None and not isinstance(gradient, tf.IndexedSlices):
      if fused_adagrad.load() is not None:
        self._weight_maxima[variable_key(variable)] = fused_adagrad.apply(
            variable, accumulator, learning_rate, self.epsilon, gradient,
            scale)
        return None
    if scale is not None:
      # The clip as tf.clip_by_global_norm applies it.
      if isinstance(gradient, tf.IndexedSlices):
        gradient = tf.IndexedSlices(
            gradient.values * tf.cast(scale, gradient.values.dtype),
            gradient.indices, gradient.dense_shape)
      else:
        gradient = gradient * tf.cast(scale, gradient.dtype)
    if not isinstance(gradient, tf.IndexedSlices):
      # One fused kernel (accum += g^2; var -= lr * g / (sqrt(accum) + eps))
      # instead of Keras's six elementwise passes over each weight, whose
      # memory traffic was most of the optimizer's time per step. Keras
      # divides by sqrt(accum + eps): with the accumulator starting at
      # `initial_accumulator_value` > 0 the two agree to float32 rounding.
      tf.raw_ops.ResourceApplyAdagradV2(
          var=variable.handle, accum=accumulator.handle,
          lr=tf.cast(learning_rate, variable.dtype),
          epsilon=tf.cast(self.epsilon, variable.dtype),
          grad=tf.cast(gradient, variable.dtype), use_locking=False,
          update_slots=True)
      return None
    rows, values = deduplicate(gradient)  # (U,), (U, ...)
    values = tf.cast(values, variable.dtype)
    lr = tf.cast(learning_rate, variable.dtype)
    # (U, ...): the rows' accumulators after this step.
    accumulated = tf.gather(accumulator, rows) + tf.square(values)
    accumulator.scatter_update(tf.IndexedSlices(accumulated, rows))
    variable.scatter_sub(tf.IndexedSlices(
        lr * values / tf.sqrt(accumulated + self.epsilon), rows))
    return None


@keras.saving.register_keras_serializable(package="elmo_tf")
class FusedAdam(keras.optimizers.Adam):
  """`keras.optimizers.Adam` applied by TensorFlow's fused Adam kernel.

  Keras's `update_step` spends about ten elementwise ops (each a pass over
  the weight and its moments) per variable; `ResourceApplyAdam` makes one
  pass with the same formula:

    m += (g - m) * (1 - beta_1);  v += (g^2 - v) * (1 - beta_2)
    variable -= m * alpha / (sqrt(v) + epsilon),
    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)

  The kernel computes 1 - beta in float32 where Keras uses Python floats,
  so the moments differ from Keras's by ~1e-5 relative (an Adam whose betas
  are their float32 values).

  `IndexedSlices` gradients (the softmax's and embeddings' rows) and
  `amsgrad=True` keep Keras's own update, on purpose: Keras squares each
  duplicate row of an IndexedSlices separately (its sparse `square`), so a
  row gathered k times gets a second moment of sum(g_i^2), not
  (sum g_i)^2, and its step can be up to sqrt(k) times Adam's. Frequent
  softmax rows therefore learn faster than under dense Adam, and every
  recipe here (`make train`'s included) was tuned with that behaviour; the
  fused kernel (dense Adam) would change the algorithm, not only its speed.
  The default name is "adam", as Keras's, so variable paths (checkpoints)
  are those of `keras.optimizers.Adam`.

  Args:
    as `keras.optimizers.Adam`.
  """

  def __init__(self, *args, name=None, **kwargs):
    super().__init__(*args, name=name or "adam", **kwargs)

  def update_step(self, gradient, variable, learning_rate):
    if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
      return super().update_step(gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    variable = _tf_variable(variable)
    dtype = variable.dtype
    local_step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
        var=variable.handle,
        m=_tf_variable(self._momentums[index]).handle,
        v=_tf_variable(self._velocities[index]).handle,
        beta1_power=tf.pow(beta_1, local_step),
        beta2_power=tf.pow(beta_2, local_step),
        lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype),
        use_locking=False, use_nesterov=False)
    return None


def deduplicate(gradient: tf.IndexedSlices) -> tuple[tf.Tensor, tf.Tensor]:
  """(distinct indices (U,), their summed values (U, ...)) of `gradient`.

  The rows of `tf.convert_to_tensor(gradient)` that can be non-zero, summed
  in the same order (unsorted_segment_sum), so they are bit-equal to it.
  """
  rows, positions = tf.unique(gradient.indices)
  values = tf.math.unsorted_segment_sum(gradient.values, positions,
                                        tf.shape(rows)[0])
  return rows, values


def updates_only_gradient_rows(optimizer) -> bool:
  """Whether `optimizer` changes only the rows named by an IndexedSlices
  gradient (so rows outside it keep their values).

  True for `SparseAdagrad` and for plain SGD (no momentum, no weight decay:
  Keras applies its sparse update with a scatter); False for Adam, whose
  moments make every row move, and for anything else.
  """
  if getattr(optimizer, "weight_decay", None):
    return False
  if isinstance(optimizer, SparseAdagrad):
    return True
  return (type(optimizer) is keras.optimizers.SGD  # pylint: disable=unidiomatic-typecheck
          and not optimizer.momentum)


def variable_key(variable):
  """A hashable key of a (Keras or TensorFlow) variable, the same for both:
  the key of `SparseAdagrad.apply_clipped`'s result."""
  return _tf_variable(variable).ref()


def _tf_variable(variable):
  return variable.value if isinstance(variable, keras.Variable) else variable
