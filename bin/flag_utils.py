"""Helpers shared by the absl programs in bin/ (flags stay in bin/)."""

import os

from absl import flags

from elmo_tf import corpora

# Defined here, once, because two programs take it (an absl flag name can be
# defined only once per process).
OUT = flags.DEFINE_string(
    "out", None, "Output directory. bin/prepare_corpus: the prepared corpus "
    "(must not exist). bin/export: the SavedModel (an existing SavedModel "
    "there is replaced; default savedmodels/<basename of --model_dir>).")

VOCAB_FILE = flags.DEFINE_string(
    "vocab_file", None, "A vocabulary file (one token per line, <S> </S> "
    "<UNK> first, as a run's vocab.txt) to tokenize the corpus against "
    "instead of building one from its train split (--min_count and "
    "--max_vocab are then unused). bin/train --init_from defaults it to the "
    "source model's.")


def resolve_path(path: str) -> str:
  """Resolves `path` against the caller's directory.

  Under `bazel run` the program runs inside its runfiles tree; Bazel puts the
  directory the user ran it from in BUILD_WORKING_DIRECTORY.
  """
  if not path or os.path.isabs(path) or "://" in path:
    return path
  base = os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd())
  return os.path.join(base, path)


def resolve_corpus(corpus: str) -> str:
  """Resolves the paths of a corpus spec against the caller's directory.

  Built-in names stay as they are; see `elmo_tf.corpora.absolute_spec`.
  """
  return corpora.absolute_spec(
      corpus, os.environ.get("BUILD_WORKING_DIRECTORY", os.getcwd()))


def explicitly_set(name: str) -> bool:
  return flags.FLAGS[name].present > 0


def hub_usage(saved_model: str) -> str:
  """One line of Python loading `saved_model` with hub.KerasLayer (tf_keras)."""
  return ("import tensorflow_hub as hub; "
          f"hub.KerasLayer({saved_model!r}, trainable=True, "
          "output_key='default')")
