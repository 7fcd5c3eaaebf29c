"""Encoders (observation -> features) and the policy/value heads shared by the agents.

``make_encoder(space)`` picks the encoder from the observation space: an MLP for flat vectors, a CNN for images
(IMPALA by default, Nature on request), an embedding + small CNN for integer grids (symbolic gridworld views), an
embedding for discrete tokens, and a concatenation of those for ``Dict`` spaces. Images arrive as uint8 HWC and are
scaled to [0, 1] here, so rollouts store them as bytes.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

ENCODERS = ("auto", "mlp", "impala", "nature")


def layer_init(layer: nn.Module, std: float = float(np.sqrt(2)), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with gain ``std`` and constant bias: the PPO initialisation that trains reliably."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class MLPEncoder(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 64, layers: int = 2):
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        blocks = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [layer_init(nn.Linear(a, b)), nn.Tanh()]
        self.net = nn.Sequential(*blocks)
        self.output_size = dims[-1]

    def forward(self, obs: Tensor) -> Tensor:  # obs [N, in_dim] -> [N, hidden]
        return self.net(obs.flatten(1).float())


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class _ConvSequence(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0, self.res1 = _ResidualBlock(out_channels), _ResidualBlock(out_channels)

    def forward(self, x):
        return self.res1(self.res0(self.pool(self.conv(x))))


def _flat_size(net: nn.Module, shape: tuple[int, ...]) -> int:
    with torch.no_grad():
        return net(torch.zeros(1, *shape)).flatten(1).shape[1]


class ImpalaCNN(nn.Module):
    """The IMPALA ResNet (Espeholt et al. 2018): three conv sequences of two residual blocks, then a dense layer."""

    def __init__(self, shape_chw: tuple[int, int, int], channels=(16, 32, 32), out: int = 256):
        super().__init__()
        seqs, c = [], shape_chw[0]
        for ch in channels:
            seqs.append(_ConvSequence(c, ch))
            c = ch
        self.body = nn.Sequential(*seqs, nn.Flatten(), nn.ReLU())
        self.fc = layer_init(nn.Linear(_flat_size(self.body, shape_chw), out))
        self.output_size = out

    def forward(self, x):  # x [N, C, H, W] float in [0, 1]
        return torch.relu(self.fc(self.body(x)))


class NatureCNN(nn.Module):
    """The DQN Nature CNN (Mnih et al. 2015)."""

    def __init__(self, shape_chw: tuple[int, int, int], out: int = 512):
        super().__init__()
        if min(shape_chw[1:]) < 36:
            raise ValueError(f"env observation: the nature encoder needs images of at least 36x36, "
                             f"got {shape_chw[1:]}; use encoder=impala")
        self.body = nn.Sequential(
            layer_init(nn.Conv2d(shape_chw[0], 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(), nn.Flatten())
        self.fc = layer_init(nn.Linear(_flat_size(self.body, shape_chw), out))
        self.output_size = out

    def forward(self, x):
        return torch.relu(self.fc(self.body(x)))


class ImageEncoder(nn.Module):
    """uint8 or float images [N, H, W, C] -> features, through an IMPALA or Nature CNN."""

    def __init__(self, shape_hwc: tuple[int, int, int], kind: str = "impala"):
        super().__init__()
        h, w, c = shape_hwc
        self.scale = 1.0 / 255.0
        self.cnn = NatureCNN((c, h, w)) if kind == "nature" else ImpalaCNN((c, h, w))
        self.output_size = self.cnn.output_size

    def forward(self, obs):
        x = obs.permute(0, 3, 1, 2)
        x = x.float() * self.scale if obs.dtype == torch.uint8 else x.float()
        return self.cnn(x)


class GridEncoder(nn.Module):
    """Integer grids [N, H, W] of object ids (symbolic views) -> embeddings per cell -> small CNN -> features."""

    def __init__(self, shape_hw: tuple[int, int], num_ids: int, embed: int = 16, out: int = 256):
        super().__init__()
        self.embed = nn.Embedding(num_ids, embed)
        self.body = nn.Sequential(nn.Conv2d(embed, 32, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())
        self.fc = layer_init(nn.Linear(_flat_size(self.body, (embed, *shape_hw)), out))
        self.output_size = out

    def forward(self, obs):  # obs [N, H, W] int
        x = self.embed(obs.long()).permute(0, 3, 1, 2)
        return torch.relu(self.fc(self.body(x)))


class TokenEncoder(nn.Module):
    def __init__(self, num_tokens: int, embed: int = 32):
        super().__init__()
        self.embed = nn.Embedding(num_tokens, embed)
        self.output_size = embed

    def forward(self, obs):  # obs [N] int
        return self.embed(obs.long().view(-1))


class DictEncoder(nn.Module):
    """One encoder per key of a ``Dict`` observation; their features are concatenated."""

    def __init__(self, encoders: dict[str, nn.Module]):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.output_size = sum(e.output_size for e in encoders.values())

    def forward(self, obs: dict[str, Tensor]):
        return torch.cat([enc(obs[k]) for k, enc in self.encoders.items()], dim=-1)


def make_encoder(space: spaces.Space, kind: str = "auto", hidden: int = 64) -> nn.Module:
    """The encoder for one observation of ``space``; ``kind`` forces mlp/impala/nature where it applies."""
    if kind not in ENCODERS:
        raise ValueError(f"agent.encoder: unknown encoder {kind!r}; accepted: {', '.join(ENCODERS)}")
    if isinstance(space, spaces.Dict):
        return DictEncoder({k: make_encoder(s, kind, hidden) for k, s in space.spaces.items()})
    if isinstance(space, spaces.Discrete):
        return TokenEncoder(int(space.n))
    if isinstance(space, spaces.Box):
        shape = space.shape
        if kind in ("impala", "nature") and len(shape) != 3:
            raise ValueError(f"agent.encoder: {kind!r} needs image observations [H, W, C], but the env gives "
                             f"shape {shape}; accepted here: auto, mlp")
        if len(shape) == 3 and kind != "mlp":
            return ImageEncoder(shape, "nature" if kind == "nature" else "impala")
        if len(shape) == 2 and np.issubdtype(space.dtype, np.integer) and kind != "mlp":
            return GridEncoder(shape, int(space.high.max()) + 1)
        return MLPEncoder(int(np.prod(shape)), hidden)
    raise ValueError(f"env observation space {space} is not supported; accepted: Box, Discrete, or a Dict of them")


# --- reconstruction decoders (the self-supervised auxiliary loss of HCAM's agents) ------------------------------------

class VectorDecoder(nn.Module):
    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.head = nn.Linear(hidden, dim)

    def loss(self, h: Tensor, obs: Tensor) -> Tensor:
        return ((self.head(h) - obs.flatten(1).float()) ** 2).mean()


class ImageDecoder(nn.Module):
    """Predicts the image average-pooled to ``size`` x ``size`` pixels, scaled to [0, 1]."""

    def __init__(self, hidden: int, channels: int, size: int = 16):
        super().__init__()
        self.size, self.channels = size, channels
        self.head = nn.Linear(hidden, size * size * channels)

    def loss(self, h: Tensor, obs: Tensor) -> Tensor:
        x = obs.permute(0, 3, 1, 2).float() * (1 / 255.0 if obs.dtype == torch.uint8 else 1.0)
        target = nn.functional.adaptive_avg_pool2d(x, self.size).flatten(1)
        return ((self.head(h) - target) ** 2).mean()


class IdDecoder(nn.Module):
    """Predicts every id of an integer grid [N, H, W] or a token [N] with a cross-entropy per cell."""

    def __init__(self, hidden: int, cells: int, num_ids: int):
        super().__init__()
        self.cells, self.num_ids = cells, num_ids
        self.head = nn.Linear(hidden, cells * num_ids)

    def loss(self, h: Tensor, obs: Tensor) -> Tensor:
        logits = self.head(h).view(-1, self.num_ids)
        return nn.functional.cross_entropy(logits.float(), obs.reshape(-1).long())


class DictDecoder(nn.Module):
    def __init__(self, decoders: dict[str, nn.Module]):
        super().__init__()
        self.decoders = nn.ModuleDict(decoders)

    def loss(self, h: Tensor, obs: dict[str, Tensor]) -> Tensor:
        return sum(dec.loss(h, obs[k]) for k, dec in self.decoders.items())


def make_decoder(space: spaces.Space, hidden: int) -> nn.Module:
    """A head that reconstructs one observation of ``space`` from the memory's output (``.loss(h, obs)``)."""
    if isinstance(space, spaces.Dict):
        return DictDecoder({k: make_decoder(s, hidden) for k, s in space.spaces.items()})
    if isinstance(space, spaces.Discrete):
        return IdDecoder(hidden, 1, int(space.n))
    shape = space.shape
    if len(shape) == 3:
        return ImageDecoder(hidden, shape[2])
    if len(shape) == 2 and np.issubdtype(space.dtype, np.integer):
        return IdDecoder(hidden, int(np.prod(shape)), int(space.high.max()) + 1)
    return VectorDecoder(hidden, int(np.prod(shape)))
