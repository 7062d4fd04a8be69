"""Sentences -> the biLM's inputs: the one packing rule of elmo_tf.

Training (`elmo_tf.data`, both batching modes) and inference (the head in
`elmo_tf.models.elmo`, hence the SavedModel, `ElmoEmbedding` and every
program in bin/) turn tokens into model inputs with these functions, so the
two can never drift apart:

  * `wrap_sentences`: every sentence is read as `<S> w1 .. wn </S>`.
  * `token_features`: (B, T) string tokens, "" = padding ->
      char_ids (B, T, 50) int32   bilm-tf character ids ("+1" form)
      mask     (B, T) bool        True at real tokens (incl. <S>, </S>)
      token_ids (B, T) int32      word ids (when a lookup is given)
    With a table of character ids per word id it takes known words' rows
    from it (sentence batching); `indexed_token_features` gives the same
    from indices into distinct tokens whose ids were computed once (stream
    batching), with no string work per batch.
  * `pack_sentences`: both, for a (B, (n)) RaggedTensor of sentences.

Length limits (where each applies):
  * Inference reads every sentence whole, however long: the LSTMs take any
    length, and cutting would change the context of the words near the cut.
  * Training in `sentences` mode cuts a sentence longer than
    `DataConfig.max_sentence_length` words (default 100) into consecutive
    pieces of at most that many words, each packed as its own sentence
    (`cut_sentences`), which bounds the padded batch width for bucketing.
  * Training in `stream` mode reads the text as one stream in windows of
    `unroll_steps` tokens; sentence length does not matter there.
  * Every token is cut to its first 48 UTF-8 bytes in its character ids
    (`vocab.char_ids`), everywhere.
"""

import tensorflow as tf

from elmo_tf import vocab as vocab_lib


def wrap_sentences(tokens: tf.RaggedTensor) -> tf.RaggedTensor:
  """(B, (n)) string tokens -> (B, (n + 2)) with `<S>` first, `</S>` last."""
  batch_size = tokens.nrows(out_type=tokens.row_splits.dtype)
  boundary = lambda token: tf.RaggedTensor.from_tensor(
      tf.fill([batch_size, 1], token),
      row_splits_dtype=tokens.row_splits.dtype)
  return tf.concat([boundary(vocab_lib.BOS_TOKEN), tokens,
                    boundary(vocab_lib.EOS_TOKEN)], axis=1)


def cut_sentences(tokens: tf.RaggedTensor, limit: int) -> tf.RaggedTensor:
  """(B, (n)) -> (pieces, (<= limit)): each sentence cut into consecutive
  pieces of at most `limit` tokens (training's length limit, see the module
  docstring). An empty sentence gives no piece."""
  lengths = tf.cast(tokens.row_lengths(), tf.int64)  # (B,)
  n_pieces = (lengths + limit - 1) // limit  # (B,)
  first_piece = tf.cumsum(n_pieces, exclusive=True)  # (B,)
  line_of_word = tf.cast(tokens.value_rowids(), tf.int64)  # (n_words,)
  index_in_line = (tf.range(tf.size(line_of_word, out_type=tf.int64))
                   - tf.gather(tf.cast(tokens.row_starts(), tf.int64),
                               line_of_word))
  piece_of_word = (tf.gather(first_piece, line_of_word)
                   + index_in_line // limit)  # (n_words,)
  return tf.RaggedTensor.from_value_rowids(
      tokens.flat_values, piece_of_word, nrows=tf.reduce_sum(n_pieces),
      validate=False)


def token_features(tokens: tf.Tensor, token_ids=None,
                   char_id_table=None) -> dict[str, tf.Tensor]:
  """Model inputs of padded tokens.

  Args:
    tokens: (B, T) string tokens, "" = padding (already wrapped in
      `<S>`/`</S>` where sentences are meant).
    token_ids: (B, T) int32 word ids of `tokens` (0 at padding), or None for
      a character-only model.
    char_id_table: optional, with `token_ids`: (n_ids, 50) `vocab.char_ids`
      of the token of every word id of the same vocabulary (row 0 all
      zeros), in any integer dtype that holds ids < 262 (uint16 halves the
      memory). Tokens with an id take its row; tokens mapped to `<UNK>`
      (unknown words, whose characters differ) are computed from their
      strings, so the result is the same as without it, with less string
      work per batch.

  Returns:
    {"char_ids": (B, T, 50) int32, "mask": (B, T) bool} plus "token_ids"
    when given.
  """
  if char_id_table is None:
    char_ids = vocab_lib.char_ids(tokens)  # (B, T, 50)
  else:
    token_ids = tf.cast(token_ids, tf.int32)
    # (B, T, 50) rows of the word ids, then the (n_unk, 2) positions of
    # <UNK> ids overwritten with the characters of their strings.
    by_id = tf.cast(tf.gather(char_id_table, token_ids), tf.int32)
    unknown = tf.where(tf.equal(token_ids, vocab_lib.UNK_ID))
    char_ids = tf.tensor_scatter_nd_update(
        by_id, unknown, vocab_lib.char_ids(tf.gather_nd(tokens, unknown)))
  return _features(char_ids, tf.not_equal(tokens, ""),  # (B, T)
                   token_ids)


def indexed_token_features(indices: tf.Tensor, char_id_table: tf.Tensor,
                           token_id_table: tf.Tensor) -> dict[str, tf.Tensor]:
  """`token_features` of tokens given as indices into a list of distinct
  tokens whose character ids and word ids were computed once.

  Equal to `token_features(tf.gather(tokens, indices),
  tf.gather(token_id_table, indices))` when `char_id_table` is
  `vocab.char_ids(tokens)` (any integer dtype holding ids < 262, such as
  uint16) and `tokens[0]` = "" is the only empty token, with no string work
  per batch.

  Args:
    indices: (B, T) int32 indices into the distinct tokens, 0 = padding.
    char_id_table: (n_distinct, 50) character ids of the distinct tokens.
    token_id_table: (n_distinct,) int32 their word ids (0 at index 0).

  Returns:
    {"char_ids": (B, T, 50) int32, "mask": (B, T) bool, "token_ids":
    (B, T) int32}.
  """
  # (B, T, 50) int32, cast after the gather (the table may be uint16).
  char_ids = tf.cast(tf.gather(char_id_table, indices), tf.int32)
  return _features(char_ids, tf.not_equal(indices, 0),  # (B, T)
                   tf.gather(token_id_table, indices))


def _features(char_ids, mask, token_ids) -> dict[str, tf.Tensor]:
  features = {"char_ids": char_ids, "mask": mask}
  if token_ids is not None:
    features["token_ids"] = tf.cast(token_ids, tf.int32)
  return features


def pack_sentences(tokens: tf.RaggedTensor, lookup=None,
                   width=None) -> dict[str, tf.Tensor]:
  """(B, (n)) sentences -> the biLM's inputs, each sentence `<S> .. </S>`.

  Args:
    tokens: (B, (n)) string RaggedTensor, without `<S>` / `</S>`.
    lookup: callable string tensor -> int32 word ids with "" -> 0
      (`Vocabulary.lookup`, or `Vocabulary.table.lookup`), or None for a
      character-only model.
    width: padded time width, at least longest + 2; None for exactly that.

  Returns:
    `token_features` of the (B, width) padded sentences: "char_ids",
    "mask" and, with `lookup`, "token_ids".
  """
  wrapped = wrap_sentences(tokens)
  if width is None:
    lengths = wrapped.row_lengths()
    # 2 for an empty batch (an empty reduce_max is the dtype's minimum).
    width = tf.reduce_max(tf.concat([lengths, [2]], axis=0))
  batch_size = wrapped.nrows(out_type=wrapped.row_splits.dtype)
  padded = wrapped.to_tensor(
      default_value="",
      shape=tf.stack([tf.cast(batch_size, tf.int64), tf.cast(width, tf.int64)]))
  token_ids = None
  if lookup is not None:
    token_ids = lookup(padded)  # (B, width); "" -> 0
  return token_features(padded, token_ids)
