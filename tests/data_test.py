"""Tests for elmo_tf.data: targets, stream windows, coverage, determinism,
the stream cache, character ids looked up per word equal those computed from
strings."""

import collections
import os
import random
import shutil
import tempfile
import unittest
from unittest import mock

import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import data
from elmo_tf import prepare
from elmo_tf import prepared_corpus
from elmo_tf import sentences as sentences_lib
from elmo_tf import vocab as vocab_lib

LONG_TOKEN = "y" * 60  # Longer than the 48 bytes a token can hold.
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "mat", "big", "red",
         "blue", "fast", "slow", "tree", "house"]


def _toy_sentences():
  rng = random.Random(0)
  sentences = [[rng.choice(WORDS) for _ in range(rng.randint(1, 9))]
               for _ in range(37)]
  sentences[5] = ["the", LONG_TOKEN, "cat"]
  sentences[11] = [WORDS[i % len(WORDS)] for i in range(23)]  # > 10 words.
  return sentences


class DataTestBase(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.sentences = _toy_sentences()
    train = os.path.join(cls.tmp, "train.txt")
    with open(train, "w", encoding="utf-8") as f:
      for sentence in cls.sentences:
        f.write(" ".join(sentence) + "\n")
    # "zebra" is out of the vocabulary.
    valid = os.path.join(cls.tmp, "valid.txt")
    with open(valid, "w", encoding="utf-8") as f:
      f.write("the zebra sat\n")
    cls.prepared = prepare.prepare_corpus(
        f"train={train};valid={valid}", "whitespace",
        os.path.join(cls.tmp, "prepared"), lines_per_shard=10)
    cls.vocab = cls.prepared.vocab

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  def config(self, **kwargs):
    defaults = dict(batch_size=4, unroll_steps=5, max_sentence_length=10,
                    shuffle_buffer=16)
    defaults.update(kwargs)
    return config_lib.DataConfig(**defaults)

  def ids(self, tokens):
    return [self.vocab.token_to_id(t) for t in tokens]

  def stream_ids(self):
    stream = []
    for sentence in self.sentences:
      stream += [vocab_lib.BOS_ID] + self.ids(sentence) + [vocab_lib.EOS_ID]
    return stream

  def batches(self, dataset):
    return [{k: v.numpy() for k, v in batch.items()} for batch in dataset]


class SentencesModeTest(DataTestBase):

  def test_rows_targets_and_pieces(self):
    config = self.config(batching="sentences")
    batches = self.batches(data.make_dataset(
        self.prepared, "train", config, shuffle=False, seed=0))
    rows = []
    for batch in batches:
      self.assertEqual(batch["char_ids"].shape,
                       batch["token_ids"].shape + (50,))
      self.assertEqual(batch["token_ids"].shape[1] % 8, 0)
      for ids, mask, fwd, bwd, chars in zip(
          batch["token_ids"], batch["mask"], batch["forward_targets"],
          batch["backward_targets"], batch["char_ids"]):
        n = int(mask.sum())
        self.assertTrue(mask[:n].all())
        self.assertTrue((ids[n:] == 0).all())
        self.assertTrue((chars[n:] == 0).all())
        self.assertEqual(ids[0], vocab_lib.BOS_ID)
        self.assertEqual(ids[n - 1], vocab_lib.EOS_ID)
        np.testing.assert_array_equal(fwd[:n], list(ids[1:n]) + [0])
        np.testing.assert_array_equal(bwd[:n], [0] + list(ids[:n - 1]))
        self.assertTrue((fwd[n:] == 0).all() and (bwd[n:] == 0).all())
        rows.append(tuple(ids[:n]))
    # Every sentence appears, long ones cut into pieces of <= 10 words, each
    # in its own <S> .. </S>.
    expected = []
    for sentence in self.sentences:
      for start in range(0, len(sentence), 10):
        expected.append(tuple([vocab_lib.BOS_ID]
                              + self.ids(sentence[start:start + 10])
                              + [vocab_lib.EOS_ID]))
    self.assertEqual(collections.Counter(rows), collections.Counter(expected))
    self.assertEqual(len(batches), data.steps_per_epoch(
        self.prepared, "train", config))

  def test_training_batches_are_full_and_deterministic(self):
    config = self.config(batching="sentences")
    make = lambda seed: self.batches(data.make_dataset(
        self.prepared, "train", config, shuffle=True, seed=seed))
    first, again, other = make(7), make(7), make(8)
    self.assertTrue(all(b["token_ids"].shape[0] == 4 for b in first))
    self.assertEqual(len(first), data.steps_per_epoch(
        self.prepared, "train", config, drop_remainder=True))
    self.assertEqual(len(first), len(again))
    for a, b in zip(first, again):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    self.assertFalse(all(
        a["token_ids"].shape == b["token_ids"].shape
        and (a["token_ids"] == b["token_ids"]).all()
        for a, b in zip(first, other)))

  def test_long_token_and_unknown_word(self):
    config = self.config(batching="sentences", batch_size=1)
    batches = self.batches(data.make_dataset(
        self.prepared, "train", config, shuffle=False, seed=0))
    long_id = self.vocab.token_to_id(LONG_TOKEN)
    found = [b for b in batches if (b["token_ids"] == long_id).any()]
    self.assertEqual(len(found), 1)
    position = list(found[0]["token_ids"][0]).index(long_id)
    chars = found[0]["char_ids"][0, position]
    np.testing.assert_array_equal(
        chars, [vocab_lib.BOW_CHAR] + [ord("y") + 1] * 48
        + [vocab_lib.EOW_CHAR])
    valid = self.batches(data.make_dataset(
        self.prepared, "valid", config, shuffle=False, seed=0))
    np.testing.assert_array_equal(
        valid[0]["token_ids"][0, :5],
        [vocab_lib.BOS_ID, self.vocab.token_to_id("the"), vocab_lib.UNK_ID,
         self.vocab.token_to_id("sat"), vocab_lib.EOS_ID])
    # The unknown word still gets its own characters.
    self.assertEqual(list(valid[0]["char_ids"][0, 2, :7]),
                     [vocab_lib.BOW_CHAR] + [ord(c) + 1 for c in "zebra"]
                     + [vocab_lib.EOW_CHAR])

  def test_input_pipelines_split_the_sentences(self):
    config = self.config(batching="sentences")
    rows = []
    for pipeline in range(2):
      context = tf.distribute.InputContext(
          num_input_pipelines=2, input_pipeline_id=pipeline,
          num_replicas_in_sync=2)
      for batch in self.batches(data.make_dataset(
          self.prepared, "train", config, shuffle=False, seed=0,
          input_context=context)):
        self.assertLessEqual(batch["token_ids"].shape[0], 2)
        rows += [tuple(r[m]) for r, m in zip(batch["token_ids"],
                                              batch["mask"])]
    self.assertEqual(len(rows), len(self.sentences) + 2)  # 23 words: 3 pieces.


class StreamModeTest(DataTestBase):

  def check_epoch(self, batches, batch_size=4):
    """Checks one epoch of stream batches against the text."""
    stream = self.stream_ids()
    steps = 5
    windows = len(batches)
    # Forward: row b read left to right is part b; the parts in order are
    # the stream (padding only outside the text).
    forward_rows = np.concatenate([b["token_ids"] for b in batches], axis=1)
    forward_mask = np.concatenate([b["mask"] for b in batches], axis=1)
    forward_targets = np.concatenate([b["forward_targets"] for b in batches],
                                     axis=1)
    self.assertEqual(forward_rows.shape, (batch_size, windows * steps))
    np.testing.assert_array_equal(forward_rows[forward_mask], stream)
    # Every token but the first is a forward target exactly once, in order.
    np.testing.assert_array_equal(forward_targets[forward_mask],
                                  stream[1:] + [0])
    self.assertTrue((forward_targets[~forward_mask] == 0).all())
    # Backward: batch k holds window W-1-k, so the batches in reverse order
    # give the text; the backward window of batch k+1 ends right where the
    # one of batch k starts.
    backward_rows = np.concatenate(
        [b["backward_token_ids"] for b in reversed(batches)], axis=1)
    backward_mask = np.concatenate(
        [b["backward_mask"] for b in reversed(batches)], axis=1)
    backward_targets = np.concatenate(
        [b["backward_targets"] for b in reversed(batches)], axis=1)
    np.testing.assert_array_equal(backward_rows, forward_rows)
    np.testing.assert_array_equal(backward_mask, forward_mask)
    for k, batch in enumerate(batches):
      window = windows - 1 - k
      np.testing.assert_array_equal(
          batch["backward_token_ids"],
          forward_rows[:, window * steps:(window + 1) * steps])
    # Every token but the last is a backward target exactly once.
    np.testing.assert_array_equal(backward_targets[backward_mask],
                                  [0] + stream[:-1])
    self.assertTrue((backward_targets[~backward_mask] == 0).all())
    for batch in batches:
      self.assertEqual(batch["char_ids"].shape, (batch_size, steps, 50))
      self.assertTrue((batch["char_ids"][~batch["mask"]] == 0).all())
      self.assertTrue((batch["backward_char_ids"][batch["backward_mask"]]
                       [:, 0] == vocab_lib.BOW_CHAR).all())

  def test_one_epoch_covers_every_token_once_per_direction(self):
    config = self.config(batching="stream")
    batches = self.batches(data.make_dataset(
        self.prepared, "train", config, shuffle=False, seed=0))
    self.assertEqual(len(batches),
                     data.steps_per_epoch(self.prepared, "train", config))
    self.check_epoch(batches)
    # Lookahead across windows: the last forward target of window 0 in row 0
    # is the first token of window 1.
    self.assertEqual(batches[0]["forward_targets"][0, -1],
                     batches[1]["token_ids"][0, 0])
    # Backward batch 0 holds the last window; its first backward target is
    # the last token of the window before, which backward batch 1 holds.
    self.assertEqual(batches[0]["backward_targets"][0, 0],
                     batches[1]["backward_token_ids"][0, -1])

  def test_shuffled_epochs_move_the_offset_and_still_cover_everything(self):
    config = self.config(batching="stream")
    steps = data.steps_per_epoch(self.prepared, "train", config)
    dataset = data.make_dataset(self.prepared, "train", config, shuffle=True,
                                seed=3, repeat=True)
    batches = self.batches(dataset.take(4 * steps))
    epochs = [batches[i * steps:(i + 1) * steps] for i in range(4)]
    for epoch in epochs:
      self.check_epoch(epoch)
    first_tokens = {tuple(e[0]["token_ids"][0]) for e in epochs}
    self.assertGreater(len(first_tokens), 1)
    again = self.batches(data.make_dataset(
        self.prepared, "train", config, shuffle=True, seed=3,
        repeat=True).take(4 * steps))
    for a, b in zip(batches, again):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])

  def test_replicas_keep_their_rows(self):
    config = self.config(batching="stream")
    full = self.batches(data.make_dataset(self.prepared, "train", config,
                                          shuffle=False, seed=0))
    for pipeline in range(2):
      # 4 replicas on 2 workers: each pipeline feeds 2 replicas of 1 row.
      context = tf.distribute.InputContext(
          num_input_pipelines=2, input_pipeline_id=pipeline,
          num_replicas_in_sync=4)
      part = self.batches(data.make_dataset(
          self.prepared, "train", config, shuffle=False, seed=0,
          input_context=context))
      self.assertEqual(len(part), 2 * len(full))
      for k, batch in enumerate(part):
        replica = 2 * pipeline + k % 2
        for key in batch:
          np.testing.assert_array_equal(
              batch[key], full[k // 2][key][replica:replica + 1])

  def test_skip_batches_and_iterator_checkpoint(self):
    config = self.config(batching="stream")
    make = lambda **kw: data.make_dataset(self.prepared, "train", config,
                                          shuffle=True, seed=1, repeat=True,
                                          **kw)
    iterator = iter(make())
    for _ in range(3):
      next(iterator)
    checkpoint = tf.train.Checkpoint(iterator=iterator)
    path = checkpoint.save(os.path.join(self.tmp, "ckpt", "it"))
    expected = [next(iterator)["token_ids"].numpy() for _ in range(4)]
    restored = iter(make())
    tf.train.Checkpoint(iterator=restored).restore(path)
    skipped = make(skip_batches=3)
    for want, a, b in zip(expected, restored, skipped):
      np.testing.assert_array_equal(a["token_ids"], want)
      np.testing.assert_array_equal(b["token_ids"], want)

  def test_empty_split_and_bad_mode(self):
    with self.assertRaisesRegex(ValueError, "empty"):
      data.make_dataset(self.prepared, "test", self.config(), shuffle=False,
                        seed=0)
    with self.assertRaisesRegex(ValueError, "batching"):
      data.make_dataset(self.prepared, "train", self.config(batching="bptt"),
                        shuffle=False, seed=0)


class StreamCacheTest(DataTestBase):

  def _prepare(self, name, lines):
    path = os.path.join(self.tmp, f"{name}.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write("".join(line + "\n" for line in lines))
    return prepare.prepare_corpus(f"train={path}", "whitespace",
                                  os.path.join(self.tmp, name),
                                  overwrite=True)

  def test_stream_is_read_once_and_ids_follow_the_vocabulary(self):
    lines = [" ".join(s) for s in self.sentences]
    corpus = self._prepare("cached", lines)
    with mock.patch.object(prepared_corpus, "read_sentences",
                           wraps=prepared_corpus.read_sentences) as read:
      first = self.batches(data.make_dataset(
          corpus, "train", self.config(batching="stream"), shuffle=False,
          seed=0))
      # Other batches, a shuffled epoch, the corpus loaded again: the same
      # stream, read once.
      self.batches(data.make_dataset(
          corpus, "train", self.config(batching="stream", batch_size=2),
          shuffle=True, seed=1))
      reloaded = prepare.PreparedCorpus.load(corpus.directory)
      again = self.batches(data.make_dataset(
          reloaded, "train", self.config(batching="stream"), shuffle=False,
          seed=0))
      self.assertEqual(read.call_count, 1)
      for a, b in zip(first, again, strict=True):
        for key in a:
          np.testing.assert_array_equal(a[key], b[key])
      # Another vocabulary: the same stream, other ids.
      small = vocab_lib.Vocabulary(["<S>", "</S>", "<UNK>", "cat"])
      words, ids, stream, chars = data.load_stream(corpus, "train")
      small_words, small_ids, small_stream, small_chars = data.load_stream(
          corpus.with_vocab(small), "train")
      self.assertEqual(read.call_count, 1)
      self.assertIs(small_words, words)
      self.assertIs(small_stream, stream)
      self.assertIs(small_chars, chars)
      self.assertEqual(ids.tolist(),
                       [0] + [corpus.vocab.token_to_id(w) for w in words[1:]])
      self.assertEqual(small_ids.tolist(), [0, vocab_lib.BOS_ID,
                                            vocab_lib.EOS_ID] + [
          4 if w == "cat" else vocab_lib.UNK_ID for w in words[3:]])
      self.assertIs(data.load_stream(corpus.with_vocab(small), "train")[1],
                    small_ids)
      small_batches = self.batches(data.make_dataset(
          corpus.with_vocab(small), "train", self.config(batching="stream"),
          shuffle=False, seed=0))
      self.assertEqual(read.call_count, 1)
    for a, b in zip(first, small_batches, strict=True):
      np.testing.assert_array_equal(a["mask"], b["mask"])
      np.testing.assert_array_equal(a["char_ids"], b["char_ids"])
      self.assertTrue(set(np.unique(b["token_ids"])) <= {
          0, vocab_lib.BOS_ID, vocab_lib.EOS_ID, vocab_lib.UNK_ID, 4})
    # The directory prepared again from other text: a new stream.
    changed = self._prepare("cached", lines[:5])
    self.assertEqual(changed.directory, corpus.directory)
    _, _, new_stream, _ = data.load_stream(changed, "train")
    self.assertEqual(len(new_stream),
                     sum(len(s) + 2 for s in self.sentences[:5]))


class CharIdLookupTest(DataTestBase):
  """Both modes gather precomputed character ids (per distinct stream word,
  per word id); the batches must equal `sentences.token_features` of the
  strings."""

  # Multi-byte UTF-8, literal sentence markers, and words longer than 48
  # bytes, cut at byte 48 on a character boundary and inside one.
  UNICODE_WORDS = ["naïve", "日本語", "😀x", "<S>", "</S>", "<UNK>",
                   "é" * 30, "a" + "日" * 20, "z" * 49, "q" * 48]

  def _corpus(self, name):
    rng = random.Random(1)
    pool = self.UNICODE_WORDS + WORDS[:5]
    lines = [" ".join(rng.choice(pool) for _ in range(rng.randint(1, 7)))
             for _ in range(19)]
    text = os.path.join(self.tmp, f"{name}.txt")
    with open(text, "w", encoding="utf-8") as f:
      f.write("".join(line + "\n" for line in lines))
    # valid: words missing from the vocabulary (<UNK> ids, own characters).
    valid = os.path.join(self.tmp, f"{name}_valid.txt")
    with open(valid, "w", encoding="utf-8") as f:
      f.write("naïve zèbre 未知 " + "ü" * 40 + " <UNK>\nthe\n")
    return prepare.prepare_corpus(
        f"train={text};valid={valid}", "whitespace",
        os.path.join(self.tmp, name), lines_per_shard=7, max_vocab=12)

  def test_stream_features_equal_those_of_the_strings(self):
    corpus = self._corpus("unicode_stream")
    for split in ("train", "valid"):
      words, word_ids, stream, _ = data.load_stream(corpus, split)
      self.assertEqual(words[0], "")
      self.assertTrue(any(len(w.encode()) > 48 for w in words), split)
      config = self.config(batching="stream", batch_size=3, unroll_steps=4)
      batches = self.batches(data.make_dataset(corpus, split, config,
                                               shuffle=False, seed=0))
      part, windows = data._stream_geometry(len(stream), 3, 4)
      self.assertEqual(len(batches), windows)
      for k, batch in enumerate(batches):
        for prefix, window in (("", k), ("backward_", windows - 1 - k)):
          # (3, 4) stream positions of the window; padding past the text.
          in_part = window * 4 + np.arange(4)
          position = np.arange(3)[:, None] * part + in_part[None, :]
          valid = (position < len(stream)) & (in_part < part)[None, :]
          index = np.where(valid, stream[np.minimum(position,
                                                    len(stream) - 1)], 0)
          tokens = np.array(words, dtype=object)[index]  # (3, 4) strings
          expected = sentences_lib.token_features(
              tf.constant(tokens.astype(str)), word_ids[index])
          for key, value in expected.items():
            got = batch[prefix + key]
            self.assertEqual(got.dtype, value.dtype.as_numpy_dtype, key)
            np.testing.assert_array_equal(got, value.numpy(),
                                          f"{split} {prefix}{key} batch {k}")

  def test_sentence_features_equal_those_of_the_strings(self):
    corpus = self._corpus("unicode_sentences")
    table = data.vocabulary_char_ids(corpus.vocab)
    self.assertIs(data.vocabulary_char_ids(corpus.vocab), table)
    self.assertEqual(table.dtype, np.uint16)
    self.assertEqual(table.shape, (corpus.vocab.size + 1, 50))
    config = self.config(batching="sentences", batch_size=2)
    from_strings = sentences_lib.token_features
    make = lambda split: self.batches(data.make_dataset(
        corpus, split, config, shuffle=False, seed=0))
    unknown = 0
    for split in ("train", "valid"):
      looked_up = make(split)
      # The same pipeline computing every token's characters from its string.
      with mock.patch.object(
          sentences_lib, "token_features",
          lambda tokens, token_ids, table: from_strings(tokens, token_ids)):
        computed = make(split)
      for a, b in zip(looked_up, computed, strict=True):
        self.assertEqual(sorted(a), sorted(b))
        for key in a:
          self.assertEqual(a[key].dtype, b[key].dtype, key)
          np.testing.assert_array_equal(a[key], b[key], key)
        unknown += int((a["token_ids"] == vocab_lib.UNK_ID).sum())
    # The string fallback ran: unknown words, and the literal word <UNK>.
    self.assertGreater(unknown, 3)


if __name__ == "__main__":
  unittest.main()
