"""DreamerV3 (Hafner et al. 2023) with a pluggable ``Memory`` as the RSSM's deterministic path.

``Agent`` acts and trains on replay batches, ``train`` collects from a vector env into a replay
(``memory.replay.make_replay`` with ``replay_spec``) and trains at a given train ratio.
"""

from agents.dreamer.agent import SIZES, Agent, DreamerConfig, replay_spec, train

__all__ = ["Agent", "DreamerConfig", "SIZES", "replay_spec", "train"]
