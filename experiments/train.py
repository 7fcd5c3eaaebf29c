"""Train an agent from configs and write a run folder.

    python -m experiments.train                                  # the quickstart: PPO + LSTM on Endless T-Maze
    python -m experiments.train memory=gru env=tmaze_n5_l5 experiment=tmaze seed=1
    python -m experiments.train resume=runs/lstm_tmaze_n3_l5/<time>   # continue a killed run
    python -m experiments.train -m memory=lstm,gru seed=0,1,2 hydra/launcher=joblib   # a sweep, 3 runs at a time

Arguments are Hydra overrides of experiments/conf/config.yaml. The run folder gets the resolved config, metrics.csv,
TensorBoard events, checkpoint.pt (every ``checkpoint_every`` iterations, at the end, and on Ctrl-C/SIGTERM) and
eval.csv (evaluation after training at the settings in ``eval.settings``).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from agents.ppo import seed_everything
from experiments import distributed
from experiments.build import make_env, make_trainer
from experiments.config import CONF_DIR, ConfigError, as_dict, load, resolve_device, sweep_combinations
from envs.continual import ContinualVector
from experiments.continual_metrics import EVAL_FILE, append_rows, drop_rows_after, evaluate_every_task
from experiments.evaluate import evaluate_settings, format_table, settings_grid, write_rows
from experiments.logger import RunLogger
from experiments.run import load_run, new_run_dir, save_checkpoint


def configure(argv: list[str]) -> tuple[DictConfig, Path | None]:
    """The config to run and, when resuming, the run folder to continue."""
    resume = next((a.partition("=")[2] for a in argv if a.startswith("resume=")), None)
    if not resume or resume == "null":
        return load(argv), None
    cfg, _ = load_run(resume)
    overrides = [a for a in argv if not a.startswith("resume=")]
    for item in overrides:
        key = item.partition("=")[0]
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise ConfigError(f"{key}: no such config key in the resumed run's config")
    cfg.merge_with(OmegaConf.from_dotlist(overrides))
    return cfg, Path(resume)


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a flag the training loop checks between iterations."""

    def __init__(self):
        self.requested = False
        self.previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def release(self) -> None:
        """Give the signals their previous handlers back: once training is checkpointed, Ctrl-C or SIGTERM stops the
        evaluation that follows at once."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True
        print(f"\n{signal.Signals(signum).name}: checkpointing after this iteration ...", flush=True)


class ContinualEvaluation:
    """On a task sequence (``rlmem/Continual-v0``): evaluates every task at step 0 and whenever a segment ends, into
    ``continual_eval.csv``, from which ``python -m experiments.plot --continual`` computes forgetting and transfer.
    A resumed run (the trainer has restored the sequence's position) keeps the evaluations up to its checkpoint."""

    def __init__(self, trainer, cfg: DictConfig, run_dir: Path, device):
        self.trainer, self.cfg, self.path, self.device = trainer, cfg, run_dir / EVAL_FILE, device
        self.env = trainer.env if isinstance(trainer.env, ContinualVector) else None
        if self.env is None:
            return
        self.segment = self.env.step_count // self.env.vector_steps_per_task
        if trainer.global_step:
            drop_rows_after(self.path, trainer.global_step)
        else:
            self._evaluate()

    def _evaluate(self) -> None:
        rows = evaluate_every_task(self.trainer.agent, self.env, int(self.cfg.eval.episodes), self.device,
                                   self.trainer.global_step)
        append_rows(self.path, rows)

    def after_iteration(self) -> None:
        if self.env is None:
            return
        segment = self.env.step_count // self.env.vector_steps_per_task
        if segment != self.segment or self.trainer.iteration == self.trainer.num_iterations:
            self.segment = segment
            self._evaluate()


def train(cfg: DictConfig, run_dir: Path | None = None) -> Path | None:
    """Run (or continue, when ``run_dir`` holds a checkpoint) the training described by ``cfg``.

    Under torchrun every rank calls this; rank 0 alone writes the run folder and returns it."""
    stop = StopRequest()  # first: a run stopped while it builds still leaves a checkpoint to resume from
    rank, device = distributed.setup(cfg, resolve_device(cfg.device))
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(int(cfg.seed) + rank.rank)
    trainer = make_trainer(cfg, device, rank.rank, rank.world)
    sweeps = {k: list(v) for k, v in as_dict(cfg.eval.settings).items()}
    for setting in settings_grid(sweeps):  # a bad evaluation setting fails now, not after training
        make_env(cfg, 1, device, **setting).close()
    elapsed = 0.0
    if run_dir is not None:
        state = torch.load(run_dir / "checkpoint.pt", map_location=device, weights_only=False)
        trainer.load_state_dict(state, restore_envs=rank.main)
        elapsed = state.get("elapsed", 0.0)
    elif rank.main:
        run_dir = new_run_dir(cfg)
    total = trainer.num_iterations
    batch = trainer.cfg.steps_per_rollout
    if rank.main:
        if trainer.global_step:
            print(f"resuming {run_dir} from step {trainer.global_step:,}")
        print(f"run folder: {run_dir}\n{cfg.agent.name} + {cfg.memory.name} on {cfg.env.name}: "
              f"{total * batch * rank.world:,} steps, device {device}, {rank.world} process(es); batch per "
              f"iteration {batch * rank.world:,} steps ({batch:,} per rank: {trainer.cfg.num_envs} envs x "
              f"{batch // trainer.cfg.num_envs})")
    logger = RunLogger(run_dir, total * batch * rank.world, trainer.global_step, elapsed) if rank.main else None
    sequence = ContinualEvaluation(trainer, cfg, run_dir, device) if rank.main else None

    def checkpoint():
        if rank.main:
            save_checkpoint(run_dir, {**trainer.state_dict(), "elapsed": logger.elapsed})

    try:
        while trainer.iteration < total and not distributed.any_rank(stop.requested):
            metrics = trainer.iterate()
            if logger and (trainer.iteration % cfg.log_every == 0 or trainer.iteration == total):
                logger.log(metrics)
            if sequence:
                sequence.after_iteration()
            if trainer.iteration % cfg.checkpoint_every == 0:
                checkpoint()
        checkpoint()
    finally:
        if logger:
            logger.close()
    stop.release()
    trainer.close()
    if trainer.iteration < total:
        if rank.main:
            print(f"stopped at step {trainer.global_step:,}; continue with:\n"
                  f"  python -m experiments.train resume={run_dir}")
        distributed.teardown()
        sys.exit(130)
    distributed.teardown()
    if not rank.main:
        return None

    allocation = getattr(trainer, "allocation", None)  # AMA's bandit picks strategies in evaluation too
    allocator = allocation.allocator if allocation else None
    episodes, greedy = int(cfg.eval.episodes), bool(cfg.eval.greedy)
    rows = evaluate_settings(trainer.agent, cfg, device, {}, episodes, greedy, allocator=allocator)
    if sweeps:
        rows += evaluate_settings(trainer.agent, cfg, device, sweeps, episodes, greedy, allocator=allocator)
    write_rows(run_dir / "eval.csv", rows)
    print(f"\nevaluation ({cfg.eval.episodes} episodes per setting):\n{format_table(rows)}")
    print(f"\nrun folder: {run_dir}\n"
          f"  curves:      python -m experiments.plot {run_dir}\n"
          f"  TensorBoard: tensorboard --logdir {run_dir}\n"
          f"  evaluate:    python -m experiments.evaluate {run_dir} KEY=V1,V2  (env settings, e.g. n=1,3,5,10)")
    return run_dir


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def _sweep_job(cfg: DictConfig) -> None:
    train(cfg)


def sweep(overrides: list[str]) -> None:
    """Hydra multirun: one run (and run folder) per combination of the comma-separated values, started by Hydra's
    launcher: one after another by default, in parallel with ``hydra/launcher=joblib``, as Slurm jobs with
    ``hydra/launcher=submitit_slurm``. Every combination's config is checked before any run starts."""
    for combination in sweep_combinations(overrides):
        load(combination)
    sys.argv = [sys.argv[0], "--multirun", "hydra.sweep.dir=${run_root}/sweeps/${now:%Y-%m-%d_%H-%M-%S}",
                "hydra.job.chdir=false", *overrides]
    _sweep_job()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    multirun = [a for a in argv if a in ("-m", "--multirun")]
    argv = [a for a in argv if a not in multirun]
    try:
        if multirun:
            sweep(argv)
        else:
            cfg, run_dir = configure(argv)
            train(cfg, run_dir)
    except ConfigError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
