"""Tests for elmo_tf.export and bin/export: the SavedModel's signatures.

One tiny model is trained (a few steps) and exported once for the class;
the tests compare the exported graph with the live backbone, the two
signatures and `__call__` with each other, and feed it bad input.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import tokenizers as tokenizers_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.models import backbone as backbone_lib
from tests import export_testutil

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5
FLOAT_KEYS = ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo", "default")


def _numpy(outputs) -> dict[str, np.ndarray]:
  return {key: value.numpy() for key, value in outputs.items()}


def _pad(token_lists, max_len=None):
  """TF-Hub `tokens` inputs: (B, max_len) strings padded with "", lengths."""
  max_len = max_len or max([len(t) for t in token_lists] + [0])
  tokens = [t + [""] * (max_len - len(t)) for t in token_lists]
  return (tf.constant(tokens, tf.string, shape=[len(tokens), max_len]),
          tf.constant([len(t) for t in token_lists], tf.int32))


class ExportTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.model_dir = export_testutil.train_tiny_model(cls.tmp)
    cls.export_dir = export_lib.export_saved_model(
        cls.model_dir, os.path.join(cls.tmp, "export", "elmo"))
    cls.loaded = tf.saved_model.load(cls.export_dir)
    _, _, bilm, _ = checkpoints_lib.load_trained_model(cls.model_dir)
    cls.backbone = bilm.backbone  # The live network, as trained.
    cls.p = cls.backbone.projection_dim

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def default(self, sentences, loaded=None):
    loaded = loaded or self.loaded
    return _numpy(loaded.signatures["default"](
        tf.constant(sentences, tf.string, shape=[len(sentences)])))

  def tokens(self, token_lists, max_len=None):
    tokens, lengths = _pad(token_lists, max_len)
    return _numpy(self.loaded.signatures["tokens"](tokens=tokens,
                                                   sequence_len=lengths))

  def live(self, tokens, backbone=None, vocab=None):
    """The live backbone on `<S> tokens </S>` alone (char ids from the
    pure-Python reference); the outputs the export must reproduce."""
    backbone = backbone or self.backbone
    tokens_s = [vocab_lib.BOS_TOKEN] + tokens + [vocab_lib.EOS_TOKEN]
    inputs = {"char_ids": tf.constant(
        np.stack([vocab_lib.char_ids_numpy(t) for t in tokens_s])[None])}
    if vocab is not None:
      inputs["token_ids"] = tf.constant(
          [[vocab.token_to_id(t) for t in tokens_s]], tf.int32)
    out = backbone(inputs, training=False)
    layers = np.asarray(out["layer_activations"][0],
                        np.float32)[:, 1:-1]  # (L+1, n, 2P)
    # Freshly exported mix: s = 0 (equal weights), gamma = 1.
    elmo = layers.mean(axis=0)  # (n, 2P)
    return {
        "word_emb": np.asarray(out["token_representation"][0],
                               np.float32)[1:-1],
        "lstm_outputs1": layers[1],
        "lstm_outputs2": layers[2],
        "elmo": elmo,
        "default": elmo.mean(axis=0) if tokens else np.zeros(2 * self.p),
    }

  def assertRowMatches(self, outputs, row, expected, n):
    """Row `row` of batched outputs equals `expected` on its n tokens and is
    zero on the padding after them."""
    self.assertEqual(outputs["sequence_len"][row], n)
    self.assertAllEqual(outputs["mask"][row],
                        np.arange(outputs["mask"].shape[1]) < n)
    for key in FLOAT_KEYS:
      got = outputs[key][row]
      if key == "default":
        self.assertAllClose(got, expected[key], atol=ATOL, msg=key)
      else:
        self.assertAllClose(got[:n], expected[key][:n], atol=ATOL, msg=key)
        self.assertAllEqual(got[n:], np.zeros_like(got[n:]))

  # --- Structure ---

  def test_signatures_assets_and_reusable_api(self):
    self.assertCountEqual(self.loaded.signatures,
                          ["default", "tokens", "log_probs"])
    default_inputs = self.loaded.signatures[
        "default"].structured_input_signature[1]
    self.assertEqual(list(default_inputs), ["text"])
    self.assertCountEqual(
        self.loaded.signatures["tokens"].structured_input_signature[1],
        ["tokens", "sequence_len"])
    outputs = self.default(["the cat ."])
    self.assertCountEqual(outputs, export_lib.output_keys(2))
    self.assertEqual(outputs["word_emb"].shape, (1, 3, self.p))
    self.assertEqual(outputs["elmo"].shape, (1, 3, 2 * self.p))
    self.assertEqual(outputs["default"].shape, (1, 2 * self.p))
    self.assertEqual(outputs["sequence_len"].dtype, np.int32)
    self.assertEqual(outputs["mask"].dtype, bool)

    assets = os.path.join(self.export_dir, "assets")
    self.assertCountEqual(os.listdir(assets),
                          ["config.json", "vocab.txt", "elmo_tf.json"])
    with open(os.path.join(assets, "elmo_tf.json")) as f:
      info = json.load(f)
    self.assertEqual(info["tokenization"], "whitespace")
    self.assertEqual(info["outputs"], export_lib.output_keys(2))
    with open(os.path.join(assets, "vocab.txt")) as f, open(
        os.path.join(self.model_dir, "vocab.txt")) as g:
      self.assertEqual(f.read(), g.read())

    # The reusable SavedModel API: only s and gamma train by default.
    self.assertCountEqual([v.name for v in self.loaded.trainable_variables],
                          ["scalar_mix/scalar_weights:0", "scalar_mix/gamma:0"])
    # The backbone's, s and gamma, and the character encoder's cache.
    self.assertLen(self.loaded.variables, len(self.backbone.variables) + 3)
    self.assertLen(self.loaded.regularization_losses, 1)
    s = self.loaded.trainable_variables[0]
    self.assertEqual(s.name, "scalar_mix/scalar_weights:0")
    s.assign([1.0, -2.0, 0.5])
    try:
      self.assertAllClose(self.loaded.regularization_losses[0](),
                          config_lib.ExportConfig().l2_coef * 5.25)
    finally:
      s.assign(tf.zeros_like(s))

  # --- Same numbers as the live model ---

  def test_outputs_equal_the_live_backbone(self):
    sentences = export_testutil.SENTENCES + [""]
    outputs = self.default(sentences)
    for row, sentence in enumerate(sentences):
      tokens = sentence.split()
      self.assertRowMatches(outputs, row, self.live(tokens), len(tokens))

  def test_default_tokens_and_call_agree(self):
    sentences = export_testutil.SENTENCES + [""]
    token_lists = [s.split() for s in sentences]
    by_text = self.default(sentences)  # Time = the longest sentence.
    longest = by_text["mask"].shape[1]
    # Token inputs give outputs as wide as the input, as TF-Hub's ELMo:
    # the extra columns are zeros (False in the mask).
    by_tokens = self.tokens(token_lists, max_len=15)
    called = _numpy(self.loaded(tf.constant(sentences)))
    tokens, lengths = _pad(token_lists, max_len=12)
    called_tokens = _numpy(self.loaded(
        {"tokens": tokens, "sequence_len": lengths}, training=True))
    for other, width in ((by_tokens, 15), (called, longest),
                         (called_tokens, 12)):
      self.assertCountEqual(other, by_text)
      for key in by_text:
        value = other[key]
        if key not in ("default", "sequence_len"):
          self.assertEqual(value.shape[1], width, key)
          self.assertFalse(np.any(value[:, longest:]), key)
          value = value[:, :longest]
        self.assertEqual(value.shape, by_text[key].shape, key)
        self.assertAllClose(value, by_text[key], atol=ATOL, msg=key)

  def test_tokens_signature_is_as_wide_as_its_input(self):
    # TF-Hub's ELMo: fixed-length taggers (Input(shape=(max_len,))) rely on
    # outputs max_len wide, zeros past sequence_len.
    out = self.tokens([["the", "cat"], ["a"]], max_len=3)
    for key in ("word_emb", "lstm_outputs1", "elmo", "mask"):
      self.assertEqual(out[key].shape[:2], (2, 3), key)
    self.assertFalse(np.any(out["elmo"][0, 2:]))
    self.assertFalse(np.any(out["elmo"][1, 1:]))
    self.assertEqual(out["mask"].tolist(),
                     [[True, True, False], [True, False, False]])

  def test_same_sentence_same_vectors_in_any_batch_and_padding(self):
    sentence = export_testutil.SENTENCES[0]
    n = len(sentence.split())
    alone = self.default([sentence])
    long_sentence = " ".join(export_testutil.SENTENCES * 5)  # 70 tokens
    batched = self.default(
        [export_testutil.SENTENCES[1], long_sentence, sentence, "", sentence])
    padded = self.tokens([sentence.split()] * 3, max_len=200)
    expected = {key: alone[key][0] for key in FLOAT_KEYS}
    for outputs, row in ((batched, 2), (batched, 4), (padded, 1)):
      self.assertRowMatches(outputs, row, expected, n)

  # --- Bad input: valid outputs, never a crash ---

  def test_bad_inputs_give_valid_outputs(self):
    words = " ".join(export_testutil.SENTENCES).split()
    thousand = " ".join(words[i % len(words)] for i in range(1000))
    cases = [
        ("", 0),
        (" \t\u3000 \n ", 0),  # Whitespace only (ASCII and ideographic).
        (thousand, 1000),
        ("x" * 80 + " " + "\u00e9" * 40, 2),  # Tokens of 80 bytes.
        ("I \u2764\ufe0f \U0001F431 \U0001F468\u200d\U0001F469\u200d"
         "\U0001F467 !", 5),  # Emoji, a ZWJ sequence.
        ("cafe\u0301 nai\u0308ve \u0915\u094d\u0937", 3),  # Combining marks.
        ("\u6211\u7231 New York \u7684 pizza", 5),  # Mixed Chinese/English.
    ]
    sentences = [text for text, _ in cases]
    outputs = self.default(sentences)
    max_len = 1000
    for key in ("word_emb", "elmo", "lstm_outputs1"):
      self.assertEqual(outputs[key].shape[:2], (len(cases), max_len))
      self.assertTrue(np.all(np.isfinite(outputs[key])), key)
    self.assertAllEqual(outputs["sequence_len"], [n for _, n in cases])
    for row, (text, n) in enumerate(cases):
      # Each sentence alone gives the same vectors as in this batch.
      alone = self.default([text])
      self.assertRowMatches(
          outputs, row, {key: alone[key][0] for key in FLOAT_KEYS}, n)
    # Empty sentences: sequence_len 0, an empty time axis, zero `default`.
    empty = self.default(["", "   "])
    self.assertAllEqual(empty["sequence_len"], [0, 0])
    self.assertEqual(empty["elmo"].shape, (2, 0, 2 * self.p))
    self.assertAllEqual(empty["default"], np.zeros((2, 2 * self.p)))
    # Tokens past byte 48 are cut (bilm-tf's character ids), identically.
    cut = self.default(["a " + "y" * 48 + "1 b", "a " + "y" * 48 + "2 b"])
    self.assertAllClose(cut["elmo"][0], cut["elmo"][1], atol=ATOL)

  def test_empty_batch_and_odd_token_inputs(self):
    for outputs in (self.default([]), self.tokens([])):
      self.assertEqual(outputs["elmo"].shape, (0, 0, 2 * self.p))
      self.assertEqual(outputs["word_emb"].shape, (0, 0, self.p))
      self.assertEqual(outputs["default"].shape, (0, 2 * self.p))
      self.assertEqual(outputs["sequence_len"].shape, (0,))
    # sequence_len is clipped to [0, max_len]; tokens after it are ignored.
    tokens = tf.constant([["the", "cat", "."], ["a", "dog", "zzz"]])
    clipped = _numpy(self.loaded.signatures["tokens"](
        tokens=tokens, sequence_len=tf.constant([7, -1])))
    self.assertAllEqual(clipped["sequence_len"], [3, 0])
    self.assertEqual(clipped["elmo"].shape, (2, 3, 2 * self.p))
    self.assertAllEqual(clipped["elmo"][1], np.zeros((3, 2 * self.p)))
    short = _numpy(self.loaded.signatures["tokens"](
        tokens=tokens, sequence_len=tf.constant([2, 2])))
    self.assertRowMatches(short, 1, self.live(["a", "dog"]), 2)

  # --- Self-contained ---

  def test_moved_directory_keeps_working(self):
    sentences = export_testutil.SENTENCES
    expected = self.default(sentences)
    first = os.path.join(self.tmp, "copy")
    moved = os.path.join(self.tmp, "moved", "elmo")
    shutil.copytree(self.export_dir, first)
    os.makedirs(os.path.dirname(moved))
    os.rename(first, moved)
    # Nothing may be read from the original export or the training run.
    hidden = [(self.export_dir, self.export_dir + ".hidden"),
              (self.model_dir, self.model_dir + ".hidden")]
    for path, away in hidden:
      os.rename(path, away)
    try:
      loaded = tf.saved_model.load(moved)
      outputs = self.default(sentences, loaded=loaded)
      for asset in loaded.assets.values():
        path = asset.asset_path.numpy().decode()
        self.assertTrue(path.startswith(moved), path)
        self.assertTrue(os.path.exists(path), path)
    finally:
      for path, away in hidden:
        os.rename(away, path)
    for key in expected:
      self.assertAllClose(outputs[key], expected[key], atol=ATOL, msg=key)

  # --- Tokenization modes and bin/export ---

  def test_clear_errors_before_loading(self):
    # A jieba model: its tokenizer is Python, not a graph.
    jieba_dir = os.path.join(self.tmp, "jieba_run")
    os.makedirs(jieba_dir)
    config = config_lib.ExperimentConfig.load(
        os.path.join(self.model_dir, "config.json"))
    config = config.replace(data=config.data.replace(tokenization="jieba"))
    config.save(os.path.join(jieba_dir, "config.json"))
    with self.assertRaisesRegex(export_lib.ExportError,
                                r"jieba.*segmented.*chinese_chars"):
      export_lib.export_saved_model(jieba_dir, os.path.join(self.tmp, "x"))
    self.assertFalse(os.path.exists(os.path.join(self.tmp, "x")))
    # A non-empty directory that is not a SavedModel is never replaced.
    with self.assertRaisesRegex(export_lib.ExportError, "not a SavedModel"):
      export_lib.export_saved_model(self.model_dir, self.tmp)
    self.assertTrue(os.path.exists(os.path.join(self.model_dir,
                                                "config.json")))

  def test_bin_export_of_a_word_id_bfloat16_model_with_chinese_chars(self):
    # A second run: word ids in layer 0 ("concat": the vocabulary table goes
    # into the SavedModel), trained in mixed_bfloat16 (exported in float32).
    run_dir = export_testutil.train_tiny_model(
        os.path.join(self.tmp, "concat"), max_steps=2,
        token_encoder="concat", mixed_precision="mixed_bfloat16")
    # A relative --model_dir and the default --out resolve against the
    # directory `bazel run` was called from. (A subprocess: bin.export's
    # flags would clash with other programs' imported by other tests.)
    env = dict(os.environ, BUILD_WORKING_DIRECTORY=os.path.dirname(run_dir),
               CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, "-m", "bin.export",
         f"--model_dir={os.path.basename(run_dir)}",
         "--export_tokenization=chinese_chars", "--l2_coef=0.5"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
        check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = os.path.join(os.path.dirname(run_dir), "savedmodels",
                       os.path.basename(run_dir))
    with open(os.path.join(out, "assets", "elmo_tf.json")) as f:
      info = json.load(f)
    self.assertEqual(info["tokenization"], "chinese_chars")
    self.assertEqual(info["trained_tokenization"], "whitespace")
    self.assertEqual(info["l2_coef"], 0.5)

    loaded = tf.saved_model.load(out)
    sentences = ["\u5979\u4e70\u4e86iPhone\u3002", "a dog \U0001F389!", ""]
    outputs = self.default(sentences, loaded=loaded)
    token_lists = tokenizers_lib.get_tokenizer(
        "chinese_chars").tokenize_lines(sentences)
    self.assertEqual(token_lists[0], ["\u5979", "\u4e70", "\u4e86", "iPhone",
                                      "\u3002"])
    self.assertAllEqual(outputs["sequence_len"], [5, 4, 0])
    for key in FLOAT_KEYS:
      self.assertEqual(outputs[key].dtype, np.float32)
    tokens, lengths = _pad(token_lists)
    by_tokens = _numpy(loaded.signatures["tokens"](tokens=tokens,
                                                   sequence_len=lengths))
    for key in FLOAT_KEYS:
      self.assertAllClose(outputs[key], by_tokens[key], atol=ATOL, msg=key)
    # The live network, rebuilt in float32 with the run's weights.
    _, vocab, bilm, _ = checkpoints_lib.load_trained_model(run_dir)
    keras.mixed_precision.set_global_policy("float32")  # load_... sets bf16.
    live = backbone_lib.ElmoBackbone(bilm.model_config, dtype="float32")
    live.build()
    export_lib.copy_weights(export_lib.backbone_weights(bilm.backbone),
                            export_lib.backbone_weights(live))
    for row in range(2):
      self.assertRowMatches(
          outputs, row, self.live(token_lists[row], live, vocab),
          len(token_lists[row]))

  def test_bin_train_exports_at_the_end_and_again_after_resuming(self):
    directory = os.path.join(self.tmp, "bin_train")
    corpus, cache = export_testutil.prepare_toy_corpus(directory)
    model_dir = os.path.join(directory, "run")
    export_dir = os.path.join(model_dir, "saved_model")  # The default.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")

    def train(max_steps):
      result = subprocess.run(
          [sys.executable, "-m", "bin.train", f"--corpus={corpus}",
           f"--model_dir={model_dir}", "--preset=tiny",
           f"--max_steps={max_steps}", "--batch_size=16",
           "--log_every_steps=1", "--checkpoint_every_steps=100",
           "--eval_every_steps=0", f"--cache_dir={cache}",
           "--set=train.eval_max_batches=1", "--export_trainable_bilm"],
          cwd=REPO_ROOT, env=env, capture_output=True, text=True,
          timeout=300, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      with open(os.path.join(export_dir, "assets", "elmo_tf.json")) as f:
        return result.stdout, json.load(f)

    stdout, info = train(max_steps=2)
    self.assertIn(f"SavedModel:             {export_dir}\n", stdout)
    self.assertIn(f"hub.KerasLayer({export_dir!r}", stdout)
    self.assertEqual(info["checkpoint"], "ckpt-2")
    self.assertTrue(info["trainable_biLM"])
    self.assertEqual(info["l2_coef"], config_lib.ExportConfig().l2_coef)
    # Resumed and finished again: the export is replaced by the new weights.
    _, info = train(max_steps=3)
    self.assertEqual(info["checkpoint"], "ckpt-3")
    self.assertFalse(os.path.exists(export_dir + ".partial"))
    loaded = tf.saved_model.load(export_dir)
    self.assertLen(loaded.trainable_variables,
                   len(export_lib.backbone_weights(self.backbone)) + 2)

  def test_saved_model_cli_runs_the_signatures(self):
    # saved_model_cli loads with the TF1 loader (a Session restoring the
    # MetaGraph's SaverDef), not tf.saved_model.load: the variables the
    # signatures read must be the ones it restores (issue 11).
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")

    def run(signature, input_exprs):
      result = subprocess.run(
          [cli, "run", "--dir", self.export_dir, "--tag_set", "serve",
           "--signature_def", signature, "--input_exprs", input_exprs],
          env=env, capture_output=True, text=True, timeout=300, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      # "Result for output key K:" then the array as numpy prints it.
      blocks = result.stdout.split("Result for output key ")[1:]
      printed = {}
      for block in blocks:
        key, text = block.split(":\n", 1)
        # numpy's repr without commas -> a Python literal.
        text = re.sub(r"(?<=[\d.\]'eE])\s+(?=[-\d.\[b'TF])", ", ",
                      text.strip())
        printed[key] = np.array(ast.literal_eval(text))
      return printed

    sentences = ["the cat sat .", "a dog"]
    printed = run("default", f"text={sentences!r}")
    expected = self.default(sentences)
    self.assertIn("elmo", printed)
    self.assertCountEqual(printed, export_lib.output_keys(2))
    self.assertEqual(printed["elmo"].shape, (2, 4, 2 * self.p))
    self.assertEqual(printed["word_emb"].shape, (2, 4, self.p))
    self.assertEqual(printed["default"].shape, (2, 2 * self.p))
    for key, value in expected.items():
      self.assertEqual(printed[key].shape, value.shape, msg=key)
      self.assertAllClose(printed[key], value, atol=ATOL, msg=key)

    token_lists = [["the", "cat"], ["a"]]
    printed = run("tokens", "tokens=[['the', 'cat', ''], ['a', '', '']];"
                  "sequence_len=[2, 1]")
    expected = self.tokens(token_lists, max_len=3)
    self.assertIn("elmo", printed)
    self.assertEqual(printed["elmo"].shape, (2, 3, 2 * self.p))
    self.assertAllEqual(printed["sequence_len"], [2, 1])
    for key, value in expected.items():
      self.assertEqual(printed[key].shape, value.shape, msg=key)
      self.assertAllClose(printed[key], value, atol=ATOL, msg=key)


if __name__ == "__main__":
  unittest.main()
