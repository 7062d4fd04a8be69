"""The training directory (`model_dir`): its layout, checks and checkpoints.

A run written by `elmo_tf.trainer` holds:

  config.json          the full ExperimentConfig (vocab_size filled in)
  vocab.txt            the vocabulary the model was trained with
  ckpt-N.index, ckpt-N.data-*   tf.train.Checkpoint: model and optimizer
                       variables keyed by path, and the step
  train/, validation/  TensorBoard event files

This module is the one place that knows those names, builds a model of a
config, keys variables by path (checkpoints and SavedModels both use these
keys) and loads a trained model back. It imports no data or training code,
so inference programs (`elmo_tf.export`, `bin/embed`, ...) can read a run.
"""

import os
from typing import Any

import keras
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.models import bilm as bilm_lib

CONFIG_FILENAME = "config.json"
VOCAB_FILENAME = "vocab.txt"
TRAIN_LOGDIR = "train"
VALIDATION_LOGDIR = "validation"


class TrainingError(RuntimeError):
  """Training or loading a run cannot go on (non-finite loss, incompatible
  resume, a directory that is not a run...)."""


def config_path(model_dir: str) -> str:
  return os.path.join(model_dir, CONFIG_FILENAME)


def vocab_path(model_dir: str) -> str:
  return os.path.join(model_dir, VOCAB_FILENAME)


def checkpoint_step(path: str) -> int:
  """The step N of a checkpoint prefix `.../ckpt-N`."""
  return int(path.rsplit("-", 1)[-1])


def set_precision(mixed_precision: str) -> None:
  """Sets the Keras global dtype policy (`TrainConfig.mixed_precision`)."""
  if mixed_precision not in config_lib.MIXED_PRECISIONS:
    raise ValueError(f"Unknown mixed_precision {mixed_precision!r}; choose "
                     f"one of {list(config_lib.MIXED_PRECISIONS)}.")
  keras.mixed_precision.set_global_policy(mixed_precision)


# === Weights by path ===


def weights_by_path(obj) -> dict[str, tf.Variable]:
  """{path of the variable below `obj`: variable} for a Keras layer, model
  or optimizer.

  The key is the variable's path after `obj`'s own name, e.g.
  `backbone/forward_lstm_0/kernel` for the `BidirectionalLM`,
  `forward_lstm_0/kernel` for its `ElmoBackbone` (wherever that backbone
  sits: `bidirectional_lm/backbone/...` in training,
  `elmo_embedding/backbone/...` in a Keras model), `iteration` for an
  optimizer (whatever its process-dependent name, `adam` or `adam_3`).
  Every layer has an explicit name, so the keys are fixed: weights copy
  between any two objects of one config, and checkpoints are keyed by
  them, not by Python attribute structure (Keras 3 keeps sub-layers held in
  lists out of TensorFlow's object graph, so `tf.train.Checkpoint(model=m)`
  would silently skip them).

  Dropout RNG states are left out: they carry process-dependent auto names
  (a resumed run draws other dropout masks; runs without dropout resume
  bit-exactly).
  """
  result = {}
  for variable in obj.variables:
    if variable.path.endswith("seed_generator_state"):
      continue
    parts = variable.path.split("/")
    if obj.name not in parts:
      raise ValueError(f"Variable {variable.path!r} does not lie below "
                       f"{obj.name!r}.")
    # The last component equal to the object's name: sub-layer names
    # (char_encoder, forward_lstm_0, ...) never equal it.
    start = len(parts) - 1 - parts[::-1].index(obj.name)
    key = "/".join(parts[start + 1:])
    if key in result:
      raise ValueError(f"Two variables share the path {key!r} below "
                       f"{obj.name!r}.")
    result[key] = variable
  return result


def copy_weights(source: dict, target: dict, what: str = "weights") -> None:
  """Assigns `source[k]` to `target[k]` for every key; keys must match."""
  if sorted(source) != sorted(target):
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    raise ValueError(f"Cannot copy {what}: missing {missing}, unexpected "
                     f"{unexpected}.")
  for key, variable in target.items():
    value = source[key]
    if tuple(value.shape) != tuple(variable.shape):
      raise ValueError(f"Cannot copy {what}: {key} has shape {value.shape}, "
                       f"expected {variable.shape}.")
    variable.assign(value)


def model_checkpoint(model, **extra) -> tf.train.Checkpoint:
  """A checkpoint of the model's variables (plus `extra` trackables)."""
  return tf.train.Checkpoint(model_variables=weights_by_path(model), **extra)


# === Building and loading ===


def build_model(model_config: config_lib.ModelConfig) -> bilm_lib.BidirectionalLM:
  """Builds the biLM and creates its variables with a one-token batch."""
  model = bilm_lib.BidirectionalLM(model_config)
  max_chars = model_config.char_cnn.max_characters_per_token
  dummy = {
      "token_ids": tf.ones((1, 2), tf.int32),
      "char_ids": tf.ones((1, 2, max_chars), tf.int32),
      "mask": tf.ones((1, 2), tf.bool),
      "forward_targets": tf.ones((1, 2), tf.int32),
      "backward_targets": tf.ones((1, 2), tf.int32),
  }
  model(dummy, training=False)
  return model


def read_run(model_dir: str) -> tuple[config_lib.ExperimentConfig,
                                      vocab_lib.Vocabulary]:
  """(config, vocabulary) of a run directory."""
  path = config_path(model_dir)
  if not tf.io.gfile.exists(path):
    raise TrainingError(f"No {CONFIG_FILENAME} in {model_dir}: is this a "
                        "directory written by bin/train?")
  config = config_lib.ExperimentConfig.load(path)
  vocab = vocab_lib.Vocabulary.load(vocab_path(model_dir))
  return config, vocab


def load_trained_model(model_dir: str):
  """(config, vocabulary, BidirectionalLM, checkpoint path) of the latest
  checkpoint in `model_dir`.

  Sets the run's Keras dtype policy (its `mixed_precision`), under which the
  model is built; callers that need another policy restore theirs.
  """
  config, vocab = read_run(model_dir)
  latest = tf.train.latest_checkpoint(model_dir)
  if latest is None:
    raise TrainingError(f"No checkpoint in {model_dir}.")
  set_precision(config.train.mixed_precision)
  model = build_model(config.model)
  # Optimizer slots, step and data position are in the checkpoint too and
  # are not needed here; every model variable must be restored.
  status = model_checkpoint(model).read(latest)
  status.expect_partial().assert_existing_objects_matched()
  return config, vocab, model, latest


def check_or_write_model_dir(config: config_lib.ExperimentConfig,
                             model_dir: str,
                             vocab: vocab_lib.Vocabulary) -> None:
  """Writes config.json and vocab.txt, or checks a resumed run matches them.

  Resuming with another vocabulary or another model config is an error that
  says what differs, rather than a shape mismatch deep inside restore.
  """
  tf.io.gfile.makedirs(model_dir)
  config_file = config_path(model_dir)
  vocab_file = vocab_path(model_dir)
  if tf.io.gfile.exists(vocab_file):
    saved = vocab_lib.Vocabulary.load(vocab_file)
    if saved.tokens != vocab.tokens:
      raise TrainingError(
          f"{model_dir} holds a model trained with another vocabulary "
          f"({saved.size} tokens in {vocab_file}, this corpus gives "
          f"{vocab.size}). Use a new --model_dir, or the corpus and "
          "vocabulary options of the original run.")
  if tf.io.gfile.exists(config_file):
    saved_config = config_lib.ExperimentConfig.load(config_file)
    if saved_config.model != config.model:
      diffs = _dict_diff(saved_config.model.to_dict(), config.model.to_dict())
      raise TrainingError(
          f"{model_dir} holds a checkpoint of a different model; differing "
          f"model settings (saved -> requested): {diffs}. Use a new "
          "--model_dir or the original settings.")
  config.save(config_file)
  if not tf.io.gfile.exists(vocab_file):
    vocab.save(vocab_file)


def _dict_diff(old: dict, new: dict, prefix: str = "") -> dict[str, Any]:
  diffs = {}
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs.update(_dict_diff(a, b, prefix + key + "."))
    elif a != b:
      diffs[prefix + key] = (a, b)
  return diffs
