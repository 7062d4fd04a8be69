"""Crash safety: `bin/train` killed with SIGKILL at 3 random moments of a
tiny run resumes each time from its newest checkpoint, and ends with the
weights of an uninterrupted run.

Sentence batching, a fixed seed, the tiny preset and a checkpoint every 5
steps (so some kills land while a checkpoint is being written). The kill
moments are random but seeded: after the first step of each run, a delay
drawn from [0, 1.5) s. The uninterrupted run trains meanwhile.
"""

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import prepare as prepare_lib
from tests import toy_corpus

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_STEPS = 200
KILLS = 3
SEED = 20261202


def _start(model_dir: str, corpus: str, cache: str) -> subprocess.Popen:
  log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
  process = subprocess.Popen(
      [sys.executable, "-m", "bin.train", f"--corpus={corpus}",
       f"--model_dir={model_dir}", "--preset=tiny", "--batching=sentences",
       "--batch_size=8", "--seed=3", f"--max_steps={MAX_STEPS}",
       "--checkpoint_every_steps=5", "--log_every_steps=1",
       "--eval_every_steps=0", f"--cache_dir={cache}", "--noexport",
       "--set=train.eval_max_batches=1"],
      cwd=REPO_ROOT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
      stdout=log, stderr=subprocess.STDOUT, text=True)
  process.log_path = log.name
  return process


def _output(process: subprocess.Popen) -> str:
  with open(process.log_path, encoding="utf-8", errors="replace") as f:
    return f.read()


def _progress(output: str) -> int:
  """The last step the progress bar printed (0 if none)."""
  steps = re.findall(rf"(\d+)/{MAX_STEPS}\b", output)
  return int(steps[-1]) if steps else 0


def _wait(process: subprocess.Popen, timeout: float = 300) -> str:
  try:
    process.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()
    raise AssertionError(_output(process)[-3000:]) from None
  return _output(process)


def _model_values(model_dir: str) -> dict[str, np.ndarray]:
  reader = tf.train.load_checkpoint(os.path.join(model_dir,
                                                 f"ckpt-{MAX_STEPS}"))
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name.startswith(("model_variables/", "optimizer_variables/"))}


class CrashSafetyTest(unittest.TestCase):

  def test_sigkilled_runs_resume_and_end_like_an_uninterrupted_one(self):
    tmp = tempfile.mkdtemp()
    paths = toy_corpus.write_corpus(os.path.join(tmp, "text"), n_train=300,
                                    n_heldout=20)
    cache = os.path.join(tmp, "cache")
    corpus = prepare_lib.prepare_cached(paths["spec"], "whitespace",
                                        cache).directory
    whole_dir = os.path.join(tmp, "whole")
    whole = _start(whole_dir, corpus, cache)

    rng = random.Random(SEED)
    model_dir = os.path.join(tmp, "killed")
    resume_step = 0
    report = []
    for kill in range(KILLS + 1):
      run = _start(model_dir, corpus, cache)
      if kill == KILLS:
        output = _wait(run)
        self.assertEqual(run.returncode, 0, output[-3000:])
      else:
        deadline = time.time() + 300
        while _progress(_output(run)) <= resume_step:
          self.assertIsNone(run.poll(), _output(run)[-3000:])
          self.assertLess(time.time(), deadline, _output(run)[-3000:])
          time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        run.send_signal(signal.SIGKILL)
        output = _wait(run)
        self.assertEqual(run.returncode, -signal.SIGKILL, output[-3000:])
      if resume_step:
        self.assertIn(
            f"Resumed from {model_dir}/ckpt-{resume_step} at step "
            f"{resume_step}.", output)
      else:
        self.assertNotIn("Resumed from", output)
      if kill:
        # The killed run's lock is taken over.
        self.assertIn("Took over the lock", output)
      if kill == KILLS:
        break
      reached = _progress(output)
      latest, skipped = checkpoints_lib.newest_intact_checkpoint(model_dir)
      # None: killed before the first checkpoint; the re-run starts afresh.
      step = checkpoints_lib.checkpoint_step(latest) if latest else 0
      self.assertGreaterEqual(step, resume_step)
      self.assertLess(reached - step, 5 + 2, "more than a checkpoint "
                      "interval lost")
      report.append(f"kill {kill + 1}: progress bar at step {reached}, "
                    f"newest intact checkpoint {step} (lost <= "
                    f"{max(reached - step, 0)}; skipped {len(skipped)} "
                    "damaged)")
      resume_step = step
    self.assertTrue(os.path.exists(os.path.join(model_dir,
                                                f"ckpt-{MAX_STEPS}.index")))
    whole_output = _wait(whole)
    self.assertEqual(whole.returncode, 0, whole_output[-3000:])
    print("\n".join(report))

    expected = _model_values(whole_dir)
    got = _model_values(model_dir)
    self.assertEqual(sorted(got), sorted(expected))
    self.assertGreater(len(expected), 20)
    for name, value in expected.items():
      np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6,
                                 err_msg=name)


if __name__ == "__main__":
  unittest.main()
