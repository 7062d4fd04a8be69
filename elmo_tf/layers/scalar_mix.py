"""Task-specific weighted sum of the biLM layers (ELMo's equation 1)."""

import keras
import tensorflow as tf

# Variance epsilon of the masked layer normalization (bilm-tf's value).
_LAYER_NORM_EPSILON = 1e-12


@keras.saving.register_keras_serializable(package="elmo_tf")
class ScalarMix(keras.layers.Layer):
  """`gamma * sum_j softmax(s)_j * h_j` over the L layers of the biLM.

  Args:
    num_layers: number of layers L mixed (n_lstm_layers + 1 for ELMo).
    l2_coef: coefficient of the L2 penalty `l2_coef * sum(s ** 2)` on the
      scalar weights, added with `add_loss` in `call` and also available as
      `regularization_loss()`. 0 disables it.
    do_layer_norm: normalize every layer (mean and variance over all its
      unmasked entries, as bilm-tf's `weight_layers`) before mixing.
    use_top_only: ignore the weights and return `gamma * h_{L-1}`.
    **kwargs: standard `keras.layers.Layer` arguments.

  Call arguments:
    inputs: a list of L tensors (batch, time, dim), or one stacked tensor
      (batch, L, time, dim) such as the backbone's `layer_activations`.
    mask: optional (batch, time) bool; used by the layer normalization and
      to zero masked positions of the output.

  Returns:
    (batch, time, dim).

  Example:
  ```python
  mix = ScalarMix(num_layers=3, l2_coef=1e-3)
  layers = tf.random.normal((2, 3, 5, 8))  # (batch, L, time, dim)
  mixed = mix(layers, mask=tf.sequence_mask([5, 2], 5))  # (2, 5, 8)
  ```
  """

  def __init__(self, num_layers, l2_coef=0.0, do_layer_norm=False,
               use_top_only=False, **kwargs):
    super().__init__(**kwargs)
    self.num_layers = int(num_layers)
    self.l2_coef = float(l2_coef)
    self.do_layer_norm = bool(do_layer_norm)
    self.use_top_only = bool(use_top_only)

  def build(self, input_shape=None):
    self.scalar_weights = self.add_weight(
        name="scalar_weights", shape=(self.num_layers,), initializer="zeros",
        trainable=not self.use_top_only)
    self.gamma = self.add_weight(
        name="gamma", shape=(), initializer="ones")
    self.built = True

  def regularization_loss(self):
    """`l2_coef * sum(s ** 2)` as a float32 scalar (0 for top-only)."""
    if self.use_top_only or not self.l2_coef:
      return tf.constant(0.0, tf.float32)
    weights = tf.cast(self.scalar_weights, tf.float32)
    return self.l2_coef * tf.reduce_sum(tf.square(weights))

  def call(self, inputs, mask=None):
    if isinstance(inputs, (list, tuple)):
      layers = [tf.convert_to_tensor(x) for x in inputs]
    else:
      # (batch, L, time, dim) -> L x (batch, time, dim)
      layers = tf.unstack(tf.convert_to_tensor(inputs), axis=1)
    if len(layers) != self.num_layers:
      raise ValueError(
          f"ScalarMix {self.name!r} expects {self.num_layers} layers, "
          f"got {len(layers)}.")
    dtype = layers[0].dtype
    layers = [tf.cast(x, dtype) for x in layers]
    gamma = tf.cast(self.gamma, dtype)
    if mask is not None:
      mask_f = tf.cast(mask, dtype)[..., None]  # (batch, time, 1)
    else:
      mask_f = None

    if self.use_top_only:
      mixed = gamma * layers[-1]
    else:
      if self.l2_coef:
        self.add_loss(self.regularization_loss())
      normed = tf.unstack(
          tf.cast(tf.nn.softmax(tf.cast(self.scalar_weights, tf.float32)),
                  dtype))  # L scalars
      if self.do_layer_norm:
        layers = [self._masked_layer_norm(x, mask_f) for x in layers]
      mixed = gamma * tf.add_n([w * x for w, x in zip(normed, layers)])
    if mask_f is not None:
      mixed *= mask_f
    return mixed  # (batch, time, dim)

  def _masked_layer_norm(self, x, mask_f):
    # x: (batch, time, dim); statistics over all unmasked entries, float32.
    x32 = tf.cast(x, tf.float32)
    if mask_f is None:
      weights = tf.ones_like(x32)
    else:
      weights = tf.broadcast_to(tf.cast(mask_f, tf.float32), tf.shape(x32))
    count = tf.maximum(tf.reduce_sum(weights), 1.0)
    mean = tf.reduce_sum(x32 * weights) / count
    variance = tf.reduce_sum(tf.square(x32 - mean) * weights) / count
    normed = (x32 - mean) * tf.math.rsqrt(variance + _LAYER_NORM_EPSILON)
    return tf.cast(normed, x.dtype)

  def compute_mask(self, inputs, mask=None):
    # Outputs are zero at masked steps; no Keras mask is attached to them.
    return None

  def compute_output_shape(self, input_shape):
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(
        input_shape[0], (list, tuple)):
      return tuple(input_shape[0])
    return (input_shape[0],) + tuple(input_shape[2:])

  def get_config(self):
    config = super().get_config()
    config.update({
        "num_layers": self.num_layers,
        "l2_coef": self.l2_coef,
        "do_layer_norm": self.do_layer_norm,
        "use_top_only": self.use_top_only,
    })
    return config
