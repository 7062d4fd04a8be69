"""A clipped Adagrad update of a dense variable that also returns its
largest |weight|, in one pass (adagrad_kernel.cc).

`apply(variable, accumulator, lr, epsilon, grad, scale)` does what
`grad * scale` (the global-norm clip) followed by
`tf.raw_ops.ResourceApplyAdagradV2` does, and returns max |variable| after
the update (NaN if a weight is NaN): the divergence guard's weight check,
without reading the weights again. `elmo_tf.optimizers.SparseAdagrad` uses
it when the trainer hands it the clip factor (`apply_clipped`).

The kernel is C++ compiled on first use (`elmo_tf.ops.kernel_library`);
`load()` returns None when it cannot be, and callers use TensorFlow's ops.
It runs in training only; exports hold no optimizer.
"""

import tensorflow as tf

from elmo_tf.ops import kernel_library

_LIBRARY = kernel_library.KernelLibrary("adagrad_kernel.cc",
                                        "the fused Adagrad kernel")


# The loaded op module (built first if needed), None when it cannot be;
# why not (`KernelLibrary.load`, `.failure`).
load = _LIBRARY.load
failure = _LIBRARY.failure


def apply(variable, accumulator, lr, epsilon, grad, scale):
  """Updates `variable` and `accumulator` (tf.Variables, float32) in place;
  returns max |variable| after the update: () float32.

  Args (`load()` must have succeeded):
    variable, accumulator: tf.Variable (resource) of one shape.
    lr, epsilon, scale: float32 scalars; the gradient is `grad * scale`.
    grad: float32 tensor of the variable's shape.
  """
  return load().elmo_apply_adagrad_scaled(
      var=variable.handle, accum=accumulator.handle,
      lr=tf.cast(lr, tf.float32), epsilon=tf.cast(epsilon, tf.float32),
      grad=tf.cast(grad, tf.float32), scale=tf.cast(scale, tf.float32))
