"""The Haiku twins of the HCAM read and memory: same weights and inputs give the same outputs and gradients."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# These tests compile small graphs once: skipping XLA's slow CPU optimisation passes saves most of their time.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")

import haiku as hk  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from memory.haiku import hcam as hk_hcam  # noqa: E402
from memory.hcam import HCAM, HierarchicalMemoryAttention, haiku_leaves, to_haiku_params  # noqa: E402
from parity import assert_relative_close  # noqa: E402


def torch_grads_as_haiku(module):
    grads = {}
    for path, leaf in haiku_leaves(module).items():
        if isinstance(leaf, nn.Linear):
            grads[path] = {"w": leaf.weight.grad.numpy().T}
            if leaf.bias is not None:
                grads[path]["b"] = leaf.bias.grad.numpy()
        else:
            grads[path] = {"scale": leaf.weight.grad.numpy(), "offset": leaf.bias.grad.numpy()}
    return grads


def assert_grads_equal(module, jax_grads):
    """Each parameter's gradient to 1e-5 of the largest gradient entry (some, like attention key biases, are 0)."""
    torch_grads = torch_grads_as_haiku(module)
    assert set(torch_grads) == set(jax_grads)
    scale = max(np.abs(v).max() for leaf in torch_grads.values() for v in leaf.values())
    for path, leaf in torch_grads.items():
        for name, value in leaf.items():
            assert np.abs(np.asarray(jax_grads[path][name]) - value).max() <= 1e-5 * scale, f"{path}/{name}"


def test_read_outputs_and_gradients_match():
    torch.manual_seed(0)
    b, q, e, m, c, d, f, k, h = 3, 2, 6, 7, 4, 8, 12, 3, 3
    read = HierarchicalMemoryAttention(e, d, f, k, h)
    g = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(b, q, e, generator=g), torch.randn(b, m, d, generator=g)
    contents, mask = torch.randn(b, m, c, d, generator=g), torch.rand(b, q, m, generator=g) < 0.6
    mask[0, 0] = False  # all masked: ties
    cotangent = torch.randn(b, q, f, generator=g)

    queries.requires_grad_(True)
    (read(queries, keys, contents, mask) * cotangent).sum().backward()
    out = read(queries, keys, contents, mask).detach()

    fn = hk.without_apply_rng(hk.transform(lambda *a: hk_hcam.HierarchicalMemoryAttention(f, k, h)(*a)))
    params = to_haiku_params(read)
    assert set(params) == set(jax.eval_shape(fn.init, jax.random.PRNGKey(0), queries.detach().numpy(), keys.numpy(),
                                             contents.numpy(), mask.numpy()))

    def loss(p, qs):
        return (fn.apply(p, qs, keys.numpy(), contents.numpy(), mask.numpy()) * cotangent.numpy()).sum()

    assert_relative_close(jax.jit(fn.apply)(params, queries.detach().numpy(), keys.numpy(), contents.numpy(),
                                      mask.numpy()), out)
    param_grads, query_grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, queries.detach().numpy())
    assert_relative_close(query_grads, queries.grad)
    assert_grads_equal(read, param_grads)


@pytest.mark.parametrize("stop_gradient, in_place", [(True, False), (False, False), (True, True)])
def test_memory_outputs_states_and_gradients_match(stop_gradient, in_place):
    """Also with gradients into chunks stored during the call, which PyTorch writes into its store in place."""
    config = {"width": 8, "layers": 2, "heads": 2, "chunk_size": 3, "top_k": 2, "max_chunks": 3,
              "stop_gradient": stop_gradient}
    torch.manual_seed(0)
    mem = HCAM(5, **config, in_place=in_place)
    steps, batch = 10, 3
    g = torch.Generator().manual_seed(2)
    x = torch.randn(steps, batch, 5, generator=g, requires_grad=True)
    reset = torch.zeros(steps, batch, dtype=torch.bool)
    reset[0], reset[7, 1] = True, True  # env 1 starts a new episode mid-chunk, after one eviction
    cotangent = torch.randn(steps, batch, 8, generator=g)
    out, state = mem(x, mem.initial_state(batch), reset)
    (out * cotangent).sum().backward()

    fn = hk.without_apply_rng(hk.transform(lambda xs: hk_hcam.HCAM(**config)(
        xs, hk_hcam.initial_state(batch, 8, 2, 3, 3), reset.numpy())))
    params = to_haiku_params(mem)

    def loss(p, xs):
        outputs, final = fn.apply(p, xs)
        return (outputs * cotangent.numpy()).sum(), (outputs, final)

    grads, (jax_out, jax_state) = jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(params, x.detach().numpy())
    param_grads, x_grads = grads
    assert_relative_close(jax_out, out.detach())
    for key, value in state.items():
        assert_relative_close(jax_state[key], value.detach())
    assert_relative_close(x_grads, x.grad)
    assert_grads_equal(mem, param_grads)
