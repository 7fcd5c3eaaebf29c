"""Learning curves from run folders, saved as a PNG.

    python -m experiments.plot runs/lstm_tmaze_n5_l5/*/ runs/gru_tmaze_n5_l5/*/ --metric success --out tmaze.png

Runs are grouped by their name (the folder above the time stamp), so a sweep over seeds gives one curve per
memory/env: the mean over its runs on a common grid of env steps, with a 95% bootstrap confidence band of that mean
(``--band ci``, 1000 resamples of the runs) or the lowest-to-highest band (``--band range``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np



def read_metric(run: Path, metric: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = [], []
    with open(run / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get(metric):
                steps.append(float(row["step"]))
                values.append(float(row[metric]))
    return np.array(steps), np.array(values)


def group_runs(runs: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for run in runs:
        groups.setdefault(run.resolve().parent.name, []).append(run)
    return groups


def confidence_band(ys: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile-bootstrap interval of the mean over runs, per grid point: ys [runs, points] -> (low, high)."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ys), (resamples, len(ys)))  # runs drawn with replacement
    means = ys[picks].mean(axis=1)  # [resamples, points]
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


def plot(runs: list[Path], metric: str, out: Path, smooth: int = 1, band: str = "ci") -> Path:
    return plot_panels({"": runs}, metric, out, smooth, band)


def plot_panels(panels: dict[str, list[Path]], metric: str, out: Path, smooth: int = 1, band: str = "ci") -> Path:
    """One panel per title (e.g. per env), each with a curve per run group; saved as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.5 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, runs) in zip(axes.flat, sorted(panels.items())):
        draw(ax, runs, metric, smooth, band)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def draw(ax, runs: list[Path], metric: str, smooth: int, band: str) -> None:
    for name, members in sorted(group_runs(runs).items()):
        curves = [read_metric(r, metric) for r in members]
        curves = [(s, v) for s, v in curves if len(s)]
        if not curves:
            continue
        grid = np.linspace(0, min(s[-1] for s, _ in curves), 200)
        ys = np.stack([np.interp(grid, s, _smooth(v, smooth)) for s, v in curves])
        line, = ax.plot(grid, ys.mean(0), label=f"{name} (n={len(curves)})")
        if len(curves) > 1:
            low, high = confidence_band(ys) if band == "ci" else (ys.min(0), ys.max(0))
            ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # runs that logged no value of the metric draw nothing
        ax.legend(fontsize=8)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<name>/<time>)")
    parser.add_argument("--metric", default="success", help="a metrics.csv column, e.g. episode_return, success, sps, value_loss")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window in logged rows")
    parser.add_argument("--band", choices=("ci", "range"), default="ci",
                        help="ci: 95%% bootstrap interval of the mean over runs; range: lowest to highest run")
    parser.add_argument("--continual", action="store_true",
                        help="also print each task-sequence run's continual metrics (forgetting, transfer)")
    parser.add_argument("--out", type=Path, default=Path("curves.png"))
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "metrics.csv").is_file()]
    if missing:
        sys.exit(f"error: runs: {missing[0]!r} is not a run folder (no metrics.csv)")
    for run in args.runs:
        with open(run / "metrics.csv", newline="") as f:
            columns = next(csv.reader(f), [])
        if args.metric not in columns:
            sys.exit(f"error: --metric: {run} has no column {args.metric!r}; accepted: {', '.join(columns[2:])}")
    print(f"saved {plot(args.runs, args.metric, args.out, args.smooth, args.band)}")
    if args.continual:
        from experiments.continual_metrics import continual_table

        for run in args.runs:
            try:
                print(f"\n{run}\n{continual_table(run)}")
            except (FileNotFoundError, ValueError) as err:
                print(f"\n{run}: no continual metrics ({err})")


if __name__ == "__main__":
    main()
