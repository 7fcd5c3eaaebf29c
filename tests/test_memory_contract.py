"""The memory contract (DESIGN.md), checked for every registered memory: register a module and it is tested here."""

import io

import pytest
import torch

import memory

T, B, IN = 12, 4, 6
# Small, fast settings per memory; a memory that needs options to be small enough for CPU tests adds them here.
SMALL_CONFIG: dict[str, dict] = {"lstm": {"hidden_size": 16}, "gru": {"hidden_size": 16},
                               "transformer": {"width": 16, "layers": 2, "heads": 2, "window": 8, "gating": "gtrxl",
                                               "positions": "relative"},
                               # Chunks close within T=12; stop_gradient=False: why in memory/hcam.py's HCAM docstring.
                               "hcam": {"width": 8, "layers": 2, "heads": 2, "chunk_size": 4, "top_k": 2,
                                        "max_chunks": 2, "stop_gradient": False},
                               # Segments of 4 (no other length lies in [0.8 L, 1.2 L]) close within T=12.
                               "memo": {"width": 8, "layers": 2, "heads": 2, "segment_length": 4,
                                        "summary_length": 2, "max_summaries": 2},
                               # Capacity >= T, so step 0's token is still stored when the last step reads.
                               "sat": {"num_places": 3, "width": 8, "heads": 2, "capacity": 16,
                                       "organisation": "place", "chunk_size": 4, "top_k": 2}}
# Memories that read context get it from each step's own input, so every slice of x carries its own context.
CONTEXT = {"sat": lambda x: {"place": (x[..., 0] > 0).long() + (x[..., 1] > 0).long()}}


class WithContext(memory.Memory):
    """Feeds a memory the context ``context_fn(x)``, so the contract checks run on memories that need one."""

    def __init__(self, inner, context_fn):
        super().__init__()
        self.inner, self.context_fn = inner, context_fn
        self.input_size, self.output_size = inner.input_size, inner.output_size

    def initial_state(self, batch_size, device=None):
        return self.inner.initial_state(batch_size, device)

    def forward(self, x, state, reset, context=None):
        return self.inner(x, state, reset, self.context_fn(x))


def build(name):
    torch.manual_seed(0)
    m = memory.make(name, IN, **SMALL_CONFIG.get(name, {})).double()
    return WithContext(m, CONTEXT[name]) if name in CONTEXT else m


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, IN, generator=g, dtype=torch.float64)
    reset = torch.rand(T, B, generator=g) < 0.2
    reset[0] = True
    return x, reset


def initial(m, batch=B):
    return {k: v.double() if v.is_floating_point() else v for k, v in m.initial_state(batch, "cpu").items()}


@pytest.fixture(params=memory.names())
def name(request):
    return request.param


def test_step_equals_sequence(name):
    m = build(name)
    x, reset = inputs()
    seq_out, seq_state = m(x, initial(m), reset)
    state, step_outs = initial(m), []
    for t in range(T):
        out, state = m(x[t:t + 1], state, reset[t:t + 1])
        step_outs.append(out)
    torch.testing.assert_close(torch.cat(step_outs), seq_out, atol=1e-5, rtol=1e-5)
    assert seq_state.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(state[k], seq_state[k], atol=1e-5, rtol=1e-5)
    assert seq_out.shape == (T, B, m.output_size)


def test_reset_is_exact(name):
    m = build(name)
    x, _ = inputs()
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0] = True
    reset[7, 1] = True  # env 1 starts a new episode at step 7
    out, _ = m(x, initial(m), reset)
    # Perturbing env 1's first episode must leave every output from step 7 on unchanged ...
    x2 = x.clone()
    x2[:7, 1] += torch.randn(7, IN, dtype=torch.float64)
    out2, _ = m(x2, initial(m), reset)
    torch.testing.assert_close(out2[7:, 1], out[7:, 1], atol=1e-10, rtol=0)
    # ... and equal to running the second episode alone from the initial state.
    fresh, _ = m(x[7:, 1:2], initial(m, 1), reset[7:, 1:2])
    torch.testing.assert_close(fresh[:, 0], out[7:, 1], atol=1e-10, rtol=0)
    # A reset in the middle of a call also wipes state carried in from the previous call.
    _, carried = m(x, initial(m), reset)
    reset_mid = torch.zeros(T, B, dtype=torch.bool)
    reset_mid[3] = True
    out_carried, _ = m(x, carried, reset_mid)
    out_fresh, _ = m(x[3:], initial(m), reset_mid[3:])
    torch.testing.assert_close(out_carried[3:], out_fresh, atol=1e-10, rtol=0)


def test_state_is_data(name):
    m = build(name)
    x, reset = inputs()
    _, state = m(x, initial(m), reset)
    assert isinstance(state, dict)
    for k, v in state.items():
        assert isinstance(v, torch.Tensor) and v.shape[0] == B, k
    # Index by env, concatenate back, and continue: same outputs as continuing from the whole state.
    parts = [memory.index_state(state, slice(0, 1)), memory.index_state(state, slice(1, B))]
    joined = memory.cat_states(parts)
    x_next, _ = inputs(seed=2)
    no_reset = torch.zeros(T, B, dtype=torch.bool)
    out_a, _ = m(x_next, state, no_reset)
    out_b, _ = m(x_next, joined, no_reset)
    torch.testing.assert_close(out_a, out_b, atol=0, rtol=0)
    # Running one env's slice alone matches its column of the batched run.
    out_c, _ = m(x_next[:, 1:2], memory.index_state(state, slice(1, 2)), no_reset[:, 1:2])
    torch.testing.assert_close(out_c[:, 0], out_a[:, 1], atol=1e-10, rtol=0)
    # Checkpoint round trip.
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    loaded = torch.load(buf)
    out_d, _ = m(x_next, loaded, no_reset)
    torch.testing.assert_close(out_d, out_a, atol=0, rtol=0)
    # Moving between devices keeps keys, shapes and values.
    moved = memory.state_to(state, "cpu")
    assert all(torch.equal(moved[k], state[k]) for k in state)


def test_gradients_flow(name):
    m = build(name)
    x, _ = inputs()
    x.requires_grad_(True)
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[0] = True
    out, _ = m(x, initial(m), reset)
    out[-1].sum().backward()
    # The last output depends on the first input of the same episode: gradient flows through the whole sequence
    # (a memoryless module only reaches its own step).
    assert x.grad[-1].abs().sum() > 0
    if name != "none":
        assert x.grad[0].abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_unknown_memory_and_option():
    with pytest.raises(ValueError, match="accepted: .*lstm"):
        memory.make("no-such-memory", 4)
    with pytest.raises(ValueError, match="memory.hidden: .*hidden_size"):
        memory.make("lstm", 4, hidden=8)


def test_shape_mismatch_is_reported():
    m = memory.make("lstm", 4, hidden_size=8)
    with pytest.raises(ValueError, match=r"\[T, B, 4\]"):
        m(torch.zeros(3, 2, 5), m.initial_state(2), torch.zeros(3, 2, dtype=torch.bool))
