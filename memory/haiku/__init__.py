"""JAX/Haiku twins of the attention memories, numerically equal to the PyTorch modules (same parameter names)."""
