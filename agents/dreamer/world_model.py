"""The DreamerV3 world model: encoder, RSSM, decoder, reward and continue heads, and its loss.

Vectors are symlog-squashed into an MLP encoder and reconstructed by symlog MSE; images (uint8 HWC, side a power of
two >= 8) go through a stride-2 CNN (channel depth doubling, LayerNorm + SiLU) down to 4x4 and are reconstructed by
a transposed CNN with MSE on pixels scaled to [-0.5, 0.5]. Squared errors are summed over an observation's
dimensions, as in DreamerV3, and averaged over batch and time.

Deviation from DreamerV3: the reward and continue heads read the state *and the action taken in it* and predict that
transition's reward and whether the episode goes on after it. DreamerV3 predicts them from the state an action leads
to, which needs the terminal observation as a replay entry; our vector envs reset in the same step and the agent
never acts on a terminal observation, so each replay entry is one full transition and needs no extra row.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.dreamer.distributions import (NUM_BINS, bernoulli_loss, categorical_kl, symlog, two_hot_loss,
                                          two_hot_mean)
from agents.dreamer.rssm import RSSM, State, mlp


class VectorEncoder(nn.Module):
    def __init__(self, dim: int, units: int, layers: int):
        super().__init__()
        self.net = mlp(dim, units, layers)
        self.output_size = units

    def forward(self, obs: Tensor) -> Tensor:  # obs [N, ...] -> [N, units]
        return self.net(symlog(obs.flatten(1).float()))


class VectorDecoder(nn.Module):
    def __init__(self, feature_size: int, dim: int, units: int, layers: int):
        super().__init__()
        self.net = nn.Sequential(mlp(feature_size, units, layers), nn.Linear(units, dim))

    def loss(self, feat: Tensor, obs: Tensor) -> Tensor:  # -> [N]
        return ((self.net(feat) - symlog(obs.flatten(1).float())) ** 2).sum(-1)


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of [N, C, H, W] maps."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _image_levels(shape_hwc: tuple[int, ...]) -> int:
    """Stride-2 stages from the image side down to 4."""
    h, w, _ = shape_hwc
    if h != w or h < 8 or h & (h - 1):
        raise ValueError(f"env observation: images must be square with a power-of-two side >= 8, got {h}x{w}")
    return int(math.log2(h)) - 2


def _scale_image(obs: Tensor) -> Tensor:  # [N, H, W, C] uint8 -> [N, C, H, W] in [-0.5, 0.5]
    return obs.permute(0, 3, 1, 2).float() / 255.0 - 0.5


class ConvEncoder(nn.Module):
    def __init__(self, shape_hwc: tuple[int, int, int], depth: int):
        super().__init__()
        levels = _image_levels(shape_hwc)
        blocks, c = [], shape_hwc[2]
        for i in range(levels):
            blocks += [nn.Conv2d(c, depth * 2 ** i, 4, 2, 1, bias=False), ChannelNorm(depth * 2 ** i), nn.SiLU()]
            c = depth * 2 ** i
        self.net = nn.Sequential(*blocks, nn.Flatten())
        self.output_size = c * 16

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(_scale_image(obs))


class ConvDecoder(nn.Module):
    def __init__(self, feature_size: int, shape_hwc: tuple[int, int, int], depth: int):
        super().__init__()
        levels = _image_levels(shape_hwc)
        self.top = depth * 2 ** (levels - 1)
        self.inp = nn.Linear(feature_size, self.top * 16)
        blocks, c = [], self.top
        for i in reversed(range(levels - 1)):
            blocks += [nn.ConvTranspose2d(c, depth * 2 ** i, 4, 2, 1, bias=False), ChannelNorm(depth * 2 ** i),
                       nn.SiLU()]
            c = depth * 2 ** i
        blocks.append(nn.ConvTranspose2d(c, shape_hwc[2], 4, 2, 1))
        self.net = nn.Sequential(*blocks)

    def loss(self, feat: Tensor, obs: Tensor) -> Tensor:  # -> [N]
        pred = self.net(self.inp(feat).view(-1, self.top, 4, 4))
        return ((pred - _scale_image(obs)) ** 2).flatten(1).sum(-1)


def _check_space(space: spaces.Space) -> bool:
    """True for uint8 images [H, W, C], False for vectors; anything else is refused."""
    if not isinstance(space, spaces.Box):
        raise ValueError(f"env observation space {space} is not supported by dreamer; accepted: Box vectors or "
                         f"uint8 images [H, W, C]")
    return len(space.shape) == 3 and space.dtype == np.uint8


def make_encoder(space: spaces.Space, units: int, layers: int, depth: int) -> nn.Module:
    if _check_space(space):
        return ConvEncoder(space.shape, depth)
    return VectorEncoder(int(np.prod(space.shape)), units, layers)


def make_decoder(space: spaces.Space, feature_size: int, units: int, layers: int, depth: int) -> nn.Module:
    if _check_space(space):
        return ConvDecoder(feature_size, space.shape, depth)
    return VectorDecoder(feature_size, int(np.prod(space.shape)), units, layers)


def kl_losses(post: Tensor, prior: Tensor, free_bits: float = 1.0) -> tuple[Tensor, Tensor]:
    """(dynamics, representation) losses [...] of logits [..., S, C]: the KL summed over the S latents, with the
    gradient stopped on the other side, and clipped below at ``free_bits`` nats (no gradient below)."""
    dyn = categorical_kl(post.detach(), prior).sum(-1)
    rep = categorical_kl(post, prior.detach()).sum(-1)
    return dyn.clamp(min=free_bits), rep.clamp(min=free_bits)


class WorldModel(nn.Module):
    def __init__(self, obs_space: spaces.Space, num_actions: int, deter: int, units: int, layers: int,
                 cnn_depth: int, stoch: int = 32, classes: int = 32, memory_name: str = "gru",
                 memory_config: dict | None = None, dyn_scale: float = 0.5, rep_scale: float = 0.1,
                 free_bits: float = 1.0):
        super().__init__()
        self.num_actions = num_actions
        self.dyn_scale, self.rep_scale, self.free_bits = dyn_scale, rep_scale, free_bits
        self.encoder = make_encoder(obs_space, units, layers, cnn_depth)
        self.rssm = RSSM(self.encoder.output_size, num_actions, deter, units, stoch, classes, memory_name,
                         memory_config)
        feat = self.rssm.feature_size
        self.decoder = make_decoder(obs_space, feat, units, layers, cnn_depth)
        self.reward_head = nn.Sequential(mlp(feat + num_actions, units, layers), nn.Linear(units, NUM_BINS))
        self.cont_head = nn.Sequential(mlp(feat + num_actions, units, layers), nn.Linear(units, 1))
        # Zero reward logits predict 0 at the start, so early imagined returns do not explode (as in DreamerV3).
        nn.init.zeros_(self.reward_head[-1].weight)
        nn.init.zeros_(self.reward_head[-1].bias)

    def embed(self, obs: Tensor) -> Tensor:  # obs [T, B, ...] -> [T, B, E]
        t, b = obs.shape[:2]
        return self.encoder(obs.reshape(t * b, *obs.shape[2:])).view(t, b, -1)

    def reward(self, feat: Tensor, action: Tensor) -> Tensor:
        """Predicted reward [...] of taking action [..., A] in the state with features feat [..., F]."""
        return two_hot_mean(self.reward_head(torch.cat([feat, action], -1)))

    def cont(self, feat: Tensor, action: Tensor) -> Tensor:
        """1 where the episode is predicted to go on after the action (the Bernoulli's mode, as in DreamerV3)."""
        return (self.cont_head(torch.cat([feat, action], -1)).squeeze(-1) > 0).float()

    def loss(self, obs: Tensor, action: Tensor, reward: Tensor, terminated: Tensor, reset: Tensor, state: State
             ) -> tuple[Tensor, dict[str, Tensor], State]:
        """World-model loss on a replay batch [T, B, ...]; action one-hot [T, B, A] taken at step t, reward and
        terminated [T, B] of that transition. Returns (loss, metrics, posterior states [T, B, ...])."""
        t, b = reset.shape
        states, post, prior, _ = self.rssm.observe(self.embed(obs), action, reset, state)
        feat = self.rssm.features(states).reshape(t * b, -1)
        act = action.reshape(t * b, -1)
        dec = self.decoder.loss(feat, obs.reshape(t * b, *obs.shape[2:]))
        rew = two_hot_loss(self.reward_head(torch.cat([feat, act], -1)), reward.reshape(-1))
        con = bernoulli_loss(self.cont_head(torch.cat([feat, act], -1)).squeeze(-1),
                             1 - terminated.reshape(-1).float())
        dyn, rep = kl_losses(post, prior, self.free_bits)
        loss = (dec + rew + con).mean() + self.dyn_scale * dyn.mean() + self.rep_scale * rep.mean()
        metrics = {"decoder_loss": dec.mean(), "reward_loss": rew.mean(), "cont_loss": con.mean(),
                   "dyn_loss": dyn.mean(), "rep_loss": rep.mean(),
                   "prior_entropy": -(prior.softmax(-1) * prior.log_softmax(-1)).sum((-2, -1)).mean()}
        return loss, metrics, states
