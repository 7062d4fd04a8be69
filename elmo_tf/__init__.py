"""elmo_tf: ELMo bidirectional language models in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
