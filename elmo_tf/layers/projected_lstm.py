"""One projected LSTM layer (LSTMP, Sak et al. 2014) over whole sequences."""

import keras
import tensorflow as tf

from elmo_tf import config as config_lib


def _reads_steps_as_slices(training) -> bool:
  """Whether a loop reads each step's inputs as a slice of a captured
  tensor (a view: inference) rather than from a TensorArray (a copy, whose
  gradient stays linear in time where the slices' is quadratic). A symbolic
  `training` takes the TensorArray, which is safe either way."""
  return training is None or training is False


@keras.saving.register_keras_serializable(package="elmo_tf")
class ProjectedLSTM(keras.layers.Layer):
  """An LSTM with a projected, clipped output, run over a whole sequence.

  The equations are those of TF1's `LSTMCell(num_proj=..., cell_clip=...,
  proj_clip=...)` used by bilm-tf, per time step:

  ```
  z = [x, h_prev] @ kernel + bias           # gates i, j, f, o
  c = sigmoid(f + forget_bias) * c_prev + sigmoid(i) * tanh(j)
  c = clip(c, -cell_clip, cell_clip)
  h = clip((sigmoid(o) * tanh(c)) @ projection, -projection_clip, +)
  ```

  The input part `x @ kernel[:input_dim]` is computed for all steps in one
  matmul; only `h @ kernel[input_dim:]` runs step by step. When the number
  of steps is known when the graph is built (static shape of `inputs` or
  `mask`, e.g. stream-mode training windows of `data.unroll_steps`) and is
  at most `static_unroll_max_steps`, the steps are unrolled in Python: no
  `tf.while_loop`, no TensorArrays, and a gradient without their per-step
  stack pushes and pops. Otherwise (dynamic lengths: sentence buckets,
  exported signatures) the steps run in a `tf.while_loop`. Both paths run
  the same per-step ops (outputs agree to float rounding). Over
  right-padded rows (sentences) the loop runs on real tokens only: rows
  sorted longest first, each step on the rows that still have a token
  (`_packed_loop`).

  Padding may be anywhere (right padding in sentences, left padding at the
  start of a stream): at masked steps the state is carried unchanged and
  the output is zero. With `go_backwards=True` the time axis (mask
  included) is reversed, so every row's real tokens are read from the last
  to the first, and the outputs are put back at their original positions,
  so a sentence gives the same
  outputs whatever the padding; the final state is then the state after
  reading the first token.

  Weights (bilm-tf `RNN_d/RNN/MultiRNNCell/Cell{l}/LSTMCell/...`):
  `kernel` = `W_0` (input_dim + projection_dim, 4 * cell_dim), rows
  [input; h], gate columns i, j, f, o; `bias` = `B` (4 * cell_dim), the
  forget bias is not stored; `projection` = `W_P_0` (cell_dim,
  projection_dim).

  Under a mixed precision policy the math runs in the compute dtype; the
  returned states are always float32.

  Args:
    cell_dim: size of the memory cell.
    projection_dim: size of the output / recurrent state `h`.
    cell_clip: clip value of the cell (0: no clip).
    projection_clip: clip value of the output (0: no clip).
    forget_bias: added to the forget-gate pre-activation at run time.
    static_unroll_max_steps: unroll the recurrence when the number of steps
      is static and at most this (0: always use the while loop).
    fused_kernel: run the whole recurrence, and its gradient, as one op
      each (`elmo_tf.ops.fused_lstmp`) when the kernel loads, with float32
      state; otherwise the TensorFlow ops above. Same math.
    fused_kernel_bfloat16_matmuls: under a bfloat16 compute dtype, the
      fused kernel's matmuls read bfloat16 operands (float32 accumulation,
      on AMX tiles or as AVX512-BF16 dot products) where the CPU has
      either; otherwise they run in float32.
    pack_sequences: in the while loop, under a right-padded mask, compute
      real tokens only (`_packed_loop`); False keeps the masked loop over
      the whole (batch, time) grid, which XLA can compile. Same math.
    Unset arguments take their defaults from `LSTMConfig`.
    **kwargs: standard `keras.layers.Layer` arguments.

  Call arguments:
    inputs: (batch, time, input_dim).
    mask: optional (batch, time) bool; padding anywhere (see above).
    initial_state: optional tuple (h (batch, projection_dim),
      c (batch, cell_dim)); zeros by default.
    go_backwards: read each row's real tokens right to left.
    training: no dropout inside the layer; under `training=True` (or a
      tensor) a dynamic-length loop reads its steps through TensorArrays,
      whose gradient is linear in time; otherwise through slices (faster,
      for inference).

  Returns:
    (outputs (batch, time, projection_dim), (h_final, c_final)).

  Example:
  ```python
  lstm = ProjectedLSTM(cell_dim=32, projection_dim=8, name="forward_lstm_0")
  x = tf.random.normal((2, 5, 8))
  mask = tf.sequence_mask([5, 3], 5)
  outputs, (h, c) = lstm(x, mask=mask)  # (2, 5, 8), (2, 8), (2, 32)
  ```
  """

  def __init__(self,
               cell_dim,
               projection_dim,
               cell_clip=None,
               projection_clip=None,
               forget_bias=None,
               static_unroll_max_steps=None,
               fused_kernel=None,
               fused_kernel_bfloat16_matmuls=None,
               pack_sequences=None,
               **kwargs):
    super().__init__(**kwargs)
    defaults = config_lib.LSTMConfig()
    self.cell_dim = int(cell_dim)
    self.projection_dim = int(projection_dim)
    self.cell_clip = float(
        defaults.cell_clip if cell_clip is None else cell_clip)
    self.projection_clip = float(
        defaults.projection_clip if projection_clip is None
        else projection_clip)
    self.forget_bias = float(
        defaults.forget_bias if forget_bias is None else forget_bias)
    self.static_unroll_max_steps = int(
        defaults.static_unroll_max_steps if static_unroll_max_steps is None
        else static_unroll_max_steps)
    self.fused_kernel = bool(
        defaults.fused_kernel if fused_kernel is None else fused_kernel)
    self.fused_kernel_bfloat16_matmuls = bool(
        defaults.fused_kernel_bfloat16_matmuls
        if fused_kernel_bfloat16_matmuls is None
        else fused_kernel_bfloat16_matmuls)
    self.pack_sequences = bool(
        defaults.pack_sequences if pack_sequences is None
        else pack_sequences)
    self.input_dim = None

  def build(self, input_shape):
    input_dim = input_shape[-1]
    if input_dim is None:
      raise ValueError(
          f"ProjectedLSTM {self.name!r}: the last input dimension must be "
          f"known; got input shape {input_shape}.")
    self.input_dim = int(input_dim)
    # autocast=False: `call` casts the weights to the compute dtype itself,
    # and the fused kernel reads them as float32 (Keras would hand it their
    # bfloat16 casts under mixed_bfloat16).
    self.kernel = self.add_weight(
        name="kernel",
        shape=(self.input_dim + self.projection_dim, 4 * self.cell_dim),
        initializer="glorot_uniform", autocast=False)
    self.bias = self.add_weight(
        name="bias", shape=(4 * self.cell_dim,), initializer="zeros",
        autocast=False)
    self.projection = self.add_weight(
        name="projection", shape=(self.cell_dim, self.projection_dim),
        initializer="glorot_uniform", autocast=False)
    self.built = True

  def get_initial_state(self, batch_size):
    """Zero state: (h (batch, projection_dim), c (batch, cell_dim)) float32."""
    return (tf.zeros((batch_size, self.projection_dim), tf.float32),
            tf.zeros((batch_size, self.cell_dim), tf.float32))

  def _unrolled_steps(self, inputs, mask=None):
    """Number of steps if known at graph-building time and unrolled, else None.

    Read from `inputs` or, when its time axis is unknown (e.g. after a
    reshape to a dynamic shape upstream), from `mask`.
    """
    n_steps = tf.TensorShape(inputs.shape)[1]
    if n_steps is None and mask is not None:
      n_steps = tf.TensorShape(mask.shape)[1]
    if n_steps is None or not 0 < n_steps <= self.static_unroll_max_steps:
      return None
    return int(n_steps)

  def call(self, inputs, mask=None, initial_state=None, go_backwards=False,
           training=None):
    dtype = self.compute_dtype
    x = tf.cast(inputs, dtype)  # (batch, time, input_dim)
    if mask is not None:
      mask = tf.cast(mask, tf.bool)  # (batch, time)
    static_steps = self._unrolled_steps(x, mask)
    batch_size = tf.shape(x)[0]
    if initial_state is None:
      initial_state = self.get_initial_state(batch_size)
    h0, c0 = initial_state
    if self._use_fused_kernel(dtype):
      outputs, h_final, c_final = self._fused(x, mask, h0, c0, go_backwards)
      return outputs, (h_final, c_final)
    h0 = tf.cast(h0, dtype)  # (batch, projection_dim)
    c0 = tf.cast(c0, dtype)  # (batch, cell_dim)

    kernel = tf.cast(self.kernel, dtype)
    # One Split (whose gradient is one Concat), not two slices (whose
    # gradients are two full-size StridedSliceGrads and an AddN).
    input_kernel, recurrent_kernel = tf.split(
        kernel, [self.input_dim, self.projection_dim], axis=0)
    # input_kernel: (input_dim, 4 * cell); recurrent: (projection_dim, 4 * cell)
    bias = tf.cast(self.bias, dtype)
    projection = tf.cast(self.projection, dtype)  # (cell, projection_dim)

    gate_bias = self._gate_bias(bias)
    cell = self.cell_dim

    def step(input_gates_t, keep, h_prev, c_prev):
      """One step. input_gates_t: (batch, 4 * cell) = x_t @ W_x + b; keep:
      (batch, 1) bool or None (no padding); h_prev: (batch, projection_dim);
      c_prev: (batch, cell)."""
      z = input_gates_t + tf.matmul(h_prev, recurrent_kernel)
      # The gates as an Unpack of a (batch, 4, cell) view, then a sigmoid
      # or tanh per gate: on one core a Split along the last axis copied
      # (32, 4096) floats 8x slower than this Unpack, and one sigmoid over
      # all four gates (j's unused) cost more than three sigmoids over a
      # quarter each (BENCHMARKS.md, "Exported LSTM step").
      i, j, f, o = tf.unstack(tf.reshape(z, (-1, 4, cell)), axis=1)
      c = tf.sigmoid(f) * c_prev + tf.sigmoid(i) * tf.tanh(j)  # (batch, cell)
      if self.cell_clip:
        c = tf.clip_by_value(c, -self.cell_clip, self.cell_clip)
      # (batch, projection_dim)
      h = tf.matmul(tf.sigmoid(o) * tf.tanh(c), projection)
      if self.projection_clip:
        h = tf.clip_by_value(h, -self.projection_clip, self.projection_clip)
      if keep is None:
        return h, c
      return tf.where(keep, h, h_prev), tf.where(keep, c, c_prev)

    if static_steps is not None:
      outputs, h_final, c_final = self._unrolled(
          step, x, mask, h0, c0, input_kernel, gate_bias, static_steps,
          go_backwards)
    elif mask is not None and self.pack_sequences:
      outputs, h_final, c_final = self._packed_or_masked_loop(
          step, x, mask, h0, c0, input_kernel, gate_bias, go_backwards,
          training)
    else:
      outputs, h_final, c_final = self._while_loop(
          step, x, mask, h0, c0, input_kernel, gate_bias, go_backwards,
          training)
    state = (tf.cast(h_final, tf.float32), tf.cast(c_final, tf.float32))
    return outputs, state

  def _gate_bias(self, bias):
    """bias (4 * cell,) with the forget bias added to the f gate's block.

    Folded in once, outside the loop: at small batch sizes the loop's cost
    is per op, not per flop.
    """
    cell, dtype = self.cell_dim, bias.dtype
    return bias + tf.concat(
        [tf.zeros((2 * cell,), dtype),
         tf.fill((cell,), tf.constant(self.forget_bias, dtype)),
         tf.zeros((cell,), dtype)], axis=0)  # (4 * cell,) order i, j, f, o

  def _input_gates(self, x, input_kernel, gate_bias):
    """x (batch, time, input_dim) -> x @ input_kernel + gate_bias,
    (batch, time, 4 * cell).

    One 2-D MatMul + BiasAdd (which grappler fuses into one op): the bias's
    gradient is then one BiasAddGrad, not a Sum over (batch, time).
    """
    x_rows = tf.reshape(x, (-1, self.input_dim))  # (batch * time, input_dim)
    return tf.reshape(
        tf.nn.bias_add(tf.matmul(x_rows, input_kernel), gate_bias),
        tf.concat([tf.shape(x)[:2], [4 * self.cell_dim]], axis=0))

  def _use_fused_kernel(self, dtype) -> bool:
    if not self.fused_kernel or dtype not in (tf.float32, tf.bfloat16):
      return False
    from elmo_tf.ops import fused_lstmp  # pylint: disable=g-import-not-at-top
    return fused_lstmp.load() is not None

  def _fused(self, x, mask, h0, c0, go_backwards):
    """The recurrence, with the input matmul, as one op and its gradient
    as one op.

    Returns (outputs (batch, time, projection_dim), h_final, c_final), the
    states float32.
    """
    from elmo_tf.ops import fused_lstmp  # pylint: disable=g-import-not-at-top
    if mask is None:
      keep = tf.ones(tf.shape(x)[:2], tf.float32)  # (batch, time)
    else:
      keep = tf.cast(mask, tf.float32)
    # The kernel's inputs, state and elementwise math are float32 (under
    # mixed_bfloat16 too: the cell state would lose precision over the
    # steps), on the float32 weights themselves. Under mixed_bfloat16 its
    # matmuls may round their operands to bfloat16 (on AMX tiles or in
    # AVX512-BF16 dot products), as every other matmul of the model does.
    bf16_matmuls = (x.dtype == tf.bfloat16 and
                    self.fused_kernel_bfloat16_matmuls)
    f32 = lambda t: tf.cast(t, tf.float32)
    attrs = dict(cell_clip=self.cell_clip, proj_clip=self.projection_clip,
                 reverse=go_backwards, bf16_matmuls=bf16_matmuls)
    # The op computes the input part x @ W_x + b too (in bfloat16 under
    # mixed_bfloat16): no (batch, time, 4 * cell) matmul, bias add, cast or
    # kernel-gradient concat outside it. In float32 its Eigen matmul runs on
    # one thread, but the two directions' ops run side by side on the two
    # cores, and skipping the (batch, time, 4 * cell) round trip through
    # memory paid: 6-11% more tokens/s at 256/64 and 0-9% at the paper's
    # `small` size than TensorFlow's matmul before the op (BENCHMARKS.md).
    h_seq, _, h_final, c_final = fused_lstmp.lstmp_sequence(
        f32(x), keep, f32(h0), f32(c0), self.kernel, self.bias,
        self.projection, forget_bias=self.forget_bias, **attrs)
    outputs = h_seq if mask is None else h_seq * keep[:, :, None]
    return tf.cast(outputs, x.dtype), h_final, c_final

  def _unrolled(self, step, x, mask, h0, c0, input_kernel, gate_bias,
                n_steps, go_backwards):
    """The recurrence as a Python loop over `n_steps` (static) steps.

    Returns (outputs (batch, time, projection_dim), h_final, c_final).
    """
    dtype = x.dtype
    # Input contribution of every step at once, batch major:
    # (batch, time, 4 * cell), then one slice per step (one Unpack op, whose
    # gradient is one Pack).
    input_gates = self._input_gates(x, input_kernel, gate_bias)
    input_gates = tf.unstack(input_gates, num=n_steps, axis=1)
    if mask is None:
      keeps = [None] * n_steps
    else:
      keeps = tf.unstack(mask[:, :, None], num=n_steps, axis=1)  # (batch, 1)
    # go_backwards: read the steps last to first (padding anywhere carries
    # the state, as in the while loop over the reversed axis) and keep each
    # output at its own position, so nothing needs reversing.
    order = range(n_steps - 1, -1, -1) if go_backwards else range(n_steps)
    h, c = h0, c0
    outputs = [None] * n_steps
    for t in order:
      h, c = step(input_gates[t], keeps[t], h, c)
      outputs[t] = h
    outputs = tf.stack(outputs, axis=1)  # (batch, time, projection_dim)
    if mask is not None:
      outputs = outputs * tf.cast(mask, dtype)[:, :, None]
    return outputs, h, c

  def _while_loop(self, step, x, mask, h0, c0, input_kernel, gate_bias,
                  go_backwards, training):
    """The recurrence in a `tf.while_loop` over a dynamic number of steps.

    Returns (outputs (batch, time, projection_dim), h_final, c_final).
    """
    dtype = x.dtype
    batch_size = tf.shape(x)[0]
    n_steps = tf.shape(x)[1]
    if mask is None:
      mask = tf.ones((batch_size, n_steps), tf.bool)  # (batch, time)
    if go_backwards:
      # Reverse the whole time axis, mask included: masked steps carry the
      # state unchanged, so each row reads its real tokens last to first
      # wherever its padding is (right padding in sentences, left padding
      # at the start of a stream), starting from `initial_state`.
      x = tf.reverse(x, axis=[1])
      mask = tf.reverse(mask, axis=[1])

    # Input contribution of every step at once, time major:
    # (time, batch, 4 * cell).
    x_time_major = tf.transpose(x, (1, 0, 2))
    input_gates = tf.tensordot(x_time_major, input_kernel, axes=1) + gate_bias
    mask_time_major = tf.transpose(mask, (1, 0))[:, :, None]  # (time, batch, 1)
    if not _reads_steps_as_slices(training):
      # TensorArrays (not slices of captured tensors) keep the gradient of
      # the loop linear in time.
      input_gates_ta = tf.TensorArray(
          dtype, size=n_steps,
          element_shape=tf.TensorShape([None, 4 * self.cell_dim])).unstack(
              input_gates)
      mask_ta = tf.TensorArray(
          tf.bool, size=n_steps,
          element_shape=tf.TensorShape([None, 1])).unstack(mask_time_major)
      read_step = lambda t: (input_gates_ta.read(t), mask_ta.read(t))
    else:
      # Inference (exported signatures): a slice of the time-major tensors
      # is a view of their memory, where unstacking them into TensorArrays
      # copied all of (time, batch, 4 * cell) first (BENCHMARKS.md,
      # "Exported LSTM step"). A gradient still flows, at a cost quadratic
      # in time.
      read_step = lambda t: (input_gates[t], mask_time_major[t])

    def body(t, h_prev, c_prev, outputs):
      h_next, c_next = step(*read_step(t), h_prev, c_prev)
      # Masked steps are zeroed after the loop, in one op.
      outputs = outputs.write(t, h_next)
      return t + 1, h_next, c_next, outputs

    outputs = tf.TensorArray(dtype, size=n_steps,
                             element_shape=tf.TensorShape(
                                 [None, self.projection_dim]))
    _, h_final, c_final, outputs = tf.while_loop(
        lambda t, *_: t < n_steps, body,
        (tf.constant(0), h0, c0, outputs),
        maximum_iterations=n_steps)  # Bounds the loop for XLA.
    outputs = tf.transpose(outputs.stack(), (1, 0, 2))  # (batch, time, proj)
    outputs = outputs * tf.cast(mask, dtype)[:, :, None]
    if go_backwards:
      outputs = tf.reverse(outputs, axis=[1])
    return outputs, h_final, c_final

  def _packed_or_masked_loop(self, step, x, mask, h0, c0, input_kernel,
                             gate_bias, go_backwards, training):
    """A dynamic number of steps under a mask: the packed loop when every
    row is right-padded (sentences, exported signatures), else the masked
    while loop (padding elsewhere, e.g. at the start of a stream).

    Returns (outputs (batch, time, projection_dim), h_final, c_final).
    """
    lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)  # (batch,)
    right_padded = tf.reduce_all(
        tf.equal(mask, tf.sequence_mask(lengths, tf.shape(mask)[1])))
    return tf.cond(
        right_padded,
        lambda: self._packed_loop(step, x, lengths, h0, c0, input_kernel,
                                  gate_bias, go_backwards, training),
        lambda: self._while_loop(step, x, mask, h0, c0, input_kernel,
                                 gate_bias, go_backwards, training))

  def _packed_loop(self, step, x, lengths, h0, c0, input_kernel, gate_bias,
                   go_backwards, training=None):
    """The recurrence over right-padded rows, computing real tokens only.

    Rows are sorted longest first, so at step t the rows that still have a
    token are the first `active[t]`: each step runs the matmuls and gates
    on those rows only (like cuDNN's packed sequences), and the state of
    rows that have ended stays below them untouched until the end. The
    input part `x @ W_x + b` is computed for the real tokens only, in the
    order the steps read them. A batch of sentences is about half padding
    (the first 8 batches of 32 PTB test sentences: 52% of the (batch, time)
    grid are tokens), which the masked loop computes and discards. With
    `go_backwards` step t reads row r's token lengths[r] - 1 - t. As in
    `_while_loop`, inference reads each step's rows as a slice of the packed
    tokens (a view), training through a TensorArray split from them (a
    copy, whose gradient is one concat: linear in time where the slices'
    gradients would be quadratic).

    x: (batch, time, input_dim); lengths: (batch,) int32, each row's tokens
    at [0, lengths). Returns (outputs (batch, time, projection_dim), zero
    at padding, h_final, c_final), as `_while_loop` returns them.
    """
    dtype = x.dtype
    batch_size = tf.shape(x)[0]
    n_steps = tf.shape(x)[1]
    order = tf.argsort(lengths, direction="DESCENDING", stable=True)
    sorted_lengths = tf.gather(lengths, order)  # (batch,), longest first
    # The loop stops at the longest row (padding columns beyond it: none).
    n_loop = tf.maximum(tf.reduce_max(lengths), 0)
    has_token = tf.sequence_mask(sorted_lengths, n_loop)  # (batch, steps)
    active = tf.reduce_sum(tf.cast(has_token, tf.int32), axis=0)  # (steps,)
    starts = tf.cumsum(active, exclusive=True)  # (steps,) into the tokens
    # The packed order: step by step, sorted rows within a step.
    step_and_row = tf.cast(tf.where(tf.transpose(has_token)), tf.int32)
    steps, sorted_rows = step_and_row[:, 0], step_and_row[:, 1]  # (tokens,)
    positions = (tf.gather(sorted_lengths, sorted_rows) - 1 - steps
                 if go_backwards else steps)
    # (tokens, 2): each packed token's [row, time] in x and the outputs.
    token_index = tf.stack([tf.gather(order, sorted_rows), positions], axis=1)
    packed_gates = tf.nn.bias_add(
        tf.matmul(tf.gather_nd(x, token_index), input_kernel),
        gate_bias)  # (tokens, 4 * cell)

    if _reads_steps_as_slices(training):
      read_step = lambda t: packed_gates[starts[t]:starts[t] + active[t]]
    else:
      gates_ta = tf.TensorArray(
          dtype, size=n_loop, infer_shape=False,
          element_shape=tf.TensorShape([None, 4 * self.cell_dim])).split(
              packed_gates, active)
      read_step = gates_ta.read

    def body(t, h_prev, c_prev, outputs):
      # h_prev (batch, projection_dim), c_prev (batch, cell), sorted rows.
      n = active[t]
      h, c = step(read_step(t), None, h_prev[:n],
                  c_prev[:n])  # (n, projection_dim), (n, cell)
      outputs = outputs.write(t, h)
      h_next = tf.concat([h, h_prev[n:]], axis=0)
      c_next = tf.concat([c, c_prev[n:]], axis=0)
      h_next.set_shape(h_prev.shape)
      c_next.set_shape(c_prev.shape)
      return t + 1, h_next, c_next, outputs

    outputs = tf.TensorArray(dtype, size=n_loop, infer_shape=False,
                             element_shape=tf.TensorShape(
                                 [None, self.projection_dim]))
    # The states' rows permuted by scatters, whose gradients (gathers of
    # whole rows) are dense tensors, as the masked loop's are: gather's and
    # gather_nd's would be IndexedSlices. sorted[i] = state[order[i]].
    sorted_position = tf.math.invert_permutation(order)[:, None]  # (batch, 1)
    sort = lambda state: tf.scatter_nd(sorted_position, state,
                                       tf.shape(state))
    _, h_sorted, c_sorted, outputs = tf.while_loop(
        lambda t, *_: t < n_loop, body,
        (tf.constant(0), sort(h0), sort(c0), outputs),
        maximum_iterations=n_loop)
    outputs = tf.scatter_nd(
        token_index, outputs.concat(),
        tf.stack([batch_size, n_steps, self.projection_dim]))
    unsort = lambda state: tf.scatter_nd(order[:, None], state,
                                         tf.shape(state))
    return outputs, unsort(h_sorted), unsort(c_sorted)

  def compute_mask(self, inputs, mask=None):
    # Outputs are zero at masked steps; no Keras mask is attached to them.
    return None

  def compute_output_shape(self, input_shape, initial_state_shape=None):
    batch = input_shape[0]
    return (
        (batch, input_shape[1], self.projection_dim),
        ((batch, self.projection_dim), (batch, self.cell_dim)),
    )

  def get_config(self):
    config = super().get_config()
    config.update({
        "cell_dim": self.cell_dim,
        "projection_dim": self.projection_dim,
        "cell_clip": self.cell_clip,
        "projection_clip": self.projection_clip,
        "forget_bias": self.forget_bias,
        "static_unroll_max_steps": self.static_unroll_max_steps,
        "fused_kernel": self.fused_kernel,
        "fused_kernel_bfloat16_matmuls": self.fused_kernel_bfloat16_matmuls,
        "pack_sequences": self.pack_sequences,
    })
    return config
