"""Exported SavedModels load with plain TensorFlow, as TF-Hub's ELMo does.

The `default` signature tokenizes raw text in the graph with core ops only,
so loading it needs no op library (before, it failed with "Op type not
registered 'RegexSplitWithOffsets'" unless the caller imported
tensorflow_text). Each check loads the SavedModel in a fresh interpreter that
imports TensorFlow and numpy only, runs it, and asserts at the end that
tensorflow_text was never imported; this process (which may have imported
tensorflow_text through other modules) computes what it must give.
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

import numpy as np
import tensorflow as tf

from elmo_tf import export as export_lib
from elmo_tf import tokenizers
from tests import export_testutil
from tests import tokenizers_test

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORTABLE_MODES = ("whitespace", "segmented", "chinese_chars")

# Runs in the fresh interpreter: argv[1] is a JSON file
# {"models": {name: path}, "signature": ..., "inputs": [str], "output": path}.
# Writes {name: {output key: nested list}} as JSON to "output".
_RUN_SAVED_MODELS = textwrap.dedent("""\
    import json
    import sys

    import numpy as np
    import tensorflow as tf

    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
    with open(sys.argv[1], encoding="utf-8") as f:
      job = json.load(f)
    text = tf.constant(job["inputs"], dtype=tf.string)
    results = {}
    for name, path in job["models"].items():
      model = tf.saved_model.load(path)
      outputs = model.signatures[job["signature"]](text=text)
      results[name] = {
          key: (decode(value.numpy()) if value.dtype == tf.string
                else value.numpy()).tolist()
          for key, value in outputs.items()}
    with open(job["output"], "w", encoding="utf-8") as f:
      json.dump(results, f)
    loaded = sorted(m for m in sys.modules if m.startswith("tensorflow_text"))
    assert not loaded, f"tensorflow_text was imported: {loaded}"
    assert "elmo_tf" not in sys.modules
    """)


def _run_in_fresh_interpreter(directory: str, models: dict[str, str],
                              signature: str, inputs: list[str]) -> dict:
  """Loads and runs `models` in a new interpreter; returns their outputs."""
  job = os.path.join(directory, "job.json")
  output = os.path.join(directory, "outputs.json")
  with open(job, "w", encoding="utf-8") as f:
    json.dump({"models": models, "signature": signature, "inputs": inputs,
               "output": output}, f)
  result = subprocess.run(
      [sys.executable, "-c", _RUN_SAVED_MODELS, job], cwd=directory,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO_ROOT),
      capture_output=True, text=True, timeout=280, check=False)
  if result.returncode != 0:
    raise AssertionError(f"The fresh interpreter failed:\n"
                         f"{result.stderr[-3000:]}")
  with open(output, encoding="utf-8") as f:
    return json.load(f)


class TokenizerModule(tf.Module):
  """A SavedModel holding only a tokenizer: the part that needed tf_text."""

  def __init__(self, mode: str):
    super().__init__()
    self._tokenizer = tokenizers.get_tokenizer(mode)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
  def tokenize(self, text):
    tokens = self._tokenizer.tokenize(text)  # (batch, (tokens))
    return {"tokens": tokens.to_tensor(default_value=""),  # (batch, time)
            "sequence_len": tokens.row_lengths()}  # (batch,)


class PortableSavedModelTest(unittest.TestCase):

  def test_tokenizers_of_every_exportable_mode(self):
    inputs = (tokenizers_test.NAMED
              + tokenizers_test.fuzz_strings(200, seed=11))
    with tempfile.TemporaryDirectory() as tmp:
      models = {}
      for mode in EXPORTABLE_MODES:
        module = TokenizerModule(mode)
        models[mode] = os.path.join(tmp, mode)
        tf.saved_model.save(module, models[mode],
                            signatures={"tokenize": module.tokenize})
      outputs = _run_in_fresh_interpreter(tmp, models, "tokenize", inputs)
    for mode in EXPORTABLE_MODES:
      # What corpus preparation gives for the same lines.
      expected = tokenizers.get_tokenizer(mode).tokenize_lines(inputs)
      tokens = outputs[mode]["tokens"]
      lengths = outputs[mode]["sequence_len"]
      for index, line in enumerate(inputs):
        self.assertEqual(tokens[index][:lengths[index]], expected[index],
                         f"{mode}: {line!r}")

  def test_exported_tiny_model_embeds_text(self):
    sentences = ["the cat sees a dog .", "the\x00market fell", "",
                 "the market fell", "zebras\u3000juggle\u00a0quietly"]
    with tempfile.TemporaryDirectory() as tmp:
      model_dir = export_testutil.train_tiny_model(tmp)
      out_dir = export_lib.export_saved_model(model_dir,
                                              os.path.join(tmp, "exported"))
      outputs = _run_in_fresh_interpreter(
          tmp, {"tiny": out_dir}, "default", sentences)["tiny"]
      # The same SavedModel run here.
      expected = tf.saved_model.load(out_dir).signatures["default"](
          text=tf.constant(sentences))
    self.assertEqual(outputs["sequence_len"], [6, 3, 0, 3, 3])
    for key in ("elmo", "default", "word_emb", "sequence_len", "mask"):
      np.testing.assert_allclose(np.array(outputs[key]),
                                 expected[key].numpy(), rtol=1e-5, atol=1e-6,
                                 err_msg=key)
    elmo = np.array(outputs["elmo"])  # (5, 6, 2P)
    self.assertEqual(elmo.shape[:2], (5, 6))
    self.assertTrue(np.isfinite(elmo).all())
    self.assertGreater(np.abs(elmo[0]).sum(), 0.0)
    # NUL is whitespace: "the\0market fell" is "the market fell".
    np.testing.assert_allclose(elmo[1], elmo[3], rtol=1e-5, atol=1e-6)


if __name__ == "__main__":
  unittest.main()
