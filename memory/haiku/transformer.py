"""Haiku twin of the ``transformer`` memory (``memory/transformer.py``) and parameter converters both ways.

Same computation, same state keys (``k``, ``v``, ``step``; ``step`` is int32 here, JAX's default integer) and the
same parameter names: the torch module
``layers.<i>.<a>.<b>`` lives at the Haiku module path ``<name>/layer_<i>/<a>/<b>``; a Linear's ``weight``/``bias`` are
``w`` (transposed) and ``b``, a LayerNorm's ``weight``/``bias`` are ``scale`` and ``offset``.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from memory.attention import MASKED_LOGIT
from memory.haiku.convert import linear_from_haiku, linear_to_haiku
from memory.transformer import TransformerMemory as TorchTransformerMemory, check_config, relative_size

NAME = "transformer_memory"


def sinusoid(pos, width: int):
    """pos [...] int -> [..., width], as ``memory.transformer.sinusoid``."""
    inv_freq = 1e4 ** (-jnp.arange(0, width, 2, dtype=jnp.float32) / width)
    angle = pos[..., None].astype(jnp.float32) * inv_freq
    return jnp.concatenate([jnp.sin(angle), jnp.cos(angle)], -1)[..., :width]


def episode_positions(step, reset):
    """As ``memory.transformer.episode_positions``: positions within the episode and episode numbers, both [T, B]."""
    t = jnp.arange(reset.shape[0])[:, None]
    last_reset = jax.lax.cummax(jnp.where(reset, t, -1), axis=0)
    pos = jnp.where(last_reset >= 0, t - last_reset, step + t)
    return pos, jnp.cumsum(reset.astype(jnp.int32), 0)


def attention_mask(step, episode, window: int):
    """As ``memory.transformer.attention_mask``: mask [B, T, M + T] and distances [T, M + T]."""
    T, B = episode.shape
    M = window - 1
    dist = jnp.arange(T)[:, None] + M - jnp.arange(M + T)
    in_window = (dist >= 0) & (dist < window)
    cached_valid = M - jnp.arange(M) <= step[:, None]
    key_valid = jnp.concatenate([cached_valid, jnp.ones((B, T), bool)], 1)
    key_episode = jnp.concatenate([jnp.zeros((B, M), episode.dtype), episode.T], 1)
    same_episode = key_episode[:, None, :] == episode.T[:, :, None]
    return in_window & same_episode & key_valid[:, None, :], dist


def _layer_norm(name: str):
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, eps=1e-5, name=name)


class GRUGate(hk.Module):
    def __init__(self, gate_bias: float, name: str):
        super().__init__(name=name)
        self.gate_bias = gate_bias

    def __call__(self, x, y):
        width = x.shape[-1]
        lin = {n: hk.Linear(width, with_bias=False, name=n) for n in ("w_r", "u_r", "w_z", "u_z", "w_g", "u_g")}
        r = jax.nn.sigmoid(lin["w_r"](y) + lin["u_r"](x))
        candidate = jnp.tanh(lin["w_g"](y) + lin["u_g"](r * x))
        z = jax.nn.sigmoid(lin["w_z"](y) + lin["u_z"](x) - self.gate_bias)
        return (1 - z) * x + z * candidate


class FeedForward(hk.Module):
    def __init__(self, ff_size: int, name: str = "mlp"):
        super().__init__(name=name)
        self.ff_size = ff_size

    def __call__(self, x):
        return hk.Linear(x.shape[-1], name="linear_1")(jax.nn.relu(hk.Linear(self.ff_size, name="linear_0")(x)))


class CachedAttention(hk.Module):
    """Multi-head attention with Haiku's ``query``/``key``/``value``/``linear`` layout over cached + new keys."""

    def __init__(self, heads: int, relative_size: int, name: str = "attention"):
        super().__init__(name=name)
        self.heads, self.relative_size = heads, relative_size

    def __call__(self, h, k_cache, v_cache, mask, dist, relative_bias):
        width = h.shape[-1]
        key_size = width // self.heads
        k = jnp.concatenate([k_cache, hk.Linear(width, name="key")(h)], 1)
        v = jnp.concatenate([v_cache, hk.Linear(width, name="value")(h)], 1)
        q = hk.Linear(width, name="query")(h).reshape(*h.shape[:2], self.heads, key_size)
        logits = jnp.einsum("bthk,bshk->bhts", q, k.reshape(*k.shape[:2], self.heads, key_size)) / np.sqrt(key_size)
        if relative_bias is not None:
            logits = logits + relative_bias[:, jnp.clip(dist, 0, self.relative_size - 1)]
        weights = jax.nn.softmax(jnp.where(mask[:, None], logits, MASKED_LOGIT), -1)
        out = jnp.einsum("bhts,bshk->bthk", weights, v.reshape(*v.shape[:2], self.heads, key_size))
        return hk.Linear(width, name="linear")(out.reshape(*out.shape[:2], width)), k, v


def _join(x, y, part: str, pre_norm: bool, gating: str, gate_bias: float):
    """Add (or gate) the sub-layer output y into the stream x."""
    # A plain function, not a module method: Haiku would name modules built in a method other than __call__
    # under "~<method>", breaking the match with the torch names.
    if pre_norm:
        y = jax.nn.relu(y)
    out = x + y if gating == "none" else GRUGate(gate_bias, name=f"{part}_gate")(x, y)
    return out if pre_norm else _layer_norm(f"{part}_norm")(out)


class TransformerLayer(hk.Module):
    def __init__(self, heads, ff_size, gating, norm, gate_bias, relative_size, name):
        super().__init__(name=name)
        self.heads, self.ff_size, self.gating, self.pre_norm = heads, ff_size, gating, norm == "pre"
        self.gate_bias, self.relative_size = gate_bias, relative_size

    def __call__(self, h, k_cache, v_cache, mask, dist):
        relative_bias = None
        if self.relative_size:
            relative_bias = hk.get_parameter("relative_bias", [self.heads, self.relative_size], h.dtype,
                                             init=jnp.zeros)
        a_in = _layer_norm("attention_norm")(h) if self.pre_norm else h
        y, k, v = CachedAttention(self.heads, self.relative_size)(a_in, k_cache, v_cache, mask, dist, relative_bias)
        h = _join(h, y, "attention", self.pre_norm, self.gating, self.gate_bias)
        y = FeedForward(self.ff_size)(_layer_norm("mlp_norm")(h) if self.pre_norm else h)
        return _join(h, y, "mlp", self.pre_norm, self.gating, self.gate_bias), k, v


class TransformerMemory(hk.Module):
    """``memory.transformer.TransformerMemory`` in Haiku: ``(x [T, B, in], state, reset [T, B]) -> (out, state)``.

    Parameters are created lazily under the torch module's names; ``initial_state`` gives the empty state.
    """

    def __init__(self, input_size: int, width: int = 128, layers: int = 2, heads: int = 4, window: int = 64,
                 gating: str = "none", norm: str = "pre", positions: str = "sinusoidal", ff_size: int | None = None,
                 gate_bias: float = 2.0, max_distance: int = 128, name: str = NAME):
        super().__init__(name=name)
        ff_size = check_config(width, layers, heads, window, gating, norm, positions, ff_size, max_distance)
        self.input_size, self.width, self.layers, self.heads, self.window = input_size, width, layers, heads, window
        self.gating, self.norm, self.positions, self.gate_bias = gating, norm, positions, gate_bias
        self.ff_size, self.relative_size = ff_size, relative_size(positions, window, max_distance)

    def initial_state(self, batch_size: int) -> dict:
        cache = jnp.zeros((batch_size, self.layers, self.window - 1, self.width), jnp.float32)
        inputs = jnp.zeros((batch_size, self.window - 1, self.input_size), jnp.float32)
        return {"k": cache, "v": cache, "x": inputs, "step": jnp.zeros((batch_size,), jnp.int32)}

    def __call__(self, x, state, reset):
        T, M = x.shape[0], self.window - 1
        pos, episode = episode_positions(state["step"], reset)
        mask, dist = attention_mask(state["step"], episode, self.window)
        h = hk.Linear(self.width, name="input")(jnp.swapaxes(x, 0, 1))  # [B, T, D]
        if self.positions == "sinusoidal":
            h = h + sinusoid(pos.T, self.width).astype(h.dtype)
        k_cache, v_cache = jax.lax.stop_gradient(state["k"]), jax.lax.stop_gradient(state["v"])
        keys, values = [], []
        for i in range(self.layers):
            layer = TransformerLayer(self.heads, self.ff_size, self.gating, self.norm, self.gate_bias,
                                     self.relative_size, name=f"layer_{i}")
            h, k, v = layer(h, k_cache[:, i], v_cache[:, i], mask, dist)
            keys.append(k[:, T:])
            values.append(v[:, T:])
        step = pos[-1] + 1
        keep = (M - jnp.arange(M) <= step[:, None])[:, None, :, None]
        inputs = jnp.concatenate([state["x"], jnp.swapaxes(x, 0, 1)], 1)[:, T:]  # [B, M, in]
        new_state = {"k": jnp.where(keep, jnp.stack(keys, 1), 0.0),
                     "v": jnp.where(keep, jnp.stack(values, 1), 0.0),
                     "x": jnp.where(keep[:, 0], inputs, 0.0), "step": step}
        out = _layer_norm("final_norm")(h) if self.norm == "pre" else h
        return jnp.swapaxes(out, 0, 1), new_state


def _haiku_path(torch_name: str, name: str) -> str:
    return "/".join([name, *torch_name.replace("layers.", "layer_").split(".")]) if torch_name else name


def torch_to_haiku(module: TorchTransformerMemory, name: str = NAME) -> dict:
    """The torch module's parameters as a Haiku params dict for ``TransformerMemory(name=name)``."""
    params = {}
    for mod_name, mod in module.named_modules():
        path = _haiku_path(mod_name, name)
        if isinstance(mod, nn.Linear):
            params[path] = linear_to_haiku(mod)
        elif isinstance(mod, nn.LayerNorm):
            params[path] = {"scale": mod.weight.detach().cpu().numpy().copy(),
                            "offset": mod.bias.detach().cpu().numpy().copy()}
        else:
            for p_name, p in mod.named_parameters(recurse=False):
                params.setdefault(path, {})[p_name] = p.detach().cpu().numpy().copy()
    return params


@torch.no_grad()
def haiku_to_torch(params: dict, module: TorchTransformerMemory, name: str = NAME) -> None:
    """Copy a Haiku params dict into the torch module in place; the two must have the same structure and shapes."""
    expected = set(torch_to_haiku(module, name))
    if set(params) != expected:
        raise ValueError(f"haiku params do not match the torch module: missing {sorted(expected - set(params))}, "
                         f"unexpected {sorted(set(params) - expected)}")
    for mod_name, mod in module.named_modules():
        path = _haiku_path(mod_name, name)
        if isinstance(mod, nn.Linear):
            linear_from_haiku(mod, {k: np.array(v) for k, v in params[path].items()})
        elif isinstance(mod, nn.LayerNorm):
            _copy(mod.weight, params[path]["scale"], f"{path}/scale")
            _copy(mod.bias, params[path]["offset"], f"{path}/offset")
        else:
            for p_name, p in mod.named_parameters(recurse=False):
                _copy(p, params[path][p_name], f"{path}/{p_name}")


def _copy(target: torch.Tensor, value, where: str) -> None:
    value = torch.as_tensor(np.array(value))
    if value.shape != target.shape:
        raise ValueError(f"haiku {where} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
    target.copy_(value)
