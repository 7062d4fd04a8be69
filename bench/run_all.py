"""Runs every benchmark (`make bench`); each writes bench/results/<name>.json.

Each benchmark runs in its own process so that its timings and peak memory
are its own.
"""

import subprocess
import sys

BENCHMARKS = ("bench.vocab_bench", "bench.train_bench", "bench.embed_bench")


def main() -> int:
  failed = []
  for module in BENCHMARKS:
    print(f"== {module}", flush=True)
    if subprocess.call([sys.executable, "-m", module] + []) != 0:
      failed.append(module)
  if failed:
    print(f"Failed: {', '.join(failed)}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
