"""experiments.grid: a sweep's combinations run side by side under a time limit, resume, and compare at equal steps."""

import subprocess
import sys
import tarfile

TINY = ["env=tmaze_n1_l5", "agent.num_envs=8", "agent.rollout_len=8", "memory.hidden_size=8", "eval.episodes=8",
        "eval.settings={}", "device=cpu", "threads=1"]


def grid(root, limit, *overrides, out=None):
    cmd = [sys.executable, "-m", "experiments.grid", "--root", str(root), "--limit", str(limit)]
    cmd += ["--out", str(out)] if out else []
    return subprocess.run([*cmd, "--", *TINY, *overrides], capture_output=True, text=True, timeout=200)


def test_finished_grid_is_summarised_plotted_and_packed(tmp_path):
    out = grid(tmp_path / "g", 120, "memory=lstm,gru", "agent.total_steps=256", out=tmp_path / "out")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["memory-gru", "memory-lstm"]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("| gru_", "| lstm_"))]
    assert len(rows) == 2 and all("| 1 | 256 |" in r for r in rows), out.stdout
    assert all(r.rstrip(" |").split("| ")[-1] != "-" for r in rows)  # finished runs show their evaluation
    assert (tmp_path / "out" / "grid_curves.png").stat().st_size > 0
    with tarfile.open(tmp_path / "out" / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("metrics.csv") for n in names) and not any(n.endswith(".pt") for n in names)


def test_time_limit_checkpoints_and_the_same_command_resumes(tmp_path):
    long_run = ["memory=lstm", "seed=0,1", "agent.total_steps=100000000"]
    first = grid(tmp_path, 25, *long_run)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 run(s) stopped at a checkpoint" in first.stdout
    assert len(list(tmp_path.glob("seed-*/*/*/checkpoint.pt"))) == 2
    second = grid(tmp_path, 20, *long_run)
    assert second.returncode == 0, second.stdout + second.stderr
    for log in tmp_path.glob("seed-*/train.log"):
        assert "resuming" in log.read_text()
    assert len(list(tmp_path.glob("seed-*/*/*/config.yaml"))) == 2  # resumed in place, no new run folders


def test_a_bad_combination_fails_before_any_run_starts(tmp_path):
    out = grid(tmp_path / "g", 60, "memory=lstm,lsmt")
    assert out.returncode != 0 and "memory: unknown memory 'lsmt'" in out.stderr
    assert not (tmp_path / "g").exists()
