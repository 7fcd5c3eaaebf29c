"""The RSSM of DreamerV3 with a pluggable ``Memory`` as its deterministic path.

Each step feeds ``[z_{t-1}, a_{t-1}]`` (zeroed where an episode starts) through a dense layer into the memory, whose
output is the deterministic state ``h_t``. The prior over the stochastic state ``z_t`` (32 categoricals x 32 classes,
1% unimix) reads ``h_t`` alone; the posterior reads ``h_t`` and the embedded observation. The memory is stepped with
the contract's reset flags, so any registered memory plugs in as it does in PPO.

The RSSM state is a flat dict of batch-first tensors: ``deter [B, D]`` (the memory's last output), ``stoch [B, S*C]``
(one-hot latents), ``action [B, A]`` (the last action, one-hot) and the memory's own state under ``memory.<key>``.

Memory state in imagination: ``observe`` records the whole RSSM state, memory state included, after every step, and
each imagined trajectory starts from the recorded state of its start step. A non-GRU memory therefore imagines with
its full real context (an LSTM's cell, a transformer's window of past inputs) and then appends imagined inputs to it
with no resets. Start states are detached: behaviour losses never reach the world model.

Deviations from DreamerV3: the deterministic path is the registry's memory (a plain ``GRUCell`` for ``gru``, not the
LayerNorm GRU of the paper); the initial state is the memory's own (zeros for recurrent cells) with zero latent and
action instead of a learned initial state.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import Tensor, nn

import memory as memories
from agents.dreamer.distributions import UNIMIX, sample_one_hot, unimix_logits

State = dict[str, Tensor]
PREFIX = "memory."


def mlp(in_size: int, units: int, layers: int) -> nn.Sequential:
    """``layers`` x (Linear, LayerNorm, SiLU); the norm makes a bias redundant."""
    blocks, size = [], in_size
    for _ in range(layers):
        blocks += [nn.Linear(size, units, bias=False), nn.LayerNorm(units), nn.SiLU()]
        size = units
    return nn.Sequential(*blocks)


class RSSM(nn.Module):
    def __init__(self, embed_size: int, num_actions: int, deter: int = 512, units: int = 512, stoch: int = 32,
                 classes: int = 32, memory_name: str = "gru", memory_config: dict | None = None,
                 unimix: float = UNIMIX):
        super().__init__()
        self.stoch, self.classes, self.num_actions, self.unimix = stoch, classes, num_actions, unimix
        self.img_in = mlp(stoch * classes + num_actions, units, 1)
        config = dict(memory_config or {})
        # The recurrent memories take their width from the model size unless the config sets it.
        if memory_name in memories.REGISTRY and "hidden_size" in _parameters(memory_name):
            config.setdefault("hidden_size", deter)
        self.memory = memories.make(memory_name, units, **config)
        if self.memory.context_keys:
            raise ValueError(f"memory.name: {memory_name!r} reads context {self.memory.context_keys}, which "
                             f"imagination cannot provide; accepted: memories without context keys")
        self.deter = self.memory.output_size
        self.prior_net = nn.Sequential(mlp(self.deter, units, 1), nn.Linear(units, stoch * classes))
        self.post_net = nn.Sequential(mlp(self.deter + embed_size, units, 1), nn.Linear(units, stoch * classes))

    @property
    def feature_size(self) -> int:
        return self.deter + self.stoch * self.classes

    def initial_state(self, batch_size: int, device=None) -> State:
        mem = self.memory.initial_state(batch_size, device)
        zeros = lambda n: torch.zeros(batch_size, n, device=device)  # noqa: E731
        return {"deter": zeros(self.deter), "stoch": zeros(self.stoch * self.classes),
                "action": zeros(self.num_actions), **{PREFIX + k: v for k, v in mem.items()}}

    @staticmethod
    def features(state: State) -> Tensor:
        return torch.cat([state["deter"], state["stoch"]], -1)

    def _logits(self, net: nn.Module, x: Tensor) -> Tensor:  # -> [B, S, C], unimixed
        return unimix_logits(net(x).view(-1, self.stoch, self.classes), self.unimix)

    def _deter_step(self, state: State, stoch: Tensor, action: Tensor, reset: Tensor) -> State:
        """Advance the memory by one step from ``[stoch, action]``; reset [B] restarts it first."""
        x = self.img_in(torch.cat([stoch, action], -1))
        mem = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
        deter, mem = self.memory(x.unsqueeze(0), mem, reset.unsqueeze(0))
        return {"deter": deter[0], "stoch": stoch, "action": action, **{PREFIX + k: v for k, v in mem.items()}}

    def obs_step(self, state: State, embed: Tensor, reset: Tensor) -> tuple[State, Tensor, Tensor]:
        """One posterior step: embed [B, E], reset [B] -> state, posterior and prior logits [B, S, C].
        The returned state keeps the previous action; the caller sets the action taken at this step."""
        keep = (~reset).float().unsqueeze(-1)  # an episode start sees zero latent and action, as from scratch
        state = self._deter_step(state, state["stoch"] * keep, state["action"] * keep, reset)
        prior = self._logits(self.prior_net, state["deter"])
        post = self._logits(self.post_net, torch.cat([state["deter"], embed], -1))
        state["stoch"] = sample_one_hot(post).flatten(1)
        return state, post, prior

    def img_step(self, state: State, action: Tensor) -> State:
        """One prior step from state with action [B, A] (one-hot): the imagined next state."""
        no_reset = torch.zeros(action.shape[0], dtype=torch.bool, device=action.device)
        state = self._deter_step(state, state["stoch"], action, no_reset)
        state["stoch"] = sample_one_hot(self._logits(self.prior_net, state["deter"])).flatten(1)
        return state

    def observe(self, embed: Tensor, action: Tensor, reset: Tensor, state: State
                ) -> tuple[State, Tensor, Tensor, State]:
        """Posterior unroll: embed [T, B, E], action [T, B, A] (taken at step t), reset [T, B] ->
        (states [T, B, ...] after each step, posterior and prior logits [T, B, S, C], final state)."""
        states, posts, priors = [], [], []
        for t in range(embed.shape[0]):
            state, post, prior = self.obs_step(state, embed[t], reset[t])
            state["action"] = action[t]
            states.append(state)
            posts.append(post)
            priors.append(prior)
        stacked = {k: torch.stack([s[k] for s in states]) for k in state}
        return stacked, torch.stack(posts), torch.stack(priors), state

    def imagine(self, start: State, policy: Callable[[Tensor], Tensor], horizon: int) -> tuple[Tensor, Tensor]:
        """Prior unroll from start states [N, ...] with ``policy(features [N, F]) -> one-hot action [N, A]``:
        features [horizon + 1, N, F] of the visited states and the actions [horizon, N, A] taken in them."""
        state = {k: v.detach() for k, v in start.items()}
        feats, actions = [self.features(state)], []
        for _ in range(horizon):
            actions.append(policy(feats[-1]))
            state = self.img_step(state, actions[-1])
            feats.append(self.features(state))
        return torch.stack(feats), torch.stack(actions)


def _parameters(memory_name: str) -> list[str]:
    return list(inspect.signature(memories.REGISTRY[memory_name]).parameters)
