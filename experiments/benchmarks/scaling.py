"""Data-parallel scaling: global PPO SPS of one config on W processes under torchrun.

    torchrun --nproc_per_node=2 -m experiments.benchmarks.scaling experiment=procgen agent.num_envs=512

Arguments are config overrides as for experiments.train; ``agent.num_envs`` is global, so give W times the per-GPU
count. Every rank runs ``--warmup`` iterations, then ``--iterations`` timed ones between barriers; rank 0 prints one
markdown row: processes, global envs, global SPS, seconds per iteration.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.distributed as dist

from agents.ppo import seed_everything
from experiments import distributed
from experiments.build import make_trainer
from experiments.config import ConfigError, load, resolve_device


def barrier(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if dist.is_initialized():
        dist.barrier()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks.scaling")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = load(args.overrides)
        rank, device = distributed.setup(cfg, resolve_device(cfg.device))
        seed_everything(int(cfg.seed) + rank.rank)
        trainer = make_trainer(cfg, device, rank.rank, rank.world)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    for _ in range(args.warmup):
        trainer.iterate()
    barrier(device)
    t0 = time.perf_counter()
    for _ in range(args.iterations):
        trainer.iterate()
    barrier(device)
    seconds = time.perf_counter() - t0
    steps = args.iterations * trainer.cfg.steps_per_rollout * rank.world
    if rank.main:
        print(f"| {cfg.env.name} | {cfg.memory.name} | {rank.world} | {trainer.cfg.num_envs * rank.world} | "
              f"{steps / seconds:,.0f} | {seconds / args.iterations:.3f} |", flush=True)
    distributed.teardown()


if __name__ == "__main__":
    main()
