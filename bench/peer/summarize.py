r"""The side-by-side table (issue 12) from one sitting's result JSONs.

Reads what bench/peer/run_side_by_side.sh wrote to `--results`
($PEER/results): the stage files `a_*` to `g_*` (one per run),
`matmul.txt`, `sitting.json` and `commands.tsv`. Writes `--output`
(bench/results/side_by_side.json) and prints the markdown table:

  | work | bilm-tf | elmo_tf | ratio |

Each cell shows the runs as a range (min-max; one value when they agree to
the shown precision). `ratio` is elmo_tf / bilm-tf over the same runs: from
the least favourable pairing (elmo_tf's lowest over bilm-tf's highest) to the
most favourable one, so it never hides the spread. For the memory row the
ratio is the same quotient (below 1: elmo_tf uses less). A work that was not
run shows "not run". Below the table: what mixed_bfloat16 gains over
elmo_tf's own float32 (stage b over a), the machine (CPU family, model and
matmul instruction sets), and each sitting's command and elmo_tf commit.

From the repository root:

  .venv/bin/python -m bench.peer.summarize --results=/work/peer/results
"""

import datetime
import functools
import glob
import json
import os
import platform
import re
import subprocess
import types

from absl import app
from absl import flags

from bench import machine

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def define_flags() -> types.SimpleNamespace:
  """This program's flags, defined when it runs (not on import, so that a
  test importing the module defines none)."""
  return types.SimpleNamespace(
      results=flags.DEFINE_string(
          "results",
          os.path.join(os.environ.get("PEER", "/work/peer"), "results"),
          "The folder run_side_by_side.sh wrote ($PEER/results)."),
      output=flags.DEFINE_string(
          "output",
          os.path.join(_REPO, "bench", "results", "side_by_side.json"),
          "Where to write the summary JSON."))


def _get(data: dict, path: str):
  for key in path.split("."):
    data = data[key]
  return float(data)


# (key, work, unit, bilm-tf files and field, elmo_tf files and field).
# A bilm-tf side of None: bilm-tf has no such thing (shown as "-").
ROWS = (
    ("a_train_small_fp32",
     "training, `small` (2 x 1024/128, 2048 filters), float32, batch 32 x 20, "
     "1024 negatives", "target tokens/s per direction",
     ("a_bilm_small_*.json", "tokens_per_sec"),
     ("a_elmo_small_*.json", "tokens_per_sec_nominal")),
    ("a_peak_rss_small_fp32",
     "peak memory of that training process", "MiB",
     ("a_bilm_small_*.json", "peak_rss_mb"),
     ("a_elmo_small_*.json", "peak_rss_mb")),
    ("b_train_small_bf16",
     "training, `small`, elmo_tf in mixed_bfloat16 (bilm-tf: float32, "
     "from (a))", "target tokens/s per direction",
     ("a_bilm_small_*.json", "tokens_per_sec"),
     ("b_elmo_small_bf16_*.json", "tokens_per_sec_nominal")),
    ("c_train_256_64_fp32",
     "training, bilm-tf's 256/64 size (128 filters), float32, batch 32 x 20, "
     "256 negatives", "target tokens/s per direction",
     ("c_bilm_tiny_*.json", "tokens_per_sec"),
     ("c_elmo_tiny_*.json", "tokens_per_sec_nominal")),
    ("d_embed_sentences",
     "embedding, `small`, batch 32, PTB test (pre-tokenized input: bilm-tf's "
     "Batcher / elmo_tf's `tokens` signature)", "sentences/s, steady",
     ("d_bilm_embed_*.json", "sentences_per_sec_steady"),
     ("d_elmo_embed_*.json", "throughput_tokens.sentences_per_sec_steady")),
    ("d_embed_tokens",
     "embedding, the same runs", "tokens/s, steady",
     ("d_bilm_embed_*.json", "tokens_per_sec_steady"),
     ("d_elmo_embed_*.json", "throughput_tokens.tokens_per_sec_steady")),
    ("d_embed_default_signature",
     "embedding from raw strings (elmo_tf's `default` signature, tokenized "
     "in the graph)", "sentences/s, steady",
     None,
     ("d_elmo_embed_*.json", "throughput_default.sentences_per_sec_steady")),
    ("d_latency_batch1",
     "latency, one 20-token sentence (`tokens` signature)", "ms, median",
     None,
     ("d_elmo_embed_*.json", "latency_batch1_20tok_tokens.p50_ms")),
    ("e_train_medium_fp32",
     "training, the published `medium` size (2 x 2048/256, 2048 filters, "
     "1 highway), float32, batch 32 x 20, 8192 negatives",
     "target tokens/s per direction",
     ("e_bilm_medium_*.json", "tokens_per_sec"),
     ("e_elmo_medium_*.json", "tokens_per_sec_nominal")),
    ("f_train_original_fp32",
     "training, the paper's `original` size (2 x 4096/512, 2048 filters, "
     "2 highway), float32, batch 32 x 20, 8192 negatives",
     "target tokens/s per direction",
     ("f_bilm_original_*.json", "tokens_per_sec"),
     ("f_elmo_original_*.json", "tokens_per_sec_nominal")),
    ("f_peak_rss_original_fp32",
     "peak memory of that training process", "MiB",
     ("f_bilm_original_*.json", "peak_rss_mb"),
     ("f_elmo_original_*.json", "peak_rss_mb")),
    ("g_embed_original_sentences",
     "embedding, the paper's `original` size (random weights in the "
     "published hdf5 format), batch 32, PTB test", "sentences/s, steady",
     ("g_bilm_embed_*.json", "sentences_per_sec_steady"),
     ("g_elmo_embed_*.json", "throughput_tokens.sentences_per_sec_steady")),
    ("g_peak_rss_original",
     "peak memory of that embedding process", "MiB",
     ("g_bilm_embed_*.json", "peak_rss_mb"),
     ("g_elmo_embed_*.json", "peak_rss_mb")),
)


# Ratios of elmo_tf to itself (key, what, numerator rows' spec, denominator's):
# what a precision gains on this machine, the issue's "x own fp32".
OWN_RATIOS = (
    ("b_over_a_bf16_over_fp32",
     "elmo_tf `small` training in mixed_bfloat16 over its own float32 "
     "(b over a)",
     ("b_elmo_small_bf16_*.json", "tokens_per_sec_nominal"),
     ("a_elmo_small_*.json", "tokens_per_sec_nominal")),
)


def _run_number(path: str) -> int:
  match = re.search(r"_(\d+)\.json$", path)
  return int(match.group(1)) if match else 0


def read_side(results: str, spec):
  """([value per run], [file names]) of one side of a row."""
  if spec is None:
    return None, []
  pattern, field = spec
  paths = sorted(glob.glob(os.path.join(results, pattern)), key=_run_number)
  values = []
  for path in paths:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    try:
      values.append(_get(data, field))
    except (KeyError, TypeError, ValueError) as e:
      raise ValueError(
          f"{path}: no number at {field!r} ({type(e).__name__}: {e}); a run "
          "that failed or an older timer wrote it: run its stage again, or "
          "move the file out of the results folder") from e
  return values, [os.path.basename(p) for p in paths]


def value_range(values):
  return [min(values), max(values)] if values else None


def ratio_range(bilm, elmo):
  if not bilm or not elmo:
    return None
  return [min(elmo) / max(bilm), max(elmo) / min(bilm)]


def _number(value: float) -> str:
  if value >= 100:
    return f"{value:,.0f}"
  if value >= 10:
    return f"{value:.1f}"
  return f"{value:.2f}"


def format_range(pair, fmt=_number, suffix="") -> str:
  if pair is None:
    return "not run"
  low, high = fmt(pair[0]), fmt(pair[1])
  return (low if low == high else f"{low}-{high}") + suffix


def read_matmul(results: str):
  """{dtype: [GFLOP/s per run]} from matmul.txt."""
  path = os.path.join(results, "matmul.txt")
  out = {}
  if not os.path.exists(path):
    return out
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.startswith("MATMUL_GFLOPS"):
        for dtype, value in json.loads(line.split(None, 1)[1]).items():
          out.setdefault(dtype, []).append(value)
  return out


def read_commands(results: str) -> list[dict]:
  path = os.path.join(results, "commands.tsv")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [dict(zip(("stage", "command"), line.rstrip("\n").split("\t", 1)))
            for line in f if "\t" in line]


def _checkout_commit(path: str):
  """The commit of the bilm-tf checkout at `path`, or None. For when the
  harness found no PEER_SOURCE_COMMIT file in it (it records the commit
  only from that file)."""
  try:
    return subprocess.run(["git", "-C", path, "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def read_env(results: str) -> dict:
  """TensorFlow and bilm-tf facts recorded by the harness's bilm-tf side
  (else TensorFlow's version from an elmo_tf result)."""
  for path in sorted(glob.glob(os.path.join(results, "[acdef]_bilm_*.json"))):
    with open(path, encoding="utf-8") as f:
      env = json.load(f).get("env")
    if env:
      if not env.get("bilm_commit") and env.get("bilm_path"):
        env["bilm_commit"] = _checkout_commit(env["bilm_path"])
      return env
  for path in sorted(glob.glob(os.path.join(results, "[a-f]_elmo_*.json"))):
    with open(path, encoding="utf-8") as f:
      version = json.load(f).get("tf")
    if version:
      return {"tensorflow": version}
  return {}


# Stages that time something (prep and smoke do not).
_MEASURING_STAGES = frozenset({"matmul", "a", "b", "c", "d", "e", "f", "g"})


def summarize(results: str) -> dict:
  rows = []
  for key, work, unit, bilm_spec, elmo_spec in ROWS:
    bilm, bilm_files = read_side(results, bilm_spec)
    elmo, elmo_files = read_side(results, elmo_spec)
    rows.append({
        "key": key, "work": work, "unit": unit,
        "bilm_tf_has_it": bilm_spec is not None,
        "bilm_tf": bilm, "elmo_tf": elmo,
        "bilm_tf_range": value_range(bilm) if bilm_spec else None,
        "elmo_tf_range": value_range(elmo),
        "ratio_elmo_tf_over_bilm_tf": ratio_range(bilm, elmo),
        "files": bilm_files + elmo_files,
    })
  own_ratios = []
  for key, what, numerator_spec, denominator_spec in OWN_RATIOS:
    numerator, numerator_files = read_side(results, numerator_spec)
    denominator, denominator_files = read_side(results, denominator_spec)
    own_ratios.append({
        "key": key, "what": what,
        "numerator": numerator, "denominator": denominator,
        "ratio": ratio_range(denominator, numerator),
        "files": numerator_files + denominator_files,
    })
  sitting_path = os.path.join(results, "sitting.json")
  sittings = []
  if os.path.exists(sitting_path):
    with open(sitting_path, encoding="utf-8") as f:
      sittings = json.load(f).get("sittings", [])
  env = read_env(results)
  # The sittings that measured (a results folder may hold a smoke run too).
  measured = [s for s in sittings
              if set(s["stages"]) & _MEASURING_STAGES] or sittings
  dates = sorted({s["start"][:10] for s in measured}) or [
      datetime.date.today().isoformat()]
  return {
      "benchmark": "side_by_side",
      "date": dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}",
      "summarized": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "machine": {"cpu_model": machine.cpu_model(),
                  "cpu_count": os.cpu_count(),
                  "platform": platform.platform(),
                  "tensorflow": env.get("tensorflow"),
                  "python": env.get("python")},
      "bilm_tf": {"commit": env.get("bilm_commit"),
                  "path": env.get("bilm_path"),
                  "patch": "peer-harness/bilm-tf-tf2.patch"},
      "results_dir": os.path.abspath(results),
      "sittings": sittings,
      "rows": rows,
      "own_ratios": own_ratios,
      "matmul_gflops": read_matmul(results),
      "commands": read_commands(results),
  }


def markdown(summary: dict) -> str:
  lines = ["| work | bilm-tf | elmo_tf | ratio |", "|---|---|---|---|"]
  for row in summary["rows"]:
    if row["bilm_tf_has_it"]:
      bilm = format_range(row["bilm_tf_range"])
      ratio = format_range(row["ratio_elmo_tf_over_bilm_tf"],
                           fmt=lambda v: f"{v:.2f}", suffix="x")
    else:
      bilm = ratio = "-"
    lines.append(f"| {row['work']}: {row['unit']} | {bilm} | "
                 f"{format_range(row['elmo_tf_range'])} | {ratio} |")
  lines.append("")
  for own in summary.get("own_ratios", ()):
    if own["ratio"]:
      lines.append(f"{own['what']}: " + format_range(
          own["ratio"], fmt=lambda v: f"{v:.2f}", suffix="x") + ".")
  machine_info = summary["machine"]
  lines.append(f"Machine: {machine_info['cpu_model']}, "
               f"{machine_info['cpu_count']} CPUs, TensorFlow "
               f"{machine_info['tensorflow']}; date {summary['date']}; "
               f"bilm-tf {summary['bilm_tf']['commit'] or '7cffee2'} "
               "+ bilm-tf-tf2.patch.")
  matmul = summary["matmul_gflops"]
  if matmul:
    lines.append("Matmul GFLOP/s (2048^2): " + ", ".join(
        f"{dtype} {format_range(value_range(values))}"
        for dtype, values in matmul.items()) + ".")
  sittings = [s for s in summary["sittings"]
              if set(s["stages"]) & _MEASURING_STAGES]
  for last in sittings:
    k_large = (f", K_LARGE={last['K_LARGE']} in e and f"
               if set(last["stages"]) & {"e", "f"} else "")
    lines.append(f"Command: `{last['command']}` (K={last['K']} timed steps"
                 f"{k_large}, "
                 f"{last['REPS']} runs per configuration, stages "
                 f"{' '.join(last['stages'])}, intra-op threads "
                 f"{last['threads'] or _DEFAULT_THREADS}; elmo_tf "
                 f"{_code_label(last)}).")
  lines.append("Every run's command: side_by_side.json (`commands`). Ratio: "
               "elmo_tf / bilm-tf, least to most favourable pairing of runs.")
  return "\n".join(lines)


def _code_label(sitting: dict) -> str:
  """"at <commit>" (and whether files differed) from a sitting's record."""
  commit = sitting.get("elmo_tf_commit")
  if not commit:
    return "commit not recorded"
  changes = (" plus uncommitted changes"
             if sitting.get("elmo_tf_uncommitted_changes") else "")
  return f"at commit {commit[:7]}{changes}"


# TF_NUM_INTRAOP_THREADS unset: each side's own default. elmo_tf's trainer
# sizes the pool itself (TrainConfig.intra_op_threads, -1: half the cores);
# its embedding timer loads the SavedModel as any TensorFlow program does.
_DEFAULT_THREADS = ("each side's default: bilm-tf and elmo_tf's embedding "
                    "TensorFlow's (every core), elmo_tf's training half the "
                    "cores")


def main(argv, args: types.SimpleNamespace):
  del argv
  summary = summarize(args.results.value)
  output = args.output.value
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "w", encoding="utf-8") as f:
    json.dump(summary, f, indent=1)
    f.write("\n")
  print(markdown(summary))
  print(f"\nwrote {output}")


if __name__ == "__main__":
  app.run(functools.partial(main, args=define_flags()))
