"""Custom TensorFlow ops (built on first use; see fused_lstmp.py)."""
