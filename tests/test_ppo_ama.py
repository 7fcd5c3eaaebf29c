"""AMA inside PPO (agents/allocation.py): sat + ama on a tiny Room Ballet. Strategies change only at episode starts,
the bandit learns from exactly the episodes that ended, the metrics carry the strategy shares, a checkpoint restores
the allocator exactly, and memory.num_places comes from the env (or must match it)."""

import copy
import io

import pytest
import torch

import envs
from agents.ppo import PPO, Agent, PPOConfig, seed_everything
from experiments.build import env_num_places, make_ppo_trainer
from experiments.config import ConfigError, load
from memory.allocator import STRATEGIES

N, T = 4, 12  # an episode is 2 visits x 4 steps + the query = 9 steps, so episodes straddle rollouts
ROOMS = {"visits": 2, "min_stay": 4, "max_stay": 4, "query": "mixed"}
SAT = {"num_places": 5, "width": 16, "heads": 2, "capacity": 4, "eviction": "ama",
       "allocator": {"anneal_episodes": 40}}


def trainer(iterations=8):
    seed_everything(0)
    cfg = PPOConfig(num_envs=N, rollout_len=T, total_steps=N * T * iterations, num_minibatches=2, update_epochs=1,
                    anneal_lr=False)
    env = envs.make_vector("rlmem/RoomBallet-v0", N, **ROOMS)
    agent = Agent(env.single_observation_space, int(env.single_action_space.n), "sat", SAT)
    return PPO(env, agent, cfg, torch.device("cpu"), seed=3)


def test_room_ballet_gives_the_query_type_as_task():
    env = envs.make_vector("rlmem/RoomBallet-v0", 8, **ROOMS)
    _, info = env.reset(seed=0)
    assert env.num_tasks == 4 and torch.equal(info["task"], env.query_kind)
    for _ in range(9):  # the first episodes end and the next ones' tasks are reported at once
        obs, _, _, _, info = env.step(torch.zeros(8, dtype=torch.long))
        assert torch.equal(info["task"], env.query_kind)


def test_strategies_change_only_at_episode_starts():
    ppo = trainer()
    previous, changes = None, 0
    for _ in range(6):
        ppo.iterate()
        strategy, reset = ppo.buf["context"]["strategy"], ppo.buf["reset"]  # [T, N]: what the memory read
        steps = strategy if previous is None else torch.cat([previous[None], strategy])
        starts = reset if previous is None else torch.cat([torch.zeros(1, N, dtype=torch.bool), reset])
        changed = steps[1:] != steps[:-1]
        assert not (changed & ~starts[1:]).any()
        changes += int(changed.sum())
        previous = strategy[-1].clone()  # the buffer is overwritten by the next rollout
        assert torch.equal(ppo.next_context["strategy"], ppo.allocation.strategy)
    assert changes > 0  # epsilon starts at 1: new episodes do get other strategies


def test_bandit_learns_from_the_episodes_that_ended():
    ppo = trainer()
    ppo.iterate()
    before = copy.deepcopy(ppo.allocation.allocator)
    metrics = ppo.iterate()
    alloc, buf = ppo.allocation, ppo.buf
    ended = alloc.ended
    # The records are this rollout's ended episodes: task = the query type asked at the episode's last step (not
    # the next episode's, which the env reports at the same step), strategy = the one the memory read, return.
    assert torch.equal(ended, buf["dones"]) and int(ended.sum()) == metrics["episodes"] > 0
    assert torch.equal(alloc.ended_task[ended], buf["obs"]["query_type"][ended] - 1)
    assert torch.equal(alloc.ended_strategy[ended], buf["context"]["strategy"][ended])
    assert torch.equal(alloc.ended_return[ended], buf["rewards"][ended])  # Room Ballet pays only at the query
    # Q took one MSE step on exactly these (task, strategy, return) records; the episode count moved epsilon on.
    before.update(alloc.ended_task[ended], alloc.ended_strategy[ended], alloc.ended_return[ended])
    for p, q in zip(before.q.parameters(), alloc.allocator.q.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    assert alloc.allocator.episodes == before.episodes
    assert float(alloc.epsilon) == pytest.approx(1.0 - 0.8 * before.episodes / 40)


def test_metrics_carry_the_strategy_in_force():
    ppo = trainer()
    ppo.iterate()
    epsilon = ppo.allocation.allocator.epsilon
    metrics = ppo.iterate()
    picked = ppo.allocation.ended_strategy[ppo.allocation.ended]
    for i, name in enumerate(STRATEGIES):
        assert metrics[f"ama/{name}"] == pytest.approx((picked == i).float().mean().item())
    assert sum(metrics[f"ama/{name}"] for name in STRATEGIES) == pytest.approx(1.0)
    assert metrics["ama/epsilon"] == pytest.approx(epsilon) and metrics["ama/q_loss"] >= 0
    greedy = [STRATEGIES.index(name) for name in ppo.allocation.allocator.greedy()]
    assert [metrics[f"ama/greedy_task{i}"] for i in range(4)] == greedy


def test_checkpoint_and_resume_restore_the_allocator_exactly():
    ppo = trainer()
    for _ in range(2):
        ppo.iterate()
    saved = io.BytesIO()
    torch.save(ppo.state_dict(), saved)
    later = [ppo.iterate() for _ in range(3)]
    saved.seek(0)
    resumed = trainer()
    resumed.load_state_dict(torch.load(saved, weights_only=False))
    assert [resumed.iterate() for _ in range(3)] == later
    a, b = ppo.allocation, resumed.allocation
    for p, q in zip(a.allocator.q.parameters(), b.allocator.q.parameters()):
        assert torch.equal(p, q)
    assert a.allocator.episodes == b.allocator.episodes
    for key in ("task", "strategy", "returns", "epsilon"):
        assert torch.equal(getattr(a, key), getattr(b, key)), key


def test_num_places_comes_from_the_env_or_must_match():
    env = envs.make_vector("rlmem/RoomBallet-v0", 1, grid=3)
    assert env_num_places(None, env) == 10 and env_num_places(10, env) == 10
    with pytest.raises(ConfigError, match=r"^memory.num_places is 5 but the env has 10 places; set memory"):
        env_num_places(5, env)
    tmaze = envs.make_vector("rlmem/EndlessTMaze-v0", 1)
    with pytest.raises(ConfigError, match="memory.num_places is null but the env has no num_places"):
        env_num_places(None, tmaze)


TINY = ["agent.num_envs=4", "agent.rollout_len=8", "agent.num_minibatches=2", "agent.update_epochs=1",
        "memory.width=16", "memory.heads=2", "device=cpu"]


def test_configs_build_sat_ama_on_room_ballet():
    cfg = load(["experiment=room_ballet", "memory=sat_ama", "env=room_ballet_mixed", "env.kwargs.grid=3", *TINY])
    ppo = make_ppo_trainer(cfg, torch.device("cpu"))
    assert ppo.agent.memory.num_places == 10  # null in sat_ama.yaml: grid**2 + 1 from the env
    assert ppo.allocation.allocator.anneal_episodes == 200000 and ppo.allocation.allocator.num_tasks == 4
    assert "ama/most_visited" in ppo.iterate()
    mismatch = load(["experiment=room_ballet", "memory=sat_fifo", "env=room_ballet_oldest", "memory.num_places=7",
                     *TINY])
    with pytest.raises(ConfigError, match="memory.num_places is 7 but the env has 5 places"):
        make_ppo_trainer(mismatch, torch.device("cpu"))


def test_a_sat_ama_run_trains_evaluates_and_reevaluates(tmp_path, capsys):
    from experiments import evaluate as evaluate_cli
    from experiments import train as train_cli

    cfg = load(["experiment=room_ballet", "memory=sat_ama", "env=room_ballet_mixed", *TINY, "agent.total_steps=64",
                "eval.episodes=4", f"run_root={tmp_path}", "threads=1"])
    run = train_cli.train(cfg)  # the evaluation after training asks the trained bandit for each episode's strategy
    assert "query=most_visited,4," in (run / "eval.csv").read_text()  # the env config's per-query evaluation
    evaluate_cli.main([str(run), "--episodes", "4"])  # and so does a later evaluation from the checkpoint
    assert "| as trained | 4 |" in capsys.readouterr().out
