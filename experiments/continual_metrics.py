"""Continual-learning metrics of a run on a task sequence (``rlmem/Continual-v0``), from its evaluation log.

The log is ``continual_eval.csv`` in the run folder, one row per evaluation of one task: ``step`` (env steps of
training so far, summed over copies), ``task`` (index in the sequence's ``tasks``), ``score`` (mean episode return).
Evaluate every task at step 0 and then regularly (at least at each segment's end) with ``evaluate_every_task``.

Per task, with normalised score n = (score - random) / (reference - random):
- end of segment: n at the last evaluation at or before the end of the task's own (last) segment;
- final: n at the last evaluation of the run;
- forgetting = end of segment - final (WMAR's definition; positive means forgotten);
- forward transfer = n just before the task's first segment starts (after training on the earlier tasks only)
  minus n at step 0 (the untrained agent): the zero-shot transfer of Lopez-Paz & Ranzato (2017, "GEM") on
  normalised scores. It is undefined for a task trained from step 0. This is not Wołczyk et al.'s (2021) AUC-based
  transfer, which needs single-task baseline runs that a sequence run does not have.
- final average: the mean of the final normalised scores.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from omegaconf import OmegaConf

from envs.continual import check_task, sequence_segments

EVAL_FILE = "continual_eval.csv"
EVAL_COLUMNS = ("step", "task", "score")


def evaluate_every_task(agent, env, episodes: int, device, step: int, seed: int = 12345) -> list[dict]:
    """One row per task of the sequence ``env`` (a ``ContinualVector``): the agent's mean return on it alone."""
    from experiments.evaluate import evaluate

    rows = []
    for task in range(len(env.tasks)):
        task_env = env.make_task(task, episodes)
        rows.append({"step": step, "task": task, "score": evaluate(agent, task_env, device, seed)["return"]})
        task_env.close()
    return rows


def append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, EVAL_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows({k: r[k] for k in EVAL_COLUMNS} for r in rows)


def drop_rows_after(path: Path, step: int) -> None:
    """Forget evaluations made after ``step`` (a run resumed from a checkpoint at ``step`` makes them again)."""
    if not path.is_file():
        return
    kept = [(s, t, score) for s, t, score in read_rows(path) if s <= step]
    path.unlink()
    append_rows(path, [dict(zip(EVAL_COLUMNS, row)) for row in kept])


def read_rows(path: Path) -> list[tuple[int, int, float]]:
    """(step, task, score) rows of an evaluation log, sorted by step."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or set(EVAL_COLUMNS) - set(reader.fieldnames):
            raise ValueError(f"{path}: expected columns {', '.join(EVAL_COLUMNS)}, got {reader.fieldnames}")
        return sorted((int(r["step"]), int(r["task"]), float(r["score"])) for r in reader)


def _score_at(rows: list[tuple[int, int, float]], task: int, step: int) -> float:
    """The task's score at the last evaluation at or before ``step`` (nan if there is none)."""
    scores = [s for t_step, t, s in rows if t == task and t_step <= step]
    return scores[-1] if scores else math.nan


def task_metrics(rows: list[tuple[int, int, float]], segments: list[tuple[int, int, int]],
                 random: list[float], reference: list[float]) -> list[dict]:
    """Per task: normalised end-of-segment, final and step-0 scores, forgetting and forward transfer."""
    last_step = max((step for step, _, _ in rows), default=0)
    out = []
    for task, (low, high) in enumerate(zip(random, reference)):
        norm = lambda s: (s - low) / (high - low)  # noqa: E731
        own = [(start, end) for t, start, end in segments if t == task]
        first_start, last_end = own[0][0], own[-1][1]
        end = norm(_score_at(rows, task, last_end))
        final = norm(_score_at(rows, task, last_step))
        before = norm(_score_at(rows, task, first_start)) if first_start > 0 else math.nan
        out.append({"task": task, "end_of_segment": end, "final": final, "forgetting": end - final,
                    "forward_transfer": before - norm(_score_at(rows, task, 0))})
    return out


def _cell(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def format_table(metrics: list[dict], names: list[str]) -> str:
    columns = ("end_of_segment", "final", "forgetting", "forward_transfer")
    lines = ["| task | end of segment | final | forgetting | forward transfer |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {names[m['task']]} | " + " | ".join(_cell(m[c]) for c in columns) + " |" for m in metrics]
    means = []
    for c in columns:
        values = [m[c] for m in metrics if not math.isnan(m[c])]
        means.append(sum(values) / len(values) if values else math.nan)
    lines.append("| **average** | " + " | ".join(_cell(x) for x in means) + " |")
    return "\n".join(lines)


def continual_table(run: str | Path) -> str:
    """The metrics table of a run folder trained on ``rlmem/Continual-v0`` (reads config.yaml and the eval log)."""
    run = Path(run)
    if not (run / "config.yaml").is_file() or not (run / EVAL_FILE).is_file():
        raise FileNotFoundError(f"{run}: a continual run folder holds config.yaml and {EVAL_FILE}")
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True)
    if cfg["env"]["id"] != "rlmem/Continual-v0":
        raise ValueError(f"{run}: env.id is {cfg['env']['id']!r}; continual metrics need rlmem/Continual-v0")
    kwargs = cfg["env"]["kwargs"]
    tasks = [check_task(i, t) for i, t in enumerate(kwargs["tasks"])]
    segments = sequence_segments(len(tasks), kwargs["steps_per_task"], cfg["agent"]["num_envs"],
                                 kwargs.get("cycles", 1), kwargs.get("reverse", False))
    metrics = task_metrics(read_rows(run / EVAL_FILE), segments, [t["random"] for t in tasks],
                           [t["reference"] for t in tasks])
    return format_table(metrics, [t["name"] for t in tasks])
