"""Reading text files line by line, with `file:line` locations.

Every program that reads the user's text (corpus preparation, bin/embed,
bin/score, bin/polysemy) reads it here, so a bad line is reported the same
way everywhere: its file and 1-based line number.
"""

import dataclasses
from typing import Iterator, Optional


@dataclasses.dataclass(frozen=True)
class RawLine:
  """One line of a corpus before tokenization.

  Attributes:
    source: the file (or `ptb/train`-style name) the line comes from.
    line_number: 1-based line number in `source`.
    text: the decoded line without its line break, or None if the line is not
      valid UTF-8.
    error: for `text=None`, the decoding error.
  """
  source: str
  line_number: int
  text: Optional[str]
  error: Optional[str] = None

  @property
  def location(self) -> str:
    return f"{self.source}:{self.line_number}"


def read_lines(path: str) -> Iterator[RawLine]:
  """Yields the lines of a UTF-8 file with 1-based numbers.

  Lines end at b"\\n" only; a trailing b"\\r" is removed. Undecodable lines are
  yielded with `text=None`.
  """
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      if raw.endswith(b"\n"):
        raw = raw[:-1]
      if raw.endswith(b"\r"):
        raw = raw[:-1]
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield RawLine(path, number, None,
                      f"invalid UTF-8 at byte {e.start}: {e.reason}")
        continue
      yield RawLine(path, number, text)


def count_lines(path: str) -> int:
  """Number of lines as `read_lines` yields them."""
  count = 0
  last = b"\n"
  with open(path, "rb") as f:
    while True:
      chunk = f.read(1 << 20)
      if not chunk:
        break
      count += chunk.count(b"\n")
      last = chunk[-1:]
  return count + (last != b"\n")


