r"""elmo_tf's side of the bilm-tf side-by-side: embedding throughput.

The repository's copy of the peer harness's `elmo_embed_bench.py`
(/work/shared/peer-harness), loading the SavedModel with
`export.load_saved_model` (today's exports need no tensorflow-text; older
ones get its ops registered there) and writing the same JSON fields.

Sentences: one whitespace-tokenized sentence per line; batches of
`--batch_size` consecutive non-empty lines, like bilm_embed_bench.py.
Timed: the `tokens` signature (pre-split tokens, character ids built in the
graph) and the `default` signature (raw sentence strings, tokenized in the
graph); each batch's `elmo` output is fetched (.numpy()). `steady` leaves out
the first `--warmup_batches` batches (tracing). Then batch-1 latency of a
20-token sentence (p50/p90 over `--latency_calls` calls after 5 warm-up
calls), both signatures.

From the repository root:

  .venv/bin/python -m bench.peer.elmo_embed_bench \
      --saved_model=savedmodels/ptb --sentences=/work/peer/data/ptb/test.txt \
      --max_sentences=64 --latency_calls=10 --out=/tmp/e.json
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app
from absl import flags

from bench import machine

_SAVED_MODEL = flags.DEFINE_string("saved_model", None,
                                   "An elmo_tf SavedModel (bin/export).")
_SENTENCES = flags.DEFINE_string("sentences", None,
                                 "One tokenized sentence per line.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Sentences per batch.")
_MAX_SENTENCES = flags.DEFINE_integer("max_sentences", None,
                                      "Use the first N non-empty lines.")
_WARMUP_BATCHES = flags.DEFINE_integer(
    "warmup_batches", 1, "Batches left out of the steady figures.")
_LATENCY_CALLS = flags.DEFINE_integer("latency_calls", 200,
                                      "Timed batch-1 calls per signature.")
_INTRA_OP_THREADS = flags.DEFINE_integer(
    "intra_op_threads", 0, "TensorFlow intra-op threads (0: its default).")
_OUT = flags.DEFINE_string("out", None, "Result JSON.")
flags.mark_flags_as_required(["saved_model", "sentences", "out"])

LATENCY_TOKENS = 20


def percentile(values, q):
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1,
                     max(0, round(q / 100 * (len(ordered) - 1))))]


def read_sentences(path: str, limit):
  sentences = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      tokens = line.strip().split()
      if tokens:
        sentences.append(tokens)
      if limit and len(sentences) >= limit:
        break
  return sentences


def latency_sentence(sentences):
  """A 20-token sentence of the file; else the first 20 tokens of the file
  (a toy file may have none of exactly that length)."""
  for tokens in sentences:
    if len(tokens) == LATENCY_TOKENS:
      return tokens
  flat = [t for tokens in sentences for t in tokens]
  return (flat * LATENCY_TOKENS)[:LATENCY_TOKENS]


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import export as export_lib  # pylint: disable=g-import-not-at-top

  if _INTRA_OP_THREADS.value:
    tf.config.threading.set_intra_op_parallelism_threads(
        _INTRA_OP_THREADS.value)
  start = time.time()
  model = export_lib.load_saved_model(_SAVED_MODEL.value)
  load_s = time.time() - start
  signature_tokens = model.signatures["tokens"]
  signature_default = model.signatures["default"]

  sentences = read_sentences(_SENTENCES.value, _MAX_SENTENCES.value)
  size = _BATCH_SIZE.value
  batches = [sentences[i:i + size] for i in range(0, len(sentences), size)]

  def tokens_inputs(chunk):
    width = max(len(s) for s in chunk)
    return (tf.constant([s + [""] * (width - len(s)) for s in chunk]),  # (B, T)
            tf.constant([len(s) for s in chunk], tf.int32))  # (B,)

  tokens_in = [tokens_inputs(c) for c in batches]
  text_in = [tf.constant([" ".join(s) for s in c]) for c in batches]  # (B,)
  batch_tokens = [sum(len(s) for s in c) for c in batches]

  def run_all(fn, inputs):
    seconds = []
    for x in inputs:
      t = time.perf_counter()
      fn(x)["elmo"].numpy()
      seconds.append(time.perf_counter() - t)
    return seconds

  result = {"tool": "bench/peer/elmo_embed_bench.py (elmo_tf SavedModel)",
            "args": {"saved_model": _SAVED_MODEL.value,
                     "sentences": _SENTENCES.value, "batch_size": size,
                     "max_sentences": _MAX_SENTENCES.value,
                     "warmup_batches": _WARMUP_BATCHES.value,
                     "latency_calls": _LATENCY_CALLS.value,
                     "intra_op_threads": _INTRA_OP_THREADS.value,
                     "out": _OUT.value},
            "load_s": load_s, "n_sentences": len(sentences),
            "n_tokens": sum(batch_tokens), "n_batches": len(batches),
            "tf": tf.__version__}
  # At least one batch stays in the steady figures.
  w = min(_WARMUP_BATCHES.value, max(0, len(batches) - 1))
  for name, fn, inputs in (
      ("tokens", lambda x: signature_tokens(tokens=x[0], sequence_len=x[1]),
       tokens_in),
      ("default", signature_default, text_in)):
    t = time.perf_counter()
    seconds = run_all(fn, inputs)
    wall = time.perf_counter() - t
    steady = sum(seconds[w:])
    result["throughput_" + name] = {
        "first_batch_s": seconds[0],
        "loop_wall_s": wall,
        "sentences_per_sec_all": len(sentences) / wall,
        "sentences_per_sec_steady": sum(len(c) for c in batches[w:]) / steady,
        "tokens_per_sec_steady": sum(batch_tokens[w:]) / steady,
        "batch_s_median": statistics.median(seconds[w:]),
    }
  out = signature_tokens(tokens=tokens_in[0][0], sequence_len=tokens_in[0][1])
  result["output_shapes"] = {k: list(v.shape) for k, v in out.items()}

  sentence = latency_sentence(sentences)
  one_tokens = (tf.constant([sentence]),  # (1, 20)
                tf.constant([len(sentence)], tf.int32))
  one_text = tf.constant([" ".join(sentence)])  # (1,)
  for name, fn in (
      ("tokens", lambda: signature_tokens(
          tokens=one_tokens[0], sequence_len=one_tokens[1])["elmo"].numpy()),
      ("default", lambda: signature_default(one_text)["elmo"].numpy())):
    for _ in range(5):
      fn()
    ms = []
    for _ in range(_LATENCY_CALLS.value):
      t = time.perf_counter()
      fn()
      ms.append(1000 * (time.perf_counter() - t))
    result[f"latency_batch1_{LATENCY_TOKENS}tok_" + name] = {
        "calls": len(ms), "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90), "mean_ms": statistics.fmean(ms)}
  result["peak_rss_mb"] = (
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
  result["cpu_model"] = machine.cpu_model()
  result["command"] = " ".join([os.path.basename(sys.executable)] + sys.argv)
  with open(_OUT.value, "w", encoding="utf-8") as f:
    json.dump(result, f, indent=1)
  print("RESULT %d sents/%d tokens B=%d: tokens-sig steady %.1f sent/s "
        "(all %.1f), default-sig steady %.1f sent/s; batch1 20tok p50 tokens "
        "%.1f ms default %.1f ms; peak_rss=%.0fMiB -> %s" % (
            len(sentences), sum(batch_tokens), size,
            result["throughput_tokens"]["sentences_per_sec_steady"],
            result["throughput_tokens"]["sentences_per_sec_all"],
            result["throughput_default"]["sentences_per_sec_steady"],
            result["latency_batch1_20tok_tokens"]["p50_ms"],
            result["latency_batch1_20tok_default"]["p50_ms"],
            result["peak_rss_mb"], _OUT.value), flush=True)


if __name__ == "__main__":
  app.run(main)
