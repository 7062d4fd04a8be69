"""Custom TensorFlow ops, built on first use (see kernel_library.py)."""
