"""elmo_tf.runtime: the intra-op pool size asked for, and that it reaches
TensorFlow when set before TensorFlow starts (a fresh process), and not
after."""

import os
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from elmo_tf import runtime

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, env_extra: dict[str, str] | None = None,
         stderr_has: str = "") -> str:
  """Runs `code` in a fresh Python; returns its last stdout line."""
  env = dict(os.environ)
  env.pop("TF_NUM_INTRAOP_THREADS", None)
  env.update(env_extra or {})
  result = subprocess.run([sys.executable, "-c", code], cwd=_REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=True)
  assert stderr_has in result.stderr, result.stderr
  return result.stdout.strip().splitlines()[-1]


class IntraOpThreadsForTest(unittest.TestCase):

  def test_auto_is_half_the_cores_and_at_least_one(self):
    for cores, expected in ((1, 1), (2, 1), (3, 1), (8, 4), (64, 32)):
      with mock.patch.object(runtime, "available_cores", return_value=cores):
        self.assertEqual(runtime.intra_op_threads_for(runtime.AUTO),
                         expected)

  def test_zero_and_positive_pass_through(self):
    self.assertEqual(runtime.intra_op_threads_for(0), 0)
    self.assertEqual(runtime.intra_op_threads_for(3), 3)

  def test_other_negative_values_are_refused_with_the_choices(self):
    with self.assertRaisesRegex(ValueError, r"intra_op_threads=-2.*-1.*0"):
      runtime.intra_op_threads_for(-2)


class ConfigureThreadsTest(unittest.TestCase):
  """In fresh processes: the pool is fixed once TensorFlow starts."""

  def test_before_tensorflow_starts_the_pool_is_set(self):
    out = _run("from elmo_tf import runtime\n"
               "n = runtime.configure_threads(3)\n"
               "import tensorflow as tf\n"
               "tf.constant(1.0) + 1.0  # starts the runtime\n"
               "print(n, tf.config.threading"
               ".get_intra_op_parallelism_threads())")
    self.assertEqual(out, "3 3")

  def test_after_tensorflow_started_it_keeps_the_pool_and_says_so(self):
    out = _run("import tensorflow as tf\n"
               "tf.constant(1.0) + 1.0\n"
               "from elmo_tf import runtime\n"
               "print(runtime.configure_threads(3), tf.config.threading"
               ".get_intra_op_parallelism_threads())",
               stderr_has="its intra-op pool stays at default threads, not 3")
    self.assertEqual(out, "0 0")

  def test_the_environment_variable_wins(self):
    out = _run("from elmo_tf import runtime\n"
               "import tensorflow as tf\n"
               "print(runtime.configure_threads(3), tf.config.threading"
               ".get_intra_op_parallelism_threads())",
               {"TF_NUM_INTRAOP_THREADS": "2"})
    self.assertEqual(out, "2 0")


class Bfloat16WarningTest(unittest.TestCase):
  """mixed_bfloat16 on a CPU that only emulates bfloat16 gets a warning."""

  def _cpuinfo(self, flags: str) -> str:
    folder = self.enterContext(tempfile.TemporaryDirectory())
    path = os.path.join(folder, "cpuinfo")
    with open(path, "w", encoding="utf-8") as f:
      f.write("processor\t: 0\nmodel name\t: Test CPU\n"
              f"flags\t\t: fpu sse2 avx2 avx512f {flags}\n\n")
    return path

  def test_flags_decide(self):
    self.assertFalse(runtime.cpu_has_bfloat16_matmul(self._cpuinfo("")))
    self.assertTrue(runtime.cpu_has_bfloat16_matmul(
        self._cpuinfo("amx_bf16 amx_tile")))
    self.assertTrue(runtime.cpu_has_bfloat16_matmul(
        self._cpuinfo("avx512_bf16")))
    self.assertIsNone(runtime.cpu_has_bfloat16_matmul("/nonexistent/cpuinfo"))

  def test_warns_only_for_mixed_bfloat16_without_the_instructions(self):
    plain, amx = self._cpuinfo("avx512_vnni"), self._cpuinfo("amx_bf16")
    with self.assertLogs(level="WARNING") as logs:
      self.assertTrue(runtime.warn_if_bfloat16_is_emulated(
          "mixed_bfloat16", plain))
    self.assertIn("mixed_precision='float32'", logs.output[0])
    self.assertFalse(runtime.warn_if_bfloat16_is_emulated("float32", plain))
    self.assertFalse(runtime.warn_if_bfloat16_is_emulated(
        "mixed_bfloat16", amx))
    self.assertFalse(runtime.warn_if_bfloat16_is_emulated(
        "mixed_bfloat16", "/nonexistent/cpuinfo"))


if __name__ == "__main__":
  unittest.main()
