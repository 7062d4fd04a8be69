"""TensorFlow's intra-op thread pool for elmo_tf's programs.

A biLM's two directions are independent branches of the graph, so
TensorFlow's inter-op pool already runs them side by side, one core each
when there are two. Splitting each of their small ops over every core as
well (TensorFlow's default intra-op pool) then costs more in hand-offs than
it gains: on the 2-core benchmark machine one intra-op thread embedded
20-35% more sentences per second and trained the 256/64 size 8-9% faster
(BENCHMARKS.md, "Threads"). `configure_threads(AUTO)` gives each op half the
cores (at least one); training (`TrainConfig.intra_op_threads`) and the
programs in bin/ (`--intra_op_threads`) call it before TensorFlow starts.

  from elmo_tf import runtime
  runtime.configure_threads(runtime.AUTO)  # before any TensorFlow op runs

The pool size is fixed once TensorFlow's runtime starts: called later,
`configure_threads` leaves it and logs why. The environment variable
TF_NUM_INTRAOP_THREADS, when set, wins over both.

`warn_if_bfloat16_is_emulated` (called by the trainer) says when
`mixed_bfloat16` is asked for on a CPU that has no bfloat16 matmul
instructions, where it trains slower than float32.
"""

import os

from absl import logging

# Half the cores this process may run on, at least one. (0 is TensorFlow's
# own choice, every core.)
AUTO = -1
_ENV = "TF_NUM_INTRAOP_THREADS"


def available_cores() -> int:
  """Cores this process may run on (its CPU affinity, else the count)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def intra_op_threads_for(requested: int) -> int:
  """The intra-op pool size `requested` asks for: AUTO (-1) -> half the
  cores (at least 1), 0 -> 0 (TensorFlow's default), n > 0 -> n.

  Raises ValueError for other negative values.
  """
  if requested == AUTO:
    return max(1, available_cores() // 2)
  if requested < 0:
    raise ValueError(f"intra_op_threads={requested}: give -1 (half the "
                     "cores), 0 (TensorFlow's default: every core) or a "
                     "number of threads.")
  return requested


def configure_threads(requested: int = AUTO) -> int:
  """Sizes TensorFlow's intra-op pool as `requested` says (see
  `intra_op_threads_for`), unless TF_NUM_INTRAOP_THREADS is set or
  TensorFlow's runtime has already started.

  Returns the pool size TensorFlow uses (0: its default).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  threads = intra_op_threads_for(requested)
  if os.environ.get(_ENV, "").strip().isdigit():
    return int(os.environ[_ENV])
  current = tf.config.threading.get_intra_op_parallelism_threads()
  if threads == current:
    return current
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
  except RuntimeError:
    logging.log_first_n(
        logging.WARNING,
        "TensorFlow's runtime has already started: its intra-op pool stays "
        "at %s threads, not %d. Set %s=%d, or configure threads before the "
        "first TensorFlow op.", 1, current or "default", threads, _ENV,
        threads)
    return current
  logging.info("TensorFlow's intra-op pool: %d thread(s) per op "
               "(intra_op_threads=%d).", threads, requested)
  return threads


# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matmul instructions.
_BFLOAT16_MATMUL_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_bfloat16_matmul(cpuinfo_path: str = "/proc/cpuinfo"):
  """Whether the CPU multiplies bfloat16 natively (AMX or AVX512_BF16).

  Without either, oneDNN converts bfloat16 to float32 around every matmul
  and `mixed_bfloat16` runs slower than float32 (BENCHMARKS.md: 0.41-0.45x
  for the `small` size on an Intel Xeon with AVX-512 but neither). None when
  the flags cannot be read (not Linux).
  """
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.startswith("flags"):
          flags = set(line.split(":", 1)[1].split())
          return any(flag in flags for flag in _BFLOAT16_MATMUL_FLAGS)
  except OSError:
    return None
  return None


def warn_if_bfloat16_is_emulated(mixed_precision: str,
                                 cpuinfo_path: str = "/proc/cpuinfo") -> bool:
  """Logs a warning when `mixed_bfloat16` is asked for on a CPU without
  bfloat16 matmul instructions; returns whether it warned."""
  if mixed_precision != "mixed_bfloat16":
    return False
  if cpu_has_bfloat16_matmul(cpuinfo_path) is not False:
    return False
  logging.warning(
      "mixed_precision='mixed_bfloat16' on a CPU without bfloat16 matmul "
      "instructions (neither %s in %s): TensorFlow emulates them and "
      "training runs slower than in float32 (about 0.4x on the benchmark "
      "machine, BENCHMARKS.md). Use mixed_precision='float32' here.",
      " nor ".join(_BFLOAT16_MATMUL_FLAGS), cpuinfo_path)
  return True
