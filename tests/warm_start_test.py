"""Fine-tuning (TrainConfig.init_from, data.vocab_file, bin/train --init_from)
on a tiny model trained on the toy text, then on text with other words."""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import corpora
from elmo_tf import export as export_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf import trainer as trainer_lib
from elmo_tf import warm_start
from tests import export_testutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The new domain: toy-grammar words in other sentences, and words the
# source never saw (they become <UNK> targets).
_DOMAIN_SENTENCES = [
    "the zebra likes the green tree .",
    "a dog juggles the ball quietly .",
    "my sister sees a quiet zebra near the school .",
    "the old man hears her friend in the park .",
]


def _write_domain_text(directory: str) -> str:
  os.makedirs(directory, exist_ok=True)
  paths = {}
  for split, repeat in (("train", 40), ("valid", 3), ("test", 3)):
    paths[split] = os.path.join(directory, f"{split}.txt")
    with open(paths[split], "w", encoding="utf-8") as f:
      f.write("\n".join(_DOMAIN_SENTENCES * repeat) + "\n")
  return ";".join(f"{s}={paths[s]}" for s in ("train", "valid", "test"))


def _weights(model) -> dict[str, np.ndarray]:
  return {key: variable.numpy() for key, variable in
          checkpoints_lib.weights_by_path(model).items()}


class WarmStartTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.tmp = tempfile.mkdtemp()
    cls.source_dir = export_testutil.train_tiny_model(
        os.path.join(cls.tmp, "source"), max_steps=40)
    cls.saved_model = export_lib.export_saved_model(
        cls.source_dir, os.path.join(cls.tmp, "source_export"))
    _, _, source_model, _ = checkpoints_lib.load_trained_model(cls.source_dir)
    cls.source_weights = _weights(source_model)
    cls.source_config, cls.source_vocab = checkpoints_lib.read_run(
        cls.source_dir)
    cls.domain = _write_domain_text(os.path.join(cls.tmp, "domain"))
    cls.cache = os.path.join(cls.tmp, "cache")

  def _config(self, init_from: str, vocab_file: str | None = None,
              **train_overrides) -> config_lib.ExperimentConfig:
    source = warm_start.read_source(init_from)
    config = source.config
    return config.replace(
        data=config.data.replace(
            corpus=self.domain,
            vocab_file=source.vocab_path if vocab_file is None else vocab_file),
        train=config.train.replace(init_from=init_from, max_steps=4,
                                   checkpoint_every_steps=2,
                                   log_every_steps=2, **train_overrides))

  def test_fixed_vocabulary_is_kept_and_its_coverage_reported(self):
    vocab_file = checkpoints_lib.vocab_path(self.source_dir)
    prepared = prepare_lib.prepare_cached(self.domain, "whitespace",
                                          self.cache, vocab_file=vocab_file)
    self.assertEqual(prepared.vocab.tokens, self.source_vocab.tokens)
    info = prepared.manifest["vocabulary"]
    # Keyed by content: the export's copy of this file shares the directory.
    with open(vocab_file, "rb") as f:
      self.assertEqual(info["fixed_sha256"],
                       hashlib.sha256(f.read()).hexdigest())
    self.assertTrue(info["fixed_from"].endswith("vocab.txt"))
    # "zebra" (twice), "juggles", "quietly", "quiet": 5 of every 34
    # training tokens are unknown to the source.
    coverage = info["train_coverage"]
    self.assertGreater(coverage["oov_rate"], 0.0)
    self.assertLess(coverage["oov_rate"], 0.2)
    self.assertEqual(coverage["oov_types"], 4)
    # Another vocabulary (built from the text) lives in another directory.
    built = prepare_lib.prepare_cached(self.domain, "whitespace", self.cache)
    self.assertNotEqual(built.directory, prepared.directory)
    self.assertIn("zebra", built.vocab)
    self.assertNotIn("zebra", prepared.vocab)

  def test_bad_vocabulary_file_names_file_and_line(self):
    bad = os.path.join(self.tmp, "bad_vocab.txt")
    with open(bad, "w", encoding="utf-8") as f:
      f.write("<S>\n</S>\n<UNK>\nthe\ncat\nthe\n")
    with self.assertRaisesRegex(corpora.CorpusError,
                                r"bad_vocab\.txt:6: duplicate token 'the'"):
      prepare_lib.prepare_cached(self.domain, "whitespace", self.cache,
                                 vocab_file=bad)
    with self.assertRaisesRegex(corpora.CorpusError, "does not exist"):
      prepare_lib.prepare_cached(self.domain, "whitespace", self.cache,
                                 vocab_file=bad + ".missing")

  def test_starts_from_the_saved_models_weights_then_resumes_its_own(self):
    model_dir = os.path.join(self.tmp, "from_saved_model")
    config = self._config(self.saved_model)
    with trainer_lib.make_trainer(config, model_dir,
                                  cache_root=self.cache) as trainer:
      self.assertEqual(trainer.current_step, 0)
      start = _weights(trainer.model)
      self.assertEqual(sorted(start), sorted(self.source_weights))
      for key, value in self.source_weights.items():
        np.testing.assert_array_equal(start[key], value, err_msg=key)
      trainer.train(handle_signals=False)
      trained = _weights(trainer.model)
    # Fine-tuning moved the weights.
    self.assertTrue(any(not np.array_equal(trained[k], start[k])
                        for k in trained))
    # A later start resumes from the run's own checkpoint, not the source.
    with trainer_lib.make_trainer(config.replace(
        train=config.train.replace(max_steps=6)), model_dir,
                                  cache_root=self.cache) as trainer:
      self.assertEqual(trainer.current_step, 4)
      resumed = _weights(trainer.model)
    for key, value in trained.items():
      np.testing.assert_array_equal(resumed[key], value, err_msg=key)

  def test_starts_from_a_run_directory(self):
    model_dir = os.path.join(self.tmp, "from_model_dir")
    config = self._config(self.source_dir)
    with trainer_lib.make_trainer(config, model_dir,
                                  cache_root=self.cache) as trainer:
      start = _weights(trainer.model)
    for key, value in self.source_weights.items():
      np.testing.assert_array_equal(start[key], value, err_msg=key)

  def test_fine_tuning_lowers_the_domains_loss_below_a_fresh_model(self):
    # Warm start: the first step's loss on the new text (computed before
    # its update; the same batch, seed and dropout on both sides) is that of
    # the trained model, below a random initialization's (here 2.77 against
    # 3.07 nats).
    def first_loss(config, name):
      with trainer_lib.make_trainer(config, os.path.join(self.tmp, name),
                                    cache_root=self.cache) as trainer:
        return trainer.train_step()["loss"]
    warm = first_loss(self._config(self.saved_model), "loss_warm")
    cold_config = self._config(self.saved_model)
    cold = first_loss(cold_config.replace(
        train=cold_config.train.replace(init_from="")), "loss_cold")
    self.assertLess(warm, cold - 0.15, (warm, cold))

  def test_other_vocabulary_is_a_clear_error(self):
    config = self._config(self.saved_model, vocab_file="")
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                "vocab_file=.*source_export"):
      trainer_lib.make_trainer(config, os.path.join(self.tmp, "other_vocab"),
                               cache_root=self.cache)

  def test_other_architecture_is_a_clear_error(self):
    config = self._config(self.saved_model)
    config = config_lib.apply_overrides(config, {"model.lstm.cell_dim": 48})
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                r"lstm\.cell_dim: 32 -> 48"):
      trainer_lib.make_trainer(config, os.path.join(self.tmp, "other_arch"),
                               cache_root=self.cache)

  def test_not_a_model_is_a_clear_error(self):
    with self.assertRaisesRegex(checkpoints_lib.TrainingError,
                                "neither a SavedModel"):
      warm_start.read_source(self.tmp)

  def test_bin_train_init_from_takes_the_sources_config_and_vocabulary(self):
    model_dir = os.path.join(self.tmp, "bin_train")
    env = dict(os.environ, ELMO_TF_CACHE=self.cache)
    result = subprocess.run(
        [sys.executable, "-m", "bin.train", f"--init_from={self.saved_model}",
         f"--corpus={self.domain}", f"--model_dir={model_dir}",
         "--max_steps=2", "--learning_rate=0.05", "--noexport"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("Started from the weights of", result.stderr)
    with open(checkpoints_lib.config_path(model_dir), encoding="utf-8") as f:
      saved = json.load(f)
    self.assertEqual(saved["train"]["init_from"], self.saved_model)
    self.assertEqual(saved["data"]["vocab_file"],
                     os.path.join(self.saved_model, "assets", "vocab.txt"))
    self.assertEqual(saved["train"]["learning_rate"], 0.05)
    # The architecture is the source's (the tiny preset), not the default
    # preset's.
    self.assertEqual(saved["model"]["lstm"], self.source_config.model.lstm
                     .to_dict())


if __name__ == "__main__":
  unittest.main()
