r"""Text -> tokens, with core TensorFlow ops so it also runs inside a graph.

`get_tokenizer(mode)` returns a tokenizer with
  * `tokenize(strings)`: (batch,) string tensor -> (batch, (tokens)) string
    RaggedTensor; graph-compatible (usable in tf.data and in an exported
    SavedModel on raw strings) when `exportable` is True;
  * `tokenize_lines(lines)` / `tokenize_line(line)`: the same tokens for
    Python strings, for corpus preparation. They run `tokenize` on chunks of
    lines, so both paths give exactly the same tokens.

Modes:
  * `whitespace`: pre-tokenized text (PTB, bilm-tf data): split on whitespace.
  * `segmented`: Chinese already segmented by spaces: the same split; tokens
    are kept whole (the mode names the intent in configs).
  * `chinese_chars`: no segmenter: every Han character (CJK unified
    ideographs with all extensions, compatibility ideographs, radicals, 〇, 々)
    is a token; runs of other letters and decimal digits stay whole (`iPhone`,
    `2018`, `GPT4`, Cyrillic, Hangul, kana); every other character
    (punctuation, symbols, emoji) is its own token, e.g. `，`, `《`, `…`, `"`,
    `.` (so `3.14` -> `3`, `.`, `14` and `don't` -> `don`, `'`, `t`).
  * `jieba`: jieba word segmentation (optional package; Python only, so
    `exportable` is False and `tokenize` wraps it in `tf.py_function`).

Common rules:
  * Whitespace = Unicode White_Space (ASCII space and controls, NBSP, U+2000..
    U+200A, U+3000 ideographic space, line/paragraph separators, ...) plus all
    other control characters (general category Cc: NUL and U+0001..U+001F,
    U+007F..U+009F), the zero-width space U+200B and the byte-order mark
    U+FEFF. It separates tokens and is dropped, in every mode: `"the\0cat sat"`
    -> `the`, `cat`, `sat`. A token never contains any of these characters.
  * A combining mark (and a variation selector, emoji skin tone, tag
    character, or zero-width joiner with the following character) stays
    attached to the character before it: `cafe\u0301` and `❤️` are one token,
    and so is the emoji ZWJ sequence `👨‍👩‍👧`; a flag is its pair of
    regional indicators.
  * No normalization: full-width forms are kept as they are (`１２`, `ｉＰｈｏｎｅ`
    from People's Daily stay full-width, and are runs like ASCII digits and
    letters in `chinese_chars`), and NFC/NFD are not unified. Normalize the
    corpus beforehand if you want that.
  * Bytes that are not UTF-8 (only `tokenize` on tensors can meet them) are
    not separators: they stay inside the token around them.

Exportable modes use core TensorFlow ops only (`tf.strings.regex_replace`,
`tf.strings.split`): a SavedModel that tokenizes in its graph loads with plain
TensorFlow, without `import tensorflow_text`. Corpus preparation runs the same
ops (`tokenize_lines`), so training and the exported model tokenize alike.
`tf_text.regex_split` was used before and is NOT: its kernel reads each input
as a C string, so everything after a NUL byte was dropped (`"the\0cat sat"`
-> `["the"]`). Nor is `tf_text.WhitespaceTokenizer` (2.21 leaves bytes of a
multi-byte separator in the token: `"a\u3000b"` -> `[b"a\xe3\x80", b"b"]`).
"""

import functools
import logging as std_logging
import re
import unicodedata

from absl import logging
import tensorflow as tf

from elmo_tf import config as config_lib

MODES = config_lib.TOKENIZATIONS

JIEBA_INSTALL_HINT = (
    "Tokenization mode 'jieba' needs the jieba package: run "
    "`pip install jieba==0.42.1`, or use the segmenter-free mode "
    "'chinese_chars'.")

# === RE2 patterns ===
# Separators: control characters (incl. NUL, \t \n \r U+0085), Unicode space,
# line and paragraph separators (Z: U+0020, U+00A0, U+2000..U+200A, U+3000,
# U+2028, ...), zero-width space, byte-order mark.
_SEPARATOR_CLASS = r"\p{Cc}\p{Z}\x{200B}\x{FEFF}"
# `tf.strings.split(sep=None)` splits on the ASCII whitespace bytes
# " \t\n\v\f\r" only (and drops empty pieces). Every other separator is
# replaced by a space first: runs of controls other than \t..\r, of Z other
# than the space, of U+200B and U+FEFF. Leaving ASCII whitespace out of the
# pattern lets plain text (PTB) pass through the replacement untouched: half
# the CPU time of replacing every separator run.
_OTHER_SEPARATORS = r"(?:[^\P{Cc}\t-\r]|[^\P{Z} ]|[\x{200B}\x{FEFF}])+"
# What attaches to the preceding character: a zero-width joiner with the
# character it joins, combining marks (Mn, Mc, Me; includes variation
# selectors), zero-width non-joiner, emoji skin tones, tag characters.
_EXTEND = (r"(?:\x{200D}[^" + _SEPARATOR_CLASS + r"]"
           r"|[\p{M}\x{200C}\x{200D}\x{1F3FB}-\x{1F3FF}\x{E0020}-\x{E007F}])")
# A letter that is not Han, or a decimal digit (ASCII or full-width, ...).
_WORD_CHAR = r"(?:[^\P{L}\p{Han}]|\p{Nd})"
# One chinese_chars token; alternatives are tried in order (leftmost-first).
_CHINESE_CHARS_TOKEN = (
    r"\p{Han}" + _EXTEND + "*"
    + "|(?:" + _WORD_CHAR + _EXTEND + "*)+"
    + r"|[\x{1F1E6}-\x{1F1FF}]{2}" + _EXTEND + "*"  # A flag.
    + "|[^" + _SEPARATOR_CLASS + "]" + _EXTEND + "*")

# The same separators for Python strings (jieba), from unicodedata. Every
# Cc/Z character is in the Basic Multilingual Plane.
_PY_SEPARATORS = re.compile("[" + "".join(
    re.escape(chr(c)) for c in range(0x10000)
    if unicodedata.category(chr(c)) in ("Cc", "Zs", "Zl", "Zp")
    or c in (0x200B, 0xFEFF)) + "]+")


def _attaches(token: str, piece: str) -> bool:
  """Whether `piece` continues `token` as the chinese_chars `_EXTEND` says.

  jieba cuts combining marks, variation selectors and emoji sequences off
  their base character; this glues them back so that all modes agree.
  """
  first = ord(piece[0])
  return (unicodedata.category(piece[0]).startswith("M")
          or first in (0x200C, 0x200D)
          or 0x1F3FB <= first <= 0x1F3FF
          or 0xE0020 <= first <= 0xE007F
          or token.endswith("\u200d")
          # The second regional indicator of a flag.
          or (len(token) == 1 and 0x1F1E6 <= ord(token) <= 0x1F1FF
              and 0x1F1E6 <= first <= 0x1F1FF))


class Tokenizer:
  """Base class: splits lines of text into tokens.

  Subclasses implement `tokenize`. Attributes: `mode` (the name given to
  `get_tokenizer`) and `exportable` (True when `tokenize` is pure TensorFlow
  and can be saved in a SavedModel).
  """

  mode = None
  exportable = True

  def tokenize(self, strings) -> tf.RaggedTensor:
    """(batch,) string tensor -> (batch, (tokens)) string RaggedTensor."""
    raise NotImplementedError

  def tokenize_lines(self, lines: list[str],
                     chunk_size: int = 1000) -> list[list[str]]:
    """Tokens of each Python string, via `tokenize` on chunks of lines."""
    result = []
    for start in range(0, len(lines), chunk_size):
      chunk = lines[start:start + chunk_size]
      tokens = self._tokenize_chunk(tf.constant(chunk, dtype=tf.string))
      flat = tokens.flat_values.numpy()  # (n_tokens,) bytes
      splits = tokens.row_splits.numpy()  # (len(chunk) + 1,)
      words = [word.decode("utf-8") for word in flat]
      result.extend(words[splits[i]:splits[i + 1]] for i in range(len(chunk)))
    return result

  def tokenize_line(self, line: str) -> list[str]:
    """Tokens of one Python string (prefer `tokenize_lines` for many)."""
    return self.tokenize_lines([line])[0]

  def _tokenize_chunk(self, strings: tf.Tensor) -> tf.RaggedTensor:
    return self.tokenize(strings)

  def __repr__(self):
    return f"{type(self).__name__}(mode={self.mode!r})"


class RegexTokenizer(Tokenizer):
  r"""A graph-compatible tokenizer of core TensorFlow ops: RE2 patterns
  (`tf.strings.regex_replace`) and `tf.strings.split`.

  Args:
    mode: the mode name reported by `mode`.
    token_pattern: optional RE2 pattern of a token that must stand alone even
      without whitespace around it (a Han character, a punctuation mark, ...);
      "" for none. Matches are surrounded by spaces before the split. A match
      must never contain a separator.

  Example:
  ```python
  tokenizer = get_tokenizer("chinese_chars")
  tokenizer.tokenize(tf.constant(["她买了iPhone。"]))
  # <tf.RaggedTensor [[b'\xe5\xa5\xb9', b'\xe4\xb9\xb0', b'\xe4\xba\x86',
  #                    b'iPhone', b'\xe3\x80\x82']]>
  tokenizer.tokenize_line("她买了iPhone。")  # ['她', '买', '了', 'iPhone', '。']
  ```
  """

  exportable = True

  def __init__(self, mode: str, token_pattern: str = ""):
    self.mode = mode
    self.token_pattern = token_pattern

  def tokenize(self, strings) -> tf.RaggedTensor:
    return _regex_tokenize(strings, self.token_pattern)

  def _tokenize_chunk(self, strings: tf.Tensor) -> tf.RaggedTensor:
    return _compiled_regex_tokenize(self.token_pattern)(strings)


def _regex_tokenize(strings, token_pattern: str) -> tf.RaggedTensor:
  strings = tf.convert_to_tensor(strings, dtype=tf.string)  # (batch,)
  if token_pattern:
    # (batch,) with every token match surrounded by spaces.
    strings = tf.strings.regex_replace(strings, token_pattern, " \\0 ")
  # (batch,) with only ASCII whitespace left as separators.
  strings = tf.strings.regex_replace(strings, _OTHER_SEPARATORS, " ")
  # (batch, (tokens)); int64 row splits.
  return tf.strings.split(strings)


@functools.cache
def _compiled_regex_tokenize(token_pattern: str):
  """One traced function per pattern, shared by all tokenizer instances."""
  return tf.function(
      functools.partial(_regex_tokenize, token_pattern=token_pattern),
      input_signature=[tf.TensorSpec([None], tf.string)])


class JiebaTokenizer(Tokenizer):
  """jieba word segmentation (precise mode, HMM for unknown words).

  Python only: `tokenize` runs jieba through `tf.py_function`, so
  `exportable` is False. Whitespace (the same characters as the other modes)
  separates tokens and is dropped.

  Raises:
    ImportError: when jieba is not installed, with how to install it.
  """

  mode = "jieba"
  exportable = False

  def __init__(self):
    try:
      import jieba  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ImportError(JIEBA_INSTALL_HINT) from None
    # jieba logs to stderr through its own handler; keep it quiet and say
    # what happens through absl.
    jieba.setLogLevel(std_logging.WARNING)
    if not jieba.dt.initialized:
      logging.info("Loading the jieba dictionary.")
      jieba.initialize()
    self._jieba = jieba

  def tokenize_line(self, line: str) -> list[str]:
    tokens = []
    glued = False  # Whether the next piece touches the last token.
    for piece in self._jieba.cut(line):
      parts = _PY_SEPARATORS.split(piece)
      for index, part in enumerate(parts):
        if not part:
          continue
        if index == 0 and glued and _attaches(tokens[-1], part):
          tokens[-1] += part  # jieba cut off a combining mark, VS, ...
        else:
          tokens.append(part)
      glued = bool(parts[-1])
    return tokens

  def tokenize_lines(self, lines: list[str],
                     chunk_size: int = 1000) -> list[list[str]]:
    del chunk_size  # jieba works line by line anyway.
    return [self.tokenize_line(line) for line in lines]

  def _tokenize_numpy(self, strings):
    tokens = []
    lengths = []
    for line in strings.numpy():
      line_tokens = self.tokenize_line(line.decode("utf-8"))
      tokens.extend(line_tokens)
      lengths.append(len(line_tokens))
    return (tf.constant(tokens, dtype=tf.string),
            tf.constant(lengths, dtype=tf.int64))

  def tokenize(self, strings) -> tf.RaggedTensor:
    strings = tf.convert_to_tensor(strings, dtype=tf.string)  # (batch,)
    flat, lengths = tf.py_function(
        self._tokenize_numpy, [strings], Tout=[tf.string, tf.int64])
    flat.set_shape([None])  # (n_tokens,)
    lengths.set_shape(strings.shape)  # (batch,)
    return tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)


def get_tokenizer(mode: str) -> Tokenizer:
  """The tokenizer of a `DataConfig.tokenization` mode (see module docstring).

  Raises:
    ValueError: for an unknown mode, listing the valid ones.
    ImportError: for "jieba" when the package is missing.
  """
  if mode in ("whitespace", "segmented"):
    return RegexTokenizer(mode)
  if mode == "chinese_chars":
    return RegexTokenizer(mode, _CHINESE_CHARS_TOKEN)
  if mode == "jieba":
    return JiebaTokenizer()
  raise ValueError(
      f"Unknown tokenization mode {mode!r}; valid modes are {list(MODES)}.")
