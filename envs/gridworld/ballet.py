"""Ballet, HCAM's 2D memory task (Lampinen et al., "Towards mental time travel", 2021).

An 11x11 room (walls included). The agent starts at the centre (5, 5); ``num_dancers`` dancers (1-8) stand on eight
fixed spots, shuffled per episode, each with its own dance (13 dances of 16 moves), shape (15) and colour (19).

- **Watch phase.** The dancers dance one at a time; the agent's actions are ignored and the instruction is "watch".
  Dancer k makes its 16 moves in steps ``k * P ... k * P + 15`` (step 0 being the reset frame), with
  ``P = 15 + dance_delay``: the reference starts its delay count on the frame a dance ends, so ``dance_delay - 1``
  still frames separate two dances. A delay of 0, which stalls the reference forever, plays like a delay of 1
  (dances back to back).
- **Choice phase.** From step ``num_dancers * P`` the instruction is the target dancer's dance name and the agent
  moves with the 8 compass actions (0 N, 1 NE, ..., 7 NW; a move into a wall does nothing). The action sent in reply
  to the last "watch" frame is the one the reference calls "ignored". Stepping onto a dancer ends the episode: +1
  for the target, 0 otherwise, ``info["success"]`` says which.
- **Time limit** ``max_steps`` agent steps (truncation). The reference counts its reset frame too, so its episodes
  hold ``max_steps - 1`` actions; ours hold ``max_steps``.
- **Levels** ``{2,4,8}_delay{16,48}`` set all three; delay 16 runs 320 steps, delay 48 runs 1024. Without a level
  the defaults are 2 dancers, delay 16, and ``max_steps`` by the same rule (320 for delay 16, else 1024).

Observations are a dict: ``"instruction"`` is a token id (``VOCAB[id]`` is "watch" or a dance name) and ``"image"``
is the egocentric view, 11x11 cells centred on the agent, with cells beyond the room shown as floor. With
``obs_mode="rgb"`` it is uint8 [99, 99, 3] at 9 pixels a cell (the reference gives floats in [0, 1]; our encoders
scale the bytes); with ``obs_mode="symbolic"`` it is the int64 [11, 11] grid of sprite ids (``ballet_assets``).
``render_rgb()`` draws the whole room for videos.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from envs.gridworld import ballet_assets as assets
from envs.gridworld.base import RESET_SLOT, BatchedEnv, SingleEnv
from envs.gridworld.rng import hash32

SIZE = 11  # room side, walls included
CENTRE = (5, 5)
HOMES = ((2, 2), (2, 5), (2, 8), (5, 2), (5, 8), (8, 2), (8, 5), (8, 8))
LEVELS = {f"{n}_delay{d}": (n, d, 320 if d == 16 else 1024) for d in (16, 48) for n in (2, 4, 8)}
OBS_MODES = ("rgb", "symbolic")
VOCAB = assets.VOCAB


def draw_keys(env: BatchedEnv, slot: int, k: int) -> Tensor:
    """k independent 32-bit keys per copy [N, k] from a single RNG slot (argsort them for a permutation)."""
    bits = env.rng.bits(env.counter, slot)
    j = torch.arange(1, k + 1, device=env.device)
    return hash32(bits[:, None] + j * 0x9E3779B9)


def sprite_pixels(table: Tensor, ids: Tensor) -> Tensor:
    """Sprite ids [N, H, W] -> uint8 pictures [N, 9H, 9W, 3] by one gather from ``table`` [S, 9, 9, 3]."""
    n, h, w = ids.shape
    c = assets.CELL
    # index_select on flat rows: tensor indexing with trailing dims is far slower on CPU
    cells = table.view(table.shape[0], -1).index_select(0, ids.reshape(-1)).view(n, h, w, c, c, 3)
    return cells.permute(0, 1, 3, 2, 4, 5).reshape(n, h * c, w * c, 3)


def image_space(obs_mode: str, shape_hw: tuple[int, int]) -> spaces.Box:
    if obs_mode == "rgb":
        h, w = shape_hw
        return spaces.Box(0, 255, (h * assets.CELL, w * assets.CELL, 3), np.uint8)
    return spaces.Box(0, assets.NUM_SPRITES - 1, shape_hw, np.int64)


def _crop_index() -> np.ndarray:
    """[SIZE*SIZE, SIZE*SIZE]: for each agent cell, the room cell behind each view cell (SIZE*SIZE = off the room)."""
    out = np.full((SIZE * SIZE, SIZE, SIZE), SIZE * SIZE, dtype=np.int64)
    d = np.arange(SIZE) - SIZE // 2
    for r in range(SIZE):
        for c in range(SIZE):
            rows, cols = r + d[:, None], c + d[None, :]
            inside = (rows >= 0) & (rows < SIZE) & (cols >= 0) & (cols < SIZE)
            out[r * SIZE + c][inside] = (rows * SIZE + cols)[inside]
    return out.reshape(SIZE * SIZE, SIZE * SIZE)


def _room() -> np.ndarray:
    """Sprite ids of the empty room, flat, plus one floor cell at the end that stands for 'off the room'."""
    room = np.full((SIZE, SIZE), assets.WALL, dtype=np.int64)
    room[1:-1, 1:-1] = assets.FLOOR
    return np.append(room.reshape(-1), assets.FLOOR)


def parse_level(level: str) -> tuple[int, int, int]:
    if level not in LEVELS:
        raise ValueError(f"level: unknown level {level!r}; accepted: {', '.join(LEVELS)}")
    return LEVELS[level]


class BalletVector(BatchedEnv):
    metadata = {**BatchedEnv.metadata, "render_modes": ["rgb_array"]}
    state_keys = ("home", "dance", "sprite", "target", "agent")

    def __init__(self, num_envs: int = 1, device="cpu", autoreset: bool = True, level: str | None = None,
                 num_dancers: int | None = None, dance_delay: int | None = None, max_steps: int | None = None,
                 obs_mode: str = "rgb"):
        if level is not None:
            if (num_dancers, dance_delay, max_steps) != (None, None, None):
                raise ValueError("level: give either level or num_dancers/dance_delay/max_steps, not both")
            num_dancers, dance_delay, max_steps = parse_level(level)
        num_dancers = 2 if num_dancers is None else num_dancers
        dance_delay = 16 if dance_delay is None else dance_delay
        if max_steps is None:
            max_steps = 320 if dance_delay == 16 else 1024  # the reference's rule for its levels
        if not isinstance(num_dancers, int) or not 1 <= num_dancers <= len(HOMES):
            raise ValueError(f"num_dancers: must be an integer in 1..{len(HOMES)}, got {num_dancers!r}")
        if not isinstance(dance_delay, int) or dance_delay < 0:
            raise ValueError(f"dance_delay: must be an integer >= 0, got {dance_delay!r}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps: must be an integer >= 1, got {max_steps!r}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode: unknown mode {obs_mode!r}; accepted: {', '.join(OBS_MODES)}")
        super().__init__(num_envs, device, autoreset)
        self.num_dancers, self.dance_delay, self.max_steps = num_dancers, dance_delay, max_steps
        self.obs_mode = obs_mode
        self.period = 15 + max(dance_delay, 1)
        self.watch_steps = num_dancers * self.period  # first step whose frame shows the target's dance name
        self.single_observation_space = spaces.Dict(
            {"image": image_space(obs_mode, (SIZE, SIZE)), "instruction": spaces.Discrete(len(VOCAB))})
        self.single_action_space = spaces.Discrete(len(assets.MOVES))
        self._finish_spaces()

        # Cells are flat indices row * SIZE + col; every table is 1-D so lookups stay cheap on CPU and GPU.
        dev = self.device
        as_t = lambda a: torch.as_tensor(np.asarray(a), device=dev)  # noqa: E731
        offsets = assets.dance_offsets(assets.DANCES)  # [13, 17, 2]
        self.dance_len = offsets.shape[1]
        self.offsets = as_t((offsets[..., 0] * SIZE + offsets[..., 1]).reshape(-1))  # dance * 17 + moves done
        self.move_r, self.move_c = as_t(assets.MOVES[:, 0]), as_t(assets.MOVES[:, 1])
        self.homes = as_t([r * SIZE + c for r, c in HOMES])
        self.sprites = as_t(assets.sprite_table())
        self.room = as_t(_room())
        self.crop = as_t(_crop_index())
        self.dancer_index = torch.arange(num_dancers, device=dev)
        n, k = num_envs, num_dancers
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.int64, device=dev)  # noqa: E731
        self.home, self.dance, self.sprite = zeros(n, k), zeros(n, k), zeros(n, k)  # per dancer, in dance order
        self.target = zeros(n)  # index of the target in dance order
        self.agent = zeros(n)

    def _reset_copies(self, mask):
        k, m = self.num_dancers, mask[:, None]
        # One slot feeds all four shuffles: hashing is most of a step's work at small batch sizes.
        keys = draw_keys(self, RESET_SLOT, len(HOMES) + len(assets.DANCES) + len(assets.SHAPES) + len(assets.COLOURS))
        homes, dances, shapes, colours = (torch.argsort(part, dim=1, stable=True)[:, :k] for part in keys.split(
            (len(HOMES), len(assets.DANCES), len(assets.SHAPES), len(assets.COLOURS)), dim=1))
        self.home.copy_(torch.where(m, self.homes[homes], self.home))
        self.dance.copy_(torch.where(m, dances, self.dance))
        self.sprite.copy_(torch.where(m, assets.dancer_sprite(shapes, colours), self.sprite))
        self.target.copy_(torch.where(mask, self.integers(RESET_SLOT + 1, k), self.target))
        self.agent.masked_fill_(mask, CENTRE[0] * SIZE + CENTRE[1])

    def dancer_cells(self, elapsed: Tensor) -> Tensor:
        """Cell of every dancer [N, k] in the frame ``elapsed`` steps after the reset."""
        done = (elapsed[:, None] + 1 - self.dancer_index * self.period).clamp(0, self.dance_len - 1)
        return self.home + self.offsets[self.dance * self.dance_len + done]

    def _transition(self, action):
        choosing = self.elapsed >= self.watch_steps
        row = self.agent // SIZE + self.move_r[action]
        col = self.agent % SIZE + self.move_c[action]
        inside = (row >= 1) & (row <= SIZE - 2) & (col >= 1) & (col <= SIZE - 2)
        self.agent.copy_(torch.where(choosing & inside, row * SIZE + col, self.agent))
        touched = self.dancer_cells(self.elapsed + 1) == self.agent[:, None]  # [N, k]
        success = touched.gather(1, self.target[:, None]).squeeze(1)
        return success.float(), touched.any(1), {"success": success}

    def _room_ids(self) -> Tensor:
        """Sprite ids of the whole room, flat [N, SIZE*SIZE + 1] (the last cell is the off-room floor)."""
        ids = self.room.expand(self.num_envs, -1).clone()
        ids.scatter_(1, self.agent[:, None], assets.AGENT)
        # Dancers are painted over the agent, as in the reference: a touched dancer shows at the view's centre.
        return ids.scatter_(1, self.dancer_cells(self.elapsed), self.sprite)

    def _observe(self):
        view = self._room_ids().gather(1, self.crop.index_select(0, self.agent)).view(-1, SIZE, SIZE)
        image = sprite_pixels(self.sprites, view) if self.obs_mode == "rgb" else view
        target_dance = self.dance.gather(1, self.target[:, None]).squeeze(1)
        instruction = torch.where(self.elapsed >= self.watch_steps, 1 + target_dance, torch.zeros_like(target_dance))
        return {"image": image, "instruction": instruction}

    def render_rgb(self) -> Tensor:
        """uint8 [N, 99, 99, 3]: the whole room of every copy (not egocentric), for videos."""
        return sprite_pixels(self.sprites, self._room_ids()[:, :-1].reshape(-1, SIZE, SIZE))


class Ballet(SingleEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}
    batched_cls = BalletVector
