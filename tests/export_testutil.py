"""A tiny trained run and an export of it, shared by the export tests."""

import os

import keras

from elmo_tf import config as config_lib
from elmo_tf import prepare as prepare_lib
from elmo_tf import trainer as trainer_lib
from tests import toy_corpus

# Sentences of the toy grammar plus unknown words (the character encoder
# embeds any word).
SENTENCES = [
    "the cat sees a dog .",
    "my sister likes the green tree near the school .",
    "a child hears her friend",
    "zebras juggle quietly",
]


def prepare_toy_corpus(directory: str) -> tuple[str, str]:
  """Writes and prepares the toy text under `directory`; returns the
  prepared corpus directory and the cache directory it lies in."""
  paths = toy_corpus.write_corpus(os.path.join(directory, "text"),
                                  n_train=200, n_heldout=20)
  cache = os.path.join(directory, "cache")
  corpus = prepare_lib.prepare_cached(paths["spec"], "whitespace",
                                       cache).directory
  return corpus, cache


def train_tiny_model(directory: str, max_steps: int = 3,
                     token_encoder: str = "chars",
                     mixed_precision: str = "float32") -> str:
  """Trains the tiny preset for a few steps on the toy text; returns its dir.

  A few steps are enough: the tests compare the exported network with the
  live one, whatever its weights.
  """
  corpus, cache = prepare_toy_corpus(directory)
  config = config_lib.ExperimentConfig(
      model=config_lib.preset("tiny").replace(token_encoder=token_encoder),
      data=config_lib.DataConfig(corpus=corpus, tokenization="whitespace",
                                 batch_size=16, shuffle_buffer=200),
      train=config_lib.TrainConfig(
          max_steps=max_steps, log_every_steps=max_steps,
          checkpoint_every_steps=max_steps, eval_every_steps=0,
          eval_max_batches=1, seed=3, learning_rate=0.5,
          mixed_precision=mixed_precision))
  model_dir = os.path.join(directory, "run")
  policy = keras.mixed_precision.global_policy()
  try:
    trainer_lib.train(config, model_dir, cache_root=cache)
  finally:
    keras.mixed_precision.set_global_policy(policy)  # train() sets its own.
  return model_dir
