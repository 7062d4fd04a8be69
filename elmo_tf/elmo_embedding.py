"""ELMo as a native Keras 3 layer, rebuilt from an exported SavedModel."""

import os

import keras
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import export as export_lib
from elmo_tf import tokenizers as tokenizers_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.layers.scalar_mix import ScalarMix
from elmo_tf.models import elmo as elmo_lib
from elmo_tf.models.backbone import ElmoBackbone


@keras.saving.register_keras_serializable(package="elmo_tf")
class ElmoEmbedding(keras.layers.Layer):
  """Contextual word vectors from an ELMo SavedModel, for Keras 3 models.

  Reads the config and tokenization mode from the SavedModel's assets,
  rebuilds the same `ElmoBackbone` (one implementation of the network
  everywhere) and loads the exported weights into it, so the layer trains
  with any Keras 3 optimizer: Keras 3 cannot train the SavedModel itself
  (`keras.layers.TFSMLayer` fails under Adam), and `hub.KerasLayer` needs
  tf_keras. Strings are tokenized inside the layer, as in the SavedModel's
  `default` signature, and the outputs are the signature's (see
  `elmo_tf.export`): the same numbers for the same weights.

  The scalar mix (s_j, gamma) is trainable; with `trainable_biLM` every
  biLM weight is too. A frozen biLM runs in inference mode (no dropout).
  (Keras propagates `layer.trainable = ...` to sub-layers: setting it to
  True later unfreezes the biLM as well; use `trainable_biLM` instead.)
  The mix's L2 penalty `l2_coef * sum(s ** 2)` is added to the model's
  losses. The layer runs the character CNN on every distinct token of a
  batch: it does not use the export's cache of vocabulary-word vectors
  (`elmo_tf.export`), which fine-tuned or reloaded biLM weights (e.g.
  `model.load_weights`) would leave stale.

  Several mixes from one biLM pass: with `n_mixes=K` (output "elmo" or
  "default") the layer holds K independent scalar mixes, named
  `scalar_mix`, `scalar_mix_1`, ..., `scalar_mix_{K-1}`, runs the biLM
  once and returns a list of K tensors, one per downstream use (the paper
  feeds ELMo both to the input and to the output of its task RNN, each with
  its own s_j and gamma). Every mix starts from the export's s_j and gamma
  and adds its own L2 penalty.

  Saving: `get_config` stores `path`, and `model.save("m.keras")` stores
  the layer's current weights; loading rebuilds the layer from the
  SavedModel at `path` (which must still exist there) and then sets the
  saved weights, so fine-tuned values survive. Prefer an absolute `path`.

  Args:
    path: directory of a SavedModel written by `elmo_tf.export` (or
      `bin/export`).
    output: which output to return: "elmo" (default, (B, T, 2P)),
      "default" ((B, 2P) mean over tokens), "word_emb" ((B, T, P)),
      "lstm_outputs{i}", "mask" or "sequence_len"; or "all" for the dict.
    trainable_biLM: fine-tune the biLM's weights too.
    l2_coef: L2 coefficient on s; None takes the export's value.
    do_layer_norm: normalize each layer before mixing; None takes the
      export's value.
    use_top_only: return `gamma * top layer` instead of the weighted sum.
    n_mixes: number of independent scalar mixes (outputs "elmo" and
      "default" only); more than 1 returns a list of that many tensors.
    **kwargs: standard `keras.layers.Layer` arguments (`name`, `dtype`).

  Call arguments:
    inputs: (B,) string sentences, or a dict with `tokens` (B, max_len)
      string padded with "" and `sequence_len` (B,) int.
    training: dropout in the biLM when `trainable_biLM`.

  Example:
  ```python
  text = keras.Input(shape=(), dtype="string")
  vectors = elmo_tf.ElmoEmbedding("/abs/savedmodels/ptb",
                                  output="default")(text)  # (B, 2P)
  model = keras.Model(text, keras.layers.Dense(2)(vectors))
  model.compile(keras.optimizers.Adam(1e-3), ...)
  model.fit(tf.data.Dataset.from_tensor_slices((sentences, labels)).batch(32))
  ```

  Two mixes, for the input and the output of a task LSTM (a tagger):
  ```python
  text = keras.Input(shape=(), dtype="string")
  elmo_in, elmo_out = elmo_tf.ElmoEmbedding(
      "/abs/savedmodels/ptb", n_mixes=2)(text)  # 2 x (B, T, 2P)
  hidden = keras.layers.Bidirectional(keras.layers.LSTM(
      64, return_sequences=True))(elmo_in)  # (B, T, 128)
  features = keras.layers.Concatenate()([hidden, elmo_out])  # (B, T, 128+2P)
  tags = keras.layers.Dense(n_tags)(features)  # (B, T, n_tags)
  ```
  """

  def __init__(self, path, output="elmo", trainable_biLM=False, l2_coef=None,
               do_layer_norm=None, use_top_only=False, n_mixes=1, **kwargs):
    super().__init__(**kwargs)
    # (`path` and `output` are read-only properties of Keras layers.)
    self.saved_model_path = os.fspath(path)
    experiment_config, info = export_lib.read_export(self.saved_model_path)
    valid = info["outputs"] + ["all"]
    if output not in valid:
      raise ValueError(f"Unknown output {output!r}; choose one of {valid}.")
    self.output_key = output
    self.n_mixes = int(n_mixes)
    if self.n_mixes < 1:
      raise ValueError(f"n_mixes must be at least 1, got {n_mixes}.")
    if self.n_mixes > 1 and output not in ("elmo", "default"):
      raise ValueError(f"n_mixes={self.n_mixes} needs output 'elmo' or "
                       f"'default' (the mixed outputs), not {output!r}.")
    self.trainable_biLM = bool(trainable_biLM)
    self.l2_coef = float(info["l2_coef"] if l2_coef is None else l2_coef)
    self.do_layer_norm = bool(
        info["do_layer_norm"] if do_layer_norm is None else do_layer_norm)
    self.use_top_only = bool(use_top_only)
    self.tokenization = info["tokenization"]
    model_config = experiment_config.model

    # === Layers ===
    self.tokenizer = tokenizers_lib.get_tokenizer(self.tokenization)
    self.token_table = None
    if model_config.token_encoder != "chars":
      vocab = vocab_lib.Vocabulary.load(os.path.join(
          self.saved_model_path, "assets", export_lib.VOCAB_ASSET))
      self.token_table = vocab.table
    self.backbone = export_lib.inference_backbone(model_config,
                                                  dtype=self.dtype_policy)
    self.backbone.trainable = self.trainable_biLM
    # The first mix keeps the name "scalar_mix" (and the attribute
    # `scalar_mix`), so Keras files saved before `n_mixes` existed load.
    self.scalar_mixes = [
        ScalarMix(model_config.lstm.n_layers + 1, l2_coef=self.l2_coef,
                  do_layer_norm=self.do_layer_norm,
                  use_top_only=self.use_top_only,
                  name="scalar_mix" + (f"_{i}" if i else ""),
                  dtype=self.dtype_policy)
        for i in range(self.n_mixes)]
    self.scalar_mix = self.scalar_mixes[0]

  def build(self, input_shape=None):
    self.backbone.build()
    for mix in self.scalar_mixes:
      mix.build()
    # The exported weights (a Keras file loaded later overrides them); every
    # mix starts from the exported s_j and gamma.
    export_lib.restore_weights(self.saved_model_path, self.backbone,
                               self.scalar_mix)
    exported = export_lib.scalar_mix_weights(self.scalar_mix)
    for mix in self.scalar_mixes[1:]:
      checkpoints_lib.copy_weights(exported,
                                   export_lib.scalar_mix_weights(mix),
                                   what=f"the exported mix into {mix.name}")
    self.built = True

  def call(self, inputs, training=None):
    width = None
    if isinstance(inputs, dict):
      tokens = elmo_lib.tokens_to_ragged(inputs["tokens"],
                                         inputs["sequence_len"])
      # As wide as the `tokens` input, like the SavedModel's signature.
      width = tf.shape(inputs["tokens"])[1]
    else:
      tokens = self.tokenizer.tokenize(inputs)  # (B, (tokens))
    training = bool(training) and self.trainable_biLM
    if self.n_mixes == 1:
      outputs = elmo_lib.embed_tokens(
          self.backbone, self.scalar_mix, tokens,
          token_table=self.token_table, training=training, width=width)
      return outputs if self.output_key == "all" else outputs[self.output_key]
    # One biLM pass for every mix: n_mixes x (B, T, 2P) for "elmo",
    # n_mixes x (B, 2P) for "default".
    bilm = elmo_lib.run_bilm(self.backbone, tokens,
                             token_table=self.token_table, training=training)
    mixed = [elmo_lib.mix_layers(mix, bilm) for mix in self.scalar_mixes]
    if width is not None:
      mixed = [elmo_lib.pad_time(m, width) for m in mixed]
    return [m[self.output_key] for m in mixed]

  def compute_output_spec(self, inputs, training=None):
    if isinstance(inputs, dict):
      batch = inputs["sequence_len"].shape[0]
    else:
      batch = inputs.shape[0]
    p = self.backbone.projection_dim
    dtype = self.compute_dtype
    specs = {"word_emb": keras.KerasTensor((batch, None, p), dtype)}
    for i in range(1, self.backbone.n_layers + 1):
      specs[f"lstm_outputs{i}"] = keras.KerasTensor((batch, None, 2 * p),
                                                    dtype)
    specs.update(
        elmo=keras.KerasTensor((batch, None, 2 * p), dtype),
        default=keras.KerasTensor((batch, 2 * p), dtype),
        sequence_len=keras.KerasTensor((batch,), "int32"),
        mask=keras.KerasTensor((batch, None), "bool"))
    if self.output_key == "all":
      return specs
    if self.n_mixes > 1:
      return [keras.KerasTensor(specs[self.output_key].shape, dtype)
              for _ in range(self.n_mixes)]
    return specs[self.output_key]

  def get_config(self):
    config = super().get_config()
    config.update({
        "path": self.saved_model_path,
        "output": self.output_key,
        "trainable_biLM": self.trainable_biLM,
        "l2_coef": self.l2_coef,
        "do_layer_norm": self.do_layer_norm,
        "use_top_only": self.use_top_only,
        "n_mixes": self.n_mixes,
    })
    return config
