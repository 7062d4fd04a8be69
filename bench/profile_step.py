r"""Benchmark: where a training step's time goes, by op category.

Builds the real Trainer as bench/train_bench.py does (bench/train_config.py:
PTB, stream batching, the same batch geometry per preset), runs `--warmup`
steps, then records `--steps` steps with the TensorFlow profiler
(`tf.profiler.experimental`, one `Trace` per step) into `--logdir`. The
trace (`plugins/profile/<run>/<host>.xplane.pb`) opens in TensorBoard's
Profile tab (trace viewer, op stats) when the profile plugin is installed:
`pip install tensorboard-plugin-profile` (not in requirements.txt), then
`tensorboard --logdir=<logdir>`.

The same trace is parsed here (the XSpace protobuf that TensorFlow ships as
tensorflow.tsl.profiler.protobuf.xplane_pb2): the self time of every
TensorFlow op run by the step (op events `name:Type` on the executor threads;
time of an op event nested in another is taken out of the outer one), summed
per category of the op's name scope (`classify`):

  character CNN    char_encoder (embedding, convolutions, highway,
                   projection, deduplication), token_embedding/projection
  LSTM recurrence  forward_lstm_*/backward_lstm_* (the while loop or the
                   unrolled steps), lstm_input_dropout
  softmax          softmax, softmax_dropout, and the loss in the
                   bidirectional_lm scope outside the backbone
  optimizer        the optimizer's scope (adam/, adagrad/, sgd/),
                   global_norm/, clip_by_global_norm/, and the skipping of
                   non-finite updates
  input            the time the step waits in IteratorGetNext
  other            the rest: backbone glue (masks, residual, concat/split
                   around the encoder), the trainer's weight check, ...

Gradient ops (`gradient_tape/...`, `gradients/...`) carry their forward
scope and count with it. Ops without a name scope (the tape's AddN sums of
gradient contributions, the non-finite guard's SelectV2) take the category
of the scoped ops next to them in the step's graph (`graph_categories`).
The tf.data pipeline's own ops run on background threads beside the step;
their time is reported apart (`input_pipeline_background_ms_per_step`), not
in the categories.

Shares are of the time attributed to ops (plus the input wait). The wall
time per step is measured too (it includes the profiler's overhead and
executor and Python time between ops); `input_wait_share_of_step` is the
input wait over the wall time. Ops that run at the same time on several
inter-op threads each count in full, so the attributed time can exceed the
wall time. Under XLA (`--set=train.jit_compile=true`) the step runs as
compiled clusters, not TensorFlow ops, and lands mostly in other.

Writes bench/results/profile_<preset>.json and prints a markdown table for
BENCHMARKS.md. From the repository root:

  .venv/bin/python -m bench.profile_step [--preset=cpu_small] [--steps=5]
"""

import collections
import datetime
import functools
import glob
import json
import os
import platform
import re
import sys
import tempfile
import time
import types
from typing import Any, Iterable

from absl import app
from absl import flags
from absl import logging

from bench import machine
from bench import train_config
from bench.trace_times import TraceTimes, load_xspace, read_trace
from elmo_tf import config as config_lib

def define_flags() -> types.SimpleNamespace:
  """Registers the program's flags; returns their holders.

  Called only when the module runs as a program: tests import it in the
  same process as bin/ programs, whose --out (bin/flag_utils.py) would
  clash with this one's.
  """
  return types.SimpleNamespace(
      preset=flags.DEFINE_string(
          "preset", "cpu_small", "Model preset (`name:full`: exact softmax)."),
      overrides=flags.DEFINE_multi_string(
          "set", [], "Override any config value: dotted.path=JSON_VALUE, as "
          "bin/train's --set, e.g. --set=data.batch_size=32."),
      precision=flags.DEFINE_enum(
          "precision", "float32", list(config_lib.MIXED_PRECISIONS),
          "Precision."),
      batching=flags.DEFINE_enum(
          "batching", "stream", list(config_lib.BATCHING_MODES), "Batching."),
      corpus=flags.DEFINE_string("corpus", "ptb", "Corpus (as bin/train's)."),
      warmup=flags.DEFINE_integer("warmup", 3, "Unprofiled steps first."),
      steps=flags.DEFINE_integer("steps", 5, "Profiled steps."),
      logdir=flags.DEFINE_string(
          "logdir", None, "Where the profiler writes its trace (TensorBoard "
          "logdir); default runs/profile/<preset>_<precision>."),
      out=flags.DEFINE_string(
          "out", None,
          "Result JSON; default bench/results/profile_<preset>.json."),
  )


RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "results")
CHARACTER_CNN = "character CNN"
LSTM = "LSTM recurrence"
SOFTMAX = "softmax"
OPTIMIZER = "optimizer"
INPUT = "input"
OTHER = "other"
CATEGORIES = (CHARACTER_CNN, LSTM, SOFTMAX, OPTIMIZER, INPUT, OTHER)

_INPUT_OP_TYPES = {"IteratorGetNext", "IteratorGetNextSync",
                   "MultiDeviceIteratorGetNextFromShard",
                   "IteratorGetNextAsOptional"}
# One name-scope component: the Keras layer or tf.name_scope, with the
# `_N` suffixes that repeated calls and tracing add.
_OPTIMIZER_SCOPE = re.compile(
    r"(adam|adamw|adagrad|sgd|loss_scale_optimizer|global_norm|"
    r"clip_by_global_norm)(_\d+)*", re.IGNORECASE)
_CHAR_CNN_SCOPE = re.compile(r"(char_encoder|token_embedding|"
                             r"token_projection)(_\d+)*")
_LSTM_SCOPE = re.compile(r"((forward|backward)_lstm_\d+|lstm_input_dropout)"
                         r"(_\d+)*")
_SOFTMAX_SCOPE = re.compile(r"softmax(_dropout)?(_\d+)*")
_BILM_SCOPE = re.compile(r"bidirectional_lm(_\d+)*")
_BACKBONE_SCOPE = re.compile(r"backbone(_\d+)*")


def classify(name: str, op_type: str = "") -> str | None:
  """The category of an op from its node name (and type), or None.

  None: no scope of the name tells (an op of the step function's own
  scope, e.g. `AddN_3`, `SelectV2_7`, `Cast_27/ReadVariableOp`);
  `graph_categories` decides those, and the rest counts as other.
  """
  if op_type in _INPUT_OP_TYPES:
    return INPUT
  parts = name.split("/")
  # Optimizer ops start in its scope (also inside its tf.cond branches:
  # `adam/cond/else/_12/adam/cond/...`); their names may hold the weights'
  # paths, so this comes before the model scopes.
  if _OPTIMIZER_SCOPE.fullmatch(parts[0]):
    return OPTIMIZER
  # Forward ops, and gradients with the forward scope inside
  # (`gradient_tape/bidirectional_lm_1/backbone_1/char_encoder_1/...`).
  for pattern, category in ((_CHAR_CNN_SCOPE, CHARACTER_CNN),
                            (_LSTM_SCOPE, LSTM),
                            (_SOFTMAX_SCOPE, SOFTMAX)):
    if any(pattern.fullmatch(part) for part in parts[:-1]):
      return category
  scopes = parts[:-1]
  if any(_BACKBONE_SCOPE.fullmatch(part) for part in scopes):
    return OTHER  # Masks, residual connections, concat/split.
  if any(_BILM_SCOPE.fullmatch(part) for part in scopes):
    return SOFTMAX  # The loss: masked means over the targets.
  return None


def graph_categories(graph, names: Iterable[str]) -> dict[str, str]:
  """Categories of the ops `names` of `graph` that `classify` leaves open.

  An AddN (the tape's sum of gradient contributions) takes the category of
  the ops it sums, else of the ops it feeds; any other op that of the ops it
  feeds (the non-finite guard's SelectV2 feeds the optimizer), else of the
  ops it reads. Each search follows one direction through other open ops
  (never from an input to its other consumers). Names not in the graph or
  with nothing classified around them are left out of the result.
  """
  by_name = {op.name: op for op in graph.get_operations()}
  upstream = lambda op: [t.op for t in op.inputs]
  downstream = lambda op: [c for t in op.outputs for c in t.consumers()]
  result = {}
  for name in names:
    op = by_name.get(name)
    if op is None:
      continue
    directions = ((upstream, downstream) if op.type == "AddN"
                  else (downstream, upstream))
    for neighbours in directions:
      category = _search(op, neighbours)
      if category is not None:
        result[name] = category
        break
  return result


def _search(op, neighbours) -> str | None:
  """Breadth first from `op` along `neighbours`: the first category found."""
  seen, queue = {op.name}, collections.deque([op])
  while queue:
    for neighbour in neighbours(queue.popleft()):
      if neighbour.name in seen:
        continue
      seen.add(neighbour.name)
      category = classify(neighbour.name, neighbour.type)
      if category is not None:
        return category
      queue.append(neighbour)
  return None


def breakdown(times: TraceTimes, steps: int,
              by_graph: dict[str, str] | None = None,
              top: int = 20) -> dict[str, Any]:
  """Per-category ms per step and share, top ops, top ops of `other`."""
  by_graph = by_graph or {}
  per_category = dict.fromkeys(CATEGORIES, 0)
  rows = []
  for op in times.step_ops.values():
    category = (classify(op.name, op.op_type) or by_graph.get(op.name)
                or OTHER)
    per_category[category] += op.picoseconds
    rows.append((op, category))
  per_category[INPUT] += times.input_wait_ps
  total = sum(per_category.values())
  ms = lambda ps: ps / 1e9 / steps

  def op_rows(selected, n):
    selected = sorted(selected, key=lambda r: -r[0].picoseconds)[:n]
    return [{"name": op.name, "type": op.op_type, "category": category,
             "ms_per_step": ms(op.picoseconds),
             "calls_per_step": op.count / steps}
            for op, category in selected]

  # Within each category, the time per op type (MatMul against the
  # elementwise ops says whether a faster matmul, e.g. bfloat16 on AMX, can
  # pay): {category: {op type: {"ms_per_step", "calls_per_step"}}}.
  by_type: dict[str, dict[str, list[int]]] = {}
  for op, category in rows:
    entry = by_type.setdefault(category, {}).setdefault(op.op_type, [0, 0])
    entry[0] += op.picoseconds
    entry[1] += op.count
  op_types = {
      category: {op_type: {"ms_per_step": ms(ps),
                           "calls_per_step": count / steps}
                 for op_type, (ps, count) in sorted(
                     types.items(), key=lambda item: -item[1][0])}
      for category, types in by_type.items()}

  return {
      "attributed_ms_per_step": ms(total),
      "categories": {
          category: {"ms_per_step": ms(ps),
                     "percent": 100.0 * ps / total if total else 0.0}
          for category, ps in per_category.items()},
      "input_wait_ms_per_step": ms(times.input_wait_ps),
      "input_pipeline_background_ms_per_step": ms(times.background_input_ps),
      "top_ops": op_rows(rows, top),
      "other_top_ops": op_rows([r for r in rows if r[1] == OTHER], 10),
      "op_types": op_types,
  }


def markdown_table(result: dict[str, Any]) -> str:
  lines = ["| category | ms/step | share |", "|---|---:|---:|"]
  for category, row in result["categories"].items():
    lines.append(f"| {category} | {row['ms_per_step']:.1f} | "
                 f"{row['percent']:.1f}% |")
  lines.append(f"| **attributed to ops** | "
               f"{result['attributed_ms_per_step']:.1f} | 100% |")
  if "seconds_per_step" in result:
    lines.append(f"| wall time per step (profiled) | "
                 f"{1000 * result['seconds_per_step']:.1f} | |")
  return "\n".join(lines)


def profile_trainer(trainer, steps: int, warmup: int,
                    logdir: str) -> dict[str, Any]:
  """Runs `warmup` steps, profiles `steps` more; returns the breakdown."""
  import tensorflow as tf
  for _ in range(warmup):
    trainer.train_step()
  pattern = os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")
  before = set(glob.glob(pattern))
  tf.profiler.experimental.start(logdir)
  try:
    start = time.perf_counter()
    for _ in range(steps):
      # Step markers: TensorBoard's overview page splits the trace by them.
      with tf.profiler.experimental.Trace(
          "train", step_num=trainer.current_step, _r=1):
        trainer.train_step()
    seconds = time.perf_counter() - start
  finally:
    tf.profiler.experimental.stop()
  written = sorted(set(glob.glob(pattern)) - before, key=os.path.getmtime)
  if not written:
    raise RuntimeError(f"The profiler wrote no trace under {logdir}.")
  trace = written[-1]
  times = read_trace(load_xspace(trace))
  result = breakdown(times, steps, _step_graph_categories(trainer, times))
  result["seconds_per_step"] = seconds / steps
  result["input_wait_share_of_step"] = (
      result["input_wait_ms_per_step"] / 1000 / result["seconds_per_step"])
  result["trace"] = trace
  return result


def _step_graph_categories(trainer, times: TraceTimes) -> dict[str, str]:
  """`graph_categories` of the unscoped ops in the trainer's step graph."""
  unscoped = [op.name for op in times.step_ops.values()
              if classify(op.name, op.op_type) is None]
  try:
    # The step function the trainer traced, for the arguments it is called
    # with (no new tracing). Private attributes: a benchmark may look inside.
    graph = trainer._train_step.get_concrete_function(  # pylint: disable=protected-access
        trainer.iterator, trainer._stream_state).graph  # pylint: disable=protected-access
  except (AttributeError, TypeError, ValueError) as e:
    logging.warning("No step graph (%s): unscoped ops count as other.", e)
    return {}
  return graph_categories(graph, unscoped)


def build_config(preset: str, precision: str, batching: str, corpus: str,
                 overrides: Iterable[str]) -> config_lib.ExperimentConfig:
  """bench/train_config's run, then `--set` style `key=JSON` overrides."""
  config = train_config.experiment_config(preset, precision,
                                          batching=batching, corpus=corpus)
  parsed = {}
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--set expects key=value, got {item!r}.")
    parsed[key.strip()] = value
  return config_lib.apply_overrides(config, parsed)


def config_summary(config: config_lib.ExperimentConfig) -> dict[str, Any]:
  model, data, train = config.model, config.data, config.train
  return {
      "corpus": data.corpus, "batching": data.batching,
      "batch_size": data.batch_size, "unroll_steps": data.unroll_steps,
      "cell_dim": model.lstm.cell_dim,
      "projection_dim": model.lstm.projection_dim,
      "filters": [list(f) for f in model.char_cnn.filters],
      "n_highway": model.char_cnn.n_highway,
      "training_softmax": model.training_softmax,
      "n_negative_samples": model.n_negative_samples,
      "vocab_size": model.vocab_size,
      "optimizer": train.optimizer, "precision": train.mixed_precision,
      "jit_compile": train.jit_compile,
  }


def main(argv, args: types.SimpleNamespace):
  """The program; `args` holds the flags (`define_flags()`)."""
  del argv
  logging.set_verbosity(logging.WARNING)
  from elmo_tf import checkpoints as checkpoints_lib
  from elmo_tf import trainer as trainer_lib
  preset = args.preset.value
  name = preset.replace(":", "_")
  config = build_config(preset, args.precision.value, args.batching.value,
                        args.corpus.value, args.overrides.value)
  base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
  logdir = os.path.join(base, args.logdir.value or os.path.join(
      "runs", "profile", f"{name}_{args.precision.value}"))
  out = (os.path.join(base, args.out.value) if args.out.value else
         os.path.join(RESULTS_DIR, f"profile_{name}.json"))
  with tempfile.TemporaryDirectory() as model_dir:
    with trainer_lib.make_trainer(config, model_dir) as trainer:
      profile = profile_trainer(trainer, args.steps.value, args.warmup.value,
                                logdir)
      summary = config_summary(trainer.config)
  checkpoints_lib.set_precision("float32")
  result = {
      "benchmark": "profile_step",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": os.cpu_count(),
                  "python": platform.python_version()},
      "command": "python -m bench.profile_step " + " ".join(sys.argv[1:]),
      "preset": preset,
      "config": summary,
      "overrides": list(args.overrides.value),
      "warmup_steps": args.warmup.value,
      "profiled_steps": args.steps.value,
      "logdir": logdir,
      **profile,
  }
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(result, f, indent=2)
  print(markdown_table(result))
  print(f"Input wait: {100 * result['input_wait_share_of_step']:.1f}% of the "
        f"step; tf.data background threads: "
        f"{result['input_pipeline_background_ms_per_step']:.1f} ms/step.")
  print("Top ops of 'other': " + ", ".join(
      f"{op['name']} ({op['ms_per_step']:.2f} ms)"
      for op in result["other_top_ops"][:5]))
  print(f"Trace: {profile['trace']} (tensorboard --logdir={logdir}, "
        "Profile tab, with tensorboard-plugin-profile installed)")
  print(f"Wrote {out}")


if __name__ == "__main__":
  app.run(functools.partial(main, args=define_flags()))
