"""Shared helpers for the PyTorch-versus-Haiku parity tests."""

import jax.numpy as jnp
import numpy as np


def to_jax(state: dict) -> dict:
    """A torch state dict (of tensors) as JAX arrays."""
    return {k: jnp.asarray(v.detach().numpy()) for k, v in state.items()}


def assert_relative_close(actual, expected, what: str = "", tol: float = 1e-5) -> None:
    """max |actual - expected| <= tol * max |expected|: relative to the array's scale, so exact zeros pass too."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(np.abs(expected).max(), 1e-12)
    assert np.abs(actual - expected).max() <= tol * scale, what
