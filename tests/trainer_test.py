"""Training loop tests on the toy built-in text (tiny preset)."""

import glob
import os
import tempfile
import unittest
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from elmo_tf import checkpoints as checkpoints_lib
from elmo_tf import config as config_lib
from elmo_tf import evaluation as evaluation_lib
from elmo_tf import optimizers as optimizers_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf import trainer as trainer_lib
from tests import toy_corpus

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(corpus: str, **train_overrides) -> config_lib.ExperimentConfig:
  train = config_lib.TrainConfig(
      max_steps=60, log_every_steps=10, checkpoint_every_steps=20,
      eval_every_steps=0, seed=3, learning_rate=0.2)
  return config_lib.ExperimentConfig(
      model=config_lib.preset("tiny"),
      data=config_lib.DataConfig(corpus=corpus, batch_size=16,
                                 shuffle_buffer=200),
      train=train.replace(**train_overrides))


def _weights(model) -> dict[str, np.ndarray]:
  return {v.path: v.numpy() for v in model.weights}


class _DenseAdagrad(keras.optimizers.Adagrad):
  """Keras's Adagrad on dense gradients: the reference of SparseAdagrad."""

  def update_step(self, gradient, variable, learning_rate):
    super().update_step(tf.convert_to_tensor(gradient), variable,
                        learning_rate)


class TrainerTest(unittest.TestCase):

  @classmethod
  def setUpClass(cls):
    cls.tmp = tempfile.mkdtemp()
    paths = toy_corpus.write_corpus(os.path.join(cls.tmp, "text"))
    cls.entropy = toy_corpus.unigram_entropy(paths["test"])
    cls.cache = os.path.join(cls.tmp, "cache")
    # Prepare once; every run below reads the prepared directory.
    cls.corpus = prepare_lib.prepare_cached(
        paths["spec"], "whitespace", cls.cache).directory

  def test_tiny_run_beats_unigram_entropy_and_writes_everything(self):
    model_dir = os.path.join(self.tmp, "beats")
    config = tiny_config(self.corpus, max_steps=300, log_every_steps=50,
                         checkpoint_every_steps=100, learning_rate=0.5)
    trainer_lib.train(config, model_dir, cache_root=self.cache)
    results = evaluation_lib.evaluate(model_dir, split="test",
                                   cache_root=self.cache)
    self.assertLess(results["forward_loss"], self.entropy)
    self.assertLess(results["backward_loss"], self.entropy)
    self.assertGreater(results["forward_tokens"], 500)
    saved = config_lib.ExperimentConfig.load(
        os.path.join(model_dir, "config.json"))
    self.assertGreater(saved.model.vocab_size, 20)
    self.assertTrue(os.path.exists(os.path.join(model_dir, "vocab.txt")))
    self.assertTrue(glob.glob(os.path.join(model_dir, "train", "events.*")))
    self.assertTrue(
        glob.glob(os.path.join(model_dir, "validation", "events.*")))
    # Stream-mode evaluation runs too and gives a finite perplexity.
    stream = evaluation_lib.evaluate(model_dir, split="test", batching="stream",
                                  batch_size=4, cache_root=self.cache)
    self.assertTrue(np.isfinite(stream["average_perplexity"]))

  def test_resume_matches_uninterrupted_run(self):
    whole_dir = os.path.join(self.tmp, "whole")
    trainer_lib.train(tiny_config(self.corpus, max_steps=40), whole_dir,
                      cache_root=self.cache)
    split_dir = os.path.join(self.tmp, "split")
    trainer_lib.train(tiny_config(self.corpus, max_steps=20), split_dir,
                      cache_root=self.cache)
    resumed = trainer_lib.make_trainer(tiny_config(self.corpus, max_steps=40),
                                  split_dir, cache_root=self.cache)
    self.assertEqual(resumed.current_step, 20)
    resumed.train()
    self.assertEqual(resumed.current_step, 40)
    _, _, whole_model, _ = checkpoints_lib.load_trained_model(whole_dir)
    whole = _weights(whole_model)
    split = _weights(resumed.model)
    self.assertEqual(sorted(whole), sorted(split))
    for name in whole:
      np.testing.assert_allclose(split[name], whole[name], atol=1e-6,
                                 err_msg=name)

  def test_resume_takes_the_new_learning_rate(self):
    # The optimizer checkpoints its learning rate; the resumed run's config
    # must win (lowering the rate for the end of a run).
    model_dir = os.path.join(self.tmp, "new_rate")
    trainer_lib.train(tiny_config(self.corpus, max_steps=4), model_dir,
                      cache_root=self.cache)
    resumed = trainer_lib.make_trainer(
        tiny_config(self.corpus, max_steps=8, learning_rate=0.05), model_dir,
        cache_root=self.cache)
    self.assertEqual(resumed.current_step, 4)
    self.assertAlmostEqual(float(resumed.optimizer.learning_rate.numpy()),
                           0.05, places=6)

  def test_learning_rate_schedule_decays_and_resumes_exactly(self):
    config = tiny_config(self.corpus, max_steps=40, optimizer="adam",
                         learning_rate=0.01, learning_rate_schedule="cosine",
                         final_learning_rate_fraction=0.1)
    whole_dir = os.path.join(self.tmp, "cosine_whole")
    whole = trainer_lib.make_trainer(config, whole_dir, cache_root=self.cache)
    self.assertAlmostEqual(whole.learning_rate_at(0), 0.01)
    self.assertAlmostEqual(whole.learning_rate_at(20), 0.0055, places=6)
    self.assertAlmostEqual(whole.learning_rate_at(40), 0.001, places=6)
    whole.train()
    # The last update (after 39) ran at the schedule's rate, as logged.
    self.assertAlmostEqual(float(whole.optimizer.learning_rate.numpy()),
                           whole.learning_rate_at(39), places=6)
    # Stopped after 20 of 40 steps (the schedule spans 40), then resumed.
    split_dir = os.path.join(self.tmp, "cosine_split")
    first = trainer_lib.make_trainer(config, split_dir, cache_root=self.cache)
    for _ in range(20):
      first.train_step()
    first.manager.save(checkpoint_number=20)
    resumed = trainer_lib.make_trainer(config, split_dir, cache_root=self.cache)
    self.assertEqual(resumed.current_step, 20)
    resumed.train()
    whole_weights = _weights(whole.model)
    split_weights = _weights(resumed.model)
    for name in whole_weights:
      np.testing.assert_allclose(split_weights[name], whole_weights[name],
                                 atol=1e-6, err_msg=name)
    linear = trainer_lib.make_trainer(
        config.replace(train=config.train.replace(
            learning_rate_schedule="linear")),
        os.path.join(self.tmp, "linear"), cache_root=self.cache)
    self.assertAlmostEqual(linear.learning_rate_at(10), 0.01 - 0.25 * 0.009,
                           places=6)

  def test_resume_with_other_model_config_is_a_clear_error(self):
    model_dir = os.path.join(self.tmp, "incompatible")
    trainer_lib.train(tiny_config(self.corpus, max_steps=5), model_dir,
                      cache_root=self.cache)
    config = tiny_config(self.corpus, max_steps=10)
    config = config_lib.apply_overrides(config, {"model.lstm.cell_dim": 48})
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                r"lstm\.cell_dim.*\(32, 48\)"):
      trainer_lib.make_trainer(config, model_dir, cache_root=self.cache)

  def test_resume_with_other_vocabulary_is_a_clear_error(self):
    model_dir = os.path.join(self.tmp, "other_vocab")
    trainer_lib.train(tiny_config(self.corpus, max_steps=3), model_dir,
                      cache_root=self.cache)
    other_text = os.path.join(self.tmp, "other_text.txt")
    with open(other_text, "w", encoding="utf-8") as f:
      f.write("\n".join(f"word{i % 40} and word{(i * 7) % 40} again ."
                        for i in range(400)) + "\n")
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                "another vocabulary"):
      trainer_lib.make_trainer(tiny_config(other_text, max_steps=6), model_dir,
                          cache_root=self.cache)

  def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(self):
    model_dir = os.path.join(self.tmp, "nan")
    trainer_lib.train(tiny_config(self.corpus, max_steps=20), model_dir,
                      cache_root=self.cache)
    good = tf.train.latest_checkpoint(model_dir)
    trainer = trainer_lib.make_trainer(tiny_config(self.corpus, max_steps=40),
                                  model_dir, cache_root=self.cache)
    # Poison one weight, as a diverging run would.
    bias = trainer.model.softmax.bias
    bias.assign(np.full(bias.shape, np.nan, np.float32))
    with self.assertRaisesRegex(trainer_lib.TrainingError, r"at step 21\b"):
      trainer.train()
    self.assertEqual(tf.train.latest_checkpoint(model_dir), good)
    _, _, model, _ = checkpoints_lib.load_trained_model(model_dir)
    for value in _weights(model).values():
      self.assertTrue(np.all(np.isfinite(value)))

  def test_model_with_dropout_saves_and_restores_every_weight(self):
    model_dir = os.path.join(self.tmp, "dropout")
    config = tiny_config(self.corpus, max_steps=3)
    config = config.replace(model=config.model.replace(dropout=0.3))
    trainer = trainer_lib.make_trainer(config, model_dir, cache_root=self.cache)
    trainer.train()
    # Every model variable but the dropout RNG states is in the checkpoint
    # and restored (load_trained_model asserts it).
    _, _, model, _ = checkpoints_lib.load_trained_model(model_dir)
    saved = checkpoints_lib.weights_by_path(model)
    trained = checkpoints_lib.weights_by_path(trainer.model)
    self.assertEqual(sorted(saved), sorted(trained))
    self.assertGreater(len(saved), 10)
    for name, variable in trained.items():
      np.testing.assert_array_equal(saved[name].numpy(), variable.numpy(),
                                    err_msg=name)

  def test_stream_batching_trains(self):
    model_dir = os.path.join(self.tmp, "stream")
    config = tiny_config(self.corpus, max_steps=30)
    config = config.replace(data=config.data.replace(batching="stream",
                                                     batch_size=4,
                                                     unroll_steps=8))
    results = trainer_lib.train(config, model_dir, cache_root=self.cache)
    self.assertTrue(np.isfinite(results["average_perplexity"]))

  def test_stream_training_carries_the_lstm_state(self):
    # Two identical runs (same seed, same batches, same negatives), one of
    # them forced to start every batch from a zero state: their first steps
    # are equal, later ones differ, so the carried state is really used; and
    # each step receives exactly the state the previous step returned.
    config = tiny_config(self.corpus, max_steps=10)
    config = config.replace(data=config.data.replace(
        batching="stream", batch_size=4, unroll_steps=8))

    def run(name: str, zero_state: bool):
      trainer = trainer_lib.make_trainer(
          config, os.path.join(self.tmp, name), cache_root=self.cache)
      step, received, returned = trainer._train_step, [], []

      def recording(iterator, states):
        if zero_state:
          states = trainer._initial_stream_state()
        received.append(tf.nest.map_structure(np.array, states))
        metrics, new_states = step(iterator, states)
        returned.append(tf.nest.map_structure(np.array, new_states))
        return metrics, new_states

      trainer._train_step = recording
      losses = [trainer.train_step()["loss"] for _ in range(4)]
      return losses, received, returned

    carried, received, returned = run("carried", zero_state=False)
    zeroed, _, _ = run("zeroed", zero_state=True)
    for a, b in zip(tf.nest.flatten(received[0]), tf.nest.flatten(received[0])):
      np.testing.assert_array_equal(a, np.zeros_like(b))
    for k in (1, 2, 3):
      for got, sent in zip(tf.nest.flatten(received[k]),
                           tf.nest.flatten(returned[k - 1])):
        np.testing.assert_array_equal(got, sent)
    self.assertGreater(max(np.abs(x).max()
                           for x in tf.nest.flatten(returned[0])), 0.0)
    self.assertEqual(carried[0], zeroed[0])
    self.assertNotAlmostEqual(carried[3], zeroed[3], places=6)

  def test_lines_per_shard_changes_the_prepared_shards(self):
    paths = toy_corpus.write_corpus(os.path.join(self.tmp, "shards_text"),
                                    n_train=120, n_heldout=10)
    config = tiny_config(paths["spec"], max_steps=1)
    default = trainer_lib.make_trainer(
        config, os.path.join(self.tmp, "shards_default"),
        cache_root=self.cache)
    self.assertEqual(len(default.prepared.files("train")), 1)
    config = config_lib.apply_overrides(config,
                                        {"data.lines_per_shard": "50"})
    sharded = trainer_lib.make_trainer(
        config, os.path.join(self.tmp, "shards_50"), cache_root=self.cache)
    self.assertEqual(len(sharded.prepared.files("train")), 3)
    self.assertEqual(sharded.prepared.manifest["lines_per_shard"], 50)

  def test_sparse_adagrad_steps_equal_dense_adagrad_steps(self):
    # The trainer's Adagrad updates only the softmax / embedding rows of
    # the step (optimizers.SparseAdagrad) and its divergence guard reads
    # only those rows; Keras's Adagrad on densified gradients, with the
    # guard reading every weight, gives the same run.
    config = tiny_config(self.corpus, max_steps=4)
    config = config.replace(data=config.data.replace(
        batching="stream", batch_size=4, unroll_steps=8))
    sparse = trainer_lib.make_trainer(
        config, os.path.join(self.tmp, "sparse_adagrad"),
        cache_root=self.cache)
    self.assertIsInstance(sparse.optimizer, optimizers_lib.SparseAdagrad)
    train = config.train

    def dense_optimizer(trainer):
      del trainer
      return _DenseAdagrad(
          learning_rate=train.learning_rate,
          initial_accumulator_value=train.initial_accumulator_value,
          epsilon=1e-10, name="adagrad")

    with mock.patch.object(trainer_lib.Trainer, "_make_optimizer",
                           dense_optimizer):
      dense = trainer_lib.make_trainer(
          config, os.path.join(self.tmp, "dense_adagrad"),
          cache_root=self.cache)
    for step in range(4):
      got, expected = sparse.train_step(), dense.train_step()
      for key in ("loss", "grad_norm"):
        self.assertAlmostEqual(got[key], expected[key],
                               delta=1e-6 * abs(expected[key]))
      if step == 0:  # The full check; later only the updated rows.
        self.assertAlmostEqual(got["weight_max"], expected["weight_max"],
                               places=6)
      self.assertLessEqual(got["weight_max"], expected["weight_max"] + 1e-6)
    for name, value in _weights(dense.model).items():
      np.testing.assert_allclose(_weights(sparse.model)[name], value,
                                 rtol=1e-5, atol=1e-6, err_msg=name)
    got = checkpoints_lib.weights_by_path(sparse.optimizer)
    expected = checkpoints_lib.weights_by_path(dense.optimizer)
    self.assertEqual(sorted(got), sorted(expected))
    for name, value in expected.items():
      np.testing.assert_allclose(got[name].numpy(), value.numpy(),
                                 rtol=1e-5, atol=1e-6, err_msg=name)

  def test_step_never_reads_or_writes_the_whole_softmax(self):
    # Issue 12: the step's cost must not grow with the vocabulary. No op of
    # the traced step (nested functions included) has an output of the
    # softmax's (vocab_size + 1, ...) shape: the sampled loss gathers its
    # rows, SparseAdagrad scatters them, the guard reads them.
    config = tiny_config(self.corpus, max_steps=2)
    config = config.replace(data=config.data.replace(
        batching="stream", batch_size=4, unroll_steps=8))
    trainer = trainer_lib.make_trainer(
        config, os.path.join(self.tmp, "no_full_softmax"),
        cache_root=self.cache)
    trainer.train_step()
    classes = trainer.config.model.vocab_size + 1
    graph = trainer._train_step.get_concrete_function(
        trainer.iterator, trainer._stream_state).graph
    found, types = [], set()

    def visit(g):
      for op in g.get_operations():
        types.add(op.type)
        if op.type != "Placeholder" and any(
            out.shape.rank and out.shape[0] == classes for out in op.outputs):
          found.append(f"{op.type} {op.name}")
      for function in getattr(g, "_functions", {}).values():
        if isinstance(getattr(function, "graph", None), tf.Graph):
          visit(function.graph)

    visit(graph)
    self.assertEqual(found, [])
    self.assertIn("ResourceScatterSub", types)  # The graph was searched.
    # Dense variables: the clip's factor inside one fused update each,
    # which also returns the guard's |weight| max (no scaled copies, no
    # reductions over the weights).
    self.assertIn("ElmoApplyAdagradScaled", types)
    self.assertNotIn("ResourceApplyAdagradV2", types)
    self.assertNotIn("Min", types)

  def test_guard_checks_every_weight_on_the_first_step(self):
    # Later steps read only the rows their update wrote; the first step of
    # a process reads all, so a bad weight in a row the step leaves alone
    # (restored from a checkpoint, say) is still found.
    trainer = trainer_lib.make_trainer(
        tiny_config(self.corpus, max_steps=4),
        os.path.join(self.tmp, "guard_first"), cache_root=self.cache)
    kernel = trainer.model.softmax.kernel
    poisoned = kernel.numpy()
    poisoned[-1, 0] = 5000.0  # The rarest word's row.
    kernel.assign(poisoned)
    with self.assertRaisesRegex(trainer_lib.TrainingError,
                                r"at step 1: the largest weight magnitude "
                                r"reached 5000"):
      trainer.train_step()

  def test_jit_compiled_step_matches_the_plain_step(self):
    # Stream batching and the sampled softmax: the negatives are drawn
    # outside the XLA cluster, the character encoder runs with static shapes.
    # Adagrad (the default): Adam's first steps are about sign(gradient)
    # x rate, which turns XLA's float32 rounding on near-zero gradients into
    # visible weight differences.
    config = tiny_config(self.corpus, max_steps=5)
    config = config.replace(data=config.data.replace(
        batching="stream", batch_size=4, unroll_steps=8))
    plain = trainer_lib.make_trainer(config, os.path.join(self.tmp, "plain"),
                                cache_root=self.cache)
    jitted = trainer_lib.make_trainer(
        config.replace(train=config.train.replace(jit_compile=True)),
        os.path.join(self.tmp, "jit"), cache_root=self.cache)
    for _ in range(5):
      plain_metrics = plain.train_step()
      jit_metrics = jitted.train_step()
      # XLA fuses and reorders float32 arithmetic: close, not bit-equal.
      self.assertAlmostEqual(jit_metrics["loss"], plain_metrics["loss"],
                             delta=1e-5 * plain_metrics["loss"])
    self.assertFalse(jitted.model.backbone.char_encoder.deduplicate)
    self.assertFalse(any(lstm.pack_sequences for lstm in (
        jitted.model.backbone.forward_lstms
        + jitted.model.backbone.backward_lstms)))
    plain_weights, jit_weights = _weights(plain.model), _weights(jitted.model)
    for name in plain_weights:
      np.testing.assert_allclose(jit_weights[name], plain_weights[name],
                                 rtol=1e-4, atol=1e-5, err_msg=name)


if __name__ == "__main__":
  unittest.main()
