"""Argument checks shared by the library: clear errors that name the argument and the allowed range."""
from __future__ import annotations

import numpy as np

from .backend import namespace, to_numpy


def positive_int(name: str, value) -> int:
    return int_at_least(name, value, 1)


def int_at_least(name: str, value, minimum: int) -> int:
    """A config's integer field: an int (not a bool) >= ``minimum``, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def finite_number(name: str, value, ok, allowed: str) -> float:
    """A config's real field: a finite int or float (not a bool) for which ``ok(value)`` holds,
    else a ValueError '<name> must be a finite number <allowed>'."""
    good = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not (good and np.isfinite(value) and ok(value)):
        raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
    return float(value)


# --- boundary helpers (DDPM side)

MAX_STEPS = 10 ** 6     # T, n_steps, n_corrector: a table or a loop that still fits in memory and time


def steps(name: str, value, minimum: int = 1) -> int:
    """A number of steps (T, n_steps, n_corrector): an int in [minimum, MAX_STEPS]."""
    return count(name, value, minimum, MAX_STEPS)


def table(name: str, value):
    """A schedule table (betas, alpha_bar): an array of either backend, a list or a tuple of real
    numbers (None, a number or a string is a TypeError naming it).  Returned unchanged."""
    if not (is_array(value) or isinstance(value, (list, tuple))):
        raise TypeError(f"{name} must be a 1-D array of numbers, got {type(value).__name__}")
    try:
        kind = to_numpy(value).dtype.kind
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 1-D array of numbers ({e})") from None
    if kind not in "iuf":
        raise TypeError(f"{name} must be a 1-D array of real numbers, got dtype {to_numpy(value).dtype}")
    return value


def timestep(name: str, value, T: int, minimum: int = 0) -> int:
    """One timestep indexing a (T,) table: an int in [minimum, T)."""
    return count(name, value, minimum, T - 1)


def timestep_batch(name: str, t, T: int, x, x_name: str = "x"):
    """Timesteps indexing a (T,) table for the batch ``x``: an int, or an integer array of x's
    backend with shape () or (B,), in [0, T).  Returned unchanged."""
    if isinstance(t, (int, np.integer)) and not isinstance(t, (bool, np.bool_)):
        timestep(name, t, T)
        return t
    if not is_array(t):
        raise TypeError(f"{name} must be an integer or an integer array of timesteps, got {type(t).__name__}")
    same_backend(**{x_name: x, name: t})
    per_example(name, t, x, x_name)
    return timesteps(t, T, name)


def times(name: str, t, x, lo: float = 0.0, hi: float = 1.0, lo_open: bool = False, x_name: str = "x"):
    """Continuous times for the batch ``x``: a real number in [lo, hi] (``lo_open``: (lo, hi]), or a
    float array of x's backend with shape () or (B,).  The values of a NumPy array are checked; a
    torch tensor's are not read back (that would be a device sync on every step)."""
    if not is_array(t):
        return real(name, t, lo, hi, lo_open=lo_open)
    same_backend(**{x_name: x, name: t})
    per_example(name, t, x, x_name)
    if namespace(t).name == "numpy":
        v = to_numpy(t)
        if v.dtype.kind not in "iuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
        if v.size and not (np.all(np.isfinite(v)) and (v.min() > lo if lo_open else v.min() >= lo) and v.max() <= hi):
            raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo:g}, {hi:g}], "
                             f"got values in [{v.min()}, {v.max()}]")
    return t


def batch(name: str, x):
    """A batch: an array of either backend with a batch axis, shape (B, ...)."""
    return array(name, x, min_ndim=1)


def batches(optional=(), **named):
    """Arrays (B, ...) of one backend and one shape (the ``optional`` ones may be None); returns
    the namespace."""
    present = {k: batch(k, v) for k, v in named.items() if not (k in optional and v is None)}
    xp = same_backend(**present)
    shapes_equal(**present)
    return xp


def function(name: str, f):
    """``f`` must be callable (a model, ``randn_like``, a callback)."""
    if not callable(f):
        raise TypeError(f"{name} must be callable, got {type(f).__name__}")
    return f


def checked(name: str, model):
    """``model`` wrapped so that every call's output is checked by ``model_call`` (an array of the
    input's shape, finite); a model wrapped once is returned as it is."""
    function(name, model)
    if getattr(model, "_minidiff_checked", False):
        return model

    def call(x, *args, **model_kwargs):
        return model_call(name, model, x, *args, **model_kwargs)

    call._minidiff_checked = True
    return call


def flag(name: str, value) -> bool:
    """A bool (a 1, a string or None is a TypeError naming it)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def betas(value, name: str = "betas") -> np.ndarray:
    b = np.asarray(value, dtype=np.float64)
    if b.ndim != 1 or b.size < 1:
        raise ValueError(f"{name} must be a 1-D array with at least one entry, got shape {b.shape}")
    if not np.all((b > 0) & (b < 1)):
        bad = b[~((b > 0) & (b < 1))][0]
        raise ValueError(f"{name} must lie in the open interval (0, 1), found {bad!r}")
    return b


def alpha_bar(value, name: str = "alpha_bar") -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 1 or a.size < 1 or not np.all((a > 0) & (a < 1)):
        raise ValueError(f"{name} must be a 1-D array with entries in (0, 1)")
    return a


def timesteps(t, T: int, name: str = "t"):
    """Integer timesteps in [0, T); works on numpy arrays and torch tensors."""
    t_np = to_numpy(t)
    if not np.issubdtype(t_np.dtype, np.integer):
        raise ValueError(f"{name} must hold integer timesteps in [0, {T}), got dtype {t_np.dtype}")
    if t_np.size and (t_np.min() < 0 or t_np.max() >= T):
        raise ValueError(f"{name} must lie in [0, T) = [0, {T}), got values in [{t_np.min()}, {t_np.max()}]")
    return t


def same_shape(name_a: str, a, name_b: str, b):
    if tuple(np.shape(a)) != tuple(np.shape(b)):
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(np.shape(a))} and {tuple(np.shape(b))}")


def choice(name: str, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def decreasing_timesteps(timesteps, T: int, name: str = "timesteps") -> np.ndarray:
    """A sampler's sub-sequence of steps: a non-empty, strictly decreasing 1-D integer array in [0, T)."""
    tau = np.asarray(timesteps)
    if tau.ndim != 1 or tau.size < 1 or not np.issubdtype(tau.dtype, np.integer):
        raise ValueError(f"{name} must be a non-empty 1-D array of integers")
    if tau.min() < 0 or tau.max() >= T:
        raise ValueError(f"{name} must lie in [0, T) = [0, {T}), got [{tau.min()}, {tau.max()}]")
    if np.any(np.diff(tau) >= 0):
        raise ValueError(f"{name} must be strictly decreasing (from noise to data)")
    return tau


def sigmas(value, name: str = "sigmas") -> np.ndarray:
    """A sampler's noise levels: finite, >= 0, strictly decreasing; returned float64 with the final
    level 0 appended when it is not already there."""
    s = np.asarray(value, dtype=np.float64)
    if s.ndim != 1 or s.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"{name} must be finite and >= 0")
    if np.any(np.diff(s) >= 0):
        raise ValueError(f"{name} must be strictly decreasing (from noise to data)")
    return s if s[-1] == 0 else np.append(s, 0.0)


def model_output(model, x, t_batch, step: int, **model_kwargs):
    """model(x, t_batch, **model_kwargs), checked: the shape of x and finite values (else a
    ValueError naming the sampler step)."""
    out = model(x, t_batch, **model_kwargs)
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"model output at step {step} has shape {tuple(out.shape)}, expected {tuple(x.shape)}")
    if not namespace(out).all_finite(out):
        raise ValueError(f"model returned non-finite values (NaN or inf) at step t={step}")
    return out


def denoiser_output(D, x, sigma: float, step: int, **model_kwargs):
    """D(x; sigma) with sigma broadcast to (B,), checked like ``model_output``."""
    xp = namespace(x)
    out = D(x, xp.asarray(np.full(x.shape[0], sigma), like=x), **model_kwargs)
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"denoiser output at step {step} has shape {tuple(out.shape)}, expected {tuple(x.shape)}")
    if not xp.all_finite(out):
        raise ValueError(f"denoiser returned non-finite values (NaN or inf) at step {step} (sigma={sigma:.4g})")
    return out


# ----------------------------------------------------------------------------------------------
# The boundary of every public function: numbers, counts, arrays, backends, dtypes.

_MAX_COUNT = 2 ** 31 - 1


def real(name: str, value, lo: float = -np.inf, hi: float = np.inf, lo_open: bool = False,
         hi_open: bool = False) -> float:
    """``value`` as a float: a finite real number (not a bool, not a string) in the interval
    from ``lo`` to ``hi`` (ends included unless ``lo_open`` / ``hi_open``).  NaN and inf are
    refused: NaN passes every comparison and inf an open upper bound."""
    ok_type = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok_type and getattr(value, "ndim", None) == 0 and getattr(value, "numel", lambda: 0)() == 1:
        value, ok_type = value.item(), True                      # a 0-d torch tensor
    if not ok_type:
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if (v <= lo if lo_open else v < lo) or (v >= hi if hi_open else v > hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return v


def count(name: str, value, minimum: int = 1, maximum: int = _MAX_COUNT) -> int:
    """``value`` as an int: an integer (not a bool, a float such as 2.0 or 1e12, nor a string
    such as "3") in [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return int(value)


def is_array(value) -> bool:
    """A NumPy array, an autograd-traced array or a torch tensor."""
    return namespace(value).is_array(value) or isinstance(value, np.ndarray)


def array(name: str, value, ndim=None, min_ndim: int = 0):
    """``value`` must be an array of either backend (a list, None or a number is a TypeError
    naming the argument), with ``ndim`` dimensions (an int or a tuple of allowed ones) or at
    least ``min_ndim``."""
    if not is_array(value):
        raise TypeError(f"{name} must be an array (numpy or torch), got {type(value).__name__}")
    n = len(value.shape)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if (allowed is not None and n not in allowed) or n < min_ndim:
        want = f"{' or '.join(str(a) for a in allowed)}" if allowed is not None else f">= {min_ndim}"
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(value.shape)}")
    return value


def same_backend(**named):
    """All the named arrays on one backend: mixing NumPy arrays and torch tensors in one call is a
    TypeError naming them.  Returns the namespace."""
    kinds = {k: ("torch" if namespace(v).name == "torch" else "numpy") for k, v in named.items() if is_array(v)}
    if len(set(kinds.values())) > 1:
        raise TypeError("arrays of both backends in one call: "
                        + ", ".join(f"{k} is {v}" for k, v in kinds.items())
                        + " (convert them with torch.as_tensor or minidiff.backend.to_numpy)")
    return namespace(*named.values())


def shapes_equal(**named):
    """The named arrays must have one shape; else a ValueError naming each with its shape."""
    shapes = {k: tuple(v.shape) for k, v in named.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("shapes must match: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))


def per_example(name: str, value, x, x_name: str = "x"):
    """``value`` must be a scalar or hold one entry per example of ``x``: shape () or (B,)."""
    shape = tuple(getattr(value, "shape", np.shape(value)))
    B = tuple(x.shape)[0] if len(x.shape) else None
    if shape not in ((), (B,)):
        raise ValueError(f"{name} must be a scalar or have shape (B,) = ({B},) like {x_name} {tuple(x.shape)}, "
                         f"got shape {shape}")
    return value


def finite_input(name: str, x):
    """``x`` holds no NaN or inf (so a NaN start is blamed on it, not on a model)."""
    if not namespace(x).all_finite(x):
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return x


def table_dtype(x):
    """The dtype a schedule table is computed in for ``x``: x's float dtype, at least float32
    (float16 tables lose 1 - alpha_bar near t = 0 to rounding)."""
    xp, dt = namespace(x), namespace(x).dtype_of(x)
    if xp.name == "torch":
        import torch
        return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt
    return np.dtype(np.float32) if np.dtype(dt).itemsize < 4 else np.dtype(dt)


def model_call(name: str, model, x, *args, **model_kwargs):
    """``model(x, *args, **model_kwargs)`` checked: an array of x's shape with finite values."""
    out = model(x, *args, **model_kwargs)
    if not is_array(out):
        raise TypeError(f"{name} must return an array, got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"{name} returned shape {tuple(out.shape)}, expected x's {tuple(x.shape)}")
    # On a GPU, reading a training output's finiteness back would stall every step: there the
    # training loop's deferred check of the loss (minidiff.torch.loop) stops a NaN run instead.
    on_accelerator = getattr(getattr(out, "device", None), "type", "cpu") not in ("cpu",)
    if not (on_accelerator and getattr(out, "requires_grad", False)) and not namespace(out).all_finite(out):
        raise ValueError(f"{name} returned non-finite values (NaN or inf)")
    return out


# --- boundary helpers (EDM side)

def integer(name: str, value, minimum: int = 1, maximum: int = _MAX_COUNT) -> int:
    """``count`` with the older wording: "{name} must be an integer >= {minimum}" (TypeError for a
    bool, a float or a string; ValueError outside [minimum, maximum])."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, got {value!r}")
    return int(value)


def callable_arg(name: str, value):
    """``value`` must be callable (a model, a density, a noise source): else a TypeError naming it."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")
    return value


def _on_host(xp, a) -> bool:
    """Reading ``a`` back costs nothing: a NumPy array or a CPU tensor (not an accelerator's,
    where a check per sampler step would add a device sync)."""
    return xp.name != "torch" or a.device.type == "cpu"


def levels(name: str, value, lo: float = 0.0, lo_open: bool = True, allow_list: bool = False):
    """Noise levels (or times): a number or an array of either backend, finite and > lo (>= lo
    when not ``lo_open``).  A number (or a list where ``allow_list``) comes back as a float64
    NumPy array; an array comes back unchanged.  Tensors on an accelerator are checked for type
    only (see ``_on_host``)."""
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        raise TypeError(f"{name} must be a number or an array, got {type(value).__name__} {value!r}")
    if isinstance(value, (list, tuple)) and not allow_list:
        raise TypeError(f"{name} must be a number or an array, got {type(value).__name__}")
    if not is_array(value):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or an array, got {type(value).__name__}") from None
    xp = namespace(value)
    if _on_host(xp, value):
        v = np.asarray(xp.to_numpy(value))
        if not np.issubdtype(v.dtype, np.number) or np.issubdtype(v.dtype, np.complexfloating):
            raise TypeError(f"{name} must hold real numbers, got dtype {v.dtype}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite (no NaN or inf)")
        if v.size and (v.min() <= lo if lo_open else v.min() < lo):
            raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got a minimum of {v.min()!r}")
    return value


def checked_model(name: str, model):
    """``model`` wrapped so that every call goes through ``model_call`` (an array of x's shape,
    finite): a bad output is blamed on ``name``."""
    callable_arg(name, model)

    def call(x, *args, **kwargs):
        return model_call(name, model, x, *args, **kwargs)

    return call


def at_least_float32(xp, x):
    """``x`` in float32 when it is float16 / bfloat16 (reductions and tables lose too many digits
    in half precision); else ``x`` itself, so valid float32/64 results stay bitwise the same."""
    dt = table_dtype(x)
    return x if xp.dtype_of(x) == dt else xp.asarray(x, dtype=dt)
