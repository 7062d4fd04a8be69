"""The elementwise part of a relu highway layer as one op, with a one-op
gradient (highway_kernel.cc).

`highway_gate(carry_z, transform_z, x, carry_bias, transform_bias)` is
`g * relu(transform_z + transform_bias) + (1 - g) * x` with
`g = sigmoid(carry_z + carry_bias)`: what `elmo_tf.layers.Highway` computes
after its two matmuls, in one pass instead of ten TensorFlow ops (and one
instead of about ten in the gradient). The math is float32 whatever the
inputs' dtype; under bfloat16 only the outputs are rounded.

The kernel is C++ compiled on first use (`elmo_tf.ops.kernel_library`);
`load()` returns None when it cannot be, and callers use TensorFlow's ops.
It is never part of an exported SavedModel.
"""

import tensorflow as tf

from elmo_tf.ops import kernel_library

_LIBRARY = kernel_library.KernelLibrary("highway_kernel.cc",
                                        "the highway gate kernel")


# The loaded op module (built first if needed), None when it cannot be;
# why not (`KernelLibrary.load`, `.failure`).
load = _LIBRARY.load
failure = _LIBRARY.failure


def highway_gate(carry_z, transform_z, x, carry_bias, transform_bias):
  """(n, dim) in the dtype of `x`: the highway layer's output.

  Args (`load()` must have succeeded):
    carry_z, transform_z: (n, dim) float32 or bfloat16, x @ W_carry and
      x @ W_transform without their biases.
    x: (n, dim), the layer's input, same dtype.
    carry_bias, transform_bias: (dim,) float32.
  """
  return load().elmo_highway_gate(
      carry_z=carry_z, transform_z=transform_z, x=x,
      carry_bias=tf.cast(carry_bias, tf.float32),
      transform_bias=tf.cast(transform_bias, tf.float32))


@tf.RegisterGradient("ElmoHighwayGate")
def _highway_gate_grad(op, d_y):
  carry_z, transform_z, x, carry_bias, transform_bias = op.inputs
  return load().elmo_highway_gate_grad(
      d_y=d_y, carry_z=carry_z, transform_z=transform_z, x=x,
      carry_bias=carry_bias, transform_bias=transform_bias)


def cast(x, dtype):
  """`tf.cast(x, dtype)` between float32 and bfloat16 in the op library's
  casts (the same values; about twice as fast as TensorFlow's Cast for the
  highway kernels), other casts with tf.cast. Differentiable."""
  x = tf.convert_to_tensor(x)
  dtype = tf.as_dtype(dtype)
  if x.dtype == tf.float32 and dtype == tf.bfloat16:
    return load().elmo_cast_to_bfloat16(x)
  if x.dtype == tf.bfloat16 and dtype == tf.float32:
    return load().elmo_cast_to_float(x)
  return tf.cast(x, dtype)


@tf.RegisterGradient("ElmoCastToBfloat16")
def _cast_to_bfloat16_grad(unused_op, d_y):
  return load().elmo_cast_to_float(d_y)


@tf.RegisterGradient("ElmoCastToFloat")
def _cast_to_float_grad(unused_op, d_y):
  return load().elmo_cast_to_bfloat16(d_y)
