"""The Memo / RMT / FCT cost benchmark at its small sizes on the CPU: every config gets a row, its memory numbers
equal sizes worked out by hand from the memories' state layouts, and the step it captures as a CUDA graph is a step."""

import torch

from experiments.benchmarks.memo_cost import CONFIGS, Stream, build, main

TOKEN_DKD = 3 * 2 * 128 * 4  # bytes of one step's keys and values: 3 layers x (key, value) x width 128 x float32
TOKEN_TMAZE = 2 * 2 * 64 * 4  # 2 layers x (key, value) x width 64 x float32


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def test_small_run_writes_every_row_with_hand_computed_bytes(tmp_path):
    out = tmp_path / "memo_cost.md"
    main(["--small", "--device", "cpu", "--out", str(out)])
    text = out.read_text()
    assert "on CPU, torch " in text.splitlines()[0]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| memory")}
    assert list(rows) == [name for name, _ in CONFIGS]
    # Columns: memory, env, H, KV held after H, after 2H, KV allocated, whole state, KV / FCT's, time, CUDA graph.
    for cells in rows.values():
        assert cells[2] == "80" and cells[-1] == "CUDA only |" and cells[-2].endswith(" ms, peak n/a")

    # FCT (window 500): after t steps the cache holds min(t, 499) steps' keys/values in every layer; the buffers
    # k/v [499, 3, 128] always take 499 steps' worth; the state adds the inputs x [499, 128] and step (int64).
    fct = rows["fct_dkd"]
    assert fct[3:7] == [kib(80 * TOKEN_DKD), kib(160 * TOKEN_DKD), kib(499 * TOKEN_DKD),
                        kib(499 * TOKEN_DKD + 499 * 128 * 4 + 8)]
    # Memo (L = 64, 8 summary tokens, 10 summaries kept, 76 segment slots): after 80 steps one summary and 16 segment
    # tokens; after 160 two summaries and 32 tokens. Buffers: 80 summary + 76 segment slots; the state adds the
    # summaries [80, 128], the segment's inputs [76, 128], valid [80] (bool) and position, length (int64).
    memo = rows["memo_dkd"]
    assert memo[3:7] == [kib(24 * TOKEN_DKD), kib(48 * TOKEN_DKD), kib(156 * TOKEN_DKD),
                         kib(156 * TOKEN_DKD + 156 * 128 * 4 + 80 + 16)]
    assert memo[7] == f"{24 / 80:.3f} held at H; {156 / 499:.3f} allocated"
    # RMT keeps one summary: after 160 steps, 8 summary tokens and the 32 segment tokens.
    assert rows["rmt_dkd"][4] == kib(40 * TOKEN_DKD)
    # T-Maze (L = 32, 4 summary tokens): 160 steps end the 5th segment, which empties the segment buffer.
    assert rows["memo_tmaze"][3:5] == [kib(24 * TOKEN_TMAZE), kib(20 * TOKEN_TMAZE)]
    assert rows["fct_tmaze"][5] == kib(659 * TOKEN_TMAZE)


def test_in_place_step_advances_the_state_like_an_eager_step():
    """The body the CUDA-graph case replays: it writes into the state's own tensors and matches the eager step."""
    m, _ = build("memo_dkd", "memo_dark_key_to_door", torch.device("cpu"))
    eager, graph = Stream(m, 2, "cpu"), Stream(m, 2, "cpu")
    graph.x = eager.x
    tensors = dict(graph.state)
    body = graph.in_place()
    with torch.inference_mode():
        for _ in range(70):  # past the first segment's end (64 steps): a summary is written
            eager.step()
            body()
    assert all(graph.state[k] is tensors[k] for k in tensors)
    assert all(torch.equal(graph.state[k], eager.state[k]) for k in tensors)
    assert graph.state["valid"].sum() == 2 * 8
