"""Held-out perplexity of a trained biLM (full softmax).

  python -m bin.evaluate --model_dir=runs/ptb --split=test
  python -m bin.evaluate --model_dir=runs/ptb --split=valid --batching=stream \
      --output_json=valid.json

Reads the newest intact checkpoint (damaged newer ones are skipped with a
warning naming them). Errors the user can act on (not a run directory, no
readable checkpoint, a corpus that cannot be read) print one line and exit
with status 1; --verbosity=1 adds the traceback.
"""

import json

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from bin import thread_flags
from elmo_tf import config as config_lib

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Directory of a run.",
                                 required=True)
_CORPUS = flags.DEFINE_string(
    "corpus", None, "Corpus to evaluate on (default: the training corpus).")
_SPLIT = flags.DEFINE_enum("split", "test", ["train", "valid", "test"],
                           "Which split.")
_BATCHING = flags.DEFINE_list(
    "batching", list(config_lib.BATCHING_MODES),
    "Batching modes to evaluate: sentences (each sentence from a zero "
    "state), stream (state carried across the text, the usual PTB number).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", None,
                                   "Batch size (default: the training one).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0,
                                    "Stop after this many batches (0: all).")
_CACHE_DIR = flags.DEFINE_string("cache_dir", None,
                                 "Where corpora are prepared.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None,
                                   "Also write the results here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for mode in _BATCHING.value:
    if mode not in config_lib.BATCHING_MODES:
      raise app.UsageError(f"--batching: unknown mode {mode!r}; choose from "
                           f"{list(config_lib.BATCHING_MODES)}.")
  thread_flags.configure()
  from elmo_tf import evaluation  # Late: TensorFlow start-up is slow.
  model_dir = flag_utils.resolve_path(_MODEL_DIR.value)
  corpus = flag_utils.resolve_corpus(_CORPUS.value) if _CORPUS.value else None
  cache = flag_utils.resolve_path(_CACHE_DIR.value) if _CACHE_DIR.value else None
  results = {}
  for mode in _BATCHING.value:
    try:
      results[mode] = evaluation.evaluate(
          model_dir, corpus=corpus, split=_SPLIT.value, batching=mode,
          batch_size=_BATCH_SIZE.value, cache_root=cache,
          max_batches=_MAX_BATCHES.value)
    except _user_errors() as e:
      logging.error("%s", e)
      logging.debug("Traceback of the error above:", exc_info=e)
      return 1
    r = results[mode]
    print(f"{_SPLIT.value} perplexity ({mode}): forward "
          f"{r['forward_perplexity']:.2f}, backward "
          f"{r['backward_perplexity']:.2f}, average "
          f"{r['average_perplexity']:.2f} over {r['forward_tokens']} tokens")
  if _OUTPUT_JSON.value:
    with open(flag_utils.resolve_path(_OUTPUT_JSON.value), "w") as f:
      json.dump(results, f, indent=2, sort_keys=True)


def _user_errors() -> tuple[type[BaseException], ...]:
  """Exceptions reported in one line (as bin/train's `user_errors`)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import checkpoints  # Imports TensorFlow.
  from elmo_tf import corpora
  from elmo_tf import prepared_corpus
  return (checkpoints.TrainingError, corpora.CorpusError,
          prepared_corpus.PreparedCorpusError, OSError,
          tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError,
          tf.errors.NotFoundError)


if __name__ == "__main__":
  app.run(main)
