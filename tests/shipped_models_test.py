"""The SavedModels shipped under savedmodels/: present, small, documented, working.

Each shipped model directory holds the SavedModel (written by bin/export),
`test_perplexity.json` (written by bin/evaluate for the same checkpoint) and
`README.md`, its card. The card's perplexities must be the evaluated ones,
and the SavedModel must load from where it is and embed text in its own
language.
"""

import json
import os
import subprocess
import sys
import unittest

import numpy as np
import tensorflow as tf

SAVEDMODELS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "savedmodels")
MAX_MEGABYTES = 50

# name -> (tokenization, a sentence, its expected number of tokens)
SHIPPED = {
    "ptb": ("whitespace", "the company said it expects higher sales", 7),
    "peoples_daily_chars": ("chinese_chars", "我们在北京学习中文。iPhone 2018", 12),
}
# Models exported with their softmax, hence a `log_probs` signature.
SCORING = ("ptb", "peoples_daily_chars")


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


  def test_scoring_signature_where_the_softmax_was_exported(self):
    for name in SHIPPED:
      model = tf.saved_model.load(os.path.join(SAVEDMODELS, name))
      self.assertEqual("log_probs" in model.signatures, name in SCORING, name)

  def test_chinese_model_prefers_the_fluent_order(self):
    # The tutorial's example: 今天是周日 ("today is Sunday") is fluent,
    # 今天周日是 is not. Same characters, so total log-probabilities compare.
    model = tf.saved_model.load(os.path.join(SAVEDMODELS,
                                             "peoples_daily_chars"))
    out = model.signatures["log_probs"](tf.constant(["今天是周日", "今天周日是"]))
    average = 0.5 * (out["forward_log_prob"] + out["backward_log_prob"])
    self.assertGreater(float(average[0]), float(average[1]))
    self.assertAllEqual(out["token_count"], [6, 6])
    self.assertAllEqual(out["unk_count"], [0, 0])
    # Both directions agree.
    self.assertGreater(float(out["forward_log_prob"][0]),
                       float(out["forward_log_prob"][1]))
    self.assertGreater(float(out["backward_log_prob"][0]),
                       float(out["backward_log_prob"][1]))

  def test_english_model_prefers_the_fluent_order(self):
    # bench/scoring/stock.txt: the same five words, in order and scrambled.
    model = tf.saved_model.load(os.path.join(SAVEDMODELS, "ptb"))
    out = model.signatures["log_probs"](tf.constant(
        ["the stock market fell sharply", "market the fell sharply stock"]))
    self.assertAllEqual(out["token_count"], [6, 6])
    self.assertAllEqual(out["unk_count"], [0, 0])
    for key in ("forward_log_prob", "backward_log_prob"):
      self.assertGreater(float(out[key][0]), float(out[key][1]) + 5.0, key)

  def test_loads_with_plain_tensorflow(self):
    # Like TF-Hub's ELMo modules: no op library to import first, with
    # tf.saved_model.load and hub.load.
    code = (
        "import sys, tensorflow as tf\n"
        f"for name in {list(SHIPPED)!r}:\n"
        f"  m = tf.saved_model.load({SAVEDMODELS!r} + '/' + name)\n"
        "  out = m.signatures['default'](tf.constant(['the cat sat', '今天是周日']))\n"
        "  assert out['elmo'].shape[0] == 2, out['elmo'].shape\n"
        "import tensorflow_hub as hub\n"
        f"h = hub.load({SAVEDMODELS!r} + '/ptb')\n"
        "assert h.signatures['tokens'](tokens=tf.constant([['the', '']]),\n"
        "    sequence_len=tf.constant([1]))['elmo'].shape[1] == 2\n"
        "assert 'tensorflow_text' not in sys.modules\n")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    result = subprocess.run([sys.executable, "-c", code], env=env,
                            capture_output=True, text=True, timeout=300,
                            check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])


if __name__ == "__main__":
  unittest.main()
