"""Lesson 13: Discrete diffusion: D3PM transition matrices and masked diffusion.

Write the functions below; the notebook notebooks/13_discrete_diffusion.ipynb explains the maths.
Check your work with:   minidiff check 13
(or: python -m pytest tests/lessons/test_13_discrete_diffusion.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

from minidiff import _checks
from minidiff.discrete import _eye, _log_softmax, _matrices, _rates, _rows, _swap, _times, sample_categorical


def uniform_transition(beta, K: int):
    """D3PM appendix A.2 (Hoogeboom et al. 2021): Q_t = (1 - beta_t) I + beta_t 1 1^T / K: stay, or
    jump to a uniformly drawn state.  beta: a number or (...,) -> (..., K, K)."""
    K = _checks.integer("K", K, 2)
    xp, b = _rates("beta", beta)
    raise NotImplementedError("EXERCISE uniform_transition: write this function (see its docstring)")


def cumulative_transitions(Qs):
    """D3PM eq. 2's Q-bar_t = Q_1 Q_2 ... Q_t for t = 1..T, so q(x_t | x_0) = Cat(x_0 Q-bar_t).
    Qs: (T, K, K) -> (T, K, K)."""
    xp = _matrices("Qs", Qs)
    if Qs.ndim != 3:
        raise ValueError(f"Qs must have shape (T, K, K), got {tuple(Qs.shape)}")
    raise NotImplementedError("EXERCISE cumulative_transitions: write this function (see its docstring)")


def q_posterior(xt, x0, Q_t, Qbar_tm1):
    """D3PM eq. 3: q(x_{t-1} | x_t, x_0) = Cat(x_{t-1}; x_t Q_t^T * x_0 Q-bar_{t-1} / (x_0 Q-bar_t x_t^T)),
    the product elementwise; the normaliser is the product's sum.  Q-bar_0 = I gives x_0 itself.
    xt, x0: states (...,) or one-hot rows (..., K), with x0 able to reach xt; Q_t, Qbar_tm1: (K, K)
    or broadcasting matrices -> (..., K)."""
    xp = _matrices("Q_t", Q_t)
    _matrices("Qbar_tm1", Qbar_tm1, Q_t.shape[-1])
    K = Q_t.shape[-1]
    xt, x0 = _rows("xt", xt, K, Q_t), _rows("x0", x0, K, Q_t)
    raise NotImplementedError("EXERCISE q_posterior: write this function (see its docstring)")


def masked_diffusion_loss(logits, x0, xt, alpha_t, dalpha_t):
    """MDLM eq. 10/11, the continuous-time bound of the SUBS parameterisation, per example:
    L = (alpha_t' / (1 - alpha_t)) sum_l [z_t^l = m] log <x_theta^l(z_t), x^l>.
    alpha_t' < 0, so this is a cross-entropy on the masked tokens only with the positive weight
    -alpha_t' / (1 - alpha_t): 1/t for the linear schedule alpha_t = 1 - t.  Unmasked tokens cost
    nothing (carry-over); the model has no [MASK] output (zero masking probability).
    logits: (B, ..., V) logits or log-probabilities over the V = K - 1 data states; x0: (B, ...) in
    [0, V); xt: (B, ...) in [0, V], V being [MASK]; alpha_t, dalpha_t: numbers or (B,) -> (B,)."""
    _checks.array("logits", logits, min_ndim=2)
    xp = _checks.same_backend(logits=logits, x0=x0, xt=xt)
    V = logits.shape[-1]
    if tuple(x0.shape) != tuple(logits.shape[:-1]) or tuple(xt.shape) != tuple(x0.shape):
        raise ValueError(f"x0 and xt must have logits' shape without its last axis, {tuple(logits.shape[:-1])}; "
                         f"got {tuple(x0.shape)} and {tuple(xt.shape)}")
    _rows("xt", xt, V + 1, logits)
    B = x0.shape[0]
    raise NotImplementedError("EXERCISE masked_diffusion_loss: write this function (see its docstring)")


def unmasking_step(xt, p_x0, alpha_t, alpha_s, rng):
    """One step s < t of MDLM's sampler (its eq. 7 with SUBS; D3PM's absorbing posterior in
    continuous time): a masked token becomes a draw from p(x0 | z_t) with probability
    (alpha_s - alpha_t) / (1 - alpha_t) and stays [MASK] otherwise; an unmasked token stays
    (carry-over).  xt: (B, ...) in [0, V] (V = [MASK]); p_x0: (B, ..., V) probabilities;
    alpha_t < alpha_s: numbers or (B,) -> (B, ...) states."""
    _checks.array("p_x0", p_x0, min_ndim=1)
    xp = _checks.same_backend(xt=xt, p_x0=p_x0)
    V = p_x0.shape[-1]
    _rows("xt", xt, V + 1, p_x0)
    raise NotImplementedError("EXERCISE unmasking_step: write this function (see its docstring)")
