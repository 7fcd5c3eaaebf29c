"""AMA (memory/allocator.py): the token store's eviction strategies and the epsilon-greedy strategy bandit."""

import pytest
import torch

from memory.allocator import STRATEGIES, Allocator, empty_store, write

# Hand-made visit sequence over places 0..2 into a store of 5 slots; the token of step s is the number s.
# Steps 0-4 fill it (step: place) 0:1 1:0 2:2 3:0 4:1; step 5 arrives at place 0, so visits are
# place 0: 3 (steps 1, 3, 5), place 1: 2 (steps 0, 4), place 2: 1 (step 2), and step 5 must evict:
# fifo the oldest (step 0), lifo the newest (step 4), least_visited place 2's token (step 2),
# most_visited place 0's oldest token (step 1).
PLACES = [1, 0, 2, 0, 1, 0]
EVICTED = {"fifo": 0, "lifo": 4, "least_visited": 2, "most_visited": 1}


def run(places, strategies, capacity=5, num_places=3):
    """Write one token per step (its step number) for each env [B] under its strategy; return the store."""
    batch = len(strategies)
    store = empty_store(batch, capacity, 1, num_places)
    strategy = torch.tensor([STRATEGIES.index(s) for s in strategies])
    for step, place in enumerate(places):
        store = write(store, torch.full((batch, 1), float(step)), torch.full((batch,), place), strategy)
    return store


def kept_steps(store, env):
    return sorted(store["tokens"][env, store["valid"][env], 0].long().tolist())


def test_each_strategy_evicts_the_right_token():
    store = run(PLACES, list(EVICTED))  # one env per strategy, side by side in one batch
    assert store["visits"].tolist() == [[3, 2, 1]] * 4
    for env, (name, evicted) in enumerate(EVICTED.items()):
        assert kept_steps(store, env) == sorted(set(range(6)) - {evicted}), name
        # Stamps and places stay attached to their tokens.
        valid = store["valid"][env]
        assert torch.equal(store["stamps"][env, valid], store["tokens"][env, valid, 0].long())
        assert torch.equal(store["places"][env, valid], torch.tensor(PLACES)[store["stamps"][env, valid]])


def test_a_stay_is_one_visit_and_ties_go_to_the_oldest():
    # Steps 0-2 at place 0 (one visit), 3-4 at place 1 (one visit): both places tie at one visit, so both
    # visit-based strategies evict the oldest token of the tie (step 0) when step 5 arrives at place 2.
    store = run([0, 0, 0, 1, 1, 2], ["least_visited", "most_visited"])
    assert store["visits"][0].tolist() == [1, 1, 1]
    assert kept_steps(store, 0) == kept_steps(store, 1) == [1, 2, 3, 4, 5]


def test_successive_evictions():
    # Capacity 2, places 0 0 1 1 0: fifo keeps the last two steps, lifo the first step plus the latest.
    store = run([0, 0, 1, 1, 0], ["fifo", "lifo"], capacity=2, num_places=2)
    assert kept_steps(store, 0) == [3, 4]
    assert kept_steps(store, 1) == [0, 4]
    assert store["step"].tolist() == [5, 5]


def test_bandit_converges_to_the_best_arm():
    # Mean reward of each (task, strategy); the best arm differs per task. Rewards carry N(0, 0.1) noise.
    table = torch.tensor([[1.0, 0.0, 0.2, 0.1], [0.0, 0.3, 1.0, 0.0], [0.1, 0.2, 0.0, 1.0]])
    bandit = Allocator(num_tasks=3, anneal_episodes=2000, lr=1e-2, seed=0)
    g = torch.Generator().manual_seed(0)
    picks_best = []
    for _ in range(150):  # 150 rounds of 32 episodes
        tasks = torch.randint(3, (32,), generator=g)
        arms = bandit.select(tasks)
        rewards = table[tasks, arms] + 0.1 * torch.randn(32, generator=g)
        bandit.update(tasks, arms, rewards)
        picks_best.append((arms == table[tasks].argmax(1)).float().mean())
    assert bandit.greedy() == ["fifo", "least_visited", "most_visited"]
    q = bandit.q(torch.arange(3)).detach()
    # Tolerance: the best arm's Q within 0.1 of its mean reward.
    assert torch.allclose(q.max(1).values, table.max(1).values, atol=0.1)
    assert bandit.epsilon == pytest.approx(0.2)
    # Once annealed, epsilon = 0.2 explores uniformly: the best arm is picked ~0.85 of the time.
    assert abs(torch.stack(picks_best[-40:]).mean().item() - 0.85) < 0.05


def test_epsilon_anneals_and_state_round_trips():
    bandit = Allocator(num_tasks=2, strategies=("fifo", "most_visited"), anneal_episodes=100, seed=1)
    assert bandit.epsilon == 1.0
    tasks = torch.tensor([0, 1] * 25)
    bandit.update(tasks, bandit.select(tasks), torch.ones(50))
    assert bandit.epsilon == pytest.approx(0.6)
    # Ids index STRATEGIES: this bandit only ever picks fifo (0) and most_visited (3).
    assert set(bandit.in_force.tolist()) <= {0, 3}
    metrics = bandit.metrics()
    assert metrics["ama/epsilon"] == pytest.approx(0.6)
    assert metrics["ama/fifo"] + metrics["ama/most_visited"] == pytest.approx(1.0)
    copy = Allocator(num_tasks=2, strategies=("fifo", "most_visited"), anneal_episodes=100, seed=7)
    copy.load_state_dict(bandit.state_dict())
    assert torch.equal(copy.select(tasks), bandit.select(tasks))
    assert copy.epsilon == bandit.epsilon


def test_choose_reads_epsilon_from_a_tensor_and_the_default_generator():
    # What a captured rollout calls: epsilon 0 is greedy, epsilon 1 uniform over the arms, draws from torch's RNG.
    bandit = Allocator(num_tasks=2, strategies=("lifo", "most_visited"), seed=0)
    tasks = torch.tensor([0, 1] * 200)
    greedy = bandit.arms[bandit.q(tasks).argmax(1)]
    assert torch.equal(bandit.choose(tasks, torch.tensor(0.0)), greedy)
    torch.manual_seed(5)
    explored = bandit.choose(tasks, torch.tensor(1.0))
    assert set(explored.tolist()) == {1, 3}
    torch.manual_seed(5)
    assert torch.equal(bandit.choose(tasks, torch.tensor(1.0)), explored)
    assert bandit.metrics(explored)["ama/lifo"] == pytest.approx((explored == 1).float().mean().item())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="strategies: .*fifo, lifo"):
        Allocator(2, strategies=("fifo", "random"))
    with pytest.raises(ValueError, match="epsilon_start/epsilon_end"):
        Allocator(2, epsilon_start=0.1, epsilon_end=0.5)
    with pytest.raises(ValueError, match="num_tasks"):
        Allocator(0)
    bandit = Allocator(2, strategies=("lifo",))
    with pytest.raises(ValueError, match=r"task ids must lie in \[0, 2\)"):
        bandit.select(torch.tensor([2]))
    with pytest.raises(ValueError, match="this allocator's arms"):
        bandit.update(torch.tensor([0]), torch.tensor([0]), torch.ones(1))
