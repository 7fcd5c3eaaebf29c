"""Throughput: env-only steps/s (the ceiling) and end-to-end training SPS, over a grid of configs.

    python -m experiments.bench env=tmaze_n5_l5 memory=lstm,gru agent.num_envs=1024,4096,16384 device=cuda

Arguments are config overrides (as for experiments.train); comma-separated values are swept. For each env setting the
env alone is stepped with random actions; for each full config PPO runs ``--warmup`` iterations, then ``--iterations``
timed ones (rollout and update timed apart). With ``agent=dreamer`` the replay is filled first, then each iteration's
collect and updates are timed apart: env steps/s and gradient steps/s. Prints a markdown table; ``--out`` also
writes it to a file.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from agents.ppo import capture_cuda_graph
from experiments.build import dreamer_config, make_env, make_trainer, ppo_config
from experiments.config import ConfigError, load, resolve_device, sweep_combinations


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def env_steps_per_second(env, device: torch.device, steps: int, repeats: int = 3, graph: bool = False) -> float:
    """Median over ``repeats`` timed runs of ``steps`` steps with random actions, after a warm-up run.

    With ``graph`` the ``steps`` steps are captured once as a CUDA graph and each run is one replay: the rate of an
    env stepped inside a graph-captured loop (as PPO with ``agent.cuda_graph=true`` steps it).
    """
    env.reset(seed=0)
    n = env.num_envs
    actions = torch.randint(0, int(env.single_action_space.n), (steps, n), device=device)

    def run():
        for t in range(steps):
            env.step(actions[t])

    run()  # warm-up: kernels, allocator
    if graph:
        run = capture_cuda_graph(run).replay
    rates = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        rates.append(steps * n / (time.perf_counter() - t0))
    return sorted(rates)[len(rates) // 2]


def train_steps_per_second(trainer, warmup: int, iterations: int) -> dict[str, float]:
    device = trainer.device
    for _ in range(warmup):
        trainer.iterate()
    rollout_time = update_time = 0.0
    for _ in range(iterations):
        sync(device)
        t0 = time.perf_counter()
        trainer.rollout()
        sync(device)
        t1 = time.perf_counter()
        trainer.update()
        sync(device)
        rollout_time += t1 - t0
        update_time += time.perf_counter() - t1
    steps = iterations * trainer.cfg.steps_per_rollout
    return {"sps": steps / (rollout_time + update_time), "rollout_sps": steps / rollout_time,
            "update_share": update_time / (rollout_time + update_time)}


def env_only_table(configs, device, env_steps: int, graph: bool) -> list[str]:
    header = "| env | kwargs | envs | env-only steps/s |" + (" in a CUDA graph |" if graph else "")
    lines = [header, "|---|---|---:|---:|" + ("---:|" if graph else "")]
    for cfg in configs:
        n = ppo_config(cfg).num_envs
        kwargs = ", ".join(f"{k}={v}" for k, v in cfg.env.kwargs.items())
        eager = env_steps_per_second(make_env(cfg, n, device), device, env_steps)
        row = f"| {cfg.env.name} | {kwargs} | {n} | {eager:,.0f} |"
        if graph:
            row += f" {env_steps_per_second(make_env(cfg, n, device), device, env_steps, graph=True):,.0f} |"
        lines.append(row)
        print(row, flush=True)
    return lines


def swept_settings(combinations: list[list[str]]) -> list[str]:
    """Per combination, its values of the swept keys that the tables have no column for (e.g. ``agent.bf16=true``)."""
    shown = ("env", "memory", "agent.num_envs")
    values: dict[str, set] = {}
    for combination in combinations:
        for item in combination:
            key, _, value = item.partition("=")
            values.setdefault(key, set()).add(value)
    swept = {k for k, v in values.items() if len(v) > 1 and k not in shown}
    return [" ".join(o for o in c if o.partition("=")[0] in swept) or "-" for c in combinations]


def training_table(configs, settings: list[str], device, args) -> list[str]:
    lines = ["| env | memory | envs | setting | env-only steps/s | PPO SPS | rollout SPS | update share | "
             "env-only / PPO |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    env_only: dict[tuple, float] = {}
    for cfg, setting in zip(configs, settings):
        n = ppo_config(cfg).num_envs
        key = (cfg.env.name, n)
        if key not in env_only:
            env_only[key] = env_steps_per_second(make_env(cfg, n, device), device, args.env_steps)
        torch.manual_seed(0)
        result = train_steps_per_second(make_trainer(cfg, device), args.warmup, args.iterations)
        lines.append(f"| {cfg.env.name} | {cfg.memory.name} | {n} | {setting} | {env_only[key]:,.0f} | "
                     f"{result['sps']:,.0f} | "
                     f"{result['rollout_sps']:,.0f} | {result['update_share']:.2f} | "
                     f"{env_only[key] / result['sps']:.1f}x |")
        print(lines[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return lines


def dreamer_rates(trainer, warmup: int, iterations: int) -> dict[str, float]:
    """Collect until the replay holds data, run ``warmup`` iterations, then time ``iterations`` collects and their
    updates apart: env steps/s of collecting, gradient steps/s of training, and env steps/s end to end."""
    device = trainer.device
    while not trainer.replay.stored_steps:
        trainer.collect()
    for _ in range(warmup):
        trainer.iterate()
    collect_time = train_time = 0.0
    updates = 0
    for _ in range(iterations):
        sync(device)
        t0 = time.perf_counter()
        trainer.collect()
        sync(device)
        t1 = time.perf_counter()
        updates += trainer.train()[1]
        sync(device)
        collect_time += t1 - t0
        train_time += time.perf_counter() - t1
    steps = iterations * trainer.cfg.steps_per_rollout
    return {"collect_sps": steps / collect_time, "updates_per_s": updates / train_time if updates else 0.0,
            "sps": steps / (collect_time + train_time), "updates": updates}


def dreamer_table(configs, device, args) -> list[str]:
    lines = ["| env | memory | size | envs | train ratio | env-only steps/s | collect steps/s | updates/s | "
             "end-to-end env steps/s | updates timed |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cfg in configs:
        config = dreamer_config(cfg)
        env_only = env_steps_per_second(make_env(cfg, config.num_envs, device), device, args.env_steps)
        torch.manual_seed(0)
        result = dreamer_rates(make_trainer(cfg, device), args.warmup, args.iterations)
        lines.append(f"| {cfg.env.name} | {cfg.memory.name} | {config.size} | {config.num_envs} | "
                     f"{config.train_ratio:g} | {env_only:,.0f} | {result['collect_sps']:,.0f} | "
                     f"{result['updates_per_s']:,.1f} | {result['sps']:,.0f} | {result['updates']} |")
        print(lines[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides; comma-separated values are swept")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--env-steps", type=int, default=200, help="steps per env-only measurement")
    parser.add_argument("--env-only", action="store_true", help="measure the envs alone, no training")
    parser.add_argument("--graph", action="store_true", help="with --env-only: also time the env in a CUDA graph")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    args = parser.parse_intermixed_args(argv)
    try:
        combinations = sweep_combinations(args.overrides)
        configs = [load(o) for o in combinations]
    except ConfigError as err:
        sys.exit(f"error: {err}")
    device = resolve_device(configs[0].device)
    if configs[0].threads:
        torch.set_num_threads(int(configs[0].threads))
    if args.graph and device.type != "cuda":
        sys.exit("error: --graph needs device=cuda")
    agents = {cfg.agent.name for cfg in configs}
    if len(agents) > 1:
        sys.exit(f"error: agent: bench one agent at a time, got {', '.join(sorted(agents))}")
    if "dreamer" in agents:
        if args.env_only:
            sys.exit("error: --env-only sizes the envs by PPO's config; the dreamer table has an env-only column")
        lines = dreamer_table(configs, device, args)
    else:
        lines = env_only_table(configs, device, args.env_steps, args.graph) if args.env_only else \
            training_table(configs, swept_settings(combinations), device, args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    table = f"device: {name}, torch {torch.__version__}\n\n" + "\n".join(lines)
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
