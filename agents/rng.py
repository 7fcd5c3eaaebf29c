"""The random generators a learner checkpoints, so that a resumed run draws what the uninterrupted run would have."""

from __future__ import annotations

import torch


def rng_state(device: torch.device) -> dict:
    """torch's CPU generator state, and the generator of ``device`` where it is a GPU."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
