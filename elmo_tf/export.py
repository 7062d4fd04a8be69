r"""SavedModel export: TF-Hub ELMo signatures and a reusable `__call__`.

`export_saved_model(model_dir, out_dir, options)` turns the latest
checkpoint of a training run into a self-contained SavedModel (`options` is
a `config.ExportConfig`):

  out_dir/
    saved_model.pb, variables/    the network and its weights (float32)
    assets/config.json            the ExperimentConfig of the run
    assets/vocab.txt              its vocabulary
    assets/elmo_tf.json           tokenization mode and export options
                                  (the ExportConfig's values)

Moving or copying the directory keeps it working: nothing refers to the
training run any more.

What the SavedModel offers (B = batch, T = longest sentence of the batch
in tokens, or for `tokens` inputs the width max_len of `tokens`, P =
`lstm.projection_dim`, L = `lstm.n_layers`); the computation is the
inference head of `elmo_tf.models.elmo`:

  * signature `default`: `text` (B,) string, raw sentences, tokenized in the
    graph with the model's tokenization mode (`whitespace`, `segmented`,
    `chinese_chars`).
  * signature `tokens`: `tokens` (B, max_len) string padded with "" and
    `sequence_len` (B,) int32 (tokens after `sequence_len` are ignored).
    As in TF-Hub's ELMo, its outputs are max_len wide (zeros past
    `sequence_len`), so taggers built for a fixed max_len work unchanged.
  * both return the dict
      word_emb        (B, T, P)    layer 0, the context-free token vectors
      lstm_outputs{i} (B, T, 2P)   i = 1..L, [forward_i; backward_i]
      elmo            (B, T, 2P)   gamma * sum_j softmax(s)_j * layer_j
      default         (B, 2P)      mean of `elmo` over the real tokens
      sequence_len    (B,) int32   tokens per sentence
      mask            (B, T) bool  real tokens
    The model reads every sentence as `<S> tokens </S>` (as in training);
    the boundary positions are removed from every output, and padding
    positions are zero. An empty sentence has sequence_len 0 and a zero
    `default` vector.
  * signature `log_probs` (exports of a training run, which carry the
    softmax): `text` (B,) string -> per-token forward/backward
    log-probabilities, their sums, `token_count`, `unk_count`,
    `sequence_len` (`elmo_tf.models.elmo.SCORE_KEYS`) and the `tokens`
    (B, T) string scored. bin/score prints them.
  * a reusable SavedModel for `hub.KerasLayer` (TF-Hub's "reusable
    SavedModel" API): `__call__(inputs, training=False)` with `inputs`
    either a (B,) string tensor of sentences or a dict with `tokens` and
    `sequence_len` as above, returning the same dict (pick one entry with
    `hub.KerasLayer(path, output_key="elmo")`); `variables`;
    `trainable_variables` (the scalar-mix weights s_j and gamma, plus every
    biLM weight when exported with `trainable_biLM=True`); and
    `regularization_losses`, one zero-argument function returning
    `l2_coef * sum(s ** 2)`.
  (`trainable_biLM`, `l2_coef`, `do_layer_norm` and `tokenization` are the
  fields of `config.ExportConfig`, where their defaults live.)

The character encoder's cache: a model with a character encoder, exported
with a frozen biLM (`trainable_biLM=False`, the default), also saves the
encoder's output for every vocabulary word, computed at export (as AllenNLP
caches it): `encoder_cache`, a non-trainable (V + 1, P) float32 variable
(row = word id, row 0 the zero vector of padding; 10,003 x 128 x 4 bytes =
5.1 MB for PTB's vocabulary), and `encoder_cache_table`, which maps a
token's character ids (`char_cnn.char_row_keys`) to its row. Every function
then runs the CNN only on the distinct tokens of a batch that are not in the
vocabulary, and not at all for a sentence of vocabulary words. An unknown
word is not looked up as `<UNK>`: it is not in the table, so the CNN gives it
its own vector; only the literal token "<UNK>" reads `<UNK>`'s row. The
outputs are those of the CNN (to float32 rounding). With
`trainable_biLM=True` there is no cache: fine-tuning the biLM through
`hub.KerasLayer(..., trainable=True)` would leave it stale. (`resave` and
every export recompute it from the weights; `ElmoEmbedding`, which rebuilds
the network for Keras 3 training, runs the CNN.)

Inference is stateless: a sentence gives the same vectors whatever else is
in its batch and however much padding surrounds it.

The graph uses core TensorFlow ops only (the tokenizer included), so it
loads with plain TensorFlow, `saved_model_cli` and `hub.load`, like TF-Hub's
ELMo modules. (SavedModels written by elmo_tf before that need
`import tensorflow_text` first; `resave` writes them again without it.)

Example:
```python
elmo = tf.saved_model.load("savedmodels/ptb")
out = elmo.signatures["default"](tf.constant(["the cat sat ."]))
out["elmo"]  # (1, 4, 2P)
out = elmo.signatures["tokens"](tokens=tf.constant([["the", "cat", ""]]),
                                sequence_len=tf.constant([2]))
```
"""

import json
import os
import shutil
import tempfile

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import tokenizers as tokenizers_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.layers import char_cnn
from elmo_tf.layers.scalar_mix import ScalarMix
from elmo_tf.layers.sampled_softmax import SampledSoftmax
from elmo_tf.models import elmo as elmo_lib
from elmo_tf.models.backbone import ElmoBackbone

# === Asset file names (inside <saved model>/assets/) ===
# The run's files keep their names (elmo_tf/checkpoints.py).
CONFIG_ASSET = checkpoints_lib.CONFIG_FILENAME
VOCAB_ASSET = checkpoints_lib.VOCAB_FILENAME
INFO_ASSET = "elmo_tf.json"
FORMAT_VERSION = 1

# Names of the object-graph children holding the weights, so that
# `restore_weights` can read them back from <saved model>/variables.
_BILM_WEIGHTS = "bilm_weights"
_MIX_WEIGHTS = "scalar_mix_weights"
_SOFTMAX_WEIGHTS = "softmax_weights"
# The character encoder's cache (module docstring): (V + 1, P) vectors and
# the table of their rows.
_ENCODER_CACHE = "encoder_cache"
_ENCODER_CACHE_TABLE = "encoder_cache_table"
# Vocabulary words encoded per call when the cache is computed: bounds the
# memory of the convolution windows ((chunk, slots, width x char dim)).
_CACHE_CHUNK = 1024

# Kept importable from here, where they used to live.
output_keys = elmo_lib.output_keys
tokens_to_ragged = elmo_lib.tokens_to_ragged
copy_weights = checkpoints_lib.copy_weights


def without_custom_ops(
    model_config: config_lib.ModelConfig) -> config_lib.ModelConfig:
  """`model_config` with the custom training ops (elmo_tf.ops) off: how a
  backbone runs, not what it is."""
  return model_config.replace(
      lstm=model_config.lstm.replace(fused_kernel=False),
      char_cnn=model_config.char_cnn.replace(window_max_kernel=False,
                                             highway_kernel=False))


def inference_backbone(model_config: config_lib.ModelConfig,
                       dtype="float32") -> ElmoBackbone:
  """An `ElmoBackbone` of `model_config` on TensorFlow's own LSTM ops, never
  the fused training kernel (`LSTMConfig.fused_kernel`) nor the window max
  op (`CharCNNConfig.window_max_kernel`) nor the highway gate op
  (`CharCNNConfig.highway_kernel`): what SavedModels hold, so that
  every inference path (a SavedModel, a --model_dir module, `ElmoEmbedding`,
  an hdf5 import) gives the same numbers."""
  model_config = without_custom_ops(model_config)
  return ElmoBackbone(model_config, name="backbone", dtype=dtype)


def backbone_weights(backbone: ElmoBackbone) -> dict[str, keras.Variable]:
  """{path inside the backbone: variable}, e.g. `forward_lstm_0/kernel`
  (`checkpoints.weights_by_path`)."""
  return checkpoints_lib.weights_by_path(backbone)


def scalar_mix_weights(mix: ScalarMix) -> dict[str, keras.Variable]:
  return {"scalar_weights": mix.scalar_weights, "gamma": mix.gamma}


def _backing_variable(variable):
  """The `tf.Variable` holding a Keras 3 variable's value (`variable`
  itself when it is a `tf.Variable` already).

  The module tracks these rather than the `keras.Variable`s: saving a
  `keras.Variable` exports two graph variables, a copy of its `tf.Variable`,
  which the functions read, and a new `tf.Variable` wrapping it, which the
  MetaGraph's SaverDef restores (Keras'
  `Variable._export_to_saved_model_graph`). TF2 loading binds both to one
  object, but TF1 loaders (a Session: `saved_model_cli run`, TF Serving's
  legacy path, `tf.compat.v1.saved_model.load`) restore the wrapper and leave
  the variables the functions read uninitialized ("Could not find variable
  backbone/..."). Both are saved under the same checkpoint key
  (`.../.ATTRIBUTES/VARIABLE_VALUE`) and object proto, so the SavedModel
  only changes in its MetaGraph.
  """
  if isinstance(variable, tf.Variable):
    return variable
  value = variable.value  # Outside an autocast scope: the tf.Variable.
  if not isinstance(value, tf.Variable):
    raise TypeError(f"{variable.path} is not backed by a tf.Variable "
                    f"({type(value).__name__}); is the backend TensorFlow?")
  return value


def _backing_variables(variables: dict) -> dict:
  return {path: _backing_variable(v) for path, v in variables.items()}


def encoder_cache(backbone: ElmoBackbone, vocab: vocab_lib.Vocabulary
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The character encoder's output for every vocabulary word.

  Returns:
    (keys, rows, vectors): `vectors` (V + 1, P) float32, row i the encoder
    output of word id i (row 0, padding, zero); `keys` (k,) bytes, the
    `char_cnn.char_row_keys` of the words, and `rows` (k,) int32 their
    rows, for the lookup table. Words with the same character ids (cut to
    the same first 48 bytes) have one key, the first word's; their vectors
    are equal.
  """
  encoder = backbone.char_encoder
  tokens = tf.constant([""] + vocab.tokens)  # Row i: word id i; "" = 0.
  char_ids = vocab_lib.char_ids(tokens)  # (V + 1, 50)
  keys = char_cnn.char_row_keys(char_ids).numpy()  # (V + 1,)
  _, first = np.unique(keys, return_index=True)
  rows = np.sort(first).astype(np.int32)
  with tf.init_scope():
    vectors = [np.zeros((1, encoder.projection_dim), np.float32)]
    for start in range(1, len(keys), _CACHE_CHUNK):
      chunk = char_ids[start:start + _CACHE_CHUNK]  # (<= chunk, 50)
      vectors.append(np.asarray(encoder.encode_rows(chunk), np.float32))
  return keys[rows], rows, np.concatenate(vectors, axis=0)


# === The exported module ===

_TEXT_SPEC = tf.TensorSpec([None], tf.string, name="text")
_TOKENS_SPECS = {
    "tokens": tf.TensorSpec([None, None], tf.string, name="tokens"),
    "sequence_len": tf.TensorSpec([None], tf.int32, name="sequence_len"),
}
# The network is traced on flat tokens: (n_tokens,) strings and (B,) row
# lengths.
_FLAT_SPECS = [tf.TensorSpec([None], tf.string),
               tf.TensorSpec([None], tf.int32)]


class ElmoModule(tf.__internal__.tracking.AutoTrackable):
  """What `export_saved_model` saves (see the module docstring).

  An `AutoTrackable` rather than a `tf.Module`, because the reusable
  SavedModel API needs plain attributes named `variables` and
  `trainable_variables`, which `tf.Module` defines as read-only properties.
  Every function runs the inference head of `elmo_tf.models.elmo`.

  Args:
    backbone: a built float32 `ElmoBackbone` holding the trained weights.
    tokenizer: an exportable `tokenizers.Tokenizer` (for
      `options.tokenization`, resolved by the caller).
    vocab: the `Vocabulary` (its table is used by word-id encoders and by
      scoring).
    options: `config.ExportConfig`; `trainable_biLM` lists every biLM
      weight in `trainable_variables`, `l2_coef` is the L2 coefficient on
      the scalar-mix weights, `do_layer_norm` normalizes each layer before
      mixing (`ScalarMix`).
    assets: {asset file name: path of the file to copy into the SavedModel}.
    softmax: the biLM's built float32 `SampledSoftmax`, or None; with it
      the module has `log_probs` (and the signature of that name).

  With a character encoder and a frozen biLM, the module computes the
  encoder's cache (module docstring) and attaches it to
  `backbone.char_encoder` (`set_vector_cache`); the backbone's weights must
  be final when the module is built.
  """

  def __init__(self, backbone, tokenizer, vocab,
               options: config_lib.ExportConfig = config_lib.ExportConfig(),
               assets=None, softmax=None):
    super().__init__()
    trainable_biLM = options.trainable_biLM
    mix = ScalarMix(backbone.n_layers + 1, l2_coef=options.l2_coef,
                    do_layer_norm=options.do_layer_norm, name="scalar_mix",
                    dtype="float32")
    mix.build()
    uses_token_ids = backbone.model_config.token_encoder != "chars"
    needs_table = uses_token_ids or softmax is not None
    token_table = vocab.table if needs_table else None
    # Untracked Python state: the Keras layers stay out of the object graph
    # (their weights are tracked below, by path).
    untracked = dict(_backbone=backbone, _mix=mix, _tokenizer=tokenizer,
                     _token_table=token_table if uses_token_ids else None,
                     _score_table=token_table, _softmax=softmax)
    # The network is traced only in these functions of flat tokens; every
    # public function calls one of them, so its own trace is cheap.
    # (Saving traces every function again: an export traces the network 2-4
    # times instead of 12.)
    untracked["_embed_inference"] = tf.function(
        lambda flat, lengths: self._embed_flat(flat, lengths, False),
        input_signature=_FLAT_SPECS, autograph=False)
    # The frozen biLM runs in inference mode (no dropout) in training too.
    untracked["_embed_training"] = tf.function(
        lambda flat, lengths: self._embed_flat(flat, lengths, True),
        input_signature=_FLAT_SPECS, autograph=False
    ) if trainable_biLM else untracked["_embed_inference"]
    for name, value in untracked.items():
      object.__setattr__(self, name, value)
    cache = None
    if backbone.char_encoder is not None and not trainable_biLM:
      cache = self._build_encoder_cache(backbone, vocab)
    if backbone.char_encoder is not None:
      backbone.char_encoder.set_vector_cache(*(cache or (None, None)))

    # === Tracked state ===
    if token_table is not None:
      self.vocab_table = token_table
    self.assets = {name: tf.saved_model.Asset(path)
                   for name, path in (assets or {}).items()}
    # The tf.Variables behind the Keras variables, so that the SaverDef
    # restores the variables the functions read (`_backing_variable`).
    setattr(self, _BILM_WEIGHTS,
            _backing_variables(backbone_weights(backbone)))
    setattr(self, _MIX_WEIGHTS, _backing_variables(scalar_mix_weights(mix)))
    if softmax is not None:
      setattr(self, _SOFTMAX_WEIGHTS, _backing_variables(
          checkpoints_lib.weights_by_path(softmax)))
    mix_variables = [_backing_variable(mix.scalar_weights),
                     _backing_variable(mix.gamma)]
    # Every backbone variable, incl. dropout RNG states that training-mode
    # functions use.
    self.variables = [_backing_variable(v) for v in backbone.variables
                      ] + mix_variables + ([cache[1]] if cache else [])
    self.trainable_variables = mix_variables + (
        list(getattr(self, _BILM_WEIGHTS).values()) if trainable_biLM else [])
    self.regularization_losses = [
        tf.function(mix.regularization_loss, input_signature=[],
                    autograph=False)]

    # === Functions ===
    self.default = tf.function(self._default, input_signature=[_TEXT_SPEC],
                               autograph=False)
    self.tokens = tf.function(self._tokens,
                              input_signature=[_TOKENS_SPECS["tokens"],
                                               _TOKENS_SPECS["sequence_len"]],
                              autograph=False)
    if softmax is not None:
      self.log_probs = tf.function(self._log_probs,
                                   input_signature=[_TEXT_SPEC],
                                   autograph=False)
    self.__call__ = tf.function(self._call, autograph=False)
    # Traces saved for __call__: both input forms x both training modes.
    for training in (False, True):
      self.__call__.get_concrete_function(_TEXT_SPEC, training=training)
      self.__call__.get_concrete_function(dict(_TOKENS_SPECS),
                                          training=training)
    for loss in self.regularization_losses:
      loss.get_concrete_function()

  def _build_encoder_cache(self, backbone, vocab):
    """(table, vectors variable) of the encoder's cache, tracked as
    `encoder_cache_table` and `encoder_cache`."""
    keys, rows, vectors = encoder_cache(backbone, vocab)
    with tf.init_scope():
      variable = tf.Variable(vectors, trainable=False, name=_ENCODER_CACHE)
      table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.constant(keys, tf.string), tf.constant(rows, tf.int32)),
          default_value=-1)  # Not cached: the CNN.
    setattr(self, _ENCODER_CACHE, variable)
    setattr(self, _ENCODER_CACHE_TABLE, table)
    return table, variable

  def signature_functions(self) -> dict:
    """The concrete functions to save as signatures."""
    signatures = {"default": self.default.get_concrete_function(),
                  "tokens": self.tokens.get_concrete_function()}
    if self._softmax is not None:
      signatures["log_probs"] = self.log_probs.get_concrete_function()
    return signatures

  def _embed_flat(self, flat, lengths, training):
    tokens = tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)
    return elmo_lib.embed_tokens(self._backbone, self._mix, tokens,
                                 token_table=self._token_table,
                                 training=training)

  def _embed(self, tokens: tf.RaggedTensor, training: bool, width=None):
    tokens = tokens.with_row_splits_dtype(tf.int32)
    embed = self._embed_training if training else self._embed_inference
    outputs = embed(tokens.flat_values, tokens.row_lengths())
    return outputs if width is None else elmo_lib.pad_time(outputs, width)

  def _default(self, text):
    return self._embed(self._tokenizer.tokenize(text), training=False)

  def _tokens(self, tokens, sequence_len, training=False):
    # As wide as the `tokens` input (TF-Hub's ELMo), so taggers built for a
    # fixed max_len work unchanged.
    return self._embed(elmo_lib.tokens_to_ragged(tokens, sequence_len),
                       training=training, width=tf.shape(tokens)[1])

  def _log_probs(self, text):
    tokens = self._tokenizer.tokenize(text).with_row_splits_dtype(tf.int32)
    scores = elmo_lib.score_tokens(self._backbone, self._softmax, tokens,
                                   self._score_table)
    scores["tokens"] = tokens.to_tensor(default_value="")  # (B, T)
    return scores

  def _call(self, inputs, training=False):
    """Sentences (B,) or {"tokens", "sequence_len"} -> the output dict."""
    if isinstance(inputs, dict):
      return self._tokens(inputs["tokens"], inputs["sequence_len"],
                          training=bool(training))
    return self._embed(self._tokenizer.tokenize(inputs),
                       training=bool(training))


class ExportError(ValueError):
  """The model cannot be exported as asked (e.g. a 'jieba' tokenizer)."""


def exported_tokenization(trained_tokenization: str) -> str:
  """The `default` signature's tokenization for a model trained with
  `trained_tokenization`: its own, or `segmented` for `jieba` (which runs
  Python, not a graph: the signature then takes text segmented
  beforehand)."""
  if trained_tokenization == "jieba":
    return "segmented"
  return trained_tokenization


def _check_tokenization(mode: str) -> None:
  if mode == "jieba":
    raise ExportError(
        "This model was trained with tokenization 'jieba', which runs Python "
        "(the jieba package) and cannot be saved in a SavedModel graph. "
        "Export with ExportConfig(tokenization='segmented') (bin/export "
        "--export_tokenization=segmented): the `default` signature then "
        "splits on spaces, so give it text segmented by jieba beforehand, or "
        "feed jieba's tokens to the `tokens` signature. A model trained with "
        "'chinese_chars' needs no segmenter at all.")
  if mode not in config_lib.EXPORTABLE_TOKENIZATIONS:
    raise ExportError(
        f"Unknown tokenization {mode!r}; exportable modes are "
        f"{list(config_lib.EXPORTABLE_TOKENIZATIONS)}.")


def check_out_dir(out_dir: str) -> None:
  """Raises `ExportError` unless `out_dir` is new, empty or a SavedModel
  (which an export replaces). bin/train calls it before training."""
  if (tf.io.gfile.isdir(out_dir) and tf.io.gfile.listdir(out_dir) and
      not tf.io.gfile.exists(os.path.join(out_dir, "saved_model.pb"))):
    raise ExportError(f"{out_dir} exists and is not a SavedModel; not "
                      "replacing it. Choose a new output directory.")
  if tf.io.gfile.exists(out_dir) and not tf.io.gfile.isdir(out_dir):
    raise ExportError(f"{out_dir} is a file; choose an output directory.")


def _load_float32(model_dir: str):
  """(config, vocab, float32 backbone, float32 softmax, checkpoint path) of
  the latest checkpoint in `model_dir`.

  The exported network computes in float32 whatever the training policy;
  the variables are float32 in both, so the copy is exact.
  """
  policy = keras.mixed_precision.global_policy()
  try:
    config, vocab, model, checkpoint = checkpoints_lib.load_trained_model(
        model_dir)
  finally:
    # load_trained_model sets the run's policy (maybe mixed_bfloat16).
    keras.mixed_precision.set_global_policy(policy)
  backbone = inference_backbone(config.model)
  backbone.build()
  copy_weights(backbone_weights(model.backbone), backbone_weights(backbone),
               what=f"the weights of {checkpoint}")
  softmax = build_softmax(config.model)
  copy_weights(checkpoints_lib.weights_by_path(model.softmax),
               checkpoints_lib.weights_by_path(softmax),
               what=f"the softmax of {checkpoint}")
  return config, vocab, backbone, softmax, checkpoint


def _resolve_tokenization(config, options) -> str:
  mode = options.tokenization or config.data.tokenization
  _check_tokenization(mode)
  if mode != config.data.tokenization:
    logging.warning("Exporting with tokenization %r; the model was trained "
                    "with %r.", mode, config.data.tokenization)
  return mode


def build_module(
    model_dir: str,
    options: config_lib.ExportConfig = config_lib.ExportConfig()
) -> ElmoModule:
  """The `ElmoModule` of the latest checkpoint of a training run, in memory:
  what `export_saved_model` would save, without saving it (bin/embed and
  bin/score on --model_dir)."""
  config, vocab, backbone, softmax, _ = _load_float32(model_dir)
  mode = _resolve_tokenization(
      config, options.replace(tokenization=options.tokenization or
                              exported_tokenization(config.data.tokenization)))
  return ElmoModule(backbone, tokenizers_lib.get_tokenizer(mode), vocab,
                    options=options, softmax=softmax)


def export_saved_model(
    model_dir: str, out_dir: str,
    options: config_lib.ExportConfig = config_lib.ExportConfig()) -> str:
  """Exports the latest checkpoint of `model_dir` as a SavedModel.

  Args:
    model_dir: a directory written by `trainer.train` (config.json,
      vocab.txt, ckpt-N).
    out_dir: where to write the SavedModel; an existing SavedModel there is
      replaced, any other non-empty directory is an error.
    options: the `config.ExportConfig`: `trainable_biLM` also lists every
      biLM weight in `trainable_variables` (full fine-tuning with
      `hub.KerasLayer(..., trainable=True)`); `l2_coef` is the coefficient
      of the L2 penalty on the scalar-mix weights, returned by
      `regularization_losses`; `do_layer_norm` normalizes every layer
      before the weighted sum; `tokenization` is the mode of the `default`
      signature, None for the one the model was trained with (needed for
      'jieba' models, which are not exportable as such: use 'segmented').

  Returns:
    `out_dir`.

  Raises:
    ExportError: for a tokenization that cannot run in a graph ('jieba'),
      or an `out_dir` that holds something else than a SavedModel.
    checkpoints.TrainingError: when `model_dir` has no config or checkpoint.
  """
  out_dir = out_dir.rstrip("/") or out_dir
  check_out_dir(out_dir)
  if tf.io.gfile.exists(checkpoints_lib.config_path(model_dir)):
    # Fail before loading anything on a non-exportable tokenization.
    saved = config_lib.ExperimentConfig.load(
        checkpoints_lib.config_path(model_dir))
    _check_tokenization(options.tokenization or saved.data.tokenization)
  config, vocab, backbone, softmax, checkpoint = _load_float32(model_dir)
  save_module(config, vocab, backbone, out_dir, options, softmax=softmax,
              source=os.path.basename(checkpoint))
  return out_dir


def save_module(config: config_lib.ExperimentConfig,
                vocab: vocab_lib.Vocabulary, backbone: ElmoBackbone,
                out_dir: str,
                options: config_lib.ExportConfig = config_lib.ExportConfig(),
                softmax: SampledSoftmax | None = None,
                source: str = "",
                mix_values: dict | None = None) -> str:
  """Writes the SavedModel of a built float32 backbone (and softmax).

  `source` names where the weights came from (a checkpoint's basename), for
  assets/elmo_tf.json; `mix_values` ({"scalar_weights", "gamma"}) sets the
  scalar mix (default: its initial values, equal weights and gamma 1). See
  `export_saved_model` for the other arguments.
  """
  mode = _resolve_tokenization(config, options)
  # The saved graph must load anywhere: TensorFlow's own ops, never the
  # custom ones (op libraries that loaders would not have). The config asset
  # keeps the run's settings: speed knobs of its training.
  for lstm in backbone.forward_lstms + backbone.backward_lstms:
    lstm.fused_kernel = False
  if backbone.char_encoder is not None:
    backbone.char_encoder.window_max_kernel = False
    backbone.char_encoder.highway_kernel = False
  info = {
      "format_version": FORMAT_VERSION,
      "tokenization": mode,
      "trained_tokenization": config.data.tokenization,
      "checkpoint": source,
      "trainable_biLM": bool(options.trainable_biLM),
      "l2_coef": float(options.l2_coef),
      "do_layer_norm": bool(options.do_layer_norm),
      "outputs": output_keys(backbone.n_layers),
      "projection_dim": backbone.projection_dim,
      "n_layers": backbone.n_layers,
      "scoring": softmax is not None,
      "encoder_cache": (backbone.char_encoder is not None and
                        not options.trainable_biLM),
  }
  staging = tempfile.mkdtemp(prefix="elmo_tf_export_")
  try:
    assets = {
        CONFIG_ASSET: os.path.join(staging, CONFIG_ASSET),
        VOCAB_ASSET: os.path.join(staging, VOCAB_ASSET),
        INFO_ASSET: os.path.join(staging, INFO_ASSET),
    }
    config.save(assets[CONFIG_ASSET])
    vocab.save(assets[VOCAB_ASSET])
    with open(assets[INFO_ASSET], "w", encoding="utf-8") as f:
      f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")

    module = ElmoModule(backbone, tokenizers_lib.get_tokenizer(mode), vocab,
                        options=options, assets=assets, softmax=softmax)
    for key, value in (mix_values or {}).items():
      getattr(module, _MIX_WEIGHTS)[key].assign(value)
    # Written beside out_dir, then renamed: a failed export leaves any
    # previous SavedModel intact.
    partial = out_dir + ".partial"
    if tf.io.gfile.exists(partial):
      tf.io.gfile.rmtree(partial)
    tf.saved_model.save(module, partial,
                        signatures=module.signature_functions())
    if tf.io.gfile.exists(out_dir):
      tf.io.gfile.rmtree(out_dir)
    tf.io.gfile.rename(partial, out_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  logging.info("Exported %s (%s) to %s.", source or "the model", mode, out_dir)
  return out_dir


# === Reading an export back ===


def is_saved_model(path: str) -> bool:
  return tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def read_export(path: str) -> tuple[config_lib.ExperimentConfig, dict]:
  """(ExperimentConfig, info dict of elmo_tf.json) of an exported SavedModel."""
  assets = os.path.join(path, "assets")
  info_path = os.path.join(assets, INFO_ASSET)
  if not tf.io.gfile.exists(info_path):
    raise ValueError(f"{path} is not a SavedModel written by elmo_tf.export "
                     f"(no assets/{INFO_ASSET}).")
  with tf.io.gfile.GFile(info_path) as f:
    info = json.loads(f.read())
  if info.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{info_path}: format_version "
                     f"{info.get('format_version')}, this elmo_tf reads "
                     f"{FORMAT_VERSION}.")
  config = config_lib.ExperimentConfig.load(os.path.join(assets, CONFIG_ASSET))
  return config, info


def load_saved_model(path: str):
  """`tf.saved_model.load(path)`; for a SavedModel exported by an older
  elmo_tf, whose tokenizer used tensorflow-text's ops, registers them first
  (when tensorflow-text is installed)."""
  try:
    return tf.saved_model.load(path)
  except tf.errors.NotFoundError as e:
    if "RegexSplitWithOffsets" not in str(e):
      raise
    logging.warning("%s was exported by an older elmo_tf and needs "
                    "tensorflow-text's ops; elmo_tf.export.resave writes it "
                    "again without them.", path)
    # pylint: disable-next=g-import-not-at-top,unused-import
    import tensorflow_text  # noqa: F401
    return tf.saved_model.load(path)


def load(path: str):
  """(module, ExperimentConfig, tokenization) of a SavedModel written here or
  of a training run directory (its latest checkpoint, built in memory).

  Either way `module` has the same functions: `default(text)`,
  `tokens(tokens, sequence_len)`, `__call__` and, when the model can score,
  `log_probs(text)` (see the module docstring).
  """
  if is_saved_model(path):
    config, info = read_export(path)
    return load_saved_model(path), config, info["tokenization"]
  if tf.io.gfile.exists(checkpoints_lib.config_path(path)):
    config, _ = checkpoints_lib.read_run(path)
    return (build_module(path), config,
            exported_tokenization(config.data.tokenization))
  raise ValueError(f"{path} is neither a SavedModel written by elmo_tf "
                   "(bin/export) nor a training run (bin/train --model_dir).")


def resave(path: str, out_dir: str) -> str:
  """Writes an elmo_tf SavedModel again with this version's module (e.g. its
  core-op tokenizer and signatures), with the same weights and options:
  the numbers stay the same. The softmax (and `log_probs`) is kept when the
  SavedModel has it; older exports have none."""
  config, info = read_export(path)
  vocab = vocab_lib.Vocabulary.load(os.path.join(path, "assets", VOCAB_ASSET))
  backbone = inference_backbone(config.model)
  backbone.build()
  softmax = build_softmax(config.model) if info.get("scoring") else None
  restore_weights(path, backbone, softmax=softmax)
  options = config_lib.ExportConfig(
      trainable_biLM=info["trainable_biLM"], l2_coef=info["l2_coef"],
      do_layer_norm=info["do_layer_norm"], tokenization=info["tokenization"])
  # The exported s_j and gamma, not a fresh mix: save_module builds the
  # module, then they are copied in before saving.
  mix_values = _read_mix(path)
  return save_module(config, vocab, backbone, out_dir, options,
                     softmax=softmax, source=info.get("checkpoint", ""),
                     mix_values=mix_values)


def _read_mix(path: str) -> dict[str, np.ndarray]:
  prefix = os.path.join(path, "variables", "variables")
  reader = tf.train.load_checkpoint(prefix)
  values = {}
  for key in ("scalar_weights", "gamma"):
    values[key] = reader.get_tensor(
        f"{_MIX_WEIGHTS}/{key}/.ATTRIBUTES/VARIABLE_VALUE")
  return values


def build_softmax(model_config: config_lib.ModelConfig) -> SampledSoftmax:
  """A built float32 `SampledSoftmax` of a config (weights to be loaded)."""
  softmax = SampledSoftmax(model_config.vocab_size,
                           model_config.n_negative_samples,
                           training_softmax=model_config.training_softmax,
                           name="softmax", dtype="float32")
  softmax.build((None, model_config.lstm.projection_dim))
  return softmax


def restore_weights(path: str, backbone: ElmoBackbone,
                    scalar_mix: ScalarMix | None = None,
                    softmax: SampledSoftmax | None = None) -> None:
  """Loads an exported SavedModel's weights into `backbone` (and the mix,
  and the softmax of an export that has one).

  Reads <path>/variables directly (a TF2 checkpoint of the module), so the
  SavedModel's graph is not loaded. Every weight asked for must be found.
  """
  objects = {_BILM_WEIGHTS: backbone_weights(backbone)}
  if scalar_mix is not None:
    objects[_MIX_WEIGHTS] = scalar_mix_weights(scalar_mix)
  if softmax is not None:
    objects[_SOFTMAX_WEIGHTS] = checkpoints_lib.weights_by_path(softmax)
  prefix = os.path.join(path, "variables", "variables")
  with tf.init_scope():
    status = tf.train.Checkpoint(**objects).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
