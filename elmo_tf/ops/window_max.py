"""Max over each token's convolution windows, with a one-pass gradient.

`window_max(features, rows, num_rows)` equals
`tf.math.segment_max(features, rows)` where `rows` names every token of
0 ... num_rows - 1 (the character CNN's windows); the op also keeps which
window held each max, so its registered gradient is one pass instead of
TensorFlow's seven ops over the whole (windows, filters) tensor (see
window_max_kernel.cc for the contract and the one difference: at a tie the
gradient goes to the first window, not split evenly).

The kernel is C++ compiled on first use (`elmo_tf.ops.kernel_library`);
`load()` returns None when it cannot be, and callers use
tf.math.segment_max. It is never part of an exported SavedModel.
"""

import tensorflow as tf

from elmo_tf.ops import kernel_library

_LIBRARY = kernel_library.KernelLibrary("window_max_kernel.cc",
                                        "the window max kernel")


# The loaded op module (built first if needed), None when it cannot be;
# why not (`KernelLibrary.load`, `.failure`).
load = _LIBRARY.load
failure = _LIBRARY.failure


def window_max(features, rows, num_rows):
  """(num_rows, filters): the max of `features` rows per token.

  Args (`load()` must have succeeded):
    features: (windows, filters) float32 or bfloat16.
    rows: (windows,) int32, the token of each window: ascending, every
      token of 0 ... num_rows - 1 present.
    num_rows: int32 scalar.
  """
  pooled, _ = load().elmo_window_max(features=features, rows=rows,
                                     num_rows=num_rows)
  return pooled


@tf.RegisterGradient("ElmoWindowMax")
def _window_max_grad(op, d_pooled, unused_d_argmax):
  """Gradient of features only (rows and num_rows are integers)."""
  _, rows, _ = op.inputs
  _, argmax = op.outputs
  d_features = load().elmo_window_max_grad(d_pooled=d_pooled, argmax=argmax,
                                           rows=rows)
  return d_features, None, None


def window_embeddings(table, ids):
  """(windows, width * dim): the character embeddings of each window.

  `tf.reshape(tf.gather(table, ids), (windows, -1))`, with a gradient
  that sums straight into the (dense) table instead of tf.gather's
  IndexedSlices of one row per character (then summed by an
  UnsortedSegmentSum). Args (`load()` must have succeeded):
    table: (n_characters, dim) float32 or bfloat16.
    ids: (windows, width) int32 in [0, n_characters).
  """
  return load().elmo_window_embeddings(table=table, ids=ids)


@tf.RegisterGradient("ElmoWindowEmbeddings")
def _window_embeddings_grad(op, d_windows):
  table, ids = op.inputs
  d_table = load().elmo_window_embeddings_grad(
      d_windows=d_windows, ids=ids, num_ids=tf.shape(table)[0])
  return d_table, None
