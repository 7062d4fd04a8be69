"""ELMo models: the backbone (ids -> layer activations) and the biLM task."""

from elmo_tf.models.backbone import ElmoBackbone
from elmo_tf.models.backbone import count_parameters
from elmo_tf.models.bilm import BidirectionalLM

__all__ = ["BidirectionalLM", "ElmoBackbone", "count_parameters"]
