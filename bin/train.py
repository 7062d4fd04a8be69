"""Pretrains an ELMo biLM.

  python -m bin.train --corpus=ptb --preset=cpu_small --model_dir=runs/ptb
  bazel run //bin:train -- --corpus=ptb --preset=tiny --max_steps=100 \
      --model_dir=runs/tiny

Fine-tuning a trained model on new text (the paper's domain transfer;
bilm-tf's restart.py) starts from its weights, config and vocabulary:

  python -m bin.train --init_from=savedmodels/ptb --corpus=reviews.txt \
      --model_dir=runs/ptb_reviews --max_steps=500 --learning_rate=0.0005

Re-running the same command resumes from the latest checkpoint in
--model_dir. Every config value can be overridden with --set, e.g.
--set=model.lstm.cell_dim=512 --set=train.log_every_steps=10.

At the end, the trained model is exported as a SavedModel (as bin/export
does) to <model_dir>/saved_model, replacing the previous export when a
resumed run finishes again; --export_dir changes the location and
--noexport skips it.

SIGTERM or Ctrl-C (SIGINT) stops training after the current step with a
checkpoint (exit status 143 or 130); re-running resumes at that step. One
trainer at a time may use a --model_dir. Errors the user can act on (another
trainer holds the directory, a config that does not match the run being
resumed, divergence, a corpus or directory that cannot be read or written)
print one line and exit with status 1; --verbosity=1 adds the traceback.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from bin import flag_utils
from elmo_tf import config as config_lib
from elmo_tf import runtime

_CORPUS = flags.DEFINE_string(
    "corpus", "ptb", "Built-in corpus name (ptb, peoples_daily), "
    "comma-separated files/globs of one-sentence-per-line text, or a directory "
    "written by bin/prepare_corpus.")
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", "runs/ptb_cpu_small",
    "Where checkpoints, config.json, vocab.txt and TensorBoard logs go.")
_PRESET = flags.DEFINE_enum(
    "preset", config_lib.DEFAULT_PRESET, sorted(config_lib.PRESETS),
    "Model size preset.")
_CONFIG = flags.DEFINE_string(
    "config", None, "A config.json (ExperimentConfig) to start from instead "
    "of the preset.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Where built-in and glob corpora are prepared "
    "(default $ELMO_TF_CACHE or ~/.cache/elmo_tf/corpora).")
_EXPORT = flags.DEFINE_bool(
    "export", True, "Export the trained model as a SavedModel at the end (as "
    "bin/export does), replacing an earlier export. Not with "
    "--distribution=multi_worker: run bin/export on the chief's --model_dir "
    "after training.")
_EXPORT_DIR = flags.DEFINE_string(
    "export_dir", "", "Where --export writes the SavedModel; default "
    "<model_dir>/saved_model.")
_EXPORT_TRAINABLE_BILM = flags.DEFINE_bool(
    "export_trainable_bilm", config_lib.ExportConfig().trainable_biLM,
    "List every biLM weight in the exported SavedModel's trainable_variables "
    "(full fine-tuning with hub.KerasLayer); bin/export has the other export "
    "options.")
_INIT_FROM = flags.DEFINE_string(
    "init_from", None, "Fine-tune: start from the weights of this trained "
    "model (a SavedModel from bin/export or bin/train, or a --model_dir), "
    "with its config (architecture and recipe; flags override the recipe) "
    "and its vocabulary (--vocab_file defaults to it; new words become "
    "<UNK> targets). The optimizer starts afresh. Read only when "
    "--model_dir has no checkpoint yet.")
_VOCAB_FILE = flag_utils.VOCAB_FILE  # --vocab_file: a fixed vocabulary.
_SET = flags.DEFINE_multi_string(
    "set", [], "Override any config value: dotted.path=JSON_VALUE, e.g. "
    "model.lstm.cell_dim=512 or model.char_cnn.filters=[[1,32],[2,64]].")

# Shortcuts for the most used config values: flag name -> (dotted config
# path, absl DEFINE function, choices or None, help). Their defaults are NOT
# restated here: an unset shortcut leaves the value of the preset (or
# --config, or the resumed run's config.json), whose defaults live in
# elmo_tf/config.py.
_SHORTCUTS = {
    "tokenization": ("data.tokenization", flags.DEFINE_enum,
                     config_lib.TOKENIZATIONS,
                     "How lines are split into tokens; when unset, the "
                     "corpus decides (segmented for peoples_daily, a prepared "
                     "directory's own, else whitespace)."),
    "batching": ("data.batching", flags.DEFINE_enum,
                 config_lib.BATCHING_MODES,
                 "sentences: stateless, each sentence with <S>/</S>; stream: "
                 "bilm-tf windows with LSTM state carried across batches."),
    "batch_size": ("data.batch_size", flags.DEFINE_integer, None,
                   "Global batch size (sentences or parallel streams)."),
    "unroll_steps": ("data.unroll_steps", flags.DEFINE_integer, None,
                     "Window length in stream mode."),
    "min_count": ("data.min_count", flags.DEFINE_integer, None,
                  "Minimum count for a vocabulary word."),
    "max_vocab": ("data.max_vocab", flags.DEFINE_integer, None,
                  "Largest vocabulary incl. specials (0: no limit)."),
    "on_bad_line": ("data.on_bad_line", flags.DEFINE_enum,
                    config_lib.ON_BAD_LINE_CHOICES,
                    "What to do with invalid UTF-8 lines."),
    "epochs": ("train.epochs", flags.DEFINE_integer, None,
               "Epochs over the training split (when --max_steps is 0)."),
    "max_steps": ("train.max_steps", flags.DEFINE_integer, None,
                  "Stop after this many steps (0: use --epochs)."),
    "learning_rate": ("train.learning_rate", flags.DEFINE_float, None,
                      "Learning rate."),
    "optimizer": ("train.optimizer", flags.DEFINE_enum, config_lib.OPTIMIZERS,
                  "Optimizer."),
    "learning_rate_schedule": ("train.learning_rate_schedule",
                               flags.DEFINE_enum,
                               config_lib.LEARNING_RATE_SCHEDULES,
                               "Decay of the learning rate over the run."),
    "final_learning_rate_fraction": (
        "train.final_learning_rate_fraction", flags.DEFINE_float, None,
        "Final learning rate of a decaying schedule, as a fraction of "
        "--learning_rate."),
    "clip_norm": ("train.clip_norm", flags.DEFINE_float, None,
                  "Global gradient-norm clipping."),
    "seed": ("train.seed", flags.DEFINE_integer, None, "Random seed."),
    "mixed_precision": ("train.mixed_precision", flags.DEFINE_enum,
                        config_lib.MIXED_PRECISIONS,
                        "mixed_bfloat16 pays off on CPUs with bfloat16 "
                        "matmuls (AMX, AVX512_BF16); see BENCHMARKS.md."),
    "jit_compile": ("train.jit_compile", flags.DEFINE_bool, None,
                    "Compile the train step with XLA."),
    "intra_op_threads": ("train.intra_op_threads", flags.DEFINE_integer,
                         None, "Threads per TensorFlow op: -1 (default) half "
                         "the cores, as the two directions run side by "
                         "side; 0 TensorFlow's default (every core)."),
    "distribution": ("train.distribution", flags.DEFINE_enum,
                     config_lib.DISTRIBUTIONS,
                     "tf.distribute strategy; multi_worker reads TF_CONFIG."),
    "log_every_steps": ("train.log_every_steps", flags.DEFINE_integer, None,
                        "Summary / progress interval."),
    "checkpoint_every_steps": ("train.checkpoint_every_steps",
                               flags.DEFINE_integer, None,
                               "Checkpoint interval."),
    "eval_every_steps": ("train.eval_every_steps", flags.DEFINE_integer,
                         None, "Validation interval (0: only at the end)."),
    "n_negative_samples": ("model.n_negative_samples", flags.DEFINE_integer,
                           None, "Sampled-softmax negatives per batch."),
    "training_softmax": ("model.training_softmax", flags.DEFINE_enum,
                         config_lib.TRAINING_SOFTMAXES,
                         "Training loss: sampled softmax, or the exact one "
                         "(faster for small vocabularies such as PTB's)."),
    "dropout": ("model.dropout", flags.DEFINE_float, None,
                "Dropout on LSTM inputs and before the softmax."),
    "token_encoder": ("model.token_encoder", flags.DEFINE_enum,
                      config_lib.TOKEN_ENCODERS, "How layer 0 is built."),
    "n_layers": ("model.lstm.n_layers", flags.DEFINE_integer, None,
                 "LSTM layers per direction."),
    "cell_dim": ("model.lstm.cell_dim", flags.DEFINE_integer, None,
                 "LSTM cells."),
    "projection_dim": ("model.lstm.projection_dim", flags.DEFINE_integer,
                       None, "LSTM projection (and token vector) size."),
    "n_highway": ("model.char_cnn.n_highway", flags.DEFINE_integer, None,
                  "Highway layers in the character encoder."),
}
# The help text that stands for a shortcut's default.
FROM_PRESET = "default: from the preset"
for _name, (_path, _define, _choices, _help) in _SHORTCUTS.items():
  _help = f"{_help} (config {_path}; {FROM_PRESET})"
  if _define is flags.DEFINE_enum:
    _define(_name, None, list(_choices), _help)
  else:
    _define(_name, None, _help)


def build_config(model_dir: str) -> config_lib.ExperimentConfig:
  """Saved config (when resuming) or preset, then explicit flags on top."""
  from elmo_tf import checkpoints  # Imports TensorFlow.
  saved = checkpoints.config_path(model_dir)
  source = None
  if _INIT_FROM.value:
    from elmo_tf import warm_start  # Imports TensorFlow.
    try:
      source = warm_start.read_source(flag_utils.resolve_path(
          _INIT_FROM.value))
    except checkpoints.TrainingError as e:
      raise app.UsageError(str(e)) from None
  if _CONFIG.value:
    config = config_lib.ExperimentConfig.load(
        flag_utils.resolve_path(_CONFIG.value))
  elif os.path.exists(saved) and not flag_utils.explicitly_set("preset"):
    logging.info("Resuming with the config saved in %s.", saved)
    config = config_lib.ExperimentConfig.load(saved)
  elif source is not None and not flag_utils.explicitly_set("preset"):
    # The source's architecture (its weights need it) and recipe; the
    # corpus, vocabulary and flags below replace what they name.
    logging.info("Starting from the config of %s.", source.path)
    config = source.config
  else:
    config = config_lib.ExperimentConfig(
        model=config_lib.preset(_PRESET.value))
  overrides = {}
  if flag_utils.explicitly_set("corpus") or not os.path.exists(saved):
    overrides["data.corpus"] = flag_utils.resolve_corpus(_CORPUS.value)
  if source is not None:
    overrides["train.init_from"] = source.path
    overrides["data.vocab_file"] = source.vocab_path
  if _VOCAB_FILE.value is not None:
    overrides["data.vocab_file"] = flag_utils.resolve_path(_VOCAB_FILE.value)
  for name, (path, *_rest) in _SHORTCUTS.items():
    if flag_utils.explicitly_set(name):
      overrides[path] = flags.FLAGS[name].value
  if "data.corpus" in overrides and not flag_utils.explicitly_set(
      "tokenization"):
    overrides["data.tokenization"] = (
        source.config.data.tokenization if source is not None
        else _corpus_tokenization(overrides["data.corpus"]))
  for item in _SET.value:
    key, sep, value = item.partition("=")
    if not sep:
      raise app.UsageError(f"--set expects key=value, got {item!r}.")
    overrides[key.strip()] = value
  try:
    config = config_lib.apply_overrides(config, overrides)
    runtime.intra_op_threads_for(config.train.intra_op_threads)  # Checks it.
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  return config


def _corpus_tokenization(corpus: str) -> str:
  """The tokenization a corpus implies when --tokenization is not given:
  a prepared directory's own, `segmented` for peoples_daily, else
  `whitespace`."""
  from elmo_tf import prepare  # Imports TensorFlow.
  from elmo_tf import prepared_corpus  # Imports TensorFlow.
  manifest = os.path.join(corpus, prepared_corpus.MANIFEST)
  if os.path.isdir(corpus) and os.path.exists(manifest):
    with open(manifest, encoding="utf-8") as f:
      return json.load(f)["tokenization"]
  return prepare.default_tokenization(corpus)


def export_dir(model_dir: str,
               config: config_lib.ExperimentConfig) -> str | None:
  """Where to export at the end of training; None for no export."""
  if not _EXPORT.value:
    if _EXPORT_DIR.value:
      raise app.UsageError("--export_dir is set but --noexport skips the "
                           "export; drop one of them.")
    return None
  if config.train.distribution == "multi_worker":
    # bin/train cannot tell the chief here; every worker would export.
    logging.info("Not exporting a SavedModel from a multi_worker run; run "
                 "bin/export --model_dir=%s after training.", model_dir)
    return None
  if _EXPORT_DIR.value:
    return flag_utils.resolve_path(_EXPORT_DIR.value)
  return os.path.join(model_dir, "saved_model")


def export_options(
    config: config_lib.ExperimentConfig) -> config_lib.ExportConfig:
  """The ExportConfig of the export at the end of training."""
  from elmo_tf import export as export_lib  # Imports TensorFlow.
  return config_lib.ExportConfig(
      trainable_biLM=_EXPORT_TRAINABLE_BILM.value,
      # jieba runs Python, not a graph: its models export `segmented`.
      tokenization=export_lib.exported_tokenization(
          config.data.tokenization))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  model_dir = flag_utils.resolve_path(_MODEL_DIR.value)
  config = build_config(model_dir)
  out_dir = export_dir(model_dir, config)
  from elmo_tf import trainer  # Imported late: TensorFlow start-up is slow.
  if out_dir:
    from elmo_tf import export as export_lib  # Late, like trainer.
    try:
      export_lib.check_out_dir(out_dir)  # Before hours of training.
    except export_lib.ExportError as e:
      raise app.UsageError(f"--export_dir: {e}") from None
  try:
    results = trainer.train(
        config, model_dir,
        cache_root=flag_utils.resolve_path(_CACHE_DIR.value)
        if _CACHE_DIR.value else None)
  except trainer.Interrupted as e:
    # Already logged by the trainer: where it stopped and how to resume.
    return e.exit_code
  except user_errors() as e:
    return report_user_error(e)
  logging.info("Validation: %s", json.dumps(results, sort_keys=True))
  summary = (
      f"\nCheckpoints and config: {model_dir}\n"
      f"TensorBoard logs:       {model_dir}/train, {model_dir}/validation\n"
      f"Watch training with:    tensorboard --logdir {model_dir}\n"
      f"Validation perplexity:  forward {results['forward_perplexity']:.2f}, "
      f"backward {results['backward_perplexity']:.2f}")
  try:
    if out_dir:
      try:
        path = export_lib.export_saved_model(model_dir, out_dir,
                                             export_options(config))
      except user_errors() + (export_lib.ExportError,) as e:
        summary += "\nSavedModel:             not exported (see the error)"
        return report_user_error(e)
      summary += (f"\nSavedModel:             {path}\n"
                  f"Use it with:            {flag_utils.hub_usage(path)}")
      if config.data.tokenization == "jieba":
        summary += ("\n                        Its `default` signature takes "
                    "text segmented with spaces (jieba cannot run in a "
                    "graph).")
    elif config.train.distribution == "multi_worker" and _EXPORT.value:
      summary += ("\nSavedModel:             not exported (multi_worker); "
                  f"run bin/export --model_dir={model_dir}")
  finally:
    print(summary)  # Also when the export fails: the checkpoints are there.


def user_errors() -> tuple[type[BaseException], ...]:
  """Exceptions that are the user's to fix, reported in one line: the
  training run's (`TrainingError`: another trainer holds --model_dir, a
  config that does not match the run, divergence, no intact checkpoint),
  the corpus's, and the file system's (a read-only or misplaced directory).
  Others keep their traceback: they are bugs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import checkpoints  # Imports TensorFlow.
  from elmo_tf import corpora
  from elmo_tf import prepared_corpus
  return (checkpoints.TrainingError, corpora.CorpusError,
          prepared_corpus.PreparedCorpusError, OSError,
          tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError,
          tf.errors.NotFoundError)


def report_user_error(error: BaseException) -> int:
  """Logs `error` in one line (its traceback at --verbosity=1); returns the
  exit status, 1."""
  logging.error("%s", error)
  logging.debug("Traceback of the error above:", exc_info=error)
  return 1


if __name__ == "__main__":
  app.run(main)
