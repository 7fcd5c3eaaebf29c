"""PPO with the rollout captured as a CUDA graph. Needs a GPU: skipped on CPU-only machines (CI); run on the GPU
machine with ``python -m pytest tests/test_ppo_cuda.py``."""

import math

import pytest
import torch

import envs
from agents.ppo import PPO, Agent, PPOConfig, seed_everything
from experiments.evaluate import evaluate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make(cuda_graph, n=1, num_envs=64, total=200_000):
    seed_everything(0)
    cfg = PPOConfig(num_envs=num_envs, rollout_len=32, total_steps=total, lr=3e-3, num_minibatches=2,
                    cuda_graph=cuda_graph)
    env = envs.make_vector("rlmem/EndlessTMaze-v0", num_envs, device="cuda", n=n, l_max=5)
    agent = Agent(env.single_observation_space, 3, "lstm", {"hidden_size": 64})
    return PPO(env, agent, cfg, torch.device("cuda"))


def test_graph_rollout_is_consistent_with_eager_recompute():
    trainer = make(True)
    for _ in range(4):
        trainer.iterate()
    assert trainer.graph is not None
    batch, _ = trainer.rollout()
    with torch.no_grad():
        logits, value, _ = trainer.agent(batch["obs"], dict(batch["start_state"]), batch["reset"])
    torch.testing.assert_close(value, batch["values"], atol=1e-4, rtol=1e-4)
    logp = torch.log_softmax(logits, -1).gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, batch["logprobs"], atol=1e-4, rtol=1e-4)
    # Env rules hold in the replayed steps: rewards are only the T-Maze's values.
    allowed = torch.tensor([-0.01, -0.02, 0.99, -1.01], device="cuda")
    assert torch.isclose(batch["rewards"].unsqueeze(-1), allowed).any(-1).all()


def test_graph_rollout_learns_like_eager():
    trainer = make(True, total=80_000, num_envs=32)
    for _ in range(trainer.num_iterations):
        trainer.iterate()
    result = evaluate(trainer.agent, envs.make_vector("rlmem/EndlessTMaze-v0", 256, device="cuda", n=1, l_max=5),
                      torch.device("cuda"), greedy=True)
    assert result["success"] >= 0.9, result



def test_host_env_update_is_captured_and_its_rollout_is_not():
    seed_everything(0)
    cfg = PPOConfig(num_envs=8, rollout_len=16, total_steps=10_000, num_minibatches=2, cuda_graph=True)
    env = envs.make_vector("rlmem/procgen-starpilot-v0", 8, distribution_mode="easy")
    trainer = PPO(env, Agent(env.single_observation_space, 15, "lstm", {"hidden_size": 32}), cfg,
                  torch.device("cuda"))
    for _ in range(4):
        metrics = trainer.iterate()
    assert trainer.update_graph is not None and trainer.graph is None
    assert all(map(math.isfinite, (metrics["policy_loss"], metrics["value_loss"])))
    assert trainer.buf["obs"].dtype == torch.uint8  # frames stay uint8 until the encoder
