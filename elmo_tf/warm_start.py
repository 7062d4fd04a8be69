"""Fine-tuning: a training run that starts from a trained model's weights.

`TrainConfig.init_from` names the source: a SavedModel written by
bin/export (with its softmax, as bin/train's exports have) or a bin/train
--model_dir (its newest intact checkpoint). The new run keeps the source's
architecture and vocabulary, so every weight, the softmax's rows included,
carries over; new text is tokenized against that vocabulary
(`DataConfig.vocab_file`), its unseen words becoming <UNK> as targets while
the character CNN still reads them. This is bilm-tf's restart.py, and the
paper's domain transfer (section 5: fine-tune the biLM on the task's
unlabelled text, then freeze it for the task).

  source = warm_start.read_source("savedmodels/ptb")
  source.config.model, source.vocab_path       # what the new run must use
  warm_start.load_weights(source, model, vocab)  # into a BidirectionalLM

The optimizer starts afresh (a SavedModel has no slots; bilm-tf's restart
also rebuilds them).
"""

import dataclasses
import os

from absl import logging
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import vocab as vocab_lib

# The ModelConfig fields that decide the weights' shapes and meaning; the
# others (dropout, training softmax, negatives, unrolling) may change.
_ARCHITECTURE = {
    "": ("vocab_size", "token_encoder", "token_embedding_dim"),
    "char_cnn": ("n_characters", "max_characters_per_token", "embedding_dim",
                 "filters", "n_highway", "activation"),
    "lstm": ("n_layers", "cell_dim", "projection_dim", "cell_clip",
             "projection_clip", "forget_bias", "use_residual"),
}


@dataclasses.dataclass(frozen=True)
class Source:
  """A model to start from.

  Attributes:
    path: the SavedModel or run directory.
    kind: "saved_model" or "model_dir".
    config: its ExperimentConfig (model, data and training recipe).
    vocab_path: its vocabulary file, which the new run's corpus must use.
    checkpoint: for a run directory, the checkpoint read; else "".
  """
  path: str
  kind: str
  config: config_lib.ExperimentConfig
  vocab_path: str
  checkpoint: str = ""

  @property
  def vocab(self) -> vocab_lib.Vocabulary:
    return vocab_lib.Vocabulary.load(self.vocab_path)


def read_source(path: str) -> Source:
  """The `Source` at `path`; a TrainingError saying what is wrong with it."""
  if export_lib.is_saved_model(path):
    try:
      config, info = export_lib.read_export(path)
    except ValueError as e:
      raise checkpoints_lib.TrainingError(f"init_from: {e}") from None
    if not info.get("scoring"):
      raise checkpoints_lib.TrainingError(
          f"init_from: the SavedModel {path} has no softmax (it was not "
          "exported from a training run, or by an older elmo_tf), so its "
          "language model cannot be trained further; start from the "
          "training run's --model_dir instead.")
    return Source(path, "saved_model", config,
                  os.path.join(path, "assets", export_lib.VOCAB_ASSET))
  if tf.io.gfile.exists(checkpoints_lib.config_path(path)):
    config, _ = checkpoints_lib.read_run(path)
    latest, _ = checkpoints_lib.newest_intact_checkpoint(path)
    if latest is None:
      raise checkpoints_lib.TrainingError(
          f"init_from: the run directory {path} has no intact checkpoint.")
    return Source(path, "model_dir", config,
                  checkpoints_lib.vocab_path(path), checkpoint=latest)
  raise checkpoints_lib.TrainingError(
      f"init_from: {path} is neither a SavedModel written by elmo_tf "
      "(bin/export, bin/train) nor a training run directory (bin/train "
      "--model_dir).")


def architecture_differences(source: config_lib.ModelConfig,
                             target: config_lib.ModelConfig) -> list[str]:
  """`field: source -> target` for every architecture field that differs."""
  differences = []
  for group, names in _ARCHITECTURE.items():
    old = getattr(source, group) if group else source
    new = getattr(target, group) if group else target
    for name in names:
      if getattr(old, name) != getattr(new, name):
        label = f"{group}.{name}" if group else name
        differences.append(
            f"{label}: {getattr(old, name)!r} -> {getattr(new, name)!r}")
  return differences


def check_compatible(source: Source, model_config: config_lib.ModelConfig,
                     vocab: vocab_lib.Vocabulary) -> None:
  """Raises a TrainingError unless a run of `model_config` over `vocab` can
  take the source's weights."""
  source_vocab = source.vocab
  if source_vocab.tokens != vocab.tokens:
    first = next((i for i, (a, b) in enumerate(
        zip(source_vocab.tokens, vocab.tokens)) if a != b),
                 min(source_vocab.size, vocab.size))
    raise checkpoints_lib.TrainingError(
        f"init_from: the corpus's vocabulary ({vocab.size} entries, from "
        f"{vocab.source}) is not the one of {source.path} ({source_vocab.size} "
        f"entries; they first differ at line {first + 1}): prepare the corpus "
        f"with data.vocab_file={source.vocab_path} (bin/train --init_from "
        "does so unless --vocab_file is given).")
  differences = architecture_differences(source.config.model, model_config)
  if differences:
    raise checkpoints_lib.TrainingError(
        f"init_from: this run's model differs from {source.path}'s, so its "
        f"weights do not fit: {'; '.join(differences)}. Drop the flags that "
        "change the architecture (bin/train --init_from starts from the "
        "source's config).")


def load_weights(source: Source, model) -> None:
  """Assigns the source's weights to every variable of `model` (a built
  `BidirectionalLM` of a compatible config: `check_compatible`)."""
  if source.kind == "saved_model":
    export_lib.restore_weights(source.path, model.backbone,
                               softmax=model.softmax)
    where = source.path
  else:
    status = checkpoints_lib.model_checkpoint(model).read(source.checkpoint)
    status.expect_partial().assert_existing_objects_matched()
    where = source.checkpoint
  logging.info("Started from the weights of %s (fine-tuning).", where)
