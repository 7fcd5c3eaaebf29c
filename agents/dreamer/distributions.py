"""The output distributions of DreamerV3: symlog squashing, two-hot heads over symlog bins, unimix categoricals.

Two-hot: a scalar y is encoded in symlog space as weights on its two neighbouring bins (255 bins spaced evenly on
[-20, 20]) so that the weighted bin positions average back to ``symlog(y)``; a head predicts logits over the bins,
trains by cross-entropy against the two-hot target, and reads out ``symexp(sum(softmax * bins))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

NUM_BINS = 255
BIN_LIMIT = 20.0
UNIMIX = 0.01


def symlog(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: Tensor) -> Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def bins(device=None) -> Tensor:
    return torch.linspace(-BIN_LIMIT, BIN_LIMIT, NUM_BINS, device=device)


def two_hot(y: Tensor) -> Tensor:
    """Scalars y [...] (already symlog-squashed) -> weights [..., NUM_BINS] on the two nearest bins; sum to 1."""
    b = bins(y.device)
    y = y.clamp(b[0], b[-1])
    above = torch.searchsorted(b, y.contiguous(), right=True).clamp(1, NUM_BINS - 1)  # index of the upper bin
    below = above - 1
    w_above = (y - b[below]) / (b[above] - b[below])
    out = torch.zeros(*y.shape, NUM_BINS, device=y.device)
    out.scatter_(-1, below.unsqueeze(-1), (1 - w_above).unsqueeze(-1))
    out.scatter_add_(-1, above.unsqueeze(-1), w_above.unsqueeze(-1))
    return out


def two_hot_mean(logits: Tensor) -> Tensor:
    """Logits [..., NUM_BINS] -> the predicted scalar [...] in real (symexp) space."""
    return symexp((logits.float().softmax(-1) * bins(logits.device)).sum(-1))


def two_hot_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy [...] of logits [..., NUM_BINS] against the two-hot encoding of real-valued targets [...]."""
    return -(two_hot(symlog(target.float())) * logits.float().log_softmax(-1)).sum(-1)


def unimix_logits(logits: Tensor, mix: float = UNIMIX) -> Tensor:
    """Logits of ``(1 - mix) * softmax(logits) + mix * uniform`` over the last axis (keeps every log-prob finite)."""
    probs = logits.float().softmax(-1)
    probs = (1 - mix) * probs + mix / logits.shape[-1]
    return probs.log()


def sample_one_hot(logits: Tensor) -> Tensor:
    """A one-hot draw [..., K] with straight-through gradients to the probabilities."""
    probs = logits.softmax(-1)
    gumbel = -torch.log(-torch.log(torch.rand_like(probs).clamp_(1e-20, 1.0)))  # argmax(logits + gumbel) ~ probs
    index = (logits.detach() + gumbel).argmax(-1, keepdim=True)
    sample = torch.zeros_like(probs).scatter_(-1, index, 1.0)
    return sample + probs - probs.detach()


def categorical_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """KL(p || q) [...] of categoricals given by logits [..., K], summed over the last axis."""
    logp, logq = logits_p.log_softmax(-1), logits_q.log_softmax(-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def entropy(logits: Tensor) -> Tensor:
    logp = logits.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def log_prob(logits: Tensor, one_hot: Tensor) -> Tensor:
    return (logits.log_softmax(-1) * one_hot).sum(-1)


def bernoulli_loss(logits: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
