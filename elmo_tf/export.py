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
in tokens, P = `lstm.projection_dim`, L = `lstm.n_layers`):

  * signature `default`: `text` (B,) string, raw sentences, tokenized in the
    graph with the model's tokenization mode (`whitespace`, `segmented`,
    `chinese_chars`).
  * signature `tokens`: `tokens` (B, max_len) string padded with "" and
    `sequence_len` (B,) int32 (tokens after `sequence_len` are ignored).
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

Inference is stateless: a sentence gives the same vectors whatever else is
in its batch and however much padding surrounds it.

Loading needs tensorflow-text's ops (the tokenizer runs in the graph):
`import tensorflow_text` before `tf.saved_model.load` / `hub.KerasLayer`.

Example:
```python
import tensorflow_text  # Registers the tokenizer's ops.
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
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import tokenizers as tokenizers_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.layers.scalar_mix import ScalarMix
from elmo_tf.models.backbone import ElmoBackbone

# === Asset file names (inside <saved model>/assets/) ===
CONFIG_ASSET = "config.json"
VOCAB_ASSET = "vocab.txt"
INFO_ASSET = "elmo_tf.json"
FORMAT_VERSION = 1

# Modes whose tokenizer is pure TensorFlow and can run inside a SavedModel.
EXPORTABLE_TOKENIZATIONS = ("whitespace", "segmented", "chinese_chars")

# Names of the object-graph children holding the weights, so that
# `restore_weights` can read them back from <saved model>/variables.
_BILM_WEIGHTS = "bilm_weights"
_MIX_WEIGHTS = "scalar_mix_weights"


def output_keys(n_layers: int) -> list[str]:
  """Output names of the signatures for an `n_layers`-layer biLM."""
  return (["word_emb"] + [f"lstm_outputs{i}" for i in range(1, n_layers + 1)]
          + ["elmo", "default", "sequence_len", "mask"])


# === Weights by path ===


def backbone_weights(backbone: ElmoBackbone) -> dict[str, keras.Variable]:
  """{path inside the backbone: variable}, e.g. `forward_lstm_0/kernel`.

  Keys do not depend on where the backbone sits (`bidirectional_lm/
  backbone/...` in training, `elmo_embedding/backbone/...` in a Keras
  model), so weights copy between any two backbones of one config. Dropout
  RNG states are left out (as in checkpoints).
  """
  result = {}
  for variable in backbone.variables:
    if variable.path.endswith("seed_generator_state"):
      continue
    parts = variable.path.split("/")
    # The last component equal to the backbone's name: its sub-layer names
    # (char_encoder, forward_lstm_0, ...) never equal it.
    start = len(parts) - 1 - parts[::-1].index(backbone.name)
    key = "/".join(parts[start + 1:])
    if key in result:
      raise ValueError(f"Two backbone variables share the path {key!r}.")
    result[key] = variable
  return result


def scalar_mix_weights(mix: ScalarMix) -> dict[str, keras.Variable]:
  return {"scalar_weights": mix.scalar_weights, "gamma": mix.gamma}


def copy_weights(source: dict, target: dict, what: str = "weights") -> None:
  """Assigns `source[k]` to `target[k]` for every key; keys must match."""
  if sorted(source) != sorted(target):
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    raise ValueError(f"Cannot copy {what}: missing {missing}, unexpected "
                     f"{unexpected}.")
  for key, variable in target.items():
    value = source[key]
    if tuple(value.shape) != tuple(variable.shape):
      raise ValueError(f"Cannot copy {what}: {key} has shape {value.shape}, "
                       f"expected {variable.shape}.")
    variable.assign(value)


# === The computation shared by the SavedModel and `ElmoEmbedding` ===


def tokens_to_ragged(tokens, sequence_len) -> tf.RaggedTensor:
  """TF-Hub `tokens` inputs -> (B, (tokens)) string RaggedTensor.

  `sequence_len` is clipped to [0, max_len]; tokens after it are ignored.
  """
  tokens = tf.convert_to_tensor(tokens, tf.string)  # (B, max_len)
  sequence_len = tf.cast(sequence_len, tf.int32)  # (B,)
  sequence_len = tf.clip_by_value(sequence_len, 0, tf.shape(tokens)[1])
  return tf.RaggedTensor.from_tensor(tokens, lengths=sequence_len)


def run_bilm(backbone: ElmoBackbone, tokens: tf.RaggedTensor,
             token_table=None, training=False) -> dict[str, tf.Tensor]:
  """The biLM's layers for tokenized sentences, before any scalar mix.

  Args:
    backbone: the biLM.
    tokens: (B, (n)) string RaggedTensor, without `<S>` / `</S>`.
    token_table: a `tf.lookup` table string -> word id, needed when the
      backbone's token encoder uses word ids (not for "chars").
    training: passed to the backbone (its dropout).

  Returns:
    dict with the outputs that do not depend on a mix: `word_emb` (B, T, P),
    `lstm_outputs{i}` (B, T, 2P), `sequence_len` (B,) int32, `mask` (B, T)
    bool; and `layers` (B, L+1, T, 2P), the input of the scalar mix. Float
    outputs are in the backbone's compute dtype and zero at padding.
  """
  tokens = tokens.with_row_splits_dtype(tf.int32)
  batch_size = tokens.nrows()
  sequence_len = tokens.row_lengths()  # (B,) int32
  # Longest sentence; 0 for an empty batch (an empty reduce_max is INT_MIN).
  max_len = tf.reduce_max(tf.concat([sequence_len, [0]], axis=0))
  boundary = lambda token: tf.RaggedTensor.from_tensor(
      tf.fill([batch_size, 1], token), row_splits_dtype=tf.int32)
  wrapped = tf.concat([boundary(vocab_lib.BOS_TOKEN), tokens,
                       boundary(vocab_lib.EOS_TOKEN)], axis=1)
  # (B, T + 2) with <S> at 0 and </S> right after each sentence.
  padded = wrapped.to_tensor(default_value="", shape=[batch_size, max_len + 2])
  inputs = {
      "char_ids": vocab_lib.char_ids(padded),  # (B, T + 2, 50)
      "mask": tf.sequence_mask(sequence_len + 2, max_len + 2),  # (B, T + 2)
  }
  if backbone.model_config.token_encoder != "chars":
    if token_table is None:
      raise ValueError("This biLM's token encoder needs word ids: pass "
                       "`token_table`.")
    inputs["token_ids"] = tf.cast(token_table.lookup(padded), tf.int32)
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


def mix_layers(scalar_mix: ScalarMix,
               bilm: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  """`elmo` (B, T, 2P) and `default` (B, 2P) of one scalar mix over the
  outputs of `run_bilm`."""
  elmo = scalar_mix(bilm["layers"], mask=bilm["mask"])  # (B, T, 2P), 0 at pad
  count = tf.maximum(tf.cast(bilm["sequence_len"], elmo.dtype),
                     1.0)[:, tf.newaxis]  # (B, 1)
  return {"elmo": elmo,
          "default": tf.reduce_sum(elmo, axis=1) / count}  # (B, 2P)


def embed_tokens(backbone: ElmoBackbone, scalar_mix: ScalarMix,
                 tokens: tf.RaggedTensor, token_table=None,
                 training=False) -> dict[str, tf.Tensor]:
  """All ELMo outputs of tokenized sentences (see the module docstring).

  Args:
    backbone: the biLM.
    scalar_mix: a `ScalarMix` over the backbone's L + 1 layers.
    tokens: (B, (n)) string RaggedTensor, without `<S>` / `</S>`.
    token_table: a `tf.lookup` table string -> word id, needed when the
      backbone's token encoder uses word ids (not for "chars").
    training: passed to the backbone (its dropout).

  Returns:
    dict of `output_keys(L)`; float outputs in the backbone's compute dtype.
  """
  bilm = run_bilm(backbone, tokens, token_table=token_table,
                  training=training)
  mixed = mix_layers(scalar_mix, bilm)
  # In the order of output_keys; `layers` (the mix's input) is left out.
  return {key: mixed[key] if key in mixed else bilm[key]
          for key in output_keys(backbone.n_layers)}


# === The exported module ===

_TEXT_SPEC = tf.TensorSpec([None], tf.string, name="text")
_TOKENS_SPECS = {
    "tokens": tf.TensorSpec([None, None], tf.string, name="tokens"),
    "sequence_len": tf.TensorSpec([None], tf.int32, name="sequence_len"),
}


class ElmoModule(tf.__internal__.tracking.AutoTrackable):
  """What `export_saved_model` saves (see the module docstring).

  An `AutoTrackable` rather than a `tf.Module`, because the reusable
  SavedModel API needs plain attributes named `variables` and
  `trainable_variables`, which `tf.Module` defines as read-only properties.

  Args:
    backbone: a built float32 `ElmoBackbone` holding the trained weights.
    tokenizer: an exportable `tokenizers.Tokenizer` (for
      `options.tokenization`, resolved by the caller).
    vocab: the `Vocabulary` (its table is used by word-id encoders).
    options: `config.ExportConfig`; `trainable_biLM` lists every biLM
      weight in `trainable_variables`, `l2_coef` is the L2 coefficient on
      the scalar-mix weights, `do_layer_norm` normalizes each layer before
      mixing (`ScalarMix`).
    assets: {asset file name: path of the file to copy into the SavedModel}.
  """

  def __init__(self, backbone, tokenizer, vocab,
               options: config_lib.ExportConfig = config_lib.ExportConfig(),
               assets=None):
    super().__init__()
    trainable_biLM = options.trainable_biLM
    mix = ScalarMix(backbone.n_layers + 1, l2_coef=options.l2_coef,
                    do_layer_norm=options.do_layer_norm, name="scalar_mix",
                    dtype="float32")
    mix.build()
    uses_token_ids = backbone.model_config.token_encoder != "chars"
    token_table = vocab.table if uses_token_ids else None
    # Untracked Python state: the Keras layers stay out of the object graph
    # (their weights are tracked below, by path).
    untracked = dict(_backbone=backbone, _mix=mix, _tokenizer=tokenizer,
                     _token_table=token_table)
    # The network is traced only in these two functions of flat tokens;
    # every public function calls one of them, so its own trace is cheap.
    # (Saving traces every function again: an export traces the network 2-4
    # times instead of 12.)
    embed_spec = [tf.TensorSpec([None], tf.string),  # (n_tokens,)
                  tf.TensorSpec([None], tf.int32)]  # (B,) row lengths
    untracked["_embed_inference"] = tf.function(
        lambda flat, lengths: self._embed_flat(flat, lengths, False),
        input_signature=embed_spec, autograph=False)
    # The frozen biLM runs in inference mode (no dropout) in training too.
    untracked["_embed_training"] = tf.function(
        lambda flat, lengths: self._embed_flat(flat, lengths, True),
        input_signature=embed_spec, autograph=False
    ) if trainable_biLM else untracked["_embed_inference"]
    for name, value in untracked.items():
      object.__setattr__(self, name, value)

    # === Tracked state ===
    if token_table is not None:
      self.vocab_table = token_table
    self.assets = {name: tf.saved_model.Asset(path)
                   for name, path in (assets or {}).items()}
    setattr(self, _BILM_WEIGHTS, backbone_weights(backbone))
    setattr(self, _MIX_WEIGHTS, scalar_mix_weights(mix))
    mix_variables = [mix.scalar_weights, mix.gamma]
    # Every backbone variable, incl. dropout RNG states that training-mode
    # functions use.
    self.variables = list(backbone.variables) + mix_variables
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
    self.__call__ = tf.function(self._call, autograph=False)
    # Traces saved for __call__: both input forms x both training modes.
    for training in (False, True):
      self.__call__.get_concrete_function(_TEXT_SPEC, training=training)
      self.__call__.get_concrete_function(dict(_TOKENS_SPECS),
                                          training=training)
    for loss in self.regularization_losses:
      loss.get_concrete_function()

  def signature_functions(self) -> dict:
    """The concrete functions to save as signatures."""
    return {"default": self.default.get_concrete_function(),
            "tokens": self.tokens.get_concrete_function()}

  def _embed_flat(self, flat, lengths, training):
    tokens = tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)
    return embed_tokens(self._backbone, self._mix, tokens,
                        token_table=self._token_table, training=training)

  def _embed(self, tokens: tf.RaggedTensor, training: bool):
    tokens = tokens.with_row_splits_dtype(tf.int32)
    embed = self._embed_training if training else self._embed_inference
    return embed(tokens.flat_values, tokens.row_lengths())

  def _default(self, text):
    return self._embed(self._tokenizer.tokenize(text), training=False)

  def _tokens(self, tokens, sequence_len):
    return self._embed(tokens_to_ragged(tokens, sequence_len), training=False)

  def _call(self, inputs, training=False):
    """Sentences (B,) or {"tokens", "sequence_len"} -> the output dict."""
    if isinstance(inputs, dict):
      tokens = tokens_to_ragged(inputs["tokens"], inputs["sequence_len"])
    else:
      tokens = self._tokenizer.tokenize(inputs)
    return self._embed(tokens, training=bool(training))


class ExportError(ValueError):
  """The model cannot be exported as asked (e.g. a 'jieba' tokenizer)."""


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
  if mode not in EXPORTABLE_TOKENIZATIONS:
    raise ExportError(f"Unknown tokenization {mode!r}; exportable modes are "
                     f"{list(EXPORTABLE_TOKENIZATIONS)}.")


def check_out_dir(out_dir: str) -> None:
  """Raises `ExportError` unless `out_dir` is new, empty or a SavedModel
  (which an export replaces). bin/train calls it before training."""
  if (tf.io.gfile.isdir(out_dir) and tf.io.gfile.listdir(out_dir) and
      not tf.io.gfile.exists(os.path.join(out_dir, "saved_model.pb"))):
    raise ExportError(f"{out_dir} exists and is not a SavedModel; not "
                      "replacing it. Choose a new output directory.")
  if tf.io.gfile.exists(out_dir) and not tf.io.gfile.isdir(out_dir):
    raise ExportError(f"{out_dir} is a file; choose an output directory.")


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
    trainer.TrainingError: when `model_dir` has no config or checkpoint.
  """
  # Late: ElmoEmbedding imports this module and needs no training code.
  from elmo_tf import trainer as trainer_lib
  tokenization = options.tokenization
  out_dir = out_dir.rstrip("/") or out_dir
  check_out_dir(out_dir)
  config_path = os.path.join(model_dir, trainer_lib.CONFIG_FILENAME)
  if tf.io.gfile.exists(config_path):
    # Fail before loading anything on a non-exportable tokenization.
    saved = config_lib.ExperimentConfig.load(config_path)
    _check_tokenization(tokenization or saved.data.tokenization)

  policy = keras.mixed_precision.global_policy()
  try:
    config, vocab, model, checkpoint = trainer_lib.load_trained_model(
        model_dir)
  finally:
    # load_trained_model sets the run's policy (maybe mixed_bfloat16).
    keras.mixed_precision.set_global_policy(policy)
  mode = tokenization or config.data.tokenization
  _check_tokenization(mode)
  if mode != config.data.tokenization:
    logging.warning("Exporting with tokenization %r; the model was trained "
                    "with %r.", mode, config.data.tokenization)

  # The exported network computes in float32 whatever the training policy;
  # the variables are float32 in both, so the copy is exact.
  backbone = ElmoBackbone(config.model, name="backbone", dtype="float32")
  backbone.build()
  copy_weights(backbone_weights(model.backbone), backbone_weights(backbone),
               what=f"the weights of {checkpoint}")

  info = {
      "format_version": FORMAT_VERSION,
      "tokenization": mode,
      "trained_tokenization": config.data.tokenization,
      "checkpoint": os.path.basename(checkpoint),
      "trainable_biLM": bool(options.trainable_biLM),
      "l2_coef": float(options.l2_coef),
      "do_layer_norm": bool(options.do_layer_norm),
      "outputs": output_keys(backbone.n_layers),
      "projection_dim": backbone.projection_dim,
      "n_layers": backbone.n_layers,
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
                        options=options, assets=assets)
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
  logging.info("Exported %s (%s) to %s.", checkpoint, mode, out_dir)
  return out_dir


# === Reading an export back (used by `ElmoEmbedding`) ===


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


def restore_weights(path: str, backbone: ElmoBackbone,
                    scalar_mix: ScalarMix | None = None) -> None:
  """Loads an exported SavedModel's weights into `backbone` (and the mix).

  Reads <path>/variables directly (a TF2 checkpoint of the module), so the
  SavedModel's graph is not loaded. Every backbone weight must be found.
  """
  objects = {_BILM_WEIGHTS: backbone_weights(backbone)}
  if scalar_mix is not None:
    objects[_MIX_WEIGHTS] = scalar_mix_weights(scalar_mix)
  prefix = os.path.join(path, "variables", "variables")
  with tf.init_scope():
    status = tf.train.Checkpoint(**objects).read(prefix)
    status.expect_partial().assert_existing_objects_matched()
