"""Memory tasks in the procedural apartments: multi-object navigation over long trials, and place recall.

``MultiObjectNav`` follows Memo's ExtObjNav setting: one trial is many navigation episodes in one scene. The agent
is told a target (the kind token of an object: its colour and shape), gets +1 when it reaches it, and is at once
told the next target; targets repeat within the trial, so remembering where objects stood pays. Deviation: a target
counts as found on arrival (``found_by="reach"``) unless ``found_by="stop"`` asks for habitat ObjectNav's rule of
calling stop within the radius; the trial ends only at its time limit (truncation), never by a stop.

``PlaceRecall`` is SAT's place-memory question in 3D: a guided walk through the apartment shows each visited room
and its one object, then the agent is asked which object was in room r and answers with the object's kind token.
The walk is scripted (actions are ignored while walking), as in Room Ballet, so the task measures memory of places,
not exploration.
"""

from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from envs.habitat import scenes
from envs.habitat.env import ACTIONS, HabitatApartment


class MultiObjectNav(HabitatApartment):
    """Find target after target in one scene for ``trial_steps`` steps; observation ``target`` is the kind token.

    Found: the agent stands in the target's room within ``success_radius`` metres of its centre (and, with
    ``found_by="stop"``, calls stop there). Reward +1 per find, minus ``step_penalty`` every step.
    ``info["found"]`` marks a find, ``info["targets_found"]`` counts them in the trial.
    """

    def __init__(self, trial_steps: int = 500, success_radius: float = 1.0, step_penalty: float = 0.0,
                 found_by: str = "reach", **kwargs):
        if not isinstance(trial_steps, int) or trial_steps < 1:
            raise ValueError(f"trial_steps must be a positive integer, got {trial_steps!r}")
        if not 0.5 <= success_radius <= 2.0:
            raise ValueError(f"success_radius must be in [0.5, 2.0] metres, got {success_radius!r}")
        if not 0.0 <= step_penalty < 1.0:
            raise ValueError(f"step_penalty must be in [0, 1), got {step_penalty!r}")
        if found_by not in ("reach", "stop"):
            raise ValueError(f"found_by: unknown rule {found_by!r}; accepted: 'reach', 'stop'")
        self.trial_steps, self.success_radius = trial_steps, success_radius
        self.step_penalty, self.found_by = step_penalty, found_by
        super().__init__(**kwargs)

    def _task_spaces(self):
        return {"target": spaces.Discrete(scenes.NUM_KINDS)}

    def _task_reset(self) -> None:
        self.elapsed, self.targets_found = 0, 0
        self.target = int(self.np_random.integers(len(self.plan["objects"])))

    def _task_step(self, action: int):
        self._act(action)
        self.elapsed += 1
        found = (self.found_by == "reach" or ACTIONS[action] == "stop") and self.near_target()
        if found:
            self.targets_found += 1
            # The next target is any other object: a repeat of one already found is what memory helps with.
            others = [i for i in range(len(self.plan["objects"])) if i != self.target]
            self.target = others[int(self.np_random.integers(len(others)))]
        info = {"found": found, "targets_found": self.targets_found}
        return float(found) - self.step_penalty, False, self.elapsed >= self.trial_steps, info

    def near_target(self) -> bool:
        obj = self.plan["objects"][self.target]
        x, y, _ = self._plan_pose()
        return scenes.room_at(self.plan, x, y) == obj["room"] and math.dist((x, y), obj["centre"]) <= \
            self.success_radius

    def _task_obs(self):
        return {"target": np.int64(self.plan["objects"][self.target]["kind"])}


class PlaceRecall(HabitatApartment):
    """A guided walk of ``visits`` rooms (neighbours through doors), ``view_steps`` frames of each room's object
    from random viewpoints, then the query ``query = r + 1`` (0 while walking): answer with the kind token of
    the object in room r. Reward 1 for the right answer; the answer ends the episode (``info["success"]``).
    Actions are answers (``Discrete(NUM_KINDS)``); the walk ignores them.
    """

    def __init__(self, visits: int = 6, view_steps: int = 3, **kwargs):
        if not isinstance(visits, int) or not 2 <= visits <= 64:
            raise ValueError(f"visits must be an integer in 2..64, got {visits!r}")
        if not isinstance(view_steps, int) or not 1 <= view_steps <= 16:
            raise ValueError(f"view_steps must be an integer in 1..16, got {view_steps!r}")
        if kwargs.get("objects_per_room", 1) != 1:
            raise ValueError(f"objects_per_room must be 1 for PlaceRecall (one answer per room), got "
                             f"{kwargs['objects_per_room']!r}")
        self.visits, self.view_steps = visits, view_steps
        super().__init__(**kwargs)
        self.action_space = spaces.Discrete(scenes.NUM_KINDS)

    def _task_spaces(self):
        return {"query": spaces.Discrete(self.layout["rows"] * self.layout["cols"] + 1)}

    def _task_reset(self) -> None:
        x, y, _ = self._plan_pose()
        self.rooms = [scenes.room_at(self.plan, x, y)]
        neighbours = {r["id"]: [] for r in self.plan["rooms"]}
        for door in self.plan["doors"]:
            a, b = door["rooms"]
            neighbours[a].append(b)
            neighbours[b].append(a)
        while len(self.rooms) < self.visits:
            options = neighbours[self.rooms[-1]]
            self.rooms.append(options[int(self.np_random.integers(len(options)))])
        self.poses = [self._viewpoint(room) for room in self.rooms for _ in range(self.view_steps)]
        visited = sorted(set(self.rooms))
        self.query_room = visited[int(self.np_random.integers(len(visited)))]
        self.frame = 0
        self._set_pose(*self.poses[0])
        self.start = self._plan_pose()

    def _viewpoint(self, room: int):
        """A navigable point 1.2-2.5 m from the room's object, inside the room, facing the object."""
        obj = next(o for o in self.plan["objects"] if o["room"] == room)
        while True:  # about half of the ring around an object lies in its room and on the navmesh
            angle, dist = self.np_random.uniform(0, 2 * math.pi), self.np_random.uniform(1.2, 2.5)
            x, y = obj["centre"][0] + dist * math.cos(angle), obj["centre"][1] + dist * math.sin(angle)
            point = np.array(scenes.plan_to_world(x, y), np.float32)
            if scenes.room_at(self.plan, x, y) == room and self.sim.pathfinder.is_navigable(point):
                return self.sim.pathfinder.snap_point(point), angle + math.pi

    def answer(self) -> int:
        """The right answer to this episode's query (an oracle for tests and baselines)."""
        return next(o["kind"] for o in self.plan["objects"] if o["room"] == self.query_room)

    def _task_step(self, action: int):
        if self.frame < len(self.poses):  # walking: show the next frame, or the query after the last one
            self.frame += 1
            if self.frame < len(self.poses):
                self._set_pose(*self.poses[self.frame])
            return 0.0, False, False, {}
        success = action == self.answer()
        return float(success), True, False, {"success": success}

    def _task_obs(self):
        return {"query": np.int64(self.query_room + 1 if self.frame == len(self.poses) else 0)}
