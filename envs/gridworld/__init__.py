"""Gridworld memory tasks, each a batched torch program (see ``base.py``)."""

from envs.gridworld.base import BatchedEnv, SingleEnv
from envs.gridworld.tmaze import EndlessTMaze, EndlessTMazeVector

__all__ = ["BatchedEnv", "SingleEnv", "EndlessTMaze", "EndlessTMazeVector"]
