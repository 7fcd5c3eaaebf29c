"""Procedural apartments: a seeded plan of rooms, doors and objects, and its mesh written as a binary glTF stage.

A plan is a grid of ``rows x cols`` rectangular rooms (column widths and row depths drawn per scene) whose shared
walls have doors along a random spanning tree of the grid, plus extra doors that make loops. Each room holds
``objects_per_room`` objects of distinct kinds; a kind is a colour and a shape, and its token id is
``colour * len(SHAPES) + shape``. Everything is numpy and deterministic in the seed, so a seed names a scene.

Plan coordinates are metres with x east, y north and z up. habitat-sim reads a bare ``.glb`` stage as Z-up, so the
mesh is written in these coordinates unchanged; in habitat's Y-up world a plan point ``(x, y, z)`` is at
``(x, z, -y)`` (see ``plan_to_world``). Materials are unlit with shading baked per face direction, so the
renderer needs no lights and walls facing different ways stay distinguishable.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

SHAPES = ("box", "cylinder", "pyramid", "diamond")
COLOURS = {"red": (0.85, 0.12, 0.1), "green": (0.12, 0.7, 0.15), "blue": (0.12, 0.25, 0.9),
           "yellow": (0.95, 0.85, 0.1), "magenta": (0.85, 0.15, 0.8), "cyan": (0.1, 0.8, 0.85)}
NUM_KINDS = len(SHAPES) * len(COLOURS)
# Muted floor tints, one per room (cycled past eight rooms), so a room's floor hints where the agent is.
FLOOR_TINTS = ((0.55, 0.5, 0.45), (0.45, 0.5, 0.55), (0.5, 0.55, 0.45), (0.58, 0.52, 0.38),
               (0.42, 0.42, 0.42), (0.55, 0.45, 0.5), (0.4, 0.5, 0.48), (0.6, 0.58, 0.55))
WALL_RGB = (0.82, 0.8, 0.76)
WALL_HEIGHT, WALL_THICKNESS, DOOR_WIDTH = 2.5, 0.1, 1.0
OBJECT_HALF = 0.3  # half the footprint of every object, metres
OBJECT_HEIGHT = {"box": 0.6, "cylinder": 0.8, "pyramid": 0.8, "diamond": 0.9}
WALL_CLEARANCE = 0.5  # free floor between a wall face and an object's footprint
DOOR_CLEARANCE = 1.4  # least distance from a door's centre to an object's centre
OBJECT_SPACING = 1.3  # least distance between two objects' centres
_LIGHT = np.array([0.35, 0.55, 0.76])  # direction of the light baked into the face colours


def generate(seed: int, rows: int = 2, cols: int = 2, objects_per_room: int = 1,
             room_size: tuple[float, float] = (3.5, 5.5), extra_doors: float = 0.3) -> dict:
    """The plan of scene ``seed``: ``rooms`` (id, rect ``(x0, y0, x1, y1)`` between wall centre lines, floor rgb),
    ``doors`` (the two rooms, centre, axis of the wall), ``objects`` (kind token, colour, shape, rgb, centre,
    room), ``walls`` (boxes ``(x0, y0, x1, y1)``) and ``size`` (the apartment's extent)."""
    _check_args(seed, rows, cols, objects_per_room, room_size, extra_doors)
    rng = np.random.default_rng(seed)
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(*room_size, cols))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(*room_size, rows))])
    tints = rng.permutation(len(FLOOR_TINTS))
    rooms = [{"id": r * cols + c, "rect": (xs[c], ys[r], xs[c + 1], ys[r + 1]),
              "rgb": FLOOR_TINTS[tints[(r * cols + c) % len(FLOOR_TINTS)]]}
             for r in range(rows) for c in range(cols)]
    doors = _doors(rng, rows, cols, xs, ys, extra_doors)
    objects = _objects(rng, rooms, doors, objects_per_room)
    return {"seed": seed, "rows": rows, "cols": cols, "rooms": rooms, "doors": doors, "objects": objects,
            "walls": _walls(rows, cols, xs, ys, doors), "size": (float(xs[-1]), float(ys[-1]))}


def _check_args(seed, rows, cols, objects_per_room, room_size, extra_doors) -> None:
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    for name, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, int) or not 1 <= value <= 6:
            raise ValueError(f"{name} must be an integer in 1..6, got {value!r}")
    if rows * cols < 2:
        raise ValueError(f"rows/cols: an apartment needs at least 2 rooms, got {rows}x{cols}")
    if not isinstance(objects_per_room, int) or not 1 <= objects_per_room <= 3:
        raise ValueError(f"objects_per_room must be an integer in 1..3, got {objects_per_room!r}")
    if rows * cols * objects_per_room > NUM_KINDS:
        raise ValueError(f"objects_per_room: {rows * cols * objects_per_room} objects exceed the {NUM_KINDS} "
                         f"distinct kinds; use fewer rooms or objects")
    if (not isinstance(room_size, (tuple, list)) or len(room_size) != 2
            or not 3.5 <= room_size[0] <= room_size[1] <= 10.0):
        raise ValueError(f"room_size must be (low, high) metres with 3.5 <= low <= high <= 10, got {room_size!r}")
    if not 0.0 <= extra_doors <= 1.0:
        raise ValueError(f"extra_doors must be a probability in [0, 1], got {extra_doors!r}")


def _doors(rng, rows, cols, xs, ys, extra_doors) -> list[dict]:
    """A random spanning tree of the room grid (Kruskal on shuffled edges) plus each other edge with probability
    ``extra_doors``; a door sits at a random place along the shared wall, clear of the corners."""
    edges = [(r * cols + c, r * cols + c + 1) for r in range(rows) for c in range(cols - 1)]
    edges += [(r * cols + c, (r + 1) * cols + c) for r in range(rows - 1) for c in range(cols)]
    parent = list(range(rows * cols))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    doors = []
    for k in rng.permutation(len(edges)):
        a, b = edges[k]
        joins, extra = root(a) != root(b), rng.uniform() < extra_doors  # one draw per edge, door or not
        if joins:
            parent[root(a)] = root(b)
        if joins or extra:
            ra, ca = divmod(a, cols)
            margin = 0.4 + DOOR_WIDTH / 2
            if b == a + 1:  # east-west neighbours: the door is in the wall x = xs[ca + 1], which runs along y
                centre = (xs[ca + 1], rng.uniform(ys[ra] + margin, ys[ra + 1] - margin))
                axis = "y"
            else:
                centre = (rng.uniform(xs[ca] + margin, xs[ca + 1] - margin), ys[ra + 1])
                axis = "x"
            doors.append({"rooms": (a, b), "centre": (float(centre[0]), float(centre[1])), "axis": axis})
    return sorted(doors, key=lambda d: d["rooms"])


def _walls(rows, cols, xs, ys, doors) -> list[tuple[float, float, float, float]]:
    """Wall boxes ``(x0, y0, x1, y1)``: the outline, and each shared wall with its door cut out."""
    t = WALL_THICKNESS / 2
    walls = [(xs[0] - t, ys[0] - t, xs[-1] + t, ys[0] + t), (xs[0] - t, ys[-1] - t, xs[-1] + t, ys[-1] + t),
             (xs[0] - t, ys[0] - t, xs[0] + t, ys[-1] + t), (xs[-1] - t, ys[0] - t, xs[-1] + t, ys[-1] + t)]
    door_at = {d["rooms"]: d["centre"] for d in doors}
    for r in range(rows):
        for c in range(cols):
            a = r * cols + c
            if c + 1 < cols:  # wall to the east, along y
                walls += _cut((xs[c + 1], ys[r]), (xs[c + 1], ys[r + 1]), door_at.get((a, a + 1)), t)
            if r + 1 < rows:  # wall to the north, along x
                walls += _cut((xs[c], ys[r + 1]), (xs[c + 1], ys[r + 1]), door_at.get((a, a + cols)), t)
    return [tuple(float(v) for v in w) for w in walls]


def _cut(start, end, door, t) -> list[tuple]:
    """The boxes of a wall from ``start`` to ``end`` (axis-aligned), minus a door gap centred at ``door``."""
    axis = 0 if start[1] == end[1] else 1
    spans = [(start[axis], end[axis])]
    if door is not None:
        spans = [(start[axis], door[axis] - DOOR_WIDTH / 2), (door[axis] + DOOR_WIDTH / 2, end[axis])]
    fixed = start[1 - axis]
    if axis == 0:
        return [(lo - t, fixed - t, hi + t, fixed + t) for lo, hi in spans]
    return [(fixed - t, lo - t, fixed + t, hi + t) for lo, hi in spans]


def _objects(rng, rooms, doors, per_room) -> list[dict]:
    kinds = rng.choice(NUM_KINDS, len(rooms) * per_room, replace=False)
    door_centres = np.array([d["centre"] for d in doors])
    margin = WALL_THICKNESS / 2 + WALL_CLEARANCE + OBJECT_HALF
    objects, colours = [], list(COLOURS)
    for room in rooms:
        x0, y0, x1, y1 = room["rect"]
        placed = []
        while len(placed) < per_room:  # rooms of >= 3.5 m fit three objects easily: this ends after few draws
            p = rng.uniform((x0 + margin, y0 + margin), (x1 - margin, y1 - margin))
            if (np.linalg.norm(door_centres - p, axis=1).min() >= DOOR_CLEARANCE
                    and all(np.linalg.norm(p - q) >= OBJECT_SPACING for q in placed)):
                placed.append(p)
        for p in placed:
            kind = int(kinds[len(objects)])
            colour, shape = colours[kind // len(SHAPES)], SHAPES[kind % len(SHAPES)]
            objects.append({"kind": kind, "colour": colour, "shape": shape, "rgb": COLOURS[colour],
                            "centre": (float(p[0]), float(p[1])), "room": room["id"]})
    return objects


def room_at(plan: dict, x: float, y: float) -> int:
    """The id of the room whose rectangle holds plan point ``(x, y)`` (walls split at their centre line), or -1
    outside the apartment."""
    for room in plan["rooms"]:
        x0, y0, x1, y1 = room["rect"]
        if x0 <= x < x1 and y0 <= y < y1:
            return room["id"]
    return -1


def plan_to_world(x: float, y: float, z: float = 0.0) -> tuple[float, float, float]:
    """habitat's Y-up world position of plan point ``(x, y, z)`` of a Z-up stage."""
    return (x, z, -y)


# --- meshes --------------------------------------------------------------------------------------------------
def _box(x0, y0, z0, x1, y1, z1) -> np.ndarray:
    """Triangles [12, 3, 3] of a box, wound counter-clockwise seen from outside."""
    v = np.array([[x, y, z] for z in (z0, z1) for y in (y0, y1) for x in (x0, x1)])
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    return np.array([[v[a], v[b], v[c]] for q in quads for a, b, c in ((q[0], q[1], q[2]), (q[0], q[2], q[3]))])


def _ring(cx, cy, radius, sides, z, phase=0.0) -> np.ndarray:
    angle = phase + 2 * np.pi * np.arange(sides) / sides
    return np.stack([cx + radius * np.cos(angle), cy + radius * np.sin(angle), np.full(sides, z)], 1)


def _prism(low, high) -> np.ndarray:
    """Triangles of the sides and caps between two rings of the same shape, ``high`` above ``low``."""
    j = np.roll(np.arange(len(low)), -1)
    sides = np.concatenate([np.stack([low, low[j], high[j]], 1), np.stack([low, high[j], high], 1)])
    return np.concatenate([sides, _fan(low, low.mean(0), up=False), _fan(high, high.mean(0), up=True)])


def _fan(ring, apex, up: bool) -> np.ndarray:
    """Triangles from each edge of a counter-clockwise ``ring`` to ``apex``, facing up (apex above) or down."""
    j = np.roll(np.arange(len(ring)), -1)
    a, b = (ring, ring[j]) if up else (ring[j], ring)
    return np.stack([a, b, np.broadcast_to(apex, ring.shape)], 1)


def object_triangles(shape: str, x: float, y: float) -> np.ndarray:
    """Triangles [F, 3, 3] of an object of ``shape`` standing on the floor at plan point ``(x, y)``."""
    h, s = OBJECT_HEIGHT[shape], OBJECT_HALF
    if shape == "box":
        return _box(x - s, y - s, 0.0, x + s, y + s, h)
    if shape == "cylinder":
        return _prism(_ring(x, y, s, 12, 0.0), _ring(x, y, s, 12, h))
    corners = s * np.sqrt(2)  # a square of half-side s, as a ring of 4 turned by 45 degrees
    if shape == "pyramid":
        base = _ring(x, y, corners, 4, 0.0, np.pi / 4)
        return np.concatenate([_fan(base, np.array([x, y, h]), up=True), _fan(base, base.mean(0), up=False)])
    # diamond: two square pyramids joined at their bases, resting on a small foot
    waist = _ring(x, y, corners, 4, (h + 0.1) / 2, np.pi / 4)
    return np.concatenate([_box(x - 0.05, y - 0.05, 0.0, x + 0.05, y + 0.05, 0.1),
                           _fan(waist, np.array([x, y, h]), up=True), _fan(waist, np.array([x, y, 0.1]), up=False)])


def scene_parts(plan: dict) -> list[tuple[np.ndarray, tuple[float, float, float]]]:
    """The plan as (triangles [F, 3, 3], rgb) parts: floors, walls, objects."""
    parts = [(_box(*r["rect"][:2], -0.05, *r["rect"][2:], 0.0), r["rgb"]) for r in plan["rooms"]]
    parts += [(np.concatenate([_box(*w[:2], 0.0, *w[2:], WALL_HEIGHT) for w in plan["walls"]]), WALL_RGB)]
    parts += [(object_triangles(o["shape"], *o["centre"]), o["rgb"]) for o in plan["objects"]]
    return parts


def _shaded(parts) -> dict[tuple, np.ndarray]:
    """Triangles grouped by their final colour: the part's rgb times a light factor of the face direction."""
    groups: dict[tuple, list] = {}
    for tris, rgb in parts:
        normal = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        light = np.round(0.6 + 0.4 * np.clip(normal @ _LIGHT, -0.5, 1.0), 2)
        for level in np.unique(light):
            colour = tuple(round(float(c) * float(level), 4) for c in rgb)
            groups.setdefault(colour, []).append(tris[light == level])
    return {c: np.concatenate(t).astype(np.float32) for c, t in groups.items()}


def write_glb(plan: dict, path: str | Path) -> Path:
    """Write the plan's mesh as a binary glTF (Z-up, unlit materials, one primitive per colour)."""
    groups = _shaded(scene_parts(plan))
    binary, views, accessors, primitives, materials = bytearray(), [], [], [], []
    for colour, tris in groups.items():
        positions = tris.reshape(-1, 3)
        indices = np.arange(len(positions), dtype=np.uint32)
        for data, target in ((positions, 34962), (indices, 34963)):
            views.append({"buffer": 0, "byteOffset": len(binary), "byteLength": data.nbytes, "target": target})
            binary += data.tobytes()
        accessors.append({"bufferView": len(views) - 2, "componentType": 5126, "count": len(positions),
                          "type": "VEC3", "min": positions.min(0).tolist(), "max": positions.max(0).tolist()})
        accessors.append({"bufferView": len(views) - 1, "componentType": 5125, "count": len(indices),
                          "type": "SCALAR"})
        materials.append({"pbrMetallicRoughness": {"baseColorFactor": [*colour, 1.0], "metallicFactor": 0.0,
                                                   "roughnessFactor": 1.0},
                          "extensions": {"KHR_materials_unlit": {}}})
        primitives.append({"attributes": {"POSITION": len(accessors) - 2}, "indices": len(accessors) - 1,
                           "material": len(materials) - 1})
    doc = {"asset": {"version": "2.0", "generator": "rlmem envs.habitat.scenes"},
           "extensionsUsed": ["KHR_materials_unlit"], "scene": 0, "scenes": [{"nodes": [0]}],
           "nodes": [{"mesh": 0}], "meshes": [{"primitives": primitives}], "materials": materials,
           "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": len(binary)}]}
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    size = 12 + 8 + len(text) + 8 + len(binary)
    path = Path(path)
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, size) + struct.pack("<I4s", len(text), b"JSON") + text
                     + struct.pack("<I4s", len(binary), b"BIN\0") + bytes(binary))
    return path
