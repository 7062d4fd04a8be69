"""The absl programs in bin/ define flags that do not clash.

absl raises DuplicateFlagError when two imported modules define one flag
name, so programs whose flags clash cannot be imported in one process (a
test process, for one). Each check runs in a fresh interpreter.
"""

import os
import subprocess
import sys
import tempfile
import unittest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import(*modules: str) -> subprocess.CompletedProcess:
  code = "; ".join(f"import {module}" for module in modules)
  return subprocess.run(
      [sys.executable, "-c", code], cwd=REPO_ROOT,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True,
      text=True, timeout=240, check=False)


class BinFlagsTest(unittest.TestCase):

  def test_export_and_prepare_corpus_import_in_one_process(self):
    # Both used to define --out and --tokenization.
    result = _import("bin.export", "bin.prepare_corpus")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])


  def test_a_bad_intra_op_threads_is_a_usage_error_before_training(self):
    model_dir = os.path.join(tempfile.mkdtemp(), "run")
    result = subprocess.run(
        [sys.executable, "-m", "bin.train", "--corpus=ptb", "--preset=tiny",
         f"--model_dir={model_dir}",
         "--intra_op_threads=-3"], cwd=REPO_ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True,
        text=True, timeout=240, check=False)
    self.assertEqual(result.returncode, 1, result.stderr[-3000:])
    self.assertIn("intra_op_threads=-3: give -1", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
    self.assertFalse(os.path.exists(model_dir))

  def test_train_shortcut_defaults_come_from_the_config(self):
    # No default is written twice: every shortcut flag of bin/train is None
    # (its help says "default: from the preset"), --preset defaults to
    # config.DEFAULT_PRESET, and choices come from config.py's lists.
    code = """
import sys
from absl import flags
import bin.train as train
from elmo_tf import config
FLAGS = flags.FLAGS
bad = []
for name, (path, *_) in train._SHORTCUTS.items():
  flag = FLAGS[name]
  if flag.default is not None or train.FROM_PRESET not in flag.help:
    bad.append(name)
if FLAGS["preset"].default != config.DEFAULT_PRESET:
  bad.append("preset")
if list(FLAGS["tokenization"].parser.enum_values) != list(config.TOKENIZATIONS):
  bad.append("tokenization choices")
print(bad)
sys.exit(1 if bad else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True,
        text=True, timeout=240, check=False)
    self.assertEqual(result.returncode, 0, result.stdout + result.stderr[-3000:])
    helped = subprocess.run(
        [sys.executable, "-m", "bin.train", "--help"], cwd=REPO_ROOT,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), capture_output=True,
        text=True, timeout=240, check=False)
    self.assertIn("--batch_size", helped.stdout)
    self.assertIn("default: from the preset", helped.stdout)
    self.assertNotIn("(default: '4096')", helped.stdout)


if __name__ == "__main__":
  unittest.main()
