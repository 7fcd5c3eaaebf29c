"""HCAM: the hierarchical read against a brute-force float64 computation; the ``hcam`` memory's chunk store, its
in-place mode and its sync-free step."""

import math
import re

import numpy as np
import pytest
import torch

import envs
import memory
from agents.ppo import PPO, Agent, PPOConfig, seed_everything
from memory.hcam import HCAM, HierarchicalMemoryAttention, load_haiku_params, reversed_sinusoid, to_haiku_params

B, Q, E, M, C, D, F, K, H = 2, 3, 5, 6, 4, 8, 12, 3, 2


def read_module(**kwargs):
    torch.manual_seed(0)
    return HierarchicalMemoryAttention(E, D, F, K, H, **kwargs).double()


def read_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return (torch.randn(B, Q, E, generator=g, dtype=f64), torch.randn(B, M, D, generator=g, dtype=f64),
            torch.randn(B, M, C, D, generator=g, dtype=f64), torch.rand(B, Q, M, generator=g) < 0.7)


def brute_force_read(m, queries, keys, contents, mask):
    """The reference read, one query at a time in float64 numpy: project every key, sort by (-logit, index)."""
    w = {name: p.detach().numpy() for name, p in m.named_parameters()}
    attn = m.within_mem_attn
    table = reversed_sinusoid(C, D).numpy()
    out = np.zeros((B, Q, F))
    for b in range(B):
        for q in range(Q):
            query = queries[b, q].numpy()
            logits = [(w["query.weight"] @ query) @ (w["key.weight"] @ keys[b, j].numpy()) / math.sqrt(F)
                      if mask[b, q, j] else -1e6 for j in range(M)]
            chosen = sorted(range(M), key=lambda j: (-logits[j], j))[:K]
            top = np.array([logits[j] for j in chosen])
            weights = np.exp(top - top.max()) / np.exp(top - top.max()).sum()
            for weight, j in zip(weights, chosen):
                chunk = contents[b, j].numpy() + table  # [C, D]
                qh = (w["within_mem_attn.query.weight"] @ query + w["within_mem_attn.query.bias"]).reshape(H, -1)
                kh = (chunk @ w["within_mem_attn.key.weight"].T + w["within_mem_attn.key.bias"]).reshape(C, H, -1)
                vh = (chunk @ w["within_mem_attn.value.weight"].T + w["within_mem_attn.value.bias"]).reshape(C, H, -1)
                heads = []
                for h in range(H):
                    s = kh[:, h] @ qh[h] / math.sqrt(attn.key_size)
                    p = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
                    heads.append(p @ vh[:, h])
                step = w["within_mem_attn.linear.weight"] @ np.concatenate(heads) + w["within_mem_attn.linear.bias"]
                out[b, q] += weight * step
    return out


def test_read_matches_brute_force_top_k():
    m = read_module()
    queries, keys, contents, mask = read_inputs()
    mask[0, 1] = False  # one all-masked query: ties among -1e6
    out = m(queries, keys, contents, mask)
    assert out.shape == (B, Q, F)
    np.testing.assert_allclose(out.detach().numpy(), brute_force_read(m, queries, keys, contents, mask),
                               rtol=1e-10, atol=1e-10)


def test_all_masked_memory_picks_first_k_chunks_uniformly():
    m = read_module()
    queries, keys, _, _ = read_inputs()
    mask = torch.zeros(B, Q, M, dtype=torch.bool)
    weights, indices = m.select(queries, keys, mask)
    assert torch.equal(indices, torch.arange(K).expand(B, Q, K))
    torch.testing.assert_close(weights, torch.full((B, Q, K), 1 / K, dtype=torch.float64))


def test_masked_logit_is_minus_1e6_not_minus_inf():
    m = read_module()
    queries, _, _, _ = read_inputs()
    direction = (m.query(queries[:, :1]) @ m.key.weight).detach()  # [B, 1, D]: logit = direction . key / sqrt(F)
    keys = torch.zeros(B, M, D, dtype=torch.float64)
    mask = torch.zeros(B, 1, M, dtype=torch.bool)
    mask[:, :, 0] = True
    for logit, expected_first in ((-2e6, 1), (-5e5, 0)):  # an unmasked chunk only wins above -1e6
        keys[:, 0] = direction[:, 0] * logit * math.sqrt(F) / direction[:, 0].pow(2).sum(-1, keepdim=True)
        _, indices = m.select(queries[:, :1], keys, mask)
        assert (indices[..., 0] == expected_first).all()


def test_reversed_sinusoid_is_added_to_contents():
    table = reversed_sinusoid(C, D).numpy()
    inv_freq = 1e4 ** (-np.arange(0, D, 2) / D)
    for row in range(C):
        position = C - 1 - row
        angles = position * inv_freq
        np.testing.assert_allclose(table[row], np.concatenate([np.sin(angles), np.cos(angles)]))
    with_pe, without_pe = read_module(), read_module(memory_position_encoding=False)
    queries, keys, contents, mask = read_inputs()
    torch.testing.assert_close(with_pe(queries, keys, contents, mask),
                               without_pe(queries, keys, contents + torch.as_tensor(table), mask))
    assert reversed_sinusoid(C, D, torch.float32).dtype == torch.float32


def test_gradients_stop_at_keys_and_contents():
    m = read_module()
    queries, keys, contents, mask = read_inputs()
    for t in (queries, keys, contents):
        t.requires_grad_(True)
    m(queries, keys, contents, mask).sum().backward()
    assert keys.grad is None and contents.grad is None
    assert queries.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in m.parameters())


def test_haiku_params_round_trip():
    m = read_module()
    params = to_haiku_params(m)
    assert set(params) == {"hierarchical_memory_attention/query", "hierarchical_memory_attention/key",
                           *(f"hierarchical_memory_attention/within_mem_attn/{n}" for n in ("query", "key", "value",
                                                                                              "linear"))}
    assert params["hierarchical_memory_attention/query"]["w"].shape == (E, F)
    assert set(params["hierarchical_memory_attention/within_mem_attn/linear"]) == {"w", "b"}
    torch.manual_seed(5)
    other = HierarchicalMemoryAttention(E, D, F, K, H).double()
    load_haiku_params(other, params)
    for (name, p), q in zip(m.named_parameters(), other.parameters()):
        assert torch.equal(p, q), name
    del params["hierarchical_memory_attention/key"]
    with pytest.raises(ValueError, match="missing .*hierarchical_memory_attention/key"):
        load_haiku_params(other, params)


def test_read_bad_arguments():
    with pytest.raises(ValueError, match="feature_size must be a multiple of num_heads"):
        HierarchicalMemoryAttention(E, D, 10, K, num_heads=3)
    with pytest.raises(ValueError, match="memory_size must be even"):
        HierarchicalMemoryAttention(E, 7, F, K)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        HierarchicalMemoryAttention(E, D, F, 0)
    m = read_module()
    queries, keys, contents, mask = read_inputs()
    with pytest.raises(ValueError, match="fewer than k=3"):
        m(queries, keys[:, :2], contents[:, :2], mask[..., :2])
    with pytest.raises(ValueError, match="mask must be bool"):
        m(queries, keys, contents, mask.double())


# The memory: chunk size 2, two slots, so chunks close and the oldest is evicted within a few steps.
CONFIG = {"width": 8, "layers": 2, "heads": 2, "chunk_size": 2, "top_k": 2, "max_chunks": 2}


def hcam(**overrides):
    torch.manual_seed(0)
    return memory.make("hcam", 3, **{**CONFIG, **overrides}).double()


def run(m, x, reset=None, state=None):
    reset = torch.zeros(x.shape[:2], dtype=torch.bool) if reset is None else reset
    state = state or {k: v.double() if v.is_floating_point() else v for k, v in m.initial_state(x.shape[1]).items()}
    return m(x, state, reset)


def first_layer_inputs(m, x):
    return m.layers[0].norm_attn(m.input(x)).detach()  # [T, B, W]: what layer 0 writes


def test_chunks_store_means_at_the_next_step_and_evict_the_oldest():
    m = hcam()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    y = first_layer_inputs(m, x)
    _, state = run(m, x[:6])
    # Chunk 2 (steps 4-5) is full and waits in the accumulator; slots 0 and 1 hold chunks 0 and 1.
    assert state["chunks_written"].tolist() == [2, 2] and state["steps_in_chunk"].tolist() == [2, 2]
    torch.testing.assert_close(state["accumulator"][:, 0], y[4:6].transpose(0, 1))
    torch.testing.assert_close(state["contents"][:, 0, 0], y[0:2].transpose(0, 1))
    _, state = run(m, x[6:], state=state)
    # The next step stores it over the oldest chunk: slot 0 now holds chunk 2, slot 1 still chunk 1.
    assert state["chunks_written"].tolist() == [3, 3] and state["steps_in_chunk"].tolist() == [1, 1]
    assert state["valid"].all() and not state["accumulator"][:, :, 1:].any()
    torch.testing.assert_close(state["contents"][:, 0, 0], y[4:6].transpose(0, 1))
    torch.testing.assert_close(state["contents"][:, 0, 1], y[2:4].transpose(0, 1))
    torch.testing.assert_close(state["keys"][:, 0], state["contents"][:, 0].mean(2))


def test_reset_clears_exactly_and_stale_slots_are_never_read():
    m = hcam()
    x = torch.randn(9, 2, 3, dtype=torch.float64)
    reset = torch.zeros(9, 2, dtype=torch.bool)
    reset[4, 0] = True  # env 0 resets just as its chunk 1 (steps 2-3) is full: that chunk is never stored
    out, state = run(m, x[:6], reset[:6])
    assert state["valid"][0].sum() == 0 and state["chunks_written"][0] == 0 and state["steps_in_chunk"][0] == 2
    fresh, _ = run(m, x[4:6, :1])
    torch.testing.assert_close(out[4:6, 0], fresh[:, 0], atol=1e-12, rtol=0)
    # Stale keys/contents left in the cleared env's slots do not change anything that follows.
    noisy = {**state, "keys": state["keys"] + 100.0, "contents": state["contents"] - 100.0}
    noisy["keys"][1], noisy["contents"][1] = state["keys"][1], state["contents"][1]
    torch.testing.assert_close(run(m, x[6:], state=noisy)[0], run(m, x[6:], state=state)[0], atol=1e-12, rtol=0)


def episodes(steps, batch, seed=3):
    """Inputs [T, B, 3] and resets [T, B] that put envs out of step, so chunks fill at different steps."""
    g = torch.Generator().manual_seed(seed)
    reset = torch.rand(steps, batch, generator=g) < 0.15
    reset[0] = True
    return torch.randn(steps, batch, 3, generator=g, dtype=torch.float64), reset


def step_by_step(m, x, reset, state):
    outs = []
    for t in range(x.shape[0]):
        out, state = m(x[t:t + 1], state, reset[t:t + 1])
        outs.append(out)
    return torch.cat(outs), state


def fresh_state(m, batch):
    return {k: v.double() if v.is_floating_point() else v for k, v in m.initial_state(batch).items()}


def test_a_call_never_changes_the_state_it_is_given_by_default():
    m = hcam(max_chunks=3)
    x, reset = episodes(12, 3)
    _, state = run(m, x[:7], reset[:7])
    before = {k: v.clone() for k, v in state.items()}
    _, after = run(m, x[7:], reset[7:], state=state)
    assert not torch.equal(after["contents"], state["contents"])
    for k in state:
        assert torch.equal(state[k], before[k]), k


def test_in_place_gives_the_same_outputs_and_writes_the_given_store():
    x, reset = episodes(20, 4)
    expected, expected_state = run(hcam(max_chunks=3), x, reset)
    m = hcam(max_chunks=3, in_place=True)
    start = fresh_state(m, 4)
    out, state = step_by_step(m, x, reset, start)
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    for k in state:
        torch.testing.assert_close(state[k], expected_state[k], atol=0, rtol=0)
    assert state["contents"] is start["contents"] and state["keys"] is start["keys"]


def test_repeating_a_step_from_the_latest_in_place_state_is_exact():
    """What a rollout's value bootstrap does: one more step from the final state, whose result is dropped."""
    x, reset = episodes(14, 4)
    expected, _ = run(hcam(max_chunks=3), x, reset)
    m = hcam(max_chunks=3, in_place=True)
    _, state = step_by_step(m, x[:9], reset[:9], fresh_state(m, 4))
    assert (state["steps_in_chunk"] == m.chunk_size).any()  # some env has a full chunk waiting to be stored
    bootstrap, _ = m(x[9:10], state, reset[9:10])
    out, _ = step_by_step(m, x[9:], reset[9:], state)
    torch.testing.assert_close(bootstrap[0], expected[9], atol=0, rtol=0)
    torch.testing.assert_close(out, expected[9:], atol=0, rtol=0)


def test_replay_from_a_copied_start_state_matches_the_in_place_rollout():
    """PPO with ``in_place``: copy the start state, roll out step by step, replay env columns with gradients."""
    x, reset = episodes(16, 4)
    m = hcam(max_chunks=3, in_place=True)
    _, state = step_by_step(m, x[:5], reset[:5], fresh_state(m, 4))
    start = {k: v.clone() for k, v in state.items()}
    with torch.no_grad():
        rollout, _ = step_by_step(m, x[5:], reset[5:], state)
    columns = torch.tensor([1, 3])
    replay, _ = m(x[5:, columns], memory.index_state(start, columns), reset[5:, columns])
    torch.testing.assert_close(replay.detach(), rollout[:, columns], atol=1e-12, rtol=0)
    replay.sum().backward()  # the in-place writes during the replay leave backward intact
    assert all(p.grad.abs().sum() > 0 for p in m.parameters())


def test_ppo_trains_the_same_with_in_place():
    """PPO as written (start state copied, value bootstrap, column replays) needs no change for ``in_place``."""
    def train(in_place):
        seed_everything(0)
        cfg = PPOConfig(num_envs=8, rollout_len=11, total_steps=8 * 11 * 3, num_minibatches=2, update_epochs=2)
        env = envs.make_vector("rlmem/EndlessTMaze-v0", cfg.num_envs, n=1, l_max=3)
        agent = Agent(env.single_observation_space, 3, "hcam", {**CONFIG, "max_chunks": 3, "in_place": in_place})
        trainer = PPO(env, agent, cfg, torch.device("cpu"))
        metrics = [trainer.iterate() for _ in range(trainer.num_iterations)]
        return metrics, list(agent.parameters())

    (copying_metrics, copying_params), (in_place_metrics, in_place_params) = train(False), train(True)
    assert copying_metrics == in_place_metrics
    assert all(torch.equal(p, q) for p, q in zip(copying_params, in_place_params))


def test_a_step_has_no_host_sync():
    """The step traces to one graph (a host sync such as ``if tensor.any()`` breaks it) with no data-dependent op."""
    m = hcam(in_place=True)
    ops = []

    def record(graph_module, _):
        ops.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    x, reset = episodes(4, 2)
    _, state = run(m, x[:3], reset[:3])
    with torch.no_grad():
        torch.compile(m, fullgraph=True, backend=record)(x[3:], state, reset[3:])
    syncing = [op for op in ops if re.search(r"\b(nonzero|item|masked_select|unique|argwhere)\b", op)]
    assert ops and not syncing


def test_gradients_stop_at_stored_chunks_by_default():
    m = hcam(chunk_size=2, max_chunks=3)
    x = torch.randn(8, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = run(m, x)
    # A random readout: the plain sum of a LayerNorm's output has no gradient at all (it is constant up to rounding).
    (out[-1] * torch.randn_like(out[-1])).sum().backward()  # steps 6-7: the current chunk; 0-5: stored chunks 0-2
    assert x.grad[:6].abs().sum() == 0 and x.grad[6].abs().sum() > 0 and x.grad[7].abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in m.parameters())
    m.zero_grad()
    x.grad = None
    out, _ = run(hcam(chunk_size=2, max_chunks=3, stop_gradient=False), x)
    (out[-1] * torch.randn_like(out[-1])).sum().backward()
    assert x.grad[0].abs().sum() > 0


def test_memory_haiku_round_trip():
    m = hcam()
    other = hcam(top_k=1)
    load_haiku_params(other, to_haiku_params(m))
    for (name, p), q in zip(m.named_parameters(), other.parameters()):
        assert torch.equal(p, q), name
    assert "hcam/layer_1/hierarchical_memory_attention/within_mem_attn/value" in to_haiku_params(m)


@pytest.mark.parametrize("option, value, message", [
    ("width", 7, "memory.width must be even and a multiple of memory.heads"),
    ("max_chunks", 1, "memory.max_chunks must be >= memory.top_k"),
    ("chunk_size", 0, "memory.chunk_size must be a positive integer"),
    ("chunks", 4, "memory.chunks: not an option"),
])
def test_memory_bad_arguments(option, value, message):
    with pytest.raises(ValueError, match=message):
        memory.make("hcam", 3, **{**CONFIG, option: value})


def test_memory_is_registered_with_paper_sized_defaults():
    m = HCAM(5)
    assert (m.output_size, len(m.layers), m.chunk_size, m.max_chunks) == (256, 4, 16, 64)
