"""The absl programs in bin/ define flags that do not clash.

absl raises DuplicateFlagError when two imported modules define one flag
name, so programs whose flags clash cannot be imported in one process (a
test process, for one). Each check runs in a fresh interpreter.
"""

import os
import subprocess
import sys
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


if __name__ == "__main__":
  unittest.main()
