"""Where a run's numbers go: ``metrics.csv``, TensorBoard events and a live progress line."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

FIRST = ("step", "iteration", "time", "sps")
EPISODES = ("episodes", "episode_return", "episode_length", "success")  # blank in rows where no episode ended


class RunLogger:
    """metrics.csv's columns are the first row's keys (each agent logs its own), kept for the run's lifetime."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, elapsed: float = 0.0):
        self.path = run_dir / "metrics.csv"
        self.total_steps = total_steps
        self.columns = self._truncate_after(start_step)  # a resumed run rewrites what came after its checkpoint
        self.file = self.csv = None
        self.tb = SummaryWriter(str(run_dir), purge_step=start_step or None)
        self.t0 = time.time() - elapsed
        self.start_step, self.t_start = start_step, time.time()
        self.last_print = 0.0
        self.tty = sys.stdout.isatty()

    def _truncate_after(self, step: int) -> list[str] | None:
        """Drop rows after ``step``; the file's columns, or None for a new run."""
        if not self.path.exists():
            return None
        with open(self.path, newline="") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if int(r["step"]) <= step]
            columns = list(reader.fieldnames or FIRST)
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        return columns

    def _writer(self, metrics: dict) -> csv.DictWriter:
        if self.csv is None:
            new = self.columns is None
            if new:
                self.columns = list(dict.fromkeys((*FIRST, *EPISODES, *metrics)))
            self.file = open(self.path, "a", newline="")
            self.csv = csv.DictWriter(self.file, self.columns, extrasaction="ignore")
            if new:
                self.csv.writeheader()
        return self.csv

    @property
    def elapsed(self) -> float:
        return time.time() - self.t0

    def log(self, metrics: dict) -> None:
        step = metrics["step"]
        sps = (step - self.start_step) / max(time.time() - self.t_start, 1e-9)
        row = {**metrics, "time": round(self.elapsed, 2), "sps": round(sps)}
        self._writer(metrics).writerow(row)
        self.file.flush()
        for key, value in metrics.items():
            if key not in ("step", "iteration"):
                self.tb.add_scalar(f"train/{key}", value, step)
        self.tb.add_scalar("train/sps", sps, step)
        self.progress(step, sps, metrics)

    def progress(self, step: int, sps: float, metrics: dict) -> None:
        now = time.time()
        done = step >= self.total_steps
        if not (self.tty or done or now - self.last_print >= 10):
            return
        self.last_print = now
        eta = (self.total_steps - step) / max(sps, 1e-9)
        parts = [f"step {step:,}/{self.total_steps:,}", f"{sps:,.0f} SPS"]
        if "episode_return" in metrics:
            parts += [f"return {metrics['episode_return']:.3f}", f"success {metrics['success']:.3f}"]
        parts.append(f"ETA {_hms(eta)}")
        line = " | ".join(parts)
        if self.tty:
            print("\r" + line.ljust(100), end="\n" if done else "", flush=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.file:
            self.file.close()
        self.tb.close()


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
