"""AMA inside PPO: an ``Allocator`` (memory/allocator.py) picks the eviction strategy of every episode of every env
column, and learns from the episodes' returns.

A memory asks for it by reading ``context["strategy"]`` (``STRATEGY`` in its ``context_keys``, as ``sat`` with
``eviction=ama`` does); its ``allocator_options`` configure the bandit. An episode's task is the env's
``info["task"]`` at the episode's first step, one of ``env.num_tasks`` (Room Ballet: the query type), or 0 for an env
without tasks.

PPO calls ``start`` at the env reset, ``record`` after every env step of the rollout and ``learn`` once per iteration.
``record`` never waits on the device, so the rollout can stay a CUDA graph: when a column's episode ends, its (task,
strategy, return) lands in fixed [T, N] record tensors and the column's next strategy is drawn at once, epsilon-greedy
with epsilon read from a tensor and the default torch generator (checkpointed with PPO's). ``learn`` takes one MSE step
of Q on all episodes that ended in the rollout and moves epsilon on. A column's strategy changes only where an episode
ends, so it holds for the whole next episode.

The bandit's reward is the episode's return: the sum of the env rewards the agent trains on (the paper's reward is the
negative downstream loss of the memory's user, which for an RL agent is its return). Under torchrun every learner runs
its own bandit on its own envs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from memory.allocator import STRATEGIES, Allocator
from memory.base import Memory

STRATEGY = "strategy"  # the context key the allocator fills


def make_allocation(memory: Memory, env, info: dict, num_envs: int, rollout_len: int, device: torch.device,
                    seed: int) -> Allocation | None:
    """The allocation for ``memory`` on ``env`` (whose reset returned ``info``), or None if it reads no strategy."""
    if STRATEGY not in memory.context_keys:
        return None
    reads_task = "task" in info
    num_tasks = getattr(env, "num_tasks", None) if reads_task else 1
    if num_tasks is None:
        raise ValueError("the env gives info['task'] but has no num_tasks attribute, which AMA's allocator needs")
    options = getattr(memory, "allocator_options", {})
    return Allocation(Allocator(num_tasks, seed=seed, device=device, **options), reads_task, num_envs, rollout_len)


class Allocation:
    """The allocator and the per-column state it needs within a PPO rollout of T steps and N columns."""

    def __init__(self, allocator: Allocator, reads_task: bool, num_envs: int, rollout_len: int):
        self.allocator, self.reads_task = allocator, reads_task
        device = allocator.arms.device
        ids = lambda *shape: torch.zeros(*shape, dtype=torch.long, device=device)  # noqa: E731
        self.task, self.strategy = ids(num_envs), ids(num_envs)  # of each column's current episode
        self.returns = torch.zeros(num_envs, device=device)  # of each column's current episode so far
        # ended[t, n]: an episode of column n ended with the env step after rollout step t; its task, strategy, return
        self.ended = torch.zeros(rollout_len, num_envs, dtype=torch.bool, device=device)
        self.ended_task, self.ended_strategy = ids(rollout_len, num_envs), ids(rollout_len, num_envs)
        self.ended_return = torch.zeros(rollout_len, num_envs, device=device)
        self.epsilon = torch.tensor(allocator.epsilon, device=device)  # a tensor, so a captured rollout sees updates

    def info_keys(self, context_keys: tuple[str, ...]) -> tuple[str, ...]:
        """The env info keys a stepper must read for a memory reading ``context_keys``: the strategy comes from
        here, the task from the env."""
        keys = tuple(k for k in context_keys if k != STRATEGY)
        return keys + ("task",) if self.reads_task and "task" not in keys else keys

    def tasks(self, info: dict, like: Tensor) -> Tensor:
        """The task ids [n] in ``info`` (0 for an env without tasks), as int64 on ``like``'s device."""
        if not self.reads_task:
            return torch.zeros_like(like, dtype=torch.long)
        return torch.as_tensor(info["task"]).to(like.device).long()

    def start(self, info: dict) -> dict:
        """At the env reset every column starts an episode: ``info`` with the strategy of each [N] added."""
        task = self.tasks(info, self.task)
        self.allocator.check_tasks(task)
        self.task.copy_(task)
        self.strategy.copy_(self.allocator.choose(task, self.epsilon))
        self.returns.zero_()
        return {**info, STRATEGY: self.strategy.clone()}

    def record(self, t: int, cols: slice, step) -> dict[str, Tensor]:
        """After the env step that followed rollout step t of the columns ``cols`` (a ``Step``): file the episodes
        that ended and draw their columns' next strategies. Returns the step's context with the strategy in force
        for the next step added."""
        done = step.done
        returns = self.returns[cols] + step.reward
        self.ended[t, cols], self.ended_return[t, cols] = done, returns
        self.ended_task[t, cols], self.ended_strategy[t, cols] = self.task[cols], self.strategy[cols]
        self.returns[cols] = returns.masked_fill(done, 0.0)
        task = self.tasks(step.context, done)
        self.task[cols] = torch.where(done, task, self.task[cols])
        self.strategy[cols] = torch.where(done, self.allocator.choose(task, self.epsilon), self.strategy[cols])
        return {**step.context, STRATEGY: self.strategy[cols]}

    def learn(self) -> dict[str, float]:
        """One Q step on the episodes that ended in the last rollout. Metrics: epsilon in force during it, the share
        of its ended episodes under each strategy (``ama/<strategy>``), the Q loss, and each task's greedy
        strategy (``ama/greedy_task<i>``, an id into ``STRATEGIES``)."""
        strategies = self.ended_strategy[self.ended]
        # The same keys every iteration (metrics.csv keeps its first row's columns): NaN where nothing ended.
        out = {"ama/epsilon": self.allocator.epsilon, "ama/q_loss": math.nan,
               **{f"ama/{name}": math.nan for name in self.allocator.strategies}}
        if strategies.numel():
            out |= self.allocator.metrics(strategies)
            out["ama/q_loss"] = self.allocator.update(self.ended_task[self.ended], strategies,
                                                      self.ended_return[self.ended])
        self.epsilon.fill_(self.allocator.epsilon)
        out |= {f"ama/greedy_task{i}": STRATEGIES.index(name) for i, name in enumerate(self.allocator.greedy())}
        return out

    # --- checkpointing ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"allocator": self.allocator.state_dict(), "task": self.task.clone(),
                "strategy": self.strategy.clone(), "returns": self.returns.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the bandit (Q, its optimiser, the episode count behind epsilon)."""
        self.allocator.load_state_dict(state["allocator"])
        self.epsilon.fill_(self.allocator.epsilon)

    def load_episodes(self, state: dict) -> None:
        """Restore the columns' episodes in progress (their task, strategy and return so far), for envs that
        resume mid-episode."""
        for key in ("task", "strategy", "returns"):
            getattr(self, key).copy_(state[key])
