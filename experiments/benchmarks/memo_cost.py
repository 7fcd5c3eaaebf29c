"""Acting cost of Memo, RMT and the full-context transformer (FCT) at the training horizon (rlmem issue 7).

    python -m experiments.benchmarks.memo_cost --out memo_cost.md            # on a GPU: batch 256, the real horizons
    python -m experiments.benchmarks.memo_cost --small --out /tmp/x.md       # H = 80, batch 2: seconds on a CPU

Each of the six memory configs (memo/rmt/fct x dkd/tmaze) is loaded with its env config, built as
``experiments/build.py`` builds it (input size = the memory's width, standing in for the encoder's features) in eval
mode (fixed segment lengths, as when acting), and acts one step at a time (T = 1) for B envs from its initial state,
never reset, to twice the training horizon H (the streaming test). H is the env's ``max_steps``: the 500-step trial
of Dark Key-to-Door, the 660-step time limit of the long T-Maze.

Memory per env, read from the state: the key/value cache is every layer's cached keys and values (``memo``:
``memory_k``/``memory_v`` of the summary tokens and ``segment_k``/``segment_v`` of the current segment;
``transformer``: ``k``/``v`` of the last window - 1 steps). "Held" counts the key/value vectors in use after H and 2H
steps (the code zeroes every slot that holds nothing); "allocated" is the fixed-shape buffers the state always holds;
"whole state" adds the rest (summaries, the cached inputs, masks and counters). Time: median over the steps around
step H, each timed from a synchronised start to a synchronised end, eager and (on CUDA) replayed as a CUDA graph as
PPO's rollouts do; memory: peak allocated while reaching and stepping through H (``torch.cuda.max_memory_allocated``,
reset per case). The markdown table is printed last and written to ``--out``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

import memory
from experiments.benchmarks.memory_cost import Step, graphed, measure, randn
from experiments.build import make_env, memory_options
from experiments.config import load

# (memory config, env config): the six runs of issue 7.
CONFIGS = (("memo_dkd", "memo_dark_key_to_door"), ("rmt_dkd", "memo_dark_key_to_door"),
           ("fct_dkd", "memo_dark_key_to_door"), ("memo_tmaze", "memo_tmaze_n10_l10"),
           ("rmt_tmaze", "memo_tmaze_n10_l10"), ("fct_tmaze", "memo_tmaze_n10_l10"))
KV_KEYS = ("k", "v", "memory_k", "memory_v", "segment_k", "segment_v")  # state entries that are cached keys/values


@dataclass(frozen=True)
class Sizes:
    batch: int
    warmup: int
    repeats: int
    horizon: int | None  # None: the env's own


FULL = Sizes(batch=256, warmup=5, repeats=50, horizon=None)
SMALL = Sizes(batch=2, warmup=2, repeats=5, horizon=80)


def build(name: str, env: str, device) -> tuple[memory.Memory, int]:
    """The memory of config ``name`` in eval mode and the horizon of env config ``env``."""
    cfg = load([f"memory={name}", f"env={env}"])
    kind, options = memory_options(cfg)
    m = memory.make(kind, options["width"], **options).to(device).eval()
    return m, make_env(cfg, 1, torch.device("cpu")).max_steps


def kv_held(state: memory.State) -> torch.Tensor:
    """Bytes of the key/value vectors in use (nonzero) over the whole batch, as a device scalar: no host sync."""
    return sum((state[key] != 0).any(-1).sum() * state[key].shape[-1] * state[key].element_size()
               for key in KV_KEYS if key in state)


def kv_allocated(state: memory.State) -> int:
    """Bytes per env of the key/value buffers."""
    return sum(state[key][0].numel() * state[key].element_size() for key in KV_KEYS if key in state)


def state_bytes(state: memory.State) -> int:
    return sum(v[0].numel() * v.element_size() for v in state.values())


class Stream:
    """One memory acting step by step for ``batch`` envs from its initial state, never reset; ``held[t]`` is
    ``kv_held`` after step t for each t in ``marks``."""

    def __init__(self, m: memory.Memory, batch: int, device, marks: tuple[int, ...] = ()):
        self.m, self.state, self.steps, self.marks, self.held = m, m.initial_state(batch, device), 0, marks, {}
        self.x = randn(1, batch, m.input_size, device=device)  # x [1, B, in]
        self.reset = torch.zeros(1, batch, dtype=torch.bool, device=device)

    def step(self) -> None:
        _, self.state = self.m(self.x, self.state, self.reset)
        self.steps += 1
        if self.steps in self.marks:
            self.held[self.steps] = kv_held(self.state)

    def run_to(self, steps: int) -> None:
        while self.steps < steps:
            self.step()

    def in_place(self) -> Step:
        """One step that writes the next state into the current state's tensors, so a CUDA graph can replay it."""
        def body():
            _, new = self.m(self.x, self.state, self.reset)
            for key, value in new.items():
                self.state[key].copy_(value)
        return body


def eager_at(stream: Stream, steps: int) -> Step:
    stream.run_to(steps)
    return stream.step


def graph_at(stream: Stream, steps: int, device) -> Step:
    stream.run_to(steps)
    return graphed(stream.in_place(), device)


def case(name: str, env: str, s: Sizes, device) -> dict:
    """One config's row: bytes per env (held after H and 2H steps, allocated, whole state) and time cells."""
    torch.manual_seed(0)
    m, horizon = build(name, env, device)
    H = s.horizon or horizon
    lead = s.warmup + s.repeats // 2  # steps before H that are not timed centre the timed ones on H
    stream = Stream(m, s.batch, device, marks=(H, 2 * H))
    eager = measure(lambda: eager_at(stream, H - lead), s, device)
    stream.run_to(2 * H)
    # Every env acts alike, so the batch's bytes split evenly.
    row = {"memory": name, "env": env, "H": H, "held_H": round(stream.held[H].item() / s.batch),
           "held_2H": round(stream.held[2 * H].item() / s.batch), "allocated": kv_allocated(stream.state),
           "state": state_bytes(stream.state)}
    stream = None  # its state would count in the next case's peak memory
    if device.type == "cuda":
        # graphed() runs 3 warm-up steps before it captures one.
        graph = measure(lambda: graph_at(Stream(m, s.batch, device), H - lead - 3, device), s, device)
    else:
        eager, graph = eager + ", peak n/a", "CUDA only"
    return {**row, "eager": eager, "graph": graph}


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def ratio(row: dict, fct: dict) -> str:
    return f"{row['held_H'] / fct['held_H']:.3f} held at H; {row['allocated'] / fct['allocated']:.3f} allocated"


def table(rows: list[dict], s: Sizes, device_name: str) -> str:
    fct = {r["env"]: r for r in rows if r["memory"].startswith("fct")}
    lines = [f"Memo / RMT / FCT acting cost on {device_name}, torch {torch.__version__}: batch {s.batch}, one step "
             f"(T = 1) at a time from the initial state, never reset, eval mode (fixed segment lengths), float32, "
             f"input size = width. Memory per env (1 KiB = 1024 B): key/value cache held after H and 2H steps, "
             f"allocated (fixed buffers), whole state. Time: median of {s.repeats} steps around step H after "
             f"{s.warmup} warm-up steps; peak memory allocated.", "",
             "| memory | env | H | KV held after H | KV held after 2H | KV allocated | whole state | KV / FCT's "
             "| time per step at H, peak memory | CUDA graph |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['memory']} | {r['env']} | {r['H']} | {kib(r['held_H'])} | {kib(r['held_2H'])} | "
              f"{kib(r['allocated'])} | {kib(r['state'])} | {ratio(r, fct[r['env']])} | {r['eager']} | "
              f"{r['graph']} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the markdown table")
    parser.add_argument("--small", action="store_true", help="H = 80 and batch 2, for a CPU check")
    parser.add_argument("--batch", type=int, help="envs acting at once (default 256; 2 with --small)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.batch is not None and args.batch < 1:
        parser.error(f"--batch must be a positive integer, got {args.batch}")
    s, device = (SMALL if args.small else FULL), torch.device(args.device)
    if args.batch is not None:
        s = Sizes(args.batch, s.warmup, s.repeats, s.horizon)
    rows = []
    with torch.inference_mode():
        for name, env in CONFIGS:
            rows.append(case(name, env, s, device))
            print(rows[-1], flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = table(rows, s, device_name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return rows


if __name__ == "__main__":
    main()
