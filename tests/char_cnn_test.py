"""Tests for elmo_tf.layers.char_cnn."""

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.layers import char_cnn
from elmo_tf.layers.char_cnn import CharacterEncoder

_SLOTS = 50


def _char_row(word):
  """bilm-tf "+1" char ids of one ASCII word (see elmo_tf/vocab.py)."""
  row = np.full(_SLOTS, 261, np.int32)
  data = [b + 1 for b in word.encode("utf-8")[:48]]
  row[0] = 259
  row[1:1 + len(data)] = data
  row[1 + len(data)] = 260
  return row


def _char_ids(sentences, time):
  out = np.zeros((len(sentences), time, _SLOTS), np.int32)
  for b, words in enumerate(sentences):
    for t, w in enumerate(words):
      out[b, t] = _char_row(w)
  return out


class CharacterEncoderTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    keras.utils.set_random_seed(3)
    self.kwargs = dict(projection_dim=6, filters=((1, 4), (2, 4), (3, 8)),
                       n_highway=2, embedding_dim=5, name="char_encoder")
    self.sentences = [["the", "cat", "sat", "the"], ["a", "cat"],
                      ["on", "the", "mat", "<unk>"]]
    self.char_ids = tf.constant(_char_ids(self.sentences, 5))

  def test_shapes_and_padding_zero(self):
    encoder = CharacterEncoder(**self.kwargs)
    out = encoder(self.char_ids)
    self.assertEqual(out.shape, (3, 5, 6))
    self.assertEqual(encoder.compute_output_shape((3, 5, 50)), (3, 5, 6))
    # Padding tokens (all-zero rows) give zeros, real tokens do not.
    self.assertAllEqual(out[1, 2:], np.zeros((3, 6)))
    self.assertAllEqual(out[0, 4], np.zeros(6))
    self.assertGreater(float(tf.reduce_min(tf.reduce_sum(
        tf.abs(out[0, :4]), -1))), 0.0)
    # Same word, same vector, wherever it is.
    self.assertAllClose(out[0, 0], out[2, 1])
    self.assertAllClose(out[0, 1], out[1, 1])
    # Any leading shape.
    flat = encoder(tf.reshape(self.char_ids, (15, 50)))
    self.assertAllClose(tf.reshape(flat, (3, 5, 6)), out)

  def test_shortcuts_give_same_outputs_and_gradients(self):
    # Short words, padding tokens, and a batch with a 48-byte token (then
    # nothing can be trimmed).
    batches = [self.char_ids,
               tf.constant(_char_ids([["x" * 60, "ab"], ["ab"]], 3))]
    for char_ids in batches:
      results = {}
      # (window_max_kernel only acts with trim_padding.)
      for deduplicate, trim_padding, window_max_kernel in (
          (True, True, True), (True, True, False), (True, False, False),
          (False, True, True), (False, True, False), (False, False, False)):
        keras.utils.set_random_seed(11)
        encoder = CharacterEncoder(deduplicate=deduplicate,
                                   trim_padding=trim_padding,
                                   window_max_kernel=window_max_kernel,
                                   **self.kwargs)
        with tf.GradientTape() as tape:
          out = encoder(char_ids)
          loss = tf.reduce_sum(out ** 2)
        grads = tape.gradient(loss, encoder.trainable_variables)
        results[deduplicate, trim_padding, window_max_kernel] = (
            out, [tf.convert_to_tensor(g) for g in grads])
      naive_out, naive_grads = results[False, False, False]
      for key, (out, grads) in results.items():
        self.assertAllClose(out, naive_out, atol=1e-6, msg=str(key))
        for g, g_naive in zip(grads, naive_grads):
          self.assertAllClose(g, g_naive, atol=1e-5, msg=str(key))

  def test_trim_padding_keeps_the_windows_inside_each_token(self):
    encoder = CharacterEncoder(**self.kwargs)
    rows = tf.reshape(self.char_ids, (-1, 50))
    # Longest token "<unk>": begin-word, 5 bytes, end-word = 7 slots; the
    # widest filter is 3.
    kept, (starts, row_of) = encoder._trim_padding_slots(rows)
    self.assertEqual(kept.shape, (15, 10))
    # Row 0 is "the" (5 slots): windows start at 0..5, the last one all
    # padding; padding tokens (rows 4, 7, 8, 9, 14) get one window.
    self.assertAllEqual(starts[:6], range(6))
    self.assertAllEqual(row_of[:6], [0] * 6)
    lengths = [5, 5, 5, 5, 0, 3, 5, 0, 0, 0, 4, 5, 5, 7, 0]
    self.assertAllEqual(tf.math.bincount(row_of), [n + 1 for n in lengths])
    long_rows = tf.constant(_char_ids([["y" * 46]], 1)[0])
    kept, (starts, _) = encoder._trim_padding_slots(long_rows)
    self.assertEqual(kept.shape, (1, 50))
    # 48 slots; the convolutions move starts past 50 - width back.
    self.assertAllEqual(starts, range(49))
    kept, (starts, row_of) = encoder._trim_padding_slots(
        tf.zeros((4, 50), tf.int32))
    self.assertEqual(kept.shape, (4, 3))
    self.assertAllEqual(row_of, range(4))

  def test_runs_in_tf_function_with_unknown_shapes(self):
    encoder = CharacterEncoder(**self.kwargs)
    eager = encoder(self.char_ids)
    encode = tf.function(encoder.__call__, input_signature=[
        tf.TensorSpec((None, None, 50), tf.int32)])
    self.assertAllClose(encode(self.char_ids), eager, atol=1e-6)

  def test_convolution_matches_tf_conv1d(self):
    encoder = CharacterEncoder(**self.kwargs)
    encoder.build()
    rows = tf.reshape(self.char_ids, (-1, 50))
    embedded = encoder.char_embedding(rows)
    for conv in encoder.convolutions:
      expected = tf.reduce_max(
          tf.nn.conv1d(embedded, conv.kernel, 1, "VALID"), axis=1) + conv.bias
      self.assertAllClose(
          conv(rows, embeddings=encoder.char_embedding.embeddings), expected,
          atol=1e-5)

  def test_gradients_match_conv1d_and_the_table_gradient_is_dense(self):
    encoder = CharacterEncoder(**self.kwargs)
    encoder.build()
    rows = tf.reshape(self.char_ids, (-1, 50))
    table = encoder.char_embedding.embeddings
    weights = tf.random.stateless_normal((rows.shape[0], 16), seed=(1, 2))

    def loss_of(pooled):
      return tf.reduce_sum(tf.concat(pooled, axis=-1) * weights)

    with tf.GradientTape(persistent=True) as tape:
      # The reference: embed, then tf.nn.conv1d over the embedded slots.
      embedded = tf.gather(table, rows)
      expected = loss_of([
          tf.reduce_max(tf.nn.conv1d(embedded, conv.kernel, 1, "VALID"),
                        axis=1) + conv.bias for conv in encoder.convolutions])
      got = loss_of([conv(rows, embeddings=char_cnn._dense_gradient(table))
                     for conv in encoder.convolutions])
    self.assertAllClose(got, expected, atol=1e-4)
    variables = [table] + [v for conv in encoder.convolutions
                           for v in (conv.kernel, conv.bias)]
    for e, g in zip(tape.gradient(expected, variables),
                    tape.gradient(got, variables)):
      self.assertAllClose(tf.convert_to_tensor(g), tf.convert_to_tensor(e),
                          atol=1e-4)
    # One row per character in the global gradient norm (IndexedSlices
    # would hold one per occurrence, and inflate the norm).
    self.assertIsInstance(tape.gradient(got, table), tf.Tensor)

  def test_weight_layout(self):
    encoder = CharacterEncoder(**self.kwargs)
    encoder.build()
    shapes = {v.path.split("char_encoder/")[-1]: tuple(v.shape)
              for v in encoder.weights}
    self.assertEqual(shapes["char_embedding/embeddings"], (262, 5))
    self.assertEqual(shapes["cnn_2/kernel"], (3, 5, 8))
    self.assertEqual(shapes["cnn_2/bias"], (8,))
    self.assertEqual(shapes["highway_1/carry_kernel"], (16, 16))
    self.assertEqual(shapes["projection/kernel"], (16, 6))
    self.assertLen(encoder.trainable_variables, 1 + 2 * 3 + 2 * 4 + 2)

  def test_from_model_config(self):
    config = config_lib.preset("tiny")
    encoder = CharacterEncoder.from_model_config(config)
    self.assertEqual(encoder.projection_dim, config.lstm.projection_dim)
    self.assertEqual(encoder.filters, config.char_cnn.filters)
    self.assertEqual(encoder.n_highway, config.char_cnn.n_highway)

  def test_config_round_trip(self):
    encoder = CharacterEncoder(activation="tanh", deduplicate=False,
                               **self.kwargs)
    clone = CharacterEncoder.from_config(encoder.get_config())
    self.assertEqual(clone.get_config(), encoder.get_config())
    encoder.build()
    clone.build()
    clone.set_weights(encoder.get_weights())
    self.assertAllClose(clone(self.char_ids), encoder(self.char_ids))
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(encoder))
    self.assertIsInstance(restored, CharacterEncoder)

  def test_mixed_bfloat16_runs_narrow_filters_in_float32(self):
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      encoder = CharacterEncoder(projection_dim=6, filters=((1, 4), (2, 512)),
                                 n_highway=1, embedding_dim=5)
      out = encoder(self.char_ids)

      @tf.function
      def run(char_ids):
        return encoder(char_ids)

      graph = run.get_concrete_function(self.char_ids).graph
    finally:
      keras.mixed_precision.set_global_policy(policy)
    self.assertEqual(out.dtype, tf.bfloat16)
    # The convolutions' matmuls: windows (w, width * 5) @ kernel.
    convolution_dtypes = {
        (op.inputs[1].shape[0], op.get_attr("T"))
        for op in graph.get_operations()
        if op.type == "MatMul" and "/cnn_" in op.name}
    self.assertEqual(convolution_dtypes,
                     {(5, tf.float32), (10, tf.bfloat16)})

  def test_rejects_too_wide_filters(self):
    with self.assertRaisesRegex(ValueError, "exceeds"):
      CharacterEncoder(projection_dim=4, filters=((51, 2),))


if __name__ == "__main__":
  tf.test.main()
