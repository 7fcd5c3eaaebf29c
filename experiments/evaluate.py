"""Evaluate a trained run, optionally at other env settings, and print a table.

    python -m experiments.evaluate runs/lstm_tmaze_n3_l5/2026-11-26_08-00-00 n=1,3,5,10 --episodes 1000

Each ``KEY=V1,V2`` names an env constructor argument (``env.kwargs``) and the values to evaluate at; several keys
give every combination. Each episode is the first episode of its own env copy, so short episodes are not favoured.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import sys
from pathlib import Path

import torch
import yaml
from torch import Tensor

from agents import dreamer
from agents.allocation import STRATEGY, make_allocation
from agents.ppo import Agent, sample, to_tensor
from memory.allocator import Allocator
from experiments.config import ConfigError, resolve_device
from experiments.run import load_run

EVAL_COLUMNS = ("setting", "episodes", "return", "success", "length")


class PPOActing:
    """PPO's agent behind the acting interface evaluation uses (``DreamerActing`` is the dreamer's). A memory that
    reads an eviction strategy (AMA) gets the trained ``allocator``'s greedy choice for each copy's task."""

    def __init__(self, agent: Agent, allocator: Allocator | None = None):
        self.agent, self.allocator = agent, allocator

    def initial_state(self, n: int, device: torch.device) -> dict:
        return self.agent.memory.initial_state(n, device)

    def act(self, obs, state: dict, reset: Tensor, info: dict, greedy: bool) -> tuple[Tensor, dict]:
        """obs [N, ...], reset [N], the env's last info -> action [N], next state."""
        device = reset.device
        keys = self.agent.memory.context_keys
        context = {k: to_tensor(info[k], device).long().unsqueeze(0) for k in keys if k != STRATEGY}
        if STRATEGY in keys:  # the task is constant within an episode, so choosing per step = choosing per episode
            task = to_tensor(info["task"], device).long() if "task" in info else \
                torch.zeros(reset.shape[0], dtype=torch.long, device=device)
            context[STRATEGY] = self.allocator.choose(task, 0.0).unsqueeze(0)
        logits, _, state = self.agent(_unsqueeze(obs), state, reset.unsqueeze(0), context or None)
        return (logits[0].argmax(-1) if greedy else sample(logits[0])), state


class DreamerActing:
    """The dreamer's agent behind the acting interface; it reads no context from info."""

    def __init__(self, agent: dreamer.Agent):
        self.agent = agent

    def initial_state(self, n: int, device: torch.device) -> dict:
        return self.agent.initial_state(n)

    def act(self, obs, state: dict, reset: Tensor, info: dict, greedy: bool) -> tuple[Tensor, dict]:
        return self.agent.act(obs, state, reset, greedy)


def acting(agent: Agent | dreamer.Agent, allocator: Allocator | None = None) -> PPOActing | DreamerActing:
    return DreamerActing(agent) if isinstance(agent, dreamer.Agent) else PPOActing(agent, allocator)


@torch.no_grad()
def evaluate(agent: Agent | dreamer.Agent, env, device: torch.device, seed: int = 12345,
             greedy: bool = False, allocator: Allocator | None = None) -> dict:
    """Mean return, success and length over the first episode of each of ``env.num_envs`` copies."""
    n = env.num_envs
    actor = acting(agent, allocator)
    obs, info = env.reset(seed=seed)
    obs = to_tensor(obs, device)
    state = actor.initial_state(n, device)
    reset = torch.ones(n, dtype=torch.bool, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    totals = torch.zeros(3, n, device=device)  # return, success, length of each copy's first episode
    while not bool(finished.all()):
        action, state = actor.act(obs, state, reset, info, greedy)
        obs, _, terminated, truncated, info = env.step(action)
        obs = to_tensor(obs, device)
        reset = to_tensor(terminated, device) | to_tensor(truncated, device)
        first = reset & ~finished
        success = to_tensor(info.get("success", torch.zeros(n)), device).float()
        ep = info["episode"]
        record = torch.stack([to_tensor(ep["r"], device).float(), success, to_tensor(ep["l"], device).float()])
        totals = torch.where(first, record, totals)
        finished |= reset
    mean = totals.mean(dim=1).tolist()
    return {"episodes": n, "return": mean[0], "success": mean[1], "length": mean[2]}


def _unsqueeze(obs):
    return {k: v.unsqueeze(0) for k, v in obs.items()} if isinstance(obs, dict) else obs.unsqueeze(0)


def settings_grid(sweeps: dict[str, list]) -> list[dict]:
    keys = list(sweeps)
    return [dict(zip(keys, values)) for values in itertools.product(*(sweeps[k] for k in keys))] or [{}]


def evaluate_settings(agent: Agent | dreamer.Agent, cfg, device, sweeps: dict[str, list], episodes: int, greedy: bool,
                      seed: int = 12345, allocator: Allocator | None = None) -> list[dict]:
    from experiments.build import make_env

    rows = []
    agent.eval()
    for setting in settings_grid(sweeps):
        env = make_env(cfg, episodes, device, **setting)
        label = " ".join(f"{k}={v}" for k, v in setting.items()) or "as trained"
        rows.append({"setting": label, **evaluate(agent, env, device, seed, greedy, allocator)})
    agent.train()
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| setting | episodes | return | success | length |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['setting']} | {r['episodes']} | {r['return']:.3f} | {r['success']:.3f} | {r['length']:.1f} |"
              for r in rows]
    return "\n".join(lines)


def write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, EVAL_COLUMNS)
        writer.writeheader()
        writer.writerows({k: r[k] for k in EVAL_COLUMNS} for r in rows)


def parse_sweeps(items: list[str]) -> dict[str, list]:
    sweeps = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ConfigError(f"setting {item!r}: expected KEY=V1,V2,... (an env constructor argument)")
        sweeps[key.removeprefix("env.kwargs.")] = [yaml.safe_load(v) for v in values.split(",")]
    return sweeps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run folder (runs/<name>/<time>)")
    parser.add_argument("settings", nargs="*", help="KEY=V1,V2 env settings to evaluate at")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per setting (default: the run's eval)")
    parser.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the run's device)")
    args = parser.parse_args(argv)
    try:
        cfg, checkpoint = load_run(args.run)
        device = resolve_device(args.device or cfg.device)
        sweeps = parse_sweeps(args.settings)
        episodes = args.episodes or int(cfg.eval.episodes)
        if episodes < 1:
            raise ConfigError(f"--episodes must be a positive integer, got {episodes}")
        from experiments.build import make_agent, make_env

        env = make_env(cfg, 1, device)
        agent = make_agent(cfg, env).to(device)
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        agent.load_state_dict(state["agent"])
        allocator = None
        if "allocation" in state:  # AMA: the trained bandit picks each episode's eviction strategy
            allocation = make_allocation(agent.memory, env, env.reset(seed=0)[1], 1, 1, device, 0)
            allocation.load_state_dict(state["allocation"])
            allocator = allocation.allocator
        rows = evaluate_settings(agent, cfg, device, sweeps, episodes, args.greedy or bool(cfg.eval.greedy),
                                 allocator=allocator)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    print(format_table(rows))


if __name__ == "__main__":
    main()
