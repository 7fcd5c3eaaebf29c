"""Data-parallel PPO on the CPU: 2 gloo processes update like one process with the whole batch."""

import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import envs
from agents.ppo import PPO, Agent, PPOConfig, seed_everything

CFG = dict(rollout_len=6, total_steps=10_000, num_minibatches=1, update_epochs=2, norm_adv=False)


def make_trainer(num_envs):
    seed_everything(0)  # the same initial weights in every process
    cfg = PPOConfig(num_envs=num_envs, **CFG)
    env = envs.make_vector("rlmem/EndlessTMaze-v0", num_envs, n=1, l_max=2)
    agent = Agent(env.single_observation_space, 3, "lstm", {"hidden_size": 8})
    return PPO(env, agent, cfg, torch.device("cpu"))


def load_columns(trainer, batch, columns):
    """Put env columns ``columns`` of a rollout ``batch`` into ``trainer``'s buffers (what update() reads)."""
    for key in ("obs", "reset", "actions", "logprobs", "values", "advantages", "returns"):
        trainer.buf[key].copy_(batch[key][:, columns])  # [T, N, ...]
    for k, v in trainer.buf["start_state"].items():
        v.copy_(batch["start_state"][k][columns])  # [N, ...]


def rank_main(rank, world, path, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_PORT"])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    trainer = make_trainer(8 // world)
    batch = torch.load(path, weights_only=False)
    load_columns(trainer, batch, slice(rank * 4, rank * 4 + 4))
    trainer.update()
    torch.save([p.detach().clone() for p in trainer.agent.parameters()], f"{out}.{rank}")
    dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_with_the_global_batch(tmp_path):
    single = make_trainer(8)
    single.rollout()
    single.rollout()  # a non-initial start state too
    path = tmp_path / "batch.pt"
    torch.save(single.buf, path)
    before = [p.detach().clone() for p in single.agent.parameters()]
    single.update()
    expected = [p.detach() for p in single.agent.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, expected)), "the update must change the weights"

    os.environ["TEST_PORT"] = str(29500 + os.getpid() % 1000)
    mp.spawn(rank_main, args=(2, str(path), str(tmp_path / "params")), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "params.0")
    rank1 = torch.load(tmp_path / "params.1")
    for a, b, c in zip(rank0, rank1, expected):
        torch.testing.assert_close(a, b, atol=0, rtol=0)  # ranks stay identical
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)  # and equal the single process


def torchrun(tmp_path, *args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
           str(30500 + os.getpid() % 1000), "-m", "experiments.train", "device=cpu", "threads=1",
           "env=tmaze_n1_l5", "memory.hidden_size=8", "agent.rollout_len=8", "agent.num_minibatches=2",
           "eval.episodes=8", "eval.settings={}", f"run_root={tmp_path}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240)


def test_torchrun_trains_and_only_rank_zero_writes(tmp_path):
    out = torchrun(tmp_path, "agent.num_envs=16", "agent.total_steps=512")
    assert out.returncode == 0, out.stdout + out.stderr
    runs = list(tmp_path.glob("*/*/metrics.csv"))
    assert len(runs) == 1
    assert "batch per iteration 128 steps (64 per rank: 8 envs x 8)" in out.stdout
    steps = [int(line.split(",")[0]) for line in runs[0].read_text().splitlines()[1:]]
    assert steps == [128, 256, 384, 512]  # global env steps


def test_config_errors_fail_fast_on_every_rank(tmp_path):
    # Each rank is started on its own, with the environment torchrun gives it: torchrun itself kills the other ranks
    # once one fails, so it cannot show that every rank stops by itself before waiting on the process group.
    port = str(31500 + os.getpid() % 1000)
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "experiments.train", "device=cpu", "threads=1", "env=tmaze_n1_l5",
               "agent.num_envs=9", f"run_root={tmp_path}"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    message = "agent.num_envs (9) must be divisible by the number of processes (2)"
    for proc in procs:
        output, _ = proc.communicate(timeout=120)  # a rank that waited for its peer would hang here
        assert proc.returncode != 0 and message in output, output
    assert not list(tmp_path.glob("*/*"))


def mismatch_main(rank, world, out):
    from experiments import distributed
    from experiments.config import ConfigError, load

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["TEST_PORT"], WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    cfg = load(["device=cpu", "agent.num_envs=8", f"seed={rank}"])  # rank 1 was given another seed
    try:
        distributed.setup(cfg, torch.device("cpu"))
        message = "no error"
    except ConfigError as err:
        message = str(err)
    with open(f"{out}.{rank}", "w") as f:
        f.write(message)
    distributed.teardown()


def test_ranks_started_with_different_configs_fail_on_every_rank(tmp_path):
    os.environ["TEST_PORT"] = str(31500 + os.getpid() % 1000)
    mp.spawn(mismatch_main, args=(2, str(tmp_path / "msg")), nprocs=2, join=True)
    for rank in (0, 1):
        message = (tmp_path / f"msg.{rank}").read_text()
        assert message == ("torchrun: rank 1 was started with a different config than rank 0; give every rank "
                           "the same arguments"), message
