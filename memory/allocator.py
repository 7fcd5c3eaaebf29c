"""AMA, the adaptive memory allocator of "Spatially-Aware Transformer for Embodied Agents" (Cho, Yoon, Ahn, ICLR 2024).

Two parts:

- A bounded **token store** (``empty_store`` / ``write``): ``capacity`` slots of tokens, each with the place id it was
  seen in and the step it was written at, plus per-place visit counts. Every step writes its token; when the store
  is full, one stored token is evicted first, chosen by the env's strategy (``STRATEGIES``):
  ``fifo`` the oldest, ``lifo`` the newest, ``least_visited`` / ``most_visited`` a token of the stored place with the
  fewest / most visits (ties between places and within the place go to the oldest token). A visit starts when an
  env's place differs from its previous step's (or at the episode's first step); the current step's visit is counted
  before the victim is chosen. Because the incoming token is always kept, ``lifo`` keeps the first
  ``capacity - 1`` tokens of the episode plus the latest one.
- ``Allocator``: a task-conditioned epsilon-greedy bandit that picks a strategy per episode.

Which memories can use it: any memory that keeps its tokens in this store and reads the strategy in force per env
and step; in rlmem that is ``sat`` (``eviction=`` one of ``STRATEGIES``, or ``"ama"`` to take the strategy the
allocator chose from ``context["strategy"]``). HCAM and the transformer store fixed-order chunks / windows and
cannot.

The paper rewards the allocator with the negative downstream loss of the memory's user; here the reward is whatever
the caller passes, so an RL agent can pass episode returns instead (PPO does: ``agents/allocation.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memory.base import State

STRATEGIES = ("fifo", "lifo", "least_visited", "most_visited")
# The Allocator's options a memory config may set (``sat``'s ``allocator``); the agent supplies the rest.
OPTIONS = ("strategies", "embed_size", "hidden_size", "epsilon_start", "epsilon_end", "anneal_episodes", "lr")


def empty_store(batch_size: int, capacity: int, width: int, num_places: int, device=None,
                dtype: torch.dtype = torch.float32) -> State:
    """An empty store: tokens [B, N, D], places/stamps [B, N], valid [B, N], visits [B, P], last_place/step [B]."""
    zeros = lambda *shape: torch.zeros(*shape, dtype=torch.long, device=device)  # noqa: E731
    return {"tokens": torch.zeros(batch_size, capacity, width, dtype=dtype, device=device),
            "places": zeros(batch_size, capacity), "stamps": zeros(batch_size, capacity),
            "valid": torch.zeros(batch_size, capacity, dtype=torch.bool, device=device),
            "visits": zeros(batch_size, num_places),
            "last_place": torch.full((batch_size,), -1, dtype=torch.long, device=device),
            "step": zeros(batch_size)}


def count_visit(store: State, place: Tensor) -> State:
    """Add a visit to ``place [B]`` where the env has just arrived there."""
    arrived = place != store["last_place"]
    visits = store["visits"].scatter_add(1, place[:, None], arrived[:, None].long())
    return {**store, "visits": visits, "last_place": place}


def oldest_among(candidates: Tensor, stamps: Tensor) -> Tensor:
    """The slot [B] with the smallest stamp among ``candidates [B, N]`` (bool)."""
    never = stamps.max() + 1
    return torch.where(candidates, stamps, never).argmin(1)


def victim(store: State, strategy: Tensor) -> Tensor:
    """The slot [B] to evict from a full store under each env's strategy [B] (ids into ``STRATEGIES``)."""
    stamps = store["stamps"]
    score = store["visits"].gather(1, store["places"])  # visits of each token's place [B, N]
    everything = torch.ones_like(store["valid"])
    slots = torch.stack([oldest_among(everything, stamps), stamps.argmax(1),
                         oldest_among(score == score.min(1, keepdim=True).values, stamps),
                         oldest_among(score == score.max(1, keepdim=True).values, stamps)], 1)  # [B, S]
    return slots.gather(1, strategy[:, None]).squeeze(1)


def write(store: State, token: Tensor, place: Tensor, strategy: Tensor) -> State:
    """Write ``token [B, D]`` seen at ``place [B]``: into the first free slot, else over the strategy's victim."""
    store = count_visit(store, place)
    free = ~store["valid"]
    slot = torch.where(free.any(1), free.int().argmax(1), victim(store, strategy))
    at = torch.arange(free.shape[1], device=slot.device) == slot[:, None]  # [B, N]
    return {**store, "tokens": torch.where(at[..., None], token[:, None], store["tokens"]),
            "places": torch.where(at, place[:, None], store["places"]),
            "stamps": torch.where(at, store["step"][:, None], store["stamps"]),
            "valid": store["valid"] | at, "step": store["step"] + 1}


def strategy_ids(names: tuple[str, ...] | list[str]) -> list[int]:
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"strategies: must be distinct names from {', '.join(STRATEGIES)}, got {list(names)!r}")
    return [STRATEGIES.index(n) for n in names]


class Allocator:
    """Task-conditioned epsilon-greedy bandit over eviction strategies (one pull per episode).

    Q(task, .) = MLP(embedding(task)) over the arms ``strategies``. ``select`` explores with probability ``epsilon``,
    which falls linearly from ``epsilon_start`` to ``epsilon_end`` over the first ``anneal_episodes`` rewards seen;
    ``update`` takes one Adam step on the MSE between Q(task, arm) and the reward. Returned strategy ids index
    ``STRATEGIES`` (what ``sat`` reads from ``context["strategy"]``), not ``strategies``.
    """

    def __init__(self, num_tasks: int, strategies: tuple[str, ...] = STRATEGIES, embed_size: int = 16,
                 hidden_size: int = 64, epsilon_start: float = 1.0, epsilon_end: float = 0.2,
                 anneal_episodes: int = 1000, lr: float = 1e-2, seed: int = 0, device=None):
        for name, value in (("num_tasks", num_tasks), ("embed_size", embed_size), ("hidden_size", hidden_size),
                            ("anneal_episodes", anneal_episodes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= epsilon_end <= epsilon_start <= 1.0:
            raise ValueError(f"epsilon_start/epsilon_end must satisfy 0 <= end <= start <= 1, "
                             f"got {epsilon_start!r}/{epsilon_end!r}")
        self.arms = torch.tensor(strategy_ids(strategies), device=device)
        self.strategies = tuple(strategies)
        self.num_tasks = num_tasks
        self.epsilon_start, self.epsilon_end, self.anneal_episodes = epsilon_start, epsilon_end, anneal_episodes
        self.generator = torch.Generator(device or "cpu").manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # seed the Q network's initial weights, not the caller's RNG
            torch.manual_seed(seed)
            self.q = nn.Sequential(nn.Embedding(num_tasks, embed_size), nn.Linear(embed_size, hidden_size),
                                   nn.ReLU(), nn.Linear(hidden_size, len(strategies))).to(device)
        self.optimizer = torch.optim.Adam(self.q.parameters(), lr=lr)
        self.episodes = 0
        self.in_force = torch.zeros(0, dtype=torch.long, device=device)  # the last selection, ids into STRATEGIES

    @property
    def epsilon(self) -> float:
        progress = min(1.0, self.episodes / self.anneal_episodes)
        return self.epsilon_start + (self.epsilon_end - self.epsilon_start) * progress

    def check_tasks(self, task_ids: Tensor) -> None:
        if task_ids.numel() and (task_ids.min() < 0 or task_ids.max() >= self.num_tasks):
            raise ValueError(f"task ids must lie in [0, {self.num_tasks}) (num_tasks), got "
                             f"{task_ids.min().item()}..{task_ids.max().item()}")

    def arm_index(self, strategies: Tensor) -> Tensor:
        """Strategy ids (into ``STRATEGIES``) [N] -> arm indices (into ``self.strategies``) [N]."""
        match = strategies[:, None] == self.arms
        if not match.any(1).all():
            raise ValueError(f"strategies must be ids of this allocator's arms {self.arms.tolist()}, "
                             f"got {strategies.tolist()}")
        return match.int().argmax(1)

    @torch.no_grad()
    def select(self, task_ids: Tensor) -> Tensor:
        """task_ids [N] int -> strategy ids [N] (into ``STRATEGIES``), epsilon-greedy on Q."""
        self.check_tasks(task_ids)
        self.in_force = self.choose(task_ids, self.epsilon, self.generator)
        return self.in_force

    @torch.no_grad()
    def choose(self, task_ids: Tensor, epsilon: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
        """``select`` without the task check or the record of ``in_force``: nothing waits on the device, so a CUDA
        graph can capture it (with ``epsilon`` a tensor and ``generator=None``, the default generator)."""
        greedy = self.q(task_ids).argmax(1)
        n, device = task_ids.shape[0], task_ids.device
        explore = torch.rand(n, generator=generator, device=device) < epsilon
        random_arm = torch.randint(len(self.arms), (n,), generator=generator, device=device)
        return self.arms[torch.where(explore, random_arm, greedy)]

    def update(self, task_ids: Tensor, strategies: Tensor, rewards: Tensor) -> float:
        """One MSE step of Q(task, strategy) toward the rewards [N]; returns the loss."""
        self.check_tasks(task_ids)
        q = self.q(task_ids).gather(1, self.arm_index(strategies)[:, None]).squeeze(1)
        loss = nn.functional.mse_loss(q, rewards.to(q.dtype))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.episodes += task_ids.shape[0]
        return loss.item()

    @torch.no_grad()
    def greedy(self) -> list[str]:
        """The strategy each task would get without exploration."""
        tasks = torch.arange(self.num_tasks, device=self.arms.device)
        return [self.strategies[i] for i in self.q(tasks).argmax(1).tolist()]

    def metrics(self, strategies: Tensor | None = None) -> dict[str, float]:
        """For the run log: epsilon and the share of each strategy among ``strategies`` [N] (ids into
        ``STRATEGIES``; by default the last selection)."""
        picked = self.in_force if strategies is None else strategies
        shares = {f"ama/{name}": (picked == arm).float().mean().item() if picked.numel() else 0.0
                  for name, arm in zip(self.strategies, self.arms.tolist())}
        return {"ama/epsilon": self.epsilon, **shares}

    def state_dict(self) -> dict:
        return {"q": self.q.state_dict(), "optimizer": self.optimizer.state_dict(), "episodes": self.episodes,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.q.load_state_dict(state["q"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.episodes = state["episodes"]
        self.generator.set_state(state["generator"])
