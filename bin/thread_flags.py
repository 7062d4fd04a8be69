"""--intra_op_threads, for the programs that run a model (embed, score,
polysemy, evaluate): defined here once, so that programs imported into one
process do not define it twice. bin/train sets it through the run's config
(TrainConfig.intra_op_threads) instead."""

from absl import app
from absl import flags

from elmo_tf import runtime

INTRA_OP_THREADS = flags.DEFINE_integer(
    "intra_op_threads", runtime.AUTO, "Threads per TensorFlow op: -1 half "
    "the cores (the two directions run side by side; on 2 cores one thread "
    "embeds 20-35% more sentences/s than TensorFlow's default), 0 "
    "TensorFlow's default (every core), n > 0 n threads.")


def configure() -> None:
  """Sizes TensorFlow's intra-op pool from --intra_op_threads: call first in
  main, before TensorFlow runs anything."""
  try:
    runtime.configure_threads(INTRA_OP_THREADS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from e
