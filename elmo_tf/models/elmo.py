"""The inference head: sentences -> biLM layers -> weighted sums, and scores.

Every inference path runs these functions: the SavedModel's signatures and
reusable `__call__` (`elmo_tf.export.ElmoModule`), the Keras 3 layer
`elmo_tf.ElmoEmbedding` and the programs in bin/ (embed, score,
polysemy). Sentences are packed by `elmo_tf.sentences.pack_sentences`, the
rule training uses too; nothing here imports training code.

Shapes: B = batch, T = longest sentence of the batch in tokens (or the
width of a `tokens` input, see `embed_tokens(width=...)`), P =
`lstm.projection_dim`, L = `lstm.n_layers`.

Outputs of `embed_tokens` (`output_keys(L)`, the names of TF-Hub's ELMo):
  word_emb        (B, T, P)    layer 0, the context-free token vectors
  lstm_outputs{i} (B, T, 2P)   i = 1..L, [forward_i; backward_i]
  elmo            (B, T, 2P)   gamma * sum_j softmax(s)_j * layer_j
  default         (B, 2P)      mean of `elmo` over the real tokens
  sequence_len    (B,) int32   tokens per sentence
  mask            (B, T) bool  real tokens
The model reads every sentence as `<S> tokens </S>`; the boundary positions
are removed from every output and padding positions are zero.

Outputs of `score_tokens` (`SCORE_KEYS`), log-probabilities in nats under
the full softmax:
  forward_log_probs  (B, T) float32  log p(w_t | <S> w_1 .. w_{t-1})
  backward_log_probs (B, T) float32  log p(w_t | w_{t+1} .. w_n </S>)
  forward_log_prob   (B,)  sum of forward_log_probs + log p(</S> | w_1..w_n)
  backward_log_prob  (B,)  sum of backward_log_probs + log p(<S> | w_1..w_n)
  token_count        (B,) int32  n + 1: the targets per direction
  unk_count          (B,) int32  words not in the vocabulary (scored as <UNK>)
  sequence_len       (B,) int32  n
"""

import tensorflow as tf

from elmo_tf import sentences as sentences_lib
from elmo_tf import vocab as vocab_lib

SCORE_KEYS = ("forward_log_probs", "backward_log_probs", "forward_log_prob",
              "backward_log_prob", "token_count", "unk_count", "sequence_len")


def output_keys(n_layers: int) -> list[str]:
  """Output names of the embedding functions for an `n_layers`-layer biLM."""
  return (["word_emb"] + [f"lstm_outputs{i}" for i in range(1, n_layers + 1)]
          + ["elmo", "default", "sequence_len", "mask"])


def tokens_to_ragged(tokens, sequence_len) -> tf.RaggedTensor:
  """TF-Hub `tokens` inputs -> (B, (tokens)) string RaggedTensor.

  `tokens` must be (B, max_len) and `sequence_len` (B,), with the same B;
  anything else raises `tf.errors.InvalidArgumentError` naming both inputs
  and their shapes (when the shapes are known while tracing, then; else
  when the function runs). `sequence_len` is clipped to [0, max_len];
  tokens after it are ignored.
  """
  tokens = tf.convert_to_tensor(tokens, tf.string)  # (B, max_len)
  sequence_len = tf.convert_to_tensor(sequence_len)
  tokens, sequence_len = _check_tokens_shapes(tokens, sequence_len)
  sequence_len = tf.cast(sequence_len, tf.int32)  # (B,)
  sequence_len = tf.clip_by_value(sequence_len, 0, tf.shape(tokens)[1])
  return tf.RaggedTensor.from_tensor(tokens, lengths=sequence_len)


_TOKENS_SHAPES_RULE = ("`tokens` must be (batch, max_len) and `sequence_len` "
                       "(batch,), with the same batch size")


def _check_tokens_shapes(tokens: tf.Tensor, sequence_len: tf.Tensor):
  """Raises InvalidArgumentError unless tokens is (B, T) and sequence_len
  (B,); returns both, made to depend on the runtime check.

  Statically wrong shapes raise at once: the ops that follow would
  otherwise fail while tracing with messages about slices or ConcatOp.
  """
  static_tokens, static_lengths = tokens.shape, sequence_len.shape
  wrong = ((static_tokens.rank is not None and static_tokens.rank != 2) or
           (static_lengths.rank is not None and static_lengths.rank != 1))
  if not wrong and static_tokens.rank == 2 and static_lengths.rank == 1:
    rows, lengths = static_tokens[0], static_lengths[0]
    wrong = rows is not None and lengths is not None and rows != lengths
  if wrong:
    raise tf.errors.InvalidArgumentError(
        None, None,
        f"{_TOKENS_SHAPES_RULE}; got tokens of shape "
        f"{static_tokens.as_list() if static_tokens.rank is not None else '?'}"
        f" and sequence_len of shape "
        f"{static_lengths.as_list() if static_lengths.rank is not None else '?'}"
        ".")
  tokens_shape = tf.shape(tokens)
  lengths_shape = tf.shape(sequence_len)
  ranks_ok = tf.logical_and(tf.equal(tf.size(tokens_shape), 2),
                            tf.equal(tf.size(lengths_shape), 1))
  # Only compared when the ranks are right (tf.cond: the indexing would fail
  # on a rank-0 shape).
  same_batch = tf.cond(
      ranks_ok, lambda: tf.equal(tokens_shape[0], lengths_shape[0]),
      lambda: tf.constant(False))
  check = tf.debugging.Assert(
      same_batch,
      [f"{_TOKENS_SHAPES_RULE}; got tokens of shape", tokens_shape,
       "and sequence_len of shape", lengths_shape],
      summarize=10)
  with tf.control_dependencies([check]):
    return tf.identity(tokens), tf.identity(sequence_len)


def _backbone_inputs(backbone, tokens: tf.RaggedTensor, lookup):
  """Packed inputs of the backbone; (inputs, sequence_len, max_len)."""
  tokens = tokens.with_row_splits_dtype(tf.int32)
  sequence_len = tokens.row_lengths()  # (B,) int32
  # Longest sentence; 0 for an empty batch (an empty reduce_max is INT_MIN).
  max_len = tf.reduce_max(tf.concat([sequence_len, [0]], axis=0))
  uses_token_ids = backbone.model_config.token_encoder != "chars"
  if uses_token_ids and lookup is None:
    raise ValueError("This biLM's token encoder needs word ids: pass "
                     "`token_table`.")
  # char_ids (B, T + 2, 50), mask (B, T + 2), token_ids (B, T + 2).
  packed = sentences_lib.pack_sentences(tokens, lookup=lookup,
                                        width=max_len + 2)
  return packed, sequence_len, max_len


def run_bilm(backbone, tokens: tf.RaggedTensor, token_table=None,
             training=False) -> dict[str, tf.Tensor]:
  """The biLM's layers for tokenized sentences, before any scalar mix.

  Args:
    backbone: an `ElmoBackbone`.
    tokens: (B, (n)) string RaggedTensor, without `<S>` / `</S>`.
    token_table: a `tf.lookup` table string -> word id ("" -> 0), needed
      when the backbone's token encoder uses word ids (not for "chars").
    training: passed to the backbone (its dropout).

  Returns:
    dict with the outputs that do not depend on a mix: `word_emb` (B, T, P),
    `lstm_outputs{i}` (B, T, 2P), `sequence_len` (B,) int32, `mask` (B, T)
    bool; and `layers` (B, L+1, T, 2P), the input of the scalar mix. Float
    outputs are in the backbone's compute dtype and zero at padding.
  """
  uses_token_ids = backbone.model_config.token_encoder != "chars"
  inputs, sequence_len, max_len = _backbone_inputs(
      backbone, tokens, token_table.lookup if uses_token_ids else None)
  out = backbone(inputs, training=training)

  mask = tf.sequence_mask(sequence_len, max_len)  # (B, T)
  # Drop <S> (position 0) and what follows the longest sentence; the </S>
  # of shorter sentences lies in their padding and is zeroed by the mask.
  layers = out["layer_activations"][:, :, 1:max_len + 1]  # (B, L+1, T, 2P)
  mask_f = tf.cast(mask, layers.dtype)  # (B, T)
  layers = layers * mask_f[:, tf.newaxis, :, tf.newaxis]
  word_emb = out["token_representation"][:, 1:max_len + 1]  # (B, T, P)
  word_emb = word_emb * mask_f[..., tf.newaxis]
  outputs = {"word_emb": word_emb}
  for i in range(1, backbone.n_layers + 1):
    outputs[f"lstm_outputs{i}"] = layers[:, i]  # (B, T, 2P)
  outputs.update(layers=layers, sequence_len=sequence_len, mask=mask)
  return outputs


def mix_layers(scalar_mix, bilm: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """`elmo` (B, T, 2P) and `default` (B, 2P) of one `ScalarMix` over the
  outputs of `run_bilm`."""
  elmo = scalar_mix(bilm["layers"], mask=bilm["mask"])  # (B, T, 2P), 0 at pad
  count = tf.maximum(tf.cast(bilm["sequence_len"], elmo.dtype),
                     1.0)[:, tf.newaxis]  # (B, 1)
  return {"elmo": elmo,
          "default": tf.reduce_sum(elmo, axis=1) / count}  # (B, 2P)


def pad_time(outputs: dict[str, tf.Tensor], width) -> dict[str, tf.Tensor]:
  """Pads every time axis of `embed_tokens`' outputs with zeros (False) to
  `width` >= T, as TF-Hub's ELMo `tokens` signature returns outputs as wide
  as its `tokens` input."""
  padded = {}
  for key, value in outputs.items():
    if key in ("default", "sequence_len"):
      padded[key] = value
      continue
    extra = width - tf.shape(value)[1]
    paddings = [[0, 0], [0, extra]] + [[0, 0]] * (value.shape.rank - 2)
    padded[key] = tf.pad(value, paddings)
  return padded


def embed_tokens(backbone, scalar_mix, tokens: tf.RaggedTensor,
                 token_table=None, training=False,
                 width=None) -> dict[str, tf.Tensor]:
  """All ELMo outputs of tokenized sentences (see the module docstring).

  Args:
    backbone: an `ElmoBackbone`.
    scalar_mix: a `ScalarMix` over the backbone's L + 1 layers.
    tokens: (B, (n)) string RaggedTensor, without `<S>` / `</S>`.
    token_table: a `tf.lookup` table string -> word id, needed when the
      backbone's token encoder uses word ids (not for "chars").
    training: passed to the backbone (its dropout).
    width: None: the time axis is the longest sentence; else pad it with
      zeros to `width` (at least the longest sentence).

  Returns:
    dict of `output_keys(L)`; float outputs in the backbone's compute dtype.
  """
  bilm = run_bilm(backbone, tokens, token_table=token_table,
                  training=training)
  mixed = mix_layers(scalar_mix, bilm)
  # In the order of output_keys; `layers` (the mix's input) is left out.
  outputs = {key: mixed[key] if key in mixed else bilm[key]
             for key in output_keys(backbone.n_layers)}
  return outputs if width is None else pad_time(outputs, width)


def score_tokens(backbone, softmax, tokens: tf.RaggedTensor,
                 token_table) -> dict[str, tf.Tensor]:
  """Log-probabilities of tokenized sentences under both LMs (no dropout).

  Args:
    backbone: an `ElmoBackbone`.
    softmax: the biLM's `SampledSoftmax` (its full softmax is used).
    tokens: (B, (n)) string RaggedTensor, without `<S>` / `</S>`.
    token_table: the vocabulary's `tf.lookup` table (string -> word id,
      unknown words -> `<UNK>`).

  Returns:
    dict of `SCORE_KEYS` (see the module docstring).
  """
  inputs, sequence_len, max_len = _backbone_inputs(backbone, tokens,
                                                   token_table.lookup)
  token_ids = inputs["token_ids"]  # (B, T + 2): <S> w_1 .. w_n </S> 0 ..
  if backbone.model_config.token_encoder == "chars":
    inputs = {k: v for k, v in inputs.items() if k != "token_ids"}
  out = backbone(inputs, training=False)
  batch_size = tf.shape(token_ids)[0]
  p = backbone.projection_dim
  width = max_len + 1  # Targets per direction of the longest sentence.
  mask = inputs["mask"]  # (B, T + 2)
  # A target counts only where the position predicting it is a real token
  # (the </S> of a shorter sentence must not be predicted from padding).
  # Forward: positions 0..n predict tokens 1..n+1 (w_1 .. w_n, </S>).
  forward_targets = tf.where(mask[:, :-1], token_ids[:, 1:], 0)  # (B, T + 1)
  forward_hidden = out["forward_outputs"][-1][:, :-1]  # (B, T + 1, P)
  # Backward: positions 1..n+1 predict tokens 0..n (<S>, w_1 .. w_n).
  backward_targets = tf.where(mask[:, 1:], token_ids[:, :-1], 0)  # (B, T + 1)
  backward_hidden = out["backward_outputs"][-1][:, 1:]  # (B, T + 1, P)
  hidden = tf.concat([tf.reshape(forward_hidden, (-1, p)),
                      tf.reshape(backward_hidden, (-1, p))], axis=0)
  targets = tf.concat([tf.reshape(forward_targets, (-1,)),
                       tf.reshape(backward_targets, (-1,))], axis=0)
  # (2 B (T + 1),) losses, 0 where the target is padding.
  log_probs = -softmax(hidden, targets, training=False)
  forward_lp, backward_lp = tf.split(
      tf.reshape(log_probs, (2, batch_size, width)), 2, axis=0)
  forward_lp, backward_lp = forward_lp[0], backward_lp[0]  # (B, T + 1)
  word_mask = tf.sequence_mask(sequence_len, max_len)  # (B, T)
  word_ids = token_ids[:, 1:max_len + 1]  # (B, T)
  return {
      # Words are targets 0..n-1 of the forward LM and 1..n of the backward.
      "forward_log_probs": forward_lp[:, :max_len],
      "backward_log_probs": backward_lp[:, 1:],
      "forward_log_prob": tf.reduce_sum(forward_lp, axis=1),
      "backward_log_prob": tf.reduce_sum(backward_lp, axis=1),
      "token_count": sequence_len + 1,
      "unk_count": tf.reduce_sum(tf.cast(
          word_mask & tf.equal(word_ids, vocab_lib.UNK_ID), tf.int32), axis=1),
      "sequence_len": sequence_len,
  }
