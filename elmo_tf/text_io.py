"""Input lines and output files of the inference programs (embed, score).

* `read_sentences` streams a text file (one sentence per line) in chunks,
  naming `file:line` for a line that is not valid UTF-8 (or skipping and
  counting such lines).
* `atomic_output` writes an output under a temporary name beside it and
  renames it into place only when everything was written, so an interrupted
  run never leaves a half-written file under the final name; an existing
  output is refused unless `overwrite`.
"""

import contextlib
import dataclasses
import os
from typing import Iterator

from elmo_tf import config as config_lib
from elmo_tf import text_files

ON_BAD_LINE_CHOICES = config_lib.ON_BAD_LINE_CHOICES


class InputError(ValueError):
  """The input or output of an inference program is not usable."""


@dataclasses.dataclass
class ReadStats:
  """What `read_sentences` has read so far."""
  lines: int = 0
  bad_lines: int = 0


def count_lines(path: str) -> int:
  """Lines of `path` as `read_sentences` numbers them."""
  check_input(path)
  return text_files.count_lines(path)


def check_input(path: str) -> None:
  if not os.path.exists(path):
    raise InputError(f"{path}: no such file.")
  if os.path.isdir(path):
    raise InputError(f"{path} is a directory; give a text file, one "
                     "sentence per line.")


def read_sentences(path: str, on_bad_line: str = "error",
                   chunk_size: int = 1024,
                   stats: ReadStats | None = None
                   ) -> Iterator[list[tuple[int, str]]]:
  """Chunks of (0-based line index, text) of a UTF-8 file, in file order.

  Every line is a sentence, empty ones included (their text is ""), so line
  i of the file is always index i - 1 of the output. A line that is not
  valid UTF-8 raises `InputError` naming `file:line` with
  `on_bad_line="error"`; with "skip" it is counted in `stats.bad_lines` and
  left out (its index is not reused).
  """
  if on_bad_line not in ON_BAD_LINE_CHOICES:
    raise ValueError(f"on_bad_line must be one of {ON_BAD_LINE_CHOICES}, "
                     f"got {on_bad_line!r}.")
  check_input(path)
  stats = stats if stats is not None else ReadStats()
  chunk = []
  for raw in text_files.read_lines(path):
    stats.lines += 1
    if raw.text is None:
      if on_bad_line == "error":
        raise InputError(f"{raw.location}: {raw.error}; fix the line or pass "
                         "--on_bad_line=skip.")
      stats.bad_lines += 1
      continue
    chunk.append((raw.line_number - 1, raw.text))
    if len(chunk) >= chunk_size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


@contextlib.contextmanager
def atomic_output(path: str, overwrite: bool = False) -> Iterator[str]:
  """Yields a temporary path to write `path`'s content to; renames it to
  `path` when the block ends normally and removes it otherwise."""
  if os.path.isdir(path):
    raise InputError(f"{path} is a directory; give an output file name.")
  if os.path.exists(path) and not overwrite:
    raise InputError(f"{path} exists; pass --overwrite to replace it.")
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise InputError(f"{directory}: no such directory for the output.")
  base, extension = os.path.splitext(os.path.basename(path))
  partial = os.path.join(directory,
                         f".{base}.partial-{os.getpid()}{extension}")
  try:
    yield partial
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
