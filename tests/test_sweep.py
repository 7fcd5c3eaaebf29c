"""Sweeps: Hydra multirun through its joblib (local parallel) and submitit (cluster; here its local mode) launchers,
and plots that aggregate a sweep over seeds."""

import subprocess
import sys

import numpy as np

from experiments.config import sweep_combinations
from experiments.plot import confidence_band

TINY = ["env=tmaze_n1_l5", "agent.num_envs=8", "agent.rollout_len=8", "agent.total_steps=128",
        "agent.num_minibatches=2", "memory.hidden_size=8", "eval.episodes=8", "eval.settings={n: [1]}", "device=cpu",
        "threads=1"]


def multirun(tmp_path, *args):
    cmd = [sys.executable, "-m", "experiments.train", "-m", *TINY, f"run_root={tmp_path}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_sweep_combinations_expand_every_axis():
    combos = sweep_combinations(["memory=lstm,gru", "seed=0,1,2", "eval.settings={n: [1, 2]}"])
    assert len(combos) == 6
    assert ["memory=gru", "seed=2", "eval.settings={n:[1,2]}"] in combos


def test_joblib_sweep_runs_each_combination_in_its_own_folder(tmp_path):
    out = multirun(tmp_path, "memory=lstm,gru", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    lstm = list(tmp_path.glob("lstm_tmaze_n1_l5/*/eval.csv"))
    gru = list(tmp_path.glob("gru_tmaze_n1_l5/*/eval.csv"))
    assert len(lstm) == 1 and len(gru) == 1


def test_submitit_launcher_runs_jobs(tmp_path):
    # submitit_local is the Slurm launcher's code path with jobs run as local processes.
    out = multirun(tmp_path, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert len(list(tmp_path.glob("lstm_tmaze_n1_l5/*/eval.csv"))) == 2


def test_a_bad_combination_stops_the_sweep_before_any_run(tmp_path):
    out = multirun(tmp_path, "memory=lstm,lsmt")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1].startswith("error: memory: unknown memory 'lsmt'")
    assert not list(tmp_path.glob("*/*/config.yaml"))


def test_confidence_band_brackets_the_mean_and_narrows_with_agreement():
    rng = np.random.default_rng(1)
    spread = rng.normal(0, 1.0, (10, 5))
    close = rng.normal(0, 0.1, (10, 5))
    lo, hi = confidence_band(spread)
    assert (lo <= spread.mean(0)).all() and (spread.mean(0) <= hi).all()
    lo2, hi2 = confidence_band(close)
    assert ((hi2 - lo2) < (hi - lo)).all()
