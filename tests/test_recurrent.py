"""The LSTM/GRU segment unroll (the GPU path for T > 1) equals stepping the cell with resets, values and gradients."""

import pytest
import torch

from memory.recurrent import GRU, LSTM, Segments

T, B, IN, H = 9, 6, 5, 7


def reset_patterns():
    g = torch.Generator().manual_seed(0)
    random = torch.rand(T, B, generator=g) < 0.3
    every_step = torch.ones(T, B, dtype=torch.bool)
    first_and_last = torch.zeros(T, B, dtype=torch.bool)
    first_and_last[0, ::2] = True
    first_and_last[-1, 1::2] = True
    return {"random": random, "none": torch.zeros(T, B, dtype=torch.bool), "every step": every_step,
            "first and last": first_and_last}


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("pattern", list(reset_patterns()))
def test_segment_unroll_equals_step_loop(cls, pattern):
    torch.manual_seed(1)
    m = cls(IN, H).double()
    reset = reset_patterns()[pattern]
    x = torch.randn(T, B, IN, dtype=torch.double, requires_grad=True)
    state = {k: torch.randn(B, H, dtype=torch.double, requires_grad=True) for k in m.state_keys}
    inputs = [x, *state.values(), *m.parameters()]
    results = []
    for unroll in (m.step_loop, m.segment_unroll):
        out, final = unroll(x, state, reset)
        loss = (out * torch.linspace(-1, 1, H, dtype=torch.double)).sum() + sum(v.pow(2).sum() for v in final.values())
        results.append((out, final, torch.autograd.grad(loss, inputs)))
    (out_a, final_a, grad_a), (out_b, final_b, grad_b) = results
    torch.testing.assert_close(out_b, out_a, atol=1e-12, rtol=0)
    for k in final_a:
        torch.testing.assert_close(final_b[k], final_a[k], atol=1e-12, rtol=0)
    for a, b in zip(grad_a, grad_b):
        torch.testing.assert_close(b, a, atol=1e-12, rtol=0)


def test_segments_of_a_hand_made_reset_pattern():
    reset = torch.tensor([[False, True], [True, False], [False, False], [False, True]])  # [T=4, B=2]
    seg = Segments(reset)
    # Column 0: steps 0 | 1-3; column 1: steps 0-2 (fresh) | 3 (fresh). Longest first, ties by column then time.
    assert seg.column.tolist() == [0, 1, 0, 1]
    assert seg.fresh.tolist() == [True, True, False, True]
    assert seg.batch_sizes.tolist() == [4, 2, 2]
    flat = [(i // 2, i % 2) for i in seg.packed_order.tolist()]  # (t, b) of each packed row
    assert flat == [(1, 0), (0, 1), (0, 0), (3, 1), (2, 0), (1, 1), (3, 0), (2, 1)]
    assert seg.last_of_column.tolist() == [0, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", [LSTM, GRU])
def test_cuda_unroll_uses_cudnn_segments_and_matches_the_loop(cls):
    torch.manual_seed(0)
    m = cls(32, 64).cuda()
    x = torch.randn(64, 16, 32, device="cuda")
    reset = torch.rand(64, 16, device="cuda") < 0.05
    state = m.initial_state(16, "cuda")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out, final = m(x, state, reset)
    ref, ref_final = m.step_loop(x, state, reset)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final["h"], ref_final["h"], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_unroll_runs_under_bf16_autocast():
    m = LSTM(32, 64).cuda()
    x = torch.randn(16, 8, 32, device="cuda").bfloat16()  # as an encoder under autocast hands it over
    reset = torch.zeros(16, 8, dtype=torch.bool, device="cuda")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out, _ = m(x, m.initial_state(8, "cuda"), reset)
        ref, _ = m.step_loop(x.float(), m.initial_state(8, "cuda"), reset)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)  # the LSTM itself stays in float32
