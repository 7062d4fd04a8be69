r"""The fused LSTMP kernel alone: forward and gradient op time per LSTM.

  .venv/bin/python -m bench.fused_lstmp_bench
  .venv/bin/python -m bench.fused_lstmp_bench --lstmp_sizes=32x20x256x64

For each batch x steps x cell x projection size, times one call of the
forward op (`ElmoLstmpSequence`) and one of its gradient
(`ElmoLstmpSequenceGrad`) on random inputs, median of --lstmp_calls calls
after 5 warm-up calls, and the matmul rate that implies (the op runs on
one core). Both precisions include the LSTM's input matmul, as training
calls the op: float32, and where the CPU has AMX or AVX512-BF16 also the
mixed_bfloat16 path (bfloat16 operands on AMX tiles or in VDPBF16PS dot
products; the JSON names which: `bf16_*`); on an AMX CPU also the
AVX512-BF16 fallback (`bf16_avx512_*`). Writes
bench/results/fused_lstmp.json.
"""

import contextlib
import datetime
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

from bench import machine

_SIZES = flags.DEFINE_list(
    "lstmp_sizes", ["32x20x256x64", "32x20x1024x128", "64x20x512x128"],
    "batch x steps x cell x projection: bilm-tf's 256/64 reference, the "
    "paper's `small`, `cpu_small` at its training batch.")
_CALLS = flags.DEFINE_integer("lstmp_calls", 50, "Timed calls per op.")
_OUT = flags.DEFINE_string(
    "lstmp_out", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                              "results", "fused_lstmp.json"),
    "Result JSON.")

# Asks the kernel for a lesser bfloat16 backend (lstmp_kernel.cc).
_BACKEND_VARIABLE = "ELMO_TF_LSTMP_BFLOAT16"


def _median_ms(fn, calls: int) -> float:
  for _ in range(5):
    fn()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * statistics.median(times)


def measure(batch: int, steps: int, cell: int, proj: int, calls: int) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf.ops import fused_lstmp  # pylint: disable=g-import-not-at-top
  ops = fused_lstmp.load()
  if ops is None:
    raise RuntimeError(f"The kernel did not build: {fused_lstmp.failure()}")
  rng = np.random.default_rng(0)
  const = lambda *shape, scale=1.0: tf.constant(
      rng.normal(size=shape).astype("float32") * scale)
  # The LSTM's input is the projection size, as in ELMo's layers.
  x = const(batch, steps, proj)
  keep = tf.ones((batch, steps))
  h0, c0 = tf.zeros((batch, proj)), tf.zeros((batch, cell))
  kernel = const(2 * proj, 4 * cell, scale=0.1)
  bias = const(4 * cell, scale=0.1)
  projection = const(cell, proj, scale=0.1)
  d_h_seq, d_c_seq = tf.ones((batch, steps, proj)), tf.zeros((batch, steps,
                                                               cell))
  # Matmul flops per step: h @ W_h and m @ W_p; the gradient has twice as
  # many (each matmul's two operands' gradients).
  recurrent_flops = 2 * batch * steps * (proj * 4 * cell + cell * proj)
  input_flops = 2 * batch * steps * proj * 4 * cell  # x @ W_x
  row = {"batch": batch, "steps": steps, "cell": cell, "projection": proj}
  # Both precisions as training calls them, the input matmul in the op:
  # (prefix, op arguments, forward flops, $ELMO_TF_LSTMP_BFLOAT16).
  paths = [("", dict(x=x, kernel=kernel, forget_bias=1.0,
                     bf16_matmuls=False), recurrent_flops + input_flops, None)]
  backend = fused_lstmp.bfloat16_backend()
  bf16_args = dict(x=x, kernel=kernel, forget_bias=1.0, bf16_matmuls=True)
  if backend != "none":
    paths.append(("bf16_", bf16_args, recurrent_flops + input_flops, None))
  if backend == "amx":  # Also the fallback an AMX-less CPU would run.
    paths.append(("bf16_avx512_", bf16_args, recurrent_flops + input_flops,
                  "avx512_bf16"))
  for prefix, args, forward_flops, asked_backend in paths:
    with _bfloat16_backend(asked_backend):
      row.update(_time_ops(ops, prefix, args, keep, h0, c0, bias,
                           projection, d_h_seq, d_c_seq, forward_flops,
                           calls))
  return row


@contextlib.contextmanager
def _bfloat16_backend(asked):
  """$ELMO_TF_LSTMP_BFLOAT16 = asked meanwhile (None: left as it is)."""
  saved = os.environ.get(_BACKEND_VARIABLE)
  if asked is not None:
    os.environ[_BACKEND_VARIABLE] = asked
  try:
    yield
  finally:
    if saved is None:
      os.environ.pop(_BACKEND_VARIABLE, None)
    else:
      os.environ[_BACKEND_VARIABLE] = saved


def _time_ops(ops, prefix, args, keep, h0, c0, bias, projection, d_h_seq,
              d_c_seq, forward_flops, calls) -> dict:
  """The forward op's and the gradient op's median ms and matmul rates."""
  attrs = {k: v for k, v in args.items() if k not in ("x", "kernel")}
  attrs.update(cell_clip=3.0, proj_clip=3.0, reverse=False)
  outputs = ops.elmo_lstmp_sequence(args["x"], keep, h0, c0, args["kernel"],
                                    bias, projection, **attrs)
  forward_ms = _median_ms(lambda: ops.elmo_lstmp_sequence(
      args["x"], keep, h0, c0, args["kernel"], bias, projection,
      **attrs)[0].numpy(), calls)
  attrs.pop("forget_bias", None)  # Not an attr of the gradient.
  gradient_ms = _median_ms(lambda: ops.elmo_lstmp_sequence_grad(
      args["x"], keep, h0, c0, args["kernel"], projection, *outputs[:5],
      d_h_seq, d_c_seq, h0, c0, **attrs)[0].numpy(), calls)
  return {
      f"{prefix}forward_ms": round(forward_ms, 3),
      f"{prefix}gradient_ms": round(gradient_ms, 3),
      f"{prefix}forward_matmul_gflops": round(
          forward_flops / forward_ms / 1e6, 1),
      f"{prefix}gradient_matmul_gflops": round(
          2 * forward_flops / gradient_ms / 1e6, 1)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  rows = []
  for size in _SIZES.value:
    batch, steps, cell, proj = (int(v) for v in size.split("x"))
    rows.append(measure(batch, steps, cell, proj, _CALLS.value))
    print(json.dumps(rows[-1]), flush=True)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf.ops import fused_lstmp  # pylint: disable=g-import-not-at-top
  report = {
      "benchmark": "fused_lstmp",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": os.cpu_count()},
      "tensorflow": tf.__version__,
      "bfloat16_backend": fused_lstmp.bfloat16_backend(),
      "command": " ".join(["python", "-m", "bench.fused_lstmp_bench"] +
                          sys.argv[1:]),
      "calls": _CALLS.value,
      "rows": rows,
  }
  os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
  print(f"wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
