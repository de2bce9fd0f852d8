"""Lesson 06: EDM: one framework, preconditioning, Karras steps, Heun, stochastic churn and non-leaking augmentation.

Write the functions below; the notebook notebooks/06_edm.ipynb explains the maths.
Check your work with:   minidiff check 06
(or: python -m pytest tests/lessons/test_06_edm.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace
from minidiff.edm import _check_rho, _sigma_range
from minidiff.samplers import _check_churn, _checked_denoiser


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """EDM eq. (5): sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
    i = 0..N-1.  Returns (N,) float64, decreasing from sigma_max to sigma_min."""
    n = _checks.integer("n", n)
    rho = _check_rho(rho)
    sigma_min, sigma_max = _sigma_range(sigma_min, sigma_max)
    raise NotImplementedError("EXERCISE karras_sigmas: write this function (see its docstring)")


def edm_preconditioning(sigma, sigma_data: float = 0.5):
    """EDM (eq. 7 and Appendix B.6): c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2), c_in = 1 / sqrt(sigma^2 + sigma_data^2),
    c_noise = ln(sigma) / 4.  sigma: (B,) -> four (B,) arrays."""
    sigma = _checks.levels("sigma", sigma)
    sigma_data = _checks.real("sigma_data", sigma_data, 0.0, lo_open=True)
    xp = namespace(sigma)
    raise NotImplementedError("EXERCISE edm_preconditioning: write this function (see its docstring)")


def denoiser_loss(D, x0, sigma, noise, weight, **kwargs):
    """EDM eq. (2) / (8): mean over the batch of lambda(sigma) || D(x0 + sigma n; sigma) - x0 ||^2,
    summed over data dimensions.  sigma: (B,), noise like x0, weight = lambda(sigma) (B,)."""
    _checks.array("x0", x0, min_ndim=1)
    _checks.array("noise", noise)
    xp = _checks.same_backend(x0=x0, noise=noise, sigma=sigma, weight=weight)
    _checks.shapes_equal(x0=x0, noise=noise)
    _checks.finite_input("x0", x0)
    _checks.finite_input("noise", noise)
    _checks.per_example("sigma", _checks.levels("sigma", sigma), x0, "x0")
    _checks.per_example("weight", _checks.levels("weight", weight, 0.0, lo_open=False), x0, "x0")
    D = _checks.checked_model("D", D)
    raise NotImplementedError("EXERCISE denoiser_loss: write this function (see its docstring)")


def to_d(x, sigma: float, denoised):
    """The probability-flow ODE's slope in EDM's form (eq. 3 with sigma(t) = t, s(t) = 1):
    dx/dsigma = (x - D(x; sigma)) / sigma."""
    _checks.batches(x=x, denoised=denoised)
    if _checks.is_array(sigma):  # per example, e.g. (B, 1, ..., 1); its values are not read back
        _checks.same_backend(x=x, sigma=sigma)
        try:
            fits = np.broadcast_shapes(tuple(sigma.shape), tuple(x.shape)) == tuple(x.shape)
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(f"sigma's shape {tuple(sigma.shape)} does not broadcast to x's {tuple(x.shape)}")
    else:
        _checks.real("sigma", sigma, 0, lo_open=True)
    raise NotImplementedError("EXERCISE to_d: write this function (see its docstring)")


def heun_step(D, x, sigma: float, sigma_next: float, step: int = 0, **model_kwargs):
    """EDM Algorithm 1, lines 4-8: an Euler step from sigma to sigma_next, then (unless
    sigma_next = 0) Heun's 2nd-order correction with the slope at the new point."""
    _checks.function("D", D)
    _checks.batch("x", x)
    _checks.real("sigma", sigma, 0, lo_open=True)
    _checks.real("sigma_next", sigma_next, 0)
    _checks.count("step", step, 0)
    raise NotImplementedError("EXERCISE heun_step: write this function (see its docstring)")


def churn_gamma(sigma: float, n_steps: int, S_churn: float, S_tmin: float = 0.0, S_tmax: float = float("inf")) -> float:
    """EDM Algorithm 2, line 4: gamma_i = min(S_churn / N, sqrt(2) - 1) if t_i in [S_tmin, S_tmax], else 0."""
    _check_churn(sigma, n_steps, S_churn, S_tmin, S_tmax)
    raise NotImplementedError("EXERCISE churn_gamma: write this function (see its docstring)")


def augment_labels(params: dict, image_size: int):
    """EDM's augment labels, the conditioning the network sees: (n, AUGMENT_DIM) =
    [flip, tx / W, ty / H, log2 s]; all zero for an unaugmented image."""
    xp = namespace(params["flip"])
    raise NotImplementedError("EXERCISE augment_labels: write this function (see its docstring)")


def source_positions(params: dict, n: int):
    """Where each output pixel reads from: the inverse of x-flip, then scaling by s about the
    centre c = (n - 1) / 2, then the shift t:  u_x = c + f (q - c - tx) / s  (f = -1 if flipped),
    u_y = c + (q - c - ty) / s.  Returns (u_x, u_y), each (B, n)."""
    xp = namespace(params["flip"])
    q = xp.arange(n, dtype=xp.dtype_of(params["flip"]), like=params["flip"])[None, :]  # (1, n)
    c = (n - 1) / 2
    raise NotImplementedError("EXERCISE source_positions: write this function (see its docstring)")
