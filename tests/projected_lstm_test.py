"""Tests for elmo_tf.layers.projected_lstm against a NumPy reference."""

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.layers.projected_lstm import ProjectedLSTM


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _reference_lstmp(x, lengths, kernel, bias, projection, h0, c0, *,
                     forget_bias, cell_clip, projection_clip, go_backwards):
  """TF1 LSTMCell(num_proj, cell_clip, proj_clip) row by row, in NumPy."""
  batch, n_steps, _ = x.shape
  proj = projection.shape[1]
  outputs = np.zeros((batch, n_steps, proj), np.float64)
  h_final = np.array(h0, np.float64)
  c_final = np.array(c0, np.float64)
  for b in range(batch):
    h, c = h_final[b].copy(), c_final[b].copy()
    steps = range(lengths[b])
    if go_backwards:
      steps = reversed(steps)
    for t in steps:
      z = np.concatenate([x[b, t], h]) @ kernel + bias
      i, j, f, o = np.split(z, 4)
      c = _sigmoid(f + forget_bias) * c + _sigmoid(i) * np.tanh(j)
      c = np.clip(c, -cell_clip, cell_clip)
      m = _sigmoid(o) * np.tanh(c)
      h = np.clip(m @ projection, -projection_clip, projection_clip)
      outputs[b, t] = h
    h_final[b], c_final[b] = h, c
  return outputs, h_final, c_final


def _op_types(fn, *specs):
  """The op types of `fn` traced as a tf.function, nested graphs included
  (a loop's body, a cond's branches)."""
  graph_def = tf.function(fn).get_concrete_function(
      *specs).graph.as_graph_def()
  ops = [node.op for node in graph_def.node]
  for function in graph_def.library.function:
    ops += [node.op for node in function.node_def]
  return set(ops)


def _assert_only_training_uses(test, op_types, op_type):
  """Asserts `op_type` is among `op_types(training)` for training=True only:
  the layer reads steps from a TensorArray in training (its gradient is
  linear in time) and as slices in inference, training=None included.

  op_types: training -> the op types of the layer's traced call."""
  test.assertNotIn(op_type, op_types(False))
  test.assertNotIn(op_type, op_types(None))
  test.assertIn(op_type, op_types(True))


def _graph_outputs_and_gradients(layer, mask, training=None,
                                  jit_compile=False):
  """A tf.function of (x, h0, c0): `layer` run backwards under `mask`, its
  final state, and the gradients of a loss over them with respect to x, h0,
  c0 and the weights."""
  @tf.function(jit_compile=jit_compile)
  def run(x, h0, c0):
    with tf.GradientTape() as tape:
      tape.watch([x, h0, c0])
      outputs, (h, c) = layer(x, mask=mask, initial_state=(h0, c0),
                              go_backwards=True, training=training)
      loss = tf.reduce_sum(outputs ** 2) + tf.reduce_sum(h * c[:, :1])
    return [outputs, h, c] + tape.gradient(
        loss, [x, h0, c0] + layer.trainable_variables)
  return run


class ProjectedLSTMTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.rng = np.random.default_rng(1234)
    self.batch, self.time, self.input_dim = 4, 6, 5
    self.cell_dim, self.projection_dim = 7, 3
    self.lengths = np.array([6, 4, 1, 0])
    self.x = self.rng.normal(size=(self.batch, self.time, self.input_dim))
    self.x = self.x.astype(np.float32)
    self.mask = np.arange(self.time)[None, :] < self.lengths[:, None]
    self.h0 = self.rng.normal(size=(self.batch, self.projection_dim)).astype(
        np.float32) * 0.5
    self.c0 = self.rng.normal(size=(self.batch, self.cell_dim)).astype(
        np.float32)

  def _make_layer(self, fused_kernel=False, **kwargs):
    # The TensorFlow-ops recurrence (unrolled or while loop), which bfloat16
    # runs and SavedModels hold; tests/fused_lstmp_test.py checks the fused
    # kernel against it and against the reference below.
    layer = ProjectedLSTM(cell_dim=self.cell_dim,
                          projection_dim=self.projection_dim,
                          cell_clip=0.8, projection_clip=0.25,
                          forget_bias=1.0, name="lstm",
                          fused_kernel=fused_kernel, **kwargs)
    layer.build((None, None, self.input_dim))
    # Large weights so that both clips are active.
    layer.kernel.assign(self.rng.normal(
        size=layer.kernel.shape).astype(np.float32) * 1.5)
    layer.bias.assign(self.rng.normal(size=layer.bias.shape).astype(
        np.float32))
    layer.projection.assign(self.rng.normal(
        size=layer.projection.shape).astype(np.float32))
    return layer

  def _check_against_reference(self, go_backwards):
    layer = self._make_layer()
    outputs, (h, c) = layer(
        tf.constant(self.x), mask=tf.constant(self.mask),
        initial_state=(tf.constant(self.h0), tf.constant(self.c0)),
        go_backwards=go_backwards)
    ref_out, ref_h, ref_c = _reference_lstmp(
        self.x.astype(np.float64), self.lengths, layer.kernel.numpy(),
        layer.bias.numpy(), layer.projection.numpy(), self.h0, self.c0,
        forget_bias=1.0, cell_clip=0.8, projection_clip=0.25,
        go_backwards=go_backwards)
    # The clips must actually have been exercised by this data.
    self.assertAllClose(np.abs(ref_c[:2]).max(), 0.8)
    self.assertAllClose(np.abs(ref_out).max(), 0.25)
    self.assertAllClose(outputs, ref_out, atol=1e-5)
    self.assertAllClose(h, ref_h, atol=1e-5)
    self.assertAllClose(c, ref_c, atol=1e-5)
    # Masked steps: zero output; the empty row keeps its initial state.
    self.assertAllEqual(outputs.numpy()[~self.mask],
                        np.zeros((int((~self.mask).sum()),
                                  self.projection_dim)))
    self.assertAllClose(h[3], self.h0[3])
    self.assertAllClose(c[3], self.c0[3])

  def test_forward_matches_numpy_reference(self):
    self._check_against_reference(go_backwards=False)

  def test_backward_matches_numpy_reference(self):
    self._check_against_reference(go_backwards=True)

  def test_padding_does_not_change_outputs(self):
    layer = self._make_layer()
    for go_backwards in (False, True):
      padded, (h, c) = layer(tf.constant(self.x), mask=tf.constant(self.mask),
                             go_backwards=go_backwards)
      # Row 1 alone, without its padding.
      alone, (h1, c1) = layer(tf.constant(self.x[1:2, :4]),
                              go_backwards=go_backwards)
      self.assertAllClose(padded[1, :4], alone[0], atol=1e-6)
      self.assertAllClose(h[1], h1[0], atol=1e-6)
      self.assertAllClose(c[1], c1[0], atol=1e-6)

  def test_left_padding_as_at_the_start_of_a_stream(self):
    # The first window of a shuffled stream epoch has padding at its start.
    layer = self._make_layer()
    initial = (tf.constant(self.h0[1:2]), tf.constant(self.c0[1:2]))
    for go_backwards in (False, True):
      left = np.concatenate([np.zeros_like(self.x[1:2, :2]),
                             self.x[1:2, :4]], axis=1)  # (1, 6, input)
      left_mask = np.array([[False, False, True, True, True, True]])
      padded, (h, c) = layer(tf.constant(left), mask=tf.constant(left_mask),
                             initial_state=initial,
                             go_backwards=go_backwards)
      alone, (h1, c1) = layer(tf.constant(self.x[1:2, :4]),
                              initial_state=initial,
                              go_backwards=go_backwards)
      self.assertAllClose(padded[0, 2:], alone[0], atol=1e-6)
      self.assertAllEqual(padded[0, :2], np.zeros((2, self.projection_dim)))
      self.assertAllClose(h, h1, atol=1e-6)
      self.assertAllClose(c, c1, atol=1e-6)

  def test_default_state_is_zero_and_state_is_float32(self):
    layer = self._make_layer()
    outputs, (h, c) = layer(tf.constant(self.x))
    zero = (tf.zeros((self.batch, self.projection_dim)),
            tf.zeros((self.batch, self.cell_dim)))
    outputs_zero, _ = layer(tf.constant(self.x), initial_state=zero)
    self.assertAllClose(outputs, outputs_zero)
    self.assertEqual(outputs.shape,
                     (self.batch, self.time, self.projection_dim))
    self.assertEqual(h.dtype, tf.float32)
    self.assertEqual(c.shape, (self.batch, self.cell_dim))

  def test_state_carries_across_calls(self):
    layer = self._make_layer()
    x = tf.constant(self.x[:2])
    full, (h_full, c_full) = layer(x)
    first, state = layer(x[:, :2])
    second, (h2, c2) = layer(x[:, 2:], initial_state=state)
    self.assertAllClose(tf.concat([first, second], axis=1), full, atol=1e-6)
    self.assertAllClose(h2, h_full, atol=1e-6)
    # Backward: read the later window first and carry its state leftwards.
    full_b, (hb, _) = layer(x, go_backwards=True)
    later, state = layer(x[:, 2:], go_backwards=True)
    earlier, (hb2, _) = layer(x[:, :2], initial_state=state,
                              go_backwards=True)
    self.assertAllClose(tf.concat([earlier, later], axis=1), full_b,
                        atol=1e-6)
    self.assertAllClose(hb2, hb, atol=1e-6)

  def test_gradients_in_tf_function(self):
    layer = self._make_layer()
    x = tf.constant(self.x)
    mask = tf.constant(self.mask)

    @tf.function
    def grads(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        outputs, (h, c) = layer(x, mask=mask, go_backwards=True)
        loss = tf.reduce_sum(outputs ** 2) + tf.reduce_sum(c)
      return tape.gradient(loss, [x] + layer.trainable_variables)

    results = grads(x)
    self.assertLen(results, 4)
    for g in results:
      self.assertIsNotNone(g)
      self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)
    # Padding positions get no gradient.
    self.assertAllEqual(results[0].numpy()[~self.mask],
                        np.zeros((int((~self.mask).sum()), self.input_dim)))

  # === Unrolled recurrence (static number of steps) vs tf.while_loop ===

  def _looping_layer(self, weights_from, **kwargs):
    """A layer that always runs the while loop (TensorFlow ops, the fused
    kernel off), with `weights_from`'s weights."""
    looping = ProjectedLSTM(cell_dim=self.cell_dim,
                            projection_dim=self.projection_dim,
                            cell_clip=0.8, projection_clip=0.25,
                            forget_bias=1.0, static_unroll_max_steps=0,
                            fused_kernel=False, name="lstm", **kwargs)
    looping.build((None, None, self.input_dim))
    looping.set_weights(weights_from.get_weights())
    return looping

  def _layer_pair(self):
    """(unrolled, looping): the same weights, only the recurrence differs."""
    unrolled = self._make_layer(static_unroll_max_steps=self.time)
    return unrolled, self._looping_layer(unrolled)

  def _masks(self):
    right = self.mask  # (batch, time): sentences.
    # Left padding, as at the start of a stream epoch.
    left = np.arange(self.time)[None, :] >= (self.time - self.lengths[:, None])
    return {"none": None, "right": right, "left": left}

  def _outputs_and_gradients(self, layer, mask, initial_state, go_backwards,
                             training=None):
    """Outputs, final state and d loss / d (inputs, weights, initial state)."""
    x = tf.constant(self.x)
    h0, c0 = (tf.constant(self.h0), tf.constant(self.c0))
    rng = np.random.default_rng(7)
    # Random weights on every output so that no gradient cancels by symmetry.
    w_out = tf.constant(rng.normal(
        size=(self.batch, self.time, self.projection_dim)).astype(np.float32))
    w_h = tf.constant(rng.normal(size=self.h0.shape).astype(np.float32))
    w_c = tf.constant(rng.normal(size=self.c0.shape).astype(np.float32))
    with tf.GradientTape() as tape:
      tape.watch([x, h0, c0])
      outputs, (h, c) = layer(
          x, mask=None if mask is None else tf.constant(mask),
          initial_state=(h0, c0) if initial_state else None,
          go_backwards=go_backwards, training=training)
      loss = (tf.reduce_sum(outputs * w_out) + tf.reduce_sum(h * w_h)
              + tf.reduce_sum(c * w_c))
    sources = [x, layer.kernel, layer.bias, layer.projection]
    if initial_state:
      sources += [h0, c0]
    return [outputs, h, c] + tape.gradient(loss, sources)

  def test_unrolled_matches_while_loop_with_gradients(self):
    unrolled, looping = self._layer_pair()
    names = ["outputs", "h", "c", "d_inputs", "d_kernel", "d_bias",
             "d_projection", "d_h0", "d_c0"]
    for mask_name, mask in self._masks().items():
      for go_backwards in (False, True):
        # The loop reads its steps by slices in inference and through
        # TensorArrays under training=True: the same values either way.
        for initial_state, training in ((False, None), (True, None),
                                        (True, True)):
          with self.subTest(mask=mask_name, go_backwards=go_backwards,
                            initial_state=initial_state, training=training):
            got = self._outputs_and_gradients(unrolled, mask, initial_state,
                                              go_backwards)
            want = self._outputs_and_gradients(looping, mask, initial_state,
                                               go_backwards, training)
            self.assertLen(got, len(want))
            for name, a, b in zip(names, got, want):
              self.assertIsNotNone(a, name)
              self.assertGreater(float(tf.reduce_max(tf.abs(b))), 0.0, name)
              self.assertAllClose(a, b, atol=1e-6, rtol=1e-6, msg=name)

  def test_unrolled_matches_while_loop_in_tf_function(self):
    # The compiled step of training: static time, gradients in a graph;
    # the loop packs right-padded rows and masks left-padded ones.
    for mask_name in ("left", "right"):
      with self.subTest(mask=mask_name):
        self._check_unrolled_matches_while_loop_in_tf_function(
            tf.constant(self._masks()[mask_name]))

  def _check_unrolled_matches_while_loop_in_tf_function(self, mask):
    unrolled, looping = self._layer_pair()
    args = (tf.constant(self.x), tf.constant(self.h0), tf.constant(self.c0))
    for a, b in zip(_graph_outputs_and_gradients(unrolled, mask)(*args),
                    _graph_outputs_and_gradients(looping, mask)(*args)):
      self.assertAllClose(a, b, atol=1e-6, rtol=1e-6)

  def _while_ops(self, layer, x_spec, mask_spec=None, go_backwards=False):
    """The While ops of a tf.function (forward and gradient) over `layer`."""
    @tf.function
    def run(x, mask=None):
      with tf.GradientTape() as tape:
        tape.watch(x)
        outputs, _ = layer(x, mask=mask, go_backwards=go_backwards)
      return tape.gradient(tf.reduce_sum(outputs), x)

    specs = [x_spec] if mask_spec is None else [x_spec, mask_spec]
    graph_def = run.get_concrete_function(*specs).graph.as_graph_def()
    ops = [node.op for node in graph_def.node]
    # Nested graphs (a loop body, the gradient's loop) count too.
    for function in graph_def.library.function:
      ops += [node.op for node in function.node_def]
    return [op for op in ops if op in ("While", "StatelessWhile")]

  def test_static_length_unrolls_and_dynamic_length_loops(self):
    layer = self._make_layer()  # static_unroll_max_steps from LSTMConfig.
    self.assertGreaterEqual(layer.static_unroll_max_steps, self.time)
    static = tf.TensorSpec((None, self.time, self.input_dim), tf.float32)
    dynamic = tf.TensorSpec((None, None, self.input_dim), tf.float32)
    for go_backwards in (False, True):
      self.assertEqual(self._while_ops(layer, static,
                                       go_backwards=go_backwards), [])
      self.assertNotEqual(self._while_ops(layer, dynamic,
                                          go_backwards=go_backwards), [])
    # A dynamic input whose mask has a static time axis: unrolled.
    self.assertEqual(self._while_ops(
        layer, dynamic, tf.TensorSpec((None, self.time), tf.bool)), [])
    # Longer than the limit, or unrolling turned off: the while loop.
    short = self._make_layer(static_unroll_max_steps=self.time - 1)
    self.assertNotEqual(self._while_ops(short, static), [])
    never = self._make_layer(static_unroll_max_steps=0)
    self.assertNotEqual(self._while_ops(never, static), [])

  def test_inference_loop_reads_steps_without_copying_them(self):
    # Unstacking (time, batch, 4 * cell) into a TensorArray copies it; the
    # inference loop slices it instead. Training keeps the TensorArrays,
    # whose gradient is linear in time.
    layer = self._make_layer(static_unroll_max_steps=0)
    spec = tf.TensorSpec((None, None, self.input_dim), tf.float32)
    op_types = lambda training: _op_types(
        lambda x: layer(x, training=training)[0], spec)
    _assert_only_training_uses(self, op_types, "TensorListFromTensor")
    # Nor a Split of the gates along their last axis: an Unpack.
    self.assertNotIn("Split", op_types(False))
    self.assertIn("Unpack", op_types(False))

  def test_right_padded_rows_are_packed(self):
    # Dynamic lengths under a right-padded mask: real tokens only (rows sorted
    # longest first, each step on the rows that still have a token): the
    # same outputs and final states as the NumPy reference, with padding
    # columns beyond the longest row, rows of every length (0 included) and
    # an initial state.
    layer = self._make_layer(static_unroll_max_steps=0)
    x_spec = tf.TensorSpec((None, None, self.input_dim), tf.float32)
    specs = [x_spec, tf.TensorSpec((None, None), tf.bool),
             tf.TensorSpec((None, self.projection_dim), tf.float32),
             tf.TensorSpec((None, self.cell_dim), tf.float32)]
    lengths = np.array([2, 6, 0, 1, 4, 6])
    x = self.rng.normal(size=(6, 8, self.input_dim)).astype(np.float32)
    mask = np.arange(8)[None, :] < lengths[:, None]
    h0 = self.rng.normal(size=(6, self.projection_dim)).astype(np.float32)
    c0 = self.rng.normal(size=(6, self.cell_dim)).astype(np.float32)
    for go_backwards in (False, True):
      run = tf.function(
          lambda x, m, h, c, back=go_backwards: layer(
              x, mask=m, initial_state=(h, c), go_backwards=back,
              training=False), input_signature=specs)
      outputs, (h, c) = run(x, mask, h0, c0)
      ref_out, ref_h, ref_c = _reference_lstmp(
          x.astype(np.float64), lengths, layer.kernel.numpy(),
          layer.bias.numpy(), layer.projection.numpy(), h0, c0,
          forget_bias=1.0, cell_clip=0.8, projection_clip=0.25,
          go_backwards=go_backwards)
      self.assertAllClose(outputs, ref_out, atol=1e-5)
      self.assertAllClose(h, ref_h, atol=1e-5)
      self.assertAllClose(c, ref_c, atol=1e-5)
      self.assertAllEqual(outputs.numpy()[~mask], np.zeros(
          (int((~mask).sum()), self.projection_dim)))
      # No rows, or no tokens at all: empty outputs, the initial state.
      outputs, (h, c) = run(x[:0], mask[:0], h0[:0], c0[:0])
      self.assertEqual(outputs.shape, (0, 8, self.projection_dim))
      outputs, (h, c) = run(x, np.zeros_like(mask), h0, c0)
      self.assertAllEqual(outputs, np.zeros((6, 8, self.projection_dim)))
      self.assertAllEqual(h, h0)
      self.assertAllEqual(c, c0)

    # The packed loop (a ScatterNd puts its tokens back) serves inference
    # and training; inference reads each step as a slice of the packed
    # tokens, training through a TensorArray split from them (whose
    # gradient is linear in time).
    op_types = lambda training: _op_types(
        lambda x, m: layer(x, mask=m, training=training)[0], *specs[:2])
    for training in (False, None, True):
      self.assertIn("ScatterNd", op_types(training))
    _assert_only_training_uses(self, op_types, "TensorListSplit")

  def test_pack_sequences_off_keeps_the_masked_loop_which_xla_compiles(self):
    # The packed loop's shapes depend on the data; XLA needs them from the
    # input shapes. pack_sequences=False (the trainer's jit_compile sets
    # it) keeps the masked loop, with the same outputs and gradients.
    packed = self._make_layer(static_unroll_max_steps=0)
    masked = self._looping_layer(packed, pack_sequences=False)
    specs = [tf.TensorSpec((None, None, self.input_dim), tf.float32),
             tf.TensorSpec((None, None), tf.bool)]
    self.assertNotIn("ScatterNd", _op_types(
        lambda x, m: masked(x, mask=m, training=True)[0], *specs))

    mask = tf.constant(self.mask)
    args = (tf.constant(self.x), tf.constant(self.h0), tf.constant(self.c0))
    for a, b in zip(
        _graph_outputs_and_gradients(packed, mask, training=True)(*args),
        _graph_outputs_and_gradients(masked, mask, training=True,
                                     jit_compile=True)(*args)):
      self.assertAllClose(a, b, atol=1e-5, rtol=1e-5)

  def test_padding_elsewhere_takes_the_masked_loop(self):
    # Left padding (the start of a stream) is not packed: the masked loop,
    # in the same tf.function, gives the reference's outputs.
    layer = self._make_layer(static_unroll_max_steps=0)
    left = np.arange(self.time)[None, :] >= (self.time - self.lengths[:, None])
    x = np.where(left[:, :, None], self.x, 0.0).astype(np.float32)
    run = tf.function(lambda x, m, back: layer(
        x, mask=m, go_backwards=back, training=False))
    for go_backwards in (False, True):
      outputs, (h, c) = run(tf.constant(x), tf.constant(left), go_backwards)
      # Each row's tokens alone, without padding.
      for b, length in enumerate(self.lengths):
        if length == 0:  # No token: zero outputs and the zero state.
          self.assertAllEqual(outputs[b], tf.zeros_like(outputs[b]))
          self.assertAllEqual(c[b], tf.zeros_like(c[b]))
          continue
        alone, (h1, c1) = layer(
            tf.constant(x[b:b + 1, self.time - length:]),
            go_backwards=go_backwards)
        self.assertAllClose(outputs[b, self.time - length:], alone[0],
                            atol=1e-6)
        self.assertAllClose(h[b], h1[0], atol=1e-6)
        self.assertAllClose(c[b], c1[0], atol=1e-6)

  def test_config_round_trip(self):
    layer = ProjectedLSTM(cell_dim=9, projection_dim=4, cell_clip=2.0,
                          projection_clip=0.0, forget_bias=0.5,
                          static_unroll_max_steps=0, pack_sequences=False,
                          name="x")
    clone = ProjectedLSTM.from_config(layer.get_config())
    self.assertEqual(clone.get_config(), layer.get_config())
    self.assertEqual(clone.static_unroll_max_steps, 0)
    self.assertFalse(clone.pack_sequences)
    # Configs saved before static_unroll_max_steps existed load with the
    # default.
    old = layer.get_config()
    del old["static_unroll_max_steps"]
    self.assertEqual(ProjectedLSTM.from_config(old).static_unroll_max_steps,
                     config_lib.LSTMConfig().static_unroll_max_steps)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer))
    self.assertIsInstance(restored, ProjectedLSTM)
    self.assertEqual(restored.projection_clip, 0.0)

  def test_weight_shapes_follow_bilm_tf_layout(self):
    layer = self._make_layer()
    self.assertEqual(tuple(layer.kernel.shape),
                     (self.input_dim + self.projection_dim, 4 * self.cell_dim))
    self.assertEqual(tuple(layer.bias.shape), (4 * self.cell_dim,))
    self.assertEqual(tuple(layer.projection.shape),
                     (self.cell_dim, self.projection_dim))
    self.assertEqual([v.name for v in layer.weights],
                     ["kernel", "bias", "projection"])

  def test_mixed_bfloat16(self):
    for unroll in (0, self.time):  # While loop, unrolled.
      with self.subTest(static_unroll_max_steps=unroll):
        self._check_mixed_bfloat16(unroll)

  def _check_mixed_bfloat16(self, static_unroll_max_steps):
    try:
      keras.mixed_precision.set_global_policy("mixed_bfloat16")
      layer = ProjectedLSTM(cell_dim=self.cell_dim,
                            projection_dim=self.projection_dim,
                            cell_clip=0.8, projection_clip=0.25,
                            static_unroll_max_steps=static_unroll_max_steps)
      outputs, (h, c) = layer(tf.constant(self.x), mask=tf.constant(self.mask),
                              go_backwards=True)
    finally:
      keras.mixed_precision.set_global_policy("float32")
    self.assertEqual(layer.kernel.dtype, "float32")
    self.assertEqual(outputs.dtype, tf.bfloat16)
    self.assertEqual(h.dtype, tf.float32)
    # Clips hold up to bfloat16 rounding (8 bits of mantissa).
    self.assertLessEqual(float(tf.reduce_max(tf.abs(c))), 0.8 * (1 + 2**-7))
    self.assertLessEqual(float(tf.reduce_max(tf.abs(
        tf.cast(outputs, tf.float32)))), 0.25 * (1 + 2**-7))


if __name__ == "__main__":
  tf.test.main()
