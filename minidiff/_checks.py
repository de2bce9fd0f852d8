"""Argument checks shared by the library: clear errors that name the argument and the allowed range."""
from __future__ import annotations

import numpy as np

from .backend import namespace, to_numpy


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


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


def batch_of(name: str, t, x):
    """``t`` must be a scalar or hold one entry per example of ``x``."""
    if np.ndim(t) not in (0, 1) or (np.ndim(t) == 1 and np.shape(t)[0] != np.shape(x)[0]):
        raise ValueError(f"{name} must be a scalar or have shape (B,) = ({np.shape(x)[0]},), got shape {tuple(np.shape(t))}")


def finite(xp, value, what: str):
    if not xp.all_finite(value):
        raise ValueError(f"non-finite values (NaN or inf) in {what}")
    return value


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
