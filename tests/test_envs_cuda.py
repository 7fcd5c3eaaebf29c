"""The batched gridworld tasks on a GPU: the same steps as on the CPU, eagerly and replayed as a CUDA graph.
Skipped on CPU-only machines (CI); run on the GPU machine with ``python -m pytest tests/test_envs_cuda.py``."""

import pytest
import torch

import envs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TASKS = [("rlmem/EndlessTMaze-v0", {"n": 3, "l_max": 5}), ("rlmem/Ballet-v0", {"level": "2_delay16"}),
         ("rlmem/ColorCubes-v0", {"level": "trivial"}), ("rlmem/ColorCubes-v0", {"level": "medium"}),
         ("rlmem/ColorCubes-v0", {"level": "extreme"}), ("rlmem/DarkKeyToDoor-v0", {}),
         ("rlmem/RoomBallet-v0", {})]
N, STEPS = 64, 300


def actions_for(env) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, int(env.single_action_space.n), (STEPS, N), generator=generator)


def assert_same(expected, actual, t):
    """obs, reward, terminated, truncated equal: exactly, up to float rounding for float arrays."""
    for name, a, b in zip(("obs", "reward", "terminated", "truncated"), expected[:4], actual[:4]):
        for key in a if isinstance(a, dict) else [None]:
            x, y = (a, b) if key is None else (a[key], b[key])
            tol = 1e-6 if x.is_floating_point() else 0
            torch.testing.assert_close(y.cpu(), x.cpu(), rtol=0, atol=tol, msg=f"step {t}: {name} {key or ''}")


@pytest.mark.parametrize("env_id,kwargs", TASKS, ids=[f"{i}-{k}" for i, k in TASKS])
def test_gpu_steps_equal_cpu_steps(env_id, kwargs):
    cpu, cuda = (envs.make_vector(env_id, N, device=d, **kwargs) for d in ("cpu", "cuda"))
    cpu.reset(seed=3), cuda.reset(seed=3)
    actions = actions_for(cpu)
    for t in range(STEPS):
        assert_same(cpu.step(actions[t]), cuda.step(actions[t].cuda()), t)


@pytest.mark.parametrize("env_id,kwargs", TASKS, ids=[f"{i}-{k}" for i, k in TASKS])
def test_graph_replayed_steps_equal_eager_steps(env_id, kwargs):
    eager, graphed = (envs.make_vector(env_id, N, device="cuda", **kwargs) for _ in range(2))
    eager.reset(seed=5), graphed.reset(seed=5)
    actions = actions_for(eager).cuda()
    action = actions[0].clone()
    outputs = {}

    def body():
        outputs["step"] = graphed.step(action)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up steps, matched on the eager copy
        for t in range(2):
            action.copy_(actions[t])
            body()
            eager.step(actions[t])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        body()
    for t in range(2, STEPS):
        action.copy_(actions[t])
        graph.replay()
        assert_same(eager.step(actions[t]), outputs["step"], t)
