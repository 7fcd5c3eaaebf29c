"""Task sequences (envs/continual.py) and their metrics (experiments/continual_metrics.py)."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
import yaml
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

import envs
from envs.continual import ContinualVector, sequence_segments
from experiments.continual_metrics import append_rows, continual_table, read_rows, task_metrics

CONF = Path(__file__).resolve().parents[1] / "experiments" / "conf" / "env"


def check_vector_env(env: VectorEnv, steps: int = 20, seed: int = 3) -> None:
    """The gymnasium vector-env contract that applies to our adapters: spaces, return types and shapes, same-step
    autoreset metadata, fresh (not reused) observation arrays, and seeded determinism."""
    n = env.num_envs
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.observation_space == batch_space(env.single_observation_space, n)
    assert env.action_space == batch_space(env.single_action_space, n)
    obs, info = env.reset(seed=seed)
    assert isinstance(info, dict) and env.observation_space.contains(np.asarray(obs))
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.single_action_space.n, (steps, n))
    trace = []
    for a in actions:
        previous = np.array(obs)
        obs, reward, terminated, truncated, info = env.step(a)
        assert env.observation_space.contains(np.asarray(obs))
        assert np.shape(reward) == (n,) and np.shape(terminated) == (n,) and np.shape(truncated) == (n,)
        assert np.asarray(terminated).dtype == bool and np.asarray(truncated).dtype == bool
        assert np.asarray(info["_episode"]).shape == (n,) and np.shape(info["episode"]["r"]) == (n,)
        assert not np.shares_memory(np.asarray(obs), previous)
        trace.append((np.array(obs), np.array(reward)))
    env.reset(seed=seed)
    for a, (obs, reward) in zip(actions, trace):
        again, r, *_ = env.step(a)
        np.testing.assert_array_equal(np.asarray(again), obs)
        np.testing.assert_array_equal(np.asarray(r), reward)


class Counter(VectorEnv):
    """A tiny deterministic task: reward = the action taken, episodes of ``length`` steps, obs = step in episode."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, num_actions: int = 3, length: int = 4, device=None):
        self.num_envs, self.length = num_envs, length
        self.single_observation_space = spaces.Box(0, 100, (1,), np.float32)
        self.single_action_space = spaces.Discrete(num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.t = np.zeros(num_envs, np.int64)
        self.ret = np.zeros(num_envs, np.float32)
        self.resets = 0

    def reset(self, *, seed=None, options=None):
        self.t[:], self.ret[:] = 0, 0.0
        self.resets += 1
        return self.t[:, None].astype(np.float32), {}

    def step(self, actions):
        reward = np.asarray(actions, dtype=np.float32)
        self.t += 1
        self.ret += reward
        done = self.t >= self.length
        info = {"episode": {"r": self.ret.copy(), "l": self.t.copy()}, "_episode": done.copy()}
        self.t[done], self.ret[done] = 0, 0.0
        return self.t[:, None].astype(np.float32), reward, done, np.zeros(self.num_envs, bool), info


@pytest.fixture
def counter_id():
    env_id = "rlmem/TestCounter-v0"
    gymnasium.register(env_id, vector_entry_point=Counter)
    yield env_id
    del gymnasium.registry[env_id]


def test_switches_at_the_step_budget_and_reports_the_task(counter_id):
    tasks = [{"id": counter_id, "kwargs": {"length": 3}}, {"id": counter_id, "kwargs": {"num_actions": 5}}]
    env = ContinualVector(4, tasks, steps_per_task=20, cycles=2)  # 5 vector steps per segment
    assert env.single_action_space == spaces.Discrete(5) and env.total_steps == 80
    _, info = env.reset(seed=0)
    assert info["task"].dtype == np.int64 and (info["task"] == 0).all()
    seen = []
    for k in range(1, 21):
        obs, reward, terminated, truncated, info = env.step(np.full(4, 4))
        seen.append(int(info["task"][0]))
        assert info["task"].shape == (4,) and (info["task"] == seen[-1]).all()
        if k in (5, 10, 15):  # a switch: every copy starts the next task, cut episodes are not counted
            assert (obs == 0).all() and (truncated == ~terminated).all()
            assert not (np.asarray(info["_episode"]) & ~terminated).any()
        if seen[-1] == 1 and k not in (5, 10, 15):  # task 1 has action 4; task 0 gets it replaced by 0
            assert (reward == 4).all()
    assert seen == [0] * 4 + [1] * 5 + [0] * 5 + [1] * 5 + [1]  # stays on the last task after the schedule
    assert env.envs[1].resets == 2  # the switches at steps 5 and 15 started task 1


def test_task_zero_rewards_padded_actions_as_noop(counter_id):
    env = ContinualVector(2, [{"id": counter_id}, {"id": counter_id, "kwargs": {"num_actions": 5}}], 10)
    env.reset(seed=0)
    _, reward, *_ = env.step(np.array([4, 2]))
    np.testing.assert_array_equal(reward, [0.0, 2.0])


def test_reversed_order_and_cycles():
    assert sequence_segments(3, 10, 4, cycles=2, reverse=True) == [
        (2, 0, 8), (1, 8, 16), (0, 16, 24), (2, 24, 32), (1, 32, 40), (0, 40, 48)]


def test_episode_returns_equal_the_summed_rewards(counter_id):
    env = ContinualVector(3, [{"id": counter_id, "kwargs": {"length": 3}}], steps_per_task=3000)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    total, ends = np.zeros(3), 0
    for _ in range(30):
        _, reward, terminated, truncated, info = env.step(rng.integers(0, 3, 3))
        total += reward
        done = np.asarray(info["_episode"])
        np.testing.assert_allclose(info["episode"]["r"][done], total[done])
        total[terminated | truncated], ends = 0.0, ends + done.sum()
    assert ends == 30


def test_the_sequence_passes_the_vector_env_checks(counter_id):
    tasks = [{"id": counter_id}, {"id": counter_id, "kwargs": {"length": 2}}]
    check_vector_env(ContinualVector(3, tasks, steps_per_task=12))


def test_bad_sequences_raise_clear_errors(counter_id):
    with pytest.raises(ValueError, match="tasks must be a non-empty list"):
        ContinualVector(2, [], 10)
    with pytest.raises(ValueError, match=r"tasks\[0\]: unknown key 'gmae'; accepted: id, kwargs"):
        ContinualVector(2, [{"id": counter_id, "gmae": 1}], 10)
    with pytest.raises(ValueError, match="steps_per_task must be an integer >= num_envs"):
        ContinualVector(4, [{"id": counter_id}], 3)
    with pytest.raises(ValueError, match=r"tasks\[1\] .*observation space"):
        ContinualVector(2, [{"id": counter_id}, {"id": "rlmem/EndlessTMaze-v0"}], 10)
    with pytest.raises(ValueError, match="env.id: unknown environment 'rlmem/Nope-v0'"):
        ContinualVector(2, [{"id": "rlmem/Nope-v0"}], 10)


def test_metrics_equal_hand_computed_values(tmp_path):
    # Two tasks, 100 steps each; random scores 0 and 10, reference scores 10 and 30.
    rows = [(0, 0, 1.0), (0, 1, 12.0), (100, 0, 8.0), (100, 1, 16.0), (200, 0, 3.0), (200, 1, 30.0)]
    segments = [(0, 0, 100), (1, 100, 200)]
    m = task_metrics(rows, segments, random=[0.0, 10.0], reference=[10.0, 30.0])
    assert m[0]["end_of_segment"] == pytest.approx(0.8) and m[0]["final"] == pytest.approx(0.3)
    assert m[0]["forgetting"] == pytest.approx(0.5) and math.isnan(m[0]["forward_transfer"])
    assert m[1]["end_of_segment"] == pytest.approx(1.0) and m[1]["forgetting"] == pytest.approx(0.0)
    assert m[1]["forward_transfer"] == pytest.approx((16 - 10) / 20 - (12 - 10) / 20)

    run = tmp_path / "run"
    run.mkdir()
    tasks = [{"id": "rlmem/atari-boxing-v0", "name": "A", "random": 0.0, "reference": 10.0},
             {"id": "rlmem/atari-pong-v0", "name": "B", "random": 10.0, "reference": 30.0}]
    config = {"env": {"id": "rlmem/Continual-v0", "kwargs": {"tasks": tasks, "steps_per_task": 100}},
              "agent": {"num_envs": 4}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    append_rows(run / "continual_eval.csv", [{"step": s, "task": t, "score": x} for s, t, x in rows[:2]])
    append_rows(run / "continual_eval.csv", [{"step": s, "task": t, "score": x} for s, t, x in rows[2:]])
    assert read_rows(run / "continual_eval.csv") == sorted(rows)
    table = continual_table(run).splitlines()
    assert table[2] == "| A | 0.800 | 0.300 | 0.500 | – |"
    assert table[3] == "| B | 1.000 | 1.000 | 0.000 | 0.200 |"
    assert table[4] == "| **average** | 0.900 | 0.650 | 0.250 | 0.200 |"


def test_named_sequences_are_well_formed():
    for name, count in (("continual_atari_wmar", 4), ("continual_coinrun", 6)):
        cfg = yaml.safe_load((CONF / f"{name}.yaml").read_text())
        assert cfg["id"] == "rlmem/Continual-v0" and len(cfg["kwargs"]["tasks"]) == count
        assert all(t["id"] in envs.ids() and t["reference"] > t["random"] for t in cfg["kwargs"]["tasks"])
    wmar = yaml.safe_load((CONF / "continual_atari_wmar.yaml").read_text())["kwargs"]
    assert wmar["task_kwargs"] == {"full_action_space": True, "grayscale": False, "size": 64,
                                   "repeat_action_probability": 0.0}


def test_ppo_trains_on_a_task_sequence():
    from agents.ppo import PPO, Agent, PPOConfig

    tasks = [{"id": "rlmem/EndlessTMaze-v0", "kwargs": {"n": 1, "l_max": 3}},
             {"id": "rlmem/EndlessTMaze-v0", "kwargs": {"n": 2, "l_max": 3}}]
    env = envs.make_vector("rlmem/Continual-v0", 8, tasks=tasks, steps_per_task=8 * 16)
    cfg = PPOConfig(num_envs=8, rollout_len=16, total_steps=8 * 16 * 3, num_minibatches=2)
    ppo = PPO(env, Agent(env.single_observation_space, 3, "gru"), cfg, torch.device("cpu"))
    for _ in range(3):
        out = ppo.iterate()
        assert math.isfinite(out["policy_loss"])
    assert env.active == 1


def test_seek_continues_the_sequence_in_fresh_episodes():
    tasks = [{"id": "rlmem/EndlessTMaze-v0", "kwargs": {"n": 1, "l_max": 3}},
             {"id": "rlmem/EndlessTMaze-v0", "kwargs": {"n": 2, "l_max": 3}}]
    env = envs.make_vector("rlmem/Continual-v0", 4, tasks=tasks, steps_per_task=4 * 10)
    env.reset(seed=3)
    obs, info = env.seek(12)  # 2 calls into the second task
    assert env.active == 1 and list(info["task"]) == [1] * 4
    for _ in range(8):
        *_, info = env.step(np.zeros(4, dtype=np.int64))
    assert env.step_count == 20 and env.active == 1  # the sequence's last segment goes on to its end
    with pytest.raises(ValueError, match="step_count"):
        env.seek(-1)


def test_trainers_checkpoint_the_sequence_position():
    from agents.ppo import PPO, Agent, PPOConfig

    tasks = [{"id": "rlmem/EndlessTMaze-v0", "kwargs": {"n": 1, "l_max": 3}},
             {"id": "rlmem/EndlessTMaze-v0", "kwargs": {"n": 2, "l_max": 3}}]

    def trainer():
        env = envs.make_vector("rlmem/Continual-v0", 8, tasks=tasks, steps_per_task=8 * 16)
        cfg = PPOConfig(num_envs=8, rollout_len=16, total_steps=8 * 16 * 2, num_minibatches=2)
        return PPO(env, Agent(env.single_observation_space, 3, "gru"), cfg, torch.device("cpu"))

    first = trainer()
    first.iterate()  # 16 step() calls: the first task's segment is over
    state = first.state_dict()
    assert state["sequence_step"] == 16
    second = trainer()
    assert second.env.active == 0
    second.load_state_dict(state)
    assert second.env.active == 1 and second.env.step_count == 16 and second.next_reset.all()
    assert math.isfinite(second.iterate()["policy_loss"])


def test_continual_experiment_names_its_replay_arm_at_equal_capacity():
    from experiments.config import load

    fifo, wmar = (load(["experiment=continual", "device=cpu", "agent.cuda_graph=false", f"agent.replay={r}"])
                  for r in ("fifo", "wmar"))
    assert (fifo.name, wmar.name) == ("dreamer_fifo_continual_atari_wmar", "dreamer_wmar_continual_atari_wmar")
    assert fifo.agent.replay_capacity == wmar.agent.replay_capacity == fifo.env.kwargs.steps_per_task
    assert fifo.agent.total_steps == 4 * fifo.env.kwargs.steps_per_task  # each task once
