"""The ``rlmem`` command: ``rlmem train|evaluate|plot|bench ...`` runs ``python -m experiments.<command> ...``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("train", "evaluate", "plot", "bench")


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: rlmem {{{'|'.join(COMMANDS)}}} [args...]   (e.g. rlmem train memory=gru)")
    importlib.import_module(f"experiments.{sys.argv[1]}").main(sys.argv[2:])
