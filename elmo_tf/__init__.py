"""elmo_tf: ELMo bidirectional language models in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"


def __getattr__(name):
  # Lazy, so that `import elmo_tf.config` does not import TensorFlow.
  if name == "ElmoEmbedding":
    # pylint: disable-next=g-import-not-at-top
    from elmo_tf.elmo_embedding import ElmoEmbedding
    return ElmoEmbedding
  raise AttributeError(f"module 'elmo_tf' has no attribute {name!r}")
