"""Tests for elmo_tf.ops.highway_gate: the op against TensorFlow's ops, in
the highway layer and the character encoder, and absent from exports (the
op compiles here if make setup did not build it; the tests fail when it
cannot)."""

from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf.layers.char_cnn import CharacterEncoder
from elmo_tf.layers.highway import Highway
from elmo_tf.ops import highway_gate


def _reference(carry_z, transform_z, x, carry_bias, transform_bias):
  """The layer's formula in TensorFlow ops, float64."""
  f64 = lambda t: tf.cast(t, tf.float64)
  gate = tf.sigmoid(f64(carry_z) + f64(carry_bias))
  transformed = tf.nn.relu(f64(transform_z) + f64(transform_bias))
  return gate * transformed + (1 - gate) * f64(x)


def _graph_op_types(layer, *args, **kwargs):
  """Op types of the forward and gradient graph of `layer(*args)`."""

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      out = layer(*args, **kwargs)
      loss = tf.reduce_sum(tf.cast(out, tf.float32))
    return tape.gradient(loss, layer.trainable_variables)

  graph = step.get_concrete_function().graph
  return {op.type for op in graph.get_operations()}


class HighwayGateOpTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    # Fails, not skips, when the op cannot build: CI should notice.
    assert highway_gate.load() is not None, highway_gate.failure()
    rng = np.random.default_rng(5)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)
    # (5, 48); some transform pre-activations negative (relu's zero side).
    self.inputs = [normal(5, 48) * 2, normal(5, 48) * 2, normal(5, 48),
                   normal(48), normal(48)]

  def _op_and_gradients(self, dtype):
    carry_z, transform_z, x = (tf.cast(v, dtype) for v in self.inputs[:3])
    carry_bias, transform_bias = (tf.constant(v) for v in self.inputs[3:])
    d_y = tf.cast(tf.linspace(-1.0, 1.0, 5 * 48), dtype)
    d_y = tf.reshape(d_y, (5, 48))
    with tf.GradientTape() as tape:
      tape.watch([carry_z, transform_z, x, carry_bias, transform_bias])
      y = highway_gate.highway_gate(carry_z, transform_z, x, carry_bias,
                                    transform_bias)
      loss = tf.reduce_sum(tf.cast(y * d_y, tf.float32))
    grads = tape.gradient(
        loss, [carry_z, transform_z, x, carry_bias, transform_bias])
    return y, grads, d_y

  def test_float32_matches_the_formula_and_its_gradient(self):
    y, grads, d_y = self._op_and_gradients(tf.float32)
    self.assertEqual(y.dtype, tf.float32)
    variables = [tf.constant(v, tf.float64) for v in self.inputs]
    with tf.GradientTape() as tape:
      tape.watch(variables)
      want = _reference(*variables)
      loss = tf.reduce_sum(want * tf.cast(d_y, tf.float64))
    want_grads = tape.gradient(loss, variables)
    self.assertAllClose(y, want, atol=1e-6)
    for name, got, expected in zip(
        ["carry_z", "transform_z", "x", "carry_bias", "transform_bias"],
        grads, want_grads):
      with self.subTest(gradient=name):
        self.assertEqual(got.dtype, tf.float32)
        self.assertAllClose(got, expected, atol=1e-5)

  def test_bfloat16_rounds_only_the_outputs(self):
    y, grads, _ = self._op_and_gradients(tf.bfloat16)
    self.assertEqual(y.dtype, tf.bfloat16)
    # The float32 result of the bfloat16 inputs, rounded once.
    rounded_inputs = [tf.cast(tf.cast(v, tf.bfloat16), tf.float32)
                      for v in self.inputs[:3]] + self.inputs[3:]
    want = tf.cast(tf.cast(_reference(*rounded_inputs), tf.float32),
                   tf.bfloat16)
    self.assertAllClose(tf.cast(y, tf.float32), tf.cast(want, tf.float32),
                        atol=1e-2, rtol=2 ** -8)
    self.assertEqual(grads[0].dtype, tf.bfloat16)
    # The biases' gradients are summed and returned in float32.
    self.assertEqual(grads[3].dtype, tf.float32)
    self.assertEqual(grads[4].dtype, tf.float32)

  def test_casts_give_tf_casts_values_and_gradients(self):
    # Ties round to even, NaN and infinities stay, tiny values too.
    values = np.array([1.0, 1.00390625, 1.01171875, -3.3e-3, 1e-40, 3e38,
                       np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)
    values = np.concatenate([values, self.inputs[0].ravel()])
    x = tf.constant(values)
    got = highway_gate.cast(x, tf.bfloat16)
    want = tf.cast(x, tf.bfloat16)
    self.assertEqual(got.dtype, tf.bfloat16)
    self.assertAllEqual(tf.bitcast(got, tf.uint16), tf.bitcast(want, tf.uint16))
    back = highway_gate.cast(got, tf.float32)
    self.assertAllEqual(tf.bitcast(back, tf.uint32),
                        tf.bitcast(tf.cast(want, tf.float32), tf.uint32))
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = highway_gate.cast(x, tf.bfloat16)
      loss = tf.reduce_sum(tf.cast(y, tf.float32) * 3.0)
    grad = tape.gradient(loss, x)
    self.assertEqual(grad.dtype, tf.float32)
    self.assertAllEqual(grad, np.full(values.shape, 3.0, np.float32))

  def test_bad_shapes_are_errors(self):
    carry_z, transform_z, x, carry_bias, transform_bias = self.inputs
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                "must be shaped as input 0"):
      highway_gate.highway_gate(carry_z, transform_z[:, :4], x, carry_bias,
                                transform_bias)
    with self.assertRaisesRegex(tf.errors.InvalidArgumentError,
                                r"bias input 4 must be \(48\)"):
      highway_gate.highway_gate(carry_z, transform_z, x, carry_bias,
                                transform_bias[:3])


class HighwayGateLayerTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    # Fails, not skips, when the op cannot build: CI should notice.
    assert highway_gate.load() is not None, highway_gate.failure()
    self.x = tf.constant(
        np.random.default_rng(2).normal(size=(7, 16)).astype(np.float32))

  def _layer(self):
    keras.utils.set_random_seed(4)
    layer = Highway(name="highway_0")
    layer.build((None, 16))
    layer.carry_bias.assign(tf.fill((16,), 0.3))
    return layer

  def _outputs_and_gradients(self, layer, x, gate_kernel):
    with tf.GradientTape() as tape:
      tape.watch(x)
      out = layer(x, gate_kernel=gate_kernel)
      loss = tf.reduce_sum(tf.cast(out, tf.float32) ** 2)
    return out, tape.gradient(loss, [x] + layer.trainable_variables)

  def test_same_outputs_and_gradients_as_tensorflow_ops(self):
    layer = self._layer()
    want, want_grads = self._outputs_and_gradients(layer, self.x, False)
    got, got_grads = self._outputs_and_gradients(layer, self.x, True)
    self.assertAllClose(got, want, atol=1e-6)
    for g, w in zip(got_grads, want_grads):
      self.assertAllClose(g, w, atol=1e-5)
    types = _graph_op_types(layer, self.x, gate_kernel=True)
    self.assertIn("ElmoHighwayGate", types)
    self.assertIn("ElmoHighwayGateGrad", types)
    self.assertNotIn("Sigmoid", types)
    self.assertIn("Sigmoid",
                  _graph_op_types(layer, self.x, gate_kernel=False))

  def test_mixed_bfloat16_within_rounding(self):
    layer = self._layer()
    want, want_grads = self._outputs_and_gradients(layer, self.x, False)
    bf16_layer = Highway(name="highway_0", dtype="mixed_bfloat16")
    bf16_layer.build((None, 16))
    bf16_layer.set_weights(layer.get_weights())
    x = tf.cast(self.x, tf.bfloat16)
    got, got_grads = self._outputs_and_gradients(bf16_layer, x, True)
    self.assertEqual(got.dtype, tf.bfloat16)
    self.assertIn("ElmoCastToBfloat16",
                  _graph_op_types(bf16_layer, x, gate_kernel=True))
    self.assertAllClose(tf.cast(got, tf.float32), want, atol=0.05, rtol=0.02)
    for g, w in zip(got_grads, want_grads):
      scale = np.abs(w.numpy()).max()
      self.assertAllClose(tf.cast(g, tf.float32), w, atol=0.03 * scale,
                          rtol=0.03)

  def test_other_activations_and_ranks_use_tensorflow_ops(self):
    tanh_layer = Highway(activation="tanh")
    tanh_layer.build((None, 16))
    self.assertNotIn("ElmoHighwayGate",
                     _graph_op_types(tanh_layer, self.x, gate_kernel=True))
    x3 = tf.reshape(self.x[:6], (2, 3, 16))
    layer = self._layer()
    self.assertNotIn("ElmoHighwayGate",
                     _graph_op_types(layer, x3, gate_kernel=True))


class HighwayGateEncoderTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.kwargs = dict(projection_dim=8, filters=((1, 4), (2, 8)),
                       n_highway=2, max_characters_per_token=10)
    ids = np.random.default_rng(3).integers(1, 262, size=(2, 5, 10))
    self.char_ids = tf.constant(ids.astype(np.int32))

  def _encoder(self, highway_kernel):
    keras.utils.set_random_seed(9)
    encoder = CharacterEncoder(highway_kernel=highway_kernel, **self.kwargs)
    encoder.build()  # The weights drawn now: the same for every encoder.
    return encoder

  def test_the_encoder_uses_the_op_when_on_and_loaded(self):
    # Fails, not skips, when the op cannot build: CI should notice.
    assert highway_gate.load() is not None, highway_gate.failure()
    on, off = self._encoder(True), self._encoder(False)
    self.assertAllClose(on(self.char_ids), off(self.char_ids), atol=1e-6)
    self.assertIn("ElmoHighwayGate", _graph_op_types(on, self.char_ids))
    self.assertNotIn("ElmoHighwayGate", _graph_op_types(off, self.char_ids))
    with mock.patch.object(highway_gate, "load", return_value=None):
      self.assertNotIn("ElmoHighwayGate",
                       _graph_op_types(on, self.char_ids))

  def test_config_round_trip_and_exports_turn_it_off(self):
    encoder = self._encoder(False)
    clone = CharacterEncoder.from_config(encoder.get_config())
    self.assertFalse(clone.highway_kernel)
    model_config = config_lib.preset("tiny")
    self.assertTrue(model_config.char_cnn.highway_kernel)
    self.assertFalse(export_lib.without_custom_ops(
        model_config).char_cnn.highway_kernel)


if __name__ == "__main__":
  tf.test.main()
