"""The side-by-side summary (bench/peer/summarize.py) from a results folder
the test writes in run_side_by_side.sh's layout: ranges, ratios from the
least to the most favourable pairing, bfloat16 over elmo_tf's own float32,
rows not run, and the sitting's command and elmo_tf commit."""

import json
import os
import tempfile
import unittest

from bench.peer import summarize


def _write_json(folder: str, name: str, data: dict):
  with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
    json.dump(data, f)


def _table_line(table: str, row: dict) -> str:
  """The markdown table's line of one summary row."""
  (line,) = [line for line in table.splitlines()
             if line.startswith(f"| {row['work']}:")]
  return line


class SummarizeTest(unittest.TestCase):

  def setUp(self):
    super().setUp()
    self.results = tempfile.mkdtemp()
    for run, (bilm, elmo, bf16) in enumerate(
        ((500.0, 2000.0, 3200.0), (400.0, 1800.0, 3000.0)), start=1):
      _write_json(self.results, f"a_bilm_small_{run}.json",
                  {"tokens_per_sec": bilm, "peak_rss_mb": 2700.0,
                   "env": {"tensorflow": "2.21.0", "bilm_commit": "7cffee2b"}})
      _write_json(self.results, f"a_elmo_small_{run}.json",
                  {"tokens_per_sec_nominal": elmo, "peak_rss_mb": 970.0})
      _write_json(self.results, f"b_elmo_small_bf16_{run}.json",
                  {"tokens_per_sec_nominal": bf16})
    _write_json(self.results, "d_elmo_embed_1.json",
                {"throughput_tokens": {"sentences_per_sec_steady": 480.0,
                                       "tokens_per_sec_steady": 10500.0},
                 "throughput_default": {"sentences_per_sec_steady": 490.0},
                 "latency_batch1_20tok_tokens": {"p50_ms": 9.0}})
    with open(os.path.join(self.results, "matmul.txt"), "w",
              encoding="utf-8") as f:
      f.write('MATMUL_GFLOPS {"float32": 219.0, "bfloat16": 410.0}\n')
    with open(os.path.join(self.results, "commands.tsv"), "w",
              encoding="utf-8") as f:
      f.write("a_bilm_small_1\tpython bilm_train_bench.py --lstm_dim 1024\n")
    _write_json(self.results, "sitting.json", {"sittings": [
        {"start": "2026-12-07T10:25:13+00:00", "stages": ["matmul", "a", "b"],
         "K": 30, "K_LARGE": 10, "REPS": 2, "NS": 1024, "NS_LARGE": 256,
         "threads": None, "elmo_tf_commit": "2e25292feb4a34dc27e5",
         "elmo_tf_uncommitted_changes": False,
         "command": 'make side-by-side SIDE_BY_SIDE_STAGES="matmul a b"'}]})
    self.summary = summarize.summarize(self.results)
    self.rows = {row["key"]: row for row in self.summary["rows"]}

  def test_ratios_span_the_least_to_the_most_favourable_pairing(self):
    row = self.rows["a_train_small_fp32"]
    self.assertEqual(row["bilm_tf_range"], [400.0, 500.0])
    self.assertEqual(row["elmo_tf_range"], [1800.0, 2000.0])
    self.assertEqual(row["ratio_elmo_tf_over_bilm_tf"],
                     [1800 / 500, 2000 / 400])
    self.assertEqual(row["files"],
                     ["a_bilm_small_1.json", "a_bilm_small_2.json",
                      "a_elmo_small_1.json", "a_elmo_small_2.json"])

  def test_bfloat16_over_own_float32(self):
    (own,) = self.summary["own_ratios"]
    self.assertEqual(own["key"], "b_over_a_bf16_over_fp32")
    self.assertEqual(own["ratio"], [3000 / 2000, 3200 / 1800])
    self.assertIn("(b over a): 1.50-1.78x.", summarize.markdown(self.summary))

  def test_rows_not_run_and_rows_bilm_tf_has_not(self):
    not_run = self.rows["c_train_256_64_fp32"]
    self.assertIsNone(not_run["elmo_tf_range"])
    self.assertIsNone(not_run["ratio_elmo_tf_over_bilm_tf"])
    self.assertFalse(self.rows["d_embed_default_signature"]["bilm_tf_has_it"])
    table = summarize.markdown(self.summary)
    self.assertIn("| not run | not run | not run |", table)
    self.assertTrue(_table_line(table, self.rows["d_embed_sentences"]).endswith(
        "| not run | 480 | not run |"))  # bilm-tf's side not run
    self.assertTrue(_table_line(
        table, self.rows["d_embed_default_signature"])
                    .endswith("| - | 490 | - |"))  # bilm-tf has no such thing

  def test_the_record_names_the_sitting_its_code_and_machine(self):
    self.assertEqual(self.summary["date"], "2026-12-07")
    self.assertEqual(self.summary["bilm_tf"]["commit"], "7cffee2b")
    self.assertEqual(self.summary["matmul_gflops"],
                     {"float32": [219.0], "bfloat16": [410.0]})
    self.assertEqual(self.summary["commands"][0]["stage"], "a_bilm_small_1")
    table = summarize.markdown(self.summary)
    self.assertIn('`make side-by-side SIDE_BY_SIDE_STAGES="matmul a b"`', table)
    self.assertIn("elmo_tf at commit 2e25292)", table)
    self.assertIn("float32 219, bfloat16 410", table)

  def test_a_run_without_its_field_is_named(self):
    _write_json(self.results, "a_elmo_small_3.json", {"loss": 5.0})
    with self.assertRaisesRegex(
        ValueError, r"a_elmo_small_3\.json: no number at "
        r"'tokens_per_sec_nominal'.*run its stage again"):
      summarize.summarize(self.results)

  def test_a_sitting_without_a_recorded_commit_says_so(self):
    with open(os.path.join(self.results, "sitting.json"),
              encoding="utf-8") as f:
      record = json.load(f)
    record["sittings"][0].pop("elmo_tf_commit")
    _write_json(self.results, "sitting.json", record)
    table = summarize.markdown(summarize.summarize(self.results))
    self.assertIn("elmo_tf commit not recorded)", table)


if __name__ == "__main__":
  unittest.main()
