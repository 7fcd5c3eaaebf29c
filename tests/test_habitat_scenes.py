"""Procedural apartments without habitat-sim: connectivity, reachable objects, seeds, the written glTF."""

import json
import struct

import numpy as np
import pytest
from scipy import ndimage

from envs.habitat import scenes

LAYOUTS = [dict(rows=2, cols=2), dict(rows=1, cols=3, objects_per_room=2), dict(rows=3, cols=3, extra_doors=0.0),
           dict(rows=2, cols=4, objects_per_room=3, room_size=(5.0, 7.0))]
CELL = 0.05  # metres per cell of the occupancy grids below


@pytest.mark.parametrize("kwargs, field", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"rows": 0}, "rows"), ({"cols": 7}, "cols"),
    ({"rows": 1, "cols": 1}, "rows/cols"), ({"objects_per_room": 0}, "objects_per_room"),
    ({"rows": 6, "cols": 6}, "objects_per_room"), ({"room_size": (2.0, 4.0)}, "room_size"),
    ({"room_size": (6.0, 5.0)}, "room_size"), ({"extra_doors": 1.5}, "extra_doors"),
])
def test_bad_arguments_raise_one_line_errors(kwargs, field):
    kwargs = {"seed": 0} | kwargs
    with pytest.raises(ValueError, match=field) as err:
        scenes.generate(**kwargs)
    assert "\n" not in str(err.value)


def test_a_seed_names_a_scene(tmp_path):
    a, b = scenes.generate(7, rows=2, cols=3), scenes.generate(7, rows=2, cols=3)
    assert a == b
    assert scenes.write_glb(a, tmp_path / "a.glb").read_bytes() == scenes.write_glb(b, tmp_path / "b.glb").read_bytes()
    plans = [scenes.generate(s, rows=2, cols=3) for s in range(20)]
    assert len({json.dumps(p, sort_keys=True) for p in plans}) == 20
    assert len({tuple(o["kind"] for o in p["objects"]) for p in plans}) == 20
    assert len({tuple(d["rooms"] for d in p["doors"]) for p in plans}) > 5  # door graphs vary too


@pytest.mark.parametrize("layout", LAYOUTS)
def test_rooms_are_connected_through_doors_in_shared_walls(layout):
    for seed in range(30):
        plan = scenes.generate(seed, **layout)
        rooms = {r["id"]: r["rect"] for r in plan["rooms"]}
        seen, frontier = {0}, [0]
        while frontier:  # BFS over the door graph
            room = frontier.pop()
            for d in plan["doors"]:
                for a, b in (d["rooms"], d["rooms"][::-1]):
                    if a == room and b not in seen:
                        seen.add(b)
                        frontier.append(b)
        assert seen == set(rooms)
        assert len(plan["doors"]) >= len(rooms) - 1
        for d in plan["doors"]:
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = rooms[d["rooms"][0]], rooms[d["rooms"][1]]
            x, y = d["centre"]
            half = scenes.DOOR_WIDTH / 2
            if d["axis"] == "y":  # the wall between east-west neighbours
                assert ax1 == bx0 == x and ay0 + half < y < ay1 - half
            else:
                assert ay1 == by0 == y and ax0 + half < x < ax1 - half


@pytest.mark.parametrize("layout", LAYOUTS)
def test_objects_are_distinct_and_clear_of_walls_and_doors(layout):
    for seed in range(30):
        plan = scenes.generate(seed, **layout)
        kinds = [o["kind"] for o in plan["objects"]]
        assert len(set(kinds)) == len(kinds) == len(plan["rooms"]) * layout.get("objects_per_room", 1)
        for o in plan["objects"]:
            assert o["kind"] == list(scenes.COLOURS).index(o["colour"]) * len(scenes.SHAPES) + \
                scenes.SHAPES.index(o["shape"])
            x0, y0, x1, y1 = plan["rooms"][o["room"]]["rect"]
            x, y = o["centre"]
            gap = scenes.WALL_THICKNESS / 2 + scenes.WALL_CLEARANCE + scenes.OBJECT_HALF - 1e-9
            assert x0 + gap <= x <= x1 - gap and y0 + gap <= y <= y1 - gap
            assert scenes.room_at(plan, x, y) == o["room"]
            assert min(np.hypot(x - d["centre"][0], y - d["centre"][1]) for d in plan["doors"]) >= \
                scenes.DOOR_CLEARANCE


def free_space(plan, agent_radius=0.2):
    """Occupancy grid [nx, ny] of where an agent's centre may stand: walls and object footprints grown by its
    radius are blocked."""
    w, h = plan["size"]
    nx, ny = int(w / CELL) + 1, int(h / CELL) + 1
    xs, ys = np.meshgrid(np.arange(nx) * CELL, np.arange(ny) * CELL, indexing="ij")
    free = np.ones((nx, ny), bool)
    boxes = list(plan["walls"]) + [(x - scenes.OBJECT_HALF, y - scenes.OBJECT_HALF, x + scenes.OBJECT_HALF,
                                    y + scenes.OBJECT_HALF) for x, y in (o["centre"] for o in plan["objects"])]
    for x0, y0, x1, y1 in boxes:
        free &= ~((xs > x0 - agent_radius) & (xs < x1 + agent_radius) & (ys > y0 - agent_radius)
                  & (ys < y1 + agent_radius))
    return free, xs, ys


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_room_and_object_is_reachable_on_foot(layout):
    for seed in range(6):
        plan = scenes.generate(seed, **layout)
        free, xs, ys = free_space(plan)
        labels, _ = ndimage.label(free)
        start = labels[tuple(np.round(np.array(plan["rooms"][0]["rect"][:2]) / CELL).astype(int) + 10)]
        reached = labels == start
        assert start > 0
        for room in plan["rooms"]:
            x0, y0, x1, y1 = room["rect"]
            inside = (xs > x0) & (xs < x1) & (ys > y0) & (ys < y1)
            assert reached[inside & free].all()  # the whole free floor of every room is one walkable region
        for o in plan["objects"]:
            near = np.hypot(xs - o["centre"][0], ys - o["centre"][1]) < 0.9
            assert reached[near].any()


def read_glb(path):
    data = path.read_bytes()
    magic, version, size = struct.unpack_from("<4sII", data)
    json_len, json_type = struct.unpack_from("<I4s", data, 12)
    doc = json.loads(data[20:20 + json_len])
    bin_len, bin_type = struct.unpack_from("<I4s", data, 20 + json_len)
    assert (magic, version, size, json_type, bin_type) == (b"glTF", 2, len(data), b"JSON", b"BIN\0")
    return doc, data[28 + json_len:28 + json_len + bin_len]


def test_glb_holds_the_plan_as_z_up_triangles(tmp_path):
    plan = scenes.generate(3, rows=2, cols=3, objects_per_room=2)
    doc, binary = read_glb(scenes.write_glb(plan, tmp_path / "scene.glb"))
    triangles, colours = 0, set()
    for prim, material in zip(doc["meshes"][0]["primitives"], doc["materials"]):
        pos, idx = doc["accessors"][prim["attributes"]["POSITION"]], doc["accessors"][prim["indices"]]
        view = doc["bufferViews"][pos["bufferView"]]
        points = np.frombuffer(binary, np.float32, pos["count"] * 3, view["byteOffset"]).reshape(-1, 3)
        np.testing.assert_allclose(points.min(0), pos["min"])
        np.testing.assert_allclose(points.max(0), pos["max"])
        assert idx["count"] % 3 == 0 and "KHR_materials_unlit" in material["extensions"]
        triangles += idx["count"] // 3
        colours.add(tuple(material["pbrMetallicRoughness"]["baseColorFactor"]))
    assert triangles == sum(len(t) for t, _ in scenes.scene_parts(plan))
    assert len(colours) == len(doc["materials"])  # one primitive per colour
    w, h = plan["size"]
    everything = np.concatenate([t.reshape(-1, 3) for t, _ in scenes.scene_parts(plan)])
    assert everything[:, 2].min() == -0.05 and everything[:, 2].max() == scenes.WALL_HEIGHT  # z is up
    assert -0.1 < everything[:, 0].min() and everything[:, 0].max() < w + 0.1 and everything[:, 1].max() < h + 0.1


@pytest.mark.parametrize("shape", scenes.SHAPES)
def test_object_meshes_are_closed_and_face_outwards(shape):
    tris = scenes.object_triangles(shape, 1.0, 2.0)
    normal = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
    # A closed surface wound outwards encloses a positive volume (divergence theorem) and sums to zero area vector.
    volume = np.einsum("ij,ij->i", tris[:, 0], normal).sum() / 6
    assert volume > 0.05 and np.allclose(normal.sum(0), 0, atol=1e-9)
    assert tris[..., 2].min() == 0.0 and tris[..., 2].max() == scenes.OBJECT_HEIGHT[shape]


def test_room_at_and_plan_to_world():
    plan = scenes.generate(0, rows=2, cols=2)
    for room in plan["rooms"]:
        x0, y0, x1, y1 = room["rect"]
        assert scenes.room_at(plan, (x0 + x1) / 2, (y0 + y1) / 2) == room["id"]
    assert scenes.room_at(plan, -0.5, 1.0) == -1 and scenes.room_at(plan, *plan["size"]) == -1
    assert scenes.plan_to_world(1.0, 2.0, 0.5) == (1.0, 0.5, -2.0)
