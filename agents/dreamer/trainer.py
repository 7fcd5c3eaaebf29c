"""DreamerV3's collect-and-train loop, driven by the launcher through the same surface as ``agents.ppo.PPO``.

One iteration (``iterate``) steps the N envs ``collect_steps`` times with the agent's policy, appending each
transition to the replay (``collect``), then runs as many ``Agent.train_step`` updates as the train ratio asks
(``train``). The train ratio is DreamerV3's: replayed steps per env step. Every env step collected while the replay
holds data earns ``train_ratio`` replayed steps; an update spends ``batch_size * batch_length`` of them and the
remainder carries over. The replay stores a chunk every ``chunk_length`` steps, so updates start once each env has
collected ``chunk_length`` steps: that is our prefill.

The checkpoint holds everything a resumed run needs to go on as if never stopped: weights (slow critic and return
normaliser included), the three optimizers, the replay with its chunks in progress and random stream, the collector's
observation, latent state and reset flags, the env's state (batched envs), the torch random state and the counters.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import gymnasium
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from agents.dreamer.agent import Agent, DreamerConfig, replay_spec
from agents.rng import restore_rng, rng_state
from memory.replay import make_replay

OPTIMIZERS = ("model_opt", "actor_opt", "critic_opt")


class Trainer:
    """Trains ``agent`` on the vector env ``env``: call ``iterate()`` once per collect + train."""

    def __init__(self, env: gymnasium.vector.VectorEnv, agent: Agent, cfg: DreamerConfig, device: torch.device,
                 seed: int = 0):
        if env.metadata.get("autoreset_mode") != AutoresetMode.SAME_STEP:
            raise ValueError(f"env: dreamer needs a vector env with autoreset_mode SAME_STEP (a replay entry is one "
                             f"transition), got {env.metadata.get('autoreset_mode')}")
        if env.num_envs != cfg.num_envs:
            raise ValueError(f"agent.num_envs is {cfg.num_envs} but the env has {env.num_envs} copies")
        if cfg.cuda_graph and device.type != "cuda":
            raise ValueError("agent.cuda_graph needs a CUDA device; set agent.cuda_graph=false")
        self.env, self.agent, self.cfg, self.device = env, agent.to(device), cfg, device
        self.replay = make_replay(cfg.replay, cfg.replay_capacity, cfg.chunk_length,
                                  replay_spec(env.single_observation_space), cfg.num_envs, seed, device,
                                  cfg.wmar_split)
        self.num_iterations = max(1, cfg.total_steps // cfg.steps_per_rollout)
        self.global_step = self.iteration = self.updates = 0
        self.budget = 0.0  # replayed steps earned and not yet spent on updates
        self._start_episodes(env.reset(seed=seed)[0])

    def _start_episodes(self, obs) -> None:
        """Every copy starts an episode at ``obs``, from the initial latent state."""
        self.obs = torch.as_tensor(obs, device=self.device).clone()  # [N, ...]: what the agent sees next
        self.reset = torch.ones(self.cfg.num_envs, dtype=torch.bool, device=self.device)  # obs starts an episode
        self.latent = self.agent.initial_state(self.cfg.num_envs)

    @torch.no_grad()
    def collect(self) -> Tensor:
        """Step every env ``collect_steps`` times into the replay. Returns the finished episodes' statistics:
        [count, return sum, length sum, success sum]."""
        cfg, n = self.cfg, self.cfg.num_envs
        stats = torch.zeros(4)
        for _ in range(cfg.collect_steps):
            action, self.latent = self.agent.act(self.obs, self.latent, self.reset)
            obs, reward, terminated, truncated, info = self.env.step(action.cpu().numpy())
            terminated = torch.as_tensor(terminated).bool().cpu()
            self.replay.add({"obs": self.obs, "action": action, "reward": torch.as_tensor(reward).float(),
                             "terminated": terminated, "reset": self.reset})
            if self.replay.stored_steps:
                self.budget += n * cfg.train_ratio
            self.reset = (terminated | torch.as_tensor(truncated).bool().cpu()).to(self.device)
            self.obs = torch.as_tensor(obs, device=self.device).clone()  # engines may reuse their output buffer
            if "episode" in info:
                ended = torch.as_tensor(info["_episode"]).float().cpu()
                success = torch.as_tensor(info["success"]).float().cpu() if "success" in info else 0 * ended
                ret, length = (torch.as_tensor(info["episode"][k]).float().cpu() for k in ("r", "l"))
                stats += torch.stack([ended.sum(), (ret * ended).sum(), (length * ended).sum(),
                                      (success * ended).sum()])
        self.global_step += cfg.steps_per_rollout
        return stats

    def train(self) -> tuple[dict[str, float], int]:
        """Spend the earned replay budget on updates: (the updates' mean metrics, number of updates)."""
        cfg = self.cfg
        cost = cfg.batch_size * cfg.batch_length
        sums: dict[str, Tensor] = {}
        count = 0
        while self.budget >= cost:
            metrics = self.agent.train_step(self.replay.sample(cfg.batch_size, cfg.batch_length))
            sums = {k: sums.get(k, 0.0) + v for k, v in metrics.items()}  # new tensors: graph outputs get reused
            self.budget -= cost
            count += 1
        self.updates += count
        if not count:
            return {}, 0
        means = (torch.stack(list(sums.values())).float() / count).tolist()  # the one host sync of the updates
        return dict(zip(sums, means)), count

    def iterate(self) -> dict[str, float]:
        """One collect and its updates; returns scalar metrics for logging."""
        t0 = time.perf_counter()
        stats = self.collect().tolist()
        t1 = time.perf_counter()
        losses, updates = self.train()
        seconds = time.perf_counter() - t1
        self.iteration += 1
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"non-finite {', '.join(bad)} at step {self.global_step} "
                                     f"(iteration {self.iteration})")
        n = stats[0]
        out = {"step": self.global_step, "iteration": self.iteration, "lr": self.cfg.lr, "episodes": n,
               "updates": updates, "total_updates": self.updates,
               "updates_per_s": updates / seconds if updates else 0.0,
               "collect_sps": self.cfg.steps_per_rollout / (t1 - t0), "replay_steps": self.replay.stored_steps}
        if n > 0:
            out |= {"episode_return": stats[1] / n, "episode_length": stats[2] / n, "success": stats[3] / n}
        return out | losses

    def close(self) -> None:
        """Nothing to release (the launcher closes every trainer the same way)."""

    # --- checkpointing ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"agent": self.agent.state_dict(), **{k: getattr(self.agent, k).state_dict() for k in OPTIMIZERS},
                 "replay": self.replay.state_dict(), "global_step": self.global_step, "iteration": self.iteration,
                 "updates": self.updates, "budget": self.budget, "config": dataclasses.asdict(self.cfg),
                 **rng_state(self.device), "latent": self.latent, "obs": self.obs, "reset": self.reset}
        if hasattr(self.env, "state_dict"):
            state["env"] = self.env.state_dict()
        if hasattr(self.env, "seek"):  # a task sequence: where in it this run is
            state["sequence_step"] = self.env.step_count
        return state

    def load_state_dict(self, state: dict[str, Any], restore_envs: bool = True) -> None:
        """Restore a checkpoint. Envs without ``state_dict`` restart their episodes (the latent state and reset
        flags stay fresh to match; the replay marks the restart). ``restore_envs=False`` also keeps the fresh
        envs and this process's random streams."""
        self.agent.load_state_dict(state["agent"])
        for k in OPTIMIZERS:
            getattr(self.agent, k).load_state_dict(state[k])
        self.replay.load_state_dict(state["replay"])
        self.global_step, self.iteration = state["global_step"], state["iteration"]
        self.updates, self.budget = state["updates"], state["budget"]
        if "sequence_step" in state:  # the sequence goes on at the saved step, in fresh episodes
            self._start_episodes(self.env.seek(state["sequence_step"])[0])
        if not restore_envs:
            return
        restore_rng(state, self.device)
        if "env" in state and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(state["env"])
            self.latent = {k: v.to(self.device) for k, v in state["latent"].items()}
            self.obs, self.reset = state["obs"].to(self.device), state["reset"].to(self.device)
