"""The DreamerV3 agent: its config, acting, and one training step on a replay batch.

A replay entry is one transition of one env: ``obs`` (what the agent saw), ``action`` (what it did), ``reward`` and
``terminated`` (what followed), ``reset`` (``obs`` starts an episode). ``replay_spec`` gives the matching spec for
``memory.replay.make_replay``. Shapes: N envs, B batch rows, T steps per row, H imagination horizon.
``agents.dreamer.trainer.Trainer`` collects from a vector env into a replay and calls ``train_step``.

Left out of the 2023 recipe: carrying the latent state across replay batches (every sampled sequence starts from
the initial state), continuous actions, dict observations, mixed precision, and the learned initial state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium
import numpy as np
import torch
from torch import Tensor, nn

from agents.dreamer.behaviour import Behaviour
from agents.dreamer.rssm import State
from agents.dreamer.world_model import WorldModel
from agents.ppo import capture_cuda_graph
from memory.replay import KINDS, SPLITS

# size -> (deter, units, layers, CNN depth); "tiny" is for tests and CPU smoke runs, "12m" for the speed comparison
# with the official code's size12m preset (about 11M parameters at 64x64 RGB with classes=16); neither is the paper's.
SIZES = {"tiny": (64, 64, 1, 8), "12m": (1024, 256, 2, 16), "S": (512, 512, 2, 32), "M": (1024, 640, 3, 48),
         "L": (2048, 768, 4, 64), "XL": (4096, 1024, 5, 96)}


@dataclass
class DreamerConfig:
    """The agent's and its trainer's knobs: one flat config, as the launcher's ``agent`` group."""

    size: str = "S"
    memory: str = "gru"  # any registered memory without context keys
    memory_config: dict = field(default_factory=dict)
    stoch: int = 32  # categorical latents
    classes: int = 32  # classes per latent
    batch_size: int = 16
    batch_length: int = 64
    horizon: int = 15
    gamma: float = 0.997
    lam: float = 0.95
    entropy: float = 3e-4
    slow_critic_rate: float = 0.02
    return_decay: float = 0.99
    dyn_scale: float = 0.5
    rep_scale: float = 0.1
    free_bits: float = 1.0
    lr: float = 1e-4  # the world model's; the launcher's experiments set ``agent.lr`` for every agent
    model_eps: float = 1e-8
    model_clip: float = 1000.0
    ac_lr: float = 3e-5
    ac_eps: float = 1e-5
    ac_clip: float = 100.0
    # Trainer: an iteration collects collect_steps from each of num_envs envs, then trains at train_ratio.
    num_envs: int = 16
    total_steps: int = 1_000_000  # env steps over the whole run
    collect_steps: int = 64
    train_ratio: float = 64.0  # replayed steps (batch_size * batch_length per update) per env step
    replay: str = "fifo"  # fifo | reservoir | wmar (memory/replay.py)
    replay_capacity: int = 1_000_000  # env steps, all buffers together
    chunk_length: int = 512  # replay storage unit in steps per env (WMAR's); sampled rows are cut from one chunk
    wmar_split: str = "buffer"  # wmar only: a batch from one buffer (WMAR) or half from each
    cuda_graph: bool = False  # replay each update (world model + actor-critic) as one CUDA graph after warm-up

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(f"agent.size: unknown size {self.size!r}; accepted: {', '.join(SIZES)}")
        positive = ("stoch", "classes", "batch_size", "batch_length", "horizon", "num_envs", "total_steps",
                    "collect_steps", "replay_capacity", "chunk_length")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.train_ratio > 0:
            raise ValueError(f"agent.train_ratio must be positive, got {self.train_ratio!r}")
        if self.replay not in KINDS:
            raise ValueError(f"agent.replay: unknown replay {self.replay!r}; accepted: {', '.join(KINDS)}")
        if self.wmar_split not in SPLITS:
            raise ValueError(f"agent.wmar_split: got {self.wmar_split!r}; accepted: {', '.join(SPLITS)}")
        if self.chunk_length < self.batch_length:
            raise ValueError(f"agent.chunk_length ({self.chunk_length}) must be >= agent.batch_length "
                             f"({self.batch_length}): sampled rows are cut from one chunk")
        buffers = 2 if self.replay == "wmar" else 1
        if self.replay_capacity < buffers * self.chunk_length:
            raise ValueError(f"agent.replay_capacity ({self.replay_capacity}) must hold one chunk per buffer: "
                             f">= {buffers * self.chunk_length} for a {self.replay} replay")

    @property
    def steps_per_rollout(self) -> int:
        """Env steps collected per iteration (the launcher's name for an iteration's batch)."""
        return self.num_envs * self.collect_steps


FIELDS = ("obs", "action", "reward", "terminated", "reset")


def replay_spec(obs_space: gymnasium.spaces.Box) -> dict:
    """The replay spec of Dreamer transitions for observations of ``obs_space``."""
    return {"obs": (obs_space.shape, obs_space.dtype), "action": ((), np.int64), "reward": ((), np.float32),
            "terminated": ((), np.bool_), "reset": ((), np.bool_)}


class Agent(nn.Module):
    def __init__(self, obs_space: gymnasium.Space, action_space: gymnasium.Space, cfg: DreamerConfig | None = None):
        super().__init__()
        if not isinstance(action_space, gymnasium.spaces.Discrete):
            raise ValueError(f"env action space {action_space} is not supported by dreamer; accepted: Discrete")
        self.cfg = cfg = cfg or DreamerConfig()
        self.num_actions = int(action_space.n)
        deter, units, layers, depth = SIZES[cfg.size]
        self.world_model = WorldModel(obs_space, self.num_actions, deter, units, layers, depth, cfg.stoch,
                                      cfg.classes, cfg.memory, cfg.memory_config, cfg.dyn_scale, cfg.rep_scale,
                                      cfg.free_bits)
        self.behaviour = Behaviour(self.world_model.rssm.feature_size, self.num_actions, units, layers, cfg.gamma,
                                   cfg.lam, cfg.entropy, cfg.slow_critic_rate, return_decay=cfg.return_decay)
        graph = cfg.cuda_graph
        self.model_opt = torch.optim.Adam(self.world_model.parameters(), cfg.lr, eps=cfg.model_eps, capturable=graph)
        self.actor_opt = torch.optim.Adam(self.behaviour.actor.parameters(), cfg.ac_lr, eps=cfg.ac_eps,
                                          capturable=graph)
        self.critic_opt = torch.optim.Adam(self.behaviour.critic.parameters(), cfg.ac_lr, eps=cfg.ac_eps,
                                           capturable=graph)
        # cuda_graph: the batch is copied into these tensors, which the captured update reads
        self.static_batch: dict[str, Tensor] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graph_outputs: dict[str, Tensor] = {}
        self.eager_updates = 0

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def initial_state(self, batch_size: int) -> State:
        return self.world_model.rssm.initial_state(batch_size, self.device)

    @torch.no_grad()
    def act(self, obs: Tensor, state: State, reset: Tensor, greedy: bool = False) -> tuple[Tensor, State]:
        """obs [N, ...], reset [N] (obs starts an episode) -> action [N] (int64), next state."""
        obs = torch.as_tensor(obs, device=self.device)
        reset = torch.as_tensor(reset, device=self.device).bool()
        state, _, _ = self.world_model.rssm.obs_step(state, self.world_model.encoder(obs), reset)
        action = self.behaviour.policy(self.world_model.rssm.features(state), greedy)
        state["action"] = action
        return action.argmax(-1), state

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One world-model and one actor-critic update on a replay batch field -> [B, T, ...]; metrics as 0-d
        tensors on the device. With ``cuda_graph``, after three eager updates (kernels, allocator and Adam's state
        warm up) the update is captured once and each later call copies the batch in and replays it."""
        if not self.cfg.cuda_graph:
            return self.update(batch)
        if self.static_batch is None:
            self.static_batch = {k: batch[k].to(self.device).clone() for k in FIELDS}
        else:
            for k in FIELDS:
                self.static_batch[k].copy_(batch[k], non_blocking=True)
        if self.graph is None and self.eager_updates < 3:
            self.eager_updates += 1
            return self.update(self.static_batch)
        if self.graph is None:
            self.graph = capture_cuda_graph(lambda: self.graph_outputs.update(self.update(self.static_batch)))
        self.graph.replay()
        return dict(self.graph_outputs)  # overwritten by the next replay: callers add them up, never keep them

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        cfg, wm = self.cfg, self.world_model
        seq = {k: batch[k].to(self.device).transpose(0, 1) for k in FIELDS}
        t, b = seq["reset"].shape
        action = nn.functional.one_hot(seq["action"].long(), self.num_actions).float()  # [T, B, A]
        model_loss, metrics, states = wm.loss(seq["obs"], action, seq["reward"].float(), seq["terminated"],
                                              seq["reset"].bool(), self.initial_state(b))
        self.model_opt.zero_grad(set_to_none=True)
        model_loss.backward()
        metrics["model_grad_norm"] = nn.utils.clip_grad_norm_(wm.parameters(), cfg.model_clip)

        # Imagine from every posterior state of the batch, with the world model as it was for its loss.
        start = {k: v.reshape(t * b, *v.shape[2:]) for k, v in states.items()}
        with torch.no_grad():
            feat, imag_action = wm.rssm.imagine(start, self.behaviour.policy, cfg.horizon)  # [H+1, N, F], [H, N, A]
            reward, cont = wm.reward(feat[:-1], imag_action), wm.cont(feat[:-1], imag_action)
        actor_loss, critic_loss, ac_metrics = self.behaviour.loss(feat, imag_action, reward, cont)
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (actor_loss + critic_loss).backward()
        metrics["actor_grad_norm"] = nn.utils.clip_grad_norm_(self.behaviour.actor.parameters(), cfg.ac_clip)
        metrics["critic_grad_norm"] = nn.utils.clip_grad_norm_(self.behaviour.critic.parameters(), cfg.ac_clip)
        self.model_opt.step()
        self.actor_opt.step()
        self.critic_opt.step()
        self.behaviour.update_slow_critic()
        metrics |= ac_metrics | {"model_loss": model_loss, "actor_loss": actor_loss, "critic_loss": critic_loss}
        return {k: v.detach() for k, v in metrics.items()}  # 0-d tensors: no host sync per update

