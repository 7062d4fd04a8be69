r"""Downstream evaluation of the shipped ELMo models (see bench/downstream).

Trains the same small classifier on each task with features from a scratch
embedding, biLM layer 0, each biLM layer, and the learned weighted sum
(cached control, hub.KerasLayer, elmo_tf.ElmoEmbedding), over several
seeds; prints a markdown table of test accuracy (mean ± std) and writes
every run to --output. TensorFlow uses --threads threads (default 1).

From the repository root:

  .venv/bin/python -m bench.downstream.run --seeds=3 \
      --output=bench/results/downstream.json
  .venv/bin/python -m bench.downstream.run --tasks=zh_pos \
      --rows=layer0,layer2,mix_keras3 --seeds=1 --output=/tmp/pos.json

The English task downloads the vaderSentiment 3.3.2 sdist with pip into
--cache_dir on first use (or give --movie_reviews=PATH).
"""

import dataclasses
import datetime
import hashlib
import os
import platform
import sys
import time

from absl import app
from absl import flags

from bench import machine

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_BASE = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())

_TASKS = flags.DEFINE_list(
    "tasks", "en_movie_polarity,zh_review_sentiment,zh_pos",
    "Tasks to run (bench/downstream/tasks.py).")
_ROWS = flags.DEFINE_list(
    "rows", "scratch,layer0,layer1,layer2,mix_cached,mix_hub,mix_keras3",
    "Feature sources (bench/downstream/runner.py).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Training seeds 1..N per row.")
_EPOCHS = flags.DEFINE_integer("epochs", 6, "Training epochs per run.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Training batch size.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 3e-3, "Adam's rate.")
_DROPOUT = flags.DEFINE_float("dropout", 0.2, "Dropout on the features.")
_HIDDEN = flags.DEFINE_integer(
    "hidden", 256, "Per-token hidden ReLU layer of the head (0: none, a "
    "linear probe).")
_NORMALIZE = flags.DEFINE_bool(
    "normalize", False, "Batch-normalize the features in the head.")
_MAX_TRAIN = flags.DEFINE_integer("max_train", 2000,
                                  "Training examples per task (subsample).")
_MAX_DEV = flags.DEFINE_integer("max_dev", 500, "Dev examples per task.")
_MAX_TEST = flags.DEFINE_integer("max_test", 1000, "Test examples per task.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64,
                                   "Inputs are cut to this many tokens.")
_DATA_SEED = flags.DEFINE_integer("data_seed", 0,
                                  "Seed of the splits and subsamples.")
_ENGLISH_MODEL = flags.DEFINE_string(
    "english_model", os.path.join(_REPO, "savedmodels", "ptb"),
    "ELMo SavedModel for the English task.")
_CHINESE_MODEL = flags.DEFINE_string(
    "chinese_model", os.path.join(_REPO, "savedmodels", "peoples_daily_chars"),
    "ELMo SavedModel for the Chinese tasks.")
_MOVIE_REVIEWS = flags.DEFINE_string(
    "movie_reviews", None,
    "Local vaderSentiment-3.3.2.tar.gz, hutto_ICWSM_2014.tar.gz or "
    "movieReviewSnippets_GroundTruth.txt (default: download the sdist into "
    "--cache_dir).")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Download cache (default $ELMO_TF_DOWNSTREAM_CACHE or "
    "~/.cache/elmo_tf/downstream).")
_THREADS = flags.DEFINE_integer(
    "threads", 1, "TensorFlow intra- and inter-op threads (0: its default).")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(_REPO, "bench", "results", "downstream.json"),
    "Where to write the results (JSON).")


def _path(value):
  return None if value is None else os.path.join(_BASE,
                                                 os.path.expanduser(value))


def model_record(path: str) -> dict:
  """What identifies a SavedModel: its export info and file digests."""
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(path, "assets", "elmo_tf.json"),
            encoding="utf-8") as f:
    info = json.load(f)
  digest = hashlib.sha256()
  for name in ["saved_model.pb"] + sorted(
      os.path.join("variables", v)
      for v in os.listdir(os.path.join(path, "variables"))):
    with open(os.path.join(path, name), "rb") as f:
      digest.update(f.read())
  mtime = os.path.getmtime(os.path.join(path, "saved_model.pb"))
  return {"path": os.path.relpath(path, _REPO) if path.startswith(_REPO)
          else path,
          "checkpoint": info.get("checkpoint"),
          "tokenization": info.get("tokenization"),
          "n_layers": info.get("n_layers"),
          "projection_dim": info.get("projection_dim"),
          "sha256": digest.hexdigest(),
          "saved_model_mtime": datetime.datetime.fromtimestamp(
              mtime, datetime.timezone.utc).isoformat(timespec="seconds")}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if _THREADS.value:
    tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
    tf.config.threading.set_inter_op_parallelism_threads(_THREADS.value)
  # pylint: disable=g-import-not-at-top
  import keras
  import tensorflow_hub as hub
  import tf_keras
  from bench.downstream import runner
  from bench.downstream import tasks as tasks_lib
  # pylint: enable=g-import-not-at-top

  config = runner.TrainConfig(
      epochs=_EPOCHS.value, batch_size=_BATCH_SIZE.value,
      learning_rate=_LEARNING_RATE.value, dropout=_DROPOUT.value,
      hidden=_HIDDEN.value, normalize=_NORMALIZE.value)
  models = {"en": _path(_ENGLISH_MODEL.value),
            "zh": _path(_CHINESE_MODEL.value)}
  seeds = list(range(1, _SEEDS.value + 1))
  start = time.perf_counter()
  results = {}
  for name in _TASKS.value:
    task_start = time.perf_counter()
    task = tasks_lib.load_task(
        name, max_train=_MAX_TRAIN.value, max_dev=_MAX_DEV.value,
        max_test=_MAX_TEST.value, max_tokens=_MAX_TOKENS.value,
        seed=_DATA_SEED.value, movie_path=_path(_MOVIE_REVIEWS.value),
        cache_dir=_path(_CACHE_DIR.value))
    print(f"== {name}: " + ", ".join(
        f"{split} {size['examples']}" for split, size in
        task.sizes().items()), flush=True)
    results[name] = runner.run_task(
        task, models[task.language], _ROWS.value, seeds, config,
        progress=lambda message: print(message, flush=True))
    results[name]["seconds"] = time.perf_counter() - task_start

  table = runner.markdown_table(results)
  sizes = runner.sizes_table(results)
  report = {
      "benchmark": "downstream",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": " ".join([os.path.basename(sys.executable), "-m",
                           "bench.downstream.run"] + sys.argv[1:]),
      "machine": {"cpu": machine.cpu_model(), "cpu_count": os.cpu_count(),
                  "tensorflow_threads": _THREADS.value or "default",
                  "python": platform.python_version()},
      "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                   "tf_keras": tf_keras.__version__,
                   "tensorflow_hub": hub.__version__},
      "models": {lang: model_record(path) for lang, path in models.items()
                 if any(results[t]["model"] == path for t in results)},
      "train_config": dataclasses.asdict(config),
      "seeds": seeds,
      "data": {"max_train": _MAX_TRAIN.value, "max_dev": _MAX_DEV.value,
               "max_test": _MAX_TEST.value, "max_tokens": _MAX_TOKENS.value,
               "data_seed": _DATA_SEED.value},
      "metric": "test accuracy (per character for zh_pos), mean ± sample "
                "std over seeds, of the epoch with the best dev accuracy",
      "seconds": time.perf_counter() - start,
      "table_markdown": table,
      "sizes_markdown": sizes,
      "tasks": results,
  }
  output = _path(_OUTPUT.value)
  runner.write_json(output, report)
  print()
  print(table)
  print()
  print(sizes)
  print(f"\n{report['seconds'] / 60:.1f} min; wrote {output}")


if __name__ == "__main__":
  app.run(main)
