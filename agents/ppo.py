"""Recurrent PPO: encoder -> memory -> policy and value heads, trained on batched envs on one device.

Read it top to bottom like a CleanRL script: ``PPOConfig`` holds the knobs, ``Agent`` is the network, ``PPO.rollout``
collects ``rollout_len`` steps from ``num_envs`` envs into tensors on the training device, ``PPO.update`` runs the
clipped PPO update. The memory state at the start of each rollout is stored; every minibatch replays whole env columns
(minibatches split by env, never by time) from that state, so recurrent and attention memories train with the same
code. Shapes: T = rollout_len, N = num_envs, A = number of actions.

Truncated episodes (time limits) are treated as terminal: no bootstrap from the final observation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import Tensor, nn

import memory as memories
from agents.networks import layer_init, make_encoder

Obs = Tensor | dict[str, Tensor]


@dataclass
class PPOConfig:
    num_envs: int = 256
    rollout_len: int = 32  # T: steps per env per rollout (also the BPTT length)
    total_steps: int = 2_000_000  # env steps over the whole run
    lr: float = 2.5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 4  # each holds num_envs / num_minibatches whole env columns
    update_epochs: int = 4
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    encoder: str = "auto"  # auto | mlp | impala | nature
    encoder_hidden: int = 64  # MLP encoder width
    compile: bool = False  # torch.compile the agent's forward
    bf16: bool = False  # bf16 autocast for forward passes (CUDA)

    def __post_init__(self):
        positive = ("num_envs", "rollout_len", "total_steps", "num_minibatches", "update_epochs", "encoder_hidden")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_envs % self.num_minibatches:
            raise ValueError(f"agent.num_minibatches ({self.num_minibatches}) must divide agent.num_envs "
                             f"({self.num_envs}): minibatches hold whole env columns")

    @property
    def steps_per_rollout(self) -> int:
        return self.num_envs * self.rollout_len

    @property
    def num_iterations(self) -> int:
        return max(1, self.total_steps // self.steps_per_rollout)


class Agent(nn.Module):
    def __init__(self, obs_space: gymnasium.Space, num_actions: int, memory_name: str = "lstm",
                 memory_config: dict | None = None, encoder: str = "auto", encoder_hidden: int = 64):
        super().__init__()
        self.encoder = make_encoder(obs_space, encoder, encoder_hidden)
        self.memory = memories.make(memory_name, self.encoder.output_size, **(memory_config or {}))
        self.actor = layer_init(nn.Linear(self.memory.output_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(self.memory.output_size, 1), std=1.0)

    def forward(self, obs: Obs, state: memories.State, reset: Tensor, context: dict[str, Tensor] | None = None):
        """obs [T, B, ...], reset [T, B] -> logits [T, B, A], value [T, B], next memory state."""
        t, b = reset.shape
        flat = _map(lambda x: x.reshape(t * b, *x.shape[2:]), obs)
        features = self.encoder(flat).view(t, b, -1)  # [T, B, F]
        hidden, state = self.memory(features, state, reset, context)  # [T, B, H]
        return self.actor(hidden), self.critic(hidden).squeeze(-1), state


# --- categorical policy helpers (no torch.distributions: fewer kernels and no validation in the hot loop) ----------

def sample(logits: Tensor) -> Tensor:
    """Gumbel-max sampling: argmax(logits + Gumbel noise) is a draw from softmax(logits)."""
    u = torch.rand_like(logits, dtype=torch.float32).clamp_(1e-20, 1.0)
    return torch.argmax(logits.float() - torch.log(-torch.log(u)), dim=-1)


def log_prob(logits: Tensor, action: Tensor) -> Tensor:
    return torch.log_softmax(logits.float(), -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)


def entropy(logits: Tensor) -> Tensor:
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


def _map(fn, obs: Obs) -> Obs:
    return {k: fn(v) for k, v in obs.items()} if isinstance(obs, dict) else fn(obs)


def to_tensor(x, device) -> Tensor | dict:
    """Env outputs (numpy or torch, or dicts of them) as tensors on ``device``."""
    if isinstance(x, dict):
        return {k: to_tensor(v, device) for k, v in x.items()}
    return torch.as_tensor(x).to(device, non_blocking=True)


class PPO:
    """Trains ``agent`` on the vector env ``env``: call ``iterate()`` once per rollout + update."""

    def __init__(self, env: gymnasium.vector.VectorEnv, agent: Agent, cfg: PPOConfig, device: torch.device,
                 seed: int = 0):
        if env.num_envs != cfg.num_envs:
            raise ValueError(f"agent.num_envs is {cfg.num_envs} but the env has {env.num_envs} copies")
        if not isinstance(env.single_action_space, gymnasium.spaces.Discrete):
            raise ValueError(f"env action space {env.single_action_space} is not supported; accepted: Discrete")
        self.env, self.agent, self.cfg, self.device = env, agent.to(device), cfg, device
        self.optimizer = torch.optim.Adam(agent.parameters(), lr=cfg.lr, eps=1e-5)
        self.forward = torch.compile(agent) if cfg.compile else agent
        self.context_keys = agent.memory.context_keys
        self.global_step = 0
        self.iteration = 0
        self.seed = seed
        obs, info = env.reset(seed=seed)
        self.next_obs = to_tensor(obs, device)
        self.next_context = self._context(info)
        self.next_reset = torch.ones(cfg.num_envs, dtype=torch.bool, device=device)
        self.state = agent.memory.initial_state(cfg.num_envs, device)

    def _context(self, info: dict) -> dict[str, Tensor] | None:
        if not self.context_keys:
            return None
        missing = [k for k in self.context_keys if k not in info]
        if missing:
            raise ValueError(f"memory needs info[{missing[0]!r}] from the env, which does not provide it")
        return {k: to_tensor(info[k], self.device).long() for k in self.context_keys}

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.bf16)

    # --- rollout ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        cfg, T, N, dev = self.cfg, self.cfg.rollout_len, self.cfg.num_envs, self.device
        obs_buf = _map(lambda x: torch.empty((T, *x.shape), dtype=x.dtype, device=dev), self.next_obs)
        reset_buf = torch.empty((T, N), dtype=torch.bool, device=dev)
        act_buf = torch.empty((T, N), dtype=torch.int64, device=dev)
        logp_buf, val_buf, rew_buf = (torch.empty((T, N), device=dev) for _ in range(3))
        done_buf = torch.empty((T, N), dtype=torch.bool, device=dev)
        ctx_buf = {k: torch.empty((T, N), dtype=torch.int64, device=dev) for k in self.context_keys}
        stats = torch.zeros(4, device=dev)  # episodes, return sum, length sum, success sum
        start_state = self.state

        for t in range(T):
            _map_set(obs_buf, t, self.next_obs)
            reset_buf[t] = self.next_reset
            ctx = self.next_context
            for k in self.context_keys:
                ctx_buf[k][t] = ctx[k]
            with self._autocast():
                logits, value, self.state = self.forward(
                    _map(lambda x: x.unsqueeze(0), self.next_obs), self.state, self.next_reset.unsqueeze(0),
                    None if ctx is None else {k: v.unsqueeze(0) for k, v in ctx.items()})
            action = sample(logits[0])
            act_buf[t], logp_buf[t], val_buf[t] = action, log_prob(logits[0], action), value[0].float()

            obs, reward, terminated, truncated, info = self.env.step(action)
            done = to_tensor(terminated, dev) | to_tensor(truncated, dev)
            rew_buf[t] = to_tensor(reward, dev).float()
            done_buf[t] = done
            self.next_obs, self.next_reset = to_tensor(obs, dev), done
            self.next_context = self._context(info)
            if "episode" in info:
                ended = to_tensor(info["_episode"], dev).float()
                success = to_tensor(info.get("success", torch.zeros(N)), dev).float()
                stats += torch.stack([ended.sum(), (to_tensor(info["episode"]["r"], dev).float() * ended).sum(),
                                      (to_tensor(info["episode"]["l"], dev).float() * ended).sum(),
                                      (success * ended).sum()])

        with self._autocast():
            _, next_value, _ = self.forward(_map(lambda x: x.unsqueeze(0), self.next_obs), self.state,
                                            self.next_reset.unsqueeze(0),
                                            None if self.next_context is None else
                                            {k: v.unsqueeze(0) for k, v in self.next_context.items()})
        advantages = gae(rew_buf, val_buf, done_buf, next_value[0].float(), cfg.gamma, cfg.gae_lambda)
        self.state = memories.detach_state(self.state)
        self.global_step += T * N
        batch = {"obs": obs_buf, "reset": reset_buf, "actions": act_buf, "logprobs": logp_buf, "values": val_buf,
                 "advantages": advantages, "returns": advantages + val_buf, "context": ctx_buf,
                 "start_state": start_state}
        return batch, {"episodes": stats[0], "return_sum": stats[1], "length_sum": stats[2], "success_sum": stats[3]}

    # --- update -------------------------------------------------------------------------------------------------
    def update(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        cfg = self.cfg
        n_mb = cfg.num_envs // cfg.num_minibatches
        sums = torch.zeros(6, device=self.device)  # pg loss, v loss, entropy, approx kl, clip frac, grad norm
        count = 0
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(cfg.num_envs, device=self.device)
            for start in range(0, cfg.num_envs, n_mb):
                idx = perm[start:start + n_mb]  # whole env columns
                mb = lambda x: x[:, idx]  # noqa: E731  [T, N, ...] -> [T, n_mb, ...]
                context = {k: mb(v) for k, v in batch["context"].items()} or None
                with self._autocast():
                    logits, new_value, _ = self.forward(_map(mb, batch["obs"]),
                                                        memories.index_state(batch["start_state"], idx),
                                                        mb(batch["reset"]), context)
                new_value = new_value.float()
                new_logp = log_prob(logits, mb(batch["actions"]))
                log_ratio = new_logp - mb(batch["logprobs"])
                ratio = log_ratio.exp()
                adv = mb(batch["advantages"])
                if cfg.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio,
                                    -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                returns, old_values = mb(batch["returns"]), mb(batch["values"])
                if cfg.clip_vloss:
                    clipped = old_values + (new_value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_loss = 0.5 * torch.max((new_value - returns) ** 2, (clipped - returns) ** 2).mean()
                else:
                    v_loss = 0.5 * ((new_value - returns) ** 2).mean()
                ent = entropy(logits).mean()
                loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss

                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clip_frac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
                    sums += torch.stack([pg_loss.detach(), v_loss.detach(), ent.detach(), approx_kl, clip_frac,
                                         grad_norm.float()])
                count += 1
        means = sums / count
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "grad_norm")
        return dict(zip(names, means))

    def iterate(self) -> dict[str, float]:
        """One rollout and one update; returns scalar metrics for logging."""
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / cfg.num_iterations
            self.optimizer.param_groups[0]["lr"] = cfg.lr * max(frac, 0.0)
        batch, ep = self.rollout()
        losses = self.update(batch)
        self.iteration += 1
        values = {k: v.item() for k, v in {**ep, **losses}.items()}  # the one host sync per iteration
        if not all(math.isfinite(v) for v in values.values()):
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            raise FloatingPointError(f"non-finite {', '.join(bad)} at step {self.global_step} "
                                     f"(iteration {self.iteration})")
        n = values.pop("episodes")
        out = {"step": self.global_step, "iteration": self.iteration, "lr": self.optimizer.param_groups[0]["lr"],
               "episodes": n}
        if n > 0:
            out |= {"episode_return": values["return_sum"] / n, "episode_length": values["length_sum"] / n,
                    "success": values["success_sum"] / n}
        out |= {k: values[k] for k in losses}
        return out

    # --- checkpointing ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {"agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "global_step": self.global_step, "iteration": self.iteration,
                 "config": dataclasses.asdict(self.cfg), "torch_rng": torch.get_rng_state(),
                 "memory_state": self.state, "next_obs": self.next_obs, "next_reset": self.next_reset,
                 "next_context": self.next_context}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if hasattr(self.env, "state_dict"):
            state["env"] = self.env.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step, self.iteration = state["global_step"], state["iteration"]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if "env" in state and hasattr(self.env, "load_state_dict"):
            # Batched envs restore mid-episode; others restart their episodes (the memory state is reset to match).
            self.env.load_state_dict(state["env"])
            self.state = memories.state_to(state["memory_state"], self.device)
            self.next_obs = to_tensor(state["next_obs"], self.device)
            self.next_reset = state["next_reset"].to(self.device)
            self.next_context = state["next_context"] and to_tensor(state["next_context"], self.device)


def _map_set(buf: Obs, t: int, value: Obs) -> None:
    if isinstance(buf, dict):
        for k in buf:
            buf[k][t] = value[k]
    else:
        buf[t] = value


def gae(rewards: Tensor, values: Tensor, dones: Tensor, next_value: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates [T, N]; ``dones[t]`` means the episode ended after the action at step t."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        nonterminal = 1.0 - dones[t].float()
        next_v = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * next_v * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        advantages[t] = last
    return advantages


def seed_everything(seed: int) -> None:
    np.random.seed(seed)
    torch.manual_seed(seed)
