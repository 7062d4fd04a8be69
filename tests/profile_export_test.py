"""bench/profile_export.py on the shipped English SavedModel: two batches
timed and profiled, op types read back from the trace."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SAVED_MODEL = os.path.join(_REPO, "savedmodels", "ptb")


class ProfileExportTest(unittest.TestCase):

  @unittest.skipUnless(os.path.isdir(_SAVED_MODEL), "no shipped model")
  def test_profiles_the_tokens_signature_by_op_type(self):
    with tempfile.TemporaryDirectory() as tmp:
      output = os.path.join(tmp, "profile_export.json")
      subprocess.run(
          [sys.executable, "-m", "bench.profile_export",
           f"--saved_model={_SAVED_MODEL}", "--batches=2", "--warmup=1",
           "--batch_size=8", "--intra_op_threads=1", "--top=100",
           f"--logdir={os.path.join(tmp, 'trace')}", f"--output={output}"],
          cwd=_REPO, check=True, capture_output=True, text=True, timeout=600)
      with open(output, encoding="utf-8") as f:
        result = json.load(f)
    self.assertEqual(result["batches"], 2)
    self.assertEqual(result["batch_size"], 8)
    self.assertEqual(result["intra_op_threads"], 1)
    self.assertGreater(result["sentences_per_sec"], 0)
    self.assertGreater(result["tokens_per_batch"], 8)
    types = {row["type"]: row for row in result["op_types"]}
    # The LSTMs' per-step matmuls (oneDNN's or Eigen's) and gate sigmoids,
    # called many times per batch: one per step and LSTM at least.
    matmuls = [row for name, row in types.items() if "MatMul" in name]
    self.assertTrue(matmuls, types)
    self.assertGreaterEqual(max(r["calls_per_batch"] for r in matmuls), 4 * 5)
    # And the step's other ops, one per step and LSTM at least: which of
    # them the trace holds depends on the CPU and the loop (TensorFlow runs
    # ops it estimates cheap inline, and those may leave no trace event: on
    # an AMD EPYC Zen 4 no Sigmoid was traced, on Intel Xeons it was; in the
    # packed loop over sentences, whose rows per step are not known when
    # the graph is built, only the steps' slices of the packed tokens and
    # states were, 70 per batch of 8 here).
    step_ops = [types[name] for name in (
        "Sigmoid", "Tanh", "Unpack", "SelectV2", "StridedSlice", "ConcatV2",
        "AddV2", "Mul") if name in types]
    self.assertTrue(step_ops, types)
    self.assertGreaterEqual(max(r["calls_per_batch"] for r in step_ops),
                            4 * 5)
    listed = sum(row["ms_per_batch"] for row in result["op_types"])
    self.assertLessEqual(listed, result["op_ms_per_batch"] + 1e-6)


if __name__ == "__main__":
  unittest.main()
