"""Run every combination of a sweep as side-by-side processes under one wall-clock limit, resuming what an earlier
call left unfinished, and compare the arms at an equal env-step budget.

    python -m experiments.grid --root runs_ballet --limit 480 --jobs 24 --metric success -- \\
        experiment=ballet env=ballet_2_delay16,ballet_4_delay16 memory=hcam,gtrxl,lstm,gru seed=0,1,2

Each combination trains in ``<root>/<combination>/<name>/<time>/`` (an ordinary run folder). At the limit every
run still training gets SIGTERM, checkpoints and stops; calling the same command again resumes those runs and
starts the combinations that never started. The summary table compares each group (the run name, e.g.
``hcam_ballet_2_delay16``) at the largest env step every run of its env has reached, averaging ``--metric`` over
the last tenth of that budget; finished runs also show their evaluation. ``--out`` writes the table, the learning
curves (a panel per env) and the runs (without checkpoints) as ``runs.tar.gz``.
"""

from __future__ import annotations

import argparse
import csv
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from experiments.config import ConfigError, load, sweep_combinations
from experiments.plot import plot_panels, read_metric

GRACE = 60  # seconds a stopped run gets to finish its iteration and checkpoint before it is killed


class Job:
    """One combination: its folder, its run folder once training has written one, and its process."""

    def __init__(self, root: Path, overrides: list[str], label: list[str]):
        self.overrides = overrides
        # e.g. memory-hcam__seed-0: no "=" or ",", which a path inside a Hydra override may not hold
        self.folder = root / re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(label).replace("=", "-") or "run")
        self.proc: subprocess.Popen | None = None

    @property
    def run(self) -> Path | None:
        runs = sorted(self.folder.glob("*/*/config.yaml"))
        return runs[-1].parent if runs else None

    @property
    def finished(self) -> bool:
        return self.run is not None and (self.run / "eval.csv").is_file()

    def command(self) -> list[str]:
        run = self.run
        if run is not None and (run / "checkpoint.pt").is_file():
            return [sys.executable, "-m", "experiments.train", f"resume={run}"]
        return [sys.executable, "-m", "experiments.train", *self.overrides, f"run_root={self.folder}"]

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "train.log", "a")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def last_step(self) -> int:
        run = self.run
        if run is None or not (run / "metrics.csv").is_file():
            return 0
        steps, _ = read_metric(run, "step")
        return int(steps[-1]) if len(steps) else 0


def run_grid(jobs: list[Job], limit: float, parallel: int, report_every: float = 60.0) -> None:
    """Runs the unfinished jobs, at most ``parallel`` at a time, until they end or ``limit`` seconds pass."""
    queue = [j for j in jobs if not j.finished]
    running: list[Job] = []
    deadline = time.time() + limit
    last_report = time.time()
    while (queue or running) and time.time() < deadline:
        while queue and len(running) < parallel:
            job = queue.pop(0)
            job.start()
            running.append(job)
        time.sleep(1.0)
        for job in [j for j in running if j.proc.poll() is not None]:
            running.remove(job)
            if job.proc.returncode != 0:
                print(f"{job.folder.name}: exited with {job.proc.returncode}; see {job.folder / 'train.log'}")
        if time.time() - last_report >= report_every:
            last_report = time.time()
            steps = ", ".join(f"{j.folder.name}: {j.last_step():,}" for j in running)
            print(f"[{time.strftime('%H:%M:%S')}] {len(running)} running, {len(queue)} queued; {steps}", flush=True)
    for job in running:
        job.proc.send_signal(signal.SIGTERM)
    for job in running:
        try:
            job.proc.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.wait()
    if running or queue:
        print(f"time limit: {len(running)} run(s) stopped at a checkpoint, {len(queue)} never started; "
              f"the same command resumes them")


def summary(jobs: list[Job], metric: str) -> str:
    """Per group: runs, the equal budget, the metric there (per seed and mean) and the evaluation of finished runs."""
    by_env = runs_by_env(jobs)
    lines = [f"| group | runs | equal budget (steps) | {metric} at that budget, per run | mean | "
             f"eval {metric} (finished runs) |", "|---|---:|---:|---|---:|---|"]
    for env, runs in sorted(by_env.items()):
        budget = min(read_metric(run, "step")[0][-1] for run in runs)
        groups: dict[str, list[Path]] = {}
        for run in runs:
            groups.setdefault(run.parent.name, []).append(run)
        for name, members in sorted(groups.items()):
            values = [value_at(run, metric, budget) for run in members]
            evals = [read_eval(run, metric) for run in members if (run / "eval.csv").is_file()]
            mean = sum(values) / len(values)
            lines.append(f"| {name} | {len(members)} | {int(budget):,} | {' / '.join(f'{v:.3f}' for v in values)} "
                         f"| {mean:.3f} | {' / '.join(f'{v:.3f}' for v in evals) or '-'} |")
    return "\n".join(lines)


def value_at(run: Path, metric: str, budget: float) -> float:
    """The mean of ``metric`` over the rows logged in the last tenth of ``budget`` env steps (nan if none)."""
    steps, values = read_metric(run, metric)
    window = values[(steps > 0.9 * budget) & (steps <= budget)]
    return float(window.mean()) if len(window) else float("nan")


def read_eval(run: Path, metric: str) -> float:
    """The evaluation at the run's own env settings (eval.csv's first row; its return is metrics.csv's
    episode_return), nan where eval.csv has no such column."""
    with open(run / "eval.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return float(row.get(metric.removeprefix("episode_"), "nan"))


def runs_by_env(jobs: list[Job]) -> dict[str, list[Path]]:
    by_env: dict[str, list[Path]] = {}
    for job in jobs:
        if job.run is not None and job.last_step():
            by_env.setdefault(OmegaConf.load(job.run / "config.yaml").env.name, []).append(job.run)
    return by_env


def write_outputs(jobs: list[Job], table: str, metric: str, out: Path) -> None:
    """Three files (few enough to come back from a lent machine): the table, the curves, the runs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid_table.md").write_text(table + "\n")
    by_env = runs_by_env(jobs)
    if by_env:
        plot_panels(by_env, metric, out / "grid_curves.png")
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for job in jobs:
            if job.folder.is_dir():
                tar.add(job.folder, arcname=job.folder.name, filter=lambda t: None if t.name.endswith(".pt") else t)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.grid", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="folder holding one subfolder per combination")
    parser.add_argument("--limit", type=float, required=True, help="wall-clock seconds until running runs are told to stop (each then finishes its iteration and checkpoints, within 60 s)")
    parser.add_argument("--jobs", type=int, default=0, help="processes at a time (0: every combination at once)")
    parser.add_argument("--metric", default="success", help="metrics.csv column to compare, e.g. episode_return")
    parser.add_argument("--out", type=Path, help="write grid_table.md, grid_curves.png and runs.tar.gz here")
    parser.add_argument("overrides", nargs="+", help="Hydra overrides; comma lists are swept (seed=0,1,2)")
    args = parser.parse_args(argv)
    if args.limit <= 0:
        sys.exit(f"error: --limit must be a positive number of seconds, got {args.limit}")
    if args.jobs < 0:
        sys.exit(f"error: --jobs must be 0 (all at once) or a positive count, got {args.jobs}")
    try:
        combos = sweep_combinations(args.overrides)
        for combo in combos:  # every combination's config is checked before any starts
            load(combo)
    except ConfigError as err:
        sys.exit(f"error: {err}")
    swept = [i for i in range(len(combos[0])) if len({c[i] for c in combos}) > 1]  # folders named by these
    jobs = [Job(args.root, combo, [combo[i] for i in swept]) for combo in combos]
    print(f"{len(jobs)} combinations, {sum(j.finished for j in jobs)} already finished; up to "
          f"{args.jobs or len(jobs)} at a time for {args.limit:.0f} s", flush=True)
    run_grid(jobs, args.limit, args.jobs or len(jobs))
    table = summary(jobs, args.metric)
    if args.out:
        write_outputs(jobs, table, args.metric, args.out)
    print(table)


if __name__ == "__main__":
    main()
