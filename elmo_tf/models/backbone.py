"""The ELMo backbone: token and character ids -> all biLM layer activations."""

import keras
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.layers.char_cnn import CharacterEncoder
from elmo_tf.layers.projected_lstm import ProjectedLSTM

TOKEN_ENCODERS = config_lib.TOKEN_ENCODERS


def _check_config(config):
  if config.token_encoder not in TOKEN_ENCODERS:
    raise ValueError(
        f"Unknown token_encoder {config.token_encoder!r}; choose one of "
        f"{TOKEN_ENCODERS}.")
  if config.token_encoder != "chars" and config.vocab_size < 1:
    raise ValueError(
        f"token_encoder={config.token_encoder!r} needs a word embedding, so "
        f"model.vocab_size must be set (got {config.vocab_size}).")
  if config.lstm.n_layers < 1:
    raise ValueError(f"lstm.n_layers must be >= 1, got {config.lstm.n_layers}.")


def _token_embedding_dim(config):
  if config.token_encoder in ("tokens", "sum"):
    return config.lstm.projection_dim
  return config.token_embedding_dim


@keras.saving.register_keras_serializable(package="elmo_tf")
class ElmoBackbone(keras.Model):
  """Token encoder + a forward and a backward stack of projected LSTMs.

  One network serves training, evaluation, export and embedding. Layer 0
  (the "token representation", width P = `lstm.projection_dim`) comes from
  the token encoder chosen by `config.token_encoder`:
  "chars" the character CNN (the paper); "tokens" a word embedding;
  "concat" both concatenated and projected to P; "sum" both added. It is
  computed once per batch and shared by both directions, and the character
  CNN runs once per distinct token (`char_cnn.deduplicate`).

  Each direction then runs `lstm.n_layers` `ProjectedLSTM`s; from the
  second layer on, the layer input is added to its output
  (`lstm.use_residual`, as bilm-tf); dropout `config.dropout` is applied to
  every LSTM input in training. The backward LSTMs read every row from its
  last real token to its first; their outputs are aligned to the input
  positions.

  Stream mode: when `backward_token_ids` / `backward_char_ids` are given,
  the backward stack reads those windows instead (the forward stack reads
  `token_ids` / `char_ids`); both windows are encoded in one encoder call.
  The backward LSTMs read each backward window right to left, so the
  `backward_state` carried between batches must come from the window that
  FOLLOWS in the text (the data pipeline marches the backward windows from
  the end of the text to its start).

  Sub-layer names (stable checkpoint keys): `char_encoder`,
  `token_embedding`, `token_projection`, `lstm_input_dropout`,
  `forward_lstm_{l}`, `backward_lstm_{l}`.

  Args:
    config: a `ModelConfig`.
    **kwargs: standard `keras.Model` arguments (`name`, `dtype`).

  Call arguments:
    inputs: dict with `token_ids` (batch, time) int32 and/or `char_ids`
      (batch, time, 50) int32 (as the token encoder needs), and optionally
      `mask` (batch, time) bool (default: non-padding tokens),
      `forward_state` / `backward_state` (list over layers of (h, c)),
      `backward_token_ids`, `backward_char_ids`, `backward_mask`.
    training: enables dropout.

  Returns:
    dict with `token_representation` (batch, time, P); `forward_outputs`
    and `backward_outputs`, lists of n_layers (batch, time, P);
    `forward_state` and `backward_state`, lists of n_layers (h (batch, P),
    c (batch, cell)) float32; `mask` (batch, time) bool; and, without
    separate backward windows, `layer_activations` (batch, n_layers + 1,
    time, 2P): layer 0 is [x; x], layer l is [forward_l; backward_l].
    Masked positions are zero in every output.

  Example:
  ```python
  config = elmo_tf.config.preset("tiny").replace(vocab_size=100)
  backbone = ElmoBackbone(config)
  outputs = backbone({"token_ids": token_ids, "char_ids": char_ids})
  outputs["layer_activations"]  # (batch, 3, time, 32)
  ```
  """

  def __init__(self, config, **kwargs):
    kwargs.setdefault("name", "elmo_backbone")
    super().__init__(**kwargs)
    if isinstance(config, dict):
      config = config_lib.ModelConfig.from_dict(config)
    _check_config(config)
    self.model_config = config
    lstm = config.lstm
    self.projection_dim = lstm.projection_dim
    self.n_layers = lstm.n_layers

    # === Layers ===
    self.char_encoder = None
    self.token_embedding = None
    self.token_projection = None
    if config.token_encoder != "tokens":
      self.char_encoder = CharacterEncoder.from_model_config(
          config, name="char_encoder", dtype=self.dtype_policy)
    if config.token_encoder != "chars":
      self.token_embedding = keras.layers.Embedding(
          config.vocab_size + 1, _token_embedding_dim(config),
          embeddings_initializer=keras.initializers.RandomUniform(-1.0, 1.0),
          name="token_embedding", dtype=self.dtype_policy)
    if config.token_encoder == "concat":
      self.token_projection = keras.layers.Dense(
          lstm.projection_dim, name="token_projection",
          dtype=self.dtype_policy)
    self.lstm_input_dropout = keras.layers.Dropout(
        config.dropout, name="lstm_input_dropout", dtype=self.dtype_policy)
    make_lstm = lambda name: ProjectedLSTM(
        cell_dim=lstm.cell_dim, projection_dim=lstm.projection_dim,
        cell_clip=lstm.cell_clip, projection_clip=lstm.projection_clip,
        forget_bias=lstm.forget_bias,
        static_unroll_max_steps=lstm.static_unroll_max_steps,
        fused_kernel=lstm.fused_kernel,
        fused_kernel_bfloat16_matmuls=lstm.fused_kernel_bfloat16_matmuls,
        pack_sequences=lstm.pack_sequences,
        name=name, dtype=self.dtype_policy)
    self.forward_lstms = [
        make_lstm(f"forward_lstm_{l}") for l in range(lstm.n_layers)]
    self.backward_lstms = [
        make_lstm(f"backward_lstm_{l}") for l in range(lstm.n_layers)]

  def build(self, input_shape=None):
    """Creates every weight from the config alone (no data needed)."""
    p = self.projection_dim
    if self.char_encoder is not None:
      self.char_encoder.build()
    if self.token_embedding is not None:
      self.token_embedding.build((None, None))
    if self.token_projection is not None:
      self.token_projection.build(
          (None, None, p + _token_embedding_dim(self.model_config)))
    for lstm in self.forward_lstms + self.backward_lstms:
      lstm.build((None, None, p))
    self.built = True

  # === Token encoder ===

  def encode_tokens(self, token_ids=None, char_ids=None, training=None):
    """Layer 0 from (batch, time) ids and/or (batch, time, 50) char ids.

    Returns (batch, time, P), zero at padding tokens (token id 0 for the
    "tokens" encoder, all-zero char ids otherwise).
    """
    del training  # No dropout in the token encoder.
    mode = self.model_config.token_encoder
    if mode != "tokens":
      if char_ids is None:
        raise ValueError(f"token_encoder={mode!r} needs `char_ids`.")
      chars = self.char_encoder(char_ids)  # (batch, time, P), 0 at padding
      if mode == "chars":
        return chars
    if token_ids is None:
      raise ValueError(f"token_encoder={mode!r} needs `token_ids`.")
    words = self.token_embedding(token_ids)  # (batch, time, E)
    if mode == "tokens":
      x = words
    elif mode == "sum":
      x = chars + words
    else:
      x = self.token_projection(tf.concat([chars, words], axis=-1))
    is_token = self._default_mask(token_ids, char_ids)  # (batch, time)
    return x * tf.cast(is_token, x.dtype)[..., None]

  def _default_mask(self, token_ids, char_ids):
    if self.model_config.token_encoder == "tokens" or char_ids is None:
      return tf.cast(token_ids, tf.int32) > 0  # (batch, time)
    return tf.reduce_any(tf.cast(char_ids, tf.int32) > 0, axis=-1)

  # === LSTM stacks ===

  def _run_stack(self, x, mask, lstms, initial_states, go_backwards,
                 training):
    """x: (batch, time, P) -> list of layer outputs, list of final states."""
    mask_f = tf.cast(mask, x.dtype)[..., None]  # (batch, time, 1)
    outputs, states = [], []
    for l, lstm in enumerate(lstms):
      layer_input = self.lstm_input_dropout(x, training=training)
      initial_state = None if initial_states is None else initial_states[l]
      y, state = lstm(layer_input, mask=mask, initial_state=initial_state,
                      go_backwards=go_backwards,
                      training=training)  # (batch, time, P)
      if l >= 1 and self.model_config.lstm.use_residual:
        # bilm-tf wraps the residual cell in the dropout wrapper, so the
        # residual is the (dropped-out) LSTM input.
        y = y + layer_input
      y = y * mask_f
      outputs.append(y)
      states.append(state)
      x = y
    return outputs, states

  def call(self, inputs, training=None):
    token_ids = inputs.get("token_ids")
    char_ids = inputs.get("char_ids")
    mask = inputs.get("mask")
    if mask is None:
      mask = self._default_mask(token_ids, char_ids)
    mask = tf.cast(mask, tf.bool)  # (batch, time)

    stream = ("backward_token_ids" in inputs or "backward_char_ids" in inputs)
    if stream:
      back_token_ids = inputs.get("backward_token_ids")
      back_char_ids = inputs.get("backward_char_ids")
      back_mask = inputs.get("backward_mask")
      if back_mask is None:
        back_mask = self._default_mask(back_token_ids, back_char_ids)
      back_mask = tf.cast(back_mask, tf.bool)  # (batch, time)
      # One encoder call over both windows: the character CNN deduplicates
      # tokens across them.
      join = lambda a, b: None if a is None else tf.concat([a, b], axis=0)
      both = self.encode_tokens(join(token_ids, back_token_ids),
                                join(char_ids, back_char_ids),
                                training=training)  # (2 * batch, time, P)
      x, back_x = tf.split(both, 2, axis=0)
    else:
      back_mask = mask
      x = self.encode_tokens(token_ids, char_ids, training=training)
      back_x = x
    x = x * tf.cast(mask, x.dtype)[..., None]  # (batch, time, P)
    back_x = back_x * tf.cast(back_mask, back_x.dtype)[..., None]

    forward_outputs, forward_state = self._run_stack(
        x, mask, self.forward_lstms, inputs.get("forward_state"),
        go_backwards=False, training=training)
    backward_outputs, backward_state = self._run_stack(
        back_x, back_mask, self.backward_lstms, inputs.get("backward_state"),
        go_backwards=True, training=training)

    outputs = {
        "token_representation": x,
        "forward_outputs": forward_outputs,
        "backward_outputs": backward_outputs,
        "forward_state": forward_state,
        "backward_state": backward_state,
        "mask": mask,
    }
    if stream:
      outputs["backward_mask"] = back_mask
      outputs["backward_token_representation"] = back_x
    else:
      layers = [tf.concat([x, x], axis=-1)] + [
          tf.concat([f, b], axis=-1)
          for f, b in zip(forward_outputs, backward_outputs)]
      # (batch, n_layers + 1, time, 2P)
      outputs["layer_activations"] = tf.stack(layers, axis=1)
    return outputs

  def initial_state(self, batch_size):
    """Zero states for both directions: list over layers of (h, c) float32."""
    make = lambda lstms: [lstm.get_initial_state(batch_size) for lstm in lstms]
    return make(self.forward_lstms), make(self.backward_lstms)

  def get_config(self):
    return {"name": self.name, "config": self.model_config.to_dict()}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    model_config = config_lib.ModelConfig.from_dict(config.pop("config"))
    return cls(model_config, **config)


def count_parameters(config, include_softmax=False):
  """Number of weights of a `ModelConfig`'s network, computed from the config.

  Counts the token encoder and both LSTM stacks (the figures published for
  ELMo: small 13.6M, medium 28.0M, original 93.6M for the character
  encoder); with `include_softmax`, also the (vocab_size + 1) x P softmax
  and its bias.
  """
  _check_config(config)
  p = config.lstm.projection_dim
  total = 0
  if config.token_encoder != "tokens":
    cnn = config.char_cnn
    n_filters = cnn.n_filters
    total += cnn.n_characters * cnn.embedding_dim
    total += sum(w * cnn.embedding_dim * n + n for w, n in cnn.filters)
    total += cnn.n_highway * 2 * (n_filters * n_filters + n_filters)
    total += n_filters * p + p
  if config.token_encoder != "chars":
    e = _token_embedding_dim(config)
    total += (config.vocab_size + 1) * e
    if config.token_encoder == "concat":
      total += (p + e) * p + p
  cell = config.lstm.cell_dim
  per_lstm = (p + p) * 4 * cell + 4 * cell + cell * p
  total += 2 * config.lstm.n_layers * per_lstm
  if include_softmax:
    total += (config.vocab_size + 1) * (p + 1)
  return total
