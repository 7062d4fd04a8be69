"""Word vocabulary and character ids: the single source of special ids.

Word ids
--------
A vocabulary file (`vocab.txt`, bilm-tf format) holds one token per line:
`<S>`, `</S>`, `<UNK>`, then the corpus tokens by descending frequency, ties
broken by the token string. The id of a token is its LINE INDEX + 1, so id 0 is
always padding: `<S>` = 1, `</S>` = 2, `<UNK>` = 3, the most frequent word = 4.
`Vocabulary.size` is the number of lines; a softmax over the vocabulary has
`size + 1` rows (row 0 is padding and never a target).

The specials are never counted as corpus words. A corpus that marks rare words
itself (PTB writes `<unk>`) keeps that marker as an ORDINARY word: PTB's test
set contains `<unk>` too, so perplexities stay comparable to the literature.
Only tokens missing from the vocabulary map to our `<UNK>`.

Character ids
-------------
bilm-tf's scheme in its "+1" form (262 ids, 0 = padding), used everywhere
inside elmo_tf (convert only at the hdf5 boundary): UTF-8 byte b -> b + 1
(1..256), begin-sentence 257, end-sentence 258, begin-word 259, end-word 260,
padding-within-token 261. A token is 50 slots:
`[259, bytes + 1 (at most 48), 260, 261, 261, ...]`. `<S>` is
`[259, 257, 260, 261, ...]`, `</S>` is `[259, 258, 260, 261, ...]`, and the
empty string (a padding position) is all zeros. Bytes, not code points: a
Chinese character takes 3 slots, and a token longer than 48 bytes is cut at
byte 48 (possibly inside a character, as bilm-tf does).
"""

import collections
from typing import Iterable, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

# === Special tokens and word ids ===
BOS_TOKEN = "<S>"
EOS_TOKEN = "</S>"
UNK_TOKEN = "<UNK>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, UNK_TOKEN)
PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
UNK_ID = 3

# === Character ids ("+1" form; 0 = padding token / empty slot) ===
MAX_CHARACTERS_PER_TOKEN = 50
# Begin-word and end-word take two slots; the rest hold bytes.
MAX_BYTES_PER_TOKEN = MAX_CHARACTERS_PER_TOKEN - 2  # 48
N_CHARACTERS = 262  # 256 bytes + 5 specials + padding id 0.
BOS_CHAR = 257  # Begin sentence.
EOS_CHAR = 258  # End sentence.
BOW_CHAR = 259  # Begin word.
EOW_CHAR = 260  # End word.
PADDING_CHAR = 261  # Padding within a token, after the end-word id.


def _special_char_row(char: int) -> np.ndarray:
  row = np.full([MAX_CHARACTERS_PER_TOKEN], PADDING_CHAR, np.int32)
  row[:3] = [BOW_CHAR, char, EOW_CHAR]
  return row


# (50,) rows of the sentence markers.
BOS_CHAR_IDS = _special_char_row(BOS_CHAR)
EOS_CHAR_IDS = _special_char_row(EOS_CHAR)


def char_ids_numpy(token: str) -> np.ndarray:
  """Pure-Python reference of `char_ids` for one token: int32 array (50,)."""
  if token == BOS_TOKEN:
    return BOS_CHAR_IDS.copy()
  if token == EOS_TOKEN:
    return EOS_CHAR_IDS.copy()
  row = np.zeros([MAX_CHARACTERS_PER_TOKEN], np.int32)
  if not token:
    return row
  data = token.encode("utf-8")[:MAX_BYTES_PER_TOKEN]
  row[:] = PADDING_CHAR
  row[0] = BOW_CHAR
  row[1:1 + len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + 1
  row[1 + len(data)] = EOW_CHAR
  return row


def _char_ids_flat(tokens: tf.Tensor) -> tf.Tensor:
  """Character ids of a 1-D string tensor (n,) -> int32 (n, 50)."""
  n_body = MAX_BYTES_PER_TOKEN + 1  # Byte slots plus the end-word slot.
  # (n,) bytes actually used, at most 48.
  n_bytes = tf.minimum(tf.strings.length(tokens, unit="BYTE"),
                       MAX_BYTES_PER_TOKEN)
  # (n, 49) uint8: each string's first 49 bytes, zero-padded. Slot 48 is
  # never a byte (n_bytes <= 48), so truncation needs no substr.
  raw = tf.io.decode_raw(tokens, tf.uint8, fixed_length=n_body)
  raw = tf.cast(raw, tf.int32) + 1  # (n, 49)
  positions = tf.range(n_body, dtype=tf.int32)[tf.newaxis, :]  # (1, 49)
  n_bytes = n_bytes[:, tf.newaxis]  # (n, 1)
  body = tf.where(positions < n_bytes, raw,
                  tf.where(positions == n_bytes, EOW_CHAR, PADDING_CHAR))
  begin = tf.fill([tf.shape(tokens)[0], 1], BOW_CHAR)  # (n, 1)
  ids = tf.concat([begin, body], axis=1)  # (n, 50)
  ids = tf.where((tokens == BOS_TOKEN)[:, tf.newaxis],
                 tf.constant(BOS_CHAR_IDS)[tf.newaxis, :], ids)
  ids = tf.where((tokens == EOS_TOKEN)[:, tf.newaxis],
                 tf.constant(EOS_CHAR_IDS)[tf.newaxis, :], ids)
  ids = tf.where((tokens == "")[:, tf.newaxis], 0, ids)
  return ids


def char_ids(tokens) -> tf.Tensor | tf.RaggedTensor:
  """Character ids of string tokens of any shape, dense or ragged.

  Graph-compatible (tf.strings / tf.io ops only), so it runs inside a
  SavedModel on raw strings.

  Args:
    tokens: string `tf.Tensor` of any shape (batch, time, ...) or a
      `tf.RaggedTensor` such as (batch, (tokens)), or anything convertible.

  Returns:
    int32 ids with a trailing dimension of 50: (..., 50); ragged in, ragged
    out. `<S>`, `</S>` get their sentence rows and "" an all-zero row.
  """
  if isinstance(tokens, tf.RaggedTensor):
    return tf.ragged.map_flat_values(char_ids, tokens)
  tokens = tf.convert_to_tensor(tokens, dtype=tf.string)
  flat = tf.reshape(tokens, [-1])  # (n,)
  ids = _char_ids_flat(flat)  # (n, 50)
  ids = tf.reshape(
      ids, tf.concat([tf.shape(tokens), [MAX_CHARACTERS_PER_TOKEN]], axis=0))
  ids.set_shape(tokens.shape.concatenate([MAX_CHARACTERS_PER_TOKEN]))
  return ids


# === Word vocabulary ===
class Vocabulary:
  """Tokens in file order; id = line index + 1, 0 = padding.

  Args:
    tokens: all tokens in file order; the first three must be `<S>`, `</S>`,
      `<UNK>`, then the words; no duplicates, no empty tokens, no leading or
      trailing whitespace.
    source: where the tokens came from, named in error messages.

  Example:
  ```python
  vocab = build_vocabulary([["the", "cat"], ["the", "dog"]])
  vocab.tokens               # ['<S>', '</S>', '<UNK>', 'the', 'cat', 'dog']
  vocab.token_to_id("the")   # 4
  vocab.lookup(tf.constant([["the", "emu", ""]]))  # [[4, 3, 0]]
  vocab.save("/tmp/vocab.txt"); Vocabulary.load("/tmp/vocab.txt")
  ```
  """

  def __init__(self, tokens: Sequence[str], source: str = "<memory>"):
    tokens = list(tokens)
    self.source = source
    if tuple(tokens[:3]) != SPECIAL_TOKENS:
      raise ValueError(
          f"Vocabulary {source}: the first three tokens must be "
          f"{list(SPECIAL_TOKENS)} in this order, got {tokens[:3]}.")
    ids = {}
    for index, token in enumerate(tokens):
      if not isinstance(token, str) or not token or token.strip() != token:
        raise ValueError(
            f"Vocabulary {source}: token {index + 1} ({token!r}) is empty or "
            "has leading/trailing whitespace.")
      if "\n" in token or "\r" in token:
        raise ValueError(
            f"Vocabulary {source}: token {index + 1} ({token!r}) contains a "
            "line break.")
      if token in ids:
        raise ValueError(
            f"Vocabulary {source}: duplicate token {token!r} at positions "
            f"{ids[token]} and {index + 1}.")
      ids[token] = index + 1
    self.tokens = tokens
    self._ids = ids
    self._table = None

  # --- Python-side ids ---
  @property
  def size(self) -> int:
    """Number of tokens (lines), specials included; the largest id."""
    return len(self.tokens)

  def __len__(self) -> int:
    return len(self.tokens)

  def __contains__(self, token: str) -> bool:
    return token in self._ids

  @property
  def bos_id(self) -> int:
    return BOS_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def unk_id(self) -> int:
    return UNK_ID

  def token_to_id(self, token: str) -> int:
    """Id of `token`: unknown -> `unk_id`, "" (padding) -> 0."""
    if token == "":
      return PAD_ID
    return self._ids.get(token, UNK_ID)

  def id_to_token(self, token_id: int) -> str:
    """Token of `token_id`; 0 (padding) -> ""."""
    token_id = int(token_id)
    if token_id == PAD_ID:
      return ""
    if not 0 < token_id <= self.size:
      raise IndexError(
          f"Token id {token_id} out of range [0, {self.size}] for vocabulary "
          f"{self.source}.")
    return self.tokens[token_id - 1]

  # --- TensorFlow-side ids ---
  @property
  def table(self) -> tf.lookup.StaticHashTable:
    """The string -> int32 id table (unknown -> unk_id, "" -> 0).

    Created once, eagerly (also when first used inside a `tf.function`). An
    exported module must keep a reference to it (e.g.
    `module.vocab_table = vocab.table`) so the SavedModel tracks it.
    """
    if self._table is None:
      with tf.init_scope():
        keys = tf.constant([""] + self.tokens, dtype=tf.string)
        values = tf.range(self.size + 1, dtype=tf.int32)  # "" -> 0.
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(keys, values),
            default_value=UNK_ID)
    return self._table

  def lookup(self, tokens) -> tf.Tensor | tf.RaggedTensor:
    """Ids of string tokens of any shape (dense or ragged) -> int32, same shape."""
    if isinstance(tokens, tf.RaggedTensor):
      return tf.ragged.map_flat_values(self.table.lookup, tokens)
    return self.table.lookup(tf.convert_to_tensor(tokens, dtype=tf.string))

  # --- Files ---
  def save(self, path: str) -> None:
    """Writes one token per line (UTF-8), bilm-tf's format."""
    with tf.io.gfile.GFile(path, "w") as f:
      f.write("\n".join(self.tokens) + "\n")

  @classmethod
  def load(cls, path: str, reorder_specials: bool = False) -> "Vocabulary":
    """Reads a vocabulary file written by `save` (or by bilm-tf).

    Args:
      path: the file; one token per line, UTF-8.
      reorder_specials: bilm-tf's published vocabularies start with the three
        specials in another order (`</S>`, `<S>`, `<UNK>`). With True, any
        order of the specials on the first three lines is accepted and put
        into ours (`<S>`, `</S>`, `<UNK>`); word ids are unchanged.

    Raises:
      ValueError: naming the file and line, for a wrong header, an empty line
        or a duplicate token.
    """
    with tf.io.gfile.GFile(path, "rb") as f:
      data = f.read()
    try:
      text = data.decode("utf-8")
    except UnicodeDecodeError as e:
      raise ValueError(f"{path}: not UTF-8 ({e}).") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
      lines.pop()  # The final newline.
    tokens = []
    line_of = {}
    for number, line in enumerate(lines, start=1):
      token = line.strip()
      if not token:
        raise ValueError(f"{path}:{number}: empty line in vocabulary file.")
      if token in line_of:
        raise ValueError(
            f"{path}:{number}: duplicate token {token!r} (first on line "
            f"{line_of[token]}).")
      line_of[token] = number
      tokens.append(token)
    head = tokens[:3]
    if reorder_specials and sorted(head) == sorted(SPECIAL_TOKENS):
      tokens[:3] = SPECIAL_TOKENS
    for number, (token, expected) in enumerate(zip(head, SPECIAL_TOKENS), 1):
      if tokens[number - 1] != expected:
        hint = (" (bilm-tf files with another order of the specials load with "
                "reorder_specials=True)" if token in SPECIAL_TOKENS else "")
        raise ValueError(
            f"{path}:{number}: expected special token {expected!r}, got "
            f"{token!r}; a vocabulary starts with {list(SPECIAL_TOKENS)}"
            f"{hint}.")
    if len(tokens) < 3:
      raise ValueError(
          f"{path}: {len(tokens)} line(s); a vocabulary starts with "
          f"{list(SPECIAL_TOKENS)}.")
    return cls(tokens, source=path)


def build_vocabulary(token_lists: Iterable[Sequence[str]], min_count: int = 1,
                     max_size: int = 0) -> Vocabulary:
  """Counts tokens in one streaming pass and builds a `Vocabulary`.

  Memory grows with the number of distinct tokens, not with the corpus size:
  `token_lists` may be a generator over a large corpus.

  Args:
    token_lists: iterable of token lists (one per sentence or line).
    min_count: words seen fewer times are left out (they become `<UNK>`).
    max_size: largest vocabulary size INCLUDING the three specials; 0 means no
      limit. The most frequent words are kept.

  Returns:
    A `Vocabulary`: specials, then words by descending count, ties by string.
    Specials met in the corpus are not counted as words; "" is ignored.
  """
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}.")
  if max_size and max_size < len(SPECIAL_TOKENS):
    raise ValueError(
        f"max_size must be 0 (no limit) or >= {len(SPECIAL_TOKENS)} (it counts "
        f"the specials {list(SPECIAL_TOKENS)}), got {max_size}.")
  counts = collections.Counter()
  n_tokens = 0
  for tokens in token_lists:
    counts.update(tokens)
    n_tokens += len(tokens)
  counts.pop("", None)
  for special in SPECIAL_TOKENS:
    if counts.pop(special, 0):
      logging.warning("The corpus contains the special token %s; it is not "
                      "counted as a word.", special)
  words = sorted((item for item in counts.items() if item[1] >= min_count),
                 key=lambda item: (-item[1], item[0]))
  if max_size:
    words = words[:max_size - len(SPECIAL_TOKENS)]
  kept = sum(count for _, count in words)
  logging.info(
      "Vocabulary: %d tokens, %d distinct; kept %d words (min_count=%d, "
      "max_size=%d) covering %.2f%% of the tokens.", n_tokens, len(counts),
      len(words), min_count, max_size, 100.0 * kept / max(n_tokens, 1))
  return Vocabulary(list(SPECIAL_TOKENS) + [word for word, _ in words])

