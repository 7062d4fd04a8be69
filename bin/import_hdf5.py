"""Imports a published ELMo model (options.json + hdf5) as a SavedModel.

  python -m bin.import_hdf5 --options=elmo_options.json \
      --weights=elmo_weights.hdf5 --out=savedmodels/elmo_small
  python -m bin.import_hdf5 --options=options.json --weights=lm_weights.hdf5 \
      --vocab=vocab.txt --softmax=softmax.hdf5 --out=savedmodels/mine
  bazel run //bin:import_hdf5 -- --options=elmo_options.json \
      --weights=elmo_weights.hdf5 --out=savedmodels/elmo_small

Reads bilm-tf's / AllenNLP's format (the original English models, models
trained with bilm-tf, files written by bin/export_hdf5), builds the model
the options describe, at any size, loads the weights and writes the same
SavedModel as bin/export: the `default` and `tokens` signatures (and
`log_probs` with --softmax), the reusable `__call__` for hub.KerasLayer,
and the assets elmo_tf.ElmoEmbedding reads. A dataset missing or of the
wrong shape is an error naming it and the expected and found shapes.

Without --vocab the model is a pure character model. --vocab (a bilm-tf
vocabulary file: `<S>`, `</S>`, `<UNK>` anywhere) is needed by token-input
models (whose `embedding` is in --weights or in --embedding_weights) and by
--softmax; it is stored in the SavedModel's assets. --tokenization is the
`default` signature's; the `tokens` signature takes tokens as they are.
See elmo_tf/hdf5_weights.py for the format.
"""

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from elmo_tf import config as config_lib

_OPTIONS = flags.DEFINE_string(
    "options", None, "The model's options.json (bilm-tf format).")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "The model's weights (hdf5: char_embed, CNN/..., "
    "RNN_0/..., RNN_1/...).")
_VOCAB = flags.DEFINE_string(
    "vocab", None, "Optional vocabulary file (one token per line, bilm-tf "
    "format): for token-input models and --softmax.")
_SOFTMAX = flags.DEFINE_string(
    "softmax", None, "Optional hdf5 with softmax/W and softmax/b (as "
    "bin/export_hdf5 --with_softmax writes): the SavedModel can then score "
    "(log_probs, bin/score). Needs --vocab.")
_EMBEDDING_WEIGHTS = flags.DEFINE_string(
    "embedding_weights", None, "Token-input models: the hdf5 with the "
    "`embedding` dataset (bilm-tf's embedding_weight_file); default "
    "--weights.")
_TOKENIZATION = flags.DEFINE_enum(
    "tokenization", "whitespace", list(config_lib.EXPORTABLE_TOKENIZATIONS),
    "Tokenization of the SavedModel's `default` signature.")
_OUT = flag_utils.OUT  # --out: the SavedModel directory.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  missing = [f"--{flag.name}" for flag in (_OPTIONS, _WEIGHTS, _OUT)
             if not flag.value]
  if missing:
    raise app.UsageError(f"Missing {', '.join(missing)}.")
  resolve = lambda flag: (flag_utils.resolve_path(flag.value) if flag.value
                          else None)
  out_dir = resolve(_OUT)
  from elmo_tf import export as export_lib  # Late: TensorFlow start-up.
  from elmo_tf import hdf5_weights
  try:
    path = hdf5_weights.import_hdf5(
        resolve(_OPTIONS), resolve(_WEIGHTS), out_dir,
        vocab_path=resolve(_VOCAB), tokenization=_TOKENIZATION.value,
        softmax_path=resolve(_SOFTMAX),
        embedding_path=resolve(_EMBEDDING_WEIGHTS))
  except (hdf5_weights.FormatError, export_lib.ExportError,
          FileNotFoundError) as e:
    logging.error("%s", e)
    return 1
  print(f"\nSavedModel:  {path}\n"
        f"Use it with: {flag_utils.hub_usage(path)}")
  return 0


if __name__ == "__main__":
  app.run(main)
