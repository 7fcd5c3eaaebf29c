"""PPO on host envs (envs/threaded.py): grouped envs, background stepping, staging; same algorithm as one group."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import agents.ppo
import envs
from agents.ppo import PPO, Agent, PPOConfig
from envs.threaded import GroupedVector, HostStepper

pytest.importorskip("gym3")

from envs.procgen import ProcgenVector  # noqa: E402


def procgen_groups(game="starpilot", n=4, groups=2):
    return GroupedVector([ProcgenVector(n, game, "easy", num_threads=1) for _ in range(groups)])


def greedy(logits):
    return logits.argmax(-1)


def test_two_groups_give_each_column_the_same_steps_as_one_group(monkeypatch):
    """The same envs and seed, stepped as one batch or as two overlapped halves: every column's (obs, action,
    reward, done) sequence and the policy's values are the same (greedy policy: no sampling noise)."""
    monkeypatch.setattr(agents.ppo, "sample", greedy)
    torch.manual_seed(0)
    cfg = PPOConfig(num_envs=8, rollout_len=10, num_minibatches=2)
    one_env, two_env = procgen_groups("dodgeball"), procgen_groups("dodgeball")  # ends episodes within 30 steps
    agent = Agent(one_env.single_observation_space, 15, "lstm", {"hidden_size": 16}, encoder="mlp")
    one = PPO(one_env, agent, cfg, torch.device("cpu"), seed=3)
    two = PPO(two_env, copy.deepcopy(agent), PPOConfig(**{**vars(cfg), "env_groups": 2}), torch.device("cpu"),
              seed=3)
    assert isinstance(two.stepper, HostStepper) and len(two.stepper.columns) == 2
    ends = 0
    for _ in range(3):  # later rollouts start from a carried-over memory state
        a, _ = one.rollout()
        b, _ = two.rollout()
        assert a["obs"].dtype == torch.uint8 and b["obs"].dtype == torch.uint8  # bytes until the encoder
        for key in ("obs", "reset", "actions", "rewards", "dones"):
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
        for key in ("values", "logprobs", "advantages"):
            torch.testing.assert_close(a[key], b[key])
        for k in one.state:
            torch.testing.assert_close(one.state[k], two.state[k])
        ends += int(a["dones"].sum())
    assert ends > 0  # autoresets happened (and reset the memory) inside the compared steps
    # The two halves are distinct games (seeded apart), not copies of one another.
    assert not torch.equal(a["obs"][:, :4], a["obs"][:, 4:])


def test_episode_statistics_count_every_finished_episode():
    torch.manual_seed(0)
    cfg = PPOConfig(num_envs=16, rollout_len=64, num_minibatches=2, env_groups=2)
    env = procgen_groups("jumper", n=8)  # random play ends jumper levels often
    ppo = PPO(env, Agent(env.single_observation_space, 15, "gru", {"hidden_size": 8}, encoder="mlp"), cfg,
              torch.device("cpu"))
    batch, ep = ppo.rollout()
    assert batch["dones"].sum() >= 3 and ep["episodes"] == batch["dones"].sum()
    assert 0 <= ep["success_sum"] <= ep["episodes"] and ep["length_sum"] >= ep["episodes"]


def test_grouped_atari_equals_one_atari_env_of_all_copies():
    """Atari seeds copy i with seed + i, so two groups of 2 reset with one seed are the 4-copy env, step by step."""
    pytest.importorskip("ale_py")
    from envs.atari import AtariVector

    kwargs = {"num_threads": 1, "max_episode_frames": 120}  # games cut mid-run: final_obs in the infos
    whole = AtariVector(4, "breakout", **kwargs)
    grouped = GroupedVector([AtariVector(2, "breakout", **kwargs) for _ in range(2)])
    np.testing.assert_array_equal(whole.reset(seed=7)[0], grouped.reset(seed=7)[0])
    rng = np.random.default_rng(0)
    for _ in range(40):
        a = rng.integers(0, 4, 4)
        expected, got = whole.step(a), grouped.step(a)
        for x, y in zip(expected[:4], got[:4]):
            np.testing.assert_array_equal(x, y)
        assert expected[4].keys() == got[4].keys()
        np.testing.assert_array_equal(expected[4]["episode"]["r"], got[4]["episode"]["r"])


def test_step_errors_reach_the_caller():
    class Broken(ProcgenVector):
        def step(self, actions):
            raise RuntimeError("engine failed")

    env = Broken(2, "starpilot", num_threads=1)
    env.reset(seed=0)
    stepper = HostStepper([env], torch.device("cpu"))
    stepper.send(0, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(RuntimeError, match="engine failed"):
        stepper.receive(0)
    stepper.close()


def test_bad_env_groups_raise_one_line_errors():
    with pytest.raises(ValueError, match="agent.env_groups must be 1 or 2, got 3"):
        PPOConfig(num_envs=6, num_minibatches=2, env_groups=3)
    with pytest.raises(ValueError, match=r"agent.env_groups \(2\) must divide agent.num_envs \(5\)"):
        PPOConfig(num_envs=5, num_minibatches=1, env_groups=2)
    cfg = PPOConfig(num_envs=4, num_minibatches=2, env_groups=2)
    for env in (ProcgenVector(4, "starpilot", num_threads=1),  # not grouped
                GroupedVector([envs.make_vector("rlmem/EndlessTMaze-v0", 2) for _ in range(2)])):  # on-device
        with pytest.raises(ValueError, match="agent.env_groups=2 needs host envs"):
            PPO(env, Agent(env.single_observation_space, int(env.single_action_space.n), "gru"), cfg,
                torch.device("cpu"))
    with pytest.raises(ValueError, match=r"groups\[1\] differs from groups\[0\]"):
        GroupedVector([ProcgenVector(2, num_threads=1), ProcgenVector(3, num_threads=1)])


def test_launcher_builds_two_groups():
    from experiments.build import make_trainer
    from experiments.config import load

    cfg = load(["env=procgen_starpilot", "memory=gru", "agent.num_envs=4", "agent.num_minibatches=2",
                "agent.env_groups=2", "agent.rollout_len=4", "agent.encoder=mlp", "+env.kwargs.num_threads=1"])
    trainer = make_trainer(cfg, torch.device("cpu"))
    assert [g.num_envs for g in trainer.env.groups] == [2, 2] and len(trainer.stepper.columns) == 2
    assert np.isfinite(trainer.iterate()["policy_loss"])
