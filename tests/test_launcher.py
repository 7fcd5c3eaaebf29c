"""The launcher: run folders, checkpoints, resume, SIGTERM, evaluation, plots and one-line config errors."""

import csv
import signal
import subprocess
import sys
import time

import pytest
import torch

from experiments import evaluate as evaluate_cli
from experiments import plot as plot_cli
from experiments import train as train_cli
from experiments.config import ConfigError, load

TINY = ["agent.num_envs=8", "agent.rollout_len=8", "agent.num_minibatches=2", "agent.update_epochs=1",
        "memory.hidden_size=8", "eval.episodes=16", "eval.settings={n: [1, 2]}", "device=cpu", "threads=1",
        "env=tmaze_n1_l5"]


def run_train(tmp_path, *extra):
    keys = {e.partition("=")[0] for e in extra}
    base = [o for o in TINY if o.partition("=")[0] not in keys]  # Hydra takes each key once
    cfg = load(base + [f"run_root={tmp_path}"] + list(extra))
    return train_cli.train(cfg)


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_run_folder_contents(tmp_path, capsys):
    run = run_train(tmp_path, "agent.total_steps=256")
    assert run.parent.name == "lstm_tmaze_n1_l5"
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "checkpoint.pt", "eval.csv"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    steps = [int(r["step"]) for r in rows(run)]
    assert steps == [64, 128, 192, 256]
    out = capsys.readouterr().out
    assert "| n=2 |" in out and f"run folder: {run}" in out
    with open(run / "eval.csv") as f:
        assert [r["setting"] for r in csv.DictReader(f)] == ["as trained", "n=1", "n=2"]


def test_resume_continues_exactly(tmp_path):
    # A run of 6 iterations equals a run stopped after 3 and resumed to 6 (no LR annealing: it depends on the total).
    full = run_train(tmp_path / "a", "agent.total_steps=384", "agent.anneal_lr=false")
    half = run_train(tmp_path / "b", "agent.total_steps=192", "agent.anneal_lr=false")
    saved = torch.load(half / "checkpoint.pt", weights_only=False)
    assert saved["global_step"] == 192
    cfg, run_dir = train_cli.configure([f"resume={half}", "agent.total_steps=384"])
    resumed = train_cli.train(cfg, run_dir)
    assert resumed == half
    a = torch.load(full / "checkpoint.pt", weights_only=False)
    b = torch.load(half / "checkpoint.pt", weights_only=False)
    assert b["global_step"] == a["global_step"] == 384
    for k in a["agent"]:
        torch.testing.assert_close(b["agent"][k], a["agent"][k], atol=0, rtol=0)
    assert b["optimizer"]["state"][0]["step"] == a["optimizer"]["state"][0]["step"]
    torch.testing.assert_close(b["optimizer"]["state"][0]["exp_avg"], a["optimizer"]["state"][0]["exp_avg"])
    assert [r["step"] for r in rows(half)] == [r["step"] for r in rows(full)]


def test_sigterm_checkpoints_and_resume_picks_up(tmp_path):
    args = TINY + [f"run_root={tmp_path}", "agent.total_steps=10000000", "checkpoint_every=100000"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/*/metrics.csv")):
        time.sleep(0.2)
    metrics = list(tmp_path.glob("*/*/metrics.csv"))
    while time.time() < deadline and len(rows(metrics[0].parent)) < 2:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    run = metrics[0].parent
    step = torch.load(run / "checkpoint.pt", weights_only=False)["global_step"]
    assert step >= 128 and f"resume={run}" in out
    cfg, run_dir = train_cli.configure([f"resume={run}", f"agent.total_steps={step + 128}"])
    train_cli.train(cfg, run_dir)
    assert int(rows(run)[-1]["step"]) == step + 128


def test_evaluate_and_plot_commands(tmp_path, capsys):
    run = run_train(tmp_path, "agent.total_steps=128")
    evaluate_cli.main([str(run), "n=1,3", "--episodes", "8"])
    out = capsys.readouterr().out
    assert "| n=1 | 8 |" in out and "| n=3 | 8 |" in out
    png = tmp_path / "curves.png"
    plot_cli.main([str(run), "--metric", "episode_return", "--out", str(png)])
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("argv,message", [
    (["memory=lsmt"], "memory: unknown memory 'lsmt'; accepted: .*lstm"),
    (["env=nowhere"], "env: unknown env 'nowhere'; accepted: .*tmaze_n3_l5"),
    (["agent=sac"], "agent: unknown agent 'sac'; accepted: dreamer, ppo"),
    (["agent.learning_rate=1"], "agent.learning_rate: no such config key; accepted here: .*lr"),
    (["memory.hidden=3"], "memory.hidden: no such config key; accepted here: hidden_size"),
    (["agent.lr=fast"], "agent.lr: expected float, got 'fast'"),
    (["agent.encoder=nature"], "agent.encoder: 'nature' needs image observations"),
    (["agent.num_minibatches=3"], "agent.num_minibatches .* must divide agent.num_envs"),
    (["resume=/no/such/run"], "resume/run: '/no/such/run' is not a run folder"),
    (["device=tpu"], "device: 'tpu' is not a device"),
])
def test_bad_input_is_one_line_before_training(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        train_cli.main(argv + [f"run_root={tmp_path}"])
    text = str(exit_info.value.code)
    assert text.startswith("error: ") and "\n" not in text
    import re
    assert re.search(message, text), text
    assert not list(tmp_path.glob("*/*/checkpoint.pt")), "no training may start"


def test_bad_evaluation_setting_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="env.kwargs: .*corridors"):
        run_train(tmp_path, "eval.settings={corridors: [1, 2]}")
    assert not list(tmp_path.glob("*/*"))


def test_unknown_memory_option_in_config(tmp_path):
    with pytest.raises(ConfigError, match="memory.depth: not an option of memory 'lstm'"):
        run_train(tmp_path, "+memory.depth=2")


def test_console_script_dispatch(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import sys; from experiments.cli import main; "
                          "sys.argv=['rlmem', 'nope']; main()"], capture_output=True, text=True)
    assert out.returncode != 0 and "usage: rlmem {train|evaluate|plot|bench}" in out.stderr


def test_task_sequence_run_logs_continual_metrics(tmp_path, capsys):
    run = run_train(tmp_path, "env=continual_tmaze", "env.kwargs.steps_per_task=128", "agent.total_steps=384",
                    "eval.settings={}")
    with open(run / "continual_eval.csv") as f:
        rows = list(csv.DictReader(f))
    # every task at step 0 and at the end of each of the three segments
    assert sorted({int(r["step"]) for r in rows}) == [0, 128, 256, 384]
    assert len(rows) == 4 * 3
    plot_cli.main([str(run), "--out", str(tmp_path / "c.png"), "--continual"])
    out = capsys.readouterr().out
    assert "| tmaze_n1 |" in out and "| **average** |" in out


def test_env_without_eval_settings_evaluates_as_trained_only(tmp_path):
    # eval.settings defaults to the env config's eval_settings, or to {} for envs that have none.
    base = [o for o in TINY if not o.startswith(("eval.settings", "env="))]
    run = train_cli.train(load(base + ["env=color_cubes_trivial", "agent.total_steps=64", f"run_root={tmp_path}"]))
    with open(run / "eval.csv") as f:
        assert [r["setting"] for r in csv.DictReader(f)] == ["as trained"]


def test_bench_table_names_each_swept_setting(capsys):
    from experiments import bench as bench_cli

    base = [o for o in TINY if not o.startswith(("eval", "memory"))]
    bench_cli.main([*base, "memory.hidden_size=8,16", "agent.bf16=false", "--warmup", "0", "--iterations", "1",
                    "--env-steps", "4"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tmaze_n1_l5")]
    assert len(rows) == 4  # printed as measured, then in the final table
    assert "| memory.hidden_size=8 |" in rows[0] and "| memory.hidden_size=16 |" in rows[1]


def test_sigterm_during_the_final_evaluation_stops_at_once(tmp_path):
    # Training is short and checkpointed; the evaluation after it is long (many copies), and SIGTERM ends it.
    args = [a for a in TINY if not a.startswith("eval.")] + [f"run_root={tmp_path}", "agent.total_steps=64",
                                                              "eval.episodes=200000", "eval.settings={}"]
    proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("*/*/checkpoint.pt")):
        time.sleep(0.2)
    time.sleep(1.0)  # into the evaluation
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGTERM
    assert not list(tmp_path.glob("*/*/eval.csv"))


def test_memory_variants_name_their_runs():
    # Variants of one registered memory (RMT is memo overwriting; FCT a transformer) must not share run folders.
    names = {m: load([f"memory={m}", "env=dark_key_to_door"]).name for m in ("memo_dkd", "rmt_dkd", "fct_dkd", "lstm")}
    assert names == {"memo_dkd": "memo_dark_key_to_door", "rmt_dkd": "rmt_dark_key_to_door",
                     "fct_dkd": "fct_dark_key_to_door", "lstm": "lstm_dark_key_to_door"}


def test_task_sequence_run_resumes_at_its_position(tmp_path):
    # Stopped in the second task (192 of 384 steps, 128 per task) and resumed: the sequence goes on where it was,
    # and the evaluations up to the checkpoint are kept (the one at 192 closed the shorter first run).
    seq = ["env=continual_tmaze", "env.kwargs.steps_per_task=128", "eval.settings={}"]
    half = run_train(tmp_path, *seq, "agent.total_steps=192")
    saved = torch.load(half / "checkpoint.pt", weights_only=False)
    assert saved["sequence_step"] == 192 // 8  # step() calls of the 8-copy sequence
    cfg, run_dir = train_cli.configure([f"resume={half}", "agent.total_steps=384"])
    train_cli.train(cfg, run_dir)
    with open(half / "continual_eval.csv") as f:
        evals = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in evals}) == [0, 128, 192, 256, 384] and len(evals) == 5 * 3
    assert torch.load(half / "checkpoint.pt", weights_only=False)["sequence_step"] == 384 // 8
