"""Data-parallel scaling: global PPO SPS of one config on W processes under torchrun.

    torchrun --nproc_per_node=2 -m experiments.benchmarks.scaling experiment=procgen agent.num_envs=512

Arguments are config overrides as for experiments.train; ``agent.num_envs`` is global, so give W times the per-GPU
count. Every rank runs ``--warmup`` iterations, then ``--iterations`` timed ones between barriers; rank 0 prints one
markdown row: env, memory, cuda_graph, processes, global envs, global SPS, seconds per iteration.
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


def same_parameters(agent: torch.nn.Module, device: torch.device) -> bool:
    """Whether every rank holds the same weights (gradient averaging worked), compared through their sums."""
    flat = torch.cat([p.detach().double().flatten() for p in agent.parameters()])
    sums = torch.stack([flat.sum(), (flat * torch.arange(len(flat), device=flat.device)).sum()])
    sums = sums.to(device if dist.get_backend() == "nccl" else "cpu")
    gathered = [torch.empty_like(sums) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, sums)
    return all(torch.equal(g, gathered[0]) for g in gathered)


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
    if rank.world > 1 and not same_parameters(trainer.agent, device):
        sys.exit(f"error: rank {rank.rank}: parameters differ across ranks after the timed updates")
    steps = args.iterations * trainer.cfg.steps_per_rollout * rank.world
    if rank.main:
        print(f"| {cfg.env.name} | {cfg.memory.name} | {trainer.cfg.cuda_graph} | {rank.world} | "
              f"{trainer.cfg.num_envs * rank.world} | "
              f"{steps / seconds:,.0f} | {seconds / args.iterations:.3f} |", flush=True)
    trainer.close()
    distributed.teardown()


if __name__ == "__main__":
    main()
