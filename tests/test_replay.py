"""Sequence replay (memory/replay.py): chunking, FIFO/reservoir/WMAR contents, sampling, checkpoints, errors."""

import io

import numpy as np
import pytest
import torch

from memory.replay import make_replay

SPEC = {"obs": ((4, 4, 3), np.uint8), "id": ((), np.int64), "action": ((), np.int64),
        "reward": ((), np.float32), "reset": ((), bool)}
STEP_BYTES = 4 * 4 * 3 + 8 + 8 + 4 + 1


def vector_step(t: int, envs: int) -> dict:
    """Step ``t`` of ``envs`` envs; ``id`` = t * envs + env names every (step, env) pair of the stream."""
    env = np.arange(envs)
    ids = t * envs + env
    return {"obs": np.broadcast_to((ids % 256).astype(np.uint8)[:, None, None, None], (envs, 4, 4, 3)).copy(),
            "id": ids, "action": ids % 5, "reward": (ids * 0.5).astype(np.float32),
            "reset": (t + env) % 3 == 0}


def feed(replay, start: int, steps: int) -> None:
    for t in range(start, start + steps):
        replay.add(vector_step(t, replay.num_envs))


def chunk_number(ids, envs: int, length: int):
    """Order in which the chunk holding step ``ids`` was written (env 0 first among chunks completed together)."""
    return (ids // envs // length) * envs + ids % envs


def kept(replay, source: int = 0) -> set[int]:
    first_ids = replay.chunks(source)["id"][:, 0]
    return set(chunk_number(first_ids, replay.num_envs, replay.chunk_length).tolist())


def test_chunks_are_cut_per_env_every_chunk_length_steps_with_resets():
    envs, length = 3, 4
    replay = make_replay("fifo", 100 * length, length, SPEC, envs)
    feed(replay, 0, length - 1)
    assert replay.stored_steps == 0 and len(replay.chunks()["id"]) == 0
    feed(replay, length - 1, 1)
    assert replay.stored_steps == envs * length
    feed(replay, length, length)
    chunks = replay.chunks()
    assert chunks["id"].shape == (2 * envs, length)
    for n in range(2 * envs):
        env, t = n % envs, (n // envs) * length + torch.arange(length)
        assert torch.equal(chunks["id"][n], t * envs + env)
        assert torch.equal(chunks["reset"][n], (t + env) % 3 == 0)
        assert torch.equal(chunks["action"][n], (t * envs + env) % 5)
        assert torch.equal(chunks["obs"][n, :, 2, 1, 0], ((t * envs + env) % 256).to(torch.uint8))


def test_fifo_keeps_the_newest_chunks():
    envs, length = 2, 3
    replay = make_replay("fifo", 5 * length + 2, length, SPEC, envs)  # room for 5 chunks
    feed(replay, 0, 2 * length)
    assert kept(replay) == {0, 1, 2, 3}
    feed(replay, 2 * length, 6 * length)
    assert kept(replay) == {11, 12, 13, 14, 15}
    assert replay.stored_steps == 5 * length


def test_reservoir_keeps_every_stream_item_with_equal_probability():
    # 20 chunks stream into room for 5: each must be kept with probability 1/4, early and late alike.
    envs, rounds, slots, runs = 4, 5, 5, 2000
    counts = np.zeros(envs * rounds)
    for seed in range(runs):
        replay = make_replay("reservoir", slots, 1, SPEC, envs, seed=seed)
        feed(replay, 0, rounds)
        ids = replay.chunks()["id"][:, 0].numpy()
        assert len(set(ids)) == slots
        counts[ids] += 1
    expected = runs * slots / (envs * rounds)
    # Per-item counts are Binomial(2000, 1/4): sd 19.4 around 500; 5 sd is a frequency tolerance of +-0.05.
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected * 0.75)
    # Chi-square over the 20 items (19 dof since the total is fixed); 43.8 is its 0.1% critical value.
    assert ((counts - expected) ** 2 / (expected * 0.75)).sum() < 43.8


def wmar_replay(seed=0, split="buffer"):
    envs, length = 2, 2
    replay = make_replay("wmar", 2 * 4 * length, length, SPEC, envs, seed=seed, wmar_split=split)  # 4 chunks each
    feed(replay, 0, 6 * length)  # 12 chunks
    return replay


def test_wmar_buffers_hold_the_newest_chunks_and_a_reservoir_sample():
    reservoir_differs = []
    for seed in range(20):
        replay = wmar_replay(seed)
        assert kept(replay, 0) == {8, 9, 10, 11}
        alone = make_replay("reservoir", 4 * 2, 2, SPEC, 2, seed=seed)
        feed(alone, 0, 6 * 2)
        assert kept(replay, 1) == kept(alone) and len(kept(alone)) == 4
        reservoir_differs.append(kept(replay, 1) != kept(replay, 0))
        assert replay.stored_steps == 2 * 4 * 2
    assert any(reservoir_differs)


def sampled_chunks(batch, replay):
    return chunk_number(batch["id"][:, 0], replay.num_envs, replay.chunk_length).tolist()


def test_wmar_buffer_split_draws_each_batch_from_one_buffer():
    replay = wmar_replay()
    fifo, reservoir = kept(replay, 0), kept(replay, 1)
    assert reservoir - fifo, "seed 0 should keep an old chunk in the reservoir"
    sources, old_drawn = [], False
    for _ in range(200):
        batch = replay.sample(4, 2)
        source = batch["source"]
        assert source.dtype == torch.int64 and bool((source == source[0]).all())
        chunks = set(sampled_chunks(batch, replay))
        assert chunks <= (reservoir if source[0] else fifo)
        old_drawn |= bool(chunks - fifo)
        sources.append(int(source[0]))
    assert 0.35 < np.mean(sources) < 0.65 and old_drawn


def test_wmar_half_split_draws_half_of_each_batch_from_each_buffer():
    replay = wmar_replay(split="half")
    fifo, reservoir = kept(replay, 0), kept(replay, 1)
    for _ in range(50):
        batch = replay.sample(6, 2)
        assert batch["source"].tolist() == [0, 0, 0, 1, 1, 1]
        chunks = sampled_chunks(batch, replay)
        assert set(chunks[:3]) <= fifo and set(chunks[3:]) <= reservoir


@pytest.mark.parametrize("kind, buffers", [("fifo", 1), ("wmar", 2)])
def test_uint8_observations_stay_uint8_and_nbytes_counts_stored_chunks(kind, buffers):
    envs, length = 2, 3
    replay = make_replay(kind, 2 * 1000 * length, length, SPEC, envs)
    feed(replay, 0, 2 * length + 1)  # 4 chunks stored, one step pending
    assert replay.chunks()["obs"].dtype == torch.uint8
    assert replay.sample(3, 2)["obs"].dtype == torch.uint8
    assert replay.nbytes == buffers * 4 * length * STEP_BYTES
    held = sum(v.numel() * v.element_size() for b in range(buffers) for v in replay.chunks(b).values())
    assert replay.nbytes == held
    # The checkpoint holds the stored chunks, not the space allocated for 1000.
    saved = io.BytesIO()
    torch.save(replay.state_dict(), saved)
    assert saved.tell() < replay.nbytes + 30_000 < 1000 * length * STEP_BYTES


def test_sample_shapes_dtypes_and_contiguous_sequences():
    envs, length = 2, 4
    replay = make_replay("fifo", 40, length, SPEC, envs)
    feed(replay, 0, 2 * length)
    batch = replay.sample(5, 3)
    assert set(batch) == set(SPEC)
    expected = {"obs": ((5, 3, 4, 4, 3), torch.uint8), "id": ((5, 3), torch.int64),
                "action": ((5, 3), torch.int64), "reward": ((5, 3), torch.float32), "reset": ((5, 3), torch.bool)}
    for name, (shape, dtype) in expected.items():
        assert batch[name].shape == shape and batch[name].dtype == dtype and batch[name].device.type == "cpu"
    starts = set()
    for _ in range(100):
        ids = replay.sample(5, 3)["id"]
        assert bool((ids.diff(dim=1) == envs).all())  # consecutive steps of one env
        assert bool((chunk_number(ids[:, 0], envs, length) == chunk_number(ids[:, -1], envs, length)).all())
        starts |= set((ids[:, 0] // envs % length).tolist())
    assert starts == {0, 1}  # every offset that fits a sequence of 3 in a chunk of 4


def test_state_dict_round_trip_continues_exactly():
    envs, length = 2, 3
    build = lambda seed: make_replay("wmar", 2 * 4 * length, length, SPEC, envs, seed=seed)  # noqa: E731
    original = build(0)
    feed(original, 0, 7 * length + 2)  # reservoir full and evicting, two steps pending
    state = original.state_dict()
    samples = [original.sample(4, 2) for _ in range(3)]
    feed(original, 7 * length + 2, 5 * length + 1)
    samples.append(original.sample(4, 3))

    saved = io.BytesIO()
    torch.save(state, saved)
    saved.seek(0)
    restored = build(123)
    restored.load_state_dict(torch.load(saved))
    again = [restored.sample(4, 2) for _ in range(3)]
    feed(restored, 7 * length + 2, 5 * length + 1)
    again.append(restored.sample(4, 3))

    for a, b in zip(samples, again):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for source in (0, 1):
        a, b = original.chunks(source), restored.chunks(source)
        assert all(torch.equal(a[k], b[k]) for k in SPEC)
    assert torch.equal(original.buffers[1].keys, restored.buffers[1].keys)
    assert restored.stored_steps == original.stored_steps and restored.filled == original.filled == 0


def test_load_state_dict_rejects_another_configuration():
    replay = make_replay("fifo", 12, 3, SPEC, 2)
    with pytest.raises(ValueError, match="chunk_length"):
        make_replay("fifo", 12, 4, SPEC, 2).load_state_dict(replay.state_dict())


@pytest.mark.parametrize("change, name", [
    ({"kind": "lifo"}, "kind"), ({"capacity": 0}, "capacity"), ({"capacity": 3}, "capacity"),
    ({"kind": "wmar", "capacity": 6}, "capacity"), ({"chunk_length": 0}, "chunk_length"),
    ({"num_envs": 0}, "num_envs"), ({"spec": {}}, "spec"), ({"spec": {"obs": ((4,), object)}}, "spec['obs']"),
    ({"spec": {"obs": (4, np.uint8)}}, "spec['obs']"), ({"wmar_split": "mixed"}, "wmar_split")])
def test_bad_arguments_raise_one_line_errors(change, name):
    args = {"kind": "fifo", "capacity": 16, "chunk_length": 4, "spec": SPEC, "num_envs": 2, **change}
    with pytest.raises(ValueError) as error:
        make_replay(**args)
    message = str(error.value)
    assert message.startswith(name) and "\n" not in message
    if name in ("kind", "wmar_split"):
        assert "accepted" in message


def test_bad_steps_and_samples_raise_clear_errors():
    replay = make_replay("fifo", 16, 4, SPEC, 2)
    with pytest.raises(RuntimeError, match="empty"):
        replay.sample(2, 2)
    step = vector_step(0, 2)
    with pytest.raises(ValueError, match="fields"):
        replay.add({k: v for k, v in step.items() if k != "reset"})
    with pytest.raises(ValueError, match=r"step\['id'\].*shape"):
        replay.add({**step, "id": step["id"][:1]})
    with pytest.raises(ValueError, match=r"step\['obs'\].*float"):
        replay.add({**step, "obs": step["obs"].astype(np.float32)})
    feed(replay, 0, 4)
    with pytest.raises(ValueError, match="length"):
        replay.sample(2, 5)
    with pytest.raises(ValueError, match="batch_size"):
        replay.sample(0, 2)
    with pytest.raises(ValueError, match="source"):
        replay.chunks(1)
