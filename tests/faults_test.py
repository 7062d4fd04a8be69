"""Faults (issue 13): signals, one trainer per directory, divergence,
damaged checkpoints, `tokens` shape errors, leftovers and one-line errors.

One toy corpus is prepared and one tiny run of 30 steps (checkpoints at 10,
20, 30) is trained for the class; tests copy it before damaging it. Programs
are run as `python -m bin.NAME` subprocesses where the behaviour is the
process's (exit status, signals, the printed error).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from concurrent import futures

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import elmo_embedding as elmo_embedding_lib
from elmo_tf import evaluation as evaluation_lib
from elmo_tf import export as export_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf import trainer as trainer_lib
from elmo_tf.models import elmo as elmo_lib
from tests import export_testutil
from tests import toy_corpus

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_FILE = "ckpt-30.data-00000-of-00001"
INDEX_FILE = "ckpt-30.index"


def tiny_config(corpus: str, **train_overrides) -> config_lib.ExperimentConfig:
  train = config_lib.TrainConfig(
      max_steps=30, log_every_steps=10, checkpoint_every_steps=10,
      eval_every_steps=0, eval_max_batches=2, seed=3, learning_rate=0.2)
  return config_lib.ExperimentConfig(
      model=config_lib.preset("tiny"),
      data=config_lib.DataConfig(corpus=corpus, batch_size=8,
                                 shuffle_buffer=200),
      train=train.replace(**train_overrides))


def run_program(module: str, *flags: str, timeout: float = 300,
                **popen) -> subprocess.Popen:
  """Starts `python -m <module> <flags>` with its output in a file."""
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
  log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
  process = subprocess.Popen(
      [sys.executable, "-m", module, *flags], cwd=REPO_ROOT, env=env,
      stdout=log, stderr=subprocess.STDOUT, text=True, **popen)
  process.log_path = log.name
  process.timeout = timeout
  return process


def output_of(process: subprocess.Popen) -> str:
  with open(process.log_path, encoding="utf-8", errors="replace") as f:
    return f.read()


def finish(process: subprocess.Popen) -> tuple[int, str]:
  try:
    process.wait(timeout=process.timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise AssertionError(f"{process.args} timed out:\n"
                         f"{output_of(process)[-3000:]}") from None
  return process.returncode, output_of(process)


def progress_step(output: str, total: int) -> int:
  """The last step the Keras progress bar printed (0 if none yet)."""
  steps = re.findall(rf"(\d+)/{total}\b", output)
  return int(steps[-1]) if steps else 0


def error_lines(output: str) -> list[str]:
  """absl ERROR lines (`E1202 12:00:00.000 ... file.py:12] message`)."""
  return [line for line in output.splitlines()
          if re.match(r"E\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.py:\d+\]", line)]


def dead_pid() -> int:
  process = subprocess.Popen(["true"])
  process.wait()
  return process.pid


class FaultsTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.tmp = tempfile.mkdtemp()
    paths = toy_corpus.write_corpus(os.path.join(cls.tmp, "text"),
                                    n_train=300, n_heldout=20)
    cls.cache = os.path.join(cls.tmp, "cache")
    cls.corpus = prepare_lib.prepare_cached(paths["spec"], "whitespace",
                                            cls.cache).directory
    cls.base = os.path.join(cls.tmp, "base")
    trainer_lib.train(tiny_config(cls.corpus), cls.base, cache_root=cls.cache)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)

  def copy_of_base(self, name: str) -> str:
    directory = os.path.join(self.tmp, name)
    shutil.copytree(self.base, directory)
    return directory

  def train_flags(self, model_dir: str, **flags) -> list[str]:
    values = {"corpus": self.corpus, "model_dir": model_dir,
              "preset": "tiny", "batch_size": 8, "log_every_steps": 1,
              "checkpoint_every_steps": 1000, "eval_every_steps": 0,
              "cache_dir": self.cache, "seed": 3, "export": "false"}
    values.update(flags)
    result = [f"--{key}={value}" for key, value in values.items()
              if key != "export"]
    result.append("--export" if values["export"] == "true" else "--noexport")
    return result + ["--set=train.eval_max_batches=2"]

  # === 1. Signals ===

  def test_sigterm_checkpoints_the_step_and_a_rerun_resumes_there(self):
    # A long run with a checkpoint interval it never reaches: without the
    # handler every step would be lost. A second trainer started on the same
    # directory meanwhile refuses (2. one trainer per model_dir).
    model_dir = os.path.join(self.tmp, "sigterm")
    first = run_program("bin.train", *self.train_flags(model_dir,
                                                       max_steps=5000))
    deadline = time.time() + 240
    while progress_step(output_of(first), 5000) < 3:
      self.assertIsNone(first.poll(), output_of(first)[-3000:])
      self.assertLess(time.time(), deadline, output_of(first)[-3000:])
      time.sleep(0.2)
    second = run_program("bin.train", *self.train_flags(model_dir,
                                                        max_steps=5000))
    code, output = finish(second)
    self.assertEqual(code, 1, output[-3000:])
    self.assertNotIn("Traceback", output)
    errors = error_lines(output)
    self.assertEqual(len(errors), 1, output[-3000:])
    self.assertIn(f"{model_dir} is in use by another trainer: pid "
                  f"{first.pid} on host {socket.gethostname()}", errors[0])
    self.assertIsNone(first.poll(), "the first trainer must go on")

    first.send_signal(signal.SIGTERM)
    code, output = finish(first)
    self.assertEqual(code, 143, output[-3000:])
    stopped = re.search(r"Stopped by SIGTERM after step (\d+); saved (\S+)\.",
                        output)
    self.assertIsNotNone(stopped, output[-3000:])
    step = int(stopped.group(1))
    self.assertGreaterEqual(step, 3)
    self.assertEqual(stopped.group(2), os.path.join(model_dir,
                                                    f"ckpt-{step}"))
    self.assertEqual(tf.train.latest_checkpoint(model_dir),
                     stopped.group(2))
    self.assertFalse(os.path.exists(os.path.join(model_dir, ".lock")))

    rerun = run_program("bin.train", *self.train_flags(
        model_dir, max_steps=step + 2))
    code, output = finish(rerun)
    self.assertEqual(code, 0, output[-3000:])
    self.assertIn(f"Resumed from {model_dir}/ckpt-{step} at step {step}.",
                  output)
    self.assertEqual(tf.train.latest_checkpoint(model_dir),
                     os.path.join(model_dir, f"ckpt-{step + 2}"))

  def test_sigint_stops_after_the_step_with_a_checkpoint(self):
    model_dir = self.copy_of_base("sigint")
    trainer = trainer_lib.make_trainer(tiny_config(self.corpus, max_steps=500),
                                       model_dir, cache_root=self.cache)
    step_once = trainer.train_step

    def step_then_ctrl_c(**kwargs):
      metrics = step_once(**kwargs)
      if trainer.current_step == 33:
        os.kill(os.getpid(), signal.SIGINT)  # Handled in this thread.
      return metrics

    trainer.train_step = step_then_ctrl_c
    handler = signal.getsignal(signal.SIGINT)
    with self.assertRaises(trainer_lib.Interrupted) as raised:
      trainer.train()
    trainer.close()
    self.assertEqual(raised.exception.step, 33)
    self.assertEqual(raised.exception.exit_code, 130)
    self.assertEqual(raised.exception.checkpoint,
                     os.path.join(model_dir, "ckpt-33"))
    # The handler is back (Ctrl-C is KeyboardInterrupt again).
    self.assertIs(signal.getsignal(signal.SIGINT), handler)
    with trainer_lib.make_trainer(tiny_config(self.corpus, max_steps=500),
                                  model_dir, cache_root=self.cache) as resumed:
      self.assertEqual(resumed.current_step, 33)

  def test_a_second_signal_stops_at_once(self):
    with trainer_lib._StopSignals() as signals:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.01)
      self.assertEqual(signals.received, signal.SIGTERM)
      with self.assertRaises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)

  # === 2. One trainer per model_dir ===

  def write_lock(self, directory: str, pid: int, host: str | None = None,
                 start_ticks: int | None = None) -> str:
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, ".lock")
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"pid": pid, "host": host or socket.gethostname(),
                 "start_ticks": start_ticks, "started": "earlier",
                 "command": "bin/train ..."}, f)
    return path

  def test_a_live_holder_is_named_and_a_dead_one_taken_over(self):
    directory = os.path.join(self.tmp, "locks")
    holder = subprocess.Popen(["sleep", "60"])
    try:
      path = self.write_lock(
          directory, holder.pid,
          start_ticks=checkpoints_lib._process_start_ticks(holder.pid))
      with self.assertRaisesRegex(
          checkpoints_lib.RunDirInUse,
          rf"{directory} is in use by another trainer: pid {holder.pid} on "
          rf"host {socket.gethostname()}, started earlier"):
        checkpoints_lib.RunDirLock(directory).acquire()
      # The same pid started at another time is a later process: stale.
      self.write_lock(directory, holder.pid, start_ticks=1)
      with self.assertLogs("absl", "WARNING") as logs:
        with checkpoints_lib.RunDirLock(directory):
          with open(path, encoding="utf-8") as f:
            self.assertEqual(json.load(f)["pid"], os.getpid())
      self.assertIn("Took over the lock", logs.output[0])
      self.assertFalse(os.path.exists(path))
      # A killed holder not yet reaped (a zombie) is gone too.
      holder.kill()
      time.sleep(0.2)
      self.write_lock(directory, holder.pid)
      with checkpoints_lib.RunDirLock(directory):
        pass
    finally:
      holder.kill()
      holder.wait()
    # A dead pid: taken over.
    self.write_lock(directory, dead_pid())
    lock = checkpoints_lib.RunDirLock(directory)
    with self.assertLogs("absl", "WARNING"):
      lock.acquire()
    # Trainers of one process share it; the file goes with the last one.
    with checkpoints_lib.RunDirLock(directory):
      pass
    self.assertTrue(os.path.exists(path))
    lock.release()
    self.assertFalse(os.path.exists(path))
    # Another host's lock is never taken over: its pid means nothing here.
    self.write_lock(directory, dead_pid(), host="elsewhere.example")
    with self.assertRaisesRegex(checkpoints_lib.RunDirInUse,
                                "on host elsewhere.example.*delete"):
      checkpoints_lib.RunDirLock(directory).acquire()

  def test_the_lock_is_released_at_the_end_and_on_errors(self):
    model_dir = self.copy_of_base("released")
    lock = os.path.join(model_dir, ".lock")
    trainer = trainer_lib.make_trainer(tiny_config(self.corpus, max_steps=31),
                                       model_dir, cache_root=self.cache)
    with open(lock, encoding="utf-8") as f:
      self.assertEqual(json.load(f)["pid"], os.getpid())
    trainer.close()
    self.assertFalse(os.path.exists(lock))
    trainer_lib.train(tiny_config(self.corpus, max_steps=31), model_dir,
                      cache_root=self.cache)
    self.assertFalse(os.path.exists(lock))
    other = config_lib.apply_overrides(tiny_config(self.corpus),
                                       {"model.lstm.cell_dim": 48})
    with self.assertRaises(trainer_lib.TrainingError):
      trainer_lib.make_trainer(other, model_dir, cache_root=self.cache)
    self.assertFalse(os.path.exists(lock))

  # === 3. Divergence ===

  def test_guard_rules(self):
    guard = trainer_lib.DivergenceGuard(loss_jump=3.0, window_steps=4,
                                        max_weight=100.0)
    # Warm-up: a jump before the window is full does not count.
    for loss in (5.0, 9.0, 4.0, 4.0):
      self.assertIsNone(guard.check(loss, 1.0, 1.0))
    self.assertIsNone(guard.check(8.49, 1.0, 1.0))  # Mean 5.5 + 3 = 8.5.
    self.assertRegex(guard.check(9.5, 1.0, 1.0),
                     r"jumped to 9\.5, more than divergence_loss_jump=3 nats")
    self.assertRegex(guard.check(1.0, 1.0, 101.0),
                     "largest weight magnitude reached 101")
    self.assertRegex(guard.check(float("nan"), 1.0, 1.0), "loss became nan")
    self.assertRegex(guard.check(1.0, float("inf"), 1.0),
                     r"gradient norm inf")
    self.assertRegex(guard.check(1.0, 1.0, float("nan")), "weight became nan")
    off = trainer_lib.DivergenceGuard(loss_jump=0, window_steps=1,
                                      max_weight=0)
    for loss in (1.0, 50.0, 500.0):
      self.assertIsNone(off.check(loss, 1.0, 1e9))
    # Logging a huge finite loss never crashes.
    self.assertEqual(evaluation_lib.perplexity(1e6), float("inf"))
    progbar = keras.utils.Progbar(10, stateful_metrics=["loss", "ppl"])
    progbar.update(5, values=[("loss", 1e6), ("ppl", float("inf"))])
    progbar.update(6, values=[("loss", float("nan")), ("ppl", float("nan"))])

  def test_a_blow_up_stops_before_any_checkpoint_is_rotated_out(self):
    # The repro: resumed from good checkpoints with a learning rate
    # of 1e6, the loss stayed finite while the weights blew up and rotation
    # deleted every good checkpoint.
    model_dir = self.copy_of_base("blow_up")
    before = sorted(os.listdir(model_dir))
    config = tiny_config(self.corpus, max_steps=80, learning_rate=1e6,
                         checkpoint_every_steps=1, max_checkpoints_to_keep=3)
    with self.assertRaisesRegex(
        trainer_lib.TrainingError,
        r"diverged at step 31: the largest weight magnitude reached .*"
        rf"the newest checkpoint, {model_dir}/ckpt-30, precedes the fault"):
      trainer_lib.train(config, model_dir, cache_root=self.cache)
    self.assertEqual(sorted(os.listdir(model_dir)), before)
    _, _, model, path = checkpoints_lib.load_trained_model(model_dir)
    self.assertEqual(path, os.path.join(model_dir, "ckpt-30"))
    self.assertLess(max(float(np.abs(v.numpy()).max())
                        for v in model.weights), 10.0)
    # From scratch: the first step is named, and nothing crashes on the way.
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                r"diverged at step 1: .*no checkpoint"):
      trainer_lib.train(config, os.path.join(self.tmp, "blow_up_new"),
                        cache_root=self.cache)

  # === 4. Damaged checkpoints ===

  DAMAGES = {
      "half": (DATA_FILE, lambda size: size // 2),
      "empty": (DATA_FILE, lambda size: 0),
      "one byte short": (DATA_FILE, lambda size: size - 1),
      "truncated index": (INDEX_FILE, lambda size: size // 2),
  }

  def damaged_copy(self, name: str, file_name: str, new_size) -> str:
    model_dir = self.copy_of_base(re.sub(r"\W", "_", name))
    path = os.path.join(model_dir, file_name)
    os.truncate(path, new_size(os.path.getsize(path)))
    return model_dir

  def assert_same_model_weights(self, prefix: str, expected_prefix: str):
    """Every model variable of checkpoint `prefix` equals (to 1e-6) the one
    of `expected_prefix`."""
    expected = tf.train.load_checkpoint(expected_prefix)
    got = tf.train.load_checkpoint(prefix)
    for name in expected.get_variable_to_shape_map():
      if name.startswith("model_variables/"):
        np.testing.assert_allclose(got.get_tensor(name),
                                   expected.get_tensor(name), atol=1e-6,
                                   err_msg=name)

  def test_every_damage_falls_back_to_the_newest_intact_checkpoint(self):
    for name, (file_name, new_size) in self.DAMAGES.items():
      with self.subTest(name):
        model_dir = self.damaged_copy(name, file_name, new_size)
        damaged = os.path.join(model_dir, file_name)
        with self.assertLogs("absl", "WARNING") as logs:
          path, skipped = checkpoints_lib.newest_intact_checkpoint(model_dir)
        self.assertEqual(path, os.path.join(model_dir, "ckpt-20"))
        self.assertEqual(skipped, [os.path.join(model_dir, "ckpt-30")])
        self.assertIn(f"{damaged} is damaged", logs.output[0])
        self.assertIn("Using " + path, logs.output[0])
        # bin/evaluate and bin/export read through load_trained_model.
        with self.assertLogs("absl", "WARNING"):
          _, _, _, loaded = checkpoints_lib.load_trained_model(model_dir)
        self.assertEqual(loaded, path)
        # bin/train resumes there, and the damaged checkpoint is no longer
        # the CheckpointManager's (not rotated, not "latest").
        with self.assertLogs("absl", "WARNING"):
          trainer = trainer_lib.make_trainer(
              tiny_config(self.corpus, max_steps=40), model_dir,
              cache_root=self.cache)
        self.assertEqual(trainer.current_step, 20)
        self.assertEqual(trainer.manager.latest_checkpoint, path)
        self.assertEqual(trainer.manager.checkpoints,
                         [os.path.join(model_dir, "ckpt-10"), path])
        trainer.close()

  def test_an_interrupted_first_save_restarts_from_step_0(self):
    # A crash while the first checkpoint was being written: its index is
    # empty and no checkpoint list exists yet (the CheckpointManager writes
    # it after a save). Nothing was saved, so the re-run starts afresh.
    model_dir = self.copy_of_base("first_save_interrupted")
    for name in os.listdir(model_dir):
      if name == "checkpoint" or name.startswith("ckpt-"):
        os.remove(os.path.join(model_dir, name))
    shutil.copy(os.path.join(self.base, DATA_FILE),
                os.path.join(model_dir, "ckpt-10.data-00000-of-00001"))
    open(os.path.join(model_dir, "ckpt-10.index"), "w").close()
    with self.assertLogs("absl", "WARNING") as logs:
      path, skipped = checkpoints_lib.newest_intact_checkpoint(model_dir)
    self.assertEqual((path, skipped),
                     (None, [os.path.join(model_dir, "ckpt-10")]))
    self.assertIn(f"{model_dir}/ckpt-10.index is damaged", logs.output[0])
    self.assertIn("first save that was interrupted", logs.output[0])
    with self.assertLogs("absl", "WARNING"):
      trainer_lib.train(tiny_config(self.corpus, max_steps=20), model_dir,
                        cache_root=self.cache)
    # ckpt-10 saved again over the damaged files, and the same weights as
    # the uninterrupted run's at step 20.
    path, skipped = checkpoints_lib.newest_intact_checkpoint(model_dir)
    self.assertEqual((path, skipped),
                     (os.path.join(model_dir, "ckpt-20"), []))
    self.assertIsNone(checkpoints_lib.checkpoint_problem(
        os.path.join(model_dir, "ckpt-10")))
    self.assert_same_model_weights(path, os.path.join(self.base, "ckpt-20"))
    # With a checkpoint list (saves completed before), damage everywhere is
    # still an error (test_export_falls_back_and_no_intact_checkpoint_...).

  def test_a_resumed_run_saves_over_the_damaged_checkpoint(self):
    model_dir = self.damaged_copy("resaved", DATA_FILE, lambda size: 0)
    with self.assertLogs("absl", "WARNING"):
      trainer_lib.train(tiny_config(self.corpus, max_steps=30), model_dir,
                        cache_root=self.cache)
    path, skipped = checkpoints_lib.newest_intact_checkpoint(model_dir)
    self.assertEqual((path, skipped),
                     (os.path.join(model_dir, "ckpt-30"), []))
    # The same weights as before the damage: the resumed steps 21-30 replay
    # the same batches.
    self.assert_same_model_weights(path, os.path.join(self.base, "ckpt-30"))

  def test_export_falls_back_and_no_intact_checkpoint_is_one_line(self):
    model_dir = self.damaged_copy("export_half", DATA_FILE,
                                  lambda size: size // 2)
    with self.assertLogs("absl", "WARNING"):
      out = export_lib.export_saved_model(
          model_dir, os.path.join(self.tmp, "export_half_saved_model"))
    with open(os.path.join(out, "assets", "elmo_tf.json"),
              encoding="utf-8") as f:
      self.assertIn("ckpt-20", json.dumps(json.load(f)))
    # Nothing intact: bin/export and bin/evaluate name every damaged file
    # in one line and exit 1; nothing is trained over them either.
    broken = self.copy_of_base("all_damaged")
    for step in (10, 20, 30):
      os.truncate(os.path.join(broken, f"ckpt-{step}.index"), 10)
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                "No intact checkpoint"):
      trainer_lib.make_trainer(tiny_config(self.corpus), broken,
                               cache_root=self.cache)
    export = run_program("bin.export", f"--model_dir={broken}",
                         f"--out={os.path.join(self.tmp, 'never')}")
    evaluate = run_program("bin.evaluate", f"--model_dir={broken}",
                           f"--cache_dir={self.cache}")
    for process in (export, evaluate):
      code, output = finish(process)
      self.assertEqual(code, 1, output[-3000:])
      self.assertNotIn("Traceback", output)
      errors = error_lines(output)
      self.assertEqual(len(errors), 1, output[-3000:])
      for step in (10, 20, 30):
        self.assertIn(f"{broken}/ckpt-{step}.index is damaged", errors[0])
    self.assertFalse(os.path.exists(os.path.join(self.tmp, "never")))

  # === 7. Leftovers and messages ===

  def test_user_errors_print_one_line_without_a_traceback(self):
    # A config that does not match the run being resumed.
    mismatch = self.copy_of_base("mismatch")
    not_a_dir = os.path.join(self.tmp, "a_file")
    with open(not_a_dir, "w", encoding="utf-8") as f:
      f.write("not a directory\n")
    cases = {
        "mismatch": (run_program("bin.train", *self.train_flags(
            mismatch, max_steps=40, cell_dim=48)),
                     r"holds a checkpoint of a different model.*cell_dim"),
        # A model_dir that cannot be created (as a read-only one: tests run
        # as root here, which file modes do not stop).
        "unwritable": (run_program("bin.train", *self.train_flags(
            os.path.join(not_a_dir, "run"), max_steps=2)),
                       r"Not a directory: .*a_file/run"),
        "not a run": (run_program("bin.evaluate",
                                  f"--model_dir={self.tmp}/text"),
                      r"No config\.json in .*text: is this a directory "
                      r"written by bin/train\?"),
        "bad corpus": (run_program("bin.train", *self.train_flags(
            os.path.join(self.tmp, "no_corpus_run"),
            corpus=os.path.join(self.tmp, "missing*.txt"), max_steps=2)),
                       r"missing\*\.txt"),
    }
    for name, (process, message) in cases.items():
      with self.subTest(name):
        code, output = finish(process)
        self.assertEqual(code, 1, output[-3000:])
        self.assertNotIn("Traceback", output)
        errors = error_lines(output)
        self.assertEqual(len(errors), 1, output[-3000:])
        self.assertRegex(errors[0], message)

  def test_stale_prepare_leftovers_are_removed(self):
    paths = toy_corpus.write_corpus(os.path.join(self.tmp, "stale_text"),
                                    n_train=30, n_heldout=5)
    out_dir = os.path.join(self.tmp, "stale_parent", "prepared")
    os.makedirs(os.path.dirname(out_dir))
    live = subprocess.Popen(["sleep", "60"])
    host = socket.gethostname()
    names = {
        # An older version's name (no host): this host's.
        "old_format": f".prepared.tmp-{dead_pid()}-0123abcd",
        "dead": f".prepared.tmp-{dead_pid()}-89abcdef@{host}",
        "dead_old_out": f".prepared.tmp-{dead_pid()}-89abcdef@{host}.old",
        "live": f".prepared.tmp-{live.pid}-0123abcd@{host}",
        "other_host": f".prepared.tmp-{dead_pid()}-0123abcd@elsewhere",
        "other_name": f".other.tmp-{dead_pid()}-0123abcd@{host}",
    }
    try:
      for name in names.values():
        os.makedirs(os.path.join(os.path.dirname(out_dir), name, "x"))
      with self.assertLogs("absl", "WARNING"):
        prepare_lib.prepare_corpus(paths["spec"], "whitespace", out_dir)
      left = set(os.listdir(os.path.dirname(out_dir)))
      self.assertEqual(left, {"prepared", names["live"], names["other_host"],
                              names["other_name"]})
    finally:
      live.kill()
      live.wait()

  def test_a_killed_prepare_corpus_leaves_nothing_for_the_next_run(self):
    # Big enough that tokenizing takes a while after the temporary
    # directory appears.
    paths = toy_corpus.write_corpus(os.path.join(self.tmp, "kill_text"),
                                    n_train=300000, n_heldout=10)
    parent = os.path.join(self.tmp, "kill_parent")
    out_dir = os.path.join(parent, "prepared")
    flags = [f"--corpus={paths['spec']}", f"--out={out_dir}",
             "--tokenization=whitespace"]
    killed = run_program("bin.prepare_corpus", *flags)
    deadline = time.time() + 120
    while not (os.path.isdir(parent) and any(
        ".tmp-" in n for n in os.listdir(parent))):
      self.assertIsNone(killed.poll(), output_of(killed)[-2000:])
      self.assertLess(time.time(), deadline)
      time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    self.assertTrue(any(".tmp-" in n for n in os.listdir(parent)))
    code, output = finish(run_program("bin.prepare_corpus", *flags))
    self.assertEqual(code, 0, output[-3000:])
    self.assertIn("left by an interrupted preparation", output)
    self.assertEqual(os.listdir(parent), ["prepared"])


class ExportedModelFaultsTest(tf.test.TestCase):
  """6. `tokens` shape errors, and calls from 8 threads at once."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.export_dir = export_lib.export_saved_model(
        model_dir, os.path.join(cls.tmp, "export"))
    cls.loaded = tf.saved_model.load(cls.export_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def assert_names_both_shapes(self, call, tokens_shape: str,
                               lengths_shape: str):
    """`call` raises InvalidArgumentError naming both inputs and their
    shapes, e.g. "4 5" and "3" (brackets and commas aside: the graph's
    assertion prints [4 5], the tracing check [4, 5])."""
    with self.assertRaises(tf.errors.InvalidArgumentError) as raised:
      call()
    message = str(raised.exception)
    self.assertIn("`tokens` must be (batch, max_len) and `sequence_len` "
                  "(batch,), with the same batch size", message)
    flat = " ".join(re.sub(r"[\[\],]", " ", message).split())
    self.assertIn(f"tokens of shape {tokens_shape} and sequence_len of shape "
                  f"{lengths_shape}", flat)

  def test_tokens_shape_errors_name_both_inputs(self):
    tokens_signature = self.loaded.signatures["tokens"]
    rows4 = tf.fill([4, 5], "cat")
    # Batch sizes that differ: found when the graph runs.
    # Batch sizes that differ (the signature fixes the ranks): found when
    # the graph runs. 4 vs 3 rows used to return 3 rows silently.
    self.assert_names_both_shapes(
        lambda: tokens_signature(tokens=rows4,
                                 sequence_len=tf.constant([5, 5, 5])),
        "4 5", "3")
    self.assert_names_both_shapes(
        lambda: tokens_signature(tokens=tf.fill([2, 5], "cat"),
                                 sequence_len=tf.fill([5], 5)),
        "2 5", "5")
    # The reusable __call__ of the SavedModel has the same graph.
    self.assert_names_both_shapes(
        lambda: self.loaded({"tokens": rows4,
                             "sequence_len": tf.constant([5, 5, 5])}),
        "4 5", "3")
    # Wrong ranks reach tokens_to_ragged through the Keras layer (dict
    # inputs, no input signature).
    layer = elmo_embedding_lib.ElmoEmbedding(self.export_dir, output="elmo")
    self.assert_names_both_shapes(
        lambda: layer({"tokens": tf.constant(["the", "cat"]),
                       "sequence_len": tf.constant([2])}),
        "2", "1")
    self.assert_names_both_shapes(
        lambda: layer({"tokens": tf.fill([2, 3], "cat"),
                       "sequence_len": tf.constant([[3], [3]])}),
        "2 3", "2 1")
    self.assert_names_both_shapes(
        lambda: tf.function(elmo_lib.tokens_to_ragged)(
            tf.constant(["the", "cat"]), tf.constant([2])),
        "2", "1")
    self.assert_names_both_shapes(
        lambda: elmo_lib.tokens_to_ragged(rows4, [1, 2, 3]), "4 5", "3")
    self.assertEqual(layer({"tokens": rows4,
                            "sequence_len": tf.constant([1, 2, 3, 5])}
                           ).shape[:2], (4, 5))
    ragged = elmo_lib.tokens_to_ragged(rows4, [1, 2, 3, 9])
    self.assertEqual(ragged.row_lengths().numpy().tolist(), [1, 2, 3, 5])
    outputs = tokens_signature(tokens=rows4,
                               sequence_len=tf.constant([1, 2, 3, 5]))
    self.assertEqual(outputs["elmo"].shape[:2], (4, 5))

  def test_eight_threads_at_once_give_the_serial_results(self):
    sentences = [" ".join(s.split()[: 3 + i % 5])
                 for i, s in enumerate(export_testutil.SENTENCES * 8)]
    batches = [tf.constant(sentences[i:i + 4])
               for i in range(0, len(sentences), 4)]  # 8 batches of 4.
    default = self.loaded.signatures["default"]

    def run(batch):
      return {key: value.numpy() for key, value in default(batch).items()}

    serial = [run(batch) for batch in batches]
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
      for _ in range(3):
        parallel = list(pool.map(run, batches))
        for one, other in zip(serial, parallel):
          self.assertEqual(sorted(one), sorted(other))
          for key in one:
            np.testing.assert_allclose(other[key], one[key], rtol=0,
                                       atol=1e-6, err_msg=key)
    # The reusable __call__ too.
    called = [self.loaded(batch)["elmo"].numpy() for batch in batches]
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
      threaded = list(pool.map(lambda b: self.loaded(b)["elmo"].numpy(),
                               batches))
    for one, other in zip(called, threaded):
      np.testing.assert_allclose(other, one, rtol=0, atol=1e-6)


if __name__ == "__main__":
  unittest.main()
