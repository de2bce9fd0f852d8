"""The backend layer (DESIGN section 3): required names, dispatch, value_and_grad, generators."""
import warnings

import autograd
import autograd.numpy as anp
import numpy as np
import pytest
import torch

from minidiff import backend
from minidiff.backend import REQUIRED_NAMES, get_namespace, namespace

BACKENDS = ("numpy", "torch")


@pytest.mark.parametrize("name", REQUIRED_NAMES)
@pytest.mark.parametrize("which", BACKENDS)
def test_every_required_name_is_provided(which, name):
    xp = get_namespace(which)
    assert getattr(xp, name) is not None


@pytest.mark.parametrize("which", BACKENDS)
def test_unknown_name_is_refused(which):
    with pytest.raises(AttributeError, match="no_such_function"):
        get_namespace(which).no_such_function


@pytest.mark.parametrize("which", BACKENDS)
def test_common_names_compute_the_same_numbers(which):
    """A few names whose spelling differs most between numpy and torch give numpy's numbers."""
    xp = get_namespace(which)
    a = np.array([[0.5, -1.5, 2.0], [3.0, 0.25, -0.75]])
    x = xp.asarray(a)
    np.testing.assert_allclose(xp.to_numpy(xp.cumprod(x, axis=1)), np.cumprod(a, axis=1))
    np.testing.assert_allclose(xp.to_numpy(xp.sort(x, axis=1)), np.sort(a, axis=1))
    np.testing.assert_allclose(xp.to_numpy(xp.clip(x, -1.0, 1.0)), np.clip(a, -1, 1))
    np.testing.assert_allclose(xp.to_numpy(xp.concatenate([x, x], axis=0)), np.concatenate([a, a]))
    np.testing.assert_allclose(xp.to_numpy(xp.expand_dims(x, 1)).shape, (2, 1, 3))
    np.testing.assert_allclose(xp.to_numpy(xp.max(x, axis=1)), a.max(axis=1))
    np.testing.assert_allclose(xp.to_numpy(xp.var(x, axis=0)), a.var(axis=0))
    np.testing.assert_allclose(float(xp.logsumexp(x)), np.log(np.exp(a).sum()))
    np.testing.assert_allclose(xp.to_numpy(xp.logsumexp(x, axis=1, keepdims=True)),
                               np.log(np.exp(a).sum(axis=1, keepdims=True)))
    np.testing.assert_allclose(xp.to_numpy(xp.gather(xp.asarray(a[0]), np.array([2, 0, 2]))), a[0][[2, 0, 2]])
    assert xp.to_numpy(xp.append_dims(xp.asarray(a[0]), 4)).shape == (3, 1, 1, 1)
    assert xp.all_finite(x) and not xp.all_finite(xp.asarray(np.array([1.0, np.nan])))
    assert xp.is_array(x) and not xp.is_array(a.tolist())
    assert xp.dtype_of(xp.asarray(a.astype(np.float32))) == xp.float32


def test_namespace_dispatch_by_type():
    assert namespace(np.zeros(3)).name == "numpy"
    assert namespace(torch.zeros(3)).name == "torch"
    assert namespace(np.zeros(3), torch.zeros(3)).name == "torch"
    assert namespace(1.0).name == "numpy"


def test_namespace_inside_autograd_trace_mixed_with_constant():
    seen = {}
    const = np.array([1.0, -2.0, 3.0])

    def f(w):
        xp = namespace(w, const)   # a traced ArrayBox and a constant ndarray
        seen["xp"], seen["type"] = xp.name, type(w)
        return xp.sum(xp.sin(w) * const) + xp.sum(xp.asarray(w, like=const) ** 2)

    w = np.array([0.1, 0.2, 0.3])
    g = autograd.grad(f)(w)
    assert seen["xp"] == "numpy" and issubclass(seen["type"], autograd.tracer.Box)
    np.testing.assert_allclose(g, np.cos(w) * const + 2 * w, rtol=1e-12)


def test_xp_override():
    assert namespace(np.zeros(3), xp="torch").name == "torch"
    assert namespace(torch.zeros(3), xp="numpy").name == "numpy"
    tb = get_namespace("torch")
    assert namespace(np.zeros(3), xp=tb) is tb
    with pytest.raises(ValueError, match="jax"):
        namespace(np.zeros(3), xp="jax")


def _loss(params, x):
    xp = namespace(x, params["W"])
    h = xp.tanh(xp.matmul(x, params["W"]) + params["b"])
    return xp.sum(h * h) + params["c"][0] * xp.sum(x)


def _finite_diff(f, params, key, h=1e-6):
    g = np.zeros_like(params[key])
    for idx in np.ndindex(g.shape):
        up = {k: v.copy() for k, v in params.items()}
        dn = {k: v.copy() for k, v in params.items()}
        up[key][idx] += h
        dn[key][idx] -= h
        g[idx] = (f(up) - f(dn)) / (2 * h)
    return g


def test_value_and_grad_both_backends_match_finite_differences():
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4), "c": np.array([0.7])}
    x = rng.standard_normal((5, 3))
    v_np, g_np = backend.value_and_grad(_loss)(params, x)
    tparams = {k: torch.from_numpy(v) for k, v in params.items()}
    v_t, g_t = backend.value_and_grad(_loss)(tparams, torch.from_numpy(x))
    assert isinstance(g_t["W"], torch.Tensor) and not g_t["W"].requires_grad
    np.testing.assert_allclose(float(v_np), float(v_t), rtol=1e-12)
    np.testing.assert_allclose(float(v_np), _loss(params, x), rtol=1e-12)
    for key in params:
        fd = _finite_diff(lambda p: _loss(p, x), params, key)
        np.testing.assert_allclose(g_np[key], fd, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(g_t[key].numpy(), g_np[key], rtol=1e-12, atol=1e-14)
    # the caller's torch leaves are untouched
    assert all(p.grad is None and not p.requires_grad for p in tparams.values())


def test_value_and_grad_unused_torch_leaf_gets_zeros():
    params = [torch.ones(2, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]
    _, g = backend.value_and_grad(lambda p: (p[0] ** 2).sum())(params)
    np.testing.assert_array_equal(g[0].numpy(), [2.0, 2.0])
    np.testing.assert_array_equal(g[1].numpy(), np.zeros(3))


@pytest.mark.parametrize("which", BACKENDS)
def test_generator_reproducible(which):
    def draw(seed):
        g = backend.generator(seed, backend=which)
        xp = get_namespace(which)
        like = xp.zeros((4, 3), dtype=xp.float64)
        return [xp.to_numpy(a) for a in (g.randn((5,)), g.randn_like(like), g.rand((3,)), g.randint(0, 100, (20,)))]

    a, b, c = draw(3), draw(3), draw(4)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.allclose(a[0], c[0]) and not np.allclose(a[1], c[1])
    assert a[1].shape == (4, 3) and a[1].dtype == np.float64
    assert a[3].shape == (20,) and a[3].min() >= 0 and a[3].max() < 100
    assert np.all((a[2] >= 0) & (a[2] < 1))


def test_generator_follows_like_and_checks_seed():
    assert backend.generator(0, like=torch.zeros(2)).backend == "torch"
    assert backend.generator(0, like=np.zeros(2)).backend == "numpy"
    g = backend.generator(1, backend="numpy")
    assert g.randn_like(np.zeros(3, dtype=np.float32)).dtype == np.float32
    for bad, error in ((-1, ValueError), (2 ** 64, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)):
        with pytest.raises(error, match="seed"):
            backend.generator(bad, backend="numpy")
    with pytest.raises(ValueError, match="jax"):
        backend.generator(0, backend="jax")


def test_set_backend_context_manager_restores():
    before = backend.get_backend()
    other = "torch" if before == "numpy" else "numpy"
    with backend.set_backend(other):
        assert backend.get_backend() == other
        assert backend.generator(0).backend == other
    assert backend.get_backend() == before
    with pytest.raises(RuntimeError):
        with backend.set_backend(other):
            raise RuntimeError("boom")
    assert backend.get_backend() == before


def test_bad_backend_name_names_it():
    with pytest.raises(ValueError, match="'jax'"):
        get_namespace("jax")
    before = backend.get_backend()
    with pytest.raises(ValueError, match="'cupy'"):
        backend.set_backend("cupy")
    assert backend.get_backend() == before


# ---------------------------------------------------------------------------------------------
# The two primitives with hand-written VJPs.

def _fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def test_linear_vjp_matches_finite_differences_and_torch():
    rng = np.random.default_rng(1)
    h, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    G = rng.standard_normal((4, 5))  # a random cotangent
    xp = get_namespace("numpy")
    f = lambda h_, W_, b_: anp.sum(xp.linear(h_, W_, b_) * G)
    np.testing.assert_allclose(xp.linear(h, W, b), h @ W + b, rtol=1e-14)
    grads = [autograd.grad(f, i)(h, W, b) for i in range(3)]
    fds = [_fd_grad(lambda a: f(a, W, b), h), _fd_grad(lambda a: f(h, a, b), W), _fd_grad(lambda a: f(h, W, a), b)]
    for g, fd in zip(grads, fds):
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    th, tW, tb = (torch.tensor(a, requires_grad=True) for a in (h, W, b))
    out = get_namespace("torch").linear(th, tW, tb)
    np.testing.assert_allclose(out.detach().numpy(), h @ W + b, rtol=1e-12)
    (out * torch.from_numpy(G)).sum().backward()
    for g, t in zip(grads, (th, tW, tb)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-13)


def test_silu_vjp_matches_finite_differences_and_torch():
    x = np.array([-40.0, -5.0, -1.0, -1e-3, 0.0, 0.3, 2.0, 8.0, 40.0])
    xp = get_namespace("numpy")
    np.testing.assert_allclose(xp.silu(x), x / (1 + np.exp(-x)), rtol=1e-14, atol=1e-300)
    g = autograd.grad(lambda a: anp.sum(xp.silu(a) * np.arange(1.0, 10.0)))(x)
    fd = _fd_grad(lambda a: np.sum(xp.silu(a) * np.arange(1.0, 10.0)), x)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    tx = torch.tensor(x, requires_grad=True)
    (get_namespace("torch").silu(tx) * torch.arange(1.0, 10.0, dtype=torch.float64)).sum().backward()
    np.testing.assert_allclose(g, tx.grad.numpy(), rtol=1e-12, atol=1e-15)
    # large negative inputs give exactly-limiting values, never a NaN or a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(xp.silu(np.array([-1000.0, 1000.0])), [-0.0, 1000.0])


@pytest.mark.parametrize("value", [1.5, np.float64(-0.5), np.array(2.0), np.array([1, -2, 3]),
                                   np.array([[0.5, -3.0]], dtype=np.float32)])
def test_silu_on_scalars_ints_and_float32(value):
    xp = get_namespace("numpy")
    a = np.asarray(value)
    expected = a / (1 + np.exp(-a.astype(np.float64)))
    out = np.asarray(xp.silu(value))
    assert out.shape == a.shape
    assert out.dtype == (np.float32 if a.dtype == np.float32 else np.float64)
    np.testing.assert_allclose(out, expected, rtol=1e-6 if a.dtype == np.float32 else 1e-14)
    if a.dtype.kind == "f":
        g = np.asarray(autograd.grad(lambda z: anp.sum(xp.silu(z)))(value))
        s = 1 / (1 + np.exp(-a.astype(np.float64)))
        np.testing.assert_allclose(g, s * (1 + a * (1 - s)), rtol=1e-6 if a.dtype == np.float32 else 1e-12)
        assert g.dtype == out.dtype


def test_to_numpy_and_stop_gradient_on_every_kind_of_array():
    import autograd
    import torch

    from minidiff.backend import stop_gradient, to_numpy

    a = np.arange(3.0)
    t = torch.arange(3.0, dtype=torch.float64, requires_grad=True)
    for x in (a, t * 2 / 2, [0.0, 1.0, 2.0], 2.5):
        out = to_numpy(x)
        assert isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, np.asarray(x if not isinstance(x, torch.Tensor) else a))
    s = stop_gradient(t * 1.0)
    assert isinstance(s, torch.Tensor) and not s.requires_grad and s.dtype == torch.float64

    def f(x):
        const = stop_gradient(x * x)           # a constant of the trace: d/dx (x * const) = const
        assert isinstance(to_numpy(const), np.ndarray)
        return np.sum(x * const)

    np.testing.assert_allclose(autograd.grad(f)(a), a * a)
