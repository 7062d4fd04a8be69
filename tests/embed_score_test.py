"""bin/embed and bin/score, on a SavedModel and on a training run.

A tiny model trained for a few steps is exported once; embedding and scoring
are checked against the SavedModel's signatures and against the biLM's own
loss, on the SavedModel (`--saved_model`) and on the run (`--model_dir`),
with bad input and existing outputs.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import embed as embed_lib
from elmo_tf import export as export_lib
from elmo_tf import score as score_lib
from elmo_tf import sentences as sentences_lib
from elmo_tf import text_io
from tests import export_testutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINES = ["the cat sees a dog .", "", "zebras juggle",
         "my sister likes the green tree near the school ."]


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", module, *args], cwd=REPO_ROOT,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO_ROOT),
      capture_output=True, text=True, timeout=600, check=False)


class EmbedScoreTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.saved_model = export_lib.export_saved_model(
        cls.model_dir, os.path.join(cls.tmp, "saved_model"))
    cls.input = os.path.join(cls.tmp, "input.txt")
    with open(cls.input, "w", encoding="utf-8") as f:
      f.write("\n".join(LINES) + "\n")
    cls.loaded, _, _ = export_lib.load(cls.saved_model)
    cls.in_memory, _, _ = export_lib.load(cls.model_dir)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _path(self, name: str) -> str:
    return os.path.join(self.tmp, name)

  def test_embed_hdf5_has_allennlp_layout_and_signature_values(self):
    out = self._path("all.hdf5")
    embed_lib.embed_file(self.loaded, self.input, out, layers="all",
                         batch_size=2)
    reference = self.loaded.signatures["default"](tf.constant(LINES))
    word = reference["word_emb"].numpy()
    with h5py.File(out, "r") as f:
      index = json.loads(f["sentence_to_index"][0])
      self.assertEqual(index["zebras juggle"], "2")
      for i, line in enumerate(LINES):
        n = len(line.split())
        array = f[str(i)][()]
        self.assertEqual(array.shape, (3, n, 32))  # L + 1 layers, 2P = 32.
        np.testing.assert_allclose(
            array[0], np.concatenate([word[i], word[i]], -1)[:n], atol=1e-5)
        for layer in (1, 2):
          np.testing.assert_allclose(
              array[layer],
              reference[f"lstm_outputs{layer}"].numpy()[i][:n], atol=1e-5)
    # top / average / mix are (n, 2P).
    for layers, expected in (
        ("top", lambda i, n: reference["lstm_outputs2"].numpy()[i][:n]),
        ("mix", lambda i, n: reference["elmo"].numpy()[i][:n])):
      path = self._path(f"{layers}.h5")
      embed_lib.embed_file(self.loaded, self.input, path, layers=layers)
      with h5py.File(path, "r") as f:
        for i, line in enumerate(LINES):
          n = len(line.split())
          np.testing.assert_allclose(f[str(i)][()], expected(i, n),
                                     atol=1e-5)

  def test_embed_npy_and_model_dir_give_the_same_numbers(self):
    from_saved = self._path("saved.npy")
    from_run = self._path("run.npy")
    embed_lib.embed_file(self.loaded, self.input, from_saved, layers="average")
    embed_lib.embed_file(self.in_memory, self.input, from_run,
                         layers="average")
    a, b = np.load(from_saved), np.load(from_run)
    self.assertEqual(a.shape, (len(LINES), 32))
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_array_equal(a[1], np.zeros(32))  # The empty line.

  def test_embed_bad_input_and_existing_output(self):
    bad = self._path("bad.txt")
    with open(bad, "wb") as f:
      f.write(b"the cat\n\xff\xfe broken\na dog\n")
    out = self._path("bad.hdf5")
    with self.assertRaisesRegex(text_io.InputError, r"bad\.txt:2: invalid"):
      embed_lib.embed_file(self.loaded, bad, out)
    self.assertFalse(os.path.exists(out))
    self.assertEqual([n for n in os.listdir(self.tmp) if "partial" in n], [])
    stats = embed_lib.embed_file(self.loaded, bad, out, on_bad_line="skip")
    self.assertEqual((stats.embedded, stats.bad_lines), (2, 1))
    with h5py.File(out, "r") as f:
      self.assertEqual(sorted(k for k in f if k != "sentence_to_index"),
                       ["0", "2"])
    with self.assertRaisesRegex(text_io.InputError, "--overwrite"):
      embed_lib.embed_file(self.loaded, bad, out, on_bad_line="skip")
    embed_lib.embed_file(self.loaded, bad, out, on_bad_line="skip",
                         overwrite=True)

  def test_scores_equal_the_bilm_loss(self):
    # A batch of two lengths: padding must not add terms.
    results = score_lib.score_sentences(self.loaded, [LINES[0], LINES[2]])
    alone = score_lib.score_sentences(self.loaded, [LINES[2]])[0]
    self.assertAlmostEqual(alone["backward_log_prob"],
                           results[1]["backward_log_prob"], places=4)
    _, vocab, model, _ = checkpoints_lib.load_trained_model(self.model_dir)
    for result in results:
      tokens = tf.ragged.constant([result["text"].split()])
      batch = sentences_lib.pack_sentences(tokens, vocab.lookup)
      ids = batch["token_ids"]
      zeros = tf.zeros_like(ids[:, :1])
      batch["forward_targets"] = tf.concat([ids[:, 1:], zeros], 1)
      batch["backward_targets"] = tf.concat([zeros, ids[:, :-1]], 1)
      out = model(batch, training=False)
      self.assertEqual(result["token_count"], len(result["tokens"]) + 1)
      self.assertAlmostEqual(
          result["forward_log_prob"],
          -float(out["forward_loss"]) * result["token_count"], places=3)
      self.assertAlmostEqual(
          result["backward_log_prob"],
          -float(out["backward_loss"]) * result["token_count"], places=3)
    self.assertEqual(results[1]["n_unk"], 2)  # zebras, juggle
    self.assertEqual(results[0]["n_unk"], 0)
    # The per-token log-probabilities add up to the totals (less the
    # boundary term).
    per_token = score_lib.token_log_probs(self.loaded, LINES[0])
    self.assertEqual(per_token["tokens"], LINES[0].split())
    self.assertLess(float(np.sum(per_token["forward"])), 0.0)
    self.assertGreater(float(np.sum(per_token["forward"])),
                       results[0]["forward_log_prob"])

  def test_rank_orders_by_perplexity(self):
    ranked = score_lib.rank(score_lib.score_sentences(
        self.loaded, ["the cat sees a dog .", "dog a sees cat the ."]))
    self.assertEqual([r["rank"] for r in ranked], [1, 2])
    self.assertLessEqual(ranked[0]["perplexity"], ranked[1]["perplexity"])

  def test_programs_end_to_end(self):
    out = self._path("cli.hdf5")
    result = _run("bin.embed", f"--saved_model={self.saved_model}",
                  f"--input={self.input}", f"--output={out}",
                  "--layers=top")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("sentences/s", result.stdout + result.stderr)
    with h5py.File(out, "r") as f:
      self.assertEqual(f["3"].shape, (10, 32))
    again = _run("bin.embed", f"--saved_model={self.saved_model}",
                 f"--input={self.input}", f"--output={out}")
    self.assertEqual(again.returncode, 1)
    self.assertIn("--overwrite", again.stderr)

    scored = _run("bin.score", f"--model_dir={self.model_dir}",
                  f"--input={self.input}", "--rank")
    self.assertEqual(scored.returncode, 0, scored.stderr[-3000:])
    rows = [json.loads(line) for line in scored.stdout.splitlines()]
    self.assertEqual(sorted(r["text"] for r in rows),
                     sorted(line for line in LINES if line))
    for row in rows:
      for key in ("text", "tokens", "forward_log_prob", "backward_log_prob",
                  "average_log_prob", "perplexity", "n_unk", "rank"):
        self.assertIn(key, row)
    both = _run("bin.score", f"--model_dir={self.model_dir}",
                f"--saved_model={self.saved_model}", f"--input={self.input}")
    self.assertNotEqual(both.returncode, 0)
    self.assertIn("exactly one of --saved_model or --model_dir", both.stderr)


if __name__ == "__main__":
  unittest.main()
