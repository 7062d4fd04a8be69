"""Flags shared by the programs that run a trained model on text: embed,
score, polysemy (an absl flag name can be defined only once per process, so
these are defined here once and the three programs can be imported
together)."""

import os

from absl import app
from absl import flags

from bin import flag_utils
from elmo_tf import config as config_lib

SAVED_MODEL = flags.DEFINE_string(
    "saved_model", None, "A SavedModel written by bin/export or bin/train "
    "(e.g. savedmodels/ptb).")
MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "A training run (bin/train --model_dir): its latest "
    "checkpoint is used, without exporting it. bin/embed and bin/score take "
    "--saved_model or --model_dir.")
INPUT = flags.DEFINE_string(
    "input", None, "UTF-8 text file, one sentence per line.")
OUTPUT = flags.DEFINE_string("output", None, "Output file.")
OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace --output if it exists.")
ON_BAD_LINE = flags.DEFINE_enum(
    "on_bad_line", "error", list(config_lib.ON_BAD_LINE_CHOICES),
    "A line that is not valid UTF-8: stop with an error naming file:line, or "
    "skip it and count it.")
BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 32, "Sentences per call of the model.")


def model_path() -> str:
  """The --saved_model or --model_dir given (exactly one), resolved against
  the caller's directory."""
  given = [flag for flag in (SAVED_MODEL, MODEL_DIR) if flag.value]
  if len(given) != 1:
    raise app.UsageError("Give exactly one of --saved_model or --model_dir.")
  path = flag_utils.resolve_path(given[0].value)
  if not os.path.isdir(path):
    raise app.UsageError(f"--{given[0].name}={given[0].value}: no such "
                         "directory.")
  return path


def required(*flag_holders) -> None:
  """Raises UsageError naming the missing flags. (Checked in main rather than
  with required=True, whose validators would break flag parsing in a
  process that imports several programs.)"""
  missing = [f"--{flag.name}" for flag in flag_holders if not flag.value]
  if missing:
    raise app.UsageError(f"Missing {', '.join(missing)}.")
