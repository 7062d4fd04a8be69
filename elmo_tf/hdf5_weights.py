r"""The published ELMo weight format (bilm-tf, AllenNLP): options.json + hdf5.

The pretrained ELMo models (the original English ones, models trained with
bilm-tf, AllenNLP's) are an `options.json` of hyper-parameters and an hdf5
file of weights. This module maps both to elmo_tf's `ModelConfig` and
`ElmoBackbone` and back:

  read_options(path)                        options.json -> ModelConfig
  load_hdf5_into_backbone(h5, backbone)     hdf5 datasets -> backbone weights
  write_hdf5(backbone, config, out_dir)     backbone -> options.json +
                                            weights.hdf5 (+ softmax.hdf5,
                                            vocab.txt)
  import_hdf5(...), export_hdf5(...)        the work of bin/import_hdf5 and
                                            bin/export_hdf5

The format (i = filter, k = highway layer, d = 0 forward / 1 backward, l =
LSTM layer; E = char embedding width, F = number of filters, P = projection
width, C = cell width, V = words). Dataset (shape in the file) -> elmo_tf
weight (`checkpoints.weights_by_path(backbone)` key):

  char_embed (261, E)          -> char_encoder/char_embedding/embeddings,
                                  rows 1..261 (row 0: zeros, padding)
  CNN/W_cnn_{i} (1, w, E, n)   -> char_encoder/cnn_{i}/kernel (w, E, n)
  CNN/b_cnn_{i} (n,)           -> char_encoder/cnn_{i}/bias
  CNN_high_{k}/W_carry (F, F), b_carry (F,),
  CNN_high_{k}/W_transform (F, F), b_transform (F,)
                               -> char_encoder/highway_{k}/carry_kernel,
                                  carry_bias, transform_kernel,
                                  transform_bias
  CNN_proj/W_proj (F, P), b_proj (P,)
                               -> char_encoder/projection/kernel, bias
  embedding (V, P)             -> token_embedding/embeddings, rows 1..V
                                  (token-input models, instead of the CNN)
  RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/
      W_0 (2P, 4C)             -> {forward,backward}_lstm_{l}/kernel
      B (4C,)                  -> {forward,backward}_lstm_{l}/bias
      W_P_0 (C, P)             -> {forward,backward}_lstm_{l}/projection

Conventions at the boundary:
  * Characters: the file's `char_embed` has the 261 training ids (bytes
    0-255, specials 256-260); prediction uses id + 1 with 0 for padding,
    and so does elmo_tf everywhere, so row 0 of elmo_tf's embedding is a
    zero row in front of `char_embed`. options.json says `n_characters`
    262 (prediction) or 261 (training); both read the same way.
  * LSTM: `W_0` stacks the rows [input; h] and the gate columns i, j, f, o;
    TensorFlow adds the forget bias 1.0 at run time, so it is not in `B`
    (an elmo_tf model with another `lstm.forget_bias` gets the difference
    folded into `B` when written). Clips absent or null mean no clip (0 in
    elmo_tf).
  * bilm-tf builds `CNN_proj` only when F != P and `W_P_0` only when P < C;
    without them elmo_tf uses an identity projection. When writing, both
    are always written (AllenNLP always reads them; bilm-tf ignores them).
  * Word ids: a bilm-tf vocabulary file gives every line its index as id
    (its `<S>`, `</S>`, `<UNK>` anywhere, `!!!MAXTERMID` skipped); elmo_tf
    puts the three specials first and counts from 1 (0 = padding). Rows of
    `embedding` and of the softmax are permuted accordingly on import
    (`read_bilm_tf_vocab`); exports write elmo_tf's own vocab.txt, whose
    line order is the row order of the written matrices.
  * The softmax (`softmax/W` (V, P), `softmax/b` (V,), the names of
    bilm-tf's training checkpoint; bilm-tf's own dump leaves it out) is a
    separate file, `softmax.hdf5`.

bilm-tf's `BidirectionalLanguageModel` is stateful: every batch starts from
the final LSTM states of the previous one, row by row. elmo_tf's inference
is stateless; `run_stateful` reproduces bilm-tf's behaviour through the
backbone's explicit state inputs, for parity checks only.

Example:
```python
config = hdf5_weights.read_options("options.json")
backbone = ElmoBackbone(config, name="backbone", dtype="float32")
backbone.build()
hdf5_weights.load_hdf5_into_backbone("weights.hdf5", backbone)
hdf5_weights.write_hdf5(backbone, config, "/tmp/out")  # and back
```
"""

import contextlib
import dataclasses
import json
import os

from absl import logging
import h5py
import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import sentences as sentences_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.layers.sampled_softmax import SampledSoftmax
from elmo_tf.models.backbone import ElmoBackbone

# === File names written by write_hdf5 ===
OPTIONS_FILENAME = "options.json"
WEIGHTS_FILENAME = "weights.hdf5"
SOFTMAX_FILENAME = "softmax.hdf5"
VOCAB_FILENAME = "vocab.txt"
OUTPUT_FILENAMES = (OPTIONS_FILENAME, WEIGHTS_FILENAME, SOFTMAX_FILENAME,
                    VOCAB_FILENAME)

# === The format's constants ===
# options.json n_characters: 261 ids in training, 262 (+1, 0 = padding) for
# prediction; bilm-tf's BidirectionalLanguageModel needs 262.
TRAINING_N_CHARACTERS = vocab_lib.N_CHARACTERS - 1  # 261 rows of char_embed.
PREDICTION_N_CHARACTERS = vocab_lib.N_CHARACTERS  # 262
SOFTMAX_WEIGHTS = "softmax/W"
SOFTMAX_BIAS = "softmax/b"
TOKEN_EMBEDDING = "embedding"
# bilm-tf's vocabulary files may hold this line, which takes no id.
_MAXTERMID = "!!!MAXTERMID"
# Softmax bias of a special token the imported vocabulary lacked: never
# predicted, so the distribution over the file's words is unchanged.
_ABSENT_CLASS_BIAS = -1e9
# TensorFlow's LSTMCell adds this to the forget gate at run time.
_TF_FORGET_BIAS = 1.0


class FormatError(ValueError):
  """An options.json / hdf5 / vocabulary file that does not fit the format
  or the model (the message names the file, the dataset and the expected
  and found shapes)."""


# === options.json <-> ModelConfig ===


def _require(section: dict, key: str, where: str, source: str):
  if key not in section:
    raise FormatError(f"{source}: missing {where}{key!r}.")
  return section[key]


def _clip(value) -> float:
  return 0.0 if value is None else float(value)


def options_to_config(options: dict,
                      source: str = "options") -> config_lib.ModelConfig:
  """The `ModelConfig` of a parsed bilm-tf options.json (see `read_options`)."""
  if not isinstance(options, dict):
    raise FormatError(f"{source}: expected a JSON object.")
  if options.get("bidirectional") is False:
    raise FormatError(f"{source}: bidirectional=false (a forward-only LM); "
                      "elmo_tf models are bidirectional.")
  lstm = _require(options, "lstm", "", source)
  cell_dim = int(_require(lstm, "dim", "lstm.", source))
  projection_dim = int(_require(lstm, "projection_dim", "lstm.", source))
  if projection_dim > cell_dim:
    raise FormatError(
        f"{source}: lstm.projection_dim={projection_dim} > lstm.dim="
        f"{cell_dim}; bilm-tf then builds no projection and its outputs are "
        f"{cell_dim} wide, which elmo_tf does not support.")
  lstm_config = config_lib.LSTMConfig(
      n_layers=int(lstm.get("n_layers", 1)),  # bilm-tf's default.
      cell_dim=cell_dim,
      projection_dim=projection_dim,
      cell_clip=_clip(lstm.get("cell_clip")),
      projection_clip=_clip(lstm.get("proj_clip")),
      forget_bias=_TF_FORGET_BIAS,
      use_residual=bool(lstm.get("use_skip_connections", False)))
  changes = {"lstm": lstm_config,
             "vocab_size": int(options.get("n_tokens_vocab") or 0)}
  if "dropout" in options:
    changes["dropout"] = float(options["dropout"])
  if options.get("n_negative_samples_batch"):
    changes["n_negative_samples"] = int(options["n_negative_samples_batch"])

  cnn = options.get("char_cnn")
  if cnn is None:
    # A token-input model: a word embedding of width P instead of the CNN.
    changes.update(token_encoder="tokens", token_embedding_dim=projection_dim)
    return config_lib.ModelConfig(**changes)
  n_characters = int(_require(cnn, "n_characters", "char_cnn.", source))
  if n_characters not in (TRAINING_N_CHARACTERS, PREDICTION_N_CHARACTERS):
    raise FormatError(
        f"{source}: char_cnn.n_characters={n_characters}; the format has "
        f"{TRAINING_N_CHARACTERS} (training) or {PREDICTION_N_CHARACTERS} "
        "(prediction) character ids.")
  max_chars = int(_require(cnn, "max_characters_per_token", "char_cnn.",
                           source))
  if max_chars != vocab_lib.MAX_CHARACTERS_PER_TOKEN:
    raise FormatError(
        f"{source}: char_cnn.max_characters_per_token={max_chars}; elmo_tf's "
        f"character ids have {vocab_lib.MAX_CHARACTERS_PER_TOKEN} slots.")
  activation = _require(cnn, "activation", "char_cnn.", source)
  if activation not in ("relu", "tanh"):
    raise FormatError(f"{source}: char_cnn.activation={activation!r}; bilm-tf "
                      "knows 'relu' and 'tanh'.")
  embedding = _require(cnn, "embedding", "char_cnn.", source)
  filters = tuple((int(width), int(number)) for width, number in
                  _require(cnn, "filters", "char_cnn.", source))
  changes["char_cnn"] = config_lib.CharCNNConfig(
      n_characters=PREDICTION_N_CHARACTERS,  # elmo_tf's +1 form, always.
      max_characters_per_token=max_chars,
      embedding_dim=int(_require(embedding, "dim", "char_cnn.embedding.",
                                 source)),
      filters=filters,
      n_highway=int(cnn.get("n_highway") or 0),
      activation=activation)
  changes["token_encoder"] = "chars"
  return config_lib.ModelConfig(**changes)


def read_options(path: str) -> config_lib.ModelConfig:
  """Reads a bilm-tf options.json into a `ModelConfig`.

  `char_cnn` (`embedding.dim`, `filters`, `n_highway`,
  `max_characters_per_token`, `n_characters` 261 or 262, `activation`)
  maps to `char_cnn` (always 262 ids: elmo_tf's +1 form); without it the
  model takes tokens (`token_encoder="tokens"`). `lstm` (`dim`,
  `projection_dim`, `n_layers`, `cell_clip`, `proj_clip`,
  `use_skip_connections`) maps to `lstm` (`use_residual` =
  `use_skip_connections`); `n_tokens_vocab` to `vocab_size`, `dropout` and
  `n_negative_samples_batch` to their fields. Training-only keys are
  ignored.

  Raises:
    FormatError: naming the file and the key.
  """
  with open(path, encoding="utf-8") as f:
    try:
      options = json.load(f)
    except json.JSONDecodeError as e:
      raise FormatError(f"{path}: not JSON ({e}).") from None
  return options_to_config(options, source=path)


def config_to_options(model_config: config_lib.ModelConfig,
                      vocab_size: int = 0) -> dict:
  """bilm-tf's options.json of a `ModelConfig` (prediction form: 262 ids).

  Raises:
    FormatError: for a model the format cannot describe (`token_encoder`
      "concat" or "sum"; a character encoder that is not 50 slots x 262).
  """
  lstm = model_config.lstm
  options = {
      "bidirectional": True,
      "dropout": model_config.dropout,
      # bilm-tf's name of the training option (unused by inference).
      "n_negative_samples_batch": model_config.n_negative_samples,
      "lstm": {
          "dim": lstm.cell_dim,
          "projection_dim": lstm.projection_dim,
          "n_layers": lstm.n_layers,
          "cell_clip": lstm.cell_clip or None,
          "proj_clip": lstm.projection_clip or None,
          "use_skip_connections": lstm.use_residual,
      },
  }
  if vocab_size:
    options["n_tokens_vocab"] = int(vocab_size)
  encoder = model_config.token_encoder
  if encoder == "tokens":
    return options
  if encoder != "chars":
    raise FormatError(
        f"token_encoder={encoder!r} has no counterpart in the published ELMo "
        "format, which has either a character CNN ('chars') or a word "
        "embedding ('tokens').")
  cnn = model_config.char_cnn
  if (cnn.n_characters != PREDICTION_N_CHARACTERS or
      cnn.max_characters_per_token != vocab_lib.MAX_CHARACTERS_PER_TOKEN):
    raise FormatError(
        f"char_cnn has n_characters={cnn.n_characters}, "
        f"max_characters_per_token={cnn.max_characters_per_token}; the "
        f"format has {PREDICTION_N_CHARACTERS} and "
        f"{vocab_lib.MAX_CHARACTERS_PER_TOKEN}.")
  options["char_cnn"] = {
      "embedding": {"dim": cnn.embedding_dim},
      "filters": [[width, number] for width, number in cnn.filters],
      "n_highway": cnn.n_highway,
      "n_characters": PREDICTION_N_CHARACTERS,
      "max_characters_per_token": cnn.max_characters_per_token,
      "activation": cnn.activation,
  }
  return options


# === Datasets <-> backbone weights ===


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One dataset of the format and the backbone weight it maps to."""
  dataset: str
  key: str  # checkpoints.weights_by_path(backbone) key.
  shape: tuple[int, ...]  # In the file.
  # How the file's array becomes the weight: "same", "char_embed" (zero
  # row in front), "cnn_kernel" (drop the leading 1), "embedding" (rows by
  # vocabulary, zero row in front), "lstm_bias" (forget-bias difference).
  kind: str = "same"
  # bilm-tf builds this weight only if the condition holds; otherwise the
  # weight is an identity projection (and zero bias) in elmo_tf.
  needed: bool = True


def lstm_prefix(direction: int, layer: int) -> str:
  """`RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell`."""
  return f"RNN_{direction}/RNN/MultiRNNCell/Cell{layer}/LSTMCell"


def _entries(model_config: config_lib.ModelConfig,
             n_token_rows: int | None = None) -> list[_Entry]:
  """The format's datasets of a model, in file order of bilm-tf's dump.

  `n_token_rows` is the number of rows of `embedding` (token-input models).
  """
  p = model_config.lstm.projection_dim
  c = model_config.lstm.cell_dim
  entries = []
  if model_config.token_encoder == "chars":
    cnn = model_config.char_cnn
    e = cnn.embedding_dim
    f = cnn.n_filters
    entries.append(_Entry("char_embed",
                          "char_encoder/char_embedding/embeddings",
                          (cnn.n_characters - 1, e), "char_embed"))
    for i, (width, number) in enumerate(cnn.filters):
      entries.append(_Entry(f"CNN/W_cnn_{i}", f"char_encoder/cnn_{i}/kernel",
                            (1, width, e, number), "cnn_kernel"))
      entries.append(_Entry(f"CNN/b_cnn_{i}", f"char_encoder/cnn_{i}/bias",
                            (number,)))
    for k in range(cnn.n_highway):
      for gate in ("carry", "transform"):
        entries.append(_Entry(f"CNN_high_{k}/W_{gate}",
                              f"char_encoder/highway_{k}/{gate}_kernel",
                              (f, f)))
        entries.append(_Entry(f"CNN_high_{k}/b_{gate}",
                              f"char_encoder/highway_{k}/{gate}_bias", (f,)))
    entries.append(_Entry("CNN_proj/W_proj", "char_encoder/projection/kernel",
                          (f, p), needed=f != p))
    entries.append(_Entry("CNN_proj/b_proj", "char_encoder/projection/bias",
                          (p,), needed=f != p))
  else:
    entries.append(_Entry(TOKEN_EMBEDDING, "token_embedding/embeddings",
                          (n_token_rows, p), "embedding"))
  for d, direction in enumerate(("forward", "backward")):
    for l in range(model_config.lstm.n_layers):
      prefix = lstm_prefix(d, l)
      key = f"{direction}_lstm_{l}"
      entries.append(_Entry(f"{prefix}/W_0", f"{key}/kernel", (2 * p, 4 * c)))
      entries.append(_Entry(f"{prefix}/B", f"{key}/bias", (4 * c,),
                            "lstm_bias"))
      entries.append(_Entry(f"{prefix}/W_P_0", f"{key}/projection", (c, p),
                            needed=p < c))
  return entries


def dataset_shapes(model_config: config_lib.ModelConfig,
                   n_token_rows: int | None = None,
                   only_needed: bool = False) -> dict[str, tuple[int, ...]]:
  """{dataset name: shape} of the weights file of a model (what
  `write_hdf5` writes; with `only_needed`, what bilm-tf reads)."""
  return {entry.dataset: entry.shape
          for entry in _entries(model_config, n_token_rows)
          if entry.needed or not only_needed}


def _forget_bias_offset(model_config) -> float:
  return float(model_config.lstm.forget_bias) - _TF_FORGET_BIAS


def _to_elmo(entry: _Entry, array: np.ndarray, model_config,
             rows: np.ndarray | None) -> np.ndarray:
  """The file's array -> the elmo_tf weight's value."""
  if entry.kind == "char_embed":
    return np.concatenate([np.zeros_like(array[:1]), array], axis=0)
  if entry.kind == "cnn_kernel":
    return array[0]
  if entry.kind == "embedding":
    return _rows_by_vocabulary(array, rows, absent_value=0.0)
  if entry.kind == "lstm_bias":
    bias = array.copy()
    c = model_config.lstm.cell_dim
    bias[2 * c:3 * c] -= _forget_bias_offset(model_config)
    return bias
  return array


def _to_file(entry: _Entry, value: np.ndarray, model_config) -> np.ndarray:
  """The elmo_tf weight's value -> the file's array (`_to_elmo` inverted;
  the embeddings' padding row 0 is dropped)."""
  if entry.kind in ("char_embed", "embedding"):
    return value[1:]
  if entry.kind == "cnn_kernel":
    return value[np.newaxis]
  if entry.kind == "lstm_bias":
    bias = value.copy()
    c = model_config.lstm.cell_dim
    bias[2 * c:3 * c] += _forget_bias_offset(model_config)
    return bias
  return value


def _identity_like(shape) -> np.ndarray:
  """The weight bilm-tf leaves out: identity projection or zero bias."""
  if len(shape) == 1:
    return np.zeros(shape, np.float32)
  return np.eye(shape[0], shape[1], dtype=np.float32)


def _rows_by_vocabulary(array: np.ndarray, rows: np.ndarray | None,
                        absent_value: float) -> np.ndarray:
  """A (V_file, ...) matrix in the file's word order -> (V + 1, ...) in
  elmo_tf's id order (row 0 padding, zero); `rows[i]` is the file row of
  elmo_tf id i + 1, -1 for a token the file lacks (`absent_value`)."""
  if rows is None:
    rows = np.arange(array.shape[0])
  out = np.full((len(rows) + 1,) + array.shape[1:], absent_value, array.dtype)
  out[0] = 0.0
  present = rows >= 0
  out[1:][present] = array[rows[present]]
  return out


def read_bilm_tf_vocab(path: str) -> tuple[vocab_lib.Vocabulary, np.ndarray]:
  """A bilm-tf vocabulary file -> (elmo_tf `Vocabulary`, rows).

  bilm-tf gives each line its 0-based index as id (`<S>`, `</S>`, `<UNK>`
  may be anywhere, or missing; a `!!!MAXTERMID` line takes no id). The
  returned vocabulary has the specials first, then the other words in file
  order; `rows[i]` is the file id (the row of `embedding` and of the
  softmax) of elmo_tf id i + 1, -1 for a special the file lacks (logged).

  Raises:
    FormatError: file:line of an empty line or a duplicate token.
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise FormatError(f"{path}: not UTF-8 ({e}).") from None
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  file_ids = {}
  words = []
  for number, line in enumerate(lines, start=1):
    token = line.strip()
    if token == _MAXTERMID:
      continue
    if not token:
      raise FormatError(f"{path}:{number}: empty line in vocabulary file.")
    if token in file_ids:
      raise FormatError(f"{path}:{number}: duplicate token {token!r}.")
    file_ids[token] = len(file_ids)
    if token not in vocab_lib.SPECIAL_TOKENS:
      words.append(token)
  missing = [s for s in vocab_lib.SPECIAL_TOKENS if s not in file_ids]
  if missing:
    logging.warning("%s lacks %s; added (zero embedding, never predicted).",
                    path, missing)
  tokens = list(vocab_lib.SPECIAL_TOKENS) + words
  rows = np.array([file_ids.get(token, -1) for token in tokens], np.int64)
  return vocab_lib.Vocabulary(tokens, source=path), rows


def _read_datasets(path: str) -> dict[str, tuple[int, ...]]:
  """{name: shape} of every dataset in an hdf5 file."""
  shapes = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: shapes.__setitem__(name, obj.shape)
                 if isinstance(obj, h5py.Dataset) else None)
  return shapes


def _check_shape(path, name, expected, found, what=""):
  if tuple(found) != tuple(expected):
    raise FormatError(
        f"{path}: dataset {name!r} has shape {tuple(found)}, expected "
        f"{tuple(expected)}{what}.")


def _convert_loaded(entry, array, path, weight, model_config, vocab_rows):
  if not entry.needed and not np.array_equal(array,
                                             _identity_like(array.shape)):
    logging.warning(
        "%s: %s is not an identity projection, but bilm-tf does not use it "
        "for this shape; ignored, as bilm-tf does.", path, entry.dataset)
    return _identity_like(tuple(weight.shape))
  return _to_elmo(entry, array, model_config, vocab_rows)


def load_hdf5_into_backbone(h5_path: str, backbone: ElmoBackbone,
                            vocab_rows: np.ndarray | None = None,
                            embedding_path: str | None = None) -> None:
  """Assigns the weights of a bilm-tf hdf5 file to a built `backbone`.

  Every dataset the model needs must be in the file with its exact shape
  (see the module docstring); datasets bilm-tf does not build for this
  shape (`CNN_proj` when F == P, `W_P_0` when P == C) become identity
  projections. Datasets the model does not use are logged and ignored.

  Args:
    h5_path: the weights file.
    backbone: a built `ElmoBackbone` of the matching config
      (`read_options`).
    vocab_rows: token-input models: `read_bilm_tf_vocab`'s rows (elmo_tf id
      -> row of `embedding`); None for a vocabulary in file order.
    embedding_path: token-input models: the file with `embedding` (bilm-tf
      keeps it in a separate `embedding_weight_file`); default `h5_path`.

  Raises:
    FormatError: naming the file, the dataset and the expected and found
      shapes, or the missing dataset.
  """
  model_config = backbone.model_config
  config_to_options(model_config)  # Raises for a model the format lacks.
  weights = checkpoints_lib.weights_by_path(backbone)
  files = {h5_path: _read_datasets(h5_path)}
  embedding_path = embedding_path or h5_path
  n_token_rows = None
  if model_config.token_encoder == "tokens":
    if embedding_path not in files:
      files[embedding_path] = _read_datasets(embedding_path)
    if TOKEN_EMBEDDING not in files[embedding_path]:
      raise FormatError(
          f"{embedding_path}: no dataset {TOKEN_EMBEDDING!r}; a token-input "
          "model needs its word embedding (bilm-tf's embedding_weight_file).")
    n_token_rows = files[embedding_path][TOKEN_EMBEDDING][0]
    n_expected = (model_config.vocab_size if vocab_rows is None
                  else int(np.sum(vocab_rows >= 0)))
    if n_token_rows != n_expected:
      raise FormatError(
          f"{embedding_path}: dataset {TOKEN_EMBEDDING!r} has {n_token_rows} "
          f"rows, the vocabulary {n_expected} words.")
  entries = _entries(model_config, n_token_rows)
  used = set()
  values = {}
  with contextlib.ExitStack() as stack:
    handles = {path: stack.enter_context(h5py.File(path, "r"))
               for path in files}
    for entry in entries:
      path = embedding_path if entry.kind == "embedding" else h5_path
      found = files[path].get(entry.dataset)
      weight = weights[entry.key]
      if found is None:
        if entry.needed:
          raise FormatError(
              f"{path}: missing dataset {entry.dataset!r} (expected shape "
              f"{entry.shape}, for {entry.key}).")
        values[entry.key] = _identity_like(tuple(weight.shape))
        continue
      _check_shape(path, entry.dataset, entry.shape, found,
                   f" (for elmo_tf's {entry.key})")
      used.add((path, entry.dataset))
      array = np.asarray(handles[path][entry.dataset][...], np.float32)
      values[entry.key] = _convert_loaded(entry, array, path, weight,
                                          model_config, vocab_rows)
  for key, weight in weights.items():
    if key not in values:
      raise FormatError(
          f"{h5_path}: no dataset maps to elmo_tf's weight {key} "
          f"(token_encoder={model_config.token_encoder!r} is not a format "
          "model).")
    _check_shape(h5_path, key, tuple(weight.shape), values[key].shape,
                 " (elmo_tf weight after conversion)")
  unused = sorted(name for name in files[h5_path]
                  if (h5_path, name) not in used)
  if unused:
    logging.warning("%s: datasets not used by this model: %s", h5_path, unused)
  with tf.init_scope():
    for key, value in values.items():
      weights[key].assign(value)


def backbone_datasets(backbone: ElmoBackbone) -> dict[str, np.ndarray]:
  """{dataset name: float32 array} of a backbone in the format (every
  dataset of `dataset_shapes`)."""
  model_config = backbone.model_config
  config_to_options(model_config)  # Raises for a model the format lacks.
  weights = checkpoints_lib.weights_by_path(backbone)
  n_token_rows = None
  if model_config.token_encoder == "tokens":
    n_token_rows = int(weights["token_embedding/embeddings"].shape[0]) - 1
  datasets = {}
  for entry in _entries(model_config, n_token_rows):
    value = np.asarray(keras.ops.convert_to_numpy(weights[entry.key]),
                       np.float32)
    if not entry.needed and not np.allclose(value, _identity_like(value.shape)):
      raise FormatError(
          f"{entry.key} is not an identity projection, but bilm-tf builds no "
          f"{entry.dataset} for this shape (it would be ignored).")
    datasets[entry.dataset] = _to_file(entry, value, model_config)
    _check_shape("(written)", entry.dataset, entry.shape,
                 datasets[entry.dataset].shape)
  return datasets


def _write_h5(path: str, datasets: dict[str, np.ndarray]) -> None:
  partial = path + ".partial"
  with h5py.File(partial, "w") as f:
    for name, array in datasets.items():
      f.create_dataset(name, data=np.asarray(array, np.float32))
  os.replace(partial, path)


def _check_hdf5_out_dir(out_dir: str) -> None:
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FormatError(f"{out_dir} is a file; choose an output directory.")
  if os.path.isdir(out_dir):
    others = sorted(set(os.listdir(out_dir)) - set(OUTPUT_FILENAMES))
    if others:
      raise FormatError(
          f"{out_dir} holds other files ({others[:5]}); not writing into it. "
          "Choose a new or empty output directory.")


def write_hdf5(backbone: ElmoBackbone, model_config: config_lib.ModelConfig,
               out_dir: str, softmax: SampledSoftmax | None = None,
               vocab: vocab_lib.Vocabulary | None = None) -> dict[str, str]:
  """Writes a backbone in the published format, readable by bilm-tf's
  `BidirectionalLanguageModel` and AllenNLP's `Elmo`.

  Files in `out_dir` (created; a directory holding other files is an
  error, these four are replaced):
    options.json   the hyper-parameters (`config_to_options`, 262 ids)
    weights.hdf5   the datasets of `dataset_shapes(model_config)`
    vocab.txt      with `vocab`: one token per line, elmo_tf's order; the
                   rows of `embedding` and of the softmax follow it (bilm-tf
                   reads its specials anywhere; its `Batcher` needs a file)
    softmax.hdf5   with `softmax`: `softmax/W` (V, P) and `softmax/b` (V,)

  A token-input model keeps `embedding` in weights.hdf5; pass that file as
  bilm-tf's `embedding_weight_file` too. (AllenNLP's `Elmo` reads
  character models only, and always applies the residual connection from
  the second layer on: use it with `use_skip_connections` models.)

  Returns:
    {file name: path} of the files written.

  Raises:
    FormatError: for a model the format cannot describe, or an `out_dir`
      holding other files.
  """
  # The custom ops are how a backbone runs, not what it is.
  without_ops = export_lib.without_custom_ops
  if without_ops(model_config) != without_ops(backbone.model_config):
    raise FormatError("model_config differs from the backbone's config.")
  if softmax is not None and vocab is None:
    raise FormatError("Writing the softmax needs the vocabulary (its rows).")
  _check_hdf5_out_dir(out_dir)
  vocab_size = vocab.size if vocab is not None else 0
  if model_config.token_encoder == "tokens" and vocab is None:
    raise FormatError("A token-input model needs its vocabulary written.")
  options = config_to_options(model_config, vocab_size)
  datasets = backbone_datasets(backbone)
  if vocab is not None and model_config.vocab_size not in (0, vocab.size):
    raise FormatError(f"The vocabulary has {vocab.size} tokens, the model "
                      f"{model_config.vocab_size}.")
  os.makedirs(out_dir, exist_ok=True)
  written = {}
  path = os.path.join(out_dir, WEIGHTS_FILENAME)
  _write_h5(path, datasets)
  written[WEIGHTS_FILENAME] = path
  if softmax is not None:
    kernel = np.asarray(keras.ops.convert_to_numpy(softmax.kernel), np.float32)
    bias = np.asarray(keras.ops.convert_to_numpy(softmax.bias), np.float32)
    if kernel.shape[0] != vocab.size + 1:
      raise FormatError(f"The softmax has {kernel.shape[0] - 1} classes, the "
                        f"vocabulary {vocab.size} tokens.")
    path = os.path.join(out_dir, SOFTMAX_FILENAME)
    # Row 0 (padding, never a class) is dropped, as from the embeddings.
    _write_h5(path, {SOFTMAX_WEIGHTS: kernel[1:], SOFTMAX_BIAS: bias[1:]})
    written[SOFTMAX_FILENAME] = path
  if vocab is not None:
    path = os.path.join(out_dir, VOCAB_FILENAME)
    vocab.save(path + ".partial")
    os.replace(path + ".partial", path)
    written[VOCAB_FILENAME] = path
  path = os.path.join(out_dir, OPTIONS_FILENAME)
  with open(path + ".partial", "w", encoding="utf-8") as f:
    f.write(json.dumps(options, indent=2, sort_keys=True) + "\n")
  os.replace(path + ".partial", path)
  written[OPTIONS_FILENAME] = path
  logging.info("Wrote %s to %s.", sorted(written), out_dir)
  return written


def load_softmax_hdf5(path: str, softmax: SampledSoftmax,
                      vocab_rows: np.ndarray | None = None) -> None:
  """Assigns `softmax/W`, `softmax/b` of an hdf5 file to a built softmax
  (rows by `read_bilm_tf_vocab`'s `vocab_rows`; a special the file's
  vocabulary lacked is never predicted)."""
  shapes = _read_datasets(path)
  n_rows = (softmax.vocab_size if vocab_rows is None
            else int(np.sum(vocab_rows >= 0)))
  dim = int(softmax.kernel.shape[1])
  for name, shape in ((SOFTMAX_WEIGHTS, (n_rows, dim)),
                      (SOFTMAX_BIAS, (n_rows,))):
    if name not in shapes:
      raise FormatError(f"{path}: missing dataset {name!r} (expected shape "
                        f"{shape}).")
    _check_shape(path, name, shape, shapes[name])
  with h5py.File(path, "r") as f:
    kernel = np.asarray(f[SOFTMAX_WEIGHTS][...], np.float32)
    bias = np.asarray(f[SOFTMAX_BIAS][...], np.float32)
  with tf.init_scope():
    softmax.kernel.assign(_rows_by_vocabulary(kernel, vocab_rows, 0.0))
    softmax.bias.assign(
        _rows_by_vocabulary(bias, vocab_rows, _ABSENT_CLASS_BIAS))


# === The programs' work ===


def build_backbone(model_config: config_lib.ModelConfig) -> ElmoBackbone:
  """A built float32 `ElmoBackbone` (weights initialized, to be loaded)."""
  backbone = export_lib.inference_backbone(model_config)
  backbone.build()
  return backbone


# A built float32 softmax of a config (weights to be loaded).
build_softmax = export_lib.build_softmax


def import_hdf5(options_path: str, weights_path: str, out_dir: str,
                vocab_path: str | None = None,
                tokenization: str = "whitespace",
                export_options: config_lib.ExportConfig = (
                    config_lib.ExportConfig()),
                softmax_path: str | None = None,
                embedding_path: str | None = None) -> str:
  """Writes the SavedModel of an options.json + hdf5 pair (bin/import_hdf5).

  Builds the model the options describe (any size), loads the weights and
  writes the same SavedModel as bin/export (`export.save_module`: the
  `default`, `tokens` and, with a softmax, `log_probs` signatures, the
  reusable `__call__`, the assets).

  Args:
    options_path, weights_path: the pair.
    out_dir: the SavedModel directory (new, empty or a SavedModel).
    vocab_path: a bilm-tf vocabulary file (`read_bilm_tf_vocab`); needed by
      token-input models and with `softmax_path`. Without it the model is a
      pure character model with a vocabulary of the three specials.
    tokenization: the `default` signature's tokenization
      (`config.EXPORTABLE_TOKENIZATIONS`).
    export_options: the other `ExportConfig` fields (its `tokenization` is
      replaced by `tokenization`).
    softmax_path: an hdf5 with `softmax/W`, `softmax/b` (as `write_hdf5`
      writes): the SavedModel can then score (`log_probs`).
    embedding_path: token-input models: the hdf5 with `embedding` (default
      `weights_path`).

  Returns:
    `out_dir`.
  """
  if tokenization not in config_lib.EXPORTABLE_TOKENIZATIONS:
    raise FormatError(f"Unknown tokenization {tokenization!r}; choose one of "
                      f"{list(config_lib.EXPORTABLE_TOKENIZATIONS)}.")
  out_dir = out_dir.rstrip("/") or out_dir
  export_lib.check_out_dir(out_dir)
  model_config = read_options(options_path)
  rows = None
  if vocab_path:
    vocab, rows = read_bilm_tf_vocab(vocab_path)
    n_file_words = int(np.sum(rows >= 0))
    if model_config.vocab_size and model_config.vocab_size != n_file_words:
      logging.warning("%s: n_tokens_vocab=%d, but %s has %d tokens.",
                      options_path, model_config.vocab_size, vocab_path,
                      n_file_words)
    model_config = model_config.replace(vocab_size=vocab.size)
  else:
    if model_config.token_encoder == "tokens":
      raise FormatError(f"{options_path} describes a token-input model; give "
                        "its vocabulary (--vocab).")
    if softmax_path:
      raise FormatError("The softmax needs the vocabulary (--vocab).")
    vocab = vocab_lib.Vocabulary(vocab_lib.SPECIAL_TOKENS,
                                 source="(the specials only)")
    model_config = model_config.replace(vocab_size=0)
  if model_config.vocab_size and (
      model_config.n_negative_samples >= model_config.vocab_size):
    # Only a training setting; keeps the softmax valid for small vocabularies.
    model_config = model_config.replace(training_softmax="full")
  backbone = build_backbone(model_config)
  load_hdf5_into_backbone(weights_path, backbone, vocab_rows=rows,
                          embedding_path=embedding_path)
  softmax = None
  if softmax_path:
    softmax = build_softmax(model_config)
    load_softmax_hdf5(softmax_path, softmax, rows)
  experiment = config_lib.ExperimentConfig(
      model=model_config,
      data=config_lib.DataConfig(tokenization=tokenization))
  return export_lib.save_module(
      experiment, vocab, backbone, out_dir,
      export_options.replace(tokenization=tokenization), softmax=softmax,
      source=os.path.basename(weights_path))


def load_model(path: str, with_softmax: bool = False):
  """(ModelConfig, Vocabulary, float32 backbone, softmax or None) of a
  SavedModel written by elmo_tf or of a training run (latest checkpoint).

  Raises:
    FormatError: `with_softmax` for a SavedModel exported without one.
  """
  if export_lib.is_saved_model(path):
    config, info = export_lib.read_export(path)
    vocab = vocab_lib.Vocabulary.load(
        os.path.join(path, "assets", export_lib.VOCAB_ASSET))
    backbone = build_backbone(config.model)
    softmax = None
    if with_softmax:
      if not info.get("scoring"):
        raise FormatError(f"{path} was exported without its softmax; export "
                          "the training run (--model_dir) instead.")
      softmax = build_softmax(config.model)
    export_lib.restore_weights(path, backbone, softmax=softmax)
    return config.model, vocab, backbone, softmax
  policy = keras.mixed_precision.global_policy()
  try:
    config, vocab, model, _ = checkpoints_lib.load_trained_model(path)
  finally:
    # load_trained_model sets the run's policy (maybe mixed_bfloat16).
    keras.mixed_precision.set_global_policy(policy)
  backbone = build_backbone(config.model)
  checkpoints_lib.copy_weights(
      checkpoints_lib.weights_by_path(model.backbone),
      checkpoints_lib.weights_by_path(backbone), what=f"the weights of {path}")
  softmax = None
  if with_softmax:
    softmax = build_softmax(config.model)
    checkpoints_lib.copy_weights(
        checkpoints_lib.weights_by_path(model.softmax),
        checkpoints_lib.weights_by_path(softmax),
        what=f"the softmax of {path}")
  return config.model, vocab, backbone, softmax


def export_hdf5(path: str, out_dir: str,
                with_softmax: bool = False) -> dict[str, str]:
  """Writes a SavedModel's or a training run's biLM in the published format
  (bin/export_hdf5): options.json, weights.hdf5, vocab.txt and, with
  `with_softmax`, softmax.hdf5 (see `write_hdf5`)."""
  _check_hdf5_out_dir(out_dir)
  model_config, vocab, backbone, softmax = load_model(path, with_softmax)
  return write_hdf5(backbone, model_config, out_dir, softmax=softmax,
                    vocab=vocab)


# === bilm-tf's stateful inference (parity checks only) ===


def initial_state(backbone: ElmoBackbone, batch_size: int):
  """Zero states (forward, backward), each a list over layers of (h, c)
  float32 numpy arrays of `batch_size` rows (bilm-tf's max_batch_size)."""
  forward, backward = backbone.initial_state(batch_size)
  to_numpy = lambda states: [tuple(np.asarray(s) for s in pair)
                             for pair in states]
  return to_numpy(forward), to_numpy(backward)


def run_stateful(backbone: ElmoBackbone, sentences, state=None,
                 token_table=None):
  """One batch as bilm-tf's stateful `BidirectionalLanguageModel` runs it.

  bilm-tf keeps every LSTM's state in variables of `max_batch_size` rows:
  batch row r starts from the final state row r had after the previous
  batch (forward: after its `</S>`; backward: after reading back to its
  `<S>`), and rows past the batch keep theirs. elmo_tf's inference is
  stateless (zero state); this function reproduces bilm-tf through the
  backbone's explicit `forward_state` / `backward_state` inputs, to check
  parity. Sentences are packed by `sentences.pack_sentences` as everywhere.

  Args:
    backbone: an `ElmoBackbone`.
    sentences: B token lists (without `<S>` / `</S>`).
    state: None for zeros, or the state returned by the previous call (or
      `initial_state(backbone, max_batch_size)`), with at least B rows.
    token_table: the vocabulary's table, for token-input models.

  Returns:
    (layers, lengths, state): layers (B, L + 1, T, 2P) float32 numpy with
    `<S>` / `</S>` removed and zeros past each sentence's length (bilm-tf's
    `lm_embeddings`), lengths (B,), and the new state (same rows as the
    given one).
  """
  batch_size = len(sentences)
  if state is None:
    state = initial_state(backbone, batch_size)
  forward, backward = state
  n_rows = forward[0][0].shape[0]
  if n_rows < batch_size:
    raise ValueError(f"The state has {n_rows} rows, the batch {batch_size} "
                     "sentences (bilm-tf's max_batch_size).")
  tokens = tf.ragged.constant([list(s) for s in sentences], dtype=tf.string,
                              ragged_rank=1, inner_shape=())
  if batch_size and tokens.shape[0] != batch_size:
    raise ValueError("sentences must be lists of tokens.")
  uses_ids = backbone.model_config.token_encoder != "chars"
  inputs = sentences_lib.pack_sentences(
      tokens, lookup=token_table.lookup if uses_ids else None)
  take = lambda states: [tuple(tf.constant(s[:batch_size]) for s in pair)
                         for pair in states]
  inputs["forward_state"] = take(forward)
  inputs["backward_state"] = take(backward)
  out = backbone(inputs, training=False)
  lengths = np.array([len(s) for s in sentences], np.int64)
  max_len = int(lengths.max()) if batch_size else 0
  layers = out["layer_activations"].numpy()[:, :, 1:max_len + 1]
  mask = np.arange(max_len)[np.newaxis, :] < lengths[:, np.newaxis]  # (B, T)
  layers = layers * mask[:, np.newaxis, :, np.newaxis]

  def update(old, new):
    updated = []
    for old_pair, new_pair in zip(old, new):
      pair = []
      for old_s, new_s in zip(old_pair, new_pair):
        s = old_s.copy()
        s[:batch_size] = np.asarray(new_s)
        pair.append(s)
      updated.append(tuple(pair))
    return updated

  new_state = (update(forward, out["forward_state"]),
               update(backward, out["backward_state"]))
  return layers.astype(np.float32), lengths, new_state
