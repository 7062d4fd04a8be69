"""bench/fusion.py's pieces that need no training: reading the calibration
from TensorBoard event files, resuming from state.json, the table."""

import json
import os
import tempfile
import time
import unittest

import tensorflow as tf

from bench import fusion


def _state(encoder_steps, seconds_per_step, with_downstream=True):
  state = {
      "seconds_per_step": seconds_per_step,
      "max_steps": encoder_steps,
      "test_perplexity": {
          "sentences": {"forward_perplexity": 60.25,
                        "backward_perplexity": 58.5,
                        "average_perplexity": 59.4, "forward_tokens": 100},
          "stream": {"forward_perplexity": 66.0, "backward_perplexity": 70.0,
                     "average_perplexity": 68.0, "forward_tokens": 101},
      },
  }
  if with_downstream:
    state["downstream"] = {"zh_pos": {
        "layer0": {"mean": 61.04, "std": 0.2, "runs": [61.0, 61.2, 60.9]},
        "mix_cached": {"mean": 77.25, "std": 0.1, "runs": [77.2, 77.3,
                                                           77.25]}}}
  return state


class FusionBenchTest(unittest.TestCase):

  def test_event_wall_times_read_every_logged_step(self):
    with tempfile.TemporaryDirectory() as logdir:
      writer = tf.summary.create_file_writer(os.path.join(logdir, "train"))
      with writer.as_default():
        for step in (1, 2, 3):
          tf.summary.scalar("loss", 5.0 - step, step=step)
          writer.flush()
          time.sleep(0.01)
      writer.close()
      times = fusion._event_wall_times(logdir, "loss")
    self.assertEqual(sorted(times), [1, 2, 3])
    self.assertLess(times[1], times[3])  # Wall times, in order.
    with tempfile.TemporaryDirectory() as empty:
      self.assertEqual(fusion._event_wall_times(empty, "loss"), {})

  def test_state_round_trip_and_latest_checkpoint_step(self):
    with tempfile.TemporaryDirectory() as directory:
      path = os.path.join(directory, "state.json")
      self.assertEqual(fusion._state(path), {})
      fusion._save_state(path, {"max_steps": 12})
      self.assertEqual(fusion._state(path), {"max_steps": 12})
      self.assertFalse(os.path.exists(path + ".tmp"))
      self.assertEqual(fusion._latest_step(directory), 0)
      for step in (100, 1300, 900):
        open(os.path.join(directory, f"ckpt-{step}.index"), "w").close()
      self.assertEqual(fusion._latest_step(directory), 1300)

  def test_downstream_summary_in_percent(self):
    # The shape bench/downstream/runner.py writes: per row, the runs and
    # their test_accuracy summary (mean, sample std).
    downstream = {"tasks": {"zh_pos": {"rows": {"layer0": {
        "runs": [{"test_accuracy": 0.01}, {"test_accuracy": 0.02},
                 {"test_accuracy": 0.03}],
        "test_accuracy": {"mean": 0.02, "std": 0.01, "min": 0.01,
                          "max": 0.03}}}}}}
    summary = fusion.downstream_summary(downstream)["zh_pos"]["layer0"]
    self.assertAlmostEqual(summary["mean"], 2.0)
    self.assertAlmostEqual(summary["std"], 1.0)
    self.assertEqual([round(v, 6) for v in summary["runs"]], [1.0, 2.0, 3.0])

  def test_table_has_one_row_per_encoder(self):
    results = {"chars": _state(1319, 0.91), "tokens": _state(1514, 0.79,
                                                              False)}
    table = fusion.table_markdown(results, 20)
    lines = table.splitlines()
    self.assertIn("zh_pos layer 0", lines[0])
    self.assertIn("| `chars` | 1,319 | 0.91 | 60.2 / 58.5 | 66.0 / 70.0 | "
                  "61.0 ± 0.2 | 77.2 ± 0.1 |", lines)
    self.assertIn("| `tokens` | 1,514 | 0.79 | 60.2 / 58.5 | 66.0 / 70.0 | "
                  "- | - |", lines)
    self.assertIn("20 quiet-machine minutes", table)
    json.dumps(results)  # The state is JSON.


if __name__ == "__main__":
  unittest.main()
