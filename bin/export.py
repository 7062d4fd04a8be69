"""Exports a trained biLM as a SavedModel (TF-Hub ELMo signatures).

  python -m bin.export --model_dir=runs/ptb_cpu_small
  bazel run //bin:export -- --model_dir=runs/ptb \
      --out=savedmodels/ptb --trainable_bilm

Reads the latest checkpoint, config.json and vocab.txt of --model_dir and
writes a self-contained SavedModel (default: savedmodels/<name of
model_dir>/); see elmo_tf/export.py for its signatures and assets. bin/train
already exports to <model_dir>/saved_model at the end of training; use this
program for other options or another location.

Reads the newest intact checkpoint (damaged newer ones are skipped with a
warning naming them). Errors the user can act on (not a run directory, no
readable checkpoint, an output directory that cannot be written) print one
line and exit with status 1; --verbosity=1 adds the traceback.

--out is defined once in bin/flag_utils.py, shared with bin/prepare_corpus
(--output_dir is an alias); the tokenization flag is --export_tokenization,
as bin/prepare_corpus has its own --tokenization.
"""

import os

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from elmo_tf import config as config_lib

_DEFAULTS = config_lib.ExportConfig()

_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "A training run directory (config.json, vocab.txt, "
    "ckpt-N) written by bin/train.", required=True)
_OUTPUT_DIR = flag_utils.OUT  # --out (shared with bin/prepare_corpus).
flags.DEFINE_alias("output_dir", "out")
_TRAINABLE_BILM = flags.DEFINE_bool(
    "trainable_bilm", _DEFAULTS.trainable_biLM, "List every biLM weight in "
    "the SavedModel's trainable_variables (full fine-tuning with "
    "hub.KerasLayer); by default only the scalar-mix weights s_j and gamma "
    "are trainable.")
_L2_COEF = flags.DEFINE_float(
    "l2_coef", _DEFAULTS.l2_coef, "L2 coefficient on the scalar-mix weights "
    "s_j, returned by regularization_losses.")
_DO_LAYER_NORM = flags.DEFINE_bool(
    "do_layer_norm", _DEFAULTS.do_layer_norm, "Normalize every biLM layer "
    "before the weighted sum.")
_EXPORT_TOKENIZATION = flags.DEFINE_enum(
    "export_tokenization", _DEFAULTS.tokenization,
    list(config_lib.EXPORTABLE_TOKENIZATIONS),
    "Tokenization of the `default` signature (default: the model's own). "
    "Required for models trained with jieba, which cannot run in a graph: "
    "use segmented and give it text segmented beforehand.")


def default_out_dir(model_dir: str) -> str:
  """savedmodels/<basename of model_dir>, relative to the caller's directory."""
  name = os.path.basename(os.path.normpath(model_dir))
  return flag_utils.resolve_path(os.path.join("savedmodels", name))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  model_dir = flag_utils.resolve_path(_MODEL_DIR.value)
  out_dir = (flag_utils.resolve_path(_OUTPUT_DIR.value) if _OUTPUT_DIR.value
             else default_out_dir(model_dir))
  options = config_lib.ExportConfig(
      trainable_biLM=_TRAINABLE_BILM.value, l2_coef=_L2_COEF.value,
      do_layer_norm=_DO_LAYER_NORM.value,
      tokenization=_EXPORT_TOKENIZATION.value)
  from elmo_tf import export as export_lib  # Late: TensorFlow start-up is slow.
  import tensorflow as tf  # Loaded by export_lib already.
  from elmo_tf import checkpoints  # Imported by export_lib already.
  try:
    path = export_lib.export_saved_model(model_dir, out_dir, options)
  except export_lib.ExportError as e:
    raise app.UsageError(str(e)) from None
  except (checkpoints.TrainingError, OSError, tf.errors.PermissionDeniedError,
          tf.errors.FailedPreconditionError, tf.errors.NotFoundError) as e:
    logging.error("%s", e)
    logging.debug("Traceback of the error above:", exc_info=e)
    return 1
  logging.info("SavedModel written to %s.", path)
  print(f"\nSavedModel:  {path}\n"
        f"Use it with: {flag_utils.hub_usage(path)}")


if __name__ == "__main__":
  app.run(main)
