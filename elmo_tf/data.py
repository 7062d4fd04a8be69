"""tf.data pipelines: prepared shards -> tokens -> ids -> windows -> batches.

`make_dataset` turns a split of a `PreparedCorpus` into batches, dicts of
tensors (ids are int32, 0 is padding):

  token_ids         (batch, time)      word ids (`Vocabulary.lookup`)
  char_ids          (batch, time, 50)  character ids (`vocab.char_ids`)
  mask              (batch, time)      bool, True at real tokens
  forward_targets   (batch, time)      id of the NEXT token, 0 where none
  backward_targets  (batch, time)      id of the PREVIOUS token, 0 where none

Two batching modes (`DataConfig.batching`):

* `sentences`: every row is one sentence `<S> w1 .. wn </S>`, padded;
  forward_targets = [w1 .. wn, </S>, 0, ...], backward_targets =
  [0, <S>, w1 .. wn, 0, ...]. Sentences longer than
  `max_sentence_length` words are cut into pieces of at most that many words,
  each piece wrapped in its own `<S>` .. `</S>`. Rows are bucketed by length
  and padded to the bucket width (multiples of 8 up to
  `max_sentence_length + 2`), so there are few distinct shapes. Stateless:
  the model starts every row from a zero state.
* `stream` (bilm-tf style): the text of the split, each sentence written
  `<S> w1 .. wn </S>`, is one stream of N tokens. It is cut into
  `batch_size` contiguous parts (row b of every batch reads part b), and each
  part into consecutive windows of `unroll_steps`. Batch k holds
    - forward keys (`token_ids`, `char_ids`, `mask`, `forward_targets`):
      window k of every part, marching left to right, so the forward LSTM
      state carried from batch k-1 comes from the text just before;
    - backward keys (`backward_token_ids`, `backward_char_ids`,
      `backward_mask`, `backward_targets`): window W-1-k of every part,
      marching right to left. Tokens inside a window stay in text order; the
      backward LSTM reads each window right to left, so the state it carries
      from batch k-1 comes from the text just AFTER its window.
  Targets look across window and part boundaries: the forward target of the
  last position of a window is the first token of the next window, the
  backward target of the first position is the last token of the previous
  window. Padding (id 0, mask False) fills the end of the parts that run
  past the stream, so every token is a target exactly once per direction per
  epoch (except the first token for forward and the last for backward), and
  every batch has exactly `batch_size` rows. `backward_targets` aligns with
  `backward_token_ids`, not with `token_ids`. Shuffling does not reorder
  anything (order carries state); with `shuffle=True` each epoch starts the
  stream at a seed-dependent offset in [0, unroll_steps) (the first offset
  positions are padding), which moves the window boundaries.
  The first batch of each epoch is every `steps_per_epoch(...)` batches; a
  trainer that carries state should reset it there.

Resuming: `make_dataset(..., skip_batches=k)` starts after k batches, and the
pipeline has no `tf.py_function`, so its iterator can also be saved in a
`tf.train.Checkpoint(iterator=iter(dataset))`.

Distribution: with an `input_context` (`strategy.
distribute_datasets_from_function`), batches are per replica
(`input_context.get_per_replica_batch_size`). `sentences`: the lines are
sharded by `input_pipeline_id`. `stream`: the stream is cut into the GLOBAL
`batch_size` parts; pipeline i yields, for every window, one batch per replica
it feeds (in replica order), each with that replica's fixed block of rows, so
every replica always continues the same parts.
"""

import array
import os
from typing import Optional
import weakref

import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import corpora
from elmo_tf import prepared_corpus as prepared_lib
from elmo_tf import sentences as sentences_lib
from elmo_tf import vocab as vocab_lib

BATCHING_MODES = config_lib.BATCHING_MODES
# Bucket widths (sentences mode) are multiples of this.
_BUCKET_STEP = 8
# Shards read at once when shuffling.
_INTERLEAVE_CYCLE = 8
# Sentences mode: lines cut into pieces at once.
_LINE_CHUNK = 256


def _check(prepared: prepared_lib.PreparedCorpus, split: str,
           data_config: config_lib.DataConfig) -> None:
  if data_config.batching not in BATCHING_MODES:
    raise ValueError(f"Unknown DataConfig.batching {data_config.batching!r}; "
                     f"expected one of {BATCHING_MODES}.")
  if split not in corpora.SPLITS:
    raise ValueError(
        f"Unknown split {split!r}; expected one of {corpora.SPLITS}.")
  if not prepared.files(split) or not prepared.num_lines(split):
    raise ValueError(f"Split {split!r} of {prepared.directory} is empty.")
  for name in ("batch_size", "unroll_steps", "max_sentence_length"):
    if getattr(data_config, name) < 1:
      raise ValueError(f"DataConfig.{name} must be >= 1, got "
                       f"{getattr(data_config, name)}.")


def _bucket_widths(max_sentence_length: int) -> list[int]:
  """Padded widths of the sentence buckets: 8, 16, ... >= max length + 2."""
  longest = max_sentence_length + 2  # With <S> and </S>.
  return list(range(_BUCKET_STEP, longest + _BUCKET_STEP, _BUCKET_STEP))


def _stream_geometry(n_tokens: int, batch_size: int, unroll_steps: int):
  """(part length P, windows per epoch W) of a stream of n_tokens tokens.

  The parts hold n_tokens + unroll_steps - 1 slots so that any epoch offset
  in [0, unroll_steps) fits.
  """
  part = -(-(n_tokens + unroll_steps - 1) // batch_size)
  return part, -(-part // unroll_steps)


def steps_per_epoch(prepared: prepared_lib.PreparedCorpus, split: str,
                    data_config: config_lib.DataConfig, *,
                    drop_remainder: bool = False) -> int:
  """Global batches in one epoch of `make_dataset`.

  Exact in `stream` mode. In `sentences` mode exact for one pipeline without
  `repeat` (computed from the sentence-length histogram in the manifest);
  with several input pipelines it is approximate.
  """
  _check(prepared, split, data_config)
  if data_config.batching == "stream":
    n_tokens = prepared.num_tokens(split) + 2 * prepared.num_lines(split)
    _, windows = _stream_geometry(n_tokens, data_config.batch_size,
                                  data_config.unroll_steps)
    return windows
  limit = data_config.max_sentence_length
  widths = _bucket_widths(limit)
  per_bucket = [0] * len(widths)
  for length, count in prepared.sentence_lengths(split).items():
    full, rest = divmod(length, limit)
    for piece, pieces in ((limit, full), (rest, 1 if rest else 0)):
      if pieces:
        per_bucket[(piece + 2 - 1) // _BUCKET_STEP] += pieces * count
  batch = data_config.batch_size
  if drop_remainder:
    return sum(n // batch for n in per_bucket)
  return sum(-(-n // batch) for n in per_bucket)


def make_dataset(prepared: prepared_lib.PreparedCorpus,
                 split: str,
                 data_config: config_lib.DataConfig,
                 *,
                 shuffle: bool,
                 seed: int,
                 repeat: bool = False,
                 input_context: Optional[tf.distribute.InputContext] = None,
                 skip_batches: int = 0,
                 drop_remainder: Optional[bool] = None) -> tf.data.Dataset:
  """Batches of `split` as described in the module docstring.

  Args:
    prepared: a prepared corpus (`elmo_tf.prepared_corpus`).
    split: "train", "valid" or "test".
    data_config: `batching`, `batch_size` (global), `unroll_steps`,
      `max_sentence_length`, `shuffle_buffer` are used.
    shuffle: sentences mode: shuffle shards and sentences (buffer
      `shuffle_buffer`); stream mode: a seed-dependent start offset per epoch.
    seed: the same seed gives the same sequence of batches.
    repeat: repeat forever (each epoch reshuffled) instead of one epoch.
    input_context: from `distribute_datasets_from_function`.
    skip_batches: start after this many (global) batches, to resume.
    drop_remainder: sentences mode: drop incomplete batches so every batch
      has `batch_size` rows. Default: `shuffle` (training). Stream batches are
      always complete.

  Returns:
    A deterministic `tf.data.Dataset` of batch dicts.
  """
  _check(prepared, split, data_config)
  if skip_batches < 0:
    raise ValueError(f"skip_batches must be >= 0, got {skip_batches}.")
  if data_config.batching == "stream":
    dataset = _stream_dataset(prepared, split, data_config, shuffle=shuffle,
                              seed=seed, repeat=repeat,
                              input_context=input_context,
                              skip_batches=skip_batches)
  else:
    if drop_remainder is None:
      drop_remainder = shuffle
    dataset = _sentence_dataset(prepared, split, data_config, shuffle=shuffle,
                                seed=seed, repeat=repeat,
                                input_context=input_context,
                                skip_batches=skip_batches,
                                drop_remainder=drop_remainder)
  options = tf.data.Options()
  options.deterministic = True
  if input_context is not None:
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
  return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _per_replica_batch_size(data_config, input_context):
  if input_context is None:
    return data_config.batch_size
  return input_context.get_per_replica_batch_size(data_config.batch_size)


# === sentences mode ===
def _sentence_dataset(prepared, split, data_config, *, shuffle, seed, repeat,
                      input_context, skip_batches, drop_remainder):
  vocabulary = prepared.vocab
  # (vocabulary.size + 1, 50) uint16 character ids per word id: the known
  # tokens of a batch gather rows, only `<UNK>` ones are computed from their
  # strings (`sentences.token_features`).
  char_ids_of_id = tf.constant(vocabulary_char_ids(vocabulary),
                               dtype=tf.uint16)
  files = prepared.files(split)
  batch_size = _per_replica_batch_size(data_config, input_context)
  limit = data_config.max_sentence_length

  dataset = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  cycle = min(len(files), _INTERLEAVE_CYCLE) if shuffle else 1
  if cycle > 1:
    dataset = dataset.interleave(
        tf.data.TextLineDataset, cycle_length=cycle, block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    dataset = dataset.flat_map(tf.data.TextLineDataset)
  if input_context is not None and input_context.num_input_pipelines > 1:
    dataset = dataset.shard(input_context.num_input_pipelines,
                            input_context.input_pipeline_id)
  if shuffle:
    dataset = dataset.shuffle(data_config.shuffle_buffer, seed=seed + 1)

  def pieces(lines):
    # lines: (chunk,) strings, one sentence each, tokens joined by " ".
    words = tf.strings.split(lines, sep=" ")  # (chunk, (n))
    # The packing rule of elmo_tf.sentences (shared with inference), with
    # training's length limit: (pieces, (<= limit + 2)).
    wrapped = sentences_lib.wrap_sentences(
        sentences_lib.cut_sentences(words, limit))
    # (pieces, <= limit + 2) padded with "", and (pieces,) lengths.
    return wrapped.to_tensor(default_value=""), wrapped.row_lengths()

  # Cutting chunks of lines at once is much faster than line by line.
  dataset = dataset.batch(_LINE_CHUNK)
  dataset = dataset.map(pieces, num_parallel_calls=tf.data.AUTOTUNE,
                        deterministic=True)
  dataset = dataset.unbatch()
  dataset = dataset.map(lambda tokens, length: tokens[:length])  # (n,)
  widths = _bucket_widths(limit)
  dataset = dataset.bucket_by_sequence_length(
      element_length_func=lambda tokens: tf.shape(tokens)[0],
      bucket_boundaries=[w + 1 for w in widths],
      bucket_batch_sizes=[batch_size] * (len(widths) + 1),
      padding_values="",
      pad_to_bucket_boundary=True,
      drop_remainder=drop_remainder)  # (batch, width) strings
  if skip_batches:
    dataset = dataset.skip(skip_batches)

  def features(tokens):
    # tokens: (batch, time) strings, "" = padding.
    # token_ids, char_ids (batch, time, 50), mask (batch, time).
    result = sentences_lib.token_features(tokens, vocabulary.lookup(tokens),
                                          char_ids_of_id)
    token_ids, mask = result["token_ids"], result["mask"]  # (batch, time)
    zeros = tf.zeros_like(token_ids[:, :1])  # (batch, 1)
    forward = tf.concat([token_ids[:, 1:], zeros], axis=1)  # (batch, time)
    backward = tf.concat([zeros, token_ids[:, :-1]], axis=1)  # (batch, time)
    result["forward_targets"] = tf.where(mask, forward, 0)
    result["backward_targets"] = tf.where(mask, backward, 0)
    return result

  return dataset.map(features, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)


# === stream mode ===
# The stream-mode data of a split, computed once per process (not per epoch
# or evaluation). The token stream depends only on the shards; the ids of
# its words also on the vocabulary (`PreparedCorpus.with_vocab` gives the
# same shards another one), so they are cached apart:
# (directory, split, shard stats) -> (words, stream, char_ids).
_token_streams = {}
# Vocabulary -> {(directory, split, shard stats): word_ids}; an entry goes
# with its vocabulary.
_stream_word_ids = weakref.WeakKeyDictionary()
# Vocabulary -> its `vocabulary_char_ids`.
_vocabulary_char_ids = weakref.WeakKeyDictionary()
# Distinct words whose character ids are computed at once (bounds the int32
# temporaries of `vocab.char_ids` to 65536 x 50 x 4 bytes = 13 MB).
_CHAR_ID_CHUNK = 65536


def vocabulary_char_ids(vocabulary: vocab_lib.Vocabulary) -> np.ndarray:
  """(vocabulary.size + 1, 50) uint16 character ids of every word id (row 0,
  padding, all zeros), computed once per vocabulary."""
  table = _vocabulary_char_ids.get(vocabulary)
  if table is None:
    table = _vocabulary_char_ids[vocabulary] = _char_id_table(
        [""] + list(vocabulary.tokens))
  return table


def _char_id_table(words: list[str]) -> np.ndarray:
  """`vocab.char_ids(words)` as a (len(words), 50) uint16 array.

  uint16 holds every id exactly (ids < 262) in half the memory of int32:
  100 bytes per distinct word (800k distinct words: 80 MB; PTB's 10k: 1 MB).
  """
  table = np.empty([len(words), vocab_lib.MAX_CHARACTERS_PER_TOKEN],
                   np.uint16)
  for start in range(0, len(words), _CHAR_ID_CHUNK):
    chunk = tf.constant(words[start:start + _CHAR_ID_CHUNK], dtype=tf.string)
    table[start:start + _CHAR_ID_CHUNK] = vocab_lib.char_ids(chunk).numpy()
  return table


def _shards_key(prepared: prepared_lib.PreparedCorpus, split: str):
  """Identifies the shards of `split`: a directory prepared again (new
  sizes or modification times) gets a new key."""
  stats = []
  for path in prepared.files(split):
    stat = os.stat(path)
    stats.append((path, stat.st_size, stat.st_mtime_ns))
  return (prepared.directory, split, tuple(stats))


def load_stream(prepared: prepared_lib.PreparedCorpus, split: str):
  """The token stream of `split`, each sentence as `<S> w1 .. wn </S>`.

  Returns:
    (words, word_ids, stream, char_ids): `words` the distinct strings,
    `words[0]` = "" (padding, the only empty one); `word_ids` (len(words),)
    int32 their ids in `prepared.vocab`; `stream` (N,) int32 indices into
    `words`; `char_ids` (len(words), 50) uint16 `vocab.char_ids(words)`
    (row 0 all zeros). Cached in this module: the shards are read and the
    character ids computed once per process, the word ids looked up once
    per vocabulary.
  """
  key = _shards_key(prepared, split)
  cached = _token_streams.get(key)
  if cached is None:
    index = {"": 0, vocab_lib.BOS_TOKEN: 1, vocab_lib.EOS_TOKEN: 2}
    words = ["", vocab_lib.BOS_TOKEN, vocab_lib.EOS_TOKEN]
    stream = array.array("i")  # 4 bytes per token.
    for sentence in prepared.sentences(split):
      stream.append(1)
      for word in sentence:
        i = index.get(word)
        if i is None:
          i = index[word] = len(words)
          words.append(word)
        stream.append(i)
      stream.append(2)
    cached = _token_streams[key] = (words,
                                    np.frombuffer(stream, dtype=np.int32),
                                    _char_id_table(words))
  words, stream, char_ids = cached
  vocabulary = prepared.vocab
  ids_of_vocabulary = _stream_word_ids.setdefault(vocabulary, {})
  word_ids = ids_of_vocabulary.get(key)
  if word_ids is None:
    word_ids = ids_of_vocabulary[key] = vocabulary.lookup(
        tf.constant(words)).numpy().astype(np.int32)
  return words, word_ids, stream, char_ids


def _stream_dataset(prepared, split, data_config, *, shuffle, seed, repeat,
                    input_context, skip_batches):
  _, word_ids, stream, char_ids = load_stream(prepared, split)
  n_tokens = len(stream)
  steps = data_config.unroll_steps
  global_batch = data_config.batch_size
  part, windows = _stream_geometry(n_tokens, global_batch, steps)
  batch_size = _per_replica_batch_size(data_config, input_context)
  if input_context is None:
    replicas_here, first_replica = 1, 0
  else:
    replicas_here = (input_context.num_replicas_in_sync
                     // input_context.num_input_pipelines)
    first_replica = input_context.input_pipeline_id * replicas_here

  # Per distinct word (n_words,) int32 word ids and (n_words, 50) uint16
  # character ids: a batch gathers rows instead of computing character ids
  # from strings (`sentences.indexed_token_features`).
  word_ids_t = tf.constant(word_ids, dtype=tf.int32)
  char_ids_t = tf.constant(char_ids, dtype=tf.uint16)
  stream_t = tf.constant(stream, dtype=tf.int32)  # (N,)
  columns = tf.range(steps, dtype=tf.int32)  # (T,)

  def offset(epoch):
    if not shuffle:
      return tf.constant(0, tf.int32)
    return tf.random.stateless_uniform(
        [], seed=tf.stack([tf.constant(seed, tf.int64), epoch]), minval=0,
        maxval=steps, dtype=tf.int32)

  def window(start_offset, rows, index, shift):
    """Stream indices (into words) of window `index`, moved by `shift`."""
    in_part = index * steps + columns  # (T,)
    # (rows, T) positions in the stream.
    position = (rows[:, tf.newaxis] * part + in_part[tf.newaxis, :]
                - start_offset)
    valid = tf.logical_and(
        tf.logical_and(position >= 0, position < n_tokens),
        (in_part < part)[tf.newaxis, :])  # (rows, T)
    source = position + shift
    valid_source = tf.logical_and(
        valid, tf.logical_and(source >= 0, source < n_tokens))
    gathered = tf.gather(stream_t, tf.clip_by_value(source, 0, n_tokens - 1))
    return tf.where(valid_source, gathered, 0)  # (rows, T)

  def batch(epoch, step, replica):
    start_offset = offset(epoch)
    rows = replica * batch_size + tf.range(batch_size, dtype=tf.int32)
    forward_window = tf.cast(step, tf.int32)
    backward_window = windows - 1 - forward_window
    result = {}
    for prefix, index, shift, target_key in (
        ("", forward_window, 1, "forward_targets"),
        ("backward_", backward_window, -1, "backward_targets")):
      current = window(start_offset, rows, index, 0)  # (rows, T)
      target = window(start_offset, rows, index, shift)  # (rows, T)
      target = tf.where(current > 0, target, 0)
      # The id / char-id step of elmo_tf.sentences on the precomputed rows:
      # token_ids, char_ids (rows, T, 50) int32 and mask (rows, T) ("" =
      # index 0 is padding).
      packed = sentences_lib.indexed_token_features(current, char_ids_t,
                                                    word_ids_t)
      for key, value in packed.items():
        result[prefix + key] = value
      result[target_key] = tf.gather(word_ids_t, target)
    return result

  epochs = (tf.data.Dataset.counter() if repeat
            else tf.data.Dataset.range(1))

  def epoch_steps(epoch):
    per_window = tf.data.Dataset.range(windows * replicas_here)
    return per_window.map(
        lambda k: (epoch, k // replicas_here,
                   tf.cast(first_replica + k % replicas_here, tf.int32)))

  dataset = epochs.flat_map(epoch_steps)
  if skip_batches:
    dataset = dataset.skip(skip_batches * replicas_here)
  return dataset.map(batch, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
