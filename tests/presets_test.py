"""Parameter counts of the published ELMo sizes (elmo_tf.config.PRESETS)."""

import gc

import numpy as np
import tensorflow as tf

from elmo_tf import config as config_lib
from elmo_tf.models.backbone import ElmoBackbone
from elmo_tf.models.backbone import count_parameters

# Character encoder + LSTMs, without the softmax (bilm-tf / AllenNLP).
_PUBLISHED = {"small": 13.6e6, "medium": 28.0e6, "original": 93.6e6}


def _built_count(config):
  backbone = ElmoBackbone(config)
  backbone.build()
  count = sum(int(np.prod(v.shape)) for v in backbone.trainable_variables)
  del backbone
  gc.collect()
  return count


class PresetsTest(tf.test.TestCase):

  def test_published_sizes(self):
    for name, published in _PUBLISHED.items():
      config = config_lib.preset(name).replace(vocab_size=10,
                                               token_encoder="chars")
      counted = count_parameters(config)
      self.assertAllClose(counted, published, rtol=0.01, msg=name)
      # The formula matches the variables of the built network.
      self.assertEqual(_built_count(config), counted, name)

  def test_count_with_softmax_and_token_encoders(self):
    config = config_lib.preset("tiny").replace(vocab_size=50)
    p = config.lstm.projection_dim
    chars = count_parameters(config)
    self.assertEqual(count_parameters(config, include_softmax=True),
                     chars + 51 * p + 51)
    self.assertEqual(
        count_parameters(config.replace(token_encoder="sum")), chars + 51 * p)
    for mode in ("tokens", "concat", "sum"):
      mode_config = config.replace(token_encoder=mode, token_embedding_dim=12)
      self.assertEqual(_built_count(mode_config),
                       count_parameters(mode_config), mode)


if __name__ == "__main__":
  tf.test.main()
