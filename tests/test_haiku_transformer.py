"""The Haiku twin of the ``transformer`` memory equals the PyTorch module: outputs, states and gradients."""

import copy
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from memory.haiku.transformer import TransformerMemory as HaikuTransformer  # noqa: E402
from memory.haiku.transformer import haiku_to_torch, torch_to_haiku  # noqa: E402
from memory.transformer import TransformerMemory  # noqa: E402
from parity import assert_relative_close, to_jax  # noqa: E402

IN, B, T = 5, 3, 6
BASE = {"width": 16, "layers": 2, "heads": 2, "window": 4, "max_distance": 2}
# Every pair of option values appears together once: gating and norm meet in the residual join, positions stand apart.
OPTIONS = [("none", "pre", "sinusoidal"), ("none", "post", "relative"), ("gtrxl", "pre", "relative"),
           ("gtrxl", "post", "sinusoidal")]


def build_torch(config):
    torch.manual_seed(0)
    m = TransformerMemory(IN, **config)
    with torch.no_grad():  # random relative biases so the position path is exercised
        for layer in m.layers:
            if layer.relative_bias is not None:
                layer.relative_bias.normal_()
    return m


def haiku_fn(config):
    return hk.without_apply_rng(hk.transform(lambda x, s, r: HaikuTransformer(IN, **config)(x, s, r)))


def data(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, IN, generator=g)
    reset = torch.rand(T, B, generator=g) < 0.25
    return x, reset


@pytest.mark.parametrize("gating,norm,positions", OPTIONS)
def test_outputs_states_and_gradients_match(gating, norm, positions):
    config = {**BASE, "gating": gating, "norm": norm, "positions": positions}
    m, f = build_torch(config), haiku_fn(config)
    params = torch_to_haiku(m)
    # First call from the empty state: outputs and the carried state match.
    x, reset = data(1)
    reset[0] = True
    out, state = m(x, m.initial_state(B), reset)
    jout, jstate = f.apply(params, jnp.asarray(x.numpy()), to_jax(m.initial_state(B)), jnp.asarray(reset))
    assert_relative_close(jout, out.detach(), "first-call outputs")
    for key in state:
        assert_relative_close(jstate[key], state[key].detach(), f"state[{key!r}]")
    # Second call reads the cache: gradients of a weighted sum of outputs w.r.t. inputs and parameters match.
    x2, reset2 = data(2)
    weight = torch.randn(T, B, BASE["width"], generator=torch.Generator().manual_seed(3))
    x2.requires_grad_(True)
    out2, _ = m(x2, state, reset2)
    (out2 * weight).sum().backward()

    def loss(p, x):
        y, _ = f.apply(p, x, to_jax(state), jnp.asarray(reset2))
        return (y * jnp.asarray(weight.numpy())).sum()

    jgrad_params, jgrad_x = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x2.detach().numpy()))
    assert_relative_close(jgrad_x, x2.grad, "input gradients")
    grads = copy.deepcopy(m)
    with torch.no_grad():
        for p, g in zip(grads.parameters(), m.parameters()):
            p.copy_(g.grad)
    expected = torch_to_haiku(grads)
    assert jgrad_params.keys() == expected.keys()
    for path in expected:
        for name in expected[path]:
            assert_relative_close(jgrad_params[path][name], expected[path][name], f"{path}/{name} gradient")


@pytest.mark.parametrize("gating,positions", [("gtrxl", "relative"), ("none", "sinusoidal")])
def test_haiku_init_converts_to_torch_and_back(gating, positions):
    config = {**BASE, "gating": gating, "positions": positions}
    f = haiku_fn(config)
    x, reset = data(4)
    state = hk.transform(lambda: HaikuTransformer(IN, **config).initial_state(B)).apply({}, None)
    m = TransformerMemory(IN, **config)
    assert state.keys() == m.initial_state(B).keys()
    for key, value in m.initial_state(B).items():
        assert state[key].shape == tuple(value.shape), key
    params = f.init(jax.random.PRNGKey(0), jnp.asarray(x.numpy()), state, jnp.asarray(reset))
    haiku_to_torch(params, m)
    back = torch_to_haiku(m)
    assert back.keys() == params.keys()
    for path in params:
        for name in params[path]:
            np.testing.assert_array_equal(back[path][name], np.asarray(params[path][name]))
    out, _ = m(x, m.initial_state(B), reset)
    jout, _ = f.apply(params, jnp.asarray(x.numpy()), state, jnp.asarray(reset))
    assert_relative_close(jout, out.detach(), "outputs after haiku -> torch")


def test_mismatched_params_are_rejected():
    gated = torch_to_haiku(TransformerMemory(IN, **BASE, gating="gtrxl"))
    with pytest.raises(ValueError, match="unexpected .*attention_gate"):
        haiku_to_torch(gated, TransformerMemory(IN, **BASE))
    params = torch_to_haiku(TransformerMemory(IN, **BASE, positions="relative"))
    params["transformer_memory/layer_0"]["relative_bias"] = np.zeros((2, 7), np.float32)
    with pytest.raises(ValueError, match="relative_bias has shape"):
        haiku_to_torch(params, TransformerMemory(IN, **BASE, positions="relative"))
