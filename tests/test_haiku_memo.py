"""The Haiku twin of the ``memo`` memory equals the PyTorch module: outputs, states and gradients."""

import copy
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from memory.haiku.memo import MemoMemory as HaikuMemo  # noqa: E402
from memory.haiku.memo import haiku_to_torch, torch_to_haiku  # noqa: E402
from memory.memo import MemoMemory  # noqa: E402
from parity import assert_relative_close, to_jax  # noqa: E402

IN, B, T = 5, 3, 9
BASE = {"width": 16, "layers": 2, "heads": 2, "segment_length": 3, "summary_length": 2}
# memo fills and then drops (2 summaries kept over 3 segments per call); rmt overwrites, here with truncated gradients.
OPTIONS = [{"max_summaries": 2}, {"mode": "rmt", "truncate": True}]


def haiku_fn(config, is_training=False):
    return hk.transform(lambda x, s, r: HaikuMemo(IN, **config)(x, s, r, is_training))


def data(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, B, IN, generator=g), torch.rand(T, B, generator=g) < 0.15


@pytest.mark.parametrize("options", OPTIONS)
def test_outputs_states_and_gradients_match(options):
    config = {**BASE, **options}
    torch.manual_seed(0)
    m = MemoMemory(IN, **config)
    f, params = haiku_fn(config), torch_to_haiku(m)
    # First call, in training mode for torch: the segment it leaves running has a drawn length, which the Haiku
    # call below keeps (lengths are drawn only when a segment starts).
    x, reset = data(1)
    reset[0] = True
    out, state = m(x, m.initial_state(B), reset)
    m.eval()
    out_eval, state_eval = m(x, m.initial_state(B), reset)
    jout, jstate = jax.jit(f.apply)(params, None, jnp.asarray(x.numpy()), to_jax(m.initial_state(B)),
                                    jnp.asarray(reset))
    assert_relative_close(jout, out_eval.detach(), "first-call outputs")
    for key in state_eval:
        assert_relative_close(jstate[key], state_eval[key].detach(), f"state[{key!r}]")
    # Second call from the training-mode state: gradients of a weighted sum of outputs match.
    x2, reset2 = data(2)
    weight = torch.randn(T, B, BASE["width"], generator=torch.Generator().manual_seed(3))
    x2.requires_grad_(True)
    state = {k: v.detach() for k, v in state.items()}
    out2, _ = m(x2, state, reset2)
    (out2 * weight).sum().backward()

    def loss(p, x):
        y, _ = f.apply(p, None, x, to_jax(state), jnp.asarray(reset2))
        return (y * jnp.asarray(weight.numpy())).sum()

    jgrad_params, jgrad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(x2.detach().numpy()))
    assert_relative_close(jgrad_x, x2.grad, "input gradients")
    grads = copy.deepcopy(m)
    with torch.no_grad():
        for p, g in zip(grads.parameters(), m.parameters()):
            p.copy_(torch.zeros_like(p) if g.grad is None else g.grad)
    expected = torch_to_haiku(grads)
    assert jgrad_params.keys() == expected.keys()
    for path in expected:
        for name in expected[path]:
            assert_relative_close(jgrad_params[path][name], expected[path][name], f"{path}/{name} gradient")


def test_haiku_init_converts_to_torch_and_back():
    config = {**BASE, "max_summaries": 2}
    f = haiku_fn(config)
    x, reset = data(4)
    state = hk.transform(lambda: HaikuMemo(IN, **config).initial_state(B)).apply({}, None)
    m = MemoMemory(IN, **config).eval()
    assert state.keys() == m.initial_state(B).keys()
    for key, value in m.initial_state(B).items():
        assert state[key].shape == tuple(value.shape), key
    params = jax.jit(f.init)(jax.random.PRNGKey(0), jnp.asarray(x.numpy()), state, jnp.asarray(reset))
    haiku_to_torch(params, m)
    back = torch_to_haiku(m)
    assert back.keys() == params.keys()
    for path in params:
        for name in params[path]:
            np.testing.assert_array_equal(back[path][name], np.asarray(params[path][name]))
    out, _ = m(x, m.initial_state(B), reset)
    jout, _ = jax.jit(f.apply)(params, None, jnp.asarray(x.numpy()), state, jnp.asarray(reset))
    assert_relative_close(jout, out.detach(), "outputs after haiku -> torch")


def test_training_draws_segment_lengths_in_range():
    config = {**BASE, "segment_length": 10, "max_summaries": 1}
    f = haiku_fn(config, is_training=True)
    x = jnp.zeros((1, 32, IN))
    state = hk.transform(lambda: HaikuMemo(IN, **config).initial_state(32)).apply({}, None)
    reset = jnp.zeros((1, 32), bool)
    params = jax.jit(f.init)(jax.random.PRNGKey(0), x, state, reset)
    _, new_state = jax.jit(f.apply)(params, jax.random.PRNGKey(1), x, state, reset)
    lengths = np.asarray(new_state["length"])
    assert lengths.min() >= 8 and lengths.max() <= 12 and len(np.unique(lengths)) > 1


def test_mismatched_params_are_rejected():
    params = torch_to_haiku(MemoMemory(IN, **{**BASE, "summary_length": 3}))
    with pytest.raises(ValueError, match="summary_queries has shape"):
        haiku_to_torch(params, MemoMemory(IN, **BASE))
