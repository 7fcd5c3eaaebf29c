"""One learner process per GPU (or per CPU process, gloo) under ``torchrun``.

``agent.num_envs`` and ``agent.total_steps`` are global: each of the W ranks steps ``num_envs / W`` envs of its own,
and DDP averages the gradients, so a run on W ranks updates like one process with the whole batch. Only rank 0
writes the run folder (logs, checkpoints, evaluation). Configuration errors are raised on every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from experiments.config import ConfigError


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(cfg: DictConfig, device: torch.device) -> tuple[Rank, torch.device]:
    """Join the process group when launched by torchrun; the device this rank trains on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Rank(), device
    rank = Rank(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        if rank.local >= torch.cuda.device_count():
            raise ConfigError(f"torchrun: {os.environ.get('LOCAL_WORLD_SIZE', world)} processes per node but only "
                              f"{torch.cuda.device_count()} GPU(s); use --nproc_per_node <= the GPU count")
        device = torch.device("cuda", rank.local)
        torch.cuda.set_device(device)
    if cfg.agent.num_envs % world:
        raise ConfigError(f"agent.num_envs ({cfg.agent.num_envs}) must be divisible by the number of processes "
                          f"({world}): each rank steps an equal share")
    if device.type == "cuda" and cfg.agent.get("cuda_graph"):
        # A CUDA graph may hold NCCL all-reduces only with NCCL's async error handling off (PyTorch's CUDA graph notes).
        os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "0"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _check_same_config(cfg)
    return rank, device


def _check_same_config(cfg: DictConfig) -> None:
    mine = OmegaConf.to_yaml(cfg, resolve=True)
    configs = [None] * dist.get_world_size()
    dist.all_gather_object(configs, mine)
    if any(c != mine for c in configs):
        bad = next(i for i, c in enumerate(configs) if c != configs[0])
        raise ConfigError(f"torchrun: rank {bad} was started with a different config than rank 0; "
                          f"give every rank the same arguments")


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (e.g. a stop request), so all ranks stop together."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
