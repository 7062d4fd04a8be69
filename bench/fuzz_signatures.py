"""10,000 fuzzed strings through both signatures of the shipped models.

  .venv/bin/python -m bench.fuzz_signatures [--cases=10000]

Checks what tests/signature_fuzz.py describes (no crash, finite outputs,
training and export tokenizers agree, `tokens` == `default`) on
savedmodels/ptb and savedmodels/peoples_daily_chars; writes
bench/results/fuzz_signatures.json.
"""

import datetime
import json
import os
import time

from absl import app
from absl import flags

_CASES = flags.DEFINE_integer("cases", 10000, "Fuzzed strings per model.")
_OUTPUT = flags.DEFINE_string("output", "bench/results/fuzz_signatures.json",
                              "Where to write the results.")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from elmo_tf import export as export_lib  # pylint: disable=g-import-not-at-top
  from elmo_tf import tokenizers as tokenizers_lib  # pylint: disable=g-import-not-at-top
  from tests import signature_fuzz  # pylint: disable=g-import-not-at-top
  results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds"), "cases": _CASES.value, "models": {}}
  strings = signature_fuzz.fuzz_cases(_CASES.value, seed=20261202)
  for name in ("ptb", "peoples_daily_chars"):
    path = os.path.join(REPO, "savedmodels", name)
    _, info = export_lib.read_export(path)
    start = time.perf_counter()
    report = signature_fuzz.check_signatures(
        tf.saved_model.load(path),
        tokenizers_lib.get_tokenizer(info["tokenization"]), strings,
        batch_size=64)
    report["seconds"] = round(time.perf_counter() - start, 1)
    results["models"][name] = report
    print(name, report, flush=True)
  with open(_OUTPUT.value, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
    f.write("\n")


if __name__ == "__main__":
  app.run(main)
