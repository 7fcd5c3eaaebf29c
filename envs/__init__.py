"""Environments registered under ``rlmem/``; ``envs.make_vector`` builds the batched form used for training."""

from __future__ import annotations

import gymnasium

# name -> (single-copy entry point, vector entry point)
TASKS = {
    "EndlessTMaze": ("envs.gridworld.tmaze:EndlessTMaze", "envs.gridworld.tmaze:EndlessTMazeVector"),
    "Ballet": ("envs.gridworld.ballet:Ballet", "envs.gridworld.ballet:BalletVector"),
    "RoomBallet": ("envs.gridworld.room_ballet:RoomBallet", "envs.gridworld.room_ballet:RoomBalletVector"),
    "ColorCubes": ("envs.gridworld.color_cubes:ColorCubes", "envs.gridworld.color_cubes:ColorCubesVector"),
    "DarkKeyToDoor": ("envs.gridworld.key_to_door:DarkKeyToDoor", "envs.gridworld.key_to_door:DarkKeyToDoorVector"),
    "habitat-objnav": ("envs.habitat.tasks:MultiObjectNav", "envs.habitat.vector:MultiObjectNavVector"),
    "habitat-placerecall": ("envs.habitat.tasks:PlaceRecall", "envs.habitat.vector:PlaceRecallVector"),
}

for _name, (_single, _vector) in TASKS.items():
    if f"rlmem/{_name}-v0" not in gymnasium.registry:
        gymnasium.register(f"rlmem/{_name}-v0", entry_point=_single, vector_entry_point=_vector)


# Procgen and Atari wrap their native vector engines (imported only when an env is built); no single-copy form.
from envs.atari import GAMES as _ATARI_GAMES  # noqa: E402
from envs.procgen import GAMES as _PROCGEN_GAMES  # noqa: E402

_FAMILIES = [(f"rlmem/procgen-{g}-v0", "envs.procgen:ProcgenVector", {"game": g}) for g in _PROCGEN_GAMES]
_FAMILIES += [(f"rlmem/atari-{g}-v0", "envs.atari:AtariVector", {"game": g}) for g in _ATARI_GAMES]
_FAMILIES += [("rlmem/Continual-v0", "envs.continual:ContinualVector", {})]
for _id, _vector, _kwargs in _FAMILIES:
    if _id not in gymnasium.registry:
        gymnasium.register(_id, vector_entry_point=_vector, kwargs=_kwargs)


def ids() -> list[str]:
    return sorted(i for i in gymnasium.registry if i.startswith("rlmem/"))


def make_vector(env_id: str, num_envs: int, device="cpu", **kwargs) -> gymnasium.vector.VectorEnv:
    """The vectorised form of a registered env; batched tasks run their copies on ``device``."""
    if env_id not in gymnasium.registry or not env_id.startswith("rlmem/"):
        raise ValueError(f"env.id: unknown environment {env_id!r}; accepted: {', '.join(ids())}")
    return gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point",
                              device=device, **kwargs)
