r"""Downstream runner: features, the small classifier, training and the table.

Every row (feature source) feeds the same head. By default (`hidden=256`):
dropout, a dense ReLU layer applied to every token, then for sentence
tasks the masked mean over the sentence's tokens, then dropout and a dense
layer to the classes; tagging tasks classify every token. With `hidden=0`
the head is a linear probe (masked mean, dropout, dense).

  * `scratch`: an embedding over the task's own training vocabulary (tokens
    seen at least `scratch_min_count` times; the others share one OOV
    vector), `scratch_dim` wide, trained from random initialization with
    the head: the non-contextual baseline that knows nothing but the task.
  * `layer0`: the biLM's context-free token vectors (`word_emb`, P wide:
    character CNN + highway + projection; static, word2vec-like).
  * `layer{j}`: biLM layer j alone (`lstm_outputs{j}`, [forward; backward],
    2P wide).
  * `mix_cached`: a control: ELMo's learned weighted sum (an `elmo_tf`
    `ScalarMix` that starts from the SavedModel's s_j and gamma, with its
    L2 penalty) over the cached layers. The biLM is frozen and runs without
    dropout, so it is the same network as the two rows below, trained on
    the same batches; only the implementation differs.
  * `mix_hub`: the learned weighted sum through
    `hub.KerasLayer(path, trainable=True, output_key="elmo")` in a tf_keras
    model: the biLM runs on every batch.
  * `mix_keras3`: the same through `elmo_tf.ElmoEmbedding(path,
    output="elmo")` in a Keras 3 model.

The fixed-layer rows and `mix_cached` train on the biLM's layers computed
once per sentence set with the SavedModel's `tokens` signature (the biLM is
frozen, so this is exact; for a linear head on a sentence task only the
per-sentence means are kept, which is also exact: the mean commutes with
the mix and with the head). Every row sees the same tokens (the `tokens`
input, padded with ""), the same training examples in the same batches in
the same order for a given seed, and the same optimizer (Adam), learning
rate and number of epochs; the epoch with the best dev accuracy is kept
(ties: the earlier one) and scored on test.
"""

import dataclasses
import json
import os
import statistics
import time
from typing import Callable, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from bench.downstream import tasks as tasks_lib

ROW_TITLES = {
    "scratch": "scratch embedding (task vocabulary)",
    "layer0": "layer 0 (char-CNN token vectors, static)",
    "layer1": "biLM layer 1 alone",
    "layer2": "biLM layer 2 alone",
    "mix_cached": "weighted sum, cached layers (control)",
    "mix_hub": "weighted sum via hub.KerasLayer (tf_keras)",
    "mix_keras3": "weighted sum via elmo_tf.ElmoEmbedding (Keras 3)",
}
ROWS = tuple(ROW_TITLES)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How every row's classifier is trained (the same for all rows).

  Attributes:
    epochs: passes over the training set; dev accuracy after each picks
      the epoch whose weights are tested.
    batch_size: training batch size (batches are bucketed by length).
    learning_rate: Adam's learning rate, for the head and the mix.
    dropout: dropout rate on the features and on the hidden layer.
    hidden: width of the head's per-token ReLU layer (0: none, a linear
      probe).
    normalize: batch normalization of the features first (off: it did not
      help on dev).
    scratch_dim: width of the scratch embedding.
    scratch_min_count: training-set count for a word to get its own
      scratch vector.
    eval_batch_size: batch size for dev/test and for computing features.
    bucket_batches: training batches are formed from shuffled chunks of
      `bucket_batches * batch_size` examples sorted by length.
  """
  epochs: int = 6
  batch_size: int = 32
  learning_rate: float = 3e-3
  dropout: float = 0.2
  scratch_dim: int = 256
  scratch_min_count: int = 2
  hidden: int = 256
  normalize: bool = False
  eval_batch_size: int = 64
  bucket_batches: int = 20


# === Batches ===


def training_batches(lengths: Sequence[int], batch_size: int,
                     bucket_batches: int, rng: np.random.Generator
                     ) -> list[np.ndarray]:
  """One epoch of index batches: shuffled, bucketed by length in chunks,
  batch order shuffled."""
  order = rng.permutation(len(lengths))
  chunk = batch_size * bucket_batches
  batches = []
  for start in range(0, len(order), chunk):
    part = order[start:start + chunk]
    part = part[np.argsort([lengths[i] for i in part], kind="stable")]
    batches.extend(part[i:i + batch_size]
                   for i in range(0, len(part), batch_size))
  return [batches[i] for i in rng.permutation(len(batches))]


def evaluation_batches(lengths: Sequence[int], batch_size: int
                       ) -> list[np.ndarray]:
  """Index batches sorted by length (deterministic)."""
  order = np.argsort(lengths, kind="stable")
  return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _pad(rows: Sequence[Sequence], width: int, value, dtype) -> np.ndarray:
  out = np.full((len(rows), width), value, dtype=dtype)
  for i, row in enumerate(rows):
    out[i, :len(row)] = row
  return out


class SplitData:
  """One split of a task, turned into model inputs batch by batch.

  `layers` (optional) holds the cached biLM layers, layer 0 being
  `word_emb` repeated twice (as the scalar mix sees it): a list of N arrays
  (L+1, T_i, 2P), or for a linear head on a sentence task one array
  (N, L+1, 2P) of per-sentence means.
  """

  def __init__(self, task: tasks_lib.Task, examples, vocab=None,
               layers=None, projection_dim: Optional[int] = None):
    self.kind = task.kind
    self.examples = examples
    self.lengths = [len(e.tokens) for e in examples]
    self.vocab = vocab
    self.layers = layers
    self.pooled = isinstance(layers, np.ndarray)
    self.projection_dim = projection_dim

  def labels(self, index: np.ndarray) -> np.ndarray:
    """(B,) class ids for sentences; for tagging, the tags of every real
    token of the batch, sentence after sentence (N,)."""
    examples = [self.examples[i] for i in index]
    if self.kind == "sentence":
      return np.array([e.label for e in examples], np.int32)
    return np.array([t for e in examples for t in e.label], np.int32)

  def word_starts(self, index: np.ndarray) -> np.ndarray:
    """(N,) True at the first token of each word (tagging)."""
    return np.array([s for i in index for s in self.examples[i].word_starts],
                    bool)

  def _layer(self, stack: np.ndarray, source: str) -> np.ndarray:
    """Layer j of a (B, L+1, [T,] 2P) stack; layer 0 as `word_emb` (P)."""
    j = int(source[len("layer"):])
    features = stack[:, j]
    if j == 0:
      features = features[..., :self.projection_dim]
    return np.ascontiguousarray(features)

  def inputs(self, index: np.ndarray, source: str) -> dict:
    """Model inputs of the examples `index` for a row's `source`:
    "tokens", "ids", "layers" (the cached stack) or "layer{j}"."""
    examples = [self.examples[i] for i in index]
    lengths = np.array([len(e.tokens) for e in examples], np.int32)
    width = int(lengths.max())
    inputs = {"sequence_len": tf.constant(lengths)}
    if source == "tokens":
      inputs["tokens"] = tf.constant(
          _pad([e.tokens for e in examples], width, "", object))
    elif source == "ids":
      inputs["ids"] = tf.constant(_pad(
          [[self.vocab.get(t, 1) for t in e.tokens] for e in examples],
          width, 0, np.int32))
    elif self.pooled:
      stack = self.layers[index]  # (B, L+1, 2P)
      if source == "layers":
        inputs["pooled_layers"] = tf.constant(stack)
      else:
        inputs["features"] = tf.constant(self._layer(stack, source))  # (B, D)
    else:
      stack = np.zeros((len(index),) + self.layers[index[0]].shape[:1]
                       + (width, self.layers[index[0]].shape[-1]),
                       np.float32)  # (B, L+1, T, 2P)
      for row, i in enumerate(index):
        stack[row, :, :lengths[row]] = self.layers[i]
      if source == "layers":
        inputs["layers"] = tf.constant(stack)
      else:
        inputs["features"] = tf.constant(
            self._layer(stack, source))  # (B, T, D)
    return inputs


# === Cached biLM layers ===


def compute_layers(signature, examples, n_layers: int, batch_size: int,
                   pooled: bool):
  """The biLM's layers for `examples` from a SavedModel `tokens` signature.

  Returns (N, L+1, 2P) per-sentence means if `pooled`, else a list of N
  arrays (L+1, T_i, 2P); layer 0 is `word_emb` repeated twice.
  """
  lengths = [len(e.tokens) for e in examples]
  out = [None] * len(examples)
  for index in evaluation_batches(lengths, batch_size):
    batch_lengths = np.array([lengths[i] for i in index], np.int32)
    tokens = _pad([examples[i].tokens for i in index],
                  int(batch_lengths.max()), "", object)
    result = signature(tokens=tf.constant(tokens),
                       sequence_len=tf.constant(batch_lengths))
    word_emb = result["word_emb"].numpy()  # (B, T, P)
    stack = np.stack(
        [np.concatenate([word_emb, word_emb], axis=-1)]
        + [result[f"lstm_outputs{i}"].numpy()
           for i in range(1, n_layers + 1)], axis=1)  # (B, L+1, T, 2P)
    for row, i in enumerate(index):
      n = batch_lengths[row]
      if pooled:
        out[i] = stack[row, :, :n].mean(axis=1)  # (L+1, 2P)
      else:
        out[i] = np.ascontiguousarray(stack[row, :, :n])  # (L+1, T, 2P)
  return np.stack(out) if pooled else out


def exported_mix(path: str) -> tuple[np.ndarray, float]:
  """The SavedModel's scalar-mix weights s_j and gamma."""
  reader = tf.train.load_checkpoint(os.path.join(path, "variables",
                                                 "variables"))
  values = {}
  for key in reader.get_variable_to_shape_map():
    if key.startswith("scalar_mix_weights/"):
      values[key.split("/")[1]] = reader.get_tensor(key)
  return np.asarray(values["scalar_weights"]), float(values["gamma"])


# === Classifiers ===


def _forward(model, inputs, training):
  """Logits of `model` (a Keras 3 or tf_keras classifier below): (B, C)
  for sentences, (N, C) for the N real tokens of a tagging batch."""
  lengths = inputs["sequence_len"]  # (B,)
  source = model.source
  if source == "tokens":
    features = model.encoder({"tokens": inputs["tokens"],
                              "sequence_len": lengths},
                             training=training)  # (B, T, 2P)
  elif source == "ids":
    features = model.encoder(inputs["ids"])  # (B, T, D)
  elif source == "layers" and "pooled_layers" in inputs:
    pooled = inputs["pooled_layers"][:, :, tf.newaxis]  # (B, L+1, 1, 2P)
    features = model.encoder(pooled)[:, 0]  # (B, 2P): the mean of the mix
  elif source == "layers":
    layers = inputs["layers"]  # (B, L+1, T, 2P)
    features = model.encoder(
        layers, mask=tf.sequence_mask(lengths, tf.shape(layers)[2]))
  else:
    features = inputs["features"]  # (B, D) pooled or (B, T, D)
  if features.shape.rank == 3:
    mask = tf.sequence_mask(lengths, tf.shape(features)[1])  # (B, T)
    features = tf.boolean_mask(features, mask)  # (N, D): the real tokens
    for layer in model.token_layers:
      features = layer(features, training=training)  # (N, H)
    if not model.per_token:
      features = tf.reduce_mean(tf.RaggedTensor.from_row_lengths(
          features, tf.cast(lengths, tf.int64)), axis=1)  # (B, H)
  for layer in model.output_layers:
    features = layer(features, training=training)
  return features  # (B, C) or (N, C)


def _head_layers(layers_module, n_classes: int, config: "TrainConfig"
                 ) -> tuple[list, list]:
  """(token layers, output layers) of the head, from `keras.layers` or
  `tf_keras.layers`.

  Linear (`config.hidden == 0`): no token layers; [batch norm], dropout,
  dense after the masked mean. With a hidden layer: [batch norm], dropout,
  dense + ReLU on every token, then the masked mean (sentences), then
  dropout, dense.
  """
  norm = [layers_module.BatchNormalization(momentum=0.9, name="batch_norm")
          ] if config.normalize else []
  logits = [layers_module.Dropout(config.dropout, name="dropout_out"),
            layers_module.Dense(n_classes, name="logits")]
  if not config.hidden:
    return [], norm + logits
  return norm + [
      layers_module.Dropout(config.dropout, name="dropout_in"),
      layers_module.Dense(config.hidden, activation="relu", name="hidden"),
  ], logits


def _classifier(keras_module, encoder, source, n_classes, per_token, config):
  """The classifier as a `keras_module.Model`: Keras 3 (`keras`) or tf_keras
  (`tf_keras`, for `hub.KerasLayer`); returns it and the module's Adam."""

  class Classifier(keras_module.Model):
    """Features -> (masked mean) -> head."""

    def __init__(self):
      super().__init__(name="classifier")
      self.encoder = encoder
      self.source = source
      self.per_token = per_token
      self.token_layers, self.output_layers = _head_layers(
          keras_module.layers, n_classes, config)

    def call(self, inputs, training=None):
      return _forward(self, inputs, bool(training))

  return Classifier(), keras_module.optimizers.Adam


def _keras3_classifier(*args):
  import keras  # pylint: disable=g-import-not-at-top
  return _classifier(keras, *args)


def _tf_keras_classifier(*args):
  import tf_keras  # pylint: disable=g-import-not-at-top
  return _classifier(tf_keras, *args)


def build_classifier(row: str, task: tasks_lib.Task, model_path: str,
                     config: TrainConfig, vocab_size: int = 0,
                     initial_mix=None):
  """(model, optimizer, input source) for a row (see the module doc)."""
  n_classes = len(task.labels)
  per_token = task.kind == "tagging"
  args = (n_classes, per_token, config)
  if row == "scratch":
    import keras  # pylint: disable=g-import-not-at-top
    encoder = keras.layers.Embedding(vocab_size, config.scratch_dim,
                                     name="embedding")
    model, optimizer = _keras3_classifier(encoder, "ids", *args)
    source = "ids"
  elif row.startswith("layer"):
    model, optimizer = _keras3_classifier(None, row, *args)
    source = row
  elif row == "mix_cached":
    from elmo_tf.layers.scalar_mix import ScalarMix  # pylint: disable=g-import-not-at-top
    _, info = _read_export(model_path)
    if info["do_layer_norm"] and not per_token and not config.hidden:
      raise ValueError("mix_cached mixes per-sentence means of the layers, "
                       "which equals the mean of the mix only without "
                       "layer normalization; this export has "
                       "do_layer_norm=True.")
    s, gamma = initial_mix
    encoder = ScalarMix(len(s), l2_coef=info["l2_coef"],
                        do_layer_norm=info["do_layer_norm"],
                        name="scalar_mix")
    encoder.build()
    encoder.scalar_weights.assign(s)
    encoder.gamma.assign(gamma)
    model, optimizer = _keras3_classifier(encoder, "layers", *args)
    source = "layers"
  elif row == "mix_hub":
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    encoder = hub.KerasLayer(model_path, trainable=True, output_key="elmo",
                             name="elmo")
    model, optimizer = _tf_keras_classifier(encoder, "tokens", *args)
    source = "tokens"
  elif row == "mix_keras3":
    import elmo_tf  # pylint: disable=g-import-not-at-top
    encoder = elmo_tf.ElmoEmbedding(model_path, output="elmo", name="elmo")
    # Built (and its weights restored) before the classifier is: Keras 3
    # locks the state of sub-layers once the outer model is built.
    encoder.build()
    model, optimizer = _keras3_classifier(encoder, "tokens", *args)
    source = "tokens"
  else:
    raise ValueError(f"Unknown row {row!r}; choose from {ROWS}.")
  return model, optimizer(learning_rate=config.learning_rate), source


def _read_export(path):
  from elmo_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  return export_lib.read_export(path)


def mix_values(model) -> Optional[dict]:
  """softmax(s) and gamma of the model's scalar mix, if it has one."""
  found = {}
  for variable in model.trainable_variables:
    name = getattr(variable, "path", None) or variable.name
    for key in ("scalar_weights", "gamma"):
      if "scalar_mix" in name and key in name:
        found[key] = np.asarray(variable.numpy())
  if "scalar_weights" not in found:
    return None
  s = found["scalar_weights"]
  weights = np.exp(s - s.max())
  return {"softmax_s": [round(float(w), 4) for w in weights / weights.sum()],
          "gamma": round(float(found["gamma"]), 4)}


# === Training ===


def _varying_shape(key: str, shape) -> list:
  """`shape` with None for the batch and, if any, the time dimension."""
  shape = [None] + list(shape[1:])
  if key in ("tokens", "ids") or (key == "features" and len(shape) == 3):
    shape[1] = None  # (B, T) or (B, T, D)
  elif key == "layers":
    shape[2] = None  # (B, L+1, T, 2P)
  return shape


def train_and_evaluate(model, optimizer, source: str, train: SplitData,
                       dev: SplitData, test: SplitData, config: TrainConfig,
                       seed: int, tagging: bool) -> dict:
  """Trains for `config.epochs`, keeps the best dev epoch, tests it."""

  # One trace each: every dimension that varies between batches is None.
  sample_index = np.arange(min(2, len(train.examples)))
  sample_inputs = train.inputs(sample_index, source)
  sample_labels = train.labels(sample_index)
  input_spec = {key: tf.TensorSpec(_varying_shape(key, value.shape),
                                   value.dtype)
                for key, value in sample_inputs.items()}
  label_spec = tf.TensorSpec([None], tf.int32)

  @tf.function(input_signature=[input_spec, label_spec])
  def train_step(inputs, labels):
    with tf.GradientTape() as tape:
      logits = model(inputs, training=True)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
      if model.losses:
        loss += tf.add_n([tf.cast(l, loss.dtype) for l in model.losses])
    variables = model.trainable_variables
    gradients = tape.gradient(loss, variables)
    optimizer.apply_gradients(zip(gradients, variables))
    return loss

  @tf.function(input_signature=[input_spec])
  def predict(inputs):
    return tf.argmax(model(inputs, training=False), axis=-1,
                     output_type=tf.int32)

  def accuracy(split: SplitData) -> dict:
    correct = total = word_correct = word_total = 0
    for index in evaluation_batches(split.lengths, config.eval_batch_size):
      predictions = predict(split.inputs(index, source)).numpy()
      hits = predictions == split.labels(index)
      correct += hits.sum()
      total += hits.size
      if tagging:
        starts = split.word_starts(index)
        word_correct += hits[starts].sum()
        word_total += starts.sum()
    result = {"accuracy": float(correct / total)}
    if tagging:
      result["word_accuracy"] = float(word_correct / word_total)
    return result

  # Build the model (an ElmoEmbedding restores its weights in build) and
  # the optimizer's slots eagerly, outside the traced steps.
  model(sample_inputs, training=False)
  optimizer.build(model.trainable_variables)
  # What training changes: the trainable weights and the head's batch
  # statistics.
  state = list(model.trainable_variables) + [
      v for layer in model.token_layers + model.output_layers
      for v in layer.non_trainable_variables]
  rng = np.random.default_rng(seed)
  best = {"dev_accuracy": -1.0}
  history = []
  for epoch in range(1, config.epochs + 1):
    losses = []
    for index in training_batches(train.lengths, config.batch_size,
                                  config.bucket_batches, rng):
      losses.append(float(train_step(train.inputs(index, source),
                                     tf.constant(train.labels(index)))))
    dev_accuracy = accuracy(dev)["accuracy"]
    history.append({"epoch": epoch, "train_loss": statistics.fmean(losses),
                    "dev_accuracy": dev_accuracy})
    if dev_accuracy > best["dev_accuracy"]:
      best = {"dev_accuracy": dev_accuracy, "epoch": epoch,
              "weights": [np.array(v.numpy()) for v in state]}
  for variable, value in zip(state, best["weights"]):
    variable.assign(value)
  test_result = accuracy(test)
  result = {"test_accuracy": test_result["accuracy"],
            "dev_accuracy": best["dev_accuracy"], "best_epoch": best["epoch"],
            "history": history}
  if tagging:
    result["test_word_accuracy"] = test_result["word_accuracy"]
  mix = mix_values(model)
  if mix is not None:
    result["mix"] = mix
  return result


def _set_seeds(seed: int, row: str) -> None:
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  if row == "mix_hub":
    import tf_keras  # pylint: disable=g-import-not-at-top
    tf_keras.utils.set_random_seed(seed)


def scratch_vocabulary(examples, min_count: int) -> dict[str, int]:
  """Token -> id over the training examples: 0 padding, 1 out of
  vocabulary, then tokens seen `min_count` times or more (by frequency)."""
  counts = {}
  for e in examples:
    for token in e.tokens:
      counts[token] = counts.get(token, 0) + 1
  kept = sorted((t for t, c in counts.items() if c >= min_count),
                key=lambda t: (-counts[t], t))
  return {token: i + 2 for i, token in enumerate(kept)}


def _summary(values: Sequence[float]) -> dict:
  return {"mean": statistics.fmean(values),
          "std": statistics.stdev(values) if len(values) > 1 else 0.0,
          "min": min(values), "max": max(values)}


def run_task(task: tasks_lib.Task, model_path: str, rows: Sequence[str],
             seeds: Sequence[int], config: TrainConfig,
             progress: Callable[[str], None] = logging.info) -> dict:
  """Every row x seed on one task; returns the JSON-serializable result."""
  try:  # SavedModels of older elmo_tf use its ops; hub.KerasLayer loads
    # the SavedModel itself, so they are registered up front.
    import tensorflow_text  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    pass
  from elmo_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  _, info = export_lib.read_export(model_path)
  n_layers = int(info["n_layers"])
  projection_dim = int(info["projection_dim"])
  known = {"scratch", "mix_cached", "mix_hub", "mix_keras3"} | {
      f"layer{j}" for j in range(n_layers + 1)}
  unknown = [row for row in rows if row not in known]
  if unknown:
    raise ValueError(f"Unknown rows {unknown} for a {n_layers}-layer biLM; "
                     f"choose from {sorted(known)}.")
  result = {"info": task.info, "kind": task.kind, "sizes": task.sizes(),
            "n_labels": len(task.labels), "model": model_path,
            "model_tokenization": info["tokenization"], "rows": {}}

  needs_cache = any(r.startswith("layer") or r == "mix_cached" for r in rows)
  layers = {name: None for name in ("train", "dev", "test")}
  # Per-sentence means suffice for a linear head (the mean commutes with
  # it and with the mix); a hidden layer acts on every token first.
  pooled = task.kind == "sentence" and not config.hidden
  result["cached_layers"] = ("per-sentence means" if pooled
                             else "per token") if needs_cache else None
  if needs_cache:
    start = time.perf_counter()
    cpu_start = time.process_time()
    signature = export_lib.load_saved_model(model_path).signatures["tokens"]
    for name in layers:
      layers[name] = compute_layers(signature, task.split(name), n_layers,
                                    config.eval_batch_size,
                                    pooled=pooled)
    result["feature_seconds"] = time.perf_counter() - start
    result["feature_cpu_seconds"] = time.process_time() - cpu_start
    progress(f"{task.name}: cached biLM layers in "
             f"{result['feature_seconds']:.0f} s")
  vocab = scratch_vocabulary(task.train, config.scratch_min_count)
  result["scratch_vocabulary"] = len(vocab) + 2
  splits = {name: SplitData(task, task.split(name), vocab=vocab,
                            layers=layers[name],
                            projection_dim=projection_dim)
            for name in layers}
  initial_mix = exported_mix(model_path)

  for row in rows:
    runs = []
    for seed in seeds:
      start = time.perf_counter()
      cpu_start = time.process_time()
      _set_seeds(seed, row)
      model, optimizer, source = build_classifier(
          row, task, model_path, config, vocab_size=len(vocab) + 2,
          initial_mix=initial_mix)
      run = train_and_evaluate(model, optimizer, source, splits["train"],
                               splits["dev"], splits["test"], config, seed,
                               tagging=task.kind == "tagging")
      run["seed"] = seed
      run["seconds"] = time.perf_counter() - start
      run["cpu_seconds"] = time.process_time() - cpu_start
      runs.append(run)
      progress(f"{task.name} {row} seed {seed}: test "
               f"{100 * run['test_accuracy']:.2f} (dev "
               f"{100 * run['dev_accuracy']:.2f}, epoch {run['best_epoch']}, "
               f"{run['seconds']:.0f} s, CPU {run['cpu_seconds']:.0f} s)")
      del model, optimizer
    row_result = {"title": ROW_TITLES.get(row, row), "runs": runs,
                  "test_accuracy": _summary([r["test_accuracy"]
                                             for r in runs]),
                  "seconds": sum(r["seconds"] for r in runs),
                  "cpu_seconds": sum(r["cpu_seconds"] for r in runs)}
    if task.kind == "tagging":
      row_result["test_word_accuracy"] = _summary(
          [r["test_word_accuracy"] for r in runs])
    result["rows"][row] = row_result
  return result


# === Report ===


def _cell(summary: Optional[dict]) -> str:
  if summary is None:
    return "n/a"
  return f"{100 * summary['mean']:.1f} ± {100 * summary['std']:.1f}"


def markdown_table(results: dict) -> str:
  """Rows x tasks: test accuracy (%), mean ± sample std over seeds."""
  task_names = list(results)
  rows = []
  for task_result in results.values():
    rows.extend(r for r in task_result["rows"] if r not in rows)
  rows.sort(key=lambda r: ROWS.index(r) if r in ROWS else len(ROWS))
  header = "| features | " + " | ".join(task_names) + " |"
  lines = [header, "|---" * (len(task_names) + 1) + "|"]
  for row in rows:
    cells = []
    for name in task_names:
      row_result = results[name]["rows"].get(row)
      cells.append(_cell(row_result["test_accuracy"] if row_result else None))
    lines.append(f"| {ROW_TITLES.get(row, row)} | " + " | ".join(cells)
                 + " |")
  return "\n".join(lines)


def sizes_table(results: dict) -> str:
  """Examples (tokens) per split for each task."""
  lines = ["| task | train | dev | test | labels |", "|---|---|---|---|---|"]
  for name, task_result in results.items():
    sizes = task_result["sizes"]
    cells = [f"{sizes[s]['examples']:,} ({sizes[s]['tokens']:,} tokens)"
             for s in ("train", "dev", "test")]
    lines.append(f"| {name} | " + " | ".join(cells)
                 + f" | {task_result['n_labels']} |")
  return "\n".join(lines)


def write_json(path: str, report: dict) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=1, ensure_ascii=False, sort_keys=False,
              default=lambda o: o.item() if hasattr(o, "item") else str(o))
    f.write("\n")
