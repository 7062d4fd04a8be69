"""Keras layers of the ELMo biLM."""

from elmo_tf.layers.char_cnn import CharacterEncoder
from elmo_tf.layers.highway import Highway
from elmo_tf.layers.projected_lstm import ProjectedLSTM
from elmo_tf.layers.sampled_softmax import SampledSoftmax
from elmo_tf.layers.scalar_mix import ScalarMix

__all__ = [
    "CharacterEncoder",
    "Highway",
    "ProjectedLSTM",
    "SampledSoftmax",
    "ScalarMix",
]
