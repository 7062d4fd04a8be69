"""Analytic FLOP counts of the biLM, for model-FLOPs-utilization figures.

Counts multiply-adds of the matmul-like work (2 FLOPs each); elementwise
work is ignored, as is usual for MFU. Training costs ~3x the forward pass
(forward, and backward with respect to activations and weights).
"""

from elmo_tf import config as config_lib


def encoder_macs_per_token(model: config_lib.ModelConfig,
                           char_windows: float | None = None) -> float:
  """Character CNN + highway + projection, per token encoded.

  `char_windows`: convolution windows per token and filter width (default
  every window of all 50 slots); the backbone convolves the windows that
  start inside each token and one after it (the token's slots + 1).
  """
  cnn = model.char_cnn
  slots = cnn.max_characters_per_token
  def windows(width):
    if char_windows is None:
      return slots - width + 1
    return min(char_windows, slots - width + 1)
  convs = sum(windows(width) * width * cnn.embedding_dim * n
              for width, n in cnn.filters)
  n_filters = cnn.n_filters
  highway = cnn.n_highway * 2 * n_filters * n_filters
  projection = n_filters * model.lstm.projection_dim
  return float(convs + highway + projection)


def lstm_macs_per_token(model: config_lib.ModelConfig) -> float:
  """All LSTM layers of both directions, per token."""
  lstm = model.lstm
  per_layer = ((lstm.projection_dim + lstm.projection_dim) * 4 * lstm.cell_dim
               + lstm.cell_dim * lstm.projection_dim)
  return float(2 * lstm.n_layers * per_layer)


def softmax_macs_per_token(model: config_lib.ModelConfig) -> float:
  """Softmax of both directions: each token's hidden state against the
  shared negatives plus its own target row (sampled), or every class."""
  if model.training_softmax == "full":
    classes = model.vocab_size + 1
  else:
    classes = model.n_negative_samples + 1
  return float(2 * model.lstm.projection_dim * classes)


def training_flops_per_token(model: config_lib.ModelConfig,
                             encoded_fraction: float = 1.0,
                             char_windows: float | None = None) -> dict:
  """FLOPs of one training step, per target token (one direction counted).

  Args:
    model: the model config.
    encoded_fraction: tokens actually run through the character encoder per
      batch token (distinct tokens / tokens when the batch is deduplicated).
    char_windows: convolution windows per token and filter width (see
      above).
  """
  encoder = encoder_macs_per_token(model, char_windows) * encoded_fraction
  lstm = lstm_macs_per_token(model)
  softmax = softmax_macs_per_token(model)
  forward_macs = encoder + lstm + softmax
  return {
      "encoder_macs": encoder,
      "lstm_macs": lstm,
      "softmax_macs": softmax,
      "train_flops": 3 * 2 * forward_macs,
  }
