r"""Benchmark: the token encoders (`--token_encoder=chars|tokens|concat|sum`)
compared at the same wall-clock budget (issue 10, "the tutorial's fusion").

For each encoder, on People's Daily by character (`chinese_chars`) with the
recipe of the shipped Chinese model (cpu_small, sentence batching, batch 64,
Adam 0.002 with a cosine decay to 5%, the exact softmax, dropout 0.1), or
with `--recipe=ptb` on PTB with `make train`'s recipe (cpu_fast, stream
batching 64 x 20, Adam 0.003 with a cosine decay to 5%):

1. calibrate: train `--calibration_steps` steps in a scratch directory and
   time the steps after the first `--calibration_warmup` (TensorBoard event
   wall times), on a quiet machine;
2. train for `budget / seconds per step` steps, so that the cosine decay
   ends when the budget does (the budget becomes a step count, so the
   comparison does not move if the machine is busy later);
3. evaluate held-out test perplexity (sentence by sentence and stream);
4. export the SavedModel and run the downstream tasks of its language
   (layer-0 and weighted-sum rows) on it (bench/downstream, the same classifier and seeds
   as `make downstream`).

Every stage is skipped when its output exists, so re-running resumes
(training itself resumes from its last checkpoint). Writes
bench/results/fusion.json and prints the table for BENCHMARKS.md. From the
repository root:

  .venv/bin/python -m bench.fusion [--budget_minutes=20] [--encoders=...]
"""

import datetime
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

from absl import app
from absl import flags

from bench import machine
from elmo_tf import checkpoints as checkpoints_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_ENCODERS = flags.DEFINE_list(
    "encoders", ["chars", "tokens", "concat", "sum"],
    "Token encoders to compare (model.token_encoder).")
_BUDGET_MINUTES = flags.DEFINE_float(
    "budget_minutes", 20.0, "Training budget per encoder, in quiet-machine "
    "minutes (turned into a step count by the calibration).")
_CALIBRATION_STEPS = flags.DEFINE_integer(
    "calibration_steps", 50, "Steps of the calibration run.")
_CALIBRATION_WARMUP = flags.DEFINE_integer(
    "calibration_warmup", 10, "Calibration steps not timed (tracing).")
_RUNS_DIR = flags.DEFINE_string(
    "runs_dir", os.path.join(_REPO, "runs", "fusion"),
    "Where the runs, exports and per-encoder results go.")
# `--recipe`, not `--corpus`: it picks a corpus together with its training
# recipe (RECIPES).
_RECIPE = flags.DEFINE_enum(
    "recipe", "peoples_daily", ["peoples_daily", "ptb"],
    "peoples_daily: by character, the shipped Chinese model's recipe; ptb: "
    "`make train`'s recipe (RECIPES).")
_DOWNSTREAM_TASKS = flags.DEFINE_list(
    "downstream_tasks", None,
    "Downstream tasks (bench/downstream/tasks.py; '' for none). Default: "
    "the corpus's language's tasks (DOWNSTREAM).")
_DOWNSTREAM_ROWS = flags.DEFINE_list(
    "downstream_rows", ["layer0", "mix_cached"],
    "Downstream rows (bench/downstream/runner.py).")
_EXTRA_TRAIN_FLAGS = flags.DEFINE_list(
    "extra_train_flags", [], "More bin/train flags for every encoder, "
    "e.g. --extra_train_flags=--preset=cpu_fast (a comma splits flags).")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(_REPO, "bench", "results", "fusion.json"),
    "Where to write the results (JSON).")

RECIPES = {
    # The shipped Chinese model's recipe (savedmodels/peoples_daily_chars),
    # without its --token_encoder=concat: the comparison varies that.
    "peoples_daily": [
        "--corpus=peoples_daily", "--tokenization=chinese_chars",
        "--preset=cpu_small", "--batching=sentences", "--batch_size=64",
        "--optimizer=adam", "--learning_rate=0.002",
        "--learning_rate_schedule=cosine",
        "--final_learning_rate_fraction=0.05", "--training_softmax=full",
        "--dropout=0.1",
    ],
    # `make train`'s recipe (Makefile TRAIN_ARGS), without its step count.
    "ptb": [
        "--corpus=ptb", "--preset=cpu_fast", "--batching=stream",
        "--batch_size=64", "--unroll_steps=20", "--optimizer=adam",
        "--learning_rate=0.003", "--learning_rate_schedule=cosine",
        "--final_learning_rate_fraction=0.05",
    ],
}
# Downstream tasks per corpus, and bench/downstream/run's flag for the model.
DOWNSTREAM = {
    "peoples_daily": (["zh_review_sentiment", "zh_pos"], "--chinese_model"),
    "ptb": (["en_movie_polarity"], "--english_model"),
}


def _run(args: list[str], log_path: str) -> float:
  """Runs `args` from the repository root, output to `log_path`; returns
  the wall seconds. Raises with the log's tail when it fails."""
  start = time.perf_counter()
  with open(log_path, "a", encoding="utf-8") as log:
    log.write(f"\n$ {shlex.join(args)}\n")
    log.flush()
    status = subprocess.run(args, cwd=_REPO, stdout=log,
                            stderr=subprocess.STDOUT).returncode
  seconds = time.perf_counter() - start
  if status:
    with open(log_path, encoding="utf-8", errors="replace") as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f"{shlex.join(args)} failed ({status}); the end of "
                       f"{log_path}:\n{tail}")
  return seconds


def _event_wall_times(logdir: str, tag: str) -> dict[int, float]:
  """{step: wall time} of scalar `tag` in the event files under `logdir`."""
  from tensorboard.backend.event_processing import event_accumulator
  times = {}
  for path in sorted(glob.glob(os.path.join(logdir, "**", "events.*"),
                               recursive=True)):
    accumulator = event_accumulator.EventAccumulator(
        path, size_guidance={event_accumulator.TENSORS: 0,
                             event_accumulator.SCALARS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    for kind in ("tensors", "scalars"):
      if tag in tags.get(kind, []):
        events = (accumulator.Tensors(tag) if kind == "tensors"
                  else accumulator.Scalars(tag))
        for event in events:
          times[event.step] = event.wall_time
  return times


def _state(path: str) -> dict:
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  return {}


def _save_state(path: str, state: dict) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(state, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def _latest_step(model_dir: str) -> int:
  """The highest checkpoint step in `model_dir` (0: none)."""
  candidates = checkpoints_lib.checkpoint_candidates(model_dir)
  return checkpoints_lib.checkpoint_step(candidates[0]) if candidates else 0


def downstream_summary(downstream: dict) -> dict:
  """{task: {row: {"mean", "std", "runs"}}} in %, from a bench/downstream
  results dict (its rows' `test_accuracy` summary and runs)."""
  summary = {}
  for task, result in downstream["tasks"].items():
    for row, row_result in result["rows"].items():
      accuracy = row_result["test_accuracy"]
      summary.setdefault(task, {})[row] = {
          "mean": 100 * accuracy["mean"], "std": 100 * accuracy["std"],
          "runs": [100 * run["test_accuracy"] for run in row_result["runs"]]}
  return summary


def _paths(encoder: str, root: str):
  directory = os.path.join(root, encoder)
  os.makedirs(directory, exist_ok=True)
  recipe = RECIPES[_RECIPE.value] + [f"--token_encoder={encoder}"] + (
      _EXTRA_TRAIN_FLAGS.value)
  return (directory, os.path.join(directory, "state.json"),
          os.path.join(directory, "log.txt"),
          [sys.executable, "-m", "bin.train"] + recipe)


def calibrate(encoder: str, root: str) -> None:
  """Times the encoder's training step (seconds_per_step in state.json)."""
  directory, state_path, log_path, train = _paths(encoder, root)
  state = _state(state_path)
  if "seconds_per_step" not in state:
    calibration_dir = os.path.join(directory, "calibration")
    shutil.rmtree(calibration_dir, ignore_errors=True)
    steps, warmup = _CALIBRATION_STEPS.value, _CALIBRATION_WARMUP.value
    _run(train + [f"--model_dir={calibration_dir}", f"--max_steps={steps}",
                  "--log_every_steps=1", f"--checkpoint_every_steps={10**9}",
                  "--eval_every_steps=0", "--set=train.eval_max_batches=1",
                  "--noexport"], log_path)
    times = _event_wall_times(calibration_dir, "loss")
    if warmup not in times or steps not in times:
      raise RuntimeError(f"calibration of {encoder}: no loss events at steps "
                         f"{warmup} and {steps} under {calibration_dir}")
    state["seconds_per_step"] = (times[steps] - times[warmup]) / (
        steps - warmup)
    state["calibration"] = {"steps": steps, "warmup": warmup,
                            "cpu": machine.cpu_model()}
    shutil.rmtree(calibration_dir, ignore_errors=True)
    _save_state(state_path, state)


def run_encoder(encoder: str, root: str) -> dict:
  """The stages after calibration; returns the state (also in state.json)."""
  directory, state_path, log_path, train = _paths(encoder, root)
  state = _state(state_path)

  budget_seconds = _BUDGET_MINUTES.value * 60.0
  max_steps = state.setdefault(
      "max_steps", int(budget_seconds // state["seconds_per_step"]))
  model_dir = os.path.join(directory, "run")
  train_command = train + [
      f"--model_dir={model_dir}", f"--max_steps={max_steps}",
      "--checkpoint_every_steps=100", "--eval_every_steps=0",
      "--log_every_steps=25", "--noexport"]
  state["train_command"] = shlex.join(
      [".venv/bin/python"] + train_command[1:]).replace(_REPO + "/", "")
  if _latest_step(model_dir) < max_steps:
    seconds = _run(train_command, log_path)
    state.setdefault("train_attempts", []).append(
        {"seconds": seconds, "ended": datetime.datetime.now(
            datetime.timezone.utc).isoformat(timespec="seconds")})
    state["train_wall_seconds"] = sum(
        a["seconds"] for a in state["train_attempts"])
    _save_state(state_path, state)

  perplexity_path = os.path.join(directory, "test_perplexity.json")
  if not os.path.exists(perplexity_path):
    _run([sys.executable, "-m", "bin.evaluate", f"--model_dir={model_dir}",
          "--split=test", f"--output_json={perplexity_path}"], log_path)
  with open(perplexity_path, encoding="utf-8") as f:
    perplexity = json.load(f)
  state["test_perplexity"] = {
      batching: {key: perplexity[batching][key] for key in (
          "forward_perplexity", "backward_perplexity", "average_perplexity",
          "forward_tokens")}
      for batching in perplexity}

  export_dir = os.path.join(directory, "saved_model")
  if not os.path.exists(os.path.join(export_dir, "saved_model.pb")):
    _run([sys.executable, "-m", "bin.export", f"--model_dir={model_dir}",
          f"--out={export_dir}"], log_path)

  default_tasks, model_flag = DOWNSTREAM[_RECIPE.value]
  tasks = [t for t in (default_tasks if _DOWNSTREAM_TASKS.value is None
                       else _DOWNSTREAM_TASKS.value) if t]
  downstream_path = os.path.join(directory, "downstream.json")
  if tasks and not os.path.exists(downstream_path):
    _run([sys.executable, "-m", "bench.downstream.run",
          f"--tasks={','.join(tasks)}",
          f"--rows={','.join(_DOWNSTREAM_ROWS.value)}",
          f"{model_flag}={export_dir}", f"--output={downstream_path}"],
         log_path)
  if tasks:
    with open(downstream_path, encoding="utf-8") as f:
      state["downstream"] = downstream_summary(json.load(f))
  _save_state(state_path, state)
  return state


def table_markdown(results: dict, budget_minutes: float) -> str:
  tasks = sorted({t for r in results.values()
                  for t in r.get("downstream", {})})
  header = ["encoder", "steps in the budget", "s/step",
            "test ppl, sentences (fwd / bwd)", "test ppl, stream (fwd / bwd)"]
  for task in tasks:
    header += [f"{task} layer 0", f"{task} weighted sum"]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for encoder, state in results.items():
    ppl = state["test_perplexity"]
    cells = [
        f"`{encoder}`", f"{state['max_steps']:,}",
        f"{state['seconds_per_step']:.2f}",
        f"{ppl['sentences']['forward_perplexity']:.1f} / "
        f"{ppl['sentences']['backward_perplexity']:.1f}",
        f"{ppl['stream']['forward_perplexity']:.1f} / "
        f"{ppl['stream']['backward_perplexity']:.1f}"]
    for task in tasks:
      rows = state.get("downstream", {}).get(task, {})
      for row in ("layer0", "mix_cached"):
        cell = rows.get(row)
        cells.append(f"{cell['mean']:.1f} ± {cell['std']:.1f}" if cell
                     else "-")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + (
      f"\n\nBudget: {budget_minutes:g} quiet-machine minutes of training "
      "per encoder, as steps at each encoder's calibrated s/step.")


def main(argv):
  del argv
  root = _RUNS_DIR.value
  os.makedirs(root, exist_ok=True)
  started = time.perf_counter()
  results = {}
  # All calibrations first, back to back, so that all run on the same quiet
  # machine.
  for encoder in _ENCODERS.value:
    print(f"== calibrating {encoder}", flush=True)
    calibrate(encoder, root)
  for encoder in _ENCODERS.value:
    print(f"== {encoder}", flush=True)
    results[encoder] = run_encoder(encoder, root)
    print(json.dumps({k: results[encoder][k] for k in (
        "seconds_per_step", "max_steps", "test_perplexity")}, indent=1),
          flush=True)
  table = table_markdown(results, _BUDGET_MINUTES.value)
  report = {
      "benchmark": "fusion",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": shlex.join(["python", "-m", "bench.fusion"] + sys.argv[1:]),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": os.cpu_count()},
      "budget_minutes": _BUDGET_MINUTES.value,
      "corpus": _RECIPE.value,
      "recipe": RECIPES[_RECIPE.value] + _EXTRA_TRAIN_FLAGS.value,
      "encoders": results,
      "seconds": time.perf_counter() - started,
      "table_markdown": table,
  }
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
  print(table)


if __name__ == "__main__":
  app.run(main)
