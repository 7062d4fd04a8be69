r"""Benchmark (issue 12): training throughput of 2 workers against 1.

Two worker processes on 127.0.0.1 train with MultiWorkerMirroredStrategy
(`train.distribution=multi_worker`, the cluster in TF_CONFIG, as
tests/multi_worker_test.py launches `bin/train`), each with `--batch_size`
rows per step (global batch 2 x that); against one process with the default
strategy and the same `--batch_size`. Same preset, stream batching, real
Trainer (`trainer.make_trainer`): `--warmup` untimed steps, then `--steps`
timed ones.

Reported: seconds per step, target tokens/s per direction overall (all
workers) and per worker, peak RSS per process, and the ratio of the 2-worker
overall throughput to the 1-worker one (2.0 would be perfect scaling).

On one machine the workers share its cores (and its memory bandwidth): on
2 cores, 1 worker already uses both (TensorFlow's intra-op pool), so 2
workers cannot scale; this measures the overhead of the collectives (every
gradient, the softmax's included, is made dense and all-reduced each step,
see `Trainer._make_train_step`). `--intra_op_threads` sets the pool of
every process (0: TensorFlow's default, the number of cores).

Writes bench/results/multiworker.json and prints a markdown table. From the
repository root:

  .venv/bin/python -m bench.multiworker_bench
  # Toy smoke run (seconds):
  .venv/bin/python -m bench.multiworker_bench --preset=tiny --batch_size=8 \
      --warmup=1 --steps=3 --corpus=DIR --output=/tmp/multiworker.json
"""

import datetime
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags

from bench import machine
from bench import scale_utils

_PRESET = flags.DEFINE_string("preset", "cpu_fast", "Model preset.")
_CORPUS = flags.DEFINE_string(
    "corpus", "ptb", "Corpus (prepared on first use into --cache_dir, before "
    "the workers start).")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", "", "Prepared-corpus cache; empty: elmo_tf's default.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 64, "Stream rows per step of EACH worker (the 2-worker "
    "run's global batch is twice this).")
_UNROLL = flags.DEFINE_integer("unroll_steps", 20, "Stream window length.")
_WARMUP = flags.DEFINE_integer(
    "warmup", 3, "Untimed steps first (at least 2: a multi_worker stream "
    "run traces the step on its first two steps).")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps per run.")
_WORKERS = flags.DEFINE_list(
    "workers", ["1", "2"], "Worker counts to run; the first is the "
    "reference of the throughput ratio.")
_INTRA_OP_THREADS = flags.DEFINE_integer(
    "intra_op_threads", 0, "TF_NUM_INTRAOP_THREADS of every process; 0: "
    "TensorFlow's default.")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results", "multiworker.json"),
    "The JSON report.")
_TIMEOUT = flags.DEFINE_integer("timeout", 3600,
                                "Seconds allowed to each run.")
# Internal: a training process.
_CHILD_CORPUS = flags.DEFINE_string("child_corpus", "",
                                    "(internal) Prepared corpus to train on.")
_CHILD_WORKERS = flags.DEFINE_integer(
    "child_workers", 1, "(internal) Workers of the run (1: default "
    "strategy; more: multi_worker, cluster in TF_CONFIG).")
_CHILD_OUTPUT = flags.DEFINE_string("child_output", "",
                                    "(internal) Where the process writes.")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(corpus: str, n_workers: int, output: str) -> None:
  from absl import logging  # pylint: disable=g-import-not-at-top
  from elmo_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from elmo_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  config = config_lib.ExperimentConfig(
      model=config_lib.preset(_PRESET.value),
      data=config_lib.DataConfig(corpus=corpus, batching="stream",
                                 batch_size=_BATCH_SIZE.value * n_workers,
                                 unroll_steps=_UNROLL.value),
      train=config_lib.TrainConfig(
          max_steps=10**6, eval_every_steps=0,
          distribution="multi_worker" if n_workers > 1 else "default"))
  model_dir = os.path.join(os.path.dirname(output), f"run-{n_workers}")
  with trainer_lib.make_trainer(config, model_dir,
                                cache_root=os.path.dirname(corpus)) as trainer:
    for _ in range(_WARMUP.value):
      trainer.train_step()
    # A multi_worker stream run traces the step twice: on the first step
    # (the initial state) and on the second (the state strategy.run
    # returned), so --warmup should be 2 or more.
    traced_before = trainer._train_step.experimental_get_tracing_count()  # pylint: disable=protected-access
    tokens = 0.0  # Summed over every replica of every worker.
    step_seconds = []
    for _ in range(_STEPS.value):
      start = time.perf_counter()
      tokens += trainer.train_step()["tokens"]
      step_seconds.append(time.perf_counter() - start)
    seconds = sum(step_seconds)
    replicas = trainer.strategy.num_replicas_in_sync
    tracings = trainer._train_step.experimental_get_tracing_count()  # pylint: disable=protected-access
  scale_utils.write_json(output, {
      "workers": n_workers,
      "replicas": replicas,
      "global_batch_size": config.data.batch_size,
      "steps": _STEPS.value,
      "seconds_per_step": seconds / _STEPS.value,
      "target_tokens_per_sec_per_direction": tokens / seconds,
      "step_seconds": step_seconds,
      "tracings": tracings,
      # Not 0: the timed steps include tracing (raise --warmup).
      "tracings_while_timed": tracings - traced_before,
      "peak_rss_bytes": scale_utils.peak_rss_bytes(),
  })


def _env(tf_config: dict[str, Any] | None) -> dict[str, str]:
  env = dict(os.environ)
  env["CUDA_VISIBLE_DEVICES"] = ""
  env.pop("TF_CONFIG", None)
  if tf_config is not None:
    env["TF_CONFIG"] = json.dumps(tf_config)
  if _INTRA_OP_THREADS.value:
    env["TF_NUM_INTRAOP_THREADS"] = str(_INTRA_OP_THREADS.value)
  return env


def _run(corpus: str, n_workers: int, work_dir: str) -> dict[str, Any]:
  """Trains with `n_workers` processes; returns the chief's numbers and
  every process's."""
  run_dir = os.path.join(work_dir, f"workers-{n_workers}")
  os.makedirs(run_dir)
  if n_workers > 1:
    ports = scale_utils.free_ports(n_workers)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    tf_configs = [{"cluster": cluster, "task": {"type": "worker",
                                                 "index": i}}
                  for i in range(n_workers)]
  else:
    tf_configs = [None]
  outputs = [os.path.join(run_dir, f"worker-{i}.json")
             for i in range(n_workers)]
  children = [
      scale_utils.run_child(
          ["bench.multiworker_bench", f"--child_corpus={corpus}",
           f"--child_workers={n_workers}", f"--child_output={output}",
           f"--preset={_PRESET.value}", f"--batch_size={_BATCH_SIZE.value}",
           f"--unroll_steps={_UNROLL.value}", f"--warmup={_WARMUP.value}",
           f"--steps={_STEPS.value}"],
          env=_env(tf_config), cwd=REPO_ROOT)
      for tf_config, output in zip(tf_configs, outputs)]
  logs = []
  try:
    deadline = time.monotonic() + _TIMEOUT.value
    for child in children:
      log, _ = child.communicate(timeout=max(1, deadline - time.monotonic()))
      logs.append(log)
  except BaseException:
    for child in children:
      child.kill()
      child.communicate()
    raise
  for index, (child, log) in enumerate(zip(children, logs)):
    if child.returncode != 0:
      raise RuntimeError(f"Worker {index} of {n_workers} failed "
                         f"({child.returncode}):\n{log[-5000:]}")
  processes = [scale_utils.read_json(path) for path in outputs]
  chief = processes[0]
  if any(p["tracings_while_timed"] for p in processes):
    print(f"WARNING: {n_workers} worker(s): the step was traced during the "
          "timed steps; raise --warmup.", flush=True)
  return {
      "workers": n_workers,
      "distribution": "multi_worker" if n_workers > 1 else "default",
      "per_worker_batch_size": _BATCH_SIZE.value,
      "global_batch_size": chief["global_batch_size"],
      "seconds_per_step": chief["seconds_per_step"],
      "target_tokens_per_sec_per_direction":
          chief["target_tokens_per_sec_per_direction"],
      "target_tokens_per_sec_per_direction_per_worker":
          chief["target_tokens_per_sec_per_direction"] / n_workers,
      "peak_rss_bytes_per_process": [p["peak_rss_bytes"] for p in processes],
      "processes": processes,
  }


def _table(rows: list[dict[str, Any]]) -> str:
  return scale_utils.markdown_table(
      ["workers", "global batch", "s/step", "tok/s/dir overall",
       "tok/s/dir per worker", "x 1 worker", "peak RSS MiB per process"],
      [[r["workers"], r["global_batch_size"], r["seconds_per_step"],
        r["target_tokens_per_sec_per_direction"],
        r["target_tokens_per_sec_per_direction_per_worker"],
        r["throughput_ratio"],
        ", ".join(f"{b / 2**20:.0f}" for b in r["peak_rss_bytes_per_process"])]
       for r in rows])


def main(argv):
  del argv
  if _CHILD_CORPUS.value:
    _child(_CHILD_CORPUS.value, _CHILD_WORKERS.value, _CHILD_OUTPUT.value)
    return
  from absl import logging  # pylint: disable=g-import-not-at-top
  from elmo_tf import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  # Prepared here, once, so that the workers do not race to prepare it.
  prepared = prepare_lib.prepare_cached(
      _CORPUS.value, None,
      _CACHE_DIR.value or prepare_lib.default_cache_root())
  rows = []
  with tempfile.TemporaryDirectory(prefix="multiworker-") as work_dir:
    for n_workers in [int(n) for n in _WORKERS.value]:
      row = _run(prepared.directory, n_workers, work_dir)
      rows.append(row)
      print(f"{n_workers} worker(s): {row['seconds_per_step']:.3f} s/step, "
            f"{row['target_tokens_per_sec_per_direction']:.0f} tok/s/dir",
            flush=True)
  for row in rows:
    row["throughput_ratio"] = (row["target_tokens_per_sec_per_direction"]
                               / rows[0]["target_tokens_per_sec_per_direction"])
  cpu_count = os.cpu_count()
  note = (f"Both workers run on this one machine ({cpu_count} cores, shared "
          "with anything else running), and every step adds an all-reduce "
          "of every gradient (dense, the softmax's included). With "
          "TensorFlow's default thread pools each process already spans all "
          "cores, so 2 workers compete for the same cores and memory "
          "bandwidth: on 2 cores expect a ratio at or below 1. With "
          "--intra_op_threads=1 a worker uses one core, and the ratio shows "
          "what a second core buys, less the collectives. Neither is how "
          "training scales across machines.")
  result = {
      "benchmark": "multiworker",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": cpu_count,
                  "python": platform.python_version()},
      "command": "python -m bench.multiworker_bench " + " ".join(
          sys.argv[1:]),
      "settings": {"preset": _PRESET.value, "corpus": _CORPUS.value,
                   "batching": "stream",
                   "per_worker_batch_size": _BATCH_SIZE.value,
                   "unroll_steps": _UNROLL.value, "warmup": _WARMUP.value,
                   "steps": _STEPS.value,
                   "intra_op_threads": _INTRA_OP_THREADS.value or None},
      "throughput_ratio_to_first": {
          str(r["workers"]): r["throughput_ratio"] for r in rows},
      "note": note,
      "results": rows,
  }
  scale_utils.write_json(_OUTPUT.value, result)
  print()
  print(_table(rows))
  print()
  print(f"Note: {note}")
  print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
