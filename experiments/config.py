"""Composing and checking run configs: Hydra at the edge, plain values and dataclasses inward.

Every mistake a user can make on the command line is turned into a one-line ``ConfigError`` naming the field and
the accepted values, before any work starts.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("agent", "memory", "env", "experiment")
AGENTS = ("ppo", "dreamer")


class ConfigError(ValueError):
    """A bad config value, reported as one line before any work starts."""


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def sweep_combinations(overrides: list[str]) -> list[list[str]]:
    """Every combination of a Hydra sweep: ``memory=lstm,gru seed=0,1`` -> 4 lists of plain overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    axes = []
    for o in parsed:
        key = o.get_key_element()  # with its +, ++ or ~ prefix
        if o.is_delete() and o.value() is None:
            axes.append([key])
            continue
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
        axes.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*axes)]


def _check_groups(overrides: list[str]) -> None:
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if sep and key in GROUPS and value not in options(key):
            raise ConfigError(f"{key}: unknown {key} {value!r}; accepted: {', '.join(options(key))}")


def _accepted_keys(cfg: DictConfig, dotted: str) -> str:
    parent = dotted.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return ", ".join(sorted(node.keys())) if isinstance(node, DictConfig) else "(none)"


def load(overrides: list[str]) -> DictConfig:
    """The root config with ``overrides`` (Hydra syntax: ``memory=gru agent.lr=1e-3``) applied and checked."""
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]  # Hydra's own settings
    _check_groups(overrides)
    base = _compose([o for o in overrides if o.partition("=")[0].lstrip("+~") in GROUPS])
    for item in overrides:
        key = item.partition("=")[0]
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        if key.startswith(("+", "~")) or key in GROUPS:
            continue
        if OmegaConf.select(base, key, default="__missing__") == "__missing__":
            raise ConfigError(f"{key}: no such config key; accepted here: {_accepted_keys(base, key)} "
                              f"(add a new key with +{key}=...)")
    cfg = _compose(overrides)
    check(cfg)
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    try:
        with initialize_config_dir(str(CONF_DIR), version_base=None):
            return compose("config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None


def check(cfg: DictConfig) -> None:
    """Checks that need no heavy work: names that must exist in registries, devices, sizes."""
    import envs
    import memory

    if cfg.agent.name not in AGENTS:
        raise ConfigError(f"agent.name: unknown agent {cfg.agent.name!r}; accepted: {', '.join(AGENTS)}")
    if cfg.memory.name not in memory.names():
        raise ConfigError(f"memory.name: unknown memory {cfg.memory.name!r}; accepted: {', '.join(memory.names())}")
    if cfg.env.id not in envs.ids():
        raise ConfigError(f"env.id: unknown environment {cfg.env.id!r}; accepted: {', '.join(envs.ids())}")
    device = str(cfg.device)
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device: {device!r} is not a device; accepted: auto, cpu, cuda, cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} requested but CUDA is not available here; use device=cpu")
    if cfg.checkpoint_every < 1 or cfg.log_every < 1:
        raise ConfigError("checkpoint_every and log_every must be positive integers")


def build_dataclass(cls, values: dict, prefix: str):
    """``cls(**values)`` where each value must have the type of the field's default; errors name ``prefix.key``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: no such option; accepted: {', '.join(fields)}")
        expected = type(fields[key].default)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{prefix}.{key}: expected {expected.__name__}, got {value!r}")
    try:
        return cls(**values)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resolve_device(name: str):
    """The torch device for ``device=``. For CUDA it also turns on cuDNN autotuning (shapes are fixed within a run)
    and TF32 matmuls; every entry point (train, evaluate, bench) resolves its device here."""
    import torch

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
    return device


def as_dict(node) -> dict:
    """A config node as a plain dict; a resolver's default (e.g. ``oc.select``'s ``{}``) may already be one."""
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
