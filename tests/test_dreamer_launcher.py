"""The launcher with agent=dreamer: run folder, exact resume with the replay, evaluation, bench, config errors."""

import csv
import re

import pytest
import torch

from experiments import bench as bench_cli
from experiments import evaluate as evaluate_cli
from experiments import train as train_cli
from experiments.build import make_trainer
from experiments.config import load

TINY = ["agent=dreamer", "memory=gru", "memory.hidden_size=16", "env=tmaze_n1_l5", "agent.size=tiny",
        "agent.stoch=4", "agent.classes=4", "agent.batch_size=4", "agent.batch_length=8", "agent.horizon=4",
        "agent.chunk_length=8", "agent.num_envs=4", "agent.collect_steps=8", "agent.train_ratio=16",
        "agent.replay_capacity=1024", "eval.episodes=8", "eval.settings={n: [1, 2]}", "device=cpu", "threads=1"]


def tiny(*extra):
    """TINY with ``extra`` overrides; Hydra takes each key once, and another memory drops TINY's memory options."""
    keys = {e.partition("=")[0] for e in extra}
    other_memory = "memory" in keys
    return [o for o in TINY if o.partition("=")[0] not in keys and not (other_memory and o.startswith("memory."))] \
        + list(extra)


def run_train(tmp_path, *extra):
    return train_cli.train(load(tiny(f"run_root={tmp_path}", *extra)))


def steps(run):
    with open(run / "metrics.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def test_run_folder_and_evaluation(tmp_path, capsys):
    run = run_train(tmp_path, "agent.total_steps=128")
    assert {"config.yaml", "metrics.csv", "checkpoint.pt", "eval.csv"} <= {p.name for p in run.iterdir()}
    assert steps(run) == [32, 64, 96, 128]
    with open(run / "metrics.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    assert float(last["updates"]) > 0 and last["model_loss"] and last["imag_return"]  # the dreamer's own columns
    saved = torch.load(run / "checkpoint.pt", weights_only=False)
    assert saved["global_step"] == 128 and saved["updates"] > 0
    assert saved["replay"]["buffers"][0]["count"] == 4 * 4  # 4 iterations x 4 envs, one chunk each
    out = capsys.readouterr().out
    assert "dreamer + gru on tmaze_n1_l5" in out and "4 envs x 8" in out and "| n=2 | 8 |" in out
    evaluate_cli.main([str(run), "n=1,3", "--episodes", "4"])
    out = capsys.readouterr().out
    assert "| n=1 | 4 |" in out and "| n=3 | 4 |" in out


def _assert_same(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_stop_and_resume_continues_exactly_with_its_replay(tmp_path):
    # A WMAR replay small enough that both buffers evict: 4 chunks of 8 steps each, 4 new chunks per iteration.
    small = ["agent.replay=wmar", "agent.replay_capacity=64"]
    full = run_train(tmp_path / "a", "agent.total_steps=192", *small)
    half = run_train(tmp_path / "b", "agent.total_steps=96", *small)
    stopped = torch.load(half / "checkpoint.pt", weights_only=False)
    assert stopped["global_step"] == 96

    # Loading the checkpoint restores the replay exactly: stored chunks, chunks in progress, reservoir keys, RNG.
    trainer = make_trainer(load(tiny("agent.total_steps=192", *small)), torch.device("cpu"))
    trainer.load_state_dict(stopped)
    _assert_same(trainer.replay.state_dict(), stopped["replay"], "replay")
    assert trainer.global_step == 96 and trainer.iteration == 3

    cfg, run_dir = train_cli.configure([f"resume={half}", "agent.total_steps=192"])
    assert train_cli.train(cfg, run_dir) == half
    a = torch.load(full / "checkpoint.pt", weights_only=False)
    b = torch.load(half / "checkpoint.pt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 192 and a["updates"] == b["updates"]
    assert a["replay"]["buffers"][1]["count"] == 4  # the reservoir is full and has been choosing
    for key in ("replay", "agent", "model_opt", "actor_opt", "critic_opt", "latent", "obs", "reset", "env"):
        _assert_same(a[key], b[key], key)
    assert steps(half) == steps(full) == [32, 64, 96, 128, 160, 192]


def test_memory_group_is_the_rssm_deterministic_path():
    cfg = load(tiny("memory=transformer", "memory.width=16", "memory.layers=1", "memory.heads=2",
                    "memory.window=8"))
    trainer = make_trainer(cfg, torch.device("cpu"))
    assert type(trainer.agent.world_model.rssm.memory).__name__ == "TransformerMemory"
    assert trainer.agent.world_model.rssm.deter == 16
    metrics = trainer.iterate()
    assert metrics["updates"] == 2 and metrics["model_loss"] > 0


@pytest.mark.parametrize("argv,message", [
    (["agent.replay=lifo"], "agent.replay: unknown replay 'lifo'; accepted: fifo, reservoir, wmar"),
    (["agent.size=XXL"], "agent.size: unknown size 'XXL'; accepted: tiny, 12m, S, M, L, XL"),
    (["agent.train_ratio=lots"], "agent.train_ratio: expected float, got 'lots'"),
    (["agent.chunk_length=4"], r"agent.chunk_length \(4\) must be >= agent.batch_length \(8\)"),
    (["agent.rollout_len=8"], "agent.rollout_len: no such config key; accepted here: .*collect_steps"),
    (["memory=sat_place", "memory.num_places=5"],
     "memory.name: 'sat' reads context .*; accepted: memories without context keys"),
    (["agent.cuda_graph=true"], "agent.cuda_graph needs a CUDA device"),
])
def test_bad_dreamer_input_is_one_line_before_training(tmp_path, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(tiny(f"run_root={tmp_path}", *argv))
    text = str(exit_info.value.code)
    assert text.startswith("error: ") and "\n" not in text
    assert re.search(message, text), text
    assert not list(tmp_path.glob("*/*/checkpoint.pt")), "no training may start"


def test_bench_prints_update_and_env_rates(capsys):
    bench_cli.main(tiny("agent.train_ratio=8") + ["--warmup", "1", "--iterations", "2", "--env-steps", "10"])
    out = capsys.readouterr().out
    assert "| updates/s |" in out and "| collect steps/s |" in out
    row = next(line for line in out.splitlines() if line.startswith("| tmaze_n1_l5 | gru | tiny | 4 | 8 |"))
    assert row.split("|")[-2].strip() == "16"  # 2 timed iterations x 32 steps x ratio 8 / 32 per update


def test_task_sequence_run_resumes_at_its_position(tmp_path):
    seq = ["env=continual_tmaze", "env.kwargs.steps_per_task=64", "eval.settings={}"]
    half = run_train(tmp_path, *seq, "agent.total_steps=96")  # stopped in the second task
    assert torch.load(half / "checkpoint.pt", weights_only=False)["sequence_step"] == 96 // 4
    cfg, run_dir = train_cli.configure([f"resume={half}", "agent.total_steps=192"])
    train_cli.train(cfg, run_dir)
    saved = torch.load(half / "checkpoint.pt", weights_only=False)
    assert saved["sequence_step"] == 192 // 4 and steps(half)[-1] == 192
    with open(half / "continual_eval.csv") as f:
        assert sorted({int(r["step"]) for r in csv.DictReader(f)}) == [0, 64, 96, 128, 192]
