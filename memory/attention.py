"""Multi-head attention with the parameter layout of Haiku's ``hk.MultiHeadAttention``.

Separate ``query``/``key``/``value``/``linear`` projections (each with a bias), so every attention memory here has a
Haiku twin whose parameters convert one to one (see ``memory/haiku/convert.py``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Haiku fills masked logits with this value (not -inf), so a fully masked row gives a uniform softmax, not NaN.
MASKED_LOGIT = -1e30


class MultiHeadAttention(nn.Module):
    def __init__(self, query_size: int, key_input_size: int, num_heads: int, key_size: int,
                 value_size: int | None = None, model_size: int | None = None):
        super().__init__()
        self.num_heads, self.key_size = num_heads, key_size
        self.value_size = value_size or key_size
        self.model_size = model_size or key_size * num_heads
        self.query = nn.Linear(query_size, num_heads * key_size)
        self.key = nn.Linear(key_input_size, num_heads * key_size)
        self.value = nn.Linear(key_input_size, num_heads * self.value_size)
        self.linear = nn.Linear(num_heads * self.value_size, self.model_size)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> Tensor:
        """query [..., Tq, E], key/value [..., Tk, D], mask [..., Tq, Tk] (True = may attend) -> [..., Tq, model]."""
        h = self.num_heads
        q = self.query(query).unflatten(-1, (h, self.key_size))  # [..., Tq, H, K]
        k = self.key(key).unflatten(-1, (h, self.key_size))  # [..., Tk, H, K]
        v = self.value(value).unflatten(-1, (h, self.value_size))  # [..., Tk, H, V]
        logits = torch.einsum("...thd,...Thd->...htT", q, k) / math.sqrt(self.key_size)  # [..., H, Tq, Tk]
        if mask is not None:
            logits = logits.masked_fill(~mask.unsqueeze(-3), MASKED_LOGIT)
        weights = torch.softmax(logits, dim=-1)
        out = torch.einsum("...htT,...Thd->...thd", weights, v)  # [..., Tq, H, V]
        return self.linear(out.flatten(-2))
