"""Vector entry points of the registered Habitat tasks (``rlmem/habitat-<task>-v0``)."""

from __future__ import annotations

import functools

from envs.habitat.env import make_vector
from envs.habitat.tasks import MultiObjectNav, PlaceRecall

MultiObjectNavVector = functools.partial(make_vector, MultiObjectNav)
PlaceRecallVector = functools.partial(make_vector, PlaceRecall)
