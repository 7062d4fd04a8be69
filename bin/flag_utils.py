"""Helpers shared by the absl programs in bin/ (flags stay in bin/)."""

import os

from absl import flags


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
  """Resolves the paths of a corpus spec; built-in names stay as they are.

  Specs are `GLOB[,GLOB]`, `train=GLOB;valid=GLOB;test=GLOB` or a prepared
  directory (see elmo_tf/corpora.py).
  """
  if corpus in ("ptb", "peoples_daily"):
    return corpus
  groups = []
  for group in corpus.split(";"):
    key, sep, globs = group.partition("=")
    if not sep:
      key, globs = "", group
    resolved = ",".join(resolve_path(g) for g in globs.split(","))
    groups.append(f"{key}={resolved}" if sep else resolved)
  return ";".join(groups)


def explicitly_set(name: str) -> bool:
  return flags.FLAGS[name].present > 0
