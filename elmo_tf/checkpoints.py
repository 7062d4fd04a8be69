"""The training directory (`model_dir`): its layout, checks and checkpoints.

A run written by `elmo_tf.trainer` holds:

  config.json          the full ExperimentConfig (vocab_size filled in)
  vocab.txt            the vocabulary the model was trained with
  ckpt-N.index, ckpt-N.data-*   tf.train.Checkpoint: model and optimizer
                       variables keyed by path, and the step
  checkpoint           tf.train.CheckpointManager's list of the checkpoints
  train/, validation/  TensorBoard event files
  .lock                while a trainer runs: its pid and host (`RunDirLock`)

This module is the one place that knows those names, builds a model of a
config, keys variables by path (checkpoints and SavedModels both use these
keys), picks the newest checkpoint that can be read (`newest_intact_checkpoint`,
skipping damaged ones) and loads a trained model back. It imports no data or
training code, so inference programs (`elmo_tf.export`, `bin/embed`, ...) can
read a run.
"""

import atexit
import datetime
import json
import os
import re
import socket
import sys
import threading
import time
from typing import Any

from absl import logging
import keras
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.models import bilm as bilm_lib

CONFIG_FILENAME = "config.json"
VOCAB_FILENAME = "vocab.txt"
TRAIN_LOGDIR = "train"
VALIDATION_LOGDIR = "validation"
LOCK_FILENAME = ".lock"
# tf.train.CheckpointManager's default checkpoint_name: checkpoints are
# <model_dir>/ckpt-<step>.
CHECKPOINT_NAME = "ckpt"


class TrainingError(RuntimeError):
  """Training or loading a run cannot go on (non-finite loss, incompatible
  resume, a directory that is not a run...)."""


def config_path(model_dir: str) -> str:
  return os.path.join(model_dir, CONFIG_FILENAME)


def vocab_path(model_dir: str) -> str:
  return os.path.join(model_dir, VOCAB_FILENAME)


def checkpoint_list_path(model_dir: str) -> str:
  """The CheckpointManager's list of the run's checkpoints (TensorFlow's
  `checkpoint` state file, written after each completed save)."""
  return os.path.join(model_dir, "checkpoint")


def checkpoint_step(path: str) -> int:
  """The step N of a checkpoint prefix `.../ckpt-N`."""
  return int(path.rsplit("-", 1)[-1])


class RunDirInUse(TrainingError):
  """Another live trainer holds the run directory's lock."""


def set_precision(mixed_precision: str) -> None:
  """Sets the Keras global dtype policy (`TrainConfig.mixed_precision`)."""
  if mixed_precision not in config_lib.MIXED_PRECISIONS:
    raise ValueError(f"Unknown mixed_precision {mixed_precision!r}; choose "
                     f"one of {list(config_lib.MIXED_PRECISIONS)}.")
  keras.mixed_precision.set_global_policy(mixed_precision)


# === Weights by path ===


def weights_by_path(obj) -> dict[str, tf.Variable]:
  """{path of the variable below `obj`: variable} for a Keras layer, model
  or optimizer.

  The key is the variable's path after `obj`'s own name, e.g.
  `backbone/forward_lstm_0/kernel` for the `BidirectionalLM`,
  `forward_lstm_0/kernel` for its `ElmoBackbone` (wherever that backbone
  sits: `bidirectional_lm/backbone/...` in training,
  `elmo_embedding/backbone/...` in a Keras model), `iteration` for an
  optimizer (whatever its process-dependent name, `adam` or `adam_3`).
  Every layer has an explicit name, so the keys are fixed: weights copy
  between any two objects of one config, and checkpoints are keyed by
  them, not by Python attribute structure (Keras 3 keeps sub-layers held in
  lists out of TensorFlow's object graph, so `tf.train.Checkpoint(model=m)`
  would silently skip them).

  Dropout RNG states are left out: they carry process-dependent auto names
  (a resumed run draws other dropout masks; runs without dropout resume
  bit-exactly).
  """
  result = {}
  for variable in obj.variables:
    if variable.path.endswith("seed_generator_state"):
      continue
    parts = variable.path.split("/")
    if obj.name not in parts:
      raise ValueError(f"Variable {variable.path!r} does not lie below "
                       f"{obj.name!r}.")
    # The last component equal to the object's name: sub-layer names
    # (char_encoder, forward_lstm_0, ...) never equal it.
    start = len(parts) - 1 - parts[::-1].index(obj.name)
    key = "/".join(parts[start + 1:])
    if key in result:
      raise ValueError(f"Two variables share the path {key!r} below "
                       f"{obj.name!r}.")
    result[key] = variable
  return result


def copy_weights(source: dict, target: dict, what: str = "weights") -> None:
  """Assigns `source[k]` to `target[k]` for every key; keys must match."""
  if sorted(source) != sorted(target):
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    raise ValueError(f"Cannot copy {what}: missing {missing}, unexpected "
                     f"{unexpected}.")
  for key, variable in target.items():
    value = source[key]
    if tuple(value.shape) != tuple(variable.shape):
      raise ValueError(f"Cannot copy {what}: {key} has shape {value.shape}, "
                       f"expected {variable.shape}.")
    variable.assign(value)


def model_checkpoint(model, **extra) -> tf.train.Checkpoint:
  """A checkpoint of the model's variables (plus `extra` trackables)."""
  return tf.train.Checkpoint(model_variables=weights_by_path(model), **extra)


# === Building and loading ===


def build_model(model_config: config_lib.ModelConfig) -> bilm_lib.BidirectionalLM:
  """Builds the biLM and creates its variables with a one-token batch."""
  model = bilm_lib.BidirectionalLM(model_config)
  max_chars = model_config.char_cnn.max_characters_per_token
  dummy = {
      "token_ids": tf.ones((1, 2), tf.int32),
      "char_ids": tf.ones((1, 2, max_chars), tf.int32),
      "mask": tf.ones((1, 2), tf.bool),
      "forward_targets": tf.ones((1, 2), tf.int32),
      "backward_targets": tf.ones((1, 2), tf.int32),
  }
  model(dummy, training=False)
  return model


def read_run(model_dir: str) -> tuple[config_lib.ExperimentConfig,
                                      vocab_lib.Vocabulary]:
  """(config, vocabulary) of a run directory."""
  path = config_path(model_dir)
  if not tf.io.gfile.exists(path):
    raise TrainingError(f"No {CONFIG_FILENAME} in {model_dir}: is this a "
                        "directory written by bin/train?")
  config = config_lib.ExperimentConfig.load(path)
  vocab = vocab_lib.Vocabulary.load(vocab_path(model_dir))
  return config, vocab


def load_trained_model(model_dir: str):
  """(config, vocabulary, BidirectionalLM, checkpoint path) of the newest
  intact checkpoint in `model_dir` (`newest_intact_checkpoint`: damaged
  newer ones are skipped with a warning naming them).

  Sets the run's Keras dtype policy (its `mixed_precision`), under which the
  model is built; callers that need another policy restore theirs.
  """
  config, vocab = read_run(model_dir)
  latest, _ = newest_intact_checkpoint(model_dir)
  if latest is None:
    raise TrainingError(f"No checkpoint in {model_dir}.")
  set_precision(config.train.mixed_precision)
  model = build_model(config.model)
  # Optimizer slots, step and data position are in the checkpoint too and
  # are not needed here; every model variable must be restored.
  status = model_checkpoint(model).read(latest)
  status.expect_partial().assert_existing_objects_matched()
  return config, vocab, model, latest


def check_or_write_model_dir(config: config_lib.ExperimentConfig,
                             model_dir: str,
                             vocab: vocab_lib.Vocabulary) -> None:
  """Writes config.json and vocab.txt, or checks a resumed run matches them.

  Resuming with another vocabulary or another model config is an error that
  says what differs, rather than a shape mismatch deep inside restore.
  """
  tf.io.gfile.makedirs(model_dir)
  config_file = config_path(model_dir)
  vocab_file = vocab_path(model_dir)
  if tf.io.gfile.exists(vocab_file):
    saved = vocab_lib.Vocabulary.load(vocab_file)
    if saved.tokens != vocab.tokens:
      raise TrainingError(
          f"{model_dir} holds a model trained with another vocabulary "
          f"({saved.size} tokens in {vocab_file}, this corpus gives "
          f"{vocab.size}). Use a new --model_dir, or the corpus and "
          "vocabulary options of the original run.")
  if tf.io.gfile.exists(config_file):
    saved_config = config_lib.ExperimentConfig.load(config_file)
    if saved_config.model != config.model:
      diffs = _dict_diff(saved_config.model.to_dict(), config.model.to_dict())
      raise TrainingError(
          f"{model_dir} holds a checkpoint of a different model; differing "
          f"model settings (saved -> requested): {diffs}. Use a new "
          "--model_dir or the original settings.")
  config.save(config_file)
  if not tf.io.gfile.exists(vocab_file):
    vocab.save(vocab_file)


def _dict_diff(old: dict, new: dict, prefix: str = "") -> dict[str, Any]:
  diffs = {}
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      diffs.update(_dict_diff(a, b, prefix + key + "."))
    elif a != b:
      diffs[prefix + key] = (a, b)
  return diffs


# === Damaged checkpoints ===


def checkpoint_candidates(model_dir: str) -> list[str]:
  """Checkpoint prefixes in `model_dir`, the highest step first.

  Those the `checkpoint` state file lists and every `ckpt-N.index` on disk
  (a state file that is itself damaged is skipped with a warning).
  """
  prefixes = set()
  try:
    state = tf.train.get_checkpoint_state(model_dir)
  except Exception as e:  # A damaged text proto: ParseError, OpError...
    logging.warning("Cannot read the checkpoint list %s (%s); looking for "
                    "checkpoint files instead.",
                    checkpoint_list_path(model_dir), _one_line(e))
    state = None
  if state is not None:
    prefixes.update(normalize_path(p)
                    for p in state.all_model_checkpoint_paths)
    if state.model_checkpoint_path:
      prefixes.add(normalize_path(state.model_checkpoint_path))
  pattern = os.path.join(model_dir, f"{CHECKPOINT_NAME}-*.index")
  for index in tf.io.gfile.glob(pattern):
    prefix = index[:-len(".index")]
    if re.fullmatch(r"\d+", prefix.rsplit("-", 1)[-1]):
      prefixes.add(normalize_path(prefix))

  def step(prefix):
    try:
      return checkpoint_step(prefix)
    except ValueError:
      return -1

  return sorted(prefixes, key=lambda p: (step(p), p), reverse=True)


def checkpoint_problem(prefix: str) -> str | None:
  """None if every tensor of checkpoint `prefix` can be read, else what is
  wrong with it, naming the damaged file.

  Reads the index (a truncated or damaged one is "not an sstable") and then
  every tensor, as a restore would: a truncated data file (half, empty, a
  byte short) fails there with "Read less bytes than requested", a damaged
  one with a checksum mismatch. This costs one extra read of the
  checkpoint per load, small beside building the model.
  """
  index = prefix + ".index"
  if not tf.io.gfile.exists(index):
    return f"{index} is missing"
  try:
    reader = tf.train.load_checkpoint(prefix)
  except Exception as e:  # DataLossError, NotFoundError, ...
    return (f"{index} is damaged ({_one_line(e)}; "
            f"{_size(index)})")
  data_files = sorted(tf.io.gfile.glob(prefix + ".data-*"))
  if not data_files:
    return f"{prefix}.data-00000-of-00001 is missing"
  try:
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  except Exception as e:  # IndexError (short read), DataLossError (CRC)...
    if len(data_files) == 1:
      what = f"{data_files[0]} is damaged or truncated"
    else:
      what = f"one of {data_files} is damaged or truncated"
    sizes = ", ".join(_size(f) for f in data_files)
    return f"{what} ({_one_line(e)}; {sizes})"
  return None


def newest_intact_checkpoint(model_dir: str) -> tuple[str | None, list[str]]:
  """The newest checkpoint of `model_dir` that can be read, and the newer
  damaged ones skipped for it (each named in a warning).

  Returns (None, []) when there is no checkpoint at all, and (None,
  [that one]) when the only one is a first save that a crash interrupted
  (no checkpoint list yet: the CheckpointManager writes it once a save is
  complete), so that the re-run starts from step 0 as if the crash had come
  a moment earlier, and saves that step over it. Raises `TrainingError`
  naming the damaged files when there are other checkpoints and none can be
  read: starting afresh over them must be a decision, not a fallback. Used
  by every reader of a run: `load_trained_model` (bin/evaluate, bin/export)
  and the trainer's resume.
  """
  skipped, problems = [], []
  for prefix in checkpoint_candidates(model_dir):
    problem = checkpoint_problem(prefix)
    if problem is None:
      if skipped:
        logging.warning(
            "Skipped %d damaged checkpoint(s) in %s: %s. Using %s, the "
            "newest intact one.", len(skipped), model_dir,
            "; ".join(problems), prefix)
      return prefix, skipped
    skipped.append(prefix)
    problems.append(problem)
  checkpoint_list = checkpoint_list_path(model_dir)
  if len(skipped) == 1 and not tf.io.gfile.exists(checkpoint_list):
    logging.warning(
        "%s. It is a first save that was interrupted (%s lists no "
        "checkpoint yet): starting from step 0.", problems[0], checkpoint_list)
    return None, skipped
  if skipped:
    raise TrainingError(
        f"No intact checkpoint in {model_dir}: {'; '.join(problems)}. Move "
        "the damaged files away (or use a new --model_dir) to start afresh.")
  return None, []


def normalize_path(path: str) -> str:
  """`path` without redundant separators (`a//b`, `a/./b`), so that one
  checkpoint named two ways compares equal; URLs (gs://...) unchanged."""
  return path if "://" in path else os.path.normpath(path)


def _one_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return text[0] if text else type(error).__name__


def _size(path: str) -> str:
  try:
    return f"{path} has {tf.io.gfile.stat(path).length} bytes"
  except Exception:  # pylint: disable=broad-except
    return f"{path} cannot be read"


# === One trainer per run directory ===

# Lock files this process holds: {path: number of holders in this process}.
_HELD_LOCKS: dict[str, int] = {}
_HELD_LOCKS_GUARD = threading.Lock()


class RunDirLock:
  """`<directory>/.lock`: one trainer at a time writes a run directory.

  The file is created atomically (O_CREAT | O_EXCL) and holds the holder's
  pid, host, process start time and command line. A second trainer finds it
  and refuses (`RunDirInUse`, naming the directory and the holder). A lock
  left by a trainer that died without releasing it (SIGKILL, power loss) is
  taken over with a warning when its holder is provably gone: same host and
  the pid is not running (or is a zombie, or is a later process that reused
  the pid). A lock from another host is never taken over: delete the file
  once that trainer is gone. Trainers in one process may share a lock (a
  counter): the file goes when the last one releases it, or at exit.

  Paths with a URL scheme (gs://...) are not locked (no atomic create
  there); a message says so.

  Example:
    with RunDirLock("/tmp/run"):
      ...  # write checkpoints
  """

  def __init__(self, directory: str):
    self.directory = directory
    self.path = os.path.join(directory, LOCK_FILENAME)
    self._held = False
    self._created_directory = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc_info):
    self.release()

  def acquire(self) -> None:
    """Takes the lock or raises `RunDirInUse`."""
    if self._held:
      return
    if "://" in self.directory:
      logging.info("Not locking %s: lock files need a local file system; "
                   "run one trainer at a time there.", self.directory)
      return
    if not os.path.isdir(self.directory):
      os.makedirs(self.directory, exist_ok=True)
      self._created_directory = True
    key = os.path.realpath(self.path)
    with _HELD_LOCKS_GUARD:
      if _HELD_LOCKS.get(key):
        _HELD_LOCKS[key] += 1
        self._held = True
        return
      for _ in range(10):
        if self._create():
          break
        holder = _read_holder(self.path)
        if holder is None:  # Released meanwhile: try again.
          continue
        if not _holder_is_gone(holder):
          raise RunDirInUse(
              f"{self.directory} is in use by another trainer: "
              f"{_describe_holder(holder)} (lock file {self.path}). Wait "
              "for it to finish or stop it, or use another --model_dir; if "
              "that trainer is gone (e.g. it ran on another machine), "
              f"delete {self.path}.")
        if self._take_over(holder):
          logging.warning(
              "Took over the lock of %s from a trainer that is gone: %s.",
              self.directory, _describe_holder(holder))
      else:
        raise RunDirInUse(f"Could not lock {self.directory}: {self.path} "
                          "keeps changing.")
      _HELD_LOCKS[key] = 1
      self._held = True

  def release(self) -> None:
    """Releases the lock (removing the file when this process is done)."""
    if not self._held:
      return
    self._held = False
    key = os.path.realpath(self.path)
    with _HELD_LOCKS_GUARD:
      _HELD_LOCKS[key] -= 1
      if _HELD_LOCKS[key] > 0:
        return
      del _HELD_LOCKS[key]
      _remove_own_lock(key)
    if self._created_directory:
      # A run that failed before writing anything leaves no empty directory.
      try:
        os.rmdir(self.directory)
      except OSError:
        pass  # Not empty: the run's.

  def _create(self) -> bool:
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(_this_holder(), f)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    return True

  def _take_over(self, holder: dict) -> bool:
    """Removes a dead holder's lock file; False if it changed meanwhile."""
    # Renamed first, then checked: of two trainers taking over at once,
    # only one moves the dead holder's file, and neither deletes the other's
    # new lock.
    aside = f"{self.path}.stale-{os.getpid()}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    moved = _read_holder(aside)
    if moved != holder:
      # Another trainer's fresh lock: put it back.
      try:
        os.link(aside, self.path)
      except OSError:
        pass
      os.remove(aside)
      return False
    os.remove(aside)
    return True


def _this_holder() -> dict[str, Any]:
  return {
      "pid": os.getpid(),
      "host": socket.gethostname(),
      "start_ticks": _process_start_ticks(os.getpid()),
      "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"),
      "command": " ".join(sys.argv)[:300],
  }


def _read_holder(path: str) -> dict[str, Any] | None:
  """The holder written in a lock file; None if the file is gone.

  A file being written (empty for an instant) is read again; one that stays
  unreadable is reported as such.
  """
  for _ in range(20):
    try:
      with open(path, encoding="utf-8") as f:
        text = f.read()
    except FileNotFoundError:
      return None
    try:
      holder = json.loads(text)
      if isinstance(holder, dict) and isinstance(holder.get("pid"), int):
        return holder
    except json.JSONDecodeError:
      pass
    time.sleep(0.05)
  return {"pid": -1, "host": "?", "unreadable": text[:100]}


def _describe_holder(holder: dict[str, Any]) -> str:
  if "unreadable" in holder:
    return f"unreadable lock contents {holder['unreadable']!r}"
  text = f"pid {holder['pid']} on host {holder.get('host', '?')}"
  if holder.get("started"):
    text += f", started {holder['started']}"
  if holder.get("command"):
    text += f" ({holder['command']})"
  return text


def _holder_is_gone(holder: dict[str, Any]) -> bool:
  if holder.get("host") != socket.gethostname() or holder["pid"] <= 0:
    return False
  pid = holder["pid"]
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  except PermissionError:
    pass  # Alive, another user's.
  if not os.path.isdir("/proc/self"):
    return False  # No /proc: a running pid counts as the holder.
  start = _process_start_ticks(pid)
  if start is None:
    return True  # A zombie (killed, not yet reaped), or exited just now.
  # A later process that got the same pid has another start time.
  recorded = holder.get("start_ticks")
  return recorded is not None and start != recorded


def _process_start_ticks(pid: int) -> int | None:
  """The start time of a running process (Linux /proc), None for a zombie
  or where /proc is unavailable."""
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      fields = f.read().rsplit(")", 1)[1].split()
  except OSError:
    return None
  if fields[0] == "Z":  # State: a zombie is dead.
    return None
  return int(fields[19])  # Field 22 of stat(5), counted after the name.


def _remove_own_lock(path: str) -> None:
  holder = _read_holder(path)
  if holder and holder.get("pid") == os.getpid() and (
      holder.get("host") == socket.gethostname()):
    try:
      os.remove(path)
    except FileNotFoundError:
      pass


@atexit.register
def _release_all_locks() -> None:
  """Locks of trainers never closed (a library user's) go at exit."""
  with _HELD_LOCKS_GUARD:
    for path in list(_HELD_LOCKS):
      _remove_own_lock(path)
    _HELD_LOCKS.clear()
