"""Config -> objects: the env, the agent and the trainer. Shared by train, evaluate and bench."""

from __future__ import annotations

import dataclasses

import torch
from omegaconf import DictConfig

import envs
from agents.ppo import PPO, Agent, PPOConfig
from experiments.config import ConfigError, as_dict, build_dataclass


def ppo_config(cfg: DictConfig) -> PPOConfig:
    values = as_dict(cfg.agent)
    values.pop("name")
    return build_dataclass(PPOConfig, values, "agent")


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


def make_agent(cfg: DictConfig, env, ppo: PPOConfig) -> Agent:
    mem = as_dict(cfg.memory)
    name = mem.pop("name")
    try:
        return Agent(env.single_observation_space, int(env.single_action_space.n), name, mem, ppo.encoder,
                     ppo.encoder_hidden, reconstruction=ppo.recon_coef > 0)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def make_trainer(cfg: DictConfig, device: torch.device, rank: int = 0, world: int = 1) -> PPO:
    """The PPO learner of one rank: ``agent.num_envs / world`` envs, seeded apart from the other ranks' envs."""
    ppo = ppo_config(cfg)
    try:
        ppo = dataclasses.replace(ppo, num_envs=ppo.num_envs // world)
    except ValueError as err:
        raise ConfigError(f"{err} (per rank, with {world} processes)") from None
    env = make_env(cfg, ppo.num_envs, device)
    agent = make_agent(cfg, env, ppo)
    try:
        return PPO(env, agent, ppo, device, seed=int(cfg.seed) + rank * ppo.num_envs)
    except ValueError as err:
        raise ConfigError(str(err)) from None
