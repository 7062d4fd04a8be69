"""Runs every benchmark (`make bench`); each writes bench/results/<name>.json.

Each benchmark runs in its own process so that its timings and peak memory
are its own.
"""

import subprocess
import sys

BENCHMARKS = (
    ("bench.vocab_bench",),
    # 10,000 fuzzed strings: the core-op tokenizer against tensorflow-text's,
    # and tokenization speed.
    ("bench.fuzz_tokenizers",),
    # 10,000 fuzzed strings through both signatures of the shipped models.
    ("bench.fuzz_signatures",),
    ("bench.train_bench",),
    # Where one training step's time goes (cpu_small, 5 profiled steps):
    # bench/results/profile_cpu_small.json, trace in runs/profile/.
    ("bench.profile_step",),
    # The fused LSTMP kernel's forward and gradient op alone, per LSTM:
    # bench/results/fused_lstmp.json.
    ("bench.fused_lstmp_bench",),
    ("bench.embed_bench",),
    # Importing a published-size (`small`) options.json + hdf5 pair.
    ("bench.import_hdf5_bench",),
    # Batch-1 latency is lower with small ops run inline.
    ("bench.embed_bench", "--intra_op_threads=1",
     "--output=bench/results/embed_intra1.json"),
    # Issue 12: sampled-softmax step time at 10k, 100k and 800k words
    # (cpu_small, 8192 negatives; synthetic Zipf corpora, one process per
    # size): bench/results/softmax_scale.json.
    ("bench.softmax_scale_bench",),
    # Issue 12: 2 MultiWorkerMirroredStrategy workers on 127.0.0.1 against 1
    # (cpu_fast); on one small machine it measures overhead, not scaling.
    ("bench.multiworker_bench",),
)


def main() -> int:
  failed = []
  for module, *args in BENCHMARKS:
    print(f"== {module} {' '.join(args)}", flush=True)
    if subprocess.call([sys.executable, "-m", module] + args) != 0:
      failed.append(" ".join([module] + args))
  if failed:
    print(f"Failed: {', '.join(failed)}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
