"""Room Ballet, a place-centric memory task after the one in "Spatially-Aware Transformer for Embodied Agents"
(Cho, Yoon, Ahn, ICLR 2024). The paper gives no exact specification; this design is ours.

- **Rooms.** A ``grid`` x ``grid`` block of rooms (2x2 or 3x3), each 5x5 cells inside a wall, with a doorway in the
  middle of every wall two rooms share. Room ``r = row * grid + col``. Each room holds one dancer at its centre with
  its own dance (one of the ten four-move loops in ``ballet_assets.SHORT_DANCES``), shape and colour.
- **Observation phase** (actions ignored). A seeded scripted wander makes ``visits`` room visits: it starts in a
  random room and each next room is a random neighbour through a doorway; each visit lingers ``min_stay`` to
  ``max_stay`` steps (uniform). The agent stands on the room's top-left inner cell; its dancer starts its dance when
  the agent walks in and loops it while the agent stays (four frames show a dance: any two differ within three
  moves). A room's dancer is seen only from inside that room.
- **Query** (one step, after the last visit). The view goes blank and the observation names a query type and a room:
  "which dance did the dancer of room r perform?" The action is a dance id (``SHORT_DANCE_NAMES``); +1 if it is
  r's dance, 0 otherwise, and the episode ends (``info["success"]``). Query types (``query``): ``oldest`` (r = the
  first room visited), ``newest`` (the last), ``least_visited`` (fewest visits among visited rooms),
  ``most_visited``, or ``mixed`` (a random type per episode). Ties in visit counts would make those two ambiguous,
  so each episode's wander is the first of 32 drawn candidates whose least- and most-visited rooms are both unique;
  when none is (rare, mostly 3x3 with few visits), ties go to the room first visited earliest.
- **Length** ``sum(stays) + 1`` steps: at most ``visits * max_stay + 1`` (57 with the defaults).

Observations are a dict: ``"image"`` is the agent's view, its current room with walls (7x7 cells; the agent always
stands on the same cell of a room, so this is its egocentric view cut at the room's walls), as the int64 grid of
Ballet sprite ids (``obs_mode="symbolic"``, the default) or uint8 RGB [63, 63, 3]; ``"query_type"`` is 0 during the
wander and 1 + the index in ``QUERIES`` at the query; ``"query_room"`` is the room asked about, or ``grid**2``
(none) during the wander. ``info["place"]`` (every step, and from ``reset``) is the room of the returned
observation, ``grid**2`` at the query (the agent is out of the rooms), so ``num_places = grid**2 + 1``.
``info["task"]`` (likewise) is the episode's query type, its index in ``QUERIES``: 0 oldest, 1 newest,
2 least_visited, 3 most_visited, whatever ``query`` is (so ``num_tasks = 4``); it is known from the episode's first
step, as the task-conditioned allocator of SAT's AMA needs.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from envs.gridworld import ballet_assets as assets
from envs.gridworld.ballet import OBS_MODES, draw_keys, image_space, sprite_pixels
from envs.gridworld.base import RESET_SLOT, BatchedEnv, SingleEnv

QUERIES = ("oldest", "newest", "least_visited", "most_visited")
QUERY_MODES = QUERIES + ("mixed",)
QUERY_TOKENS = ("none",) + QUERIES  # what "query_type" ids mean
GRIDS = (2, 3)
INNER = 5  # room interior side
VIEW = INNER + 2  # a room with its walls
SPOT = (1, 1)  # where the agent stands in a room's view
DANCE_FRAMES = 4  # frames that show which dance a dancer does
CANDIDATES = 32  # wanders drawn per episode in search of one without ties


def layout(grid: int) -> np.ndarray:
    """Sprite ids of the whole block of rooms [S, S], S = 6 * grid + 1: walls, floor and doorways."""
    size = (VIEW - 1) * grid + 1
    ids = np.full((size, size), assets.WALL, dtype=np.int64)
    for a in range(grid):
        for b in range(grid):
            r, c = a * (VIEW - 1), b * (VIEW - 1)
            ids[r + 1:r + VIEW - 1, c + 1:c + VIEW - 1] = assets.FLOOR
            if b + 1 < grid:
                ids[r + VIEW // 2, c + VIEW - 1] = assets.FLOOR
            if a + 1 < grid:
                ids[r + VIEW - 1, c + VIEW // 2] = assets.FLOOR
    return ids


def neighbours(grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Rooms through each room's doorways [R, 4] (padded with -1) and how many there are [R]."""
    table = np.full((grid * grid, 4), -1, dtype=np.int64)
    degree = np.zeros(grid * grid, dtype=np.int64)
    for r in range(grid * grid):
        a, b = divmod(r, grid)
        for da, db in ((-1, 0), (0, 1), (1, 0), (0, -1)):
            if 0 <= a + da < grid and 0 <= b + db < grid:
                table[r, degree[r]] = (a + da) * grid + b + db
                degree[r] += 1
    return table, degree


class RoomBalletVector(BatchedEnv):
    metadata = {**BatchedEnv.metadata, "render_modes": ["rgb_array"]}
    state_keys = ("rooms", "ends", "dance", "sprite", "query_kind", "query_room")

    def __init__(self, num_envs: int = 1, device="cpu", autoreset: bool = True, grid: int = 2, visits: int = 8,
                 min_stay: int = 4, max_stay: int = 7, query: str = "mixed", obs_mode: str = "symbolic"):
        if grid not in GRIDS:
            raise ValueError(f"grid: rooms per side must be one of {GRIDS}, got {grid!r}")
        if not isinstance(visits, int) or visits < 2:
            raise ValueError(f"visits: must be an integer >= 2, got {visits!r}")
        if not isinstance(min_stay, int) or min_stay < DANCE_FRAMES:
            raise ValueError(f"min_stay: must be an integer >= {DANCE_FRAMES} (the frames that show a dance), "
                             f"got {min_stay!r}")
        if not isinstance(max_stay, int) or max_stay < min_stay:
            raise ValueError(f"max_stay: must be an integer >= min_stay ({min_stay}), got {max_stay!r}")
        if query not in QUERY_MODES:
            raise ValueError(f"query: unknown query {query!r}; accepted: {', '.join(QUERY_MODES)}")
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode: unknown mode {obs_mode!r}; accepted: {', '.join(OBS_MODES)}")
        super().__init__(num_envs, device, autoreset)
        self.grid, self.visits, self.min_stay, self.max_stay = grid, visits, min_stay, max_stay
        self.query, self.obs_mode = query, obs_mode
        self.num_rooms = grid * grid
        self.num_places = self.num_rooms + 1  # the rooms and "out of the rooms" at the query
        self.num_tasks = len(QUERIES)  # info["task"] ids
        self.max_steps = visits * max_stay + 1
        self.single_observation_space = spaces.Dict({
            "image": image_space(obs_mode, (VIEW, VIEW)),
            "query_type": spaces.Discrete(len(QUERY_TOKENS)),
            "query_room": spaces.Discrete(self.num_rooms + 1),
        })
        self.single_action_space = spaces.Discrete(len(assets.SHORT_DANCES))
        self._finish_spaces()

        dev = self.device
        as_t = lambda a: torch.as_tensor(np.asarray(a), device=dev)  # noqa: E731
        block = layout(grid)
        self.size = block.shape[0]
        corners = [(a * (VIEW - 1), b * (VIEW - 1)) for a in range(grid) for b in range(grid)]  # room r's view origin
        self.block = as_t(block.reshape(-1))
        self.room_views = as_t(np.stack([block[r:r + VIEW, c:c + VIEW].reshape(-1) for r, c in corners]))
        self.corner = as_t([r * self.size + c for r, c in corners])
        nb, degree = neighbours(grid)
        self.neighbour, self.degree = as_t(nb.reshape(-1)), as_t(degree)
        offsets = assets.dance_offsets(assets.SHORT_DANCES)[:, :DANCE_FRAMES]  # the loop's frames [10, 4, 2]
        self.offset_r, self.offset_c = as_t(offsets[..., 0].reshape(-1)), as_t(offsets[..., 1].reshape(-1))
        self.sprites = as_t(assets.sprite_table())
        n, v, r = num_envs, visits, self.num_rooms
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.int64, device=dev)  # noqa: E731
        self.rooms, self.ends = zeros(n, v), zeros(n, v)  # visit i is to rooms[i] for steps ends[i-1] .. ends[i]-1
        self.dance, self.sprite = zeros(n, r), zeros(n, r)  # per room
        self.query_kind, self.query_room = zeros(n), zeros(n)  # index in QUERIES, room asked about

    # --- episode set-up -----------------------------------------------------------------------------------------
    def _wanders(self) -> Tensor:
        """CANDIDATES random walks through doorways per copy: rooms [N, CANDIDATES, visits]."""
        keys = draw_keys(self, RESET_SLOT, CANDIDATES * self.visits).view(self.num_envs, CANDIDATES, self.visits)
        room = keys[..., 0] % self.num_rooms
        walk = [room]
        for i in range(1, self.visits):
            room = self.neighbour[room * 4 + keys[..., i] % self.degree[room]]
            walk.append(room)
        return torch.stack(walk, -1)

    def _extremes(self, walks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Least- and most-visited room of each walk [N, C] and whether both are free of ties [N, C]."""
        v, r = self.visits, self.num_rooms
        counts = torch.zeros(*walks.shape[:2], r, dtype=torch.int64, device=self.device)
        counts.scatter_add_(2, walks, torch.ones_like(walks))
        order = torch.arange(v, device=self.device).expand_as(walks)
        first = torch.full_like(counts, v).scatter_reduce_(2, walks, order, "amin")  # index of the first visit
        visited = counts > 0
        never = v * (v + 2)  # above every visited room's score
        least = torch.where(visited, counts * (v + 1) + first, never).argmin(2)
        most = (counts * (v + 1) - first).argmax(2)
        top = counts.topk(2, dim=2).values
        bottom = torch.where(visited, counts, never).topk(2, dim=2, largest=False).values
        clear = (top[..., 0] > top[..., 1]) & (bottom[..., 0] < bottom[..., 1])
        return least, most, clear

    def _reset_copies(self, mask):
        n, m, r = self.num_envs, mask[:, None], self.num_rooms
        walks = self._wanders()
        least, most, clear = self._extremes(walks)
        pick = clear.int().argmax(1)  # the first tie-free candidate, else candidate 0
        rooms = walks.gather(1, pick[:, None, None].expand(-1, 1, self.visits)).squeeze(1)
        picked = lambda x: x.gather(1, pick[:, None]).squeeze(1)  # noqa: E731
        stays = self.min_stay + draw_keys(self, RESET_SLOT + 1, self.visits) % (self.max_stay - self.min_stay + 1)
        kinds = (len(assets.SHORT_DANCES), len(assets.SHAPES), len(assets.COLOURS))
        dance, shape, colour = (torch.argsort(k, dim=1, stable=True)[:, :r]
                                for k in draw_keys(self, RESET_SLOT + 2, sum(kinds)).split(kinds, dim=1))
        if self.query == "mixed":
            kind = self.integers(RESET_SLOT + 3, len(QUERIES))
        else:
            kind = torch.full((n,), QUERIES.index(self.query), dtype=torch.int64, device=self.device)
        asked = torch.stack([rooms[:, 0], rooms[:, -1], picked(least), picked(most)], 1).gather(1, kind[:, None])
        self.rooms.copy_(torch.where(m, rooms, self.rooms))
        self.ends.copy_(torch.where(m, stays.cumsum(1), self.ends))
        self.dance.copy_(torch.where(m, dance, self.dance))
        self.sprite.copy_(torch.where(m, assets.dancer_sprite(shape, colour), self.sprite))
        self.query_kind.copy_(torch.where(mask, kind, self.query_kind))
        self.query_room.copy_(torch.where(mask, asked.squeeze(1), self.query_room))

    # --- stepping and viewing -----------------------------------------------------------------------------------
    def answer(self) -> Tensor:
        """The dance id that answers the query [N] (privileged: for oracles and tests)."""
        return self.dance.gather(1, self.query_room[:, None]).squeeze(1)

    def _transition(self, action):
        asking = self.elapsed >= self.ends[:, -1]
        success = asking & (action == self.answer())
        return success.float(), asking, {"success": success}

    def _where(self) -> tuple[Tensor, Tensor, Tensor]:
        """Now: the current room [N] (the last one at the query), frames since entering it [N], and asking [N]."""
        visit = (self.ends <= self.elapsed[:, None]).sum(1)
        asking = visit == self.visits
        visit = visit.clamp(max=self.visits - 1)
        room = self.rooms.gather(1, visit[:, None]).squeeze(1)
        entered = torch.where(visit > 0, self.ends.gather(1, (visit - 1).clamp(min=0)[:, None]).squeeze(1), 0)
        return room, self.elapsed - entered, asking

    def place(self) -> Tensor:
        room, _, asking = self._where()
        return torch.where(asking, self.num_rooms, room)

    def _dancer_offset(self, room: Tensor, frame: Tensor) -> tuple[Tensor, Tensor]:
        """(row, col) offset from home [N] of room ``room``'s dancer, ``frame`` frames after the agent came in."""
        i = self.dance.gather(1, room[:, None]).squeeze(1) * DANCE_FRAMES + frame % DANCE_FRAMES
        return self.offset_r[i], self.offset_c[i]

    def _observe(self):
        room, frame, asking = self._where()
        dr, dc = self._dancer_offset(room, frame)
        view = self.room_views.index_select(0, room)
        view.scatter_(1, torch.full_like(room[:, None], SPOT[0] * VIEW + SPOT[1]), assets.AGENT)
        home = VIEW // 2
        view.scatter_(1, ((home + dr) * VIEW + home + dc)[:, None], self.sprite.gather(1, room[:, None]))
        view = torch.where(asking[:, None], assets.FLOOR, view).view(-1, VIEW, VIEW)
        return {
            "image": sprite_pixels(self.sprites, view) if self.obs_mode == "rgb" else view,
            "query_type": torch.where(asking, 1 + self.query_kind, 0),
            "query_room": torch.where(asking, self.query_room, self.num_rooms),
        }

    def _observation_info(self):
        return {"place": self.place(), "task": self.query_kind.clone()}

    def render_rgb(self) -> Tensor:
        """uint8 [N, 9S, 9S, 3]: the whole block of rooms, every dancer at home but the watched one, for videos."""
        room, frame, _ = self._where()
        home = VIEW // 2
        homes = self.corner + home * self.size + home  # [R]
        ids = self.block.expand(self.num_envs, -1).clone()
        ids.scatter_(1, homes.expand(self.num_envs, -1), self.sprite)
        ids.scatter_(1, homes[room][:, None], assets.FLOOR)
        dr, dc = self._dancer_offset(room, frame)
        ids.scatter_(1, (homes[room] + dr * self.size + dc)[:, None], self.sprite.gather(1, room[:, None]))
        agent = self.corner[room] + SPOT[0] * self.size + SPOT[1]
        ids.scatter_(1, agent[:, None], assets.AGENT)
        return sprite_pixels(self.sprites, ids.view(-1, self.size, self.size))


class RoomBallet(SingleEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}
    batched_cls = RoomBalletVector
