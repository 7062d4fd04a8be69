"""The bidirectional language model: backbone + shared softmax + loss."""

import keras
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.layers.sampled_softmax import SampledSoftmax
from elmo_tf.models.backbone import ElmoBackbone

# Batch keys read by the backbone (the rest are targets).
BACKBONE_KEYS = ("token_ids", "char_ids", "mask", "forward_state",
                 "backward_state", "backward_token_ids", "backward_char_ids",
                 "backward_mask")


@keras.saving.register_keras_serializable(package="elmo_tf")
class BidirectionalLM(keras.Model):
  """ELMo's training model: an `ElmoBackbone` and one softmax for both LMs.

  The top LSTM output of each direction (after dropout `config.dropout` in
  training) predicts the next token (forward) or the previous token
  (backward) through one `SampledSoftmax` named `softmax`; both directions
  share its weights and, in training, its sampled negatives.

  Losses are per-token means over positions whose target is > 0; `loss`
  is the mean of the forward and backward losses. In training the sampled
  softmax loss is used; with `training=False` the exact softmax, so
  `exp(forward_loss)` is the forward perplexity.

  Args:
    config: a `ModelConfig` (`vocab_size` must be set).
    **kwargs: standard `keras.Model` arguments.

  Call arguments:
    batch: dict from `elmo_tf.data`: `token_ids`, `char_ids`, optional
      `mask`, `forward_targets`, `backward_targets`, optional states
      `forward_state` / `backward_state` and, in stream mode,
      `backward_token_ids`, `backward_char_ids`, `backward_mask` (then
      `backward_targets` is aligned with `backward_token_ids`), optional
      `sampler_seed` (2,) int for stateless negative sampling or
      `sampler_negatives` (sampled, tries) drawn beforehand.
    training: sampled softmax and dropout if True.

  Returns:
    dict with float32 scalars `loss`, `forward_loss`, `backward_loss`,
    `forward_tokens`, `backward_tokens` (target counts) and the final
    `forward_state` / `backward_state` to carry to the next batch.

  Example:
  ```python
  model = BidirectionalLM(preset("tiny").replace(vocab_size=vocab.size))
  with tf.GradientTape() as tape:
    # The sampled softmax draws its negatives from `sampler_seed`.
    out = model(dict(batch, sampler_seed=tf.constant([seed, step])),
                training=True)
  grads = tape.gradient(out["loss"], model.trainable_variables)
  ```
  """

  def __init__(self, config, **kwargs):
    kwargs.setdefault("name", "bidirectional_lm")
    super().__init__(**kwargs)
    if isinstance(config, dict):
      config = config_lib.ModelConfig.from_dict(config)
    if config.vocab_size < 1:
      raise ValueError(
          f"BidirectionalLM needs model.vocab_size (got {config.vocab_size}).")
    self.model_config = config

    # === Layers ===
    self.backbone = ElmoBackbone(config, name="backbone",
                                 dtype=self.dtype_policy)
    self.softmax_dropout = keras.layers.Dropout(
        config.dropout, name="softmax_dropout", dtype=self.dtype_policy)
    # float32 logits and losses whatever the policy.
    self.softmax = SampledSoftmax(
        config.vocab_size, config.n_negative_samples,
        training_softmax=config.training_softmax, name="softmax",
        dtype="float32")

  def build(self, input_shape=None):
    """Creates every weight from the config alone (no data needed)."""
    self.backbone.build()
    self.softmax.build((None, self.model_config.lstm.projection_dim))
    self.built = True

  def call(self, batch, training=None):
    backbone_inputs = {k: batch[k] for k in BACKBONE_KEYS if k in batch}
    out = self.backbone(backbone_inputs, training=training)
    p = self.model_config.lstm.projection_dim
    forward_targets = tf.reshape(
        tf.cast(batch["forward_targets"], tf.int32), (-1,))  # (N,)
    backward_targets = tf.reshape(
        tf.cast(batch["backward_targets"], tf.int32), (-1,))  # (N',)
    # Both directions in one softmax call: (N + N', P).
    hidden = tf.concat([
        tf.reshape(out["forward_outputs"][-1], (-1, p)),
        tf.reshape(out["backward_outputs"][-1], (-1, p))], axis=0)
    hidden = self.softmax_dropout(hidden, training=training)
    targets = tf.concat([forward_targets, backward_targets], axis=0)
    # (N + N',); `sampler_seed` (2,) makes the negatives a function of the
    # step, so resumed runs match uninterrupted ones.
    losses = self.softmax(hidden, targets, training=training,
                          seed=batch.get("sampler_seed"),
                          negatives=batch.get("sampler_negatives"))
    n_forward = tf.size(forward_targets)
    forward_losses = losses[:n_forward]
    backward_losses = losses[n_forward:]

    forward_tokens = tf.reduce_sum(tf.cast(forward_targets > 0, tf.float32))
    backward_tokens = tf.reduce_sum(tf.cast(backward_targets > 0, tf.float32))
    forward_loss = tf.reduce_sum(forward_losses) / tf.maximum(
        forward_tokens, 1.0)
    backward_loss = tf.reduce_sum(backward_losses) / tf.maximum(
        backward_tokens, 1.0)
    return {
        "loss": 0.5 * (forward_loss + backward_loss),
        "forward_loss": forward_loss,
        "backward_loss": backward_loss,
        "forward_tokens": forward_tokens,
        "backward_tokens": backward_tokens,
        "forward_state": out["forward_state"],
        "backward_state": out["backward_state"],
    }

  def get_config(self):
    return {"name": self.name, "config": self.model_config.to_dict()}

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    model_config = config_lib.ModelConfig.from_dict(config.pop("config"))
    return cls(model_config, **config)
