"""Configuration dataclasses; the only place defaults live.

Every config is a frozen dataclass that round-trips through JSON
(`to_json` / `from_json`). The full `ExperimentConfig` is written as
`config.json` beside checkpoints and into exported SavedModels, and the
`ExportConfig` of an export into its assets/elmo_tf.json; flags in `bin/`
only override them.
"""

import dataclasses
import json
import typing
from typing import Any


def _from_dict(cls, data: dict[str, Any]):
  """Builds dataclass `cls` from a dict, recursing into nested dataclasses.

  Unknown keys are an error so that a typo in a JSON file or an override is
  never silently ignored.
  """
  hints = typing.get_type_hints(cls)
  field_names = {f.name for f in dataclasses.fields(cls)}
  unknown = set(data) - field_names
  if unknown:
    raise ValueError(
        f"Unknown {cls.__name__} field(s): {sorted(unknown)}; "
        f"valid fields are {sorted(field_names)}.")
  kwargs = {}
  for name, value in data.items():
    kwargs[name] = _convert(hints[name], value)
  return cls(**kwargs)


def _convert(hint, value):
  if dataclasses.is_dataclass(hint) and isinstance(value, dict):
    return _from_dict(hint, value)
  origin = typing.get_origin(hint)
  if origin is tuple and isinstance(value, (list, tuple)):
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_convert(args[0], v) for v in value)
    return tuple(_convert(a, v) for a, v in zip(args, value))
  if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
    return value
  if hint is float and isinstance(value, int):
    return float(value)
  return value


class _JsonMixin:
  """JSON round trip for frozen dataclasses."""

  def to_dict(self) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self)))

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, data: dict[str, Any]):
    return _from_dict(cls, data)

  @classmethod
  def from_json(cls, text: str):
    return cls.from_dict(json.loads(text))

  def save(self, path: str) -> None:
    import tensorflow as tf  # Local import: config stays importable without TF.
    with tf.io.gfile.GFile(path, "w") as f:
      f.write(self.to_json() + "\n")

  @classmethod
  def load(cls, path: str):
    import tensorflow as tf
    with tf.io.gfile.GFile(path) as f:
      return cls.from_json(f.read())

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)


# === Choices of the string-valued fields (flags in bin/ take them from here) ===
# data.tokenization. `jieba` runs Python (the jieba package) and cannot be
# exported into a SavedModel graph; the others can (tokenizers.py).
TOKENIZATIONS = ("whitespace", "segmented", "chinese_chars", "jieba")
EXPORTABLE_TOKENIZATIONS = ("whitespace", "segmented", "chinese_chars")
BATCHING_MODES = ("sentences", "stream")  # data.batching
ON_BAD_LINE_CHOICES = ("error", "skip")  # data.on_bad_line
TOKEN_ENCODERS = ("chars", "tokens", "concat", "sum")  # model.token_encoder
TRAINING_SOFTMAXES = ("sampled", "full")  # model.training_softmax
OPTIMIZERS = ("adagrad", "adam", "sgd")  # train.optimizer
LEARNING_RATE_SCHEDULES = ("constant", "cosine", "linear")
MIXED_PRECISIONS = ("float32", "mixed_bfloat16")  # train.mixed_precision
DISTRIBUTIONS = ("default", "mirrored", "multi_worker")  # train.distribution


# Paper / bilm-tf character CNN filters: (width, number of filters).
PAPER_FILTERS = ((1, 32), (2, 32), (3, 64), (4, 128), (5, 256), (6, 512),
                 (7, 1024))


@dataclasses.dataclass(frozen=True)
class CharCNNConfig(_JsonMixin):
  """Character encoder: embedding -> convolutions + max-pool -> highway -> projection."""
  # 256 bytes + 5 specials, +1 so that id 0 is padding (see elmo_tf/vocab.py).
  n_characters: int = 262
  max_characters_per_token: int = 50
  embedding_dim: int = 16
  filters: tuple[tuple[int, int], ...] = PAPER_FILTERS
  n_highway: int = 2
  # bilm-tf uses relu for the convolutions of its released models.
  activation: str = "relu"
  # Exact speed-ups of the encoder (same outputs and gradients), both with
  # dynamic shapes (turn them off for XLA / jit_compile):
  # run it once per distinct token of a batch and gather the results back;
  deduplicate: bool = True
  # convolve only the windows that start inside each token (and one after
  # it), not all 50 slots.
  trim_padding: bool = True
  # Speed only: with trim_padding, the window ops (elmo_tf/ops/
  # window_max_kernel.cc) where they build: the windows' character
  # embeddings, whose gradient sums straight into the table (not
  # tf.gather's IndexedSlices of one row per character), and the max over
  # each token's windows with a one-pass gradient (not tf.math.segment_max
  # and its seven-op gradient). Never part of an exported SavedModel.
  window_max_kernel: bool = True
  # Speed only: the highway layers' elementwise math (bias adds, sigmoid,
  # relu, gated mix) and its gradient as one custom op each
  # (elmo_tf/ops/highway_kernel.cc) where it builds; float32 math (under
  # mixed_bfloat16 closer to float32 than TensorFlow's ops). Never part of
  # an exported SavedModel.
  highway_kernel: bool = True

  @property
  def n_filters(self) -> int:
    return sum(n for _, n in self.filters)


@dataclasses.dataclass(frozen=True)
class LSTMConfig(_JsonMixin):
  """Stacked projected LSTMs (LSTMP), one stack per direction."""
  n_layers: int = 2
  cell_dim: int = 4096
  projection_dim: int = 512
  cell_clip: float = 3.0
  projection_clip: float = 3.0
  # Added to the forget gate pre-activation at run time (not stored in B).
  forget_bias: float = 1.0
  # Residual connection around every LSTM layer except the first (bilm-tf).
  use_residual: bool = True
  # Speed only (same math): when the number of time steps is fixed when the
  # graph is built (stream-mode training windows of data.unroll_steps) and
  # at most this, the recurrence is unrolled into straight-line ops instead
  # of a tf.while_loop, saving the loop's and its gradient's per-step
  # overhead (TensorArray reads/writes, stack pushes/pops), which dominates
  # at small batch x cell sizes on CPU. Graph size and tracing time grow
  # with the steps unrolled, hence the limit; sentence buckets and exported
  # signatures have dynamic lengths and always loop. 0: never unroll.
  static_unroll_max_steps: int = 64
  # Speed only (same math): run each LSTM's whole recurrence, and its
  # gradient, as one fused C++ op (elmo_tf/ops/lstmp_kernel.cc, compiled on
  # first use; `make setup` builds it) instead of ~15 TensorFlow ops per
  # time step and ~30 in the gradient, with float32 state (XLA and a kernel
  # that cannot be built keep the TensorFlow ops). Used in training and
  # evaluation; exported SavedModels never contain it.
  fused_kernel: bool = True
  # Under mixed_bfloat16, the fused kernel's matmuls read bfloat16 operands
  # and accumulate in float32, on AMX tiles or as AVX512-BF16 dot products
  # (where the CPU has either and batch, cell and projection are multiples
  # of 32), as mixed precision does for every other matmul; False keeps
  # them in float32.
  fused_kernel_bfloat16_matmuls: bool = True
  # Speed only (same math): where the recurrence runs as TensorFlow ops in a
  # tf.while_loop under a right-padded mask (sentence batches, exported
  # signatures), compute real tokens only: rows sorted longest first, each
  # step on the rows that still have a token. Its shapes depend on the data,
  # which XLA cannot compile (jit_compile turns it off).
  pack_sequences: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig(_JsonMixin):
  """The biLM: token encoder + LSTM stacks + shared softmax."""
  vocab_size: int = 0
  # How layer 0 is built: "chars" (paper), "tokens" (word embedding only),
  # "concat" (concatenate both then project), "sum" (add both).
  token_encoder: str = "chars"
  # Word-embedding width for the "tokens"/"concat"/"sum" encoders; for "sum"
  # and "tokens" it is forced to lstm.projection_dim.
  token_embedding_dim: int = 512
  char_cnn: CharCNNConfig = dataclasses.field(default_factory=CharCNNConfig)
  lstm: LSTMConfig = dataclasses.field(default_factory=LSTMConfig)
  # Dropout on LSTM inputs and before the softmax (bilm-tf: 0.1).
  dropout: float = 0.1
  # Negatives per batch for the sampled softmax (log-uniform sampler).
  n_negative_samples: int = 8192
  # Training loss: "sampled" (sampled softmax, as bilm-tf) or "full" (exact
  # softmax; n_negative_samples unused). With a small vocabulary, where the
  # negatives would be most of it (PTB: 8192 of 10k), "full" is exact and
  # faster: no sampler, no gather, no accidental-hit removal.
  training_softmax: str = "sampled"


@dataclasses.dataclass(frozen=True)
class DataConfig(_JsonMixin):
  """Corpus, tokenization and batching."""
  # A built-in corpus name (ptb, peoples_daily), comma-separated globs, or a
  # directory written by bin/prepare_corpus.
  corpus: str = "ptb"
  # whitespace | segmented | chinese_chars | jieba
  tokenization: str = "whitespace"
  # stream: continuous text cut in windows, state carried across batches.
  # sentences: each sentence with <S>/</S>, zero initial state, bucketed.
  batching: str = "sentences"
  batch_size: int = 128
  unroll_steps: int = 20
  # Longest sentence (in tokens, without <S>/</S>) in `sentences` mode;
  # longer ones are cut into pieces.
  max_sentence_length: int = 100
  min_count: int = 1
  max_vocab: int = 0  # 0: no limit.
  # A vocabulary file (one token per line, `<S>`, `</S>`, `<UNK>` first) to
  # use as it is instead of building one from the train split (min_count and
  # max_vocab then unused). Fine-tuning a trained model on new text
  # (train.init_from) needs the source model's own, whose rows its softmax
  # and token embedding have: words outside it become <UNK>.
  vocab_file: str = ""
  shuffle_buffer: int = 10000
  on_bad_line: str = "error"  # error | skip
  # Sentences per shard written by bin/prepare_corpus.
  lines_per_shard: int = 100000


@dataclasses.dataclass(frozen=True)
class TrainConfig(_JsonMixin):
  """Optimizer, schedule, checkpoints and summaries (bilm-tf defaults)."""
  # adagrad | adam | sgd (OPTIMIZERS). adagrad is Keras's formula with the
  # softmax's and embeddings' sparse gradients applied to their rows only
  # (elmo_tf/optimizers.py `SparseAdagrad`, duplicate rows summed first, as
  # the dense gradient and bilm-tf's TF1 Adagrad have them): its step costs
  # the same at any vocabulary size. sgd is sparse too; adam updates every
  # row every step (its moments decay), so its step grows with the
  # vocabulary.
  optimizer: str = "adagrad"
  learning_rate: float = 0.2
  # "constant" (bilm-tf), or decay over the run's total steps from
  # learning_rate to learning_rate * final_learning_rate_fraction: "cosine"
  # or "linear". A function of the step, so resumed runs follow it exactly.
  learning_rate_schedule: str = "constant"
  final_learning_rate_fraction: float = 0.0
  initial_accumulator_value: float = 1.0
  clip_norm: float = 10.0
  # Gradients are taken of `loss * gradient_loss_scale`; 0 means
  # data.unroll_steps. The loss is a per-token mean, so this matches
  # bilm-tf, which differentiates mean loss x unroll_steps (a sum over the
  # window, mean over the batch); Adagrad's learning rate 0.2 and the clip
  # at 10 assume that scale.
  gradient_loss_scale: float = 0.0
  epochs: int = 10
  max_steps: int = 0  # 0: run `epochs` epochs.
  seed: int = 42
  mixed_precision: str = "float32"  # float32 | mixed_bfloat16
  jit_compile: bool = False
  # TensorFlow's intra-op pool (elmo_tf/runtime.py): -1 gives each op half
  # the cores, since the two directions already run side by side (one
  # thread on 2 cores: 256/64 trains 8-9% faster than with TensorFlow's
  # default); 0 is TensorFlow's default (every core); n > 0 is n threads.
  # Applied when the trainer is made, if TensorFlow has not started yet.
  intra_op_threads: int = -1
  distribution: str = "default"  # default | mirrored | multi_worker
  log_every_steps: int = 50
  checkpoint_every_steps: int = 500
  eval_every_steps: int = 2000
  max_checkpoints_to_keep: int = 3
  # Fine-tuning: a trained model (a SavedModel written by bin/export, or a
  # bin/train --model_dir) whose weights start this run instead of random
  # ones, as bilm-tf's restart.py continues a model on new text (the paper's
  # domain transfer, section 5). Its model config and vocabulary must be
  # this run's (data.vocab_file); the optimizer starts afresh. Read only
  # when the run has no checkpoint yet: a resumed run continues from its own.
  init_from: str = ""
  # Batches of the validation split used by periodic evaluation (0: all).
  eval_max_batches: int = 200
  # Divergence guard (elmo_tf/trainer.py `DivergenceGuard`). Training stops
  # with an error naming the step, before that step is checkpointed (so
  # checkpoint rotation never deletes the last checkpoint taken before the
  # fault), when after an update
  #   - the loss or the gradient norm is not finite (the update is skipped);
  #   - the loss is more than `divergence_loss_jump` nats above the mean loss
  #     of the previous `divergence_window_steps` steps of this process (the
  #     rule starts once that many steps ran, so it is off for the first
  #     `divergence_window_steps` steps after a start or resume); 0 disables;
  #   - some weight's magnitude exceeds `divergence_max_weight` (trained
  #     ELMo weights stay below ~10; a learning rate far too high pushes them
  #     to 1e5 and more within a step, often while the loss is still
  #     finite); 0 disables. Every weight is read on the first step of a
  #     process; later steps read whole only the variables that every
  #     update changes, and of the softmax and embeddings (with adagrad or
  #     sgd on one replica) only the rows the step updated: the other rows
  #     are as last checked, and the check costs the same at any vocabulary.
  divergence_loss_jump: float = 3.0
  divergence_window_steps: int = 100
  divergence_max_weight: float = 1000.0


@dataclasses.dataclass(frozen=True)
class ExportConfig(_JsonMixin):
  """Options of a SavedModel export (elmo_tf/export.py, bin/export).

  Written into the SavedModel's assets/elmo_tf.json; `ElmoEmbedding` takes
  `l2_coef` and `do_layer_norm` from there unless given.
  """
  # Also list every biLM weight in the SavedModel's trainable_variables
  # (full fine-tuning with hub.KerasLayer(..., trainable=True)); by default
  # only the scalar-mix weights s_j and gamma are trainable.
  trainable_biLM: bool = False
  # L2 coefficient on the scalar-mix weights s_j, returned by the
  # SavedModel's regularization_losses (the paper's lambda = 0.001).
  l2_coef: float = 1e-3
  # Normalize every biLM layer before the weighted sum.
  do_layer_norm: bool = False
  # Tokenization of the `default` signature (whitespace | segmented |
  # chinese_chars); None: the model's own (data.tokenization).
  tokenization: str | None = None


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(_JsonMixin):
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def _preset_model(cell_dim, projection_dim, filters, n_highway,
                  n_layers=2, n_negative_samples=8192, dropout=0.1):
  return ModelConfig(
      char_cnn=CharCNNConfig(filters=filters, n_highway=n_highway),
      lstm=LSTMConfig(n_layers=n_layers, cell_dim=cell_dim,
                      projection_dim=projection_dim),
      n_negative_samples=n_negative_samples,
      dropout=dropout)


# Published sizes (bilm-tf / AllenNLP). Parameter counts of character encoder
# plus LSTMs, without the softmax: small 13.6M, medium 28.0M, original 93.6M.
PRESETS: dict[str, ModelConfig] = {
    "tiny": _preset_model(cell_dim=32, projection_dim=16,
                          filters=((1, 8), (2, 8), (3, 16)), n_highway=1,
                          n_negative_samples=16, dropout=0.0),
    # The size of issue 3's 25-minute bilm-tf reference (256 cells, 64
    # projection, 128 filters): about 5x faster per token than cpu_small
    # here. 1024 negatives: with 8192 of PTB's 10k words the softmax would
    # cost more than the rest of the model.
    "cpu_fast": _preset_model(cell_dim=256, projection_dim=64,
                              filters=((1, 32), (2, 32), (3, 64)),
                              n_highway=1, n_negative_samples=1024,
                              dropout=0.1),
    # Sized for PTB on a 2-core CPU (stream mode, batch 64 x 20).
    "cpu_small": _preset_model(cell_dim=512, projection_dim=128,
                               filters=((1, 32), (2, 32), (3, 64), (4, 128),
                                        (5, 128), (6, 128)),
                               # Near-full for PTB's 10k words (bilm-tf's
                               # default): few negatives leave rare words'
                               # logits untrained and full-softmax
                               # perplexity high.
                               n_highway=1, n_negative_samples=8192,
                               dropout=0.3),
    "small": _preset_model(cell_dim=1024, projection_dim=128,
                           filters=PAPER_FILTERS, n_highway=1),
    "medium": _preset_model(cell_dim=2048, projection_dim=256,
                            filters=PAPER_FILTERS, n_highway=1),
    "original": _preset_model(cell_dim=4096, projection_dim=512,
                              filters=PAPER_FILTERS, n_highway=2),
}


# The model size bin/train uses when neither --preset nor --config is given.
DEFAULT_PRESET = "cpu_small"


def preset(name: str) -> ModelConfig:
  try:
    return PRESETS[name]
  except KeyError:
    raise ValueError(
        f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.") from None


def apply_overrides(config, overrides: dict[str, Any]):
  """Returns `config` with dotted-path overrides, e.g. {"lstm.cell_dim": 512}.

  Values may be JSON strings (as they arrive from `--set key=value`).
  """
  for path, value in overrides.items():
    config = _override(config, path.split("."), value, path)
  return config


def _override(config, parts, value, full_path):
  names = {f.name for f in dataclasses.fields(config)}
  head = parts[0]
  if head not in names:
    raise ValueError(f"Cannot override {full_path!r}: {type(config).__name__} "
                     f"has no field {head!r} (fields: {sorted(names)}).")
  current = getattr(config, head)
  if len(parts) > 1:
    if not dataclasses.is_dataclass(current):
      raise ValueError(f"Cannot override {full_path!r}: {head!r} is not a group.")
    return dataclasses.replace(config, **{head: _override(current, parts[1:], value, full_path)})
  if isinstance(value, str) and not isinstance(current, str):
    try:
      value = json.loads(value)
    except json.JSONDecodeError as e:
      raise ValueError(f"Cannot parse override {full_path}={value!r}: {e}") from None
  hint = typing.get_type_hints(type(config))[head]
  return dataclasses.replace(config, **{head: _convert(hint, value)})
