r"""Benchmark: training throughput and model FLOPs utilization (MFU).

For each preset (cpu_fast, cpu_small, small) and precision (float32,
mixed_bfloat16), and with XLA (`jit_compile`) for `--jit_presets`: builds
the real Trainer on PTB in stream mode, runs warm-up steps, times `--steps`
optimizer steps and reports target tokens/s per direction.

Input wait (`--input_wait_presets`): the compiled step reads its batch
itself (`next(iterator)` inside the `tf.function` of
`Trainer._make_train_step`), so the time it waits on the pipeline cannot be
timed apart from Python without changing the trainer. Instead the warm-up
and timed steps are replayed twice on the same batches, with
`Trainer.iterator` swapped (the trainer is unchanged): once from the live
pipeline (seconds_per_step_live_input) and once from those batches cached
in memory (seconds_per_step_ready_input), which never waits. Both replays
see only batches (and so shapes, which vary with the distinct tokens of a
batch) seen before, so caches that depend on shapes favour neither.
input_wait_share = 1 - ready / live; it includes the pipeline's CPU
competing with the step (prefetching runs on the same cores), and noise can
make it slightly negative. input_seconds_per_batch is the pipeline alone (no
step) producing batches from a fresh iterator. bench/profile_step.py
measures the wait directly instead (time inside IteratorGetNext, from a
profiler trace).

MFU = achieved FLOP/s / this machine's matmul FLOP/s in the same precision,
measured in the same run (a large square matmul). Achieved FLOP/s counts the
matmul work the step really executes (bench/flops.py): the character encoder
only on the distinct tokens of each batch and on the convolution windows
that start inside each token and one after it (both exact shortcuts of the
backbone, off under XLA, which needs static shapes), the four LSTMs, and the
sampled softmax; training = 3x the forward pass.

Writes bench/results/train.json. From the repository root:

  .venv/bin/python -m bench.train_bench [--steps=30]
"""

import datetime
import json
import os
import platform
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging

from bench import machine
from bench import train_config

_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per configuration.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.")
_PRESETS = flags.DEFINE_list(
    "presets", ["cpu_fast", "cpu_small", "cpu_small:full", "small"],
    "Presets; `name:full` trains with the exact softmax "
    "(model.training_softmax=full) instead of the sampled one.")
_JIT_PRESETS = flags.DEFINE_list(
    "jit_presets", ["cpu_fast"], "Presets also timed with jit_compile "
    "(float32).")
_PRECISIONS = flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"],
                                "Precisions.")
_INPUT_WAIT_PRESETS = flags.DEFINE_list(
    "input_wait_presets", ["cpu_fast"], "Presets whose runs (without XLA) "
    "also measure the share of step time spent waiting on input (replays "
    "the warm-up and timed steps 3 more times).")
# Batches the pipeline alone produces for input_seconds_per_batch.
_PIPELINE_BATCHES = 200

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "train.json")


def matmul_flops_per_sec(dtype: str, n: int = 2048, repeats: int = 20) -> float:
  import tensorflow as tf
  a = tf.random.normal((n, n), dtype=tf.float32)
  b = tf.random.normal((n, n), dtype=tf.float32)
  if dtype == "bfloat16":
    a, b = tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16)

  @tf.function
  def run(a, b):
    c = a
    for _ in range(repeats):
      c = tf.matmul(c, b)
    return tf.reduce_sum(tf.cast(c[:1, :1], tf.float32))

  run(a, b).numpy()
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    run(a, b).numpy()
    best = min(best, time.perf_counter() - start)
  return 2.0 * n ** 3 * repeats / best


def _batch_shape_stats(trainer, batches: int = 5) -> tuple[float, float]:
  """(distinct tokens encoded per forward target token, mean convolution
  windows per distinct token: its character slots + 1)."""
  import tensorflow as tf
  from elmo_tf import data as data_lib
  from elmo_tf import vocab
  dataset = data_lib.make_dataset(trainer.prepared, "train",
                                  trainer.config.data, shuffle=False, seed=0)
  fractions, windows = [], []
  for batch in dataset.take(batches):
    chars = tf.concat([tf.reshape(batch["char_ids"], (-1, 50)),
                       tf.reshape(batch["backward_char_ids"], (-1, 50))], 0)
    unique, _ = tf.raw_ops.UniqueV2(x=chars, axis=[0])
    targets = float(tf.reduce_sum(tf.cast(batch["forward_targets"] > 0,
                                          tf.float32)))
    fractions.append(int(unique.shape[0]) / targets)
    real_slots = (unique > 0) & (unique != vocab.PADDING_CHAR)  # (u, 50)
    windows.append(float(tf.reduce_mean(tf.cast(
        tf.reduce_sum(tf.cast(real_slots, tf.int32), -1) + 1, tf.float32))))
  return sum(fractions) / len(fractions), sum(windows) / len(windows)


def _training_dataset_fn(trainer, cached_batches: int = 0):
  """The training pipeline of `trainer` from step 0 (`Trainer._dataset_fn`
  at the start of a run); with `cached_batches`, its first batches cached
  and repeated."""
  import tensorflow as tf
  from elmo_tf import data as data_lib

  def dataset_fn(input_context=None):
    dataset = data_lib.make_dataset(
        trainer.prepared, "train", trainer.config.data, shuffle=True,
        seed=trainer.config.train.seed, repeat=True,
        input_context=input_context)
    if cached_batches:
      dataset = dataset.take(cached_batches).cache().repeat().prefetch(
          tf.data.AUTOTUNE)
    return dataset
  return dataset_fn


def _replay(trainer, dataset_fn, untimed: int) -> float:
  """Seconds per step of _STEPS steps after `untimed` ones, on batches of
  `dataset_fn` (the trainer reads `trainer.iterator` in every step)."""
  trainer.iterator = iter(
      trainer.strategy.distribute_datasets_from_function(dataset_fn))
  for _ in range(untimed):
    trainer.train_step()
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    trainer.train_step()
  return (time.perf_counter() - start) / _STEPS.value


def _input_wait(trainer) -> dict:
  """The share of step time spent waiting on input, and the pipeline alone
  (see the module docstring). Call after the warm-up and timed steps."""
  iterator = iter(_training_dataset_fn(trainer)())
  next(iterator)  # Tracing and tables.
  start = time.perf_counter()
  for _ in range(_PIPELINE_BATCHES):
    next(iterator)
  input_seconds = (time.perf_counter() - start) / _PIPELINE_BATCHES
  del iterator
  warmup, steps = _WARMUP.value, _STEPS.value
  # Batches warmup .. warmup + steps - 1 again, from the pipeline.
  live = _replay(trainer, _training_dataset_fn(trainer), warmup)
  # The same batches from memory: the first pass fills the cache, then the
  # warm-up batches again.
  ready = _replay(trainer, _training_dataset_fn(trainer, warmup + steps),
                  2 * warmup + steps)
  return {
      "seconds_per_step_live_input": live,
      "seconds_per_step_ready_input": ready,
      "input_wait_share": 1.0 - ready / live,
      "input_seconds_per_batch": input_seconds,
  }


def run_one(preset: str, precision: str, peak: float,
            jit_compile: bool = False) -> dict:
  from bench import flops
  from elmo_tf import checkpoints as checkpoints_lib
  from elmo_tf import trainer as trainer_lib
  config = train_config.experiment_config(preset, precision, jit_compile)
  preset = preset.partition(":")[0]
  with tempfile.TemporaryDirectory() as model_dir:
    trainer = trainer_lib.make_trainer(config, model_dir)
    for _ in range(_WARMUP.value):
      trainer.train_step()
    tokens = 0.0
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      tokens += trainer.train_step()["tokens"]
    seconds = time.perf_counter() - start
    input_wait = {}
    if preset in _INPUT_WAIT_PRESETS.value and not jit_compile:
      input_wait = _input_wait(trainer)
    if jit_compile:  # Every token, every character slot (static shapes).
      encoded_fraction, windows = 2.0, None
    else:
      encoded_fraction, windows = _batch_shape_stats(trainer)
  checkpoints_lib.set_precision("float32")
  tokens_per_sec = tokens / seconds
  counts = flops.training_flops_per_token(
      trainer.config.model, encoded_fraction=encoded_fraction,
      char_windows=windows)
  achieved = counts["train_flops"] * tokens_per_sec
  return {
      "preset": preset,
      "precision": precision,
      "jit_compile": jit_compile,
      "batch_size": config.data.batch_size,
      "unroll_steps": config.data.unroll_steps,
      "n_negative_samples": config.model.n_negative_samples,
      "training_softmax": config.model.training_softmax,
      "steps": _STEPS.value,
      "seconds_per_step": seconds / _STEPS.value,
      "target_tokens_per_sec_per_direction": tokens_per_sec,
      "encoded_tokens_per_target_token": encoded_fraction,
      "mean_char_windows_per_encoded_token": windows,
      "train_flops_per_token": counts["train_flops"],
      "achieved_flops_per_sec": achieved,
      "matmul_flops_per_sec": peak,
      "mfu": achieved / peak,
      # See the module docstring; only for --input_wait_presets.
      **input_wait,
  }


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  peaks = {"float32": matmul_flops_per_sec("float32"),
           "mixed_bfloat16": matmul_flops_per_sec("bfloat16")}
  rows = []
  runs = [(preset, precision, False) for preset in _PRESETS.value
          for precision in _PRECISIONS.value]
  runs += [(preset, "float32", True) for preset in _JIT_PRESETS.value]
  for preset, precision, jit_compile in runs:
    row = run_one(preset, precision, peaks[precision], jit_compile)
    rows.append(row)
    print(f"{preset:10s} {precision:15s} {'xla' if jit_compile else '':3s} "
          f"{row['target_tokens_per_sec_per_direction']:8.0f} tok/s/dir  "
          f"{row['achieved_flops_per_sec'] / 1e9:6.1f} GFLOP/s  "
          f"MFU {row['mfu']:.0%}"
          + (f"  input wait {row['input_wait_share']:.1%}"
             if "input_wait_share" in row else ""), flush=True)
  cpu = machine.cpu_model()
  result = {
      "benchmark": "train",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "machine": {"cpu": cpu, "cpu_count": os.cpu_count(),
                  "python": platform.python_version()},
      "matmul_flops_per_sec": peaks,
      "command": "python -m bench.train_bench " + " ".join(sys.argv[1:]),
      "results": rows,
  }
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w") as f:
    json.dump(result, f, indent=2)
  print(f"Wrote {RESULTS}")


if __name__ == "__main__":
  app.run(main)
