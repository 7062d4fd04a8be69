r"""Benchmark (issue 12): sampled-softmax training step time vs vocabulary size.

For each vocabulary size (default 10k, 100k, 800k words, the 3 specials
included) it writes a synthetic corpus of words `w0`, `w1`, ... with Zipf
frequencies (`bench/scale_utils.py`: exponent `--zipf_exponent`, about
`--tokens` tokens, every word at least once), prepares it with elmo_tf's own
path (`prepare.prepare_cached`, whitespace tokenization, so the vocabulary
really has that many entries), then, in a fresh process per size (so that the
peak RSS is that size's), builds the real Trainer (`trainer.make_trainer`,
stream batching `--batch_size` x `--unroll_steps`, `--preset`, sampled
softmax with `--n_negative_samples` negatives, the trainer's optimizer),
runs `--warmup` untimed steps and times `--steps` steps.

Reported per size: seconds per step, target tokens/s per direction, the
ratio of the step time to the smallest size's, the softmax's parameters and
bytes (and its optimizer slots'), the peak RSS (VmHWM, which unlike ru_maxrss
starts afresh in each process; ru_maxrss is recorded too) after importing
TensorFlow, after building the trainer and at the end, the preparation time
(itself in a third process) and the prepared corpus's size. And, from the traced training step, every op whose output is as large
as the whole softmax kernel (vocab_size + 1, dim): work done on the full
matrix every step, whatever the number of negatives (issue 12's goal is an
800k step at most 1.3x the 10k step).

Writes bench/results/softmax_scale.json and prints a markdown table. From
the repository root:

  .venv/bin/python -m bench.softmax_scale_bench
  # Toy smoke run (seconds):
  .venv/bin/python -m bench.softmax_scale_bench --vocab_sizes=1000,5000 \
      --preset=tiny --n_negative_samples=64 --tokens=50000 --warmup=1 \
      --steps=3 --output=/tmp/softmax_scale.json
"""

import collections
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Any

from absl import app
from absl import flags

from bench import machine
from bench import scale_utils

_VOCAB_SIZES = flags.DEFINE_list(
    "vocab_sizes", ["10000", "100000", "800000"],
    "Vocabulary sizes (entries of vocab.txt, the 3 specials included); the "
    "first is the reference of the step-time ratio.")
_PRESET = flags.DEFINE_string("preset", "cpu_small", "Model preset.")
_N_NEGATIVE = flags.DEFINE_integer("n_negative_samples", 8192,
                                   "Sampled softmax negatives per step.")
_OPTIMIZER = flags.DEFINE_string(
    "optimizer", "", "train.optimizer (adagrad, adam, sgd); empty: the "
    "TrainConfig default.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Stream batch size.")
_UNROLL = flags.DEFINE_integer("unroll_steps", 20, "Stream window length.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per size.")
_TOKENS = flags.DEFINE_integer(
    "tokens", 3_000_000, "Tokens of the synthetic training text (a little "
    "more at large vocabularies: every word occurs at least once).")
_ZIPF_EXPONENT = flags.DEFINE_float("zipf_exponent", 1.05,
                                    "Zipf exponent of the word frequencies.")
_SEED = flags.DEFINE_integer("seed", 12, "Seed of the synthetic corpus.")
_WORK_DIR = flags.DEFINE_string(
    "work_dir", "", "Where corpora and prepared corpora go (kept, and reused "
    "when the same settings come again); empty: a temporary directory, "
    "removed at the end.")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results", "softmax_scale.json"),
    "The JSON report.")
_TIMEOUT = flags.DEFINE_integer("timeout", 7200,
                                "Seconds allowed to each size's process.")
# Internal: the per-size processes (one prepares, one times).
_CHILD_PREPARE = flags.DEFINE_integer(
    "child_prepare", 0, "(internal) Vocabulary size to write and prepare "
    "into --work_dir.")
_CHILD_CORPUS = flags.DEFINE_string("child_corpus", "",
                                    "(internal) Prepared corpus to time.")
_CHILD_OUTPUT = flags.DEFINE_string("child_output", "",
                                    "(internal) Where the child writes.")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIALS = 3  # <S>, </S>, <UNK> (elmo_tf.vocab.SPECIAL_TOKENS).


# === The per-size process ===

def _full_matrix_ops(graph, num_classes: int, dim: int) -> dict[str, Any]:
  """Ops of `graph` (and its nested functions) with an output of at least
  num_classes x dim elements whose first dimension is num_classes: the
  whole softmax kernel (or a slot of it) read or written in every step.

  A ReadVariableOp of the kernel is a full copy once the variable has had a
  sparse update (TensorFlow's copy-on-read mode after ResourceScatter*).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = []
  visited = set()

  def visit(g, prefix):
    for op in g.get_operations():
      if op.type == "Placeholder":
        continue  # A nested function's input: no work of its own.
      for output in op.outputs:
        shape = output.shape
        if (shape.rank and shape[0] == num_classes
            and shape.num_elements() is not None
            and shape.num_elements() >= num_classes * dim):
          found.append({"op": prefix + op.name, "type": op.type,
                        "shape": shape.as_list(),
                        "dtype": output.dtype.name})
          break
    for function in getattr(g, "_functions", {}).values():
      inner = getattr(function, "graph", None)
      name = function.name
      name = name.decode() if isinstance(name, bytes) else name
      if isinstance(inner, tf.Graph) and name not in visited:
        visited.add(name)
        visit(inner, prefix + name + "/")

  visit(graph, "")
  types = collections.Counter(item["type"] for item in found)
  return {"count": len(found), "by_type": dict(sorted(types.items())),
          "ops": found}


def _child(corpus: str, output: str) -> None:
  baseline_rss = scale_utils.peak_rss_bytes()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from elmo_tf import config as config_lib  # pylint: disable=g-import-not-at-top
  from elmo_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  imported_rss = scale_utils.peak_rss_bytes()
  model = config_lib.preset(_PRESET.value).replace(
      training_softmax="sampled", n_negative_samples=_N_NEGATIVE.value)
  train = config_lib.TrainConfig(max_steps=10**6, eval_every_steps=0)
  if _OPTIMIZER.value:
    train = train.replace(optimizer=_OPTIMIZER.value)
  config = config_lib.ExperimentConfig(
      model=model,
      data=config_lib.DataConfig(corpus=corpus, batching="stream",
                                 batch_size=_BATCH_SIZE.value,
                                 unroll_steps=_UNROLL.value),
      train=train)
  with tempfile.TemporaryDirectory() as model_dir:
    with trainer_lib.make_trainer(config, model_dir,
                                  cache_root=os.path.dirname(corpus)) as trainer:
      built_rss = scale_utils.peak_rss_bytes()
      vocab_size = trainer.config.model.vocab_size
      softmax = trainer.model.softmax
      kernel_shape = list(softmax.kernel.shape)
      softmax_params = int(softmax.kernel.shape.num_elements()
                           + softmax.bias.shape.num_elements())
      # Optimizer slots of the softmax: same shape as kernel / bias.
      slot_params = sum(
          int(v.shape.num_elements()) for v in trainer.optimizer.variables
          if tuple(v.shape) in (tuple(softmax.kernel.shape),
                                tuple(softmax.bias.shape)))
      total_params = sum(int(v.shape.num_elements())
                         for v in trainer.model.trainable_variables)
      start = time.perf_counter()
      trainer.train_step()  # Traces and compiles.
      first_step = time.perf_counter() - start
      for _ in range(max(_WARMUP.value - 1, 0)):
        trainer.train_step()
      traced_before = trainer._train_step.experimental_get_tracing_count()  # pylint: disable=protected-access
      tokens = 0.0
      start = time.perf_counter()
      for _ in range(_STEPS.value):
        tokens += trainer.train_step()["tokens"]
      seconds = time.perf_counter() - start
      end_rss = scale_utils.peak_rss_bytes()
      # Not 0: the timed steps include tracing (raise --warmup).
      tracings_while_timed = (
          trainer._train_step.experimental_get_tracing_count()  # pylint: disable=protected-access
          - traced_before)
      concrete = trainer._train_step.get_concrete_function(  # pylint: disable=protected-access
          trainer.iterator, trainer._stream_state)  # pylint: disable=protected-access
      full_ops = _full_matrix_ops(concrete.graph, kernel_shape[0],
                                  kernel_shape[1])
      optimizer = trainer.config.train.optimizer
  del tf
  scale_utils.write_json(output, {
      "vocab_size": vocab_size,
      "optimizer": optimizer,
      "softmax_kernel_shape": kernel_shape,
      "softmax_parameters": softmax_params,
      "softmax_bytes": 4 * softmax_params,
      "softmax_optimizer_slot_parameters": slot_params,
      "softmax_optimizer_slot_bytes": 4 * slot_params,
      "trainable_parameters": total_params,
      "first_step_seconds": first_step,
      "steps": _STEPS.value,
      "seconds_per_step": seconds / _STEPS.value,
      "tracings_while_timed": tracings_while_timed,
      "target_tokens_per_sec_per_direction": tokens / seconds,
      "peak_rss_bytes_before_tensorflow": baseline_rss,
      "peak_rss_bytes_after_import": imported_rss,
      "peak_rss_bytes_after_build": built_rss,
      "peak_rss_bytes": end_rss,
      "ru_maxrss_bytes": scale_utils.ru_maxrss_bytes(),
      "full_softmax_matrix_ops_per_step": full_ops,
  })


# === The parent ===

def _prepare(vocab_size: int, work_dir: str, output: str) -> None:
  """Writes and prepares the corpus of `vocab_size`; writes where and how."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)
  from elmo_tf import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  name = (f"zipf-v{vocab_size}-t{_TOKENS.value}-s{_ZIPF_EXPONENT.value:g}"
          f"-seed{_SEED.value}")
  text_dir = os.path.join(work_dir, "text", name)
  start = time.perf_counter()
  corpus = scale_utils.write_zipf_corpus(
      text_dir, vocab_size - SPECIALS, _TOKENS.value, _ZIPF_EXPONENT.value,
      _SEED.value)
  written = time.perf_counter() - start
  # lines_per_shard as bin/prepare_corpus's default; one cache per size.
  start = time.perf_counter()
  prepared = prepare_lib.prepare_cached(
      corpus["spec"], "whitespace", os.path.join(work_dir, "prepared", name))
  prepare_seconds = time.perf_counter() - start
  if prepared.vocab.size != vocab_size:
    raise RuntimeError(f"Prepared vocabulary has {prepared.vocab.size} "
                       f"entries, expected {vocab_size}.")
  scale_utils.write_json(output, {
      "directory": prepared.directory,
      "train_tokens": corpus["train_tokens"],
      "train_sentences": corpus["train_sentences"],
      "text_bytes": scale_utils.directory_bytes(text_dir),
      "prepared_bytes": scale_utils.directory_bytes(prepared.directory),
      "write_seconds": written,
      "prepare_seconds": prepare_seconds,
      "peak_rss_bytes": scale_utils.peak_rss_bytes(),
  })


def _child_flags() -> list[str]:
  return [f"--preset={_PRESET.value}", f"--tokens={_TOKENS.value}",
          f"--zipf_exponent={_ZIPF_EXPONENT.value}", f"--seed={_SEED.value}",
          f"--n_negative_samples={_N_NEGATIVE.value}",
          f"--optimizer={_OPTIMIZER.value}",
          f"--batch_size={_BATCH_SIZE.value}",
          f"--unroll_steps={_UNROLL.value}",
          f"--warmup={_WARMUP.value}", f"--steps={_STEPS.value}"]


def _in_child(what: str, output: str, *args: str) -> dict[str, Any]:
  """Runs this program with `args` in a new process; returns its JSON.

  The parent never imports TensorFlow: Linux carries ru_maxrss over fork
  and exec, so a heavy parent would raise every child's figure.
  """
  child = scale_utils.run_child(
      ["bench.softmax_scale_bench", f"--child_output={output}", *args,
       *_child_flags()], cwd=REPO_ROOT)
  try:
    log, _ = child.communicate(timeout=_TIMEOUT.value)
  except BaseException:
    child.kill()
    child.communicate()
    raise
  if child.returncode != 0:
    raise RuntimeError(f"The process {what} failed ({child.returncode}):\n"
                       f"{log[-5000:]}")
  return scale_utils.read_json(output)


def _table(rows: list[dict[str, Any]]) -> str:
  mib = 1024.0 ** 2
  return scale_utils.markdown_table(
      ["vocab", "s/step", "x smallest", "tok/s/dir", "softmax params",
       "softmax + slots MiB", "full-matrix ops/step", "peak RSS MiB",
       "RSS after import MiB", "prepared MiB"],
      [[r["vocab_size"], r["seconds_per_step"], r["step_time_ratio"],
        r["target_tokens_per_sec_per_direction"], r["softmax_parameters"],
        (r["softmax_bytes"] + r["softmax_optimizer_slot_bytes"]) / mib,
        r["full_softmax_matrix_ops_per_step"]["count"],
        r["peak_rss_bytes"] / mib, r["peak_rss_bytes_after_import"] / mib,
        r["corpus"]["prepared_bytes"] / mib] for r in rows])


def main(argv):
  del argv
  if _CHILD_PREPARE.value:
    _prepare(_CHILD_PREPARE.value, _WORK_DIR.value, _CHILD_OUTPUT.value)
    return
  if _CHILD_CORPUS.value:
    _child(_CHILD_CORPUS.value, _CHILD_OUTPUT.value)
    return
  sizes = [int(v) for v in _VOCAB_SIZES.value]
  if min(sizes) <= _N_NEGATIVE.value:
    raise app.UsageError(f"Every vocabulary size must exceed "
                         f"--n_negative_samples={_N_NEGATIVE.value}.")
  work_dir = _WORK_DIR.value or tempfile.mkdtemp(prefix="softmax_scale-")
  rows = []
  try:
    for vocab_size in sizes:
      corpus = _in_child(
          f"preparing vocabulary {vocab_size}",
          os.path.join(work_dir, f"corpus-{vocab_size}.json"),
          f"--child_prepare={vocab_size}", f"--work_dir={work_dir}")
      print(f"vocab {vocab_size}: {corpus['train_tokens']:,} train tokens, "
            f"prepared in {corpus['prepare_seconds']:.1f} s "
            f"({corpus['prepared_bytes'] / 2**20:.1f} MiB)", flush=True)
      row = _in_child(f"timing vocabulary {vocab_size}",
                      os.path.join(work_dir, f"row-{vocab_size}.json"),
                      f"--child_corpus={corpus['directory']}")
      row["corpus"] = corpus
      rows.append(row)
      print(f"vocab {vocab_size}: {row['seconds_per_step']:.3f} s/step, "
            f"{row['target_tokens_per_sec_per_direction']:.0f} tok/s/dir, "
            f"peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
  finally:
    if not _WORK_DIR.value:
      shutil.rmtree(work_dir, ignore_errors=True)
  for row in rows:
    row["step_time_ratio"] = row["seconds_per_step"] / rows[0][
        "seconds_per_step"]
  largest = rows[-1]
  goal = {
      "statement": "largest vocabulary's step time at most 1.3x the "
                   "smallest's",
      "ratio": largest["step_time_ratio"],
      "met": largest["step_time_ratio"] <= 1.3,
  }
  result = {
      "benchmark": "softmax_scale",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": os.cpu_count(),
                  "python": platform.python_version()},
      "command": "python -m bench.softmax_scale_bench " + " ".join(
          sys.argv[1:]),
      "settings": {"preset": _PRESET.value,
                   "n_negative_samples": _N_NEGATIVE.value,
                   "batching": "stream", "batch_size": _BATCH_SIZE.value,
                   "unroll_steps": _UNROLL.value, "warmup": _WARMUP.value,
                   "steps": _STEPS.value, "tokens": _TOKENS.value,
                   "zipf_exponent": _ZIPF_EXPONENT.value,
                   "seed": _SEED.value},
      "goal": goal,
      "results": rows,
  }
  scale_utils.write_json(_OUTPUT.value, result)
  print()
  print(_table(rows))
  print()
  print(f"Goal ({goal['statement']}): ratio {goal['ratio']:.2f}, "
        f"{'met' if goal['met'] else 'NOT met'}.")
  print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
