"""The fused LSTMP recurrence (lstmp_kernel.cc): build, load, call, gradient.

`lstmp_sequence` runs a projected LSTM over a whole sequence in one op, and
its registered gradient runs the backward pass in one more, instead of ~15
TensorFlow ops per time step and ~30 in the gradient (see the kernel's
header for the math and why). `elmo_tf.layers.projected_lstm` uses it when
`LSTMConfig.fused_kernel` is on, for training on CPU (float32, and under
mixed_bfloat16 with bfloat16 matmuls on AMX or AVX512-BF16 where the CPU
has them).

The kernel is C++ compiled on first use for this machine's CPU
(`elmo_tf.ops.kernel_library`); when it cannot be built or loaded, `load()`
logs why and returns None, and callers use the plain TensorFlow ops: the same
numbers, slower. The op is never part of an exported SavedModel
(elmo_tf.export builds its backbone without it), so SavedModels load
anywhere.

  from elmo_tf.ops import fused_lstmp
  if fused_lstmp.load() is not None:
    h_seq, c_seq, h_last, c_last = fused_lstmp.lstmp_sequence(
        x, keep, h0, c0, kernel, bias, projection, cell_clip=3.0,
        proj_clip=3.0, forget_bias=1.0)
"""

import tensorflow as tf

from elmo_tf.ops import kernel_library

_LIBRARY = kernel_library.KernelLibrary("lstmp_kernel.cc",
                                        "the fused LSTMP kernel")


# The loaded op module (built first if needed), None when it cannot be;
# why not (`KernelLibrary.load`, `.failure`).
load = _LIBRARY.load
failure = _LIBRARY.failure


def bfloat16_backend() -> str:
  """What runs `bf16_matmuls` here: "amx" (AMX tiles), "avx512_bf16"
  (VDPBF16PS dot products, e.g. AMD EPYC Zen 4) or "none" (float32 matmuls;
  also without the op). The best the CPU has, unless
  $ELMO_TF_LSTMP_BFLOAT16 asks for a lesser one ("avx512_bf16" or "none"),
  which the op reads at each call.

  Callable while a tf.function traces (the op runs eagerly).
  """
  module = load()
  if module is None:
    return "none"
  with tf.init_scope():
    return module.elmo_lstmp_bfloat16_backend().numpy().decode()


def lstmp_sequence(x, keep, h0, c0, kernel, bias, projection,
                   cell_clip: float = 0.0, proj_clip: float = 0.0,
                   forget_bias: float = 0.0, reverse: bool = False,
                   bf16_matmuls: bool = False):
  """The recurrence over all steps: (h_seq, c_seq, h_last, c_last).

  Args (float32; `load()` must have succeeded):
    x: (batch, time, input).
    keep: (batch, time) 1.0 for real steps, 0.0 where the state is carried.
    h0: (batch, projection); c0: (batch, cell).
    kernel: (input + projection, 4 * cell), rows [x; h], gate columns
      i, j, f, o; bias: (4 * cell), without the forget bias;
      projection: (cell, projection).
    cell_clip, proj_clip: 0 for no clip.
    forget_bias: added to the f gate's pre-activation.
    reverse: read the steps from the last to the first (outputs stay at
      their positions).
    bf16_matmuls: the matmuls (here and in the gradient) read
      bfloat16-rounded operands and accumulate in float32 (on AMX tiles,
      else in AVX512-BF16 dot products: `bfloat16_backend()`), when the CPU
      has either and batch, input, cell and projection are multiples of 32;
      otherwise float32 (mixed_bfloat16 training sets it).

  Returns:
    h_seq (batch, time, projection) and c_seq (batch, time, cell): the state
    after each step (carried at padding); h_last, c_last: the state after
    the last step read.
  """
  h_seq, c_seq, _, _, _, h_last, c_last = load().elmo_lstmp_sequence(
      x=x, keep=keep, h0=h0, c0=c0, kernel=kernel, bias=bias,
      projection=projection, cell_clip=float(cell_clip),
      proj_clip=float(proj_clip), forget_bias=float(forget_bias),
      reverse=bool(reverse), bf16_matmuls=bool(bf16_matmuls))
  return h_seq, c_seq, h_last, c_last


def _zeros_if_none(gradient, like):
  return tf.zeros_like(like) if gradient is None else gradient


@tf.RegisterGradient("ElmoLstmpSequence")
def _lstmp_sequence_grad(op, d_h_seq, d_c_seq, unused_d_gates,
                         unused_d_c_pre, unused_d_h_pre, d_h_last, d_c_last):
  """Gradients of x, keep (none), h0, c0, kernel, bias, projection."""
  x, keep, h0, c0, kernel, unused_bias, projection = op.inputs
  h_seq, c_seq, gates, c_pre, h_pre, _, _ = op.outputs
  (d_x, d_h0, d_c0, d_kernel, d_bias,
   d_projection) = load().elmo_lstmp_sequence_grad(
       x=x, keep=keep, h0=h0, c0=c0, kernel=kernel, projection=projection,
       h_seq=h_seq, c_seq=c_seq, gates=gates, c_pre=c_pre, h_pre=h_pre,
       d_h_seq=_zeros_if_none(d_h_seq, h_seq),
       d_c_seq=_zeros_if_none(d_c_seq, c_seq),
       d_h_last=_zeros_if_none(d_h_last, h0),
       d_c_last=_zeros_if_none(d_c_last, c0),
       cell_clip=op.get_attr("cell_clip"),
       proj_clip=op.get_attr("proj_clip"), reverse=op.get_attr("reverse"),
       bf16_matmuls=op.get_attr("bf16_matmuls"))
  return d_x, None, d_h0, d_c0, d_kernel, d_bias, d_projection
