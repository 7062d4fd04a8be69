r"""elmo_tf's side of the bilm-tf side-by-side: training steps at any config.

The repository's copy of the peer harness's `elmo_train_bench.py`
(/work/shared/peer-harness, which is read-only and predates
`trainer.make_trainer`), kept in step with today's Trainer API and writing
the same JSON fields. One config per process, so `peak_rss_mb` is per config.

The config is a preset plus dotted-path overrides (`--set`, the syntax of
bin/train --set), on PTB with stream batching, as bilm-tf trains. Timed
region: `--steps` consecutive `Trainer.train_step()` calls after `--warmup`
untimed ones; each call = next batch from the tf.data iterator + forward,
backward and update + host sync of the metrics, i.e. full iterations like
the harness's bilm_train_bench.py. Tokens: target tokens of one direction
(batch x unroll in stream mode), as bilm_train_bench.py counts them.

From the repository root (run_side_by_side.sh passes the stage configs):

  .venv/bin/python -m bench.peer.elmo_train_bench --preset=tiny \
      --set=data.batch_size=8 --steps=2 --warmup=1 --out=/tmp/r.json
"""

import json
import os
import resource
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags

from bench import machine

_PRESET = flags.DEFINE_string("preset", None, "Model preset (config.PRESETS).")
_SET = flags.DEFINE_multi_string(
    "set", [], "dotted.path=JSON override of the ExperimentConfig "
    "(model./data./train.), repeatable.")
_PRECISION = flags.DEFINE_enum("precision", "float32",
                               ["float32", "mixed_bfloat16"],
                               "train.mixed_precision.")
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps first.")
_KEEP_MODEL_DIR = flags.DEFINE_string(
    "keep_model_dir", None, "Train in this run directory and checkpoint it "
    "at the end (for bin/export, stage d); default: a temporary directory, "
    "deleted.")
_OUT = flags.DEFINE_string("out", None, "Result JSON.")
flags.mark_flags_as_required(["preset", "out"])


def experiment_config(preset: str, overrides: list[str], precision: str):
  """The ExperimentConfig of a run: `preset` on PTB, stream batching, no
  evaluation or periodic checkpoints, then the `--set` overrides."""
  from elmo_tf import config as config_lib
  config = config_lib.ExperimentConfig(
      model=config_lib.preset(preset),
      data=config_lib.DataConfig(corpus="ptb", batching="stream"),
      train=config_lib.TrainConfig(max_steps=10**6, eval_every_steps=0,
                                   checkpoint_every_steps=10**6,
                                   mixed_precision=precision))
  parsed = {}
  for item in overrides:
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--set {item!r}: expected dotted.path=JSON")
    parsed[key] = json.loads(value)
  return config_lib.apply_overrides(config, parsed)


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top

  config = experiment_config(_PRESET.value, _SET.value, _PRECISION.value)
  model_dir = _KEEP_MODEL_DIR.value or tempfile.mkdtemp(
      prefix="elmo_tf_peer_bench_")
  start_build = time.time()
  # make_trainer prepares PTB on first use (cached under
  # prepare.default_cache_root()) and locks model_dir until close().
  trainer = trainer_lib.make_trainer(config, model_dir)
  with trainer:
    build_s = time.time() - start_build
    warmup_s = []
    for _ in range(_WARMUP.value):
      t = time.perf_counter()
      trainer.train_step()
      warmup_s.append(time.perf_counter() - t)
    tokens = 0.0
    step_s, losses = [], []
    start = time.perf_counter()
    for _ in range(_STEPS.value):
      t = time.perf_counter()
      metrics = trainer.train_step()
      step_s.append(time.perf_counter() - t)
      tokens += metrics["tokens"]
      losses.append(metrics["loss"])
    seconds = time.perf_counter() - start
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    config = trainer.config  # vocab_size filled in from the corpus
    nominal = config.data.batch_size * config.data.unroll_steps
    checkpoint = (trainer.manager.save(checkpoint_number=trainer.current_step)
                  if _KEEP_MODEL_DIR.value else None)

  steps = _STEPS.value
  result = {
      "tool": "bench/peer/elmo_train_bench.py (elmo_tf Trainer.train_step)",
      "args": {"preset": _PRESET.value, "set": _SET.value,
               "precision": _PRECISION.value, "steps": steps,
               "warmup": _WARMUP.value,
               "keep_model_dir": _KEEP_MODEL_DIR.value, "out": _OUT.value},
      "config": json.loads(config.to_json()),
      "n_filters": config.model.char_cnn.n_filters,
      "vocab_size": config.model.vocab_size,
      "timed_steps": steps,
      "warmup_step_s": warmup_s,
      "timed_wall_s": seconds,
      "sec_per_step": seconds / steps,
      "step_s_median": float(np.median(step_s)),
      "step_s_min": float(np.min(step_s)),
      "step_s_max": float(np.max(step_s)),
      # Every timed step, to see whether the step time still falls after
      # warm-up (new dynamic shapes of the character CNN).
      "step_s": [float(x) for x in step_s],
      "tokens_counted": tokens,
      "nominal_tokens_per_step": nominal,
      "tokens_per_sec_counted": tokens / seconds,
      "tokens_per_sec_nominal": nominal * steps / seconds,
      "loss_first_last": [losses[0], losses[-1]],
      "trainer_build_s": build_s,
      "peak_rss_mb": peak_rss_mb,
      "tf": tf.__version__,
      "cpu_model": machine.cpu_model(),
      "threads": {k: os.environ.get(k) for k in (
          "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
      "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
  }
  if checkpoint:
    result["checkpoint"] = checkpoint
    result["model_dir"] = model_dir
  else:
    shutil.rmtree(model_dir, ignore_errors=True)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print("RESULT tokens/sec=%.1f (counted %.1f) sec/step=%.3f median=%.3f "
        "peak_rss=%.0fMiB loss first/last=%.3f/%.3f -> %s" % (
            result["tokens_per_sec_nominal"], result["tokens_per_sec_counted"],
            result["sec_per_step"], result["step_s_median"],
            result["peak_rss_mb"], losses[0], losses[-1], _OUT.value),
        flush=True)


if __name__ == "__main__":
  app.run(main)
