"""tf.distribute set-up of a training run (`TrainConfig.distribution`)."""

import os

import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib


def make_strategy(distribution: str) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy named by `TrainConfig.distribution`."""
  if distribution == "default":
    return tf.distribute.get_strategy()
  if distribution == "mirrored":
    return tf.distribute.MirroredStrategy()
  if distribution == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise checkpoints_lib.TrainingError(
          "distribution=multi_worker needs the TF_CONFIG environment variable "
          "describing the cluster and this worker's task.")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"Unknown distribution {distribution!r}; choose one of "
                   f"{list(config_lib.DISTRIBUTIONS)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0)


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Non-chief workers write checkpoints to a private temporary directory."""
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, "workers",
                      f"{resolver.task_type}_{resolver.task_id}")


