"""The ``sat`` memory (memory/sat.py): spatial embeddings, place grouping, the masked place read, context errors, and
the memory contract's step = sequence and exact resets with context (the shared test calls memories without it)."""

import math

import pytest
import torch

from memory.allocator import STRATEGIES
from memory.sat import SAT, age_ranks, group_by_place
from memory.transformer import sinusoid

T, B, IN, P = 12, 3, 5, 3


def build(**config):
    torch.manual_seed(0)
    options = {"num_places": P, "width": 8, "heads": 2, "capacity": 16, "chunk_size": 4, "top_k": 2} | config
    return SAT(IN, **options).double()


def initial(m, batch=B):
    return {k: v.double() if v.is_floating_point() else v for k, v in m.initial_state(batch).items()}


def inputs(seed=1, strategies=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, IN, generator=g, dtype=torch.float64)
    context = {"place": torch.randint(P, (T, B), generator=g)}
    if strategies:
        context["strategy"] = torch.randint(len(STRATEGIES), (T, B), generator=g)
    return x, context


def cut(context, t, b=slice(None)):
    return {k: v[t, b] for k, v in context.items()}


def test_spatial_embedding_is_added_per_place_id():
    m = build(num_places=5)
    tokens = torch.randn(1, 3, 8, dtype=torch.float64)
    places, ages = torch.tensor([[0, 3, 4]]), torch.tensor([[2, 0, 1]])
    code = sinusoid(torch.arange(5), 8, torch.float64)  # [sin | cos] per place id
    spatial = torch.cat([code[:, 4:], code[:, :4]], -1)  # sat's place code: the halves swapped
    time = sinusoid(torch.arange(16), 8, torch.float64)
    expected = tokens + spatial[places] + time[ages]
    torch.testing.assert_close(m.embed(tokens, places, ages), expected)
    # Place p and memory position p add different codes, so the two are not confused.
    assert not torch.allclose(m.spatial[1] + m.time[2], m.spatial[2] + m.time[1])


def test_place_changes_what_is_read():
    m = build()
    x, context = inputs()
    reset = torch.zeros(T, B, dtype=torch.bool)
    out, _ = m(x, initial(m), reset, context)
    moved = {"place": context["place"].clone()}
    moved["place"][0] = (moved["place"][0] + 1) % P  # the same inputs, first seen somewhere else
    out_moved, _ = m(x, initial(m), reset, moved)
    assert not torch.allclose(out[-1], out_moved[-1])


def test_place_grouping_and_padding_masks_are_exact():
    # Entry j is [j, j]; slot 5 is empty. Place 0 holds slots 1, 4; place 2 holds slots 2, 3, 0 (oldest first).
    entries = torch.arange(6, dtype=torch.float64)[None, :, None].expand(1, 6, 2)
    places = torch.tensor([[2, 0, 2, 2, 0, 1]])
    stamps = torch.tensor([[5, 1, 0, 3, 4, 9]])
    valid = torch.tensor([[True, True, True, True, True, False]])
    chunks, mask = group_by_place(entries, places, stamps, valid, num_places=3, chunk_size=2)
    # Each place owns ceil(6 / 2) = 3 chunks of 2: place 0 -> chunks 0-2, place 1 -> 3-5, place 2 -> 6-8.
    assert chunks.shape == (1, 9, 2, 2) and mask.shape == (1, 9, 2)
    expected_mask = torch.zeros(9, 2, dtype=torch.bool)
    expected_mask[0] = expected_mask[6] = True
    expected_mask[7, 0] = True  # place 2's third entry, then padding
    assert torch.equal(mask[0], expected_mask)
    expected = torch.zeros(9, 2, 2, dtype=torch.float64)
    expected[0, 0], expected[0, 1] = 1, 4
    expected[6, 0], expected[6, 1], expected[7, 0] = 2, 3, 0
    assert torch.equal(chunks[0], expected)
    assert age_ranks(stamps, valid)[0, :5].tolist() == [0, 3, 4, 2, 1]


def test_place_read_ignores_padding_exactly():
    # The masked read equals a brute-force read that drops the padding before attending.
    m = build(organisation="place", top_k=3)
    g = torch.Generator().manual_seed(3)
    chunks = torch.randn(2, 9, 2, 8, generator=g, dtype=torch.float64)
    mask = torch.zeros(2, 9, 2, dtype=torch.bool)
    mask[:, 0], mask[:, 6], mask[:, 7, 0] = True, True, True
    chunks = chunks * mask[..., None]  # padding is zero, as group_by_place leaves it
    query = torch.randn(2, 1, 8, generator=g, dtype=torch.float64)
    hma = m.attention
    for b in range(2):
        reads, logits = [], []
        for i in (0, 6, 7):
            kept = chunks[b, i][mask[b, i]]  # [n, D]
            reads.append(hma.within_mem_attn(query[b], kept, kept)[0])
            logits.append(hma.query(query[b, 0]) @ hma.key(kept.mean(0)) / math.sqrt(8))
        weights = torch.softmax(torch.stack(logits), 0)
        expected = (weights[:, None] * torch.stack(reads)).sum(0)
        torch.testing.assert_close(m.read_places(query, chunks, mask)[b], expected)


@pytest.mark.parametrize("bad, message", [
    (None, r"SAT needs context\['place'\]"),
    ({"task": torch.zeros(T, B, dtype=torch.long)}, r"SAT needs context\['place'\]"),
    ({"place": torch.full((T, B), -1)}, r"context\['place'\] must lie in \[0, 3\), got values -1..-1"),
    ({"place": torch.full((T, B), P)}, r"context\['place'\] must lie in \[0, 3\), got values 3..3"),
    ({"place": torch.zeros(T, B)}, r"context\['place'\] must be int \[T, B\]"),
    ({"place": torch.zeros(T, B + 1, dtype=torch.long)}, r"context\['place'\] must be int \[T, B\]"),
])
def test_bad_place_ids_raise(bad, message):
    m = build()
    x, _ = inputs()
    with pytest.raises(ValueError, match=message):
        m(x, initial(m), torch.zeros(T, B, dtype=torch.bool), bad)


def test_ama_eviction_needs_strategy_ids():
    m = build(eviction="ama", allocator={"anneal_episodes": 50})
    assert m.context_keys == ("place", "strategy")
    assert m.allocator_options == {"anneal_episodes": 50}  # for the agent that runs the allocator
    x, context = inputs()
    reset = torch.zeros(T, B, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"SAT needs context\['strategy'\]"):
        m(x, initial(m), reset, context)
    with pytest.raises(ValueError, match=r"context\['strategy'\] must lie in \[0, 4\)"):
        m(x, initial(m), reset, context | {"strategy": torch.full((T, B), 4)})


@pytest.mark.parametrize("config, message", [
    ({"num_places": None}, "memory.num_places must be a positive integer"),
    ({"organisation": "grid"}, "memory.organisation: unknown value 'grid'; accepted: fifo, place"),
    ({"eviction": "random"}, "memory.eviction: unknown value 'random'; accepted: fifo, lifo, least_visited"),
    ({"organisation": "place", "top_k": 13}, "memory.top_k must be <= the 12 place-chunks"),
    ({"width": 6, "heads": 4}, "memory.width must be even and a multiple of memory.heads=4"),
    ({"allocator": {"lr": 0.1}}, "memory.allocator: configures AMA, so it needs memory.eviction=ama, got 'fifo'"),
    ({"eviction": "ama", "allocator": {"epsilon": 0.1}},
     "memory.allocator: unknown option 'epsilon'; accepted: strategies, embed_size"),
])
def test_bad_options_raise(config, message):
    with pytest.raises(ValueError, match=message):
        build(**config)


# Capacity 5 < T, so every eviction strategy runs inside these checks.
CONFIGS = [{"organisation": "fifo"}, {"organisation": "place"},
           {"organisation": "fifo", "capacity": 5, "eviction": "lifo"},
           {"organisation": "place", "capacity": 5, "eviction": "least_visited", "chunk_size": 2},
           {"organisation": "place", "capacity": 5, "eviction": "ama", "chunk_size": 2}]


@pytest.mark.parametrize("config", CONFIGS)
def test_step_equals_sequence(config):
    m = build(**config)
    x, context = inputs(strategies=config.get("eviction") == "ama")
    reset = torch.rand(T, B, generator=torch.Generator().manual_seed(2)) < 0.2
    seq_out, seq_state = m(x, initial(m), reset, context)
    state, outs = initial(m), []
    for t in range(T):
        out, state = m(x[t:t + 1], state, reset[t:t + 1], cut(context, slice(t, t + 1)))
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs), seq_out, atol=1e-10, rtol=0)
    for k in state:
        torch.testing.assert_close(state[k], seq_state[k], atol=1e-10, rtol=0)
    assert seq_state["tokens"].shape == (B, m.capacity, 8)  # bounded, whatever T is
    assert seq_state["valid"].sum(1).le(m.capacity).all()


@pytest.mark.parametrize("config", CONFIGS)
def test_reset_is_exact(config):
    m = build(**config)
    x, context = inputs(strategies=config.get("eviction") == "ama")
    reset = torch.zeros(T, B, dtype=torch.bool)
    reset[7, 1] = True  # env 1 starts a new episode at step 7
    out, _ = m(x, initial(m), reset, context)
    # Perturbing env 1's first episode (inputs and places) leaves its outputs from step 7 on unchanged ...
    x2, context2 = x.clone(), {k: v.clone() for k, v in context.items()}
    x2[:7, 1] += 1.0
    context2["place"][:7, 1] = (context2["place"][:7, 1] + 1) % P
    out2, _ = m(x2, initial(m), reset, context2)
    torch.testing.assert_close(out2[7:, 1], out[7:, 1], atol=0, rtol=0)
    # ... and equal to running the second episode alone from the initial state.
    fresh, _ = m(x[7:, 1:2], initial(m, 1), reset[7:, 1:2], cut(context, slice(7, None), slice(1, 2)))
    torch.testing.assert_close(fresh[:, 0], out[7:, 1], atol=1e-12, rtol=0)
    # A reset mid-call wipes the state carried in from the previous call.
    _, carried = m(x, initial(m), reset, context)
    reset_mid = torch.zeros(T, B, dtype=torch.bool)
    reset_mid[3] = True
    out_carried, _ = m(x, carried, reset_mid, context)
    out_fresh, _ = m(x[3:], initial(m), reset_mid[3:], cut(context, slice(3, None)))
    torch.testing.assert_close(out_carried[3:], out_fresh, atol=1e-12, rtol=0)


def test_gradients_reach_the_first_step_and_every_parameter():
    m = build(organisation="place")
    x, context = inputs()
    x.requires_grad_(True)
    out, _ = m(x, initial(m), torch.zeros(T, B, dtype=torch.bool), context)
    # a random readout: a plain sum of LayerNorm outputs has no gradient (constant up to rounding)
    (out[-1] * torch.randn_like(out[-1])).sum().backward()
    assert x.grad[0].abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
