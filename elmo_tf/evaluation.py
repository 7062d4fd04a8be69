"""Held-out perplexity of a biLM, with the full softmax.

`evaluate_model` runs a model over a dataset of `elmo_tf.data`;
`evaluate(model_dir, ...)` loads the latest checkpoint of a run and
evaluates it on a split of its corpus (bin/evaluate).
"""

import math
from typing import Any

import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import data as data_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf.models import bilm as bilm_lib


def perplexity(loss: float) -> float:
  """exp(loss), inf where that overflows (a diverged model)."""
  try:
    return math.exp(loss)
  except OverflowError:
    return math.inf


def evaluate_model(model: bilm_lib.BidirectionalLM,
                   dataset: tf.data.Dataset,
                   batching: str,
                   max_batches: int = 0) -> dict[str, float]:
  """Held-out perplexity with the full softmax.

  In `stream` mode the LSTM states are carried from batch to batch, as in
  the standard PTB evaluation; in `sentences` mode every sentence starts
  from a zero state.

  Returns: dict with forward/backward/average loss and perplexity and the
  number of target tokens per direction.
  """

  @tf.function(reduce_retracing=True)
  def eval_step(batch):
    outputs = model(batch, training=False)
    return (outputs["forward_loss"] * outputs["forward_tokens"],
            outputs["backward_loss"] * outputs["backward_tokens"],
            outputs["forward_tokens"], outputs["backward_tokens"],
            outputs["forward_state"], outputs["backward_state"])

  totals = np.zeros(4, np.float64)
  state = None
  for i, batch in enumerate(dataset):
    if max_batches and i >= max_batches:
      break
    if batching == "stream":
      if state is None:
        batch_size = int(batch["token_ids"].shape[0])
        state = model.backbone.initial_state(batch_size)
      batch = dict(batch, forward_state=state[0], backward_state=state[1])
    f_sum, b_sum, f_n, b_n, f_state, b_state = eval_step(batch)
    if batching == "stream":
      state = (f_state, b_state)
    totals += [float(f_sum), float(b_sum), float(f_n), float(b_n)]
  if totals[2] == 0 or totals[3] == 0:
    raise checkpoints_lib.TrainingError("Evaluation data has no target tokens.")
  forward_loss = totals[0] / totals[2]
  backward_loss = totals[1] / totals[3]
  average_loss = 0.5 * (forward_loss + backward_loss)
  return {
      "forward_loss": forward_loss,
      "backward_loss": backward_loss,
      "average_loss": average_loss,
      "forward_perplexity": perplexity(forward_loss),
      "backward_perplexity": perplexity(backward_loss),
      "average_perplexity": perplexity(average_loss),
      "forward_tokens": int(totals[2]),
      "backward_tokens": int(totals[3]),
  }


def evaluate(model_dir: str, corpus: str | None = None, split: str = "test",
             batching: str | None = None, batch_size: int | None = None,
             cache_root: str | None = None,
             max_batches: int = 0) -> dict[str, Any]:
  """Evaluates the latest checkpoint in `model_dir` on `split` of `corpus`
  (default: the run's corpus), prepared under `cache_root` (default
  `prepare.default_cache_root()`)."""
  config, vocab, model, checkpoint = checkpoints_lib.load_trained_model(
      model_dir)
  data_config = config.data
  if corpus:
    data_config = data_config.replace(corpus=corpus)
  if batching:
    data_config = data_config.replace(batching=batching)
  if batch_size:
    data_config = data_config.replace(batch_size=batch_size)
  prepared = prepare_lib.ensure_prepared(data_config, cache_root)
  # Always evaluate with the model's own vocabulary: held-out words that
  # are not in it become <UNK>, exactly as at training time.
  prepared = prepared.with_vocab(vocab)
  dataset = data_lib.make_dataset(prepared, split, data_config,
                                  shuffle=False, seed=config.train.seed)
  results = evaluate_model(model, dataset, data_config.batching,
                           max_batches=max_batches)
  results.update(checkpoint=checkpoint, split=split,
                 corpus=data_config.corpus, batching=data_config.batching)
  return results


