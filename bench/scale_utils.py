"""Helpers of the scale benchmarks (bench/softmax_scale_bench.py,
bench/multiworker_bench.py): a synthetic Zipf corpus, peak memory, tables.

Standard library and numpy only (no TensorFlow, no flags), so that
tests/scale_bench_test.py can import it cheaply.
"""

import json
import os
import resource
import socket
import subprocess
import sys
from typing import Any, Sequence

import numpy as np


def zipf_counts(n_words: int, n_tokens: int, exponent: float) -> np.ndarray:
  """Occurrences of words of rank 1..n_words: a Zipf law with a floor of 1.

  count(r) = max(1, round(n_tokens * r^-exponent / H)), H = sum_r r^-exponent.
  The floor makes every word occur, so a vocabulary built with min_count=1
  has exactly `n_words` words; the total is then a little above `n_tokens`
  when the tail's expected counts are below 1 (800k words, exponent 1.05,
  3M tokens: 3.39M, 693k of the words once).

  Returns:
    (n_words,) int64, non-increasing.
  """
  if n_words < 1 or n_tokens < 1 or exponent <= 0:
    raise ValueError(f"Need n_words, n_tokens >= 1 and exponent > 0; got "
                     f"{n_words}, {n_tokens}, {exponent}.")
  weights = np.arange(1, n_words + 1, dtype=np.float64) ** -exponent
  counts = np.rint(n_tokens * weights / weights.sum()).astype(np.int64)
  return np.maximum(counts, 1)


def zipf_sentences(n_words: int, n_tokens: int, exponent: float, seed: int,
                   min_length: int = 5, max_length: int = 40):
  """Yields sentences (lists of words `w0`, `w1`, ...; `w0` most frequent).

  Every token of `zipf_counts(...)` exactly once, in an order shuffled by
  `seed`, cut into sentences of lengths uniform in [min_length, max_length].
  Deterministic: the same arguments give the same sentences.
  """
  counts = zipf_counts(n_words, n_tokens, exponent)
  rng = np.random.default_rng(seed)
  tokens = rng.permutation(np.repeat(np.arange(n_words, dtype=np.int64),
                                     counts))  # (total,)
  start = 0
  while start < len(tokens):
    length = int(rng.integers(min_length, max_length + 1))
    yield [f"w{i}" for i in tokens[start:start + length]]
    start += length


def write_zipf_corpus(directory: str, n_words: int, n_tokens: int,
                      exponent: float, seed: int,
                      valid_sentences: int = 200) -> dict[str, Any]:
  """Writes train.txt (every word of the Zipf law) and valid.txt.

  valid.txt: `valid_sentences` sentences drawn from the same law with
  another seed (it may name words too, but the vocabulary is built from
  train only, which has all of them).

  Returns:
    {"spec": the corpus specification `train=...;valid=...` for
    elmo_tf.prepare, "train_tokens", "train_sentences", "words": n_words}.
  """
  os.makedirs(directory, exist_ok=True)
  train = os.path.join(directory, "train.txt")
  valid = os.path.join(directory, "valid.txt")
  n_tokens_written = n_sentences = 0
  with open(train, "w", encoding="utf-8", newline="\n") as f:
    for sentence in zipf_sentences(n_words, n_tokens, exponent, seed):
      f.write(" ".join(sentence) + "\n")
      n_tokens_written += len(sentence)
      n_sentences += 1
  with open(valid, "w", encoding="utf-8", newline="\n") as f:
    # Fewer words and tokens: only the head of the law matters here.
    for i, sentence in enumerate(zipf_sentences(
        min(n_words, 1000), 40 * valid_sentences, exponent, seed + 1)):
      if i == valid_sentences:
        break
      f.write(" ".join(sentence) + "\n")
  return {"spec": f"train={train};valid={valid}",
          "train_tokens": n_tokens_written,
          "train_sentences": n_sentences, "words": n_words}


def directory_bytes(directory: str) -> int:
  """Total size of the files under `directory`."""
  total = 0
  for root, _, files in os.walk(directory):
    for name in files:
      total += os.path.getsize(os.path.join(root, name))
  return total


def peak_rss_bytes() -> int:
  """This process's peak resident set size since it started its program.

  Linux: VmHWM of /proc/self/status, which starts afresh at execve. Not
  ru_maxrss alone: Linux carries ru_maxrss over fork and execve, so a child
  started by a parent that once held 600 MiB (TensorFlow imported) reports
  at least that. Elsewhere: `ru_maxrss_bytes()`.
  """
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) * 1024  # kB
  except OSError:
    pass
  return ru_maxrss_bytes()


def ru_maxrss_bytes() -> int:
  """resource.getrusage(RUSAGE_SELF).ru_maxrss in bytes (KiB on Linux)."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak if sys.platform == "darwin" else peak * 1024


def markdown_table(headers: Sequence[str],
                   rows: Sequence[Sequence[Any]]) -> str:
  """A GitHub markdown table; floats with 3 significant digits, None as -."""

  def cell(value):
    if value is None:
      return "-"
    if isinstance(value, float):
      return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
      return f"{value:,}"
    return str(value)

  lines = ["| " + " | ".join(headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
  for row in rows:
    if len(row) != len(headers):
      raise ValueError(f"Row {row!r} has {len(row)} cells, expected "
                       f"{len(headers)}.")
    lines.append("| " + " | ".join(cell(v) for v in row) + " |")
  return "\n".join(lines)


def run_child(args: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | None = None) -> subprocess.Popen:
  """Starts `python -m ARGS...` with this interpreter (output to a pipe)."""
  return subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def free_ports(n: int) -> list[int]:
  """`n` TCP ports of 127.0.0.1 free at the time of the call."""
  sockets = [socket.socket() for _ in range(n)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def read_json(path: str) -> dict[str, Any]:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def write_json(path: str, value: dict[str, Any]) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(value, f, indent=2)
    f.write("\n")
