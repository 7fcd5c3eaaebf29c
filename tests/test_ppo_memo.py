"""PPO with the long-context memories (memo, rmt, the full-context transformer): refreshing cached keys/values,
replaying stored columns, training."""

import math
import re

import pytest
import torch

import envs
import memory
from agents.ppo import PPO, Agent, PPOConfig, log_prob, seed_everything

MEMO = {"width": 16, "layers": 2, "heads": 2, "segment_length": 4, "summary_length": 2}
CONFIGS = {"memo": ("memo", {**MEMO, "max_summaries": 3}),
           "rmt": ("memo", {**MEMO, "mode": "rmt"}),
           # Full context: the window covers the whole episode (time limit 6 * (l_max + 1) * n = 72 steps).
           "fct": ("transformer", {"width": 16, "layers": 2, "heads": 2, "window": 73, "positions": "sinusoidal"})}


def trainer(kind, **cfg):
    seed_everything(0)
    cfg = PPOConfig(**{"num_envs": 4, "rollout_len": 10, "total_steps": 4 * 10 * 3, "num_minibatches": 2,
                       "lr": 1e-3, **cfg})
    env = envs.make_vector("rlmem/EndlessTMaze-v0", cfg.num_envs, n=3, l_max=3)
    name, config = CONFIGS[kind]
    agent = Agent(env.single_observation_space, 3, name, config)
    return PPO(env, agent, cfg, torch.device("cpu"))


def perturb_weights(module, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_transformer_refresh_equals_a_fresh_run_with_new_weights():
    """Where the episode fits in the cache, refreshed keys/values are those a fresh run with the new weights makes;
    an env whose episode outgrew the cache keeps its cache."""
    torch.manual_seed(0)
    m = memory.make("transformer", 5, width=16, layers=2, heads=2, window=8, gating="gtrxl", positions="relative")
    x = torch.randn(10, 3, 5)
    reset = torch.zeros(10, 3, dtype=torch.bool)
    reset[0], reset[4, 1], reset[6, 2] = True, True, True  # episodes so far: 10 (> window - 1), 6 and 4 steps
    _, state = m(x, m.initial_state(3), reset)
    assert state["step"].tolist() == [10, 6, 4]
    torch.testing.assert_close(m.refresh(state), state, atol=1e-6, rtol=0)  # unchanged weights: unchanged caches
    perturb_weights(m)
    _, rerun = m(x, m.initial_state(3), reset)
    fresh = m.refresh(state)
    for k in ("k", "v"):
        torch.testing.assert_close(fresh[k][1:], rerun[k][1:], atol=1e-5, rtol=0)
        assert not torch.allclose(state[k][1:], rerun[k][1:])
        assert torch.equal(fresh[k][0], state[k][0])
    assert torch.equal(fresh["x"], state["x"]) and torch.equal(fresh["step"], state["step"])


def test_transformer_refresh_has_no_host_sync():
    """PPO refreshes inside its captured minibatch step: ``refresh`` must trace to one graph with no data-dependent
    op."""
    m = memory.make("transformer", 5, width=16, layers=2, heads=2, window=8)
    _, state = m(torch.randn(5, 2, 5), m.initial_state(2), torch.zeros(5, 2, dtype=torch.bool))
    ops = []

    def record(graph_module, _):
        ops.extend(str(node.target) for node in graph_module.graph.nodes)
        return graph_module.forward

    with torch.no_grad():
        torch.compile(m.refresh, fullgraph=True, backend=record)(state)
    assert ops and not [op for op in ops if re.search(r"\b(nonzero|item|masked_select|unique|argwhere)\b", op)]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_replay_from_the_stored_start_state_reproduces_the_rollout(kind):
    """With unchanged weights, replaying stored env columns from the refreshed start state gives the rollout's
    values and log-probabilities: the state holds all a column needs to resume (summaries, the current segment)."""
    ppo = trainer(kind)
    ppo.rollout()
    batch, _ = ppo.rollout()  # starts from a state carried over from the first rollout
    start = batch["start_state"]
    if kind == "fct":
        assert (start["step"] > 0).any()
    else:
        assert start["valid"].any() and (start["position"] > 0).any()
    idx = torch.tensor([3, 1])
    agent = ppo.agent.eval()  # acting segments at fixed lengths; the replay must too
    with torch.no_grad():
        logits, value, _ = agent(batch["obs"][:, idx], agent.memory.refresh(memory.index_state(start, idx)),
                                 batch["reset"][:, idx])
    torch.testing.assert_close(value, batch["values"][:, idx], atol=1e-5, rtol=0)
    torch.testing.assert_close(log_prob(logits, batch["actions"][:, idx]), batch["logprobs"][:, idx],
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_ppo_trains_and_refreshes_every_replay_and_the_live_state(kind):
    ppo = trainer(kind, update_epochs=2)
    calls = []
    refresh = ppo.agent.memory.refresh
    ppo.agent.memory.refresh = lambda state: calls.append(next(iter(state.values())).shape[0]) or refresh(state)
    before = [p.detach().clone() for p in ppo.agent.parameters()]
    for _ in range(ppo.num_iterations):
        metrics = ppo.iterate()
        assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert any(not torch.equal(a, b) for a, b in zip(before, ppo.agent.parameters()))
    # Per iteration: each minibatch's stored start state (2 columns), then the live state (4 envs).
    per_iteration = [2] * (ppo.cfg.update_epochs * ppo.cfg.num_minibatches) + [4]
    assert calls == per_iteration * ppo.num_iterations
    # The live state's caches were made with the latest weights, as the next rollout needs.
    with torch.no_grad():
        torch.testing.assert_close(refresh(ppo.state), ppo.state, atol=1e-5, rtol=0)
    assert ppo.agent.training  # acting switched to eval mode and back
