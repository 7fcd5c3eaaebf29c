"""Recurrent PPO: encoder -> memory -> policy and value heads, trained on batched envs on one device.

Read it top to bottom like a CleanRL script: ``PPOConfig`` holds the knobs, ``Agent`` is the network, ``PPO.rollout``
collects ``rollout_len`` steps from ``num_envs`` envs into tensors on the training device, ``PPO.update`` runs the
clipped PPO update. The memory state at the start of each rollout is stored; every minibatch replays whole env columns
(minibatches split by env, never by time) from that state, so recurrent and attention memories train with the same
code. Caches of projections in a memory state (attention keys/values) are recomputed with the current weights
(``Memory.refresh``) before each replay and after each update. Rollouts act in eval mode (``agent.eval()``), updates
train. Shapes: T = rollout_len, N = num_envs, A = number of actions.

Truncated episodes (time limits) are treated as terminal: no bootstrap from the final observation.

Speed: the rollout writes only into preallocated buffers and never waits on the GPU, so with ``cuda_graph`` it is
captured once as a CUDA graph (agent, sampling, env steps, GAE) and replayed; one minibatch step (forward, backward,
clipping, Adam) likewise. Host envs (Procgen, Atari) are never captured (their minibatch step still is): they step in
background threads with their results staged through pinned memory (``envs/threaded.py``), and with ``env_groups=2`` the policy acts for one half
of the envs while the other half steps. Under torchrun each process is one learner with its own envs and DDP
averages gradients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import memory as memories
from agents.allocation import make_allocation
from agents.networks import layer_init, make_decoder, make_encoder
from agents.rng import restore_rng, rng_state
from envs.threaded import Step, make_stepper, on_device

Obs = Tensor | dict[str, Tensor]


@dataclass
class PPOConfig:
    num_envs: int = 256  # N: envs of this learner (the launcher splits its global count across ranks)
    rollout_len: int = 32  # T: steps per env per rollout (also the BPTT length)
    total_steps: int = 2_000_000  # env steps over the whole run, all learners together
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
    recon_coef: float = 0.0  # weight of the observation-reconstruction auxiliary loss (0 = off)
    max_grad_norm: float = 0.5
    norm_adv: bool = True
    encoder: str = "auto"  # auto | mlp | impala | nature
    encoder_hidden: int = 64  # MLP encoder width
    compile: bool = False  # torch.compile the agent's forward
    cuda_graph: bool = False  # replay the minibatch step, and with a batched env on the GPU the rollout, as CUDA graphs
    bf16: bool = False  # bf16 autocast for forward passes (CUDA)
    env_groups: int = 1  # 1 | 2: host envs as two groups (a GroupedVector) that step while the policy acts on the other

    def __post_init__(self):
        positive = ("num_envs", "rollout_len", "total_steps", "num_minibatches", "update_epochs", "encoder_hidden")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"agent.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_envs % self.num_minibatches:
            raise ValueError(f"agent.num_minibatches ({self.num_minibatches}) must divide agent.num_envs "
                             f"({self.num_envs}): minibatches hold whole env columns")
        if self.env_groups not in (1, 2):
            raise ValueError(f"agent.env_groups must be 1 or 2, got {self.env_groups!r}")
        if self.num_envs % self.env_groups:
            raise ValueError(f"agent.env_groups ({self.env_groups}) must divide agent.num_envs ({self.num_envs})")

    @property
    def steps_per_rollout(self) -> int:
        return self.num_envs * self.rollout_len



class Agent(nn.Module):
    def __init__(self, obs_space: gymnasium.Space, num_actions: int, memory_name: str = "lstm",
                 memory_config: dict | None = None, encoder: str = "auto", encoder_hidden: int = 64,
                 reconstruction: bool = False):
        super().__init__()
        self.encoder = make_encoder(obs_space, encoder, encoder_hidden)
        self.memory = memories.make(memory_name, self.encoder.output_size, **(memory_config or {}))
        self.actor = layer_init(nn.Linear(self.memory.output_size, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(self.memory.output_size, 1), std=1.0)
        # Reconstructs each observation from the memory's output at that step (HCAM's auxiliary loss).
        self.decoder = make_decoder(obs_space, self.memory.output_size) if reconstruction else None

    def forward(self, obs: Obs, state: memories.State, reset: Tensor, context: dict[str, Tensor] | None = None,
                with_hidden: bool = False):
        """obs [T, B, ...], reset [T, B] -> logits [T, B, A], value [T, B], next memory state
        (and the memory's output [T, B, H] with ``with_hidden``)."""
        t, b = reset.shape
        flat = _map(lambda x: x.reshape(t * b, *x.shape[2:]), obs)
        features = self.encoder(flat).view(t, b, -1)  # [T, B, F]
        hidden, state = self.memory(features, state, reset, context)  # [T, B, H]
        out = (self.actor(hidden), self.critic(hidden).squeeze(-1), state)
        return out + (hidden,) if with_hidden else out

    def reconstruction_loss(self, hidden: Tensor, obs: Obs) -> Tensor:
        """Mean reconstruction loss of obs [T, B, ...] from the memory's output hidden [T, B, H]."""
        t, b = hidden.shape[:2]
        return self.decoder.loss(hidden.reshape(t * b, -1), _map(lambda x: x.reshape(t * b, *x.shape[2:]), obs))


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
        if cfg.recon_coef > 0 and agent.decoder is None:
            raise ValueError("agent.recon_coef > 0 needs an Agent built with reconstruction=True")
        if not isinstance(env.single_action_space, gymnasium.spaces.Discrete):
            raise ValueError(f"env action space {env.single_action_space} is not supported; accepted: Discrete")
        if cfg.cuda_graph and device.type != "cuda":
            raise ValueError("agent.cuda_graph needs a CUDA device; set agent.cuda_graph=false")
        if cfg.env_groups > 1 and (len(getattr(env, "groups", ())) != cfg.env_groups
                                   or any(on_device(g) for g in env.groups)):
            raise ValueError(f"agent.env_groups={cfg.env_groups} needs host envs (Procgen, Atari) built as a "
                             f"GroupedVector of {cfg.env_groups} groups; batched envs on the device step as one group")
        # One learner per process under torchrun: each steps its own envs; DDP averages the gradients.
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.env, self.agent, self.cfg, self.device = env, agent.to(device), cfg, device
        # A captured update reads the learning rate from a tensor, so annealing reaches the graph.
        lr = torch.tensor(cfg.lr, device=device) if cfg.cuda_graph else cfg.lr
        self.optimizer = torch.optim.Adam(agent.parameters(), lr=lr, eps=1e-5, capturable=cfg.cuda_graph)
        self.forward = torch.compile(agent) if cfg.compile else agent  # acting: no gradients, no DDP
        learner = _data_parallel(agent, device, cfg.cuda_graph) if self.world_size > 1 else agent
        self.train_forward = torch.compile(learner) if cfg.compile else learner
        self.num_iterations = max(1, cfg.total_steps // (cfg.steps_per_rollout * self.world_size))
        self.context_keys = agent.memory.context_keys
        self.global_step = 0
        self.iteration = 0
        obs, info = env.reset(seed=seed)
        # AMA: a memory that reads context["strategy"] gets an allocator that picks one per episode.
        self.allocation = make_allocation(agent.memory, env, info, cfg.num_envs, cfg.rollout_len, device, seed)
        self._start_episodes(obs, info)
        self.buf = self._allocate()
        info_keys = self.context_keys if self.allocation is None else self.allocation.info_keys(self.context_keys)
        self.stepper = make_stepper(env, cfg.env_groups, device, info_keys)
        self.loss_sums = torch.zeros(7, device=device)  # the losses and statistics named in update()
        self.mb_index = torch.zeros(cfg.num_envs // cfg.num_minibatches, dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None  # the captured rollout
        self.update_graph: torch.cuda.CUDAGraph | None = None  # the captured minibatch step

    def _start_episodes(self, obs, info: dict) -> None:
        """Every copy starts an episode at ``obs``: reset flags set, memory state initial. These are our own
        tensors, which rollouts copy into (a captured CUDA graph reads and writes their addresses), so this runs
        before any capture."""
        if self.allocation is not None:
            info = self.allocation.start(info)
        self.next_obs = _map(torch.clone, to_tensor(obs, self.device))
        context = self._context(info)
        self.next_context = None if context is None else {k: v.clone() for k, v in context.items()}
        self.next_reset = torch.ones(self.cfg.num_envs, dtype=torch.bool, device=self.device)
        self.state = self.agent.memory.initial_state(self.cfg.num_envs, self.device)

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
    def _allocate(self) -> dict[str, Any]:
        """Rollout buffers, written in place so the same rollout body can be replayed as a CUDA graph."""
        T, N, dev = self.cfg.rollout_len, self.cfg.num_envs, self.device
        empty = lambda dtype=torch.float32: torch.empty((T, N), dtype=dtype, device=dev)  # noqa: E731
        return {"obs": _map(lambda x: torch.empty((T, *x.shape), dtype=x.dtype, device=dev), self.next_obs),
                "reset": empty(torch.bool), "actions": empty(torch.int64), "logprobs": empty(), "values": empty(),
                "rewards": empty(), "dones": empty(torch.bool), "advantages": empty(), "returns": empty(),
                "context": {k: empty(torch.int64) for k in self.context_keys},
                "start_state": {k: torch.empty_like(v) for k, v in self.state.items()},
                "stats": torch.zeros(4, device=dev)}  # episodes, return sum, length sum, success sum

    def _policy(self, obs: Obs, state, reset: Tensor, context):
        """One step of the agent for n envs (all or a group): obs [n, ...] -> logits [n, A], value [n], next state."""
        with self._autocast():
            logits, value, state = self.forward(_map(lambda x: x.unsqueeze(0), obs), state, reset.unsqueeze(0),
                                                None if context is None else
                                                {k: v.unsqueeze(0) for k, v in context.items()})
        return logits[0], value[0].float(), state

    @torch.no_grad()
    def _rollout_body(self) -> None:
        """Collect T steps into ``self.buf``; every write lands in preallocated tensors (no host syncs).

        The policy acts group by group (``stepper.columns``): while it acts for one group, the others' host envs
        step in the background. Each env column sees the same steps as with one group, in the same order."""
        cfg, buf, stepper = self.cfg, self.buf, self.stepper
        for k, v in self.state.items():
            buf["start_state"][k].copy_(v)
        buf["stats"].zero_()
        states = [{k: v[cols] for k, v in self.state.items()} for cols in stepper.columns]
        for t in range(cfg.rollout_len):
            for g, cols in enumerate(stepper.columns):
                if t > 0:
                    self._record(t - 1, cols, stepper.receive(g))
                obs, reset = _map(lambda x: x[cols], self.next_obs), self.next_reset[cols]
                context = None if self.next_context is None else {k: v[cols] for k, v in self.next_context.items()}
                _map_set(buf["obs"], (t, cols), obs)
                buf["reset"][t, cols] = reset
                for k in self.context_keys:
                    buf["context"][k][t, cols] = context[k]
                logits, value, states[g] = self._policy(obs, states[g], reset, context)
                action = sample(logits)
                buf["actions"][t, cols], buf["logprobs"][t, cols] = action, log_prob(logits, action)
                buf["values"][t, cols] = value
                stepper.send(g, action)
        for g, cols in enumerate(stepper.columns):
            self._record(cfg.rollout_len - 1, cols, stepper.receive(g))
            for k, v in states[g].items():
                self.state[k][cols] = v
        _, next_value, _ = self._policy(self.next_obs, self.state, self.next_reset, self.next_context)
        buf["advantages"].copy_(gae(buf["rewards"], buf["values"], buf["dones"], next_value, cfg.gamma,
                                    cfg.gae_lambda))
        torch.add(buf["advantages"], buf["values"], out=buf["returns"])

    def _record(self, t: int, cols: slice, step: Step) -> None:
        """Write the env step that followed step t of the columns ``cols``: its rewards and dones into the rollout,
        its observations into the next step's inputs, finished episodes into the statistics."""
        buf = self.buf
        buf["rewards"][t, cols], buf["dones"][t, cols] = step.reward, step.done
        _map_copy(_map(lambda x: x[cols], self.next_obs), step.obs)
        self.next_reset[cols] = step.done
        context = step.context if self.allocation is None else self.allocation.record(t, cols, step)
        for k in self.context_keys:
            self.next_context[k][cols] = context[k]
        if step.episode is not None:  # rows: ended, return, length, success -> sums over ended episodes
            buf["stats"] += (step.episode * step.episode[0]).sum(-1)

    def rollout(self) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """Run the rollout body: eagerly, or as a replay of its CUDA graph once one is captured."""
        self.agent.eval()  # act as when evaluating (Memo: fixed segment lengths, as its paper acts); updates train
        if self.graph is not None:
            self.graph.replay()
        elif self.cfg.cuda_graph and on_device(self.env) and self.iteration >= 2:  # after warm-up rollouts
            self.graph = capture_cuda_graph(self._rollout_body)
            self.graph.replay()
        else:
            self._rollout_body()
        self.agent.train()
        self.global_step += self.cfg.steps_per_rollout * self.world_size
        stats = self.buf["stats"]
        return self.buf, {"episodes": stats[0], "return_sum": stats[1], "length_sum": stats[2],
                          "success_sum": stats[3]}

    # --- update -------------------------------------------------------------------------------------------------
    def _minibatch_step(self, idx: Tensor) -> None:
        """One clipped-PPO gradient step on the env columns ``idx [n_mb]`` of ``self.buf``; adds to the loss sums."""
        cfg, batch = self.cfg, self.buf
        mb = lambda x: x[:, idx]  # noqa: E731  [T, N, ...] -> [T, n_mb, ...]
        context = {k: mb(v) for k, v in batch["context"].items()} or None
        obs = _map(mb, batch["obs"])
        with self._autocast():
            # The stored start state's caches were made with the rollout's weights: recompute them with the current.
            start = self.agent.memory.refresh(memories.index_state(batch["start_state"], idx))
            logits, new_value, _, hidden = self.train_forward(obs, start,
                                                        mb(batch["reset"]), context, with_hidden=True)
        new_value = new_value.float()
        new_logp = log_prob(logits, mb(batch["actions"]))
        log_ratio = new_logp - mb(batch["logprobs"])
        ratio = log_ratio.exp()
        adv = mb(batch["advantages"])
        if cfg.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
        returns, old_values = mb(batch["returns"]), mb(batch["values"])
        if cfg.clip_vloss:
            clipped = old_values + (new_value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
            v_loss = 0.5 * torch.max((new_value - returns) ** 2, (clipped - returns) ** 2).mean()
        else:
            v_loss = 0.5 * ((new_value - returns) ** 2).mean()
        ent = entropy(logits).mean()
        loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
        recon = (self.agent.reconstruction_loss(hidden.float(), obs) if cfg.recon_coef > 0
                 else torch.zeros((), device=self.device))
        loss = loss + cfg.recon_coef * recon

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(self.agent.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clip_frac = ((ratio - 1).abs() > cfg.clip_coef).float().mean()
            self.loss_sums += torch.stack([pg_loss.detach(), v_loss.detach(), ent.detach(), approx_kl, clip_frac,
                                           grad_norm.float(), recon.detach()])

    def update(self) -> dict[str, Tensor]:
        """``update_epochs`` passes over the rollout in minibatches of whole env columns; mean loss statistics."""
        cfg = self.cfg
        n_mb = cfg.num_envs // cfg.num_minibatches
        self.loss_sums.zero_()
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(cfg.num_envs, device=self.device)
            for start in range(0, cfg.num_envs, n_mb):
                idx = perm[start:start + n_mb]  # whole env columns
                if self.update_graph is None and not (cfg.cuda_graph and self.iteration >= 2):
                    self._minibatch_step(idx)
                    continue
                self.mb_index.copy_(idx)
                if self.update_graph is None:
                    self.update_graph = capture_cuda_graph(lambda: self._minibatch_step(self.mb_index))
                self.update_graph.replay()
        with torch.no_grad(), self._autocast():  # the next rollout goes on from caches made with the new weights
            fresh = self.agent.memory.refresh(self.state)
        for k, v in fresh.items():
            if v is not self.state[k]:  # in place: a captured rollout reads these tensors
                self.state[k].copy_(v)
        means = self.loss_sums / (cfg.update_epochs * cfg.num_minibatches)
        names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac", "grad_norm", "recon_loss")
        return dict(zip(names, means))

    def iterate(self) -> dict[str, float]:
        """One rollout and one update; returns scalar metrics for logging."""
        cfg = self.cfg
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / self.num_iterations
            self._set_lr(cfg.lr * max(frac, 0.0))
        _, ep = self.rollout()
        losses = self.update()
        self.iteration += 1
        if self.world_size > 1:  # episode sums over all ranks, losses averaged
            flat = torch.stack([*ep.values(), *(v / self.world_size for v in losses.values())])
            dist.all_reduce(flat)
            ep, losses = dict(zip(ep, flat[:len(ep)])), dict(zip(losses, flat[len(ep):]))
        values = {k: v.item() for k, v in {**ep, **losses}.items()}  # the one host sync per iteration
        if not all(math.isfinite(v) for v in values.values()):
            bad = [k for k, v in values.items() if not math.isfinite(v)]
            raise FloatingPointError(f"non-finite {', '.join(bad)} at step {self.global_step} "
                                     f"(iteration {self.iteration})")
        n = values.pop("episodes")
        out = {"step": self.global_step, "iteration": self.iteration, "lr": float(self.optimizer.param_groups[0]["lr"]),
               "episodes": n}
        if n > 0:
            out |= {"episode_return": values["return_sum"] / n, "episode_length": values["length_sum"] / n,
                    "success": values["success_sum"] / n}
        out |= {k: values[k] for k in losses}
        if self.allocation is not None:  # learns from this rollout's ended episodes, before the next rollout
            out |= self.allocation.learn()
        return out

    def _set_lr(self, lr: float) -> None:
        group = self.optimizer.param_groups[0]
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr

    # --- checkpointing ------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release the CUDA graphs and the env-stepping threads. Graphs that hold NCCL all-reduces must go before
        the process group is destroyed, or destroying it hangs (PyTorch issue 115388)."""
        for graph in (self.graph, self.update_graph):
            if graph is not None:
                graph.reset()
        self.graph = self.update_graph = None
        self.stepper.close()

    def state_dict(self) -> dict[str, Any]:
        state = {"agent": self.agent.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "global_step": self.global_step, "iteration": self.iteration,
                 "config": dataclasses.asdict(self.cfg), **rng_state(self.device),
                 "memory_state": self.state, "next_obs": self.next_obs, "next_reset": self.next_reset,
                 "next_context": self.next_context}
        if on_device(self.env):
            state["env"] = self.env.state_dict()
        if self.allocation is not None:
            state["allocation"] = self.allocation.state_dict()
        if hasattr(self.env, "seek"):  # a task sequence: where in it this run is
            state["sequence_step"] = self.env.step_count
        return state

    def load_state_dict(self, state: dict[str, Any], restore_envs: bool = True) -> None:
        """Restore a checkpoint. ``restore_envs=False`` keeps this learner's freshly reset envs and its own random
        streams: for ranks > 0 under torchrun, whose envs the rank-0 checkpoint does not hold."""
        self.agent.load_state_dict(state["agent"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.global_step, self.iteration = state["global_step"], state["iteration"]
        if self.allocation is not None:
            self.allocation.load_state_dict(state["allocation"])
        if "sequence_step" in state:  # every rank's sequence goes on at the saved step, in fresh episodes
            self._start_episodes(*self.env.seek(state["sequence_step"]))
        if not restore_envs:
            return
        restore_rng(state, self.device)
        if "env" in state and hasattr(self.env, "load_state_dict"):
            # Batched envs restore mid-episode; others restart their episodes (the memory state is reset to match).
            self.env.load_state_dict(state["env"])
            for k, v in state["memory_state"].items():
                self.state[k].copy_(v)
            _map_copy(self.next_obs, to_tensor(state["next_obs"], self.device))
            self.next_reset.copy_(state["next_reset"])
            if self.context_keys:
                _map_copy(self.next_context, to_tensor(state["next_context"], self.device))
            if self.allocation is not None:
                self.allocation.load_episodes(state["allocation"])


def _map_copy(dst: Obs, src: Obs) -> None:
    if isinstance(dst, dict):
        for k in dst:
            dst[k].copy_(src[k])
    else:
        dst.copy_(src)


def _data_parallel(agent: Agent, device: torch.device, cuda_graph: bool) -> DistributedDataParallel:
    """DDP around ``agent``. For a captured update (backward and NCCL all-reduce in one CUDA graph) PyTorch asks
    that DDP be built on a side stream and run at least 11 eager backward passes first (here: two iterations'
    minibatches) and that NCCL's async error handling be off (``distributed.setup`` does that)."""
    ids = [device.index] if device.type == "cuda" else None
    if not cuda_graph:
        return DistributedDataParallel(agent, device_ids=ids)
    with torch.cuda.stream(torch.cuda.Stream(device)):
        return DistributedDataParallel(agent, device_ids=ids)


def capture_cuda_graph(fn) -> torch.cuda.CUDAGraph:
    """Record ``fn``'s GPU work once; replaying the graph reruns it with one launch instead of thousands."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def _map_set(buf: Obs, index, value: Obs) -> None:
    if isinstance(buf, dict):
        for k in buf:
            buf[k][index] = value[k]
    else:
        buf[index] = value


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
