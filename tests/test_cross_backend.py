"""DESIGN section 3, the central test: one algorithm, two backends, the same numbers.

The same ``init_mlp`` weights run as the autograd MLP (NumPy) and as ``TorchMLP.from_params``;
the shared ``ddpm_loss``, its gradient and ``ddpm_sample`` (with the same x_T and the same noise
sequence) must agree to within the dtype's rounding error: eps times the number of terms summed
along the computation (``_tol``), so the bound holds on any CPU and for either dtype.
"""
from functools import partial

import numpy as np
import pytest
import torch

from minidiff import backend, losses, samplers, schedules
from minidiff.nn import init_mlp, mlp
from minidiff.torch import TorchMLP


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """torch's intra-op threads spin against each other on a loaded 2-core machine (measured 3-4x
    slower for these tiny tensors); one thread is plenty here.  Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

T = 50
HIDDEN, DEPTH, T_DIM, B = 32, 2, 16, 64
FAN_INS = 2 + T_DIM + HIDDEN * DEPTH      # the MLP's summed reduction lengths along one forward pass


def _tol(dtype, n_terms: int) -> float:
    """Relative rounding error of a sum of ``n_terms`` products in ``dtype``: eps * n_terms (the
    classical bound; the two backends sum in different orders, so they may differ by that much)."""
    return float(np.finfo(np.dtype(dtype)).eps) * n_terms


TOL = {dtype: _tol(dtype, B * HIDDEN) for dtype in ("float64", "float32")}   # loss and gradients: batch x width


def _setup(dtype, B=B, seed=0):
    rng = np.random.default_rng(seed)
    params = init_mlp(rng, 2, hidden=HIDDEN, depth=DEPTH, t_dim=T_DIM, dtype=np.dtype(dtype))
    # make the output layer O(1) so that the comparisons are not trivially small
    params[-1][0] = (params[-1][0] * 10).astype(dtype)
    params[-1][1] = rng.standard_normal(2).astype(dtype) * 0.1
    betas = schedules.linear_betas(T, 1e-3, 0.2)
    x0 = rng.standard_normal((B, 2)).astype(dtype)
    t = rng.integers(0, T, B)
    noise = rng.standard_normal((B, 2)).astype(dtype)
    return params, betas, x0, t, noise


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("target", ["eps", "v"])
def test_ddpm_loss_and_gradient_agree(dtype, target):
    params, betas, x0, t, noise = _setup(dtype)
    ab = schedules.alpha_bars(betas)

    def loss_np(p):
        return losses.ddpm_loss(partial(mlp, p), x0, t, noise, ab, target)

    value, grads = backend.value_and_grad(loss_np)(params)

    model = TorchMLP.from_params(params)
    assert next(model.parameters()).dtype == getattr(torch, dtype)
    loss_t = losses.ddpm_loss(model, torch.from_numpy(x0), torch.from_numpy(t), torch.from_numpy(noise), ab, target)
    loss_t.backward()

    tol = TOL[dtype]
    assert loss_t.dtype == getattr(torch, dtype) and np.asarray(value).dtype == np.dtype(dtype)
    assert float(value) > 1e-2  # not trivially small
    np.testing.assert_allclose(float(value), loss_t.item(), rtol=tol)
    for (gW, gb), lin in zip(grads, model.linears):
        # nn.Linear stores W.T
        scale = max(np.abs(gW).max(), 1e-3)
        np.testing.assert_allclose(gW, lin.weight.grad.numpy().T, rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(gb, lin.bias.grad.numpy(), rtol=tol, atol=tol * max(np.abs(gb).max(), 1e-3))
    # and backend.value_and_grad on torch leaves gives torch's gradient too
    tparams = [[torch.from_numpy(W), torch.from_numpy(b)] for W, b in params]
    v2, g2 = backend.value_and_grad(
        lambda p: losses.ddpm_loss(partial(mlp, p), torch.from_numpy(x0), torch.from_numpy(t),
                                   torch.from_numpy(noise), ab, target))(tparams)
    np.testing.assert_allclose(float(v2), float(value), rtol=tol)
    for (gW, gb), (tW, tb) in zip(grads, g2):
        np.testing.assert_allclose(tW.numpy(), gW, rtol=tol, atol=tol * max(np.abs(gW).max(), 1e-3))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_sample_agrees(dtype, variance):
    params, betas, _, _, _ = _setup(dtype)
    B = 32
    x_T = np.random.default_rng(5).standard_normal((B, 2)).astype(dtype)

    draws = []
    gen = backend.generator(7, backend="numpy")

    def randn_np(x):
        z = gen.randn_like(x)
        draws.append(z.copy())
        return z

    out_np = samplers.ddpm_sample(partial(mlp, params), x_T, betas, randn_np, variance=variance)
    assert len(draws) == T - 1 and out_np.dtype == np.dtype(dtype)

    replay = iter(draws)
    model = TorchMLP.from_params(params)
    with torch.no_grad():
        out_t = samplers.ddpm_sample(model, torch.from_numpy(x_T), betas,
                                     lambda x: torch.from_numpy(next(replay)), variance=variance)
    assert out_t.dtype == getattr(torch, dtype)
    assert np.abs(out_np).max() > 0.1
    tol = _tol(dtype, T * FAN_INS)      # T steps, one forward pass each
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=tol, atol=tol * np.abs(out_np).max())


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_generic_mlp_on_torch_tensors_equals_torch_module(dtype):
    params, _, x0, t, _ = _setup(dtype)
    tparams = [[torch.from_numpy(W), torch.from_numpy(b)] for W, b in params]
    x, tt = torch.from_numpy(x0), torch.from_numpy(t)
    out_generic = mlp(tparams, x, tt)
    with torch.no_grad():
        out_module = TorchMLP.from_params(params)(x, tt)
    out_np = mlp(params, x0, t)
    assert isinstance(out_generic, torch.Tensor) and out_generic.dtype == getattr(torch, dtype)
    tol = _tol(dtype, FAN_INS)
    np.testing.assert_allclose(out_generic.numpy(), out_module.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(out_np, out_module.numpy(), rtol=tol, atol=tol)


def test_to_params_round_trip():
    params = init_mlp(0, 2, hidden=8, depth=2, t_dim=4)
    back = TorchMLP.from_params(params).to_params()
    for (W, b), (W2, b2) in zip(params, back):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
