"""Per-step inference cost of HCAM against full attention and an LSTM, at 1k-64k stored steps (rlmem issue 4).

    python -m experiments.benchmarks.memory_cost --out memory_cost.md     # on a GPU, about a minute
    python -m experiments.benchmarks.memory_cost --small --out /tmp/x.md  # tiny sizes, runs on a CPU

Cases, each for one query per env (batch 256, width 256, 4 heads, chunk 16, top-8) over S stored steps:
(a) our HCAM read alone (``HierarchicalMemoryAttention``) over S/16 chunks, eager and replayed as a CUDA graph;
(b) one step of the ``hcam`` memory with 1 layer and S steps stored, with ``in_place=True`` (eager, and replayed as
a CUDA graph) and with the default ``in_place=False`` (one copy of the store per call); (c) full attention over an
S-step KV cache (keys and values already projected), eager and as a CUDA graph; (d) one LSTM step (hidden 256; no
stored steps); (e) DeepMind's reference read (Haiku, jit, float32) via ``reference_hcam.py``, where
``.ref/htm_attention.py`` exists. Time: median over many steps after warm-up, each step timed from a synchronised
start to a synchronised end. Memory: peak allocated during the case (``torch.cuda.max_memory_allocated``, reset per
case; JAX's ``peak_bytes_in_use`` for (e)). The markdown table is printed last and written to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import memory
from experiments.benchmarks.reference_hcam import REFERENCE
from memory.hcam import HCAM, HierarchicalMemoryAttention


@dataclass(frozen=True)
class Sizes:
    batch: int
    width: int
    heads: int
    chunk: int
    top_k: int
    steps: tuple[int, ...]
    warmup: int
    repeats: int


FULL = Sizes(batch=256, width=256, heads=4, chunk=16, top_k=8, steps=(1024, 4096, 16384, 65536), warmup=5,
             repeats=100)
SMALL = Sizes(batch=4, width=16, heads=2, chunk=4, top_k=2, steps=(32, 128), warmup=2, repeats=5)
Step = Callable[[], object]


def randn(*shape: int, device) -> torch.Tensor:
    return torch.randn(*shape, device=device)


def hcam_read(s: Sizes, steps: int, device) -> Step:
    read = HierarchicalMemoryAttention(s.width, s.width, s.width, s.top_k, s.heads).to(device)
    chunks = steps // s.chunk
    queries, keys = randn(s.batch, 1, s.width, device=device), randn(s.batch, chunks, s.width, device=device)
    contents = randn(s.batch, chunks, s.chunk, s.width, device=device)
    return lambda: read(queries, keys, contents)


def filled_state(m: HCAM, batch: int, device) -> memory.State:
    """A full store; envs out of step (every chunk position, and full chunks waiting), as after episode resets."""
    state = m.initial_state(batch, device)
    for key in ("keys", "contents", "accumulator"):
        state[key].normal_()
    state["valid"].fill_(True)
    state["chunks_written"].fill_(m.max_chunks)
    state["steps_in_chunk"] = torch.arange(batch, device=device) % (m.chunk_size + 1)
    return state


def hcam_step(s: Sizes, steps: int, device, in_place: bool = True) -> Step:
    m = HCAM(s.width, s.width, layers=1, heads=s.heads, chunk_size=s.chunk, top_k=s.top_k,
             max_chunks=steps // s.chunk, in_place=in_place).to(device)
    state = filled_state(m, s.batch, device)
    x, reset = randn(1, s.batch, s.width, device=device), torch.zeros(1, s.batch, dtype=torch.bool, device=device)

    def step():
        nonlocal state
        _, state = m(x, state, reset)
    return step


def graphed(step: Step, device) -> Step:
    """``step`` captured once as a CUDA graph after a warm-up on a side stream; each replay reruns its GPU work."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def hcam_step_graph(s: Sizes, steps: int, device) -> Step:
    """The in-place step captured once as a CUDA graph; each replay is one step (as in a captured PPO rollout)."""
    m = HCAM(s.width, s.width, layers=1, heads=s.heads, chunk_size=s.chunk, top_k=s.top_k,
             max_chunks=steps // s.chunk, in_place=True).to(device)
    state = filled_state(m, s.batch, device)
    x, reset = randn(1, s.batch, s.width, device=device), torch.zeros(1, s.batch, dtype=torch.bool, device=device)

    def body():
        _, new = m(x, state, reset)
        for key, value in new.items():
            if value is not state[key]:
                state[key].copy_(value)
    return graphed(body, device)


def kv_cache_attention(s: Sizes, steps: int, device) -> Step:
    head = s.width // s.heads
    query, out = nn.Linear(s.width, s.width).to(device), nn.Linear(s.width, s.width).to(device)
    keys, values = randn(s.batch, s.heads, steps, head, device=device), randn(s.batch, s.heads, steps, head,
                                                                              device=device)
    x = randn(s.batch, s.width, device=device)

    def step():
        q = query(x).view(s.batch, s.heads, 1, head)
        read = nn.functional.scaled_dot_product_attention(q, keys, values)  # [B, H, 1, head]
        return out(read.reshape(s.batch, s.width))
    return step


def lstm_step(s: Sizes, steps: int, device) -> Step:
    m = memory.make("lstm", s.width, hidden_size=s.width).to(device)
    state = m.initial_state(s.batch, device)
    x, reset = randn(1, s.batch, s.width, device=device), torch.zeros(1, s.batch, dtype=torch.bool, device=device)
    return lambda: m(x, state, reset)


def store_bytes(s: Sizes, steps: int) -> int:
    return 4 * s.batch * steps * s.width


# name -> (builder, copies of the S-step store it holds at its peak, depends on S, needs CUDA)
CASES = {"(a) HCAM read, ours": (hcam_read, 1, True, False),
         "(a) HCAM read, ours, CUDA graph": (lambda s, n, d: graphed(hcam_read(s, n, d), d), 1, True, True),
         "(b) hcam step, 1 layer, in_place": (hcam_step, 1, True, False),
         "(b) hcam step, 1 layer, in_place, CUDA graph": (hcam_step_graph, 1, True, True),
         "(b) hcam step, 1 layer, copying (default)": (lambda s, n, d: hcam_step(s, n, d, in_place=False), 2, True,
                                                        False),
         "(c) full attention, KV cache": (kv_cache_attention, 2, True, False),
         "(c) full attention, KV cache, CUDA graph": (lambda s, n, d: graphed(kv_cache_attention(s, n, d), d), 2,
                                                      True, True),
         "(d) LSTM step": (lstm_step, 0, False, False)}


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(build: Callable[[], Step], s: Sizes, device) -> str:
    """'<median ms> ms, <peak> GB' for one case, or why it has no number."""
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        step = build()
        for _ in range(s.warmup):
            step()
        times = []
        for _ in range(s.repeats):
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            times.append(time.perf_counter() - start)
    except torch.cuda.OutOfMemoryError:
        return "does not fit (out of memory)"
    except RuntimeError as error:  # e.g. a failed CUDA graph capture: reported in its cell, the other cases still run
        return f"failed: {str(error).splitlines()[0][:120]}"
    finally:
        step = None
    cell = f"{1e3 * statistics.median(times):.3f} ms"
    if device.type == "cuda":
        cell += f", {torch.cuda.max_memory_allocated(device) / 1e9:.2f} GB"
    return cell


def reference_cell(steps: int, small: bool) -> str:
    """Run reference_hcam.py for one size in a fresh process (its own JAX, its own peak memory)."""
    command = [sys.executable, "-m", "experiments.benchmarks.reference_hcam", "--steps", str(steps)]
    done = subprocess.run(command + (["--small"] if small else []), capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return f"failed: {(done.stderr.strip().splitlines() or ['no output'])[-1][:120]}"
    result = json.loads(lines[-1])
    if result["error"]:
        fits = "RESOURCE_EXHAUSTED" not in result["error"]
        return f"failed: {result['error'][:120]}" if fits else "does not fit (out of memory)"
    cell = f"{result['ms']:.3f} ms"
    if result["peak_bytes"] is not None:
        cell += f", {result['peak_bytes'] / 1e9:.2f} GB"
    return cell


def no_host_sync(s: Sizes, device) -> str:
    """Run the in-place hcam step with CUDA's sync debug mode set to raise on any host sync."""
    if device.type != "cuda":
        return "not checked (CUDA only)"
    step = hcam_step(s, s.steps[0], device)
    step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
        return "none (torch.cuda.set_sync_debug_mode('error') passed)"
    except RuntimeError as error:
        return f"FOUND: {str(error).splitlines()[0]}"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def table(s: Sizes, rows: dict[str, list[str]], device_name: str, syncs: str) -> str:
    labels = [f"S={n // 1024}k" if n >= 1024 else f"S={n}" for n in s.steps]
    lines = [f"Per-step inference cost on {device_name}: batch {s.batch}, width {s.width}, {s.heads} heads, "
             f"chunk {s.chunk}, top-{s.top_k}; S stored steps per env; median of {s.repeats} steps after "
             f"{s.warmup} warm-up steps; float32. Cells: time per step, peak memory allocated.",
             f"Host syncs in the in-place hcam step: {syncs}.", "",
             "| case | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the markdown table")
    parser.add_argument("--small", action="store_true", help="tiny sizes, for a CPU check")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    s, device = (SMALL if args.small else FULL), torch.device(args.device)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else math.inf
    if REFERENCE.exists():  # first, before PyTorch holds GPU memory
        reference = [reference_cell(n, args.small) for n in s.steps]
        print("(e)", reference, flush=True)
    else:
        reference = [f"not run: no .ref/{REFERENCE.name}"] * len(s.steps)
    rows: dict[str, list[str]] = {}
    torch.manual_seed(0)
    with torch.inference_mode():
        for name, (builder, copies, scales, cuda_only) in CASES.items():
            cells = []
            for n in s.steps if scales else s.steps[:1]:
                if cuda_only and device.type != "cuda":
                    cells.append("CUDA only")
                elif copies * store_bytes(s, n) > 0.95 * free:
                    cells.append(f"skipped: needs {copies * store_bytes(s, n) / 1e9:.0f} GB")
                else:
                    cells.append(measure(lambda: builder(s, n, device), s, device))
                print(name, n, cells[-1], flush=True)
            rows[name] = cells if scales else cells * len(s.steps)
        syncs = no_host_sync(s, device)
    rows["(e) DeepMind's reference read (Haiku, jit)"] = reference
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    text = table(s, rows, device_name, syncs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
