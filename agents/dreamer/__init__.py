"""DreamerV3 (Hafner et al. 2023) with a pluggable ``Memory`` as the RSSM's deterministic path.

``Agent`` acts and trains on replay batches; ``Trainer`` collects from a vector env into a replay
(``memory.replay.make_replay`` with ``replay_spec``) and trains at the config's train ratio.
"""

from agents.dreamer.agent import SIZES, Agent, DreamerConfig, replay_spec
from agents.dreamer.trainer import Trainer

__all__ = ["Agent", "DreamerConfig", "SIZES", "Trainer", "replay_spec"]
