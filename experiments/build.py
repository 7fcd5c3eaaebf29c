"""Config -> objects: the env, the agent and the trainer of ``cfg.agent.name`` (ppo | dreamer).
Shared by train, evaluate and bench."""

from __future__ import annotations

import dataclasses

import torch
from omegaconf import DictConfig

import envs
from agents import dreamer
from agents.ppo import PPO, PPOConfig
from agents.ppo import Agent as PPOAgent
from envs.threaded import GroupedVector
from experiments.config import ConfigError, as_dict, build_dataclass


def ppo_config(cfg: DictConfig) -> PPOConfig:
    values = as_dict(cfg.agent)
    values.pop("name")
    return build_dataclass(PPOConfig, values, "agent")


def dreamer_config(cfg: DictConfig) -> dreamer.DreamerConfig:
    """The agent group's fields, with the RSSM's deterministic path taken from the memory group."""
    values = as_dict(cfg.agent)
    values.pop("name")
    for key in ("memory", "memory_config"):
        if key in values:
            raise ConfigError(f"agent.{key}: the dreamer's memory comes from the memory group, e.g. memory=gru")
    name, options = memory_options(cfg)
    built = build_dataclass(dreamer.DreamerConfig, values, "agent")
    return dataclasses.replace(built, memory=name, memory_config=options)


def make_env(cfg: DictConfig, num_envs: int, device: torch.device, **kwargs_override):
    kwargs = as_dict(cfg.env.get("kwargs")) | kwargs_override
    try:
        return envs.make_vector(cfg.env.id, num_envs, device=device, **kwargs)
    except ImportError as err:  # an optional engine (procgen, ale-py) that is not installed
        raise ConfigError(f"env.id: {err}") from None
    except TypeError as err:  # an env kwarg the env does not take
        raise ConfigError(f"env.kwargs: {err}") from None
    except ValueError as err:
        raise ConfigError(f"env.kwargs.{err}" if not str(err).startswith("env") else str(err)) from None


def env_num_places(configured, env) -> int:
    """``memory.num_places``: null takes the env's ``num_places``; a number must equal it where the env has one."""
    available = getattr(env, "num_places", None)
    if configured is None and available is None:
        raise ConfigError("memory.num_places is null but the env has no num_places to take it from; set a number")
    if configured is not None and available is not None and configured != available:
        raise ConfigError(f"memory.num_places is {configured} but the env has {available} places; set "
                          f"memory.num_places={available} or null (take the env's)")
    return available if configured is None else configured


def memory_options(cfg: DictConfig) -> tuple[str, dict]:
    """The memory group as (registry name, constructor options); ``label`` only names runs."""
    options = as_dict(cfg.memory)
    options.pop("label", None)
    return options.pop("name"), options


def _ppo_agent(cfg: DictConfig, env, ppo: PPOConfig) -> PPOAgent:
    name, mem = memory_options(cfg)
    if "num_places" in mem:
        mem["num_places"] = env_num_places(mem["num_places"], env)
    try:
        return PPOAgent(env.single_observation_space, int(env.single_action_space.n), name, mem, ppo.encoder,
                        ppo.encoder_hidden, reconstruction=ppo.recon_coef > 0)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _dreamer_agent(env, config: dreamer.DreamerConfig) -> dreamer.Agent:
    try:
        return dreamer.Agent(env.single_observation_space, env.single_action_space, config)
    except ValueError as err:  # a memory that reads context, an unsupported space, a bad memory option
        raise ConfigError(str(err)) from None


def make_agent(cfg: DictConfig, env) -> PPOAgent | dreamer.Agent:
    """An untrained agent of ``cfg.agent.name`` for ``env`` (evaluation loads a checkpoint's weights into it)."""
    if cfg.agent.name == "dreamer":
        return _dreamer_agent(env, dreamer_config(cfg))
    return _ppo_agent(cfg, env, ppo_config(cfg))


def make_trainer(cfg: DictConfig, device: torch.device, rank: int = 0, world: int = 1) -> PPO | dreamer.Trainer:
    """The learner of one rank; see ``make_ppo_trainer`` and ``make_dreamer_trainer``."""
    if cfg.agent.name == "dreamer":
        return make_dreamer_trainer(cfg, device, world)
    return make_ppo_trainer(cfg, device, rank, world)


def make_ppo_trainer(cfg: DictConfig, device: torch.device, rank: int = 0, world: int = 1) -> PPO:
    """The PPO learner of one rank: ``agent.num_envs / world`` envs, seeded apart from the other ranks' envs."""
    ppo = ppo_config(cfg)
    try:
        ppo = dataclasses.replace(ppo, num_envs=ppo.num_envs // world)
    except ValueError as err:
        raise ConfigError(f"{err} (per rank, with {world} processes)") from None
    env = make_env(cfg, ppo.num_envs, device) if ppo.env_groups == 1 else \
        GroupedVector([make_env(cfg, ppo.num_envs // ppo.env_groups, device) for _ in range(ppo.env_groups)])
    agent = _ppo_agent(cfg, env, ppo)
    try:
        return PPO(env, agent, ppo, device, seed=int(cfg.seed) + rank * ppo.num_envs)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def make_dreamer_trainer(cfg: DictConfig, device: torch.device, world: int = 1) -> dreamer.Trainer:
    """The DreamerV3 learner: one process (no DDP for the dreamer yet)."""
    if world > 1:
        raise ConfigError(f"agent.name: dreamer trains in one process, got {world} (run it without torchrun)")
    config = dreamer_config(cfg)
    env = make_env(cfg, config.num_envs, device)
    agent = _dreamer_agent(env, config)
    try:
        return dreamer.Trainer(env, agent, config, device, seed=int(cfg.seed))
    except ValueError as err:
        raise ConfigError(str(err)) from None
