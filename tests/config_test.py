"""Tests for elmo_tf.config: JSON round trip, presets, overrides."""

import json
import os
import tempfile
import unittest

from elmo_tf import config as config_lib


class ConfigTest(unittest.TestCase):

  def test_every_preset_round_trips_through_json(self):
    for name, model in config_lib.PRESETS.items():
      experiment = config_lib.ExperimentConfig(model=model)
      restored = config_lib.ExperimentConfig.from_json(experiment.to_json())
      self.assertEqual(restored, experiment, name)
      # Filters come back as tuples of tuples, not lists.
      self.assertIsInstance(restored.model.char_cnn.filters[0], tuple)

  def test_save_and_load(self):
    experiment = config_lib.ExperimentConfig(
        model=config_lib.preset("small").replace(vocab_size=1234))
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "config.json")
      experiment.save(path)
      with open(path) as f:
        self.assertEqual(json.load(f)["model"]["vocab_size"], 1234)
      self.assertEqual(config_lib.ExperimentConfig.load(path), experiment)

  def test_unknown_field_is_rejected_with_its_name(self):
    data = config_lib.ExperimentConfig().to_dict()
    data["model"]["lstm"]["cells"] = 3
    with self.assertRaisesRegex(ValueError, "cells"):
      config_lib.ExperimentConfig.from_dict(data)

  def test_overrides_parse_json_values_and_nested_paths(self):
    experiment = config_lib.ExperimentConfig(model=config_lib.preset("tiny"))
    changed = config_lib.apply_overrides(experiment, {
        "model.lstm.cell_dim": "64",
        "model.char_cnn.filters": "[[1, 4], [2, 8]]",
        "train.learning_rate": 1,
        "data.corpus": "a/*.txt",
    })
    self.assertEqual(changed.model.lstm.cell_dim, 64)
    self.assertEqual(changed.model.char_cnn.filters, ((1, 4), (2, 8)))
    self.assertEqual(changed.train.learning_rate, 1.0)
    self.assertIsInstance(changed.train.learning_rate, float)
    self.assertEqual(changed.data.corpus, "a/*.txt")
    # The original is frozen and unchanged.
    self.assertEqual(experiment.model.lstm.cell_dim, 32)

  def test_bad_override_names_the_path(self):
    experiment = config_lib.ExperimentConfig()
    with self.assertRaisesRegex(ValueError, "model.lstm.nope"):
      config_lib.apply_overrides(experiment, {"model.lstm.nope": 1})
    with self.assertRaisesRegex(ValueError, "train.epochs"):
      config_lib.apply_overrides(experiment, {"train.epochs": "ten"})

  def test_export_config_round_trips_through_json(self):
    defaults = config_lib.ExportConfig()
    self.assertEqual(defaults.l2_coef, 1e-3)  # The paper's lambda.
    self.assertIsNone(defaults.tokenization)  # The model's own.
    self.assertFalse(defaults.trainable_biLM)
    self.assertFalse(defaults.do_layer_norm)
    changed = defaults.replace(trainable_biLM=True, l2_coef=0.5,
                               do_layer_norm=True, tokenization="segmented")
    for options in (defaults, changed):
      restored = config_lib.ExportConfig.from_json(options.to_json())
      self.assertEqual(restored, options)
    self.assertIsNone(json.loads(defaults.to_json())["tokenization"])
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "export.json")
      changed.save(path)
      self.assertEqual(config_lib.ExportConfig.load(path), changed)
    # An integer coefficient comes back as a float.
    self.assertIsInstance(
        config_lib.ExportConfig.from_dict({"l2_coef": 1}).l2_coef, float)
    with self.assertRaisesRegex(ValueError, "l2"):
      config_lib.ExportConfig.from_dict({"l2": 1.0})

  def test_unknown_preset(self):
    with self.assertRaisesRegex(ValueError, "cpu_small"):
      config_lib.preset("huge")


if __name__ == "__main__":
  unittest.main()
