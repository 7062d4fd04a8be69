"""The fused LSTMP kernel (elmo_tf/ops) against the layer's TensorFlow ops
and the NumPy reference: outputs, final states and every gradient; its use
in training, and its absence from exported SavedModels."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import trainer as trainer_lib
from elmo_tf.layers.projected_lstm import ProjectedLSTM
from elmo_tf.ops import fused_lstmp
from tests import export_testutil
from tests import projected_lstm_test

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _layer(fused: bool, static: bool, clip: float, input_dim: int,
           seed: int = 4) -> ProjectedLSTM:
  layer = ProjectedLSTM(cell_dim=7, projection_dim=3, cell_clip=clip,
                        projection_clip=clip / 3, forget_bias=1.0,
                        static_unroll_max_steps=64 if static else 0,
                        fused_kernel=fused, name="lstm")
  layer.build((None, None, input_dim))
  rng = np.random.default_rng(seed)
  # Large weights so that both clips are active.
  for weight, scale in ((layer.kernel, 1.5), (layer.bias, 1.0),
                        (layer.projection, 1.0)):
    weight.assign(rng.normal(size=weight.shape).astype(np.float32) * scale)
  return layer


class FusedLSTMPTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # The kernel must build where the tests run (make setup builds it): a
    # failure here is a failure, not a skip.
    assert fused_lstmp.load() is not None, fused_lstmp.failure()

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(7)
    self.x = rng.normal(size=(4, 6, 5)).astype(np.float32) * 2
    self.h0 = rng.normal(size=(4, 3)).astype(np.float32) * 0.5
    self.c0 = rng.normal(size=(4, 7)).astype(np.float32)
    # Right padding, left padding (start of a stream), none, all padding.
    self.mask = np.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1],
                          [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
    self.weights = rng.normal(size=(4, 6, 3)).astype(np.float32)

  def _run(self, layer, mask, go_backwards, in_function=False):
    """Outputs, final state and the gradients of a loss that reads all of
    them, w.r.t. inputs, initial state and weights."""
    x, h0, c0 = (tf.constant(v) for v in (self.x, self.h0, self.c0))

    def compute():
      with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        outputs, (h, c) = layer(x, mask=mask, initial_state=(h0, c0),
                                go_backwards=go_backwards)
        loss = (tf.reduce_sum(tf.cast(outputs, tf.float32) * self.weights) +
                0.7 * tf.reduce_sum(h) + 0.3 * tf.reduce_sum(c * c))
      grads = tape.gradient(
          loss, [x, h0, c0, layer.kernel, layer.bias, layer.projection])
      return [outputs, h, c] + grads

    if in_function:
      compute = tf.function(compute)
    return [v.numpy() for v in compute()]

  def test_outputs_states_and_gradients_match_the_tensorflow_ops(self):
    names = ["outputs", "h", "c", "d_x", "d_h0", "d_c0", "d_kernel",
             "d_bias", "d_projection"]
    for go_backwards in (False, True):
      for mask in (None, tf.constant(self.mask)):
        for clip in (0.0, 0.9):
          for static in (True, False):
            with self.subTest(go_backwards=go_backwards,
                              masked=mask is not None, clip=clip,
                              static=static):
              expected = self._run(_layer(False, static, clip, 5), mask,
                                   go_backwards)
              got = self._run(_layer(True, static, clip, 5), mask,
                              go_backwards, in_function=True)
              for name, e, g in zip(names, expected, got):
                self.assertAllClose(g, e, atol=2e-5, rtol=1e-5, msg=name)

  def test_matches_the_numpy_reference_with_active_clips(self):
    lengths = np.array([6, 4, 1, 0])
    mask = np.arange(6)[None, :] < lengths[:, None]
    for go_backwards in (False, True):
      layer = _layer(True, False, 0.9, 5)
      outputs, h, c = self._run(layer, tf.constant(mask), go_backwards)[:3]
      ref_out, ref_h, ref_c = projected_lstm_test._reference_lstmp(
          self.x.astype(np.float64), lengths, layer.kernel.numpy(),
          layer.bias.numpy(), layer.projection.numpy(), self.h0, self.c0,
          forget_bias=1.0, cell_clip=0.9, projection_clip=0.3,
          go_backwards=go_backwards)
      self.assertAllClose(np.abs(ref_out).max(), 0.3)  # The clip is active.
      self.assertAllClose(outputs, ref_out, atol=1e-5)
      self.assertAllClose(h, ref_h, atol=1e-5)
      self.assertAllClose(c, ref_c, atol=1e-5)
      # The all-padding row keeps its initial state.
      self.assertAllClose(h[3], self.h0[3])

  def test_the_graph_holds_one_op_per_direction_and_its_gradient(self):
    layer = _layer(True, True, 0.9, 5)
    x = tf.constant(self.x)

    @tf.function
    def step():
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x)[0])
      return tape.gradient(loss, layer.kernel)

    graph = step.get_concrete_function().graph
    types = [op.type for op in graph.get_operations()]
    self.assertEqual(types.count("ElmoLstmpSequence"), 1)
    self.assertEqual(types.count("ElmoLstmpSequenceGrad"), 1)
    self.assertNotIn("Sigmoid", types)

  def test_mixed_bfloat16_runs_the_kernel(self):
    policy = keras.mixed_precision.global_policy()
    try:
      keras.mixed_precision.set_global_policy("mixed_bfloat16")
      mask = tf.constant(self.mask)
      expected = self._run(_layer(False, True, 0.9, 5), mask, True)
      fused = _layer(True, True, 0.9, 5)
      got = self._run(fused, mask, True)
      graph = tf.function(lambda x: fused(x)[0]).get_concrete_function(
          tf.TensorSpec((2, 6, 5), tf.float32)).graph
    finally:
      keras.mixed_precision.set_global_policy(policy)
    self.assertIn("ElmoLstmpSequence",
                  [op.type for op in graph.get_operations()])
    self.assertEqual(got[0].dtype, expected[0].dtype)  # bfloat16 outputs
    # bfloat16 steps (8 bits of mantissa) against float32 steps.
    for e, g in zip(expected, got):
      self.assertAllClose(np.asarray(g, np.float32), np.asarray(e, np.float32),
                          atol=0.05, rtol=0.05)

  def test_a_missing_kernel_uses_the_tensorflow_ops(self):
    with mock.patch.object(fused_lstmp, "load", return_value=None):
      expected = self._run(_layer(False, True, 0.9, 5), None, False)
      got = self._run(_layer(True, True, 0.9, 5), None, False)
    for e, g in zip(expected, got):
      self.assertAllClose(g, e, atol=1e-6)

  def test_bad_shapes_are_errors_naming_the_input(self):
    load = fused_lstmp.load()
    good = dict(x=tf.zeros((2, 3, 5)), keep=tf.ones((2, 3)),
                h0=tf.zeros((2, 3)), c0=tf.zeros((2, 7)),
                kernel=tf.zeros((8, 28)), bias=tf.zeros((28,)),
                projection=tf.zeros((7, 3)))
    for name, shape, message in (
        ("kernel", (4, 28), r"kernel must be \(input \+ projection, "
                            r"4 \* cell\) = \(5 \+ 3, 28\)"),
        ("bias", (27,), r"bias must be \(4 \* cell\)"),
        ("keep", (2, 4), r"keep must be \(batch, time\)"),
        ("c0", (2, 6), r"c0 must be \(batch, cell\)")):
      with self.subTest(input=name):
        with self.assertRaisesRegex(tf.errors.InvalidArgumentError, message):
          load.elmo_lstmp_sequence(**dict(good, **{name: tf.zeros(shape)}))


def _round_to_bfloat16(x):
  """float32 -> nearest bfloat16 (ties to even), as float32."""
  bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
  bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
  return bits.astype(np.uint32).view(np.float32)


def _bfloat16_matmul_forward(x, keep, h0, c0, kernel, bias, projection,
                             clip, reverse):
  """The kernel's forward (forget bias 1) with bfloat16-rounded matmul
  operands and float32 accumulation, in NumPy: h_seq (B, T, P)."""
  sigmoid = lambda v: 1 / (1 + np.exp(-v))
  kernel, w_p = _round_to_bfloat16(kernel), _round_to_bfloat16(projection)
  w_x, w_h = kernel[:x.shape[2]], kernel[x.shape[2]:]
  h, c = h0.copy(), c0.copy()
  cell = c0.shape[1]
  h_seq = np.zeros(x.shape[:2] + (h0.shape[1],), np.float32)
  steps = range(x.shape[1])
  for t in reversed(steps) if reverse else steps:
    z = (_round_to_bfloat16(x[:, t]) @ w_x + bias +
         _round_to_bfloat16(h) @ w_h)
    i, f, o = (sigmoid(z[:, k * cell:(k + 1) * cell] + (k == 2))
               for k in (0, 2, 3))
    j = np.tanh(z[:, cell:2 * cell])
    c_new = np.clip(f * c + i * j, -clip, clip)
    m = o * np.tanh(c_new)
    h_new = np.clip(_round_to_bfloat16(m) @ w_p, -clip, clip)
    kept = keep[:, t:t + 1] > 0
    h, c = np.where(kept, h_new, h), np.where(kept, c_new, c)
    h_seq[:, t] = h
  return h_seq


class _RandomInputs:
  """Random inputs of the op at shapes its packed matmuls take, with
  padding, and `_run` (a test case mixin)."""

  def _set_inputs(self, batch=32, steps=5, cell=64, proj=32, inputs=32):
    rng = np.random.default_rng(11)
    normal = lambda *shape, scale=1.0: (
        rng.normal(size=shape) * scale).astype(np.float32)
    self.x = normal(batch, steps, inputs)
    keep = np.ones((batch, steps), np.float32)
    keep[3, 3:] = 0  # right padding
    keep[5, :2] = 0  # left padding
    keep[7] = 0      # all padding
    self.keep = keep
    self.h0, self.c0 = normal(batch, proj, scale=0.5), normal(batch, cell)
    # Glorot-like scales, as trained weights have.
    self.kernel = normal(inputs + proj, 4 * cell, scale=proj ** -0.5)
    self.bias = normal(4 * cell, scale=0.5)
    self.projection = normal(cell, proj, scale=cell ** -0.5)
    self.weights = normal(batch, steps, proj)

  def _run(self, bf16_matmuls, reverse, clip=2.0):
    """h_seq, c_seq, h_last, c_last and the gradients of a loss that reads
    all of them w.r.t. x, h0, c0, kernel, bias, projection."""
    inputs = [tf.constant(v) for v in (self.x, self.h0, self.c0, self.kernel,
                                       self.bias, self.projection)]
    x, h0, c0, kernel, bias, projection = inputs
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      h_seq, c_seq, h_last, c_last = fused_lstmp.lstmp_sequence(
          x, tf.constant(self.keep), h0, c0, kernel, bias, projection,
          cell_clip=clip, proj_clip=clip, forget_bias=1.0, reverse=reverse,
          bf16_matmuls=bf16_matmuls)
      loss = (tf.reduce_sum(h_seq * self.weights) + tf.reduce_sum(c_seq) +
              0.5 * tf.reduce_sum(h_last * h_last) + tf.reduce_sum(c_last))
    return [v.numpy() for v in
            [h_seq, c_seq, h_last, c_last] + tape.gradient(loss, inputs)]


def _cpu_flags() -> set[str]:
  """The words of /proc/cpuinfo, its CPU flags among them."""
  with open("/proc/cpuinfo", encoding="utf-8") as f:
    return set(f.read().split())


class Float32StepMatmulsTest(_RandomInputs, tf.test.TestCase):
  """float32: the steps' products on AVX-512 with the weights packed once
  (f32mm), else Eigen's; $ELMO_TF_LSTMP_FLOAT32=eigen asks for Eigen's."""

  def _both(self, reverse):
    packed = self._run(False, reverse)
    with mock.patch.dict(os.environ, {"ELMO_TF_LSTMP_FLOAT32": "eigen"}):
      eigen = self._run(False, reverse)
    return packed, eigen

  def test_packed_products_match_eigens_to_float_rounding(self):
    # Batch 8 is one block of rows, 40 five; with cell 128 the gradient's
    # dz @ W_h^T sums over 4 * cell = 512, two of the 256-deep blocks.
    for batch, cell in ((32, 64), (8, 128), (40, 32)):
      for reverse in (False, True):
        with self.subTest(batch=batch, cell=cell, reverse=reverse):
          self._set_inputs(batch=batch, cell=cell)
          packed, eigen = self._both(reverse)
          for p, e in zip(packed, eigen):  # outputs, states, gradients
            self.assertAllClose(p, e, atol=1e-5 * np.abs(e).max(), rtol=1e-5)
          # With AVX-512 the packed path ran: its sums' order is another.
          if "avx512f" in _cpu_flags():
            self.assertFalse(all(np.array_equal(p, e)
                                 for p, e in zip(packed, eigen)))
          else:
            for p, e in zip(packed, eigen):
              self.assertAllEqual(p, e)

  def test_a_batch_the_blocks_do_not_take_runs_eigens(self):
    self._set_inputs(batch=12)
    packed, eigen = self._both(reverse=False)
    for p, e in zip(packed, eigen):
      self.assertAllEqual(p, e)


class BFloat16MatmulsTest(_RandomInputs, tf.test.TestCase):
  """`bf16_matmuls` (mixed_bfloat16): AMX tiles or AVX512-BF16 dot
  products where the CPU has them."""

  def setUp(self):
    super().setUp()
    # Multiples of 32 in batch, cell and projection: what the tiles take.
    self._set_inputs(batch=32, steps=5, cell=64, proj=32, inputs=32)

  def test_backend_is_reported_as_the_cpu_has_it(self):
    flags = _cpu_flags()
    has_avx512_bf16 = {"avx512f", "avx512bw", "avx512_bf16"} <= flags
    has_amx = has_avx512_bf16 and {"amx_bf16", "amx_tile"} <= flags
    backend = fused_lstmp.bfloat16_backend()
    # AVX512-BF16 is the fallback wherever AMX is refused (Linux may refuse
    # the tile state).
    expected = {"avx512_bf16"} | ({"amx"} if has_amx else set())
    self.assertIn(backend, expected if has_avx512_bf16 else {"none"})

  def test_every_backend_of_the_cpu_keeps_bfloat16_operands(self):
    # $ELMO_TF_LSTMP_BFLOAT16 picks a lesser backend than the CPU's best,
    # so that an AMX machine runs the AVX512-BF16 code too.
    lesser = {"amx": ["amx", "avx512_bf16", "none"],
              "avx512_bf16": ["avx512_bf16", "none"], "none": ["none"]}
    float32 = self._run(False, reverse=False)
    # No clips for the gradients (a value rounded across a clip's edge flips
    # its gradient between 0 and 1).
    float32_no_clip = self._run(False, reverse=False, clip=0.0)
    emulated = _bfloat16_matmul_forward(
        self.x, self.keep, self.h0, self.c0, self.kernel, self.bias,
        self.projection, 2.0, reverse=False)
    float32_error = np.abs(float32[0] - emulated).mean()
    for backend in lesser[fused_lstmp.bfloat16_backend()]:
      with self.subTest(backend=backend), mock.patch.dict(
          os.environ, {"ELMO_TF_LSTMP_BFLOAT16": backend}):
        self.assertEqual(fused_lstmp.bfloat16_backend(), backend)
        got = self._run(True, reverse=False)
        if backend == "none":
          for g, e in zip(got, float32):
            self.assertAllEqual(g, e)
          continue
        self.assertLess(np.abs(got[0] - emulated).mean(), float32_error / 20)
        got = self._run(True, reverse=False, clip=0.0)
        for g, e in zip(got, float32_no_clip):  # gradients included
          self.assertAllClose(g, e, atol=0.01 * np.abs(e).max(), rtol=0.01)
          self.assertNotAllClose(g, e, atol=0, rtol=0)

  def test_forward_matches_bfloat16_operands_with_float32_sums(self):
    for reverse in (False, True):
      with self.subTest(reverse=reverse):
        h_seq = self._run(True, reverse)[0]
        float32_h_seq = self._run(False, reverse)[0]
        if fused_lstmp.bfloat16_backend() == "none":  # float32 ran instead.
          self.assertAllEqual(h_seq, float32_h_seq)
          continue
        emulated = _bfloat16_matmul_forward(
            self.x, self.keep, self.h0, self.c0, self.kernel, self.bias,
            self.projection, 2.0, reverse)
        # The order of the float32 sums and an ulp of tanh differ, and can
        # move a later operand across a bfloat16 rounding edge (2^-9): so
        # not bit for bit, but far closer than float32 operands come.
        error = np.abs(h_seq - emulated).mean()
        float32_error = np.abs(float32_h_seq - emulated).mean()
        self.assertGreater(float32_error, 1e-4)
        self.assertLess(error, float32_error / 20)

  def test_outputs_and_gradients_within_bfloat16_rounding_of_float32(self):
    names = ["h_seq", "c_seq", "h_last", "c_last", "d_x", "d_h0", "d_c0",
             "d_kernel", "d_bias", "d_projection"]
    for reverse in (False, True):
      # No clips: a value rounded across a clip's edge flips its gradient
      # between 0 and 1, which no tolerance covers.
      expected = self._run(False, reverse, clip=0.0)
      got = self._run(True, reverse, clip=0.0)
      for name, e, g in zip(names, expected, got):
        with self.subTest(reverse=reverse, value=name):
          # bfloat16 keeps 8 bits: errors of a few 2^-9 of the largest value.
          self.assertAllClose(g, e, atol=0.01 * np.abs(e).max(), rtol=0.01)
          if fused_lstmp.bfloat16_backend() == "none":
            self.assertAllEqual(g, e)
      # The all-padding row carries its state, bit for bit.
      self.assertAllEqual(got[2][7], self.h0[7])
      if fused_lstmp.bfloat16_backend() != "none":  # Not float32's numbers.
        for g, e in zip(got[4:], expected[4:]):
          self.assertNotAllClose(g, e, atol=0, rtol=0)

  def test_mixed_bfloat16_layers_ask_for_it_unless_configured_off(self):
    policy = keras.mixed_precision.global_policy()
    try:
      keras.mixed_precision.set_global_policy("mixed_bfloat16")
      attrs = {}
      for flag in (True, False):
        layer = ProjectedLSTM(cell_dim=32, projection_dim=32,
                              fused_kernel_bfloat16_matmuls=flag)
        graph = tf.function(lambda x: layer(x)[0]).get_concrete_function(  # pylint: disable=cell-var-from-loop
            tf.TensorSpec((32, 4, 8), tf.float32)).graph
        op, = [o for o in graph.get_operations()
               if o.type == "ElmoLstmpSequence"]
        attrs[flag] = op.get_attr("bf16_matmuls")
    finally:
      keras.mixed_precision.set_global_policy(policy)
    self.assertEqual(attrs, {True: True, False: False})


class FusedLSTMPBenchTest(tf.test.TestCase):

  def test_bench_measures_both_ops_and_names_the_bfloat16_backend(self):
    # The module as `make bench` runs it; 32s so that a CPU with bfloat16
    # matmuls times that path too.
    with tempfile.TemporaryDirectory() as tmp:
      output = os.path.join(tmp, "fused_lstmp.json")
      subprocess.run(
          [sys.executable, "-m", "bench.fused_lstmp_bench",
           "--lstmp_sizes=32x2x32x32", "--lstmp_calls=2",
           f"--lstmp_out={output}"],
          cwd=_REPO, check=True, capture_output=True, text=True, timeout=600)
      with open(output, encoding="utf-8") as f:
        report = json.load(f)
    row, = report["rows"]
    self.assertEqual((row["batch"], row["steps"], row["cell"],
                      row["projection"]), (32, 2, 32, 32))
    self.assertGreater(row["forward_ms"], 0)
    self.assertGreater(row["gradient_ms"], 0)
    self.assertEqual(report["bfloat16_backend"],
                     fused_lstmp.bfloat16_backend())
    self.assertEqual("bf16_forward_ms" in row,
                     report["bfloat16_backend"] != "none")

  def test_bench_on_amx_also_times_the_avx512_fallback(self):
    from bench import fused_lstmp_bench  # pylint: disable=g-import-not-at-top
    seen = []
    real_sequence = fused_lstmp.load().elmo_lstmp_sequence

    def sequence(*args, **kwargs):
      seen.append(os.environ.get("ELMO_TF_LSTMP_BFLOAT16"))
      return real_sequence(*args, **kwargs)

    with mock.patch.object(fused_lstmp, "bfloat16_backend",
                           return_value="amx"), \
         mock.patch.object(fused_lstmp.load(), "elmo_lstmp_sequence",
                           sequence):
      row = fused_lstmp_bench.measure(32, 2, 32, 32, calls=1)
    for prefix in ("", "bf16_", "bf16_avx512_"):
      self.assertGreater(row[f"{prefix}forward_ms"], 0)
      self.assertGreater(row[f"{prefix}gradient_ms"], 0)
    # The fallback's calls ran with the variable set, and it is unset after.
    self.assertIn("avx512_bf16", seen)
    self.assertIn(None, seen)
    self.assertNotIn("ELMO_TF_LSTMP_BFLOAT16", os.environ)


class FusedTrainingTest(tf.test.TestCase):

  def test_training_with_the_kernel_matches_and_exports_without_it(self):
    tmp = tempfile.mkdtemp()
    corpus, cache = export_testutil.prepare_toy_corpus(tmp)
    losses = {}
    for fused in (False, True):
      model = config_lib.preset("tiny")
      model = model.replace(lstm=model.lstm.replace(fused_kernel=fused))
      config = config_lib.ExperimentConfig(
          model=model,
          data=config_lib.DataConfig(corpus=corpus, batching="stream",
                                     batch_size=8, unroll_steps=10),
          train=config_lib.TrainConfig(
              max_steps=6, log_every_steps=6, checkpoint_every_steps=6,
              eval_every_steps=0, seed=3, learning_rate=0.5))
      model_dir = os.path.join(tmp, f"run_fused_{fused}")
      with trainer_lib.make_trainer(config, model_dir,
                                    cache_root=cache) as trainer:
        losses[fused] = [trainer.train_step()["loss"] for _ in range(6)]
        trainer.manager.save(checkpoint_number=6)
    # The same steps (float rounding apart).
    self.assertAllClose(losses[True], losses[False], rtol=1e-4)

    saved = export_lib.export_saved_model(
        os.path.join(tmp, "run_fused_True"), os.path.join(tmp, "export"))
    with open(os.path.join(saved, "saved_model.pb"), "rb") as f:
      self.assertNotIn(b"ElmoLstmpSequence", f.read())
    # The config asset keeps the run's recipe (fine-tuning from the
    # SavedModel trains with the kernel again).
    config, _ = export_lib.read_export(saved)
    self.assertTrue(config.model.lstm.fused_kernel)


if __name__ == "__main__":
  tf.test.main()
