"""The ``transformer`` memory: sliding window, FCT mode, GTrXL gates, positions, cache and argument checks."""

import itertools

import pytest
import torch

import memory
from memory.transformer import GRUGate, TransformerMemory, sinusoid

IN, B, WIDTH = 5, 3, 16
OPTIONS = list(itertools.product(("none", "gtrxl"), ("pre", "post"), ("sinusoidal", "relative")))


def build(**config):
    torch.manual_seed(0)
    config = {"width": WIDTH, "layers": 1, "heads": 2, "window": 4, **config}
    return TransformerMemory(IN, **config).double()


def randn(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def episode(T, batch=B):
    reset = torch.zeros(T, batch, dtype=torch.bool)
    reset[0] = True
    return reset


def run_in_two_calls(m, x, reset, split=5):
    """Outputs [T, B, D] of two consecutive calls, so that later steps read earlier ones through the cache."""
    out_a, state = m(x[:split], m.initial_state(x.shape[1]), reset[:split])
    out_b, _ = m(x[split:], state, reset[split:])
    return torch.cat([out_a, out_b])


@pytest.mark.parametrize("gating,norm,positions", OPTIONS)
def test_step_equals_sequence_for_every_option(gating, norm, positions):
    m = build(gating=gating, norm=norm, positions=positions, layers=2, window=3, max_distance=1)
    T = 10
    x = randn(T, B, IN)
    reset = torch.rand(T, B, generator=torch.Generator().manual_seed(2)) < 0.25
    _, carried = m(randn(4, B, IN, seed=3), m.initial_state(B), episode(4))
    seq, seq_state = m(x, carried, reset)
    state, steps = carried, []
    for t in range(T):
        out, state = m(x[t:t + 1], state, reset[t:t + 1])
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps), seq, atol=1e-10, rtol=0)
    for key in state:
        torch.testing.assert_close(state[key], seq_state[key], atol=1e-10, rtol=0)


@pytest.mark.parametrize("layers", [1, 2])
def test_inputs_older_than_the_window_have_no_influence(layers):
    W, T, s = 3, 12, 2
    m = build(layers=layers, window=W)
    x, reset = randn(T, B, IN), episode(T)
    out = run_in_two_calls(m, x, reset)
    x2 = x.clone()
    x2[s] += 1.0
    out2 = run_in_two_calls(m, x2, reset)
    reach = s + layers * (W - 1)  # each layer looks W - 1 steps further back
    assert (out2[s:reach + 1] - out[s:reach + 1]).abs().amax(dim=(1, 2)).min() > 1e-6
    torch.testing.assert_close(out2[reach + 1:], out[reach + 1:], atol=0, rtol=0)
    torch.testing.assert_close(out2[:s], out[:s], atol=0, rtol=0)


def test_full_context_mode_attends_to_the_whole_episode():
    T = 12
    fct = build(window=T)
    x, reset = randn(T, B, IN), episode(T)
    out = run_in_two_calls(fct, x, reset)
    x2 = x.clone()
    x2[0] += 1.0
    assert (run_in_two_calls(fct, x2, reset)[-1] - out[-1]).abs().max() > 1e-6
    # A window longer than the episode changes nothing: window = episode length is the full-context transformer.
    longer = build(window=3 * T)
    longer.load_state_dict(fct.state_dict())
    torch.testing.assert_close(run_in_two_calls(longer, x, reset), out, atol=1e-12, rtol=0)
    assert fct.capacity == T and fct.initial_state(B)["k"].shape == (B, 1, T - 1, WIDTH)


def test_gtrxl_gate_starts_near_identity():
    torch.manual_seed(0)
    gate = GRUGate(64, gate_bias=2.0)
    x, y = torch.randn(256, 64), torch.randn(256, 64)
    z = gate.update_gate(x, y)
    assert z.mean() < 0.2  # sigmoid(-2) = 0.12: the gate passes the stream through mostly unchanged
    # A residual addition moves the stream by |y|; the gate by much less.
    assert (gate(x, y) - x).norm() < 0.3 * y.norm()
    # With a very large bias every layer is the identity: the memory outputs the normalised input embedding.
    m = build(gating="gtrxl", gate_bias=40.0, layers=2)
    x, reset = randn(6, B, IN), episode(6)
    out, _ = m(x, m.initial_state(B), reset)
    pos = torch.arange(6).unsqueeze(1).expand(6, B)
    expected = m.final_norm(m.input(x) + sinusoid(pos, WIDTH, torch.float64))
    torch.testing.assert_close(out, expected, atol=1e-8, rtol=0)


def test_sinusoid_layout():
    code = sinusoid(torch.tensor([0, 3]), 6, torch.float64)
    torch.testing.assert_close(code[0], torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.float64))
    inv_freq = 1e4 ** (-torch.tensor([0.0, 2.0, 4.0], dtype=torch.float64) / 6)
    torch.testing.assert_close(code[1], torch.cat([(3 * inv_freq).sin(), (3 * inv_freq).cos()]))


@pytest.mark.parametrize("positions", ["sinusoidal", "relative"])
def test_positions_within_the_episode(positions):
    # The same input at every step with a window of one step: outputs can differ only through absolute positions.
    m = build(positions=positions, window=1)
    x = randn(1, B, IN).expand(8, B, IN)
    reset = episode(8)
    reset[5] = True
    out, _ = m(x, m.initial_state(B), reset)
    torch.testing.assert_close(out[5], out[0], atol=1e-12, rtol=0)  # positions restart with the episode
    if positions == "sinusoidal":
        assert (out[3] - out[0]).abs().max() > 1e-3
    else:
        torch.testing.assert_close(out[3], out[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("positions", ["sinusoidal", "relative"])
def test_only_relative_positions_are_translation_invariant(positions):
    W, T = 3, 9
    m = build(positions=positions, window=W)
    if positions == "relative":
        with torch.no_grad():
            m.layers[0].relative_bias.copy_(randn(2, W, seed=4))
    x, reset = randn(T, B, IN), episode(T)
    out, _ = m(x, m.initial_state(B), reset)
    t = T - 1
    window_alone, _ = m(x[t - W + 1:], m.initial_state(B), episode(W))
    same = torch.allclose(window_alone[-1], out[t], atol=1e-12, rtol=0)
    assert same == (positions == "relative")


def test_relative_bias_steers_attention_and_clips_far_distances():
    m = build(positions="relative", window=4, max_distance=1)
    assert m.layers[0].relative_bias.shape == (2, 2)  # distances 0 and "1 or more"
    x, reset = randn(7, B, IN), episode(7)
    with torch.no_grad():
        m.layers[0].relative_bias.copy_(torch.tensor([[50.0, 0.0], [50.0, 0.0]]))
    self_only, _ = m(x, m.initial_state(B), reset)
    with torch.no_grad():
        m.layers[0].relative_bias.copy_(torch.tensor([[0.0, -50.0], [0.0, -50.0]]))
    far_suppressed, _ = m(x, m.initial_state(B), reset)  # distances 1, 2 and 3 all get the clipped bias
    torch.testing.assert_close(far_suppressed, self_only, atol=1e-12, rtol=0)
    one_step = build(positions="relative", window=1)
    one_step.load_state_dict({k: v for k, v in m.state_dict().items() if "relative_bias" not in k}, strict=False)
    torch.testing.assert_close(one_step(x, one_step.initial_state(B), reset)[0], self_only, atol=1e-12, rtol=0)


def test_cache_holds_only_the_current_episode_and_takes_no_gradient():
    W, layers = 4, 2
    m = build(window=W, layers=layers)
    reset = episode(6)
    reset[-1] = True  # a new episode starts at the last step
    _, state = m(randn(6, B, IN), m.initial_state(B), reset)
    assert state["k"].shape == state["v"].shape == (B, layers, W - 1, WIDTH)
    assert torch.equal(state["step"], torch.ones(B, dtype=torch.long))
    assert state["k"][:, :, :-1].abs().max() == 0 and state["k"][:, :, -1].abs().min() > 0
    # Cached entries from before a call are constants of that call (TrXL's stop-gradient memory).
    cached = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in state.items()}
    x = randn(3, B, IN, seed=5).requires_grad_(True)
    out, _ = m(x, cached, torch.zeros(3, B, dtype=torch.bool))
    # a random readout: a plain sum of LayerNorm outputs has no gradient (constant up to rounding)
    (out[-1] * torch.randn_like(out[-1])).sum().backward()
    assert cached["k"].grad is None and cached["v"].grad is None
    assert x.grad[0].abs().sum() > 0  # within the call, gradients reach every step


@pytest.mark.parametrize("option,value,message", [
    ("gating", "gru", "memory.gating: .*accepted: none, gtrxl"),
    ("norm", "sandwich", "memory.norm: .*accepted: pre, post"),
    ("positions", "rope", "memory.positions: .*accepted: sinusoidal, relative"),
    ("heads", 3, "memory.heads must divide memory.width"),
    ("window", 0, "memory.window must be a positive integer"),
    ("layers", 0, "memory.layers must be a positive integer"),
    ("width", 0, "memory.width must be a positive integer"),
    ("ff_size", 0, "memory.ff_size must be a positive integer"),
    ("max_distance", -1, "memory.max_distance must be a non-negative integer"),
])
def test_bad_arguments_raise_clear_errors(option, value, message):
    config = {"width": WIDTH, "heads": 2, option: value}
    with pytest.raises(ValueError, match=message):
        memory.make("transformer", IN, **config)


def test_state_of_another_window_is_rejected():
    state = build(window=4).initial_state(B)
    with pytest.raises(ValueError, match=r"state k/v must be \[B, 1, 5, 16\]"):
        build(window=6)(randn(2, B, IN), state, episode(2))
