"""Reading a prepared corpus directory (written by `elmo_tf.prepare`).

A prepared corpus directory holds:

  train-00000.txt, ...   one sentence per line, tokens joined by single
  valid-00000.txt, ...   spaces (tokens never contain whitespace), no empty
  test-00000.txt, ...    lines
  vocab.txt              bilm-tf format, built from the train split only
  manifest.json          what was done (see `elmo_tf.prepare.prepare_corpus`)

`PreparedCorpus.load(directory)` checks the manifest and the files it lists
and gives access to the shards, the vocabulary and the statistics.
`read_sentences` is the one function that reads shards: the reader and the
writer (`elmo_tf.prepare`, which builds the vocabulary from the shards it
just wrote) both use it.
"""

import json
import os
from typing import Any, Iterable, Iterator

from elmo_tf import corpora
from elmo_tf import vocab as vocab_lib

MANIFEST = "manifest.json"
VOCAB_FILE = "vocab.txt"
MANIFEST_FORMAT_VERSION = 1


class PreparedCorpusError(ValueError):
  """A prepared corpus directory is missing, corrupt or does not match."""


def read_sentences(paths: Iterable[str]) -> Iterator[list[str]]:
  """Yields the tokens of each sentence (line) of the shards `paths`, in
  order."""
  for path in paths:
    with open(path, encoding="utf-8") as f:
      for line in f:
        yield line.rstrip("\n").split(" ")


class PreparedCorpus:
  """A corpus directory written by `elmo_tf.prepare.prepare_corpus`.

  Example:
    prepared = PreparedCorpus.load("/data/ptb")
    prepared.vocab.size             # 10002
    prepared.files("train")         # ["/data/ptb/train-00000.txt"]
    prepared.manifest["splits"]["valid"]["tokens"]
  """

  def __init__(self, directory: str, manifest: dict[str, Any]):
    self.directory = directory
    self.manifest = manifest
    self._vocab = None

  @classmethod
  def load(cls, directory: str) -> "PreparedCorpus":
    """Loads `directory/manifest.json`, checking the files it lists exist."""
    directory = os.path.abspath(os.path.expanduser(directory))
    path = os.path.join(directory, MANIFEST)
    if not os.path.isfile(path):
      raise PreparedCorpusError(
          f"{directory} is not a prepared corpus: {MANIFEST} is missing "
          f"(write one with bin/prepare_corpus).")
    try:
      with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
      raise PreparedCorpusError(f"Corrupt {path}: {e}") from None
    try:
      version = manifest["format_version"]
      files = [name for split in corpora.SPLITS
               for name in manifest["splits"][split]["files"]]
      files.append(manifest["vocabulary"]["file"])
      manifest["tokenization"]  # pylint: disable=pointless-statement
    except (KeyError, TypeError) as e:
      raise PreparedCorpusError(
          f"Corrupt {path}: missing or malformed entry {e}.") from None
    if version != MANIFEST_FORMAT_VERSION:
      raise PreparedCorpusError(
          f"{path} has format_version {version}; this elmo_tf reads "
          f"{MANIFEST_FORMAT_VERSION}. Prepare the corpus again.")
    for name in files:
      if not os.path.isfile(os.path.join(directory, name)):
        raise PreparedCorpusError(
            f"Corrupt prepared corpus {directory}: {name} listed in "
            f"{MANIFEST} is missing.")
    return cls(directory, manifest)

  @property
  def tokenization(self) -> str:
    return self.manifest["tokenization"]

  @property
  def vocab(self) -> vocab_lib.Vocabulary:
    if self._vocab is None:
      self._vocab = vocab_lib.Vocabulary.load(self.vocab_path)
    return self._vocab

  def with_vocab(self, vocabulary: vocab_lib.Vocabulary) -> "PreparedCorpus":
    """The same shards with another vocabulary (e.g. a trained model's).

    Words missing from `vocabulary` become `<UNK>` in `elmo_tf.data`; the
    manifest (and `vocab_path`) still describe the corpus's own vocabulary.
    """
    other = PreparedCorpus(self.directory, self.manifest)
    other._vocab = vocabulary  # pylint: disable=protected-access
    return other

  @property
  def vocab_path(self) -> str:
    return os.path.join(self.directory, self.manifest["vocabulary"]["file"])

  def _split(self, split: str) -> dict[str, Any]:
    if split not in corpora.SPLITS:
      raise ValueError(
          f"Unknown split {split!r}; expected one of {corpora.SPLITS}.")
    return self.manifest["splits"][split]

  def files(self, split: str) -> list[str]:
    """Absolute paths of the shards of `split` (possibly empty)."""
    return [os.path.join(self.directory, name)
            for name in self._split(split)["files"]]

  def num_lines(self, split: str) -> int:
    """Sentences (non-empty lines) in `split`."""
    return self._split(split)["lines"]

  def num_tokens(self, split: str) -> int:
    """Tokens in `split`, without sentence boundaries."""
    return self._split(split)["tokens"]

  def sentence_lengths(self, split: str) -> dict[int, int]:
    """Histogram {length in tokens: number of sentences} of `split`."""
    return {int(k): v
            for k, v in self._split(split)["sentence_lengths"].items()}

  def sentences(self, split: str) -> Iterator[list[str]]:
    """Yields the tokens of each sentence of `split`, in file order."""
    return read_sentences(self.files(split))

  def __repr__(self):
    return (f"PreparedCorpus({self.directory!r}, "
            f"tokenization={self.tokenization!r})")
