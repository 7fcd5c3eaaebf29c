"""The ``memo`` memory: segment boundaries, summary memory (memo/rmt), streaming bounds, truncation, errors, refreshing
stale caches and its sync-free step."""

import re

import pytest
import torch

from memory.memo import MemoMemory
from memory.transformer import sinusoid

IN = 5
SMALL = {"width": 16, "layers": 2, "heads": 2, "segment_length": 4, "summary_length": 2}


def build(**config):
    torch.manual_seed(0)
    return MemoMemory(IN, **{**SMALL, **config}).double()


def inputs(T, B, seed=1):
    x = torch.randn(T, B, IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x, torch.zeros(T, B, dtype=torch.bool)


def initial(m, batch):
    return {k: v.double() if v.is_floating_point() else v for k, v in m.initial_state(batch).items()}


def run_steps(m, x, state):
    """Token by token; returns outputs [T, B, D] and the state after every step."""
    outs, states = [], []
    for t in range(x.shape[0]):
        out, state = m(x[t:t + 1], state, torch.zeros(1, x.shape[1], dtype=torch.bool))
        outs.append(out)
        states.append(state)
    return torch.cat(outs), states


def summary_count(state):
    return state["valid"].sum(1)


def test_eval_segments_have_fixed_length_and_a_tail_makes_no_summary():
    m = build(max_summaries=8).eval()
    x, _ = inputs(18, 2)
    _, states = run_steps(m, x, initial(m, 2))
    for t, state in enumerate(states):
        assert (summary_count(state) == 2 * ((t + 1) // 4)).all(), t
    assert (states[-1]["position"] == 2).all()  # the tail of 2 steps is still waiting for its summary


def test_training_draws_lengths_in_range_and_ends_segments_there():
    m = build(segment_length=10, max_summaries=4)
    x, _ = inputs(13, 64)
    torch.manual_seed(3)
    _, states = run_steps(m, x, initial(m, 64))
    lengths = states[0]["length"]
    assert lengths.min() >= 8 and lengths.max() <= 12 and len(lengths.unique()) > 1
    for t, state in enumerate(states):
        assert torch.equal(summary_count(state) > 0, lengths <= t + 1), t
    m.eval()
    _, eval_states = run_steps(m, x[:1], initial(m, 64))
    assert (eval_states[0]["length"] == 10).all()


def test_step_equals_sequence_with_random_lengths():
    m = build(segment_length=5)
    x, reset = inputs(23, 3)
    reset[0], reset[9, 1] = True, True
    torch.manual_seed(7)
    seq_out, seq_state = m(x, initial(m, 3), reset)
    torch.manual_seed(7)
    state, outs = initial(m, 3), []
    for t in range(x.shape[0]):
        out, state = m(x[t:t + 1], state, reset[t:t + 1])
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs), seq_out, atol=1e-5, rtol=1e-5)
    for k in state:
        torch.testing.assert_close(state[k], seq_state[k], atol=1e-5, rtol=1e-5)


def segment_forward(m, x):
    """The paper's forward for one env, written without caches: each segment of L tokens is run as one causal
    sequence [summaries ; tokens ; queries] with positions from 0. x [T, in] -> outputs [T, D]."""
    L, n, outs = m.segment_length, m.summary_length, []
    memory = x.new_zeros(0, m.width)
    for start in range(0, x.shape[0], L):
        tokens = m.input(x[start:start + L])
        seq = torch.cat([memory, tokens, m.summary_queries])[None]
        seq = seq + sinusoid(torch.arange(seq.shape[1]), m.width, seq.dtype)
        size = seq.shape[1]
        causal = torch.ones(size, size, dtype=torch.bool).tril()[None]
        h, none = seq, seq.new_zeros(1, 0, m.width)
        for layer in m.layers:
            h, _, _ = layer(h, none, none, causal, None)
        h = m.final_norm(h[0])
        outs.append(h[len(memory):len(memory) + len(tokens)])
        if len(tokens) == L:
            memory = torch.cat([memory, h[-n:]])
    return torch.cat(outs)


def test_cached_steps_equal_the_segment_forward():
    m = build(max_summaries=4).eval()
    x, reset = inputs(14, 1)
    out, _ = m(x, initial(m, 1), reset)
    torch.testing.assert_close(out[:, 0], segment_forward(m, x[:, 0]), atol=1e-10, rtol=0)


def test_raw_tokens_of_earlier_segments_are_never_read():
    m = build(max_summaries=4).eval()
    x, reset = inputs(12, 2)
    _, state = m(x[:4], initial(m, 2), reset[:4])  # one whole segment
    x2 = x.clone()
    x2[:4] += torch.randn(4, 2, IN, dtype=torch.float64)
    _, state2 = m(x2[:4], initial(m, 2), reset[:4])
    summary_keys = {"summaries", "memory_k", "memory_v"}
    for k in state:  # the segment left nothing in the state but its summary
        assert torch.equal(state[k], state2[k]) == (k not in summary_keys), k
    # With the first segment's summary put back, its perturbed raw tokens change nothing later.
    spliced = {**state2, **{k: state[k] for k in summary_keys}}
    out, _ = m(x[4:], state, reset[4:])
    out2, _ = m(x2[4:], spliced, reset[4:])
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    # Within one call the later outputs do depend on the first segment, through its summary.
    full, _ = m(x2, initial(m, 2), reset)
    assert not torch.allclose(full[4:], out)


@pytest.mark.parametrize("mode", ["memo", "rmt"])
def test_summaries_accumulate_or_overwrite(mode):
    m = build(mode=mode, max_summaries=4 if mode == "memo" else None).eval()
    x, _ = inputs(8, 2)
    _, states = run_steps(m, x, initial(m, 2))
    first, second = states[3], states[7]
    assert m.memory_size == (8 if mode == "memo" else 2)
    if mode == "memo":
        assert (summary_count(second) == 4).all()
        torch.testing.assert_close(second["summaries"][:, -4:-2], first["summaries"][:, -2:], atol=0, rtol=0)
    else:
        assert (summary_count(second) == 2).all()
        assert not torch.allclose(second["summaries"], first["summaries"])


def test_streaming_with_max_summaries_stays_bounded_past_the_horizon():
    m = build(max_summaries=2).eval()
    x, reset = inputs(60, 2)  # 15 segments; the memory holds 2
    state = initial(m, 2)
    shapes = {k: v.shape for k, v in state.items()}
    with torch.no_grad():
        for t in range(x.shape[0]):
            previous = state
            out, state = m(x[t:t + 1], state, reset[t:t + 1])
            assert torch.isfinite(out).all()
            assert {k: v.shape for k, v in state.items()} == shapes
            if t % 4 == 3 and t >= 8:  # the memory is full: the oldest summary is dropped, the rest move up
                assert (summary_count(state) == 4).all()
                torch.testing.assert_close(state["summaries"][:, :2], previous["summaries"][:, 2:], atol=0, rtol=0)
    assert m.capacity == 4 + 4  # 2 summaries of 2 tokens + at most ceil(1.2 * 4) = 4 segment tokens


@pytest.mark.parametrize("truncate", [False, True])
def test_truncate_stops_gradients_into_earlier_summaries(truncate):
    m = build(max_summaries=4, truncate=truncate)
    x, reset = inputs(12, 1)
    x.requires_grad_(True)
    out, _ = m(x, initial(m, 1), reset)
    out[8:].sum().backward()  # the third segment
    reached_first_segment = x.grad[:4].abs().sum() > 0
    assert bool(reached_first_segment) is not truncate
    # Summaries are read only by later segments, so truncation also leaves the queries untrained.
    assert (m.summary_queries.grad is None) is truncate
    assert m.input.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("config,message", [
    ({"segment_length": 0}, "memory.segment_length must be a positive integer"),
    ({"summary_length": 2.5}, "memory.summary_length must be a positive integer"),
    ({"mode": "fifo"}, "memory.mode: unknown value 'fifo'; accepted: memo, rmt"),
    ({"max_summaries": 0}, "memory.max_summaries must be a positive integer or None"),
    ({"mode": "rmt", "max_summaries": 3}, "memory.max_summaries must be 1 or None with memory.mode='rmt'"),
    ({"truncate": "yes"}, "memory.truncate must be true or false"),
    ({"heads": 3}, "memory.heads must divide memory.width"),
])
def test_bad_arguments_raise_clear_errors(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MemoMemory(IN, **{**SMALL, **config})


def test_wrong_state_shape_is_reported():
    m = build(max_summaries=2)
    state = initial(build(max_summaries=3), 2)
    with pytest.raises(ValueError, match=r"state\['summaries'\] must be \[B, 4, 16\]"):
        m(*inputs(3, 2)[:1], state, torch.zeros(3, 2, dtype=torch.bool))


def perturb_weights(m, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def causal_keys(m, h):
    """Each layer's keys/values of the embedded sequence h [1, L, D] read causally, without caches: [N, L, D] each."""
    causal = torch.ones(h.shape[1], h.shape[1], dtype=torch.bool).tril()[None]
    none, keys, values = h.new_zeros(1, 0, m.width), [], []
    for layer in m.layers:
        h, k, v = layer(h, none, none, causal, None)
        keys.append(k[0])
        values.append(v[0])
    return torch.stack(keys), torch.stack(values)


def test_refresh_is_exact_at_unchanged_weights():
    m = build(segment_length=5, max_summaries=2)  # training mode: drawn lengths, memory full, resets
    x, reset = inputs(37, 3)
    reset[20, 1] = True
    _, state = m(x, initial(m, 3), reset)
    assert (summary_count(state) > 0).all() and (state["position"] > 0).any()
    fresh = m.refresh(state)
    for k in state:
        torch.testing.assert_close(fresh[k], state[k], atol=1e-12, rtol=0)


def test_refresh_equals_a_recompute_with_new_weights():
    """After the weights change, the refreshed caches are the keys/values of [summaries ; segment tokens] read as one
    causal sequence with the new weights; the summaries and the rest of the state are kept."""
    m = build(max_summaries=3).eval()
    x, reset = inputs(11, 2)  # two whole segments and 3 tokens of the third
    _, state = m(x, initial(m, 2), reset)
    perturb_weights(m)
    fresh = m.refresh(state)
    for k in ("summaries", "valid", "segment_x", "position", "length"):
        assert torch.equal(fresh[k], state[k]), k
    for b in range(2):
        summaries = state["summaries"][b, -4:]  # 2 summaries of 2 tokens, newest last
        seq = torch.cat([summaries, m.input(x[8:, b])])[None]
        keys, values = causal_keys(m, seq + sinusoid(torch.arange(7), m.width, seq.dtype))
        for name, expected in (("k", keys), ("v", values)):
            torch.testing.assert_close(fresh[f"memory_{name}"][b, :, -4:], expected[:, :4], atol=1e-10, rtol=0)
            torch.testing.assert_close(fresh[f"segment_{name}"][b, :, :3], expected[:, 4:], atol=1e-10, rtol=0)
            assert not torch.allclose(state[f"segment_{name}"][b, :, :3], expected[:, 4:])
        assert (fresh["memory_k"][b, :, :2] == 0).all() and (fresh["segment_k"][b, :, 3:] == 0).all()


def test_refresh_in_the_first_segment_equals_a_fresh_run():
    m = build().eval()
    x, reset = inputs(3, 2)
    _, state = m(x, initial(m, 2), reset)
    perturb_weights(m)
    _, rerun = m(x, initial(m, 2), reset)
    fresh = m.refresh(state)
    for k in state:
        torch.testing.assert_close(fresh[k], rerun[k], atol=1e-10, rtol=0)


@pytest.mark.parametrize("training", [False, True])
def test_a_step_and_refresh_have_no_host_sync(training):
    """A step and ``refresh`` trace to one graph each (a host sync such as ``if tensor.any()`` breaks it) with no
    data-dependent op, so both can be captured in a CUDA graph."""
    m = build(max_summaries=2).train(training)
    ops = []

    def record(graph_module, _):
        ops.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    x, reset = inputs(7, 2)
    _, state = m(x[:6], initial(m, 2), reset[:6])
    with torch.no_grad():
        torch.compile(m, fullgraph=True, backend=record)(x[6:], state, reset[6:])
        assert ops
        count = len(ops)
        torch.compile(m.refresh, fullgraph=True, backend=record)(state)
        assert len(ops) > count
    syncing = [op for op in ops if re.search(r"\b(nonzero|item|masked_select|unique|argwhere)\b", op)]
    assert not syncing
