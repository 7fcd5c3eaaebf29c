"""Env-only steps/s of Habitat multi-object navigation at several simulator counts, and a grid of rendered frames.

    python -m experiments.benchmarks.habitat_speed --sims 1 8 32 --seconds 30 --out habitat_speed.md
    python -m experiments.benchmarks.habitat_speed --sims 1 8 32 --gpu-device-id 0    # render on GPU 0
    python -m experiments.benchmarks.habitat_speed --sims --frames frames.png          # frames only

Each row builds ``rlmem/habitat-objnav-v0`` with ``--sims`` simulators (one per process, or all in this process with
``--in-process``), resets it, steps it with uniformly random actions for ``--warmup`` seconds, then counts the steps
of a ``--seconds`` window. The window includes the task's autoresets (a new scene every 500-step trial), as training
sees them; starting the simulators is timed apart (the ``start`` column).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import envs

os.environ.setdefault("HABITAT_SIM_LOG", "quiet")  # habitat's per-scene warnings; Magnum still names the renderer
ENV_ID = "rlmem/habitat-objnav-v0"


def steps_per_second(vec, seconds: float, warmup: float, seed: int = 0) -> float:
    """Env steps per second over all copies of ``vec``, timed over ``seconds`` after ``warmup`` seconds."""
    rng = np.random.default_rng(seed)
    n, num_actions = vec.num_envs, int(vec.single_action_space.n)
    for window in (warmup, seconds):
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < window:
            vec.step(rng.integers(num_actions, size=n))
            steps += n
        elapsed = time.perf_counter() - t0
    return steps / elapsed


def renderer(gpu_device_id: int) -> str:
    return f"EGL, GPU {gpu_device_id}" if gpu_device_id >= 0 else "EGL, Mesa software (CPU)"


def speed_table(args) -> list[str]:
    lines = ["| sims | mode | renderer | resolution | start s | steps/s total | steps/s per sim |",
             "|---:|---|---|---:|---:|---:|---:|"]
    mode = "in-process" if args.in_process else "processes"
    for n in args.sims:
        t0 = time.perf_counter()
        vec = envs.make_vector(ENV_ID, n, processes=not args.in_process, resolution=args.resolution,
                               gpu_device_id=args.gpu_device_id)
        vec.reset(seed=0)
        start = time.perf_counter() - t0
        rate = steps_per_second(vec, args.seconds, args.warmup)
        vec.close()
        lines.append(f"| {n} | {mode} | {renderer(args.gpu_device_id)} | {args.resolution}x{args.resolution} | "
                     f"{start:.0f} | {rate:,.0f} | {rate / n:,.0f} |")
        print(lines[-1], flush=True)
    return lines


def topdown(env) -> tuple[np.ndarray, list[tuple[float, float, tuple]]]:
    """habitat-sim's top-down view of the navmesh [rows, cols] bool, and each object as (col, row, rgb) on it."""
    from envs.habitat import scenes

    metres_per_pixel = 0.05
    lower, _ = env.sim.pathfinder.get_bounds()
    grid = env.sim.pathfinder.get_topdown_view(metres_per_pixel, float(lower[1]))
    marks = []
    for obj in env.plan["objects"]:
        x, _, z = scenes.plan_to_world(*obj["centre"])
        marks.append(((x - lower[0]) / metres_per_pixel, (z - lower[2]) / metres_per_pixel, obj["rgb"]))
    return grid, marks


def save_frames(path: str, scene_seeds: list[int], views: int, resolution: int, gpu_device_id: int) -> None:
    """One row per scene: the agent's RGB view of ``views`` rooms' objects (PlaceRecall's guided walk, which faces
    each visited room's object) and the navmesh seen from above with the objects marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs.habitat.tasks import PlaceRecall

    env = PlaceRecall(visits=views, view_steps=1, resolution=resolution, gpu_device_id=gpu_device_id)
    fig, axes = plt.subplots(len(scene_seeds), views + 1, figsize=(2.0 * (views + 1), 2.4 * len(scene_seeds)),
                             squeeze=False)
    for row, seed in zip(axes, scene_seeds):
        obs, info = env.reset(seed=seed)
        for i, ax in enumerate(row[:views]):
            obj = next(o for o in env.plan["objects"] if o["room"] == env.rooms[i])
            ax.imshow(obs["rgb"])
            ax.set_title(f"scene {seed}, room {env.rooms[i]}\n{obj['colour']} {obj['shape']}", fontsize=8)
            obs, *_ = env.step(0)
        grid, marks = topdown(env)
        row[-1].imshow(grid, cmap="gray")
        for col, r, rgb in marks:
            row[-1].scatter(col, r, color=rgb, s=30, edgecolors="black", linewidths=0.5)
        row[-1].set_title(f"scene {seed}: navmesh, top", fontsize=8)
        for ax in row:
            ax.axis("off")
    env.close()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"frames: {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmarks.habitat_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, nargs="*", default=[1, 8, 32], help="simulator counts (none: no table)")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed window per row")
    parser.add_argument("--warmup", type=float, default=5.0, help="untimed stepping before the window")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--gpu-device-id", type=int, default=-1, help="-1: Mesa software rendering on the CPU")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--processes", dest="in_process", action="store_false", help="one simulator per process "
                      "(the default)")
    mode.add_argument("--in-process", dest="in_process", action="store_true", help="all simulators in this process")
    parser.set_defaults(in_process=False)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--frames", default=None, help="write a PNG grid of rendered frames here")
    args = parser.parse_args(argv)
    if any(n < 1 for n in args.sims):
        parser.error(f"--sims: simulator counts must be positive, got {args.sims}")
    if args.frames:
        save_frames(args.frames, [0, 1], 4, args.resolution, args.gpu_device_id)
    if args.sims:
        table = "\n".join(speed_table(args))
        print("\n" + table)
        if args.out:
            with open(args.out, "w") as f:
                f.write(table + "\n")


if __name__ == "__main__":
    main()
