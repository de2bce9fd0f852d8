"""One algorithm, two backends: array-namespace dispatch (DESIGN section 3).

Every algorithm in minidiff asks ``namespace(*arrays)`` for its array namespace ``xp`` and
uses only the names in ``REQUIRED_NAMES``.  NumPy arrays (and autograd's traced ``ArrayBox``)
get the NumPy backend, built on ``autograd.numpy``; torch tensors get the torch backend, built
on ``array_api_compat.torch``.  The dispatch looks at the inputs, never at global state.

Randomness is passed in: ``generator(seed, like=x)`` gives a small object with ``randn_like``,
``randn``, ``randint`` and ``rand`` that yields the same numbers for the same seed.

The global ``set_backend`` / ``MINIDIFF_BACKEND`` exists only for what has no input array to
dispatch on: building a model, an optimiser, a data batch.
"""
from __future__ import annotations

import contextlib
import os

import autograd
import autograd.numpy as anp
import numpy as np

# The names every backend must provide (tested for each backend in tests/test_backend.py).
REQUIRED_NAMES = (
    "name", "float64", "float32", "int64",
    "asarray", "zeros", "ones", "zeros_like", "ones_like", "full_like", "arange", "linspace",
    "sqrt", "exp", "log", "log1p", "expm1", "sin", "cos", "tanh", "abs", "square", "sign",
    "maximum", "minimum", "clip", "where", "isfinite", "isnan",
    "sum", "mean", "max", "min", "std", "var", "cumprod", "sort", "argsort", "logsumexp",
    "matmul", "linear", "silu", "reshape", "concatenate", "stack", "expand_dims", "transpose",
    "gather", "append_dims", "int_array", "to_numpy", "is_array", "dtype_of", "all_finite",
)

_BACKEND_NAMES = ("numpy", "torch")


# Two neural-network primitives with hand-written vector-Jacobian products.  autograd would
# differentiate the composite expressions too, but one primitive with its VJP is 2-3x faster
# than tracing every elementwise operation (see benchmarks/autograd_vs_torch.py).
@autograd.extend.primitive
def _np_linear(h, W, b):
    """h @ W + b.  h: (B, n_in), W: (n_in, n_out), b: (n_out,) -> (B, n_out)."""
    out = h @ W
    if isinstance(out, np.ndarray) and out.dtype == np.result_type(out, b) and out.shape == np.broadcast_shapes(
            out.shape, np.shape(b)):
        out += b        # in place: the same sum as ``h @ W + b`` without a second (B, n_out) array
        return out
    return out + b      # mixed dtypes or a broadcast that grows the result: exactly h @ W + b


autograd.extend.defvjp(
    _np_linear,
    lambda ans, h, W, b: lambda g: g @ W.T,
    lambda ans, h, W, b: lambda g: h.T @ g,
    lambda ans, h, W, b: lambda g: g.sum(axis=0),
)


def _sigmoid(x):
    """1 / (1 + exp(-x)), computed in one buffer of x's dtype (float32 stays float32)."""
    x = np.asarray(x)
    s = np.array(x, dtype=np.result_type(x, np.float32))  # a float array buffer, also for ints and 0-d input
    np.negative(s, out=s)
    with np.errstate(over="ignore"):  # exp(-x) -> inf gives the right limit 0
        np.exp(s, out=s)
    s += 1
    return np.divide(1, s, out=s)


# The sigmoid of the last SiLU forward, (output, sigmoid), handed to its VJP: autograd builds the
# VJP right after the forward call (autograd.core.VJPNode), so the backward pass need not
# recompute exp.  The identity check makes a stale entry harmless (it is then recomputed).
_silu_saved = [None]


@autograd.extend.primitive
def _np_silu(x):
    """SiLU(x) = x sigmoid(x)."""
    s = _sigmoid(x)
    ans = x * s
    _silu_saved[0] = (ans, s)
    return ans


def _silu_vjp(ans, x):
    saved, _silu_saved[0] = _silu_saved[0], None
    s = saved[1] if saved is not None and saved[0] is ans else _sigmoid(x)
    d = np.add(1, x, dtype=s.dtype)  # SiLU'(x) = s (1 + x - x s) = s (1 + x - ans)
    d -= ans
    d *= s
    return lambda g: g * d


autograd.extend.defvjp(_np_silu, _silu_vjp)


def _is_torch(a) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


class NumpyBackend:
    """autograd.numpy behind the common names: works on ndarrays and traced ArrayBoxes alike."""

    name = "numpy"
    float64, float32, int64 = np.float64, np.float32, np.int64

    def __getattr__(self, attr):  # names that autograd.numpy already spells the common way
        if attr in REQUIRED_NAMES:
            return getattr(anp, attr)
        raise AttributeError(f"numpy backend has no {attr!r}; allowed names: REQUIRED_NAMES")

    linear = staticmethod(_np_linear)
    silu = staticmethod(_np_silu)

    def asarray(self, a, like=None, dtype=None):
        """``a`` as an array; with ``like``, cast to ``like``'s floating dtype."""
        if dtype is None and like is not None:
            dtype = self.dtype_of(like)
        if isinstance(a, autograd.tracer.Box):
            return a if dtype is None else a.astype(dtype)  # keep the trace
        return np.asarray(a, dtype=dtype)

    def zeros(self, shape, dtype=np.float64, like=None):
        return np.zeros(shape, dtype=self.dtype_of(like) if like is not None else dtype)

    def ones(self, shape, dtype=np.float64, like=None):
        return np.ones(shape, dtype=self.dtype_of(like) if like is not None else dtype)

    def arange(self, *args, dtype=None, like=None):
        return np.arange(*args, dtype=dtype)

    def linspace(self, start, stop, num, dtype=np.float64, like=None):
        return np.linspace(start, stop, num, dtype=dtype)

    def logsumexp(self, a, axis=None, keepdims=False):
        from autograd.scipy.special import logsumexp
        return logsumexp(a, axis=axis, keepdims=keepdims)

    def gather(self, a, index):
        """``a[index]`` for a 1-D table ``a`` and an integer index array."""
        return a[np.asarray(index, dtype=np.int64)]

    def int_array(self, values, like=None):
        """Integer (int64) array, e.g. timesteps, on ``like``'s device."""
        return np.asarray(values, dtype=np.int64)

    def append_dims(self, c, ndim):
        """(B,) -> (B, 1, ..., 1) with ``ndim`` axes in all, to broadcast against a batch."""
        return anp.reshape(c, anp.shape(c) + (1,) * (ndim - anp.ndim(c)))

    def to_numpy(self, a):
        return np.asarray(getattr(a, "_value", a))

    def is_array(self, a):
        return isinstance(a, (np.ndarray, autograd.tracer.Box))

    def dtype_of(self, a):
        dt = np.asarray(getattr(a, "_value", a)).dtype
        return dt if np.issubdtype(dt, np.floating) else np.float64

    def all_finite(self, a):
        return bool(np.all(np.isfinite(self.to_numpy(a))))


class TorchBackend:
    """array_api_compat.torch behind the common names; device and dtype follow the inputs."""

    name = "torch"

    def __init__(self):
        import array_api_compat.torch as xpt
        import torch

        self._torch, self._xp = torch, xpt
        self.float64, self.float32, self.int64 = torch.float64, torch.float32, torch.int64

    def __getattr__(self, attr):
        if attr in REQUIRED_NAMES:
            return getattr(self._xp, attr)
        raise AttributeError(f"torch backend has no {attr!r}; allowed names: REQUIRED_NAMES")

    def asarray(self, a, like=None, dtype=None):
        torch = self._torch
        device = like.device if like is not None and _is_torch(like) else None
        if dtype is None and like is not None:
            dtype = self.dtype_of(like)
        if isinstance(a, np.ndarray) and dtype is None and a.dtype == np.float64 and like is None:
            dtype = torch.float64
        return torch.as_tensor(a, dtype=dtype, device=device)

    def zeros(self, shape, dtype=None, like=None):
        return self._torch.zeros(shape, dtype=self.dtype_of(like) if like is not None else dtype,
                                 device=like.device if like is not None else None)

    def ones(self, shape, dtype=None, like=None):
        return self._torch.ones(shape, dtype=self.dtype_of(like) if like is not None else dtype,
                                device=like.device if like is not None else None)

    def arange(self, *args, dtype=None, like=None):
        return self._torch.arange(*args, dtype=dtype, device=like.device if like is not None else None)

    def linspace(self, start, stop, num, dtype=None, like=None):
        return self._torch.linspace(start, stop, num, dtype=dtype or self._torch.float64,
                                    device=like.device if like is not None else None)

    def concatenate(self, arrays, axis=0):
        return self._torch.cat(list(arrays), dim=axis)

    def linear(self, h, W, b):
        """h @ W + b.  h: (B, n_in), W: (n_in, n_out), b: (n_out,) -> (B, n_out)."""
        return self._torch.addmm(b, h, W)

    def silu(self, x):
        return self._torch.nn.functional.silu(x)

    def expand_dims(self, a, axis):
        return self._torch.unsqueeze(a, axis)

    def transpose(self, a, axes=None):
        return a.T if axes is None else a.permute(*axes)

    def clip(self, a, a_min=None, a_max=None):
        return self._torch.clamp(a, a_min, a_max)

    def cumprod(self, a, axis=0):
        return self._torch.cumprod(a, dim=axis)

    def sort(self, a, axis=-1):
        return self._torch.sort(a, dim=axis).values

    def argsort(self, a, axis=-1):
        return self._torch.argsort(a, dim=axis)

    def max(self, a, axis=None, keepdims=False):
        return self._xp.max(a, axis=axis, keepdims=keepdims)

    def min(self, a, axis=None, keepdims=False):
        return self._xp.min(a, axis=axis, keepdims=keepdims)

    def std(self, a, axis=None, keepdims=False):
        return self._xp.std(a, axis=axis, keepdims=keepdims)

    def var(self, a, axis=None, keepdims=False):
        return self._xp.var(a, axis=axis, keepdims=keepdims)

    def logsumexp(self, a, axis=None, keepdims=False):
        if axis is None:
            return self._torch.logsumexp(a.reshape(-1), dim=0)
        return self._torch.logsumexp(a, dim=axis, keepdim=keepdims)

    def gather(self, a, index):
        """``a[index]`` for a 1-D table ``a`` and an integer index array."""
        torch = self._torch
        if not _is_torch(a):
            a = torch.as_tensor(np.asarray(a))
        index = torch.as_tensor(index, dtype=torch.int64, device=a.device)
        return a[index]

    def int_array(self, values, like=None):
        """Integer (int64) tensor, e.g. timesteps, on ``like``'s device."""
        device = like.device if like is not None and _is_torch(like) else None
        return self._torch.as_tensor(np.asarray(values, dtype=np.int64), device=device)

    def append_dims(self, c, ndim):
        """(B,) -> (B, 1, ..., 1) with ``ndim`` axes in all, to broadcast against a batch."""
        return c.reshape(tuple(c.shape) + (1,) * (ndim - c.ndim))

    def to_numpy(self, a):
        return a.detach().cpu().numpy() if _is_torch(a) else np.asarray(a)

    def is_array(self, a):
        return _is_torch(a)

    def dtype_of(self, a):
        if _is_torch(a) and a.is_floating_point():
            return a.dtype
        return self._torch.get_default_dtype()

    def all_finite(self, a):
        return bool(self._torch.isfinite(a).all())


_INSTANCES: dict = {}


def get_namespace(name: str):
    """The backend object called ``name`` ('numpy' or 'torch')."""
    if name not in _BACKEND_NAMES:
        raise ValueError(f"backend must be one of {_BACKEND_NAMES}, got {name!r}")
    if name not in _INSTANCES:
        _INSTANCES[name] = NumpyBackend() if name == "numpy" else TorchBackend()
    return _INSTANCES[name]


def namespace(*arrays, xp=None):
    """The array namespace for ``arrays``: torch if any is a torch tensor, else numpy/autograd.

    ``xp`` overrides the dispatch (a backend object or its name), as in scikit-learn.
    """
    if xp is not None:
        return get_namespace(xp) if isinstance(xp, str) else xp
    for a in arrays:
        if _is_torch(a):
            return get_namespace("torch")
    return get_namespace("numpy")


def to_numpy(a) -> np.ndarray:
    """``a`` as a NumPy array, whatever it is: an ndarray, a traced autograd box (its value), a
    torch tensor on any device (detached, copied to the CPU), a number or a list."""
    return namespace(a).to_numpy(a)


def stop_gradient(a):
    """``a`` as a constant of the computation: its value without the autograd trace (NumPy) or
    detached from the graph (torch); same backend, device and dtype."""
    return a.detach() if _is_torch(a) else getattr(a, "_value", a)


# ----------------------------------------------------------------------------------------------
# The global default, only for what has no input array to dispatch on.

_default = [os.environ.get("MINIDIFF_BACKEND", "numpy")]


def get_backend() -> str:
    """The default backend's name ('numpy' unless set_backend or MINIDIFF_BACKEND says otherwise)."""
    if _default[-1] not in _BACKEND_NAMES:
        raise ValueError(f"MINIDIFF_BACKEND must be one of {_BACKEND_NAMES}, got {_default[-1]!r}")
    return _default[-1]


def set_backend(name: str):
    """Set the default backend; also usable as ``with set_backend('torch'): ...``."""
    get_namespace(name)  # validates
    previous = _default[-1]
    _default[-1] = name

    @contextlib.contextmanager
    def _restore():
        try:
            yield
        finally:
            _default[-1] = previous

    return _restore()


# ----------------------------------------------------------------------------------------------
# Pytrees: parameters are plain nested dicts / lists / tuples of arrays (as in HIPS/autograd).

def tree_leaves(tree) -> list:
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in tree_leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in tree_leaves(item)]
    return [tree]


def tree_map(f, tree, *rest):
    """Apply ``f`` leaf-wise to ``tree`` (and to trees of the same structure in ``rest``)."""
    if isinstance(tree, dict):
        return {k: tree_map(f, tree[k], *(r[k] for r in rest)) for k in tree}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(f, t, *r) for t, *r in zip(tree, *rest))
    return f(tree, *rest)


def _tree_unflatten(tree, leaves):
    it = iter(leaves)

    def build(t):
        if isinstance(t, dict):
            return {k: build(t[k]) for k in sorted(t)}
        if isinstance(t, (list, tuple)):
            return type(t)(build(x) for x in t)
        return next(it)

    out = build(tree)
    return {k: out[k] for k in tree} if isinstance(tree, dict) else out


# ----------------------------------------------------------------------------------------------
# One value_and_grad over both backends.

def value_and_grad(fun):
    """``value_and_grad(fun)(params, *args) -> (fun(params, *args), d fun / d params)``.

    ``params`` is a pytree of arrays; the gradient has the same structure.  NumPy leaves are
    differentiated with ``autograd``, torch leaves with ``torch.autograd.grad``.
    """
    autograd_vg = autograd.value_and_grad(fun)

    def wrapped(params, *args, **kwargs):
        leaves = tree_leaves(params)
        if not any(_is_torch(leaf) for leaf in leaves):
            return autograd_vg(params, *args, **kwargs)
        import torch

        leaves = [leaf.detach().requires_grad_(True) for leaf in leaves]
        with torch.enable_grad():
            value = fun(_tree_unflatten(params, leaves), *args, **kwargs)
            grads = torch.autograd.grad(value, leaves, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
        return value.detach(), _tree_unflatten(params, grads)

    return wrapped


def vjp(fun, x, v):
    """v^T J_fun(x): the vector-Jacobian product of ``fun`` at ``x``, on either backend.
    fun maps (B, ...) to an array of the same shape; v has that shape."""
    if _is_torch(x):
        import torch

        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(fun(x), x, v)
        return g.detach()
    vjp_fn, _ = autograd.make_vjp(fun)(x)
    return vjp_fn(v)


# ----------------------------------------------------------------------------------------------
# Seeded noise, one small generator per backend (EDM's sampler takes ``randn_like`` likewise).

def _seed(seed) -> int:
    """A seed: an integer in [0, 2^63) (a bool, a float or a string is a TypeError)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be a non-negative integer, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be a non-negative integer below 2^63, got {seed!r}")
    return int(seed)


def _shape(shape) -> tuple:
    """A noise shape: an int or a tuple of ints >= 0 (a bool, a float, a string or a huge size is
    refused, naming ``shape``)."""
    dims = (shape,) if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)) else shape
    if not isinstance(dims, (tuple, list)) or any(
            isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    if any(d < 0 for d in dims) or int(np.prod([int(d) for d in dims], dtype=object)) > 2 ** 34:
        raise ValueError(f"shape must hold sizes >= 0 with at most 2^34 entries in all, got {shape!r}")
    return tuple(int(d) for d in dims)


def _like(x):
    if not (isinstance(x, np.ndarray) or _is_torch(x) or get_namespace("numpy").is_array(x)):
        raise TypeError(f"x must be an array (numpy or torch), got {type(x).__name__}")
    return x


def _bounds(low, high):
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    if not low < high:
        raise ValueError(f"need low < high, got low={low}, high={high}")
    return int(low), int(high)


class NumpyGenerator:
    """Seeded Gaussian / uniform / integer noise as NumPy arrays."""

    backend = "numpy"

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(_seed(seed))

    def randn(self, shape, dtype=np.float64):
        return self.rng.standard_normal(_shape(shape)).astype(dtype, copy=False)

    def randn_like(self, x):
        return self.randn(np.shape(_like(x)), dtype=get_namespace("numpy").dtype_of(x))

    def rand(self, shape, dtype=np.float64):
        return self.rng.random(_shape(shape)).astype(dtype, copy=False)

    def randint(self, low, high, shape):
        low, high = _bounds(low, high)
        return self.rng.integers(low, high, size=_shape(shape))

    def rademacher_like(self, x):
        _like(x)
        return np.sign(self.rng.random(np.shape(x)) - 0.5).astype(get_namespace("numpy").dtype_of(x))


class TorchGenerator:
    """Seeded Gaussian / uniform / integer noise as torch tensors on one device."""

    backend = "torch"

    def __init__(self, seed: int, device=None):
        import torch

        self._torch = torch
        self.device = torch.device(device or "cpu")
        self.rng = torch.Generator(device=self.device).manual_seed(_seed(seed))

    def randn(self, shape, dtype=None):
        return self._torch.randn(_shape(shape), generator=self.rng, device=self.device, dtype=dtype)

    def randn_like(self, x):
        return self.randn(tuple(_like(x).shape), dtype=x.dtype)

    def rand(self, shape, dtype=None):
        return self._torch.rand(_shape(shape), generator=self.rng, device=self.device, dtype=dtype)

    def randint(self, low, high, shape):
        low, high = _bounds(low, high)
        return self._torch.randint(low, high, _shape(shape), generator=self.rng, device=self.device)

    def rademacher_like(self, x):
        _like(x)
        return self._torch.sign(self.rand(tuple(x.shape), dtype=x.dtype) - 0.5)


def generator(seed: int, backend: str | None = None, device=None, like=None):
    """A seeded noise source for ``backend`` (default: the backend of ``like``, else the global one)."""
    seed = _seed(seed)
    if backend is None:
        backend = namespace(like).name if like is not None else get_backend()
        if like is not None and _is_torch(like):
            device = device or like.device
    if backend == "numpy":
        return NumpyGenerator(int(seed))
    if backend == "torch":
        return TorchGenerator(int(seed), device=device)
    raise ValueError(f"backend must be one of {_BACKEND_NAMES}, got {backend!r}")
