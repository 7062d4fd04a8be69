"""The published ELMo weight format: bilm-tf's golden outputs and round trips.

The golden test imports bilm-tf's own test fixture
(testdata/bilm_tf_fixture, see its NOTICE.md) and reproduces the outputs
bilm-tf computed with it: batch 0 from zero state through the SavedModel,
batches 0-9 with the LSTM state carried from batch to batch as bilm-tf's
stateful BidirectionalLanguageModel does (`hdf5_weights.run_stateful`).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py
import keras
import numpy as np
import tensorflow as tf
import tensorflow_hub as hub

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import export as export_lib
from elmo_tf import hdf5_weights
from elmo_tf import sentences as sentences_lib
from elmo_tf import vocab as vocab_lib
from elmo_tf.elmo_embedding import ElmoEmbedding

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata",
                       "bilm_tf_fixture")
OPTIONS = os.path.join(FIXTURE, "options.json")
WEIGHTS = os.path.join(FIXTURE, "lm_weights.hdf5")
# bilm-tf's own test uses 1e-6; the issue asks for 1e-5.
ATOL = 1e-5
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "."]


def _dataset_arrays(path: str) -> dict[str, np.ndarray]:
  arrays = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: arrays.__setitem__(name, obj[...])
                 if isinstance(obj, h5py.Dataset) else None)
  return arrays


def _expected_outputs():
  """bilm-tf's sentences (3 streams x 10) and top-layer outputs, each
  (n_tokens, 32) = [forward; backward] (stored as (2, n_tokens, 16))."""
  with open(os.path.join(FIXTURE, "lm_embeddings_sentences.json"),
            encoding="utf-8") as f:
    streams = json.load(f)
  expected = []
  for k in range(len(streams)):
    with h5py.File(os.path.join(FIXTURE, f"lm_embeddings_{k}.hdf5"), "r") as f:
      expected.append([np.concatenate([f[str(i)][0], f[str(i)][1]], axis=-1)
                       for i in range(len(streams[k]))])
  return streams, expected


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, "-m", module, *args], cwd=REPO_ROOT,
      env=dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO_ROOT),
      capture_output=True, text=True, timeout=600, check=False)


def _random_backbone(model_config, seed):
  keras.utils.set_random_seed(seed)
  backbone = hdf5_weights.build_backbone(model_config)
  # Non-zero biases, so that the bias mapping is checked too.
  rng = np.random.default_rng(seed)
  for key, weight in checkpoints_lib.weights_by_path(backbone).items():
    if key.endswith("bias"):
      weight.assign(rng.normal(0.0, 0.5, weight.shape).astype(np.float32))
  return backbone


def _char_inputs(sentences):
  tokens = tf.ragged.constant(sentences)
  return sentences_lib.pack_sentences(tokens)


class GoldenTest(tf.test.TestCase):
  """bilm-tf's fixture, imported and run."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.saved_model = hdf5_weights.import_hdf5(
        OPTIONS, WEIGHTS, os.path.join(cls.tmp, "fixture"))
    cls.loaded = tf.saved_model.load(cls.saved_model)
    cls.streams, cls.expected = _expected_outputs()

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _batch(self, i):
    return [self.streams[k][i].strip().split() for k in range(3)]

  def test_options_map_to_the_model_config(self):
    config = hdf5_weights.read_options(OPTIONS)
    self.assertEqual(config.token_encoder, "chars")
    self.assertEqual(config.char_cnn.n_characters, 262)
    self.assertEqual(config.char_cnn.embedding_dim, 4)
    self.assertEqual(config.char_cnn.filters,
                     ((1, 4), (2, 8), (3, 16), (4, 32), (5, 64)))
    self.assertEqual(config.char_cnn.n_highway, 2)
    self.assertEqual(config.lstm, config_lib.LSTMConfig(
        n_layers=2, cell_dim=64, projection_dim=16, cell_clip=3.0,
        projection_clip=3.0, forget_bias=1.0, use_residual=False))

  def test_batch_0_from_zero_state_through_the_saved_model(self):
    sentences = self._batch(0)
    width = max(len(s) for s in sentences) + 3  # Wider than needed.
    tokens = tf.constant([s + [""] * (width - len(s)) for s in sentences])
    lengths = tf.constant([len(s) for s in sentences], tf.int32)
    out = self.loaded.signatures["tokens"](tokens=tokens,
                                           sequence_len=lengths)
    text = self.loaded.signatures["default"](
        tf.constant([" ".join(s) for s in sentences]))
    for k, sentence in enumerate(sentences):
      n = len(sentence)
      expected = self.expected[k][0]
      self.assertAllClose(out["lstm_outputs2"][k, :n], expected, atol=ATOL)
      self.assertAllClose(text["lstm_outputs2"][k, :n], expected, atol=ATOL)
      self.assertAllEqual(out["lstm_outputs2"][k, n:],
                          np.zeros((width - n, 32)))

  def test_all_batches_with_bilm_tf_state_carrying(self):
    config, _ = export_lib.read_export(self.saved_model)
    backbone = hdf5_weights.build_backbone(config.model)
    export_lib.restore_weights(self.saved_model, backbone)
    # bilm-tf's test ran with max_batch_size=4 and batches of 3.
    state = hdf5_weights.initial_state(backbone, 4)
    worst = 0.0
    for i in range(len(self.streams[0])):
      sentences = self._batch(i)
      layers, lengths, state = hdf5_weights.run_stateful(
          backbone, sentences, state)
      self.assertEqual(list(lengths), [len(s) for s in sentences])
      for k in range(3):
        got = layers[k, 2, :lengths[k]]  # The top layer.
        self.assertAllClose(got, self.expected[k][i], atol=ATOL,
                            msg=f"batch {i}, sentence {k}")
        worst = max(worst, float(np.max(np.abs(got - self.expected[k][i]))))
      if i == 1:
        # The carried state matters: from zero state batch 1 differs.
        zero, _, _ = hdf5_weights.run_stateful(backbone, sentences)
        self.assertGreater(
            np.max(np.abs(zero[0, 2, :lengths[0]] - self.expected[0][1])),
            100 * ATOL)
    print(f"bilm-tf fixture: max abs difference {worst:.2e} over 10 batches")
    # As bilm-tf's test checks: row 3 never ran, so its state is still
    # zero; a batch of 2 leaves row 2's state unchanged.
    for states in state:
      for pair in states:
        for s in pair:
          self.assertAllEqual(s[3], np.zeros_like(s[3]))
    _, _, after = hdf5_weights.run_stateful(backbone, [["a"], ["b", "c"]],
                                            state)
    for old, new in zip(state, after):
      for old_pair, new_pair in zip(old, new):
        for old_s, new_s in zip(old_pair, new_pair):
          self.assertAllEqual(old_s[2:], new_s[2:])
          self.assertNotAllClose(old_s[:2], new_s[:2])

  def test_keras_layer_and_hub_keras_layer_on_the_imported_model(self):
    sentences = [" ".join(s) for s in self._batch(0)]
    text = tf.constant(sentences)
    expected = self.loaded.signatures["default"](text)
    layer = ElmoEmbedding(self.saved_model, output="all")
    got = layer(text)
    for key in expected:
      self.assertAllClose(got[key], expected[key], atol=1e-6, msg=key)
    n = len(sentences[0].split())
    self.assertAllClose(got["lstm_outputs2"][0, :n], self.expected[0][0],
                        atol=ATOL)
    hub_layer = hub.KerasLayer(self.saved_model, trainable=True,
                               output_key="elmo")
    self.assertAllClose(hub_layer(text), expected["elmo"], atol=1e-6)
    self.assertLen(hub_layer.trainable_weights, 2)  # s_j and gamma.

  def test_written_file_has_exactly_bilm_tf_datasets(self):
    # A model of the fixture's shape written by write_hdf5 has the fixture
    # file's dataset names and shapes, and reads back to the same config.
    config = hdf5_weights.read_options(OPTIONS)
    backbone = _random_backbone(config, seed=1)
    out = os.path.join(self.tmp, "written")
    hdf5_weights.write_hdf5(backbone, config, out)
    with h5py.File(WEIGHTS, "r") as f:
      fixture = {}
      f.visititems(lambda name, obj: fixture.__setitem__(name, obj.shape)
                   if isinstance(obj, h5py.Dataset) else None)
    written = {name: array.shape for name, array in _dataset_arrays(
        os.path.join(out, hdf5_weights.WEIGHTS_FILENAME)).items()}
    self.assertEqual(written, fixture)
    self.assertEqual(hdf5_weights.dataset_shapes(config), fixture)
    self.assertEqual(hdf5_weights.read_options(
        os.path.join(out, hdf5_weights.OPTIONS_FILENAME)), config)

  def test_import_then_export_gives_back_the_fixture_weights(self):
    # bin/import_hdf5 and bin/export_hdf5: fixture -> SavedModel -> hdf5.
    saved_model = os.path.join(self.tmp, "via_bin")
    result = _run("bin.import_hdf5", f"--options={OPTIONS}",
                  f"--weights={WEIGHTS}", f"--out={saved_model}",
                  "--tokenization=whitespace")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertIn("SavedModel:", result.stdout)
    out = os.path.join(self.tmp, "exported")
    result = _run("bin.export_hdf5", f"--saved_model={saved_model}",
                  f"--out={out}")
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    self.assertCountEqual(os.listdir(out), ["options.json", "weights.hdf5",
                                            "vocab.txt"])
    original = _dataset_arrays(WEIGHTS)
    exported = _dataset_arrays(os.path.join(out, "weights.hdf5"))
    self.assertCountEqual(exported, original)
    for name in original:
      self.assertAllEqual(exported[name], original[name], msg=name)
    # Asking for a softmax this SavedModel does not have is an error.
    result = _run("bin.export_hdf5", f"--saved_model={saved_model}",
                  f"--out={out}", "--with_softmax")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn("without its softmax", result.stderr)

  def test_fixture_vocabulary_rows(self):
    vocab, rows = hdf5_weights.read_bilm_tf_vocab(
        os.path.join(FIXTURE, "vocab_test.txt"))
    self.assertEqual(vocab.tokens[:3], list(vocab_lib.SPECIAL_TOKENS))
    self.assertEqual(list(rows[:3]), [207, 257, -1])  # No <UNK> in the file.
    self.assertEqual(vocab.size, 449)
    self.assertEqual(sorted(rows[rows >= 0]), list(range(448)))
    with open(os.path.join(FIXTURE, "vocab_test.txt"), encoding="utf-8") as f:
      lines = f.read().split()
    for token_id in (4, 100, 449):
      self.assertEqual(lines[rows[token_id - 1]], vocab.id_to_token(token_id))


class MismatchTest(tf.test.TestCase):
  """Errors name the dataset and the expected and found shapes."""

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
    self.config = hdf5_weights.read_options(OPTIONS)
    self.backbone = hdf5_weights.build_backbone(self.config)

  def _copy_with(self, change):
    path = os.path.join(self.tmp, "changed.hdf5")
    shutil.copy(WEIGHTS, path)
    os.chmod(path, 0o644)
    with h5py.File(path, "r+") as f:
      change(f)
    return path

  def test_wrong_shape(self):
    name = "RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0"

    def change(f):
      del f[name]
      f.create_dataset(name, data=np.zeros((32, 128), np.float32))

    with self.assertRaisesRegex(
        hdf5_weights.FormatError,
        r"dataset 'RNN_1/RNN/MultiRNNCell/Cell1/LSTMCell/W_0' has shape "
        r"\(32, 128\), expected \(32, 256\)"):
      hdf5_weights.load_hdf5_into_backbone(self._copy_with(change),
                                           self.backbone)

  def test_missing_dataset(self):
    path = self._copy_with(lambda f: f.__delitem__("CNN_high_1/b_carry"))
    with self.assertRaisesRegex(hdf5_weights.FormatError,
                                r"missing dataset 'CNN_high_1/b_carry' "
                                r"\(expected shape \(124,\)"):
      hdf5_weights.load_hdf5_into_backbone(path, self.backbone)

  def test_options_of_another_size(self):
    # A bigger model than the file: the first dataset that differs.
    with open(OPTIONS, encoding="utf-8") as f:
      options = json.load(f)
    options["lstm"]["dim"] = 128
    backbone = hdf5_weights.build_backbone(
        hdf5_weights.options_to_config(options))
    with self.assertRaisesRegex(hdf5_weights.FormatError,
                                r"W_0' has shape \(32, 256\), expected "
                                r"\(32, 512\)"):
      hdf5_weights.load_hdf5_into_backbone(WEIGHTS, backbone)

  def test_options_errors(self):
    with open(OPTIONS, encoding="utf-8") as f:
      options = json.load(f)
    bad = json.loads(json.dumps(options))
    bad["char_cnn"]["n_characters"] = 300
    with self.assertRaisesRegex(hdf5_weights.FormatError, "n_characters=300"):
      hdf5_weights.options_to_config(bad)
    bad = json.loads(json.dumps(options))
    del bad["lstm"]["projection_dim"]
    with self.assertRaisesRegex(hdf5_weights.FormatError,
                                "missing lstm.'projection_dim'"):
      hdf5_weights.options_to_config(bad)
    # The training form (261 ids) reads as the prediction form.
    training = json.loads(json.dumps(options))
    training["char_cnn"]["n_characters"] = 261
    self.assertEqual(hdf5_weights.options_to_config(training),
                     hdf5_weights.options_to_config(options))
    with self.assertRaisesRegex(hdf5_weights.FormatError, "'concat'"):
      hdf5_weights.config_to_options(
          config_lib.preset("tiny").replace(token_encoder="concat",
                                            vocab_size=5))


class RoundTripTest(tf.test.TestCase):
  """elmo_tf model -> hdf5 -> elmo_tf model gives identical outputs."""

  def setUp(self):
    super().setUp()
    self.tmp = tempfile.mkdtemp()
    self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

  def _outputs(self, backbone, inputs):
    return backbone(inputs, training=False)["layer_activations"].numpy()

  def test_character_model_with_residual_and_tanh(self):
    # What the fixture does not cover: residual connections, tanh, one
    # highway, a forget bias other than TensorFlow's 1.0, no clips.
    config = config_lib.preset("tiny")
    config = config.replace(
        char_cnn=config.char_cnn.replace(activation="tanh"),
        lstm=config.lstm.replace(use_residual=True, cell_clip=0.0,
                                 projection_clip=0.0))
    inputs = _char_inputs([["the", "cat", "sat"], ["a", "\u732b"]])
    for forget_bias in (1.0, 0.25):
      config = config.replace(lstm=config.lstm.replace(forget_bias=forget_bias))
      original = _random_backbone(config, seed=2)
      out = os.path.join(self.tmp, f"out_{forget_bias}")
      hdf5_weights.write_hdf5(original, config, out)
      with open(os.path.join(out, "options.json"), encoding="utf-8") as f:
        options = json.load(f)
      self.assertTrue(options["lstm"]["use_skip_connections"])
      self.assertIsNone(options["lstm"]["cell_clip"])
      read = hdf5_weights.read_options(os.path.join(out, "options.json"))
      self.assertEqual(read, config.replace(
          lstm=config.lstm.replace(forget_bias=1.0)))
      restored = hdf5_weights.build_backbone(read)
      hdf5_weights.load_hdf5_into_backbone(
          os.path.join(out, "weights.hdf5"), restored)
      if forget_bias == 1.0:
        self.assertAllEqual(self._outputs(restored, inputs),
                            self._outputs(original, inputs))
      else:  # The difference is folded into B.
        self.assertAllClose(self._outputs(restored, inputs),
                            self._outputs(original, inputs), atol=1e-6)

  def test_training_run_with_softmax_through_the_programs_library(self):
    # A run directory (config, vocab, checkpoint) -> hdf5 with the softmax
    # -> SavedModel: embeddings and scores equal those of the run.
    vocab = vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + WORDS)
    model_config = config_lib.preset("tiny").replace(
        vocab_size=vocab.size, training_softmax="full")
    experiment = config_lib.ExperimentConfig(model=model_config)
    model_dir = os.path.join(self.tmp, "run")
    keras.utils.set_random_seed(3)
    model = checkpoints_lib.build_model(model_config)
    for weight in (model.softmax.bias,):
      weight.assign(np.random.default_rng(3).normal(
          0.0, 1.0, weight.shape).astype(np.float32))
    checkpoints_lib.check_or_write_model_dir(experiment, model_dir, vocab)
    checkpoints_lib.model_checkpoint(model).save(
        os.path.join(model_dir, "ckpt"))

    out = os.path.join(self.tmp, "hdf5")
    written = hdf5_weights.export_hdf5(model_dir, out, with_softmax=True)
    self.assertCountEqual(written, hdf5_weights.OUTPUT_FILENAMES)
    with open(written["options.json"], encoding="utf-8") as f:
      self.assertEqual(json.load(f)["n_tokens_vocab"], vocab.size)
    softmax = _dataset_arrays(written["softmax.hdf5"])
    self.assertEqual(softmax["softmax/W"].shape, (vocab.size, 16))
    self.assertEqual(softmax["softmax/b"].shape, (vocab.size,))

    saved_model = hdf5_weights.import_hdf5(
        written["options.json"], written["weights.hdf5"],
        os.path.join(self.tmp, "imported"), vocab_path=written["vocab.txt"],
        softmax_path=written["softmax.hdf5"])
    imported = tf.saved_model.load(saved_model)
    run_module = export_lib.build_module(model_dir)
    text = tf.constant(["the cat sat on the mat .", "a dog ran", "zebra"])
    expected = run_module.default(text)
    got = imported.signatures["default"](text)
    for key in ("word_emb", "lstm_outputs1", "lstm_outputs2", "elmo"):
      self.assertAllEqual(got[key], expected[key], msg=key)
    expected = run_module.log_probs(text)
    got = imported.signatures["log_probs"](text)
    for key in ("forward_log_prob", "backward_log_prob", "unk_count"):
      self.assertAllClose(got[key], expected[key], atol=1e-5, msg=key)

  def test_token_input_model_with_a_bilm_tf_vocabulary_order(self):
    # A token-input model (`embedding` instead of the CNN), its vocabulary
    # written in another order (specials among the words, as bilm-tf's
    # files may have them) with `embedding` and the softmax permuted alike:
    # the import puts the rows back by token.
    vocab = vocab_lib.Vocabulary(list(vocab_lib.SPECIAL_TOKENS) + WORDS)
    config = config_lib.preset("tiny").replace(
        token_encoder="tokens", vocab_size=vocab.size,
        training_softmax="full")
    original = _random_backbone(config, seed=4)
    keras.utils.set_random_seed(4)
    softmax = hdf5_weights.build_softmax(config)
    out = os.path.join(self.tmp, "tokens")
    written = hdf5_weights.write_hdf5(original, config, out, softmax=softmax,
                                      vocab=vocab)
    with open(written["options.json"], encoding="utf-8") as f:
      self.assertNotIn("char_cnn", json.load(f))

    order = np.random.default_rng(0).permutation(vocab.size)
    shuffled = os.path.join(self.tmp, "shuffled")
    os.makedirs(shuffled)
    shutil.copy(written["options.json"], shuffled)
    with open(os.path.join(shuffled, "vocab.txt"), "w", encoding="utf-8") as f:
      f.write("\n".join(vocab.tokens[i] for i in order) + "\n")
    weights = _dataset_arrays(written["weights.hdf5"])
    weights["embedding"] = weights["embedding"][order]
    embedding_file = os.path.join(shuffled, "embedding.hdf5")
    with h5py.File(embedding_file, "w") as f:
      f.create_dataset("embedding", data=weights.pop("embedding"))
    with h5py.File(os.path.join(shuffled, "weights.hdf5"), "w") as f:
      for name, array in weights.items():
        f.create_dataset(name, data=array)
    with h5py.File(os.path.join(shuffled, "softmax.hdf5"), "w") as f:
      for name, array in _dataset_arrays(written["softmax.hdf5"]).items():
        f.create_dataset(name, data=array[order])

    saved_model = hdf5_weights.import_hdf5(
        os.path.join(shuffled, "options.json"),
        os.path.join(shuffled, "weights.hdf5"),
        os.path.join(self.tmp, "imported"),
        vocab_path=os.path.join(shuffled, "vocab.txt"),
        softmax_path=os.path.join(shuffled, "softmax.hdf5"),
        embedding_path=embedding_file)
    direct = export_lib.save_module(
        config_lib.ExperimentConfig(model=config), vocab, original,
        os.path.join(self.tmp, "direct"), softmax=softmax)
    text = tf.constant(["the cat sat on the mat .", "a dog ran", "zebra"])
    expected = tf.saved_model.load(direct)
    got = tf.saved_model.load(saved_model)
    for key in ("word_emb", "lstm_outputs2", "elmo"):
      self.assertAllEqual(got.signatures["default"](text)[key],
                          expected.signatures["default"](text)[key], msg=key)
    self.assertAllClose(
        got.signatures["log_probs"](text)["forward_log_prob"],
        expected.signatures["log_probs"](text)["forward_log_prob"], atol=1e-5)


if __name__ == "__main__":
  unittest.main()
