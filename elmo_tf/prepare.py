"""Corpus preparation: raw text -> tokenized shards + vocabulary + manifest.

`prepare_corpus` reads a corpus (`elmo_tf.corpora`), tokenizes every line
(`elmo_tf.tokenizers`), and writes into `out_dir`:

  train-00000.txt, ...   one sentence per line, tokens joined by single
  valid-00000.txt, ...   spaces (tokens never contain whitespace); empty
  test-00000.txt, ...    lines are dropped
  vocab.txt              bilm-tf format, built from the train split only
                         (or a copy of a given `vocab_file`)
  manifest.json          what was done: see `prepare_corpus`

Everything is written into a temporary sibling directory
(`.NAME.tmp-PID-RANDOM@HOST`) that is renamed to `out_dir` at the end, so an
interrupted run never leaves a half corpus; one killed outright (SIGKILL)
leaves that directory behind, and the next preparation of `out_dir` removes
it once its process is gone (`remove_stale_temporaries`).
`elmo_tf.prepared_corpus` reads it back (`PreparedCorpus.load(out_dir)`;
`PreparedCorpus` and `PreparedCorpusError` are also importable from here).
`ensure_prepared` / `prepare_cached` prepare a corpus into a cache directory
on first use and reuse it afterwards.
"""

import collections
import datetime
import hashlib
import json
import os
import re
import shutil
import socket
import time
import uuid
from typing import Any, Iterator, Optional

from absl import logging

import elmo_tf
from elmo_tf import config as config_lib
from elmo_tf import corpora
from elmo_tf import prepared_corpus as prepared_lib
from elmo_tf import tokenizers
from elmo_tf import vocab as vocab_lib

ON_BAD_LINE_CHOICES = config_lib.ON_BAD_LINE_CHOICES
# At most this many `file:line` locations of skipped bad lines are listed in
# the manifest (all are counted).
_MAX_LISTED_BAD_LINES = 1000
# Lines given to the tokenizer at once.
_TOKENIZE_CHUNK = 1000

_DEFAULTS = config_lib.DataConfig()

# The reader lives in elmo_tf.prepared_corpus; these names stay importable
# from here.
PreparedCorpus = prepared_lib.PreparedCorpus
PreparedCorpusError = prepared_lib.PreparedCorpusError


def _check_arguments(tokenization, min_count, max_vocab, on_bad_line,
                     lines_per_shard):
  if on_bad_line not in ON_BAD_LINE_CHOICES:
    raise corpora.CorpusError(
        f"on_bad_line must be one of {ON_BAD_LINE_CHOICES}, "
        f"got {on_bad_line!r}.")
  if min_count < 1:
    raise corpora.CorpusError(f"min_count must be >= 1, got {min_count}.")
  if max_vocab < 0 or 0 < max_vocab < len(vocab_lib.SPECIAL_TOKENS):
    raise corpora.CorpusError(
        f"max_vocab must be 0 (no limit) or >= {len(vocab_lib.SPECIAL_TOKENS)}"
        f" (it counts the specials), got {max_vocab}.")
  if lines_per_shard < 1:
    raise corpora.CorpusError(
        f"lines_per_shard must be >= 1, got {lines_per_shard}.")
  try:
    return tokenizers.get_tokenizer(tokenization)
  except (ValueError, KeyError) as e:
    raise corpora.CorpusError(
        f"Bad tokenization {tokenization!r}: {e}") from None


class _ShardWriter:
  """Writes `split-00000.txt`, ... with at most `lines_per_shard` lines each."""

  def __init__(self, directory: str, split: str, lines_per_shard: int):
    self.directory = directory
    self.split = split
    self.lines_per_shard = lines_per_shard
    self.files = []
    self._file = None
    self._lines_in_shard = 0

  def write(self, line: str) -> None:
    if self._file is None or self._lines_in_shard == self.lines_per_shard:
      self.close()
      name = f"{self.split}-{len(self.files):05d}.txt"
      self.files.append(name)
      self._file = open(os.path.join(self.directory, name), "w",
                        encoding="utf-8", newline="\n")
      self._lines_in_shard = 0
    self._file.write(line)
    self._file.write("\n")
    self._lines_in_shard += 1

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def _write_split(corpus: corpora.Corpus, split: str, tokenizer, directory: str,
                 on_bad_line: str, lines_per_shard: int) -> dict[str, Any]:
  """Tokenizes one split into shards; returns its manifest entry."""
  writer = _ShardWriter(directory, split, lines_per_shard)
  counts = collections.Counter()
  bad_locations = []
  lengths = collections.Counter()

  def flush(texts):
    # Tokenizing chunks of lines is much faster than line by line.
    for words in tokenizer.tokenize_lines(texts):
      # Tokenizers drop whitespace; split again anyway so that shards can be
      # split on " " without doubt.
      words = [piece for token in words for piece in token.split()]
      if not words:
        counts["empty"] += 1
        continue
      writer.write(" ".join(words))
      counts["lines"] += 1
      counts["tokens"] += len(words)
      lengths[len(words)] += 1

  texts = []
  try:
    for raw in corpus.lines(split):
      counts["source_lines"] += 1
      if raw.text is None:
        if on_bad_line == "error":
          raise corpora.CorpusError(
              f"{raw.location}: {raw.error} (use on_bad_line='skip' / "
              f"--on_bad_line=skip to skip such lines).")
        counts["bad"] += 1
        if len(bad_locations) < _MAX_LISTED_BAD_LINES:
          bad_locations.append(raw.location)
        if counts["bad"] <= 10:
          logging.warning("Skipping line %s: %s", raw.location, raw.error)
        continue
      texts.append(raw.text)
      if len(texts) == _TOKENIZE_CHUNK:
        flush(texts)
        texts = []
    if texts:
      flush(texts)
  finally:
    writer.close()
  if counts["bad"]:
    logging.warning("Split %s: skipped %d line(s) that are not valid UTF-8.",
                    split, counts["bad"])
  return {
      "files": writer.files,
      "lines": counts["lines"],
      "tokens": counts["tokens"],
      "source_lines": counts["source_lines"],
      "skipped_empty_lines": counts["empty"],
      "skipped_bad_lines": counts["bad"],
      "bad_lines": bad_locations,
      "sentence_lengths": {str(k): lengths[k] for k in sorted(lengths)},
  }


def _coverage(vocabulary, sentences: Iterator[list[str]]) -> dict[str, Any]:
  tokens = oov = 0
  types = set()
  oov_types = set()
  unk_id = vocabulary.unk_id
  for words in sentences:
    for word in words:
      tokens += 1
      types.add(word)
      if vocabulary.token_to_id(word) == unk_id:
        oov += 1
        oov_types.add(word)
  return {
      "tokens": tokens,
      "oov_tokens": oov,
      "oov_rate": oov / tokens if tokens else None,
      "coverage": 1.0 - oov / tokens if tokens else None,
      "types": len(types),
      "oov_types": len(oov_types),
  }


def prepare_corpus(corpus: str,
                   tokenization: str,
                   out_dir: str,
                   min_count: int = _DEFAULTS.min_count,
                   max_vocab: int = _DEFAULTS.max_vocab,
                   on_bad_line: str = _DEFAULTS.on_bad_line,
                   lines_per_shard: int = _DEFAULTS.lines_per_shard,
                   overwrite: bool = False,
                   vocab_file: str = _DEFAULTS.vocab_file
                   ) -> prepared_lib.PreparedCorpus:
  """Tokenizes `corpus` into `out_dir` and builds its vocabulary.

  Args:
    corpus: a corpus specification (see `elmo_tf.corpora`): `ptb`,
      `peoples_daily`, comma-separated files/globs, or
      `train=GLOBS;valid=GLOBS;test=GLOBS`.
    tokenization: a mode of `elmo_tf.tokenizers.get_tokenizer`.
    out_dir: the directory to create. It must not exist (or be empty) unless
      `overwrite`.
    min_count: words seen fewer times in train are left out of the vocabulary.
    max_vocab: largest vocabulary size, the 3 specials included (the most
      frequent words are kept); 0: no limit.
    on_bad_line: "error" stops at the first line that is not valid UTF-8,
      naming its file and 1-based line number; "skip" skips such lines and
      counts them (with their locations) in the log and the manifest.
    lines_per_shard: sentences per output shard.
    overwrite: replace an existing `out_dir`.
    vocab_file: a vocabulary file to use as it is (e.g. the vocab.txt of a
      model to fine-tune) instead of building one; min_count and max_vocab
      are then unused. Train tokens outside it become <UNK>; the manifest
      reports their share (`train_coverage`).

  Returns:
    The prepared corpus. Its manifest.json holds: `source` (the corpus and how
    it was split), `tokenization`, `on_bad_line`, per split (`files`, `lines`
    written, `tokens`, `source_lines` read, `skipped_empty_lines`,
    `skipped_bad_lines`, `bad_lines` as file:line, `sentence_lengths`
    histogram), `vocabulary` (`file`, `size`, `min_count`, `max_vocab`),
    `validation` (OOV rate and coverage of valid tokens),
    `elmo_tf_version`, `created`, `seconds`.

  Raises:
    corpora.CorpusError: bad arguments, missing files or globs matching
      nothing (all checked before any work), an invalid UTF-8 line with
      on_bad_line="error", or a train split without tokens.
  """
  start_time = time.time()
  tokenizer = _check_arguments(tokenization, min_count, max_vocab, on_bad_line,
                               lines_per_shard)
  fixed_vocabulary = _read_fixed_vocabulary(vocab_file)
  source = corpora.resolve_corpus(corpus)
  if source.train_is_empty():
    raise corpora.CorpusError(f"Corpus {corpus!r} has no training text.")
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  if os.path.exists(out_dir) and not overwrite:
    if not os.path.isdir(out_dir) or os.listdir(out_dir):
      raise corpora.CorpusError(
          f"Output {out_dir} already exists; remove it or pass overwrite.")
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  remove_stale_temporaries(out_dir)
  tmp_dir = os.path.join(
      parent, f".{os.path.basename(out_dir)}.tmp-{os.getpid()}-"
      f"{uuid.uuid4().hex[:8]}@{socket.gethostname()}")
  os.makedirs(tmp_dir)
  try:
    logging.info("Preparing corpus %r (tokenization %s) into %s.", corpus,
                 tokenization, out_dir)
    splits = {}
    for split in corpora.SPLITS:
      splits[split] = _write_split(source, split, tokenizer, tmp_dir,
                                   on_bad_line, lines_per_shard)
      logging.info("Split %s: %d sentences, %d tokens (skipped %d empty and "
                   "%d bad lines).", split, splits[split]["lines"],
                   splits[split]["tokens"],
                   splits[split]["skipped_empty_lines"],
                   splits[split]["skipped_bad_lines"])
    if splits["train"]["tokens"] == 0:
      raise corpora.CorpusError(
          f"Corpus {corpus!r} has no tokens in its train split.")

    def shards(split):
      return [os.path.join(tmp_dir, name) for name in splits[split]["files"]]

    if fixed_vocabulary is None:
      vocabulary = vocab_lib.build_vocabulary(
          prepared_lib.read_sentences(shards("train")), min_count=min_count,
          max_size=max_vocab)
      vocabulary_info = {"min_count": min_count, "max_vocab": max_vocab}
    else:
      vocabulary = fixed_vocabulary
      train_coverage = _coverage(vocabulary,
                                 prepared_lib.read_sentences(shards("train")))
      vocabulary_info = {
          "min_count": min_count, "max_vocab": max_vocab,
          "fixed_from": os.path.abspath(vocab_file),
          "fixed_sha256": _file_sha256(vocab_file),
          "train_coverage": train_coverage}
      logging.info("Fixed vocabulary %s (%d entries): %.2f%% of the %d train "
                   "tokens are outside it (<UNK>).", vocab_file,
                   vocabulary.size, 100 * (train_coverage["oov_rate"] or 0),
                   train_coverage["tokens"])
    vocabulary.save(os.path.join(tmp_dir, prepared_lib.VOCAB_FILE))
    validation = _coverage(vocabulary,
                           prepared_lib.read_sentences(shards("valid")))
    if validation["tokens"]:
      logging.info("Validation: %d tokens, OOV rate %.4f%%, coverage %.4f%% "
                   "(vocabulary of %d entries).", validation["tokens"],
                   100 * validation["oov_rate"], 100 * validation["coverage"],
                   vocabulary.size)
    else:
      logging.info("Validation split is empty: no OOV rate.")

    manifest = {
        "format_version": prepared_lib.MANIFEST_FORMAT_VERSION,
        "elmo_tf_version": elmo_tf.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "source": {"corpus": corpus, "fingerprint": source.fingerprint(),
                   **source.describe()},
        "tokenization": tokenization,
        "on_bad_line": on_bad_line,
        "lines_per_shard": lines_per_shard,
        "splits": splits,
        "vocabulary": {"file": prepared_lib.VOCAB_FILE,
                       "size": vocabulary.size, **vocabulary_info},
        "validation": validation,
        "seconds": round(time.time() - start_time, 3),
    }
    with open(os.path.join(tmp_dir, prepared_lib.MANIFEST), "w",
              encoding="utf-8") as f:
      json.dump(manifest, f, indent=2, ensure_ascii=False)
      f.write("\n")
    _move_into_place(tmp_dir, out_dir, overwrite)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  logging.info("Prepared %s in %.1f s.", out_dir, manifest["seconds"])
  return prepared_lib.PreparedCorpus.load(out_dir)


def _read_fixed_vocabulary(vocab_file: str) -> vocab_lib.Vocabulary | None:
  """The vocabulary of `vocab_file`, None for ""; a bad file is a
  CorpusError naming it (checked before any work)."""
  if not vocab_file:
    return None
  if not os.path.isfile(vocab_file):
    raise corpora.CorpusError(f"Vocabulary file {vocab_file} does not exist.")
  try:
    return vocab_lib.Vocabulary.load(vocab_file)
  except ValueError as e:
    raise corpora.CorpusError(str(e)) from None


def _file_sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def remove_stale_temporaries(out_dir: str) -> list[str]:
  """Removes the temporary directories of earlier preparations of `out_dir`
  whose process is gone (killed with SIGKILL, or the machine went down);
  returns their paths.

  They are `.NAME.tmp-PID-RANDOM@HOST` (and `....old`, a previous `out_dir`
  being replaced) beside `out_dir`. One is stale when it was made on this
  host (names without `@HOST`, from earlier versions, count as this host's)
  and process PID is not running; those of live processes (another worker
  preparing the same corpus) and of other hosts are left alone.
  """
  parent, name = os.path.split(os.path.abspath(out_dir))
  pattern = re.compile(r"\." + re.escape(name) +
                       r"\.tmp-(\d+)-[0-9a-f]{8}(?:@(.+?))?(?:\.old)?")
  host = socket.gethostname()
  removed = []
  try:
    entries = os.listdir(parent)
  except OSError:
    return removed
  for entry in sorted(entries):
    match = pattern.fullmatch(entry)
    if not match:
      continue
    pid, entry_host = int(match.group(1)), match.group(2)
    if (entry_host or host) != host or _process_is_running(pid):
      continue
    path = os.path.join(parent, entry)
    logging.warning("Removing %s, left by an interrupted preparation "
                    "(process %d is gone).", path, pid)
    shutil.rmtree(path, ignore_errors=True)
    removed.append(path)
  return removed


def _process_is_running(pid: int) -> bool:
  """Whether `pid` is a live process of this host (not a zombie)."""
  if pid == os.getpid():
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # Another user's.
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True  # No /proc: a running pid counts as alive.


def _move_into_place(tmp_dir: str, out_dir: str, overwrite: bool) -> None:
  """Renames tmp_dir to out_dir (atomic when out_dir does not exist)."""
  old = None
  if os.path.exists(out_dir):
    if overwrite or (os.path.isdir(out_dir) and not os.listdir(out_dir)):
      old = f"{tmp_dir}.old"
      os.rename(out_dir, old)
  os.rename(tmp_dir, out_dir)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def default_tokenization(corpus: str) -> str:
  """Tokenization for `corpus` when none is given.

  `segmented` for peoples_daily (already segmented into words), else the
  DataConfig default (`whitespace`).
  """
  if corpus.strip() == "peoples_daily":
    return "segmented"
  return _DEFAULTS.tokenization


def summary(prepared: prepared_lib.PreparedCorpus) -> str:
  """A short human-readable summary of a prepared corpus."""
  m = prepared.manifest
  rows = [f"Prepared corpus {prepared.directory}",
          f"  source: {m['source']['corpus']}   tokenization: "
          f"{m['tokenization']}   elmo_tf {m['elmo_tf_version']}"]
  for split in corpora.SPLITS:
    s = m["splits"][split]
    rows.append(f"  {split:5s}: {s['lines']:>10,d} sentences "
                f"{s['tokens']:>12,d} tokens in {len(s['files'])} shard(s); "
                f"skipped {s['skipped_empty_lines']} empty, "
                f"{s['skipped_bad_lines']} bad lines")
  v = m["vocabulary"]
  rows.append(f"  vocabulary: {v['size']:,d} entries (min_count "
              f"{v['min_count']}, max_vocab {v['max_vocab']})")
  val = m["validation"]
  if val["tokens"]:
    rows.append(f"  validation: OOV rate {100 * val['oov_rate']:.3f}%, "
                f"coverage {100 * val['coverage']:.3f}% of "
                f"{val['tokens']:,d} tokens")
  rows.append(f"  took {m['seconds']:.1f} s")
  return "\n".join(rows)


def cache_directory_name(corpus: str, tokenization: str, min_count: int,
                         max_vocab: int, on_bad_line: str,
                         lines_per_shard: int = _DEFAULTS.lines_per_shard,
                         vocab_file: str = _DEFAULTS.vocab_file) -> str:
  """`<corpus name>-<tokenization>-<hash of content and settings>`."""
  source = corpora.resolve_corpus(corpus)
  settings = [source.fingerprint(), tokenization, min_count, max_vocab,
              on_bad_line, prepared_lib.MANIFEST_FORMAT_VERSION]
  # Each only when set, so caches prepared before it counted stay valid.
  if lines_per_shard != _DEFAULTS.lines_per_shard:
    settings.append(lines_per_shard)
  if vocab_file:
    # The content, not the path: a changed file is another vocabulary.
    settings.append({"vocab_sha256": _file_sha256(vocab_file)})
  key = json.dumps(settings)
  digest = hashlib.sha1(key.encode()).hexdigest()[:10]
  return f"{source.name}-{tokenization}-{digest}"


def default_cache_root() -> str:
  """Where corpus specifications are prepared: $ELMO_TF_CACHE, else
  ~/.cache/elmo_tf/corpora."""
  return os.environ.get(
      "ELMO_TF_CACHE",
      os.path.join(os.path.expanduser("~"), ".cache", "elmo_tf", "corpora"))


def ensure_prepared(data_config: config_lib.DataConfig,
                    cache_root: Optional[str] = None
                    ) -> prepared_lib.PreparedCorpus:
  """The prepared corpus of a `DataConfig`, prepared on first use.

  Its `corpus`, `tokenization`, `min_count`, `max_vocab`, `on_bad_line` and
  `lines_per_shard` are used (see `prepare_cached`); `cache_root` defaults
  to `default_cache_root()`.
  """
  return prepare_cached(
      data_config.corpus, data_config.tokenization,
      cache_root or default_cache_root(), min_count=data_config.min_count,
      max_vocab=data_config.max_vocab, on_bad_line=data_config.on_bad_line,
      lines_per_shard=data_config.lines_per_shard,
      vocab_file=data_config.vocab_file)


def prepare_cached(corpus: str,
                   tokenization: Optional[str],
                   cache_root: str,
                   min_count: int = _DEFAULTS.min_count,
                   max_vocab: int = _DEFAULTS.max_vocab,
                   on_bad_line: str = _DEFAULTS.on_bad_line,
                   lines_per_shard: int = _DEFAULTS.lines_per_shard,
                   vocab_file: str = _DEFAULTS.vocab_file
                   ) -> prepared_lib.PreparedCorpus:
  """Returns a prepared corpus for `corpus`, preparing it on first use.

  Args:
    corpus: a directory holding manifest.json (used as is), or a corpus
      specification (prepared into `cache_root/<name>-<tokenization>-<hash>`
      the first time, reused afterwards; the hash covers the files' paths,
      sizes and modification times and the settings below).
    tokenization: the mode wanted. For a prepared directory it must match the
      one it was prepared with, unless None. For a specification, None means
      `default_tokenization(corpus)`.
    cache_root: where specifications are prepared.
    min_count, max_vocab, on_bad_line, lines_per_shard, vocab_file: as
      `prepare_corpus`.

  Raises:
    PreparedCorpusError: a prepared directory with another tokenization, or
      another vocabulary than `vocab_file`, or a corrupt one.
    corpora.CorpusError: as `prepare_corpus`.
  """
  path = os.path.expanduser(corpus)
  if os.path.isdir(path) and os.path.exists(
      os.path.join(path, prepared_lib.MANIFEST)):
    prepared = prepared_lib.PreparedCorpus.load(path)
    if tokenization is not None and tokenization != prepared.tokenization:
      raise prepared_lib.PreparedCorpusError(
          f"Prepared corpus {prepared.directory} was tokenized with "
          f"{prepared.tokenization!r}, not the requested {tokenization!r}; "
          f"prepare it again with --tokenization={tokenization}.")
    if vocab_file:
      wanted = _read_fixed_vocabulary(vocab_file)
      if prepared.vocab.tokens != wanted.tokens:
        raise prepared_lib.PreparedCorpusError(
            f"Prepared corpus {prepared.directory} has another vocabulary "
            f"than {vocab_file}; prepare it again with --vocab_file="
            f"{vocab_file}.")
      return prepared
    vocabulary = prepared.manifest["vocabulary"]
    if (vocabulary["min_count"], vocabulary["max_vocab"]) != (min_count,
                                                              max_vocab):
      logging.warning(
          "Prepared corpus %s has min_count=%d, max_vocab=%d; the requested "
          "min_count=%d, max_vocab=%d are ignored.", prepared.directory,
          vocabulary["min_count"], vocabulary["max_vocab"], min_count,
          max_vocab)
    return prepared
  if tokenization is None:
    tokenization = default_tokenization(corpus)
  _check_arguments(tokenization, min_count, max_vocab, on_bad_line,
                   lines_per_shard)
  # A missing or bad vocabulary file: a clear error before it is hashed.
  _read_fixed_vocabulary(vocab_file)
  name = cache_directory_name(corpus, tokenization, min_count, max_vocab,
                              on_bad_line, lines_per_shard, vocab_file)
  out_dir = os.path.join(os.path.expanduser(cache_root), name)
  if os.path.exists(os.path.join(out_dir, prepared_lib.MANIFEST)):
    logging.info("Reusing prepared corpus %s.", out_dir)
    return prepared_lib.PreparedCorpus.load(out_dir)
  try:
    return prepare_corpus(corpus, tokenization, out_dir, min_count=min_count,
                          max_vocab=max_vocab, on_bad_line=on_bad_line,
                          lines_per_shard=lines_per_shard,
                          vocab_file=vocab_file)
  except (OSError, corpora.CorpusError):
    # Another process (e.g. another worker) may have finished first.
    if os.path.exists(os.path.join(out_dir, prepared_lib.MANIFEST)):
      return prepared_lib.PreparedCorpus.load(out_dir)
    raise
