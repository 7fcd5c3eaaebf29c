"""DreamerV3's actor-critic, trained on imagined trajectories.

Returns are lambda-returns bootstrapped from the critic. The actor follows REINFORCE (discrete actions) with the
advantage ``(R - v) / max(1, P)``, where P is an EMA (decay 0.99) of the 5th-95th percentile range of the returns,
plus an entropy bonus; its 1% unimix keeps every action possible. The critic is a two-hot head trained towards the
returns and, as a regulariser, towards the predictions of a slow copy of itself (EMA of its weights, rate 0.02).
Every imagined step is weighted by the discounted product of predicted continuations before it.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from agents.dreamer.distributions import (NUM_BINS, UNIMIX, entropy, log_prob, sample_one_hot, two_hot_loss,
                                          two_hot_mean, unimix_logits)
from agents.dreamer.rssm import mlp


def lambda_returns(reward: Tensor, cont: Tensor, value: Tensor, gamma: float, lam: float) -> Tensor:
    """R_t = r_t + gamma c_t ((1 - lam) v_{t+1} + lam R_{t+1}), R_H = v_H. reward, cont [H, N], value [H+1, N]
    -> [H, N]; r_t and c_t belong to the action taken at step t."""
    out, last = [], value[-1]
    for t in reversed(range(reward.shape[0])):
        last = reward[t] + gamma * cont[t] * ((1 - lam) * value[t + 1] + lam * last)
        out.append(last)
    return torch.stack(out[::-1])


class ReturnNormaliser(nn.Module):
    """EMAs of the 5th and 95th return percentiles; ``scale`` = max(1, high - low)."""

    def __init__(self, decay: float = 0.99, low: float = 0.05, high: float = 0.95, limit: float = 1.0):
        super().__init__()
        self.decay, self.limit = decay, limit
        self.register_buffer("quantiles", torch.tensor([low, high]))
        self.register_buffer("ema", torch.zeros(2))  # [low, high], from zero as in DreamerV3

    @torch.no_grad()
    def update(self, returns: Tensor) -> None:
        q = torch.quantile(returns.detach().float().flatten(), self.quantiles)
        self.ema.mul_(self.decay).add_((1 - self.decay) * q)

    @property
    def scale(self) -> Tensor:
        return (self.ema[1] - self.ema[0]).clamp(min=self.limit)


class Behaviour(nn.Module):
    def __init__(self, feature_size: int, num_actions: int, units: int, layers: int, gamma: float = 0.997,
                 lam: float = 0.95, entropy_scale: float = 3e-4, slow_rate: float = 0.02, slow_reg: float = 1.0,
                 return_decay: float = 0.99, unimix: float = UNIMIX):
        super().__init__()
        self.gamma, self.lam, self.entropy_scale = gamma, lam, entropy_scale
        self.slow_rate, self.slow_reg, self.unimix = slow_rate, slow_reg, unimix
        self.actor = nn.Sequential(mlp(feature_size, units, layers), nn.Linear(units, num_actions))
        self.critic = nn.Sequential(mlp(feature_size, units, layers), nn.Linear(units, NUM_BINS))
        nn.init.zeros_(self.critic[-1].weight)  # value 0 at the start, as in DreamerV3
        nn.init.zeros_(self.critic[-1].bias)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.normaliser = ReturnNormaliser(return_decay)

    def policy_logits(self, feat: Tensor) -> Tensor:
        return unimix_logits(self.actor(feat), self.unimix)

    def policy(self, feat: Tensor, greedy: bool = False) -> Tensor:
        """One-hot actions [..., A] for features [..., F]: sampled, or the most likely with ``greedy``."""
        logits = self.policy_logits(feat)
        if greedy:
            return nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
        return sample_one_hot(logits).detach()

    def loss(self, feat: Tensor, action: Tensor, reward: Tensor, cont: Tensor) -> tuple[Tensor, Tensor, dict]:
        """(actor loss, critic loss, metrics) on an imagined trajectory: feat [H+1, N, F] (detached), one-hot action
        [H, N, A], predicted reward and continuation [H, N] of each action."""
        with torch.no_grad():
            value = two_hot_mean(self.critic(feat))  # [H+1, N]
            returns = lambda_returns(reward, cont, value, self.gamma, self.lam)  # [H, N]
            discount = torch.cat([torch.ones_like(cont[:1]), self.gamma * cont[:-1]])
            weight = torch.cumprod(discount, 0)  # [H, N]: 1 at the start, then gamma * cont products
            self.normaliser.update(returns)
            advantage = (returns - value[:-1]) / self.normaliser.scale
            slow_value = two_hot_mean(self.slow_critic(feat[:-1]))
        logits = self.policy_logits(feat[:-1])
        ent = entropy(logits)
        actor_loss = -(weight * (log_prob(logits, action) * advantage + self.entropy_scale * ent)).mean()
        critic_logits = self.critic(feat[:-1])
        critic_loss = (weight * (two_hot_loss(critic_logits, returns)
                                 + self.slow_reg * two_hot_loss(critic_logits, slow_value))).mean()
        metrics = {"actor_entropy": ent.mean(), "imag_return": returns.mean(), "imag_value": value.mean(),
                   "return_scale": self.normaliser.scale, "advantage": advantage.mean()}
        return actor_loss, critic_loss, metrics

    @torch.no_grad()
    def update_slow_critic(self) -> None:
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            slow.lerp_(fast, self.slow_rate)
