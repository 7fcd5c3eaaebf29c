"""Time DeepMind's reference HCAM read (Haiku, jit, float32): one query per env over S stored steps.

The reference is not part of rlmem and is never committed: put ``htm_attention.py`` from
``google-deepmind/deepmind-research`` (``hierarchical_transformer_memory/hierarchical_attention/``) in ``.ref/``
(git-ignored); this script imports it from there at run time. ``memory_cost.py`` runs it once per size, in its own
process, so JAX and PyTorch never share the GPU and each size gets its own peak memory.

    python -m experiments.benchmarks.reference_hcam --steps 1024 [--small]

Prints one JSON line: {"steps", "ms" (median per read), "peak_bytes" (null where JAX does not report it), "error"}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # peak memory is then what the read needs

REFERENCE = Path(__file__).resolve().parents[2] / ".ref" / "htm_attention.py"
FULL = {"batch": 256, "width": 256, "heads": 4, "chunk": 16, "top_k": 8, "warmup": 5, "repeats": 100}
SMALL = {"batch": 4, "width": 16, "heads": 2, "chunk": 4, "top_k": 2, "warmup": 2, "repeats": 5}


def _shape_checks_module() -> types.ModuleType:
    """The two ``chex`` checks the reference calls, for machines without chex (it only asserts shapes and dtypes)."""
    module = types.ModuleType("chex")

    def assert_shape(array, shape):
        if tuple(array.shape) != tuple(shape):
            raise AssertionError(f"shape {tuple(array.shape)} != {tuple(shape)}")

    def assert_type(array, dtype):
        if array.dtype != dtype:
            raise AssertionError(f"dtype {array.dtype} != {dtype}")

    module.assert_shape, module.assert_type = assert_shape, assert_type
    return module


def load_reference(path: Path = REFERENCE) -> types.ModuleType:
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: fetch htm_attention.py from google-deepmind/deepmind-research")
    try:
        import chex  # noqa: F401
    except ImportError:
        sys.modules["chex"] = _shape_checks_module()
    spec = importlib.util.spec_from_file_location("htm_attention", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_read(steps: int, batch: int, width: int, heads: int, chunk: int, top_k: int, warmup: int,
              repeats: int) -> dict:
    """Median time of one jitted read over ``steps // chunk`` random chunks, and the device's peak memory."""
    import haiku as hk
    import jax
    import jax.numpy as jnp

    ref = load_reference()
    num_chunks = steps // chunk
    k_queries, k_keys, k_contents, k_init = jax.random.split(jax.random.PRNGKey(0), 4)
    queries = jax.random.normal(k_queries, (batch, 1, width), jnp.float32)
    # One draw per env: a single draw of B*M*C*D >= 2**32 numbers could overflow the generator's counter.
    contents = jax.jit(jax.vmap(lambda key: jax.random.normal(key, (num_chunks, chunk, width), jnp.float32)))(
        jax.random.split(k_contents, batch))
    memory = ref.HierarchicalMemory(keys=jax.random.normal(k_keys, (batch, num_chunks, width), jnp.float32),
                                    contents=contents,
                                    steps_since_last_write=jnp.zeros(batch, jnp.int32),
                                    accumulator=jnp.zeros((batch, chunk, width), jnp.float32))
    read = hk.without_apply_rng(hk.transform(
        lambda q, m: ref.HierarchicalMemoryAttention(feature_size=width, k=top_k, num_heads=heads)(q, m)))
    params = jax.jit(read.init)(k_init, queries, memory)
    apply = jax.jit(read.apply)
    for _ in range(warmup):
        apply(params, queries, memory).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        apply(params, queries, memory).block_until_ready()
        times.append(time.perf_counter() - start)
    stats = jax.devices()[0].memory_stats() or {}
    return {"steps": steps, "ms": 1e3 * statistics.median(times), "peak_bytes": stats.get("peak_bytes_in_use"),
            "error": None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, required=True, help="stored steps per env (S)")
    parser.add_argument("--small", action="store_true", help="tiny sizes, for a CPU check")
    args = parser.parse_args(argv)
    try:
        result = time_read(args.steps, **(SMALL if args.small else FULL))
    except Exception as error:  # reported in the table; "RESOURCE_EXHAUSTED" means the size does not fit
        result = {"steps": args.steps, "ms": None, "peak_bytes": None,
                  "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
