"""One highway layer (Srivastava et al. 2015) of ELMo's character encoder."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="elmo_tf")
class Highway(keras.layers.Layer):
  """A highway layer: a gated mix of a relu transform and the identity.

  `out = g * relu(x W_transform + b_transform) + (1 - g) * x` with the gate
  `g = sigmoid(x W_carry + b_carry)` (bilm-tf's naming: the "carry" gate
  weights the transformed path). `b_carry` starts at `carry_bias_init`
  (-2 by default), so a fresh layer mostly passes its input through.

  The weights are stored in bilm-tf's layout (`x @ W`, shape `(dim, dim)`):
  `carry_kernel` = `CNN_high_i/W_carry`, `carry_bias` = `b_carry`,
  `transform_kernel` = `W_transform`, `transform_bias` = `b_transform`.

  Args:
    activation: activation of the transform path (default "relu").
    carry_bias_init: initial value of the carry-gate bias.
    **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`, ...).

  Example:
  ```python
  layer = Highway(name="highway_0")
  y = layer(tf.random.normal((4, 7, 32)))  # (4, 7, 32)
  ```
  """

  def __init__(self, activation="relu", carry_bias_init=-2.0, **kwargs):
    super().__init__(**kwargs)
    self.activation = keras.activations.get(activation)
    self._activation_name = (
        activation if isinstance(activation, str)
        else keras.activations.serialize(self.activation))
    self.carry_bias_init = float(carry_bias_init)

  def build(self, input_shape):
    dim = input_shape[-1]
    if dim is None:
      raise ValueError(
          f"Highway {self.name!r}: the last input dimension must be known; "
          f"got input shape {input_shape}.")
    # bilm-tf draws both kernels from N(0, 1/dim).
    init = keras.initializers.RandomNormal(stddev=(1.0 / dim) ** 0.5)
    # autocast=False: `call` casts the weights itself (under
    # mixed_bfloat16 the kernels with the op library's faster cast, and the
    # gate op takes the biases in float32).
    self.carry_kernel = self.add_weight(
        name="carry_kernel", shape=(dim, dim), initializer=init,
        autocast=False)
    self.carry_bias = self.add_weight(
        name="carry_bias", shape=(dim,),
        initializer=keras.initializers.Constant(self.carry_bias_init),
        autocast=False)
    self.transform_kernel = self.add_weight(
        name="transform_kernel", shape=(dim, dim), initializer=init,
        autocast=False)
    self.transform_bias = self.add_weight(
        name="transform_bias", shape=(dim,), initializer="zeros",
        autocast=False)
    self.built = True

  def call(self, inputs, gate_kernel=False):
    """inputs (..., dim) -> (..., dim).

    gate_kernel: with a relu transform and 2-D inputs, the elementwise part
      as `elmo_tf.ops.highway_gate` (loaded; the caller checks), one op in
      float32 math instead of ten TensorFlow ops: a speed knob for
      training, never in exports.
    """
    x = tf.convert_to_tensor(inputs)
    dtype = x.dtype
    if gate_kernel and self._activation_name == "relu" and x.shape.rank == 2:
      from elmo_tf.ops import highway_gate  # pylint: disable=g-import-not-at-top
      # (n, dim) each; the biases are added inside the op, in float32.
      carry_z = tf.matmul(x, highway_gate.cast(self.carry_kernel, dtype))
      transform_z = tf.matmul(
          x, highway_gate.cast(self.transform_kernel, dtype))
      return highway_gate.highway_gate(carry_z, transform_z, x,
                                       self.carry_bias, self.transform_bias)
    carry_z = tf.tensordot(x, tf.cast(self.carry_kernel, dtype), axes=1)
    carry_z += tf.cast(self.carry_bias, dtype)  # (..., dim)
    transform_z = tf.tensordot(x, tf.cast(self.transform_kernel, dtype), axes=1)
    transform_z += tf.cast(self.transform_bias, dtype)  # (..., dim)
    gate = tf.sigmoid(carry_z)  # (..., dim)
    transformed = self.activation(transform_z)
    return gate * transformed + (1.0 - gate) * x

  def compute_output_shape(self, input_shape):
    return tuple(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update({
        "activation": self._activation_name,
        "carry_bias_init": self.carry_bias_init,
    })
    return config
