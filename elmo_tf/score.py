"""Scoring sentences with the biLM: log-probabilities and perplexity.

`score_sentences(module, texts)` calls the `log_probs` function of a
SavedModel written by elmo_tf (or of a training run's in-memory module,
`export.load`) and returns one JSON-ready dict per sentence:

  text               the sentence as given
  tokens             its tokens (the model's tokenization)
  forward_log_prob   log p(w_1 .. w_n </S>) under the forward LM (nats)
  backward_log_prob  log p(<S> w_1 .. w_n) under the backward LM
  average_log_prob   their mean
  token_count        n + 1: the predictions per direction
  perplexity         exp(-average_log_prob / token_count)
  forward_perplexity, backward_perplexity   the same per direction
  n_unk              words not in the vocabulary (scored as <UNK>)

`rank(results)` orders candidates from the most to the least fluent: by
perplexity, lowest first (for candidates with the same tokens, such as
reorderings of one sentence, that is the order of `average_log_prob`).
"""

import math

import numpy as np
import tensorflow as tf


class ScoringError(ValueError):
  """The model cannot score (its SavedModel has no softmax)."""


def _exp(x: float) -> float:
  try:
    return math.exp(x)
  except OverflowError:
    return math.inf


def check_can_score(module, path: str) -> None:
  if not hasattr(module, "log_probs"):
    raise ScoringError(
        f"{path} cannot score sentences: it has no `log_probs` function (it "
        "was exported without the biLM's softmax, by an elmo_tf older than "
        "the scoring signature). Export it again from its training run "
        "(bin/export --model_dir=RUN), or pass --model_dir=RUN instead.")


def score_sentences(module, texts: list[str]) -> list[dict]:
  """One result dict per text (see the module docstring)."""
  if not texts:
    return []
  out = module.log_probs(tf.constant(texts))
  tokens = out["tokens"].numpy()
  lengths = out["sequence_len"].numpy()
  results = []
  for i, text in enumerate(texts):
    n = int(lengths[i])
    count = int(out["token_count"][i])
    forward = float(out["forward_log_prob"][i])
    backward = float(out["backward_log_prob"][i])
    average = 0.5 * (forward + backward)
    results.append({
        "text": text,
        "tokens": [t.decode("utf-8", "replace") for t in tokens[i][:n]],
        "forward_log_prob": forward,
        "backward_log_prob": backward,
        "average_log_prob": average,
        "token_count": count,
        "perplexity": _exp(-average / count),
        "forward_perplexity": _exp(-forward / count),
        "backward_perplexity": _exp(-backward / count),
        "n_unk": int(out["unk_count"][i]),
    })
  return results


def rank(results: list[dict]) -> list[dict]:
  """`results` from the most fluent (lowest perplexity) to the least, each
  with its 1-based `rank`."""
  order = sorted(range(len(results)),
                 key=lambda i: (results[i]["perplexity"], i))
  return [dict(results[i], rank=r) for r, i in enumerate(order, start=1)]


def token_log_probs(module, text: str) -> dict[str, np.ndarray]:
  """Per-token forward and backward log-probabilities of one sentence:
  {"tokens", "forward", "backward"}, arrays of length n."""
  out = module.log_probs(tf.constant([text]))
  n = int(out["sequence_len"][0])
  return {
      "tokens": [t.decode("utf-8", "replace") for t in out["tokens"][0][:n]
                 .numpy()],
      "forward": out["forward_log_probs"][0][:n].numpy(),
      "backward": out["backward_log_probs"][0][:n].numpy(),
  }
