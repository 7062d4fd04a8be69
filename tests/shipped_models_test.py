"""The SavedModels shipped under savedmodels/: present, small, documented, working.

Each shipped model directory holds the SavedModel (written by bin/export),
`test_perplexity.json` (written by bin/evaluate for the same checkpoint) and
`README.md`, its card. The card's perplexities must be the evaluated ones,
and the SavedModel must load from where it is and embed text in its own
language.
"""

import json
import os
import unittest

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  Registers the in-graph tokenizer ops.

SAVEDMODELS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "savedmodels")
MAX_MEGABYTES = 50

# name -> (tokenization, a sentence, its expected number of tokens)
SHIPPED = {
    "ptb": ("whitespace", "the company said it expects higher sales", 7),
    "peoples_daily_chars": ("chinese_chars", "我们在北京学习中文。iPhone 2018", 12),
}


def _megabytes(path: str) -> float:
  total = 0
  for root, _, files in os.walk(path):
    total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  return total / 2**20


class ShippedModelsTest(tf.test.TestCase):

  def test_every_model_is_shipped(self):
    for name in SHIPPED:
      self.assertTrue(
          os.path.exists(os.path.join(SAVEDMODELS, name, "saved_model.pb")),
          f"savedmodels/{name} is missing")

  def test_size(self):
    for name in SHIPPED:
      self.assertLess(_megabytes(os.path.join(SAVEDMODELS, name)),
                      MAX_MEGABYTES, name)

  def test_card_quotes_the_evaluation_of_the_exported_checkpoint(self):
    for name in SHIPPED:
      directory = os.path.join(SAVEDMODELS, name)
      with open(os.path.join(directory, "test_perplexity.json")) as f:
        evaluation = json.load(f)
      with open(os.path.join(directory, "assets", "elmo_tf.json")) as f:
        info = json.load(f)
      with open(os.path.join(directory, "README.md"), encoding="utf-8") as f:
        card = f.read()
      for mode, result in evaluation.items():
        self.assertEqual(result["split"], "test")
        self.assertEqual(os.path.basename(result["checkpoint"]),
                         info["checkpoint"],
                         f"{name}: evaluated {result['checkpoint']}, "
                         f"exported {info['checkpoint']}")
        for key in ("forward_perplexity", "backward_perplexity"):
          self.assertIn(f"{result[key]:.1f}", card,
                        f"{name}/README.md does not quote {mode} {key}")
      self.assertIn("bin.train", card)  # How it was trained.
      self.assertIn("hub.KerasLayer", card)  # How to use it.

  def test_embeds_text_in_its_language(self):
    for name, (tokenization, sentence, n_tokens) in SHIPPED.items():
      directory = os.path.join(SAVEDMODELS, name)
      model = tf.saved_model.load(directory)
      with open(os.path.join(directory, "assets", "elmo_tf.json")) as f:
        info = json.load(f)
      self.assertEqual(info["tokenization"], tokenization)
      outputs = model.signatures["default"](tf.constant([sentence, ""]))
      width = 2 * info["projection_dim"]
      self.assertAllEqual(outputs["sequence_len"], [n_tokens, 0])
      self.assertEqual(outputs["elmo"].shape, (2, n_tokens, width))
      self.assertEqual(outputs["default"].shape, (2, width))
      self.assertTrue(np.all(np.isfinite(outputs["elmo"].numpy())))
      self.assertGreater(float(tf.norm(outputs["default"][0])), 0.0)
      self.assertAllEqual(outputs["default"][1], np.zeros(width))

  def test_vectors_are_contextual(self):
    # The first token of two sentences that differ after it: the same
    # context-free vector, different biLM vectors (the backward LSTM reads
    # the rest of the sentence).
    pairs = {"ptb": ["the cat sat", "the market fell sharply"],
             "peoples_daily_chars": ["中国人民", "中午吃饭"]}
    for name, sentences in pairs.items():
      model = tf.saved_model.load(os.path.join(SAVEDMODELS, name))
      outputs = model.signatures["default"](tf.constant(sentences))
      self.assertAllClose(outputs["word_emb"][0, 0], outputs["word_emb"][1, 0])
      difference = tf.norm(outputs["lstm_outputs1"][0, 0] -
                           outputs["lstm_outputs1"][1, 0])
      self.assertGreater(float(difference), 1e-3, name)


if __name__ == "__main__":
  unittest.main()
