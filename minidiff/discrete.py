"""Diffusion in discrete state-spaces: D3PM (Austin et al. 2021) and masked diffusion (MDLM, Sahoo et al. 2024).

A token takes one of K states.  A state is given either as an integer array x (...,) or as rows of
probabilities (..., K) (a one-hot row is a state; D3PM writes x as a one-hot row vector).  A
transition matrix Q_t is (K, K) with rows that are distributions:
[Q_t]_{ij} = q(x_t = j | x_{t-1} = i), so that q(x_t | x_{t-1}) = Cat(x_t; x_{t-1} Q_t) (D3PM eq. 1).
Tables of matrices are (T, K, K), row t-1 holding Q_t (t = 1..T).  In the absorbing process the
last state K-1 is [MASK].

Everything is backend-neutral (``backend.namespace``) and keeps the inputs' float dtype: pass
float64 where the numbers are reported (a float32 sampler changes them).  Randomness is passed in
as a generator of ``backend.generator`` (its ``rand``), as the continuous samplers take ``randn_like``.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from .backend import namespace, stop_gradient, value_and_grad
from .nn.mlp import init_mlp, mlp
from .nn.optim import adam_init, adam_update, ema_update, ema_warmup

_TINY = 1e-30   # log(max(p, tiny)): a probability the model puts at 0 costs 69 nats, not inf


# ----------------------------------------------------------------------------------------------
# Helpers: states as rows, row-vector products

def _is_index(x) -> bool:
    """An integer array of states (not rows of probabilities)."""
    if hasattr(x, "is_floating_point"):                    # torch
        return not x.is_floating_point()
    return np.issubdtype(np.result_type(getattr(x, "_value", x)), np.integer)


def _matrices(name: str, Q, K=None):
    """Q (..., K, K); returns the namespace."""
    _checks.array(name, Q, min_ndim=2)
    if Q.shape[-1] != Q.shape[-2] or (K is not None and Q.shape[-1] != K):
        raise ValueError(f"{name} must have shape (..., K, K){'' if K is None else f' with K = {K}'}, "
                         f"got {tuple(Q.shape)}")
    return namespace(Q)


def _rows(name: str, x, K: int, like):
    """x as rows (..., K): an integer array (...,) in [0, K) is one-hot encoded in ``like``'s dtype;
    a float array (..., K) is taken as rows of probabilities."""
    _checks.array(name, x)
    xp = namespace(x, like)
    if _is_index(x):
        if _checks._on_host(xp, x):
            v = xp.to_numpy(x)
            if v.size and (v.min() < 0 or v.max() >= K):
                raise ValueError(f"{name} must hold states in [0, K) = [0, {K}), got values in [{v.min()}, {v.max()}]")
        hit = xp.expand_dims(x, -1) == xp.arange(K, like=like)
        return xp.asarray(hit, dtype=xp.dtype_of(like))
    if x.ndim < 1 or x.shape[-1] != K:
        raise ValueError(f"{name} must be integer states (...,) or rows (..., K) with K = {K}, got {tuple(x.shape)}")
    return x


def _times(xp, x, Q):
    """The row vectors x (..., K) times the matrices Q (..., K, K): x Q, (..., K)."""
    return xp.matmul(xp.expand_dims(x, -2), Q)[..., 0, :]


def _swap(xp, Q):
    """Q^T on the last two axes."""
    n = Q.ndim
    return xp.transpose(Q) if n == 2 else xp.transpose(Q, tuple(range(n - 2)) + (n - 1, n - 2))


def _rates(name: str, v):
    """A rate (beta or alpha-bar): a number or an array (...,) in [0, 1], as float (..., 1, 1)."""
    if not _checks.is_array(v):
        v = np.asarray(_checks.real(name, v, 0.0, 1.0), dtype=np.float64)
    xp = namespace(v)
    if _checks._on_host(xp, v):
        a = xp.to_numpy(v)
        if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 1):
            raise ValueError(f"{name} must lie in [0, 1], got values in [{a.min()}, {a.max()}]")
    v = xp.asarray(v, dtype=xp.dtype_of(v))
    return xp, xp.reshape(v, tuple(v.shape) + (1, 1))


def _eye(xp, K, like):
    return xp.asarray(np.eye(K), like=like)


# ----------------------------------------------------------------------------------------------
# Transition matrices (D3PM section 3.1, appendix A.2 / A.3)

def uniform_transition(beta, K: int):
    """D3PM appendix A.2 (Hoogeboom et al. 2021): Q_t = (1 - beta_t) I + beta_t 1 1^T / K: stay, or
    jump to a uniformly drawn state.  beta: a number or (...,) -> (..., K, K)."""
    K = _checks.integer("K", K, 2)
    xp, b = _rates("beta", beta)
    # BEGIN SOLUTION
    # hint: (1 - beta) * identity + beta / K everywhere (every row then sums to one).
    return (1 - b) * _eye(xp, K, b) + b / K
    # END SOLUTION


def absorbing_transition(beta, K: int):
    """D3PM appendix A.3: Q_t = (1 - beta_t) I + beta_t 1 e_m^T, e_m the one-hot row of [MASK]
    (the last state, m = K - 1): a token is masked with probability beta_t, and [MASK] stays.
    beta: a number or (...,) -> (..., K, K)."""
    K = _checks.integer("K", K, 2)
    xp, b = _rates("beta", beta)
    e_m = xp.asarray(np.eye(K)[[-1] * K], like=b)           # 1 e_m^T: every row one-hot at m
    return (1 - b) * _eye(xp, K, b) + b * e_m


def cumulative_transitions(Qs):
    """D3PM eq. 2's Q-bar_t = Q_1 Q_2 ... Q_t for t = 1..T, so q(x_t | x_0) = Cat(x_0 Q-bar_t).
    Qs: (T, K, K) -> (T, K, K)."""
    xp = _matrices("Qs", Qs)
    if Qs.ndim != 3:
        raise ValueError(f"Qs must have shape (T, K, K), got {tuple(Qs.shape)}")
    # BEGIN SOLUTION
    # hint: a running product, Q-bar_1 = Q_1 and Q-bar_t = Q-bar_{t-1} @ Q_t (the order matters
    # hint: for matrices that do not commute); stack the T products.
    out = [Qs[0]]
    for t in range(1, Qs.shape[0]):
        out.append(xp.matmul(out[-1], Qs[t]))
    return xp.stack(out)
    # END SOLUTION


def uniform_cumulative(alpha_bar, K: int):
    """Q-bar_t of the uniform process in closed form (D3PM appendix A.2):
    alpha-bar_t I + (1 - alpha-bar_t) 1 1^T / K with alpha-bar_t = prod_{s<=t} (1 - beta_s).
    alpha_bar: a number or (...,) -> (..., K, K)."""
    return uniform_transition(1 - alpha_bar if _checks.is_array(alpha_bar) else 1 - _checks.real(
        "alpha_bar", alpha_bar, 0.0, 1.0), K)


def absorbing_cumulative(alpha_bar, K: int):
    """Q-bar_t of the absorbing process in closed form (D3PM appendix A.3):
    alpha-bar_t I + (1 - alpha-bar_t) 1 e_m^T: x_0 is kept with probability alpha-bar_t, else
    masked.  MDLM's q(z_t | x) = Cat(alpha_t x + (1 - alpha_t) m) (its eq. 2) is this with
    alpha-bar_t = alpha_t.  alpha_bar: a number or (...,) -> (..., K, K)."""
    return absorbing_transition(1 - alpha_bar if _checks.is_array(alpha_bar) else 1 - _checks.real(
        "alpha_bar", alpha_bar, 0.0, 1.0), K)


# ----------------------------------------------------------------------------------------------
# The forward process and its posterior (D3PM eq. 1-4)

def q_xt_given_x0(x0, Qbar_t):
    """D3PM eq. 2: q(x_t | x_0) = Cat(x_t; p = x_0 Q-bar_t).  x0: states (...,) or rows (..., K);
    Qbar_t: (K, K) or matrices broadcasting against x0's leading axes -> (..., K)."""
    xp = _matrices("Qbar_t", Qbar_t)
    x0 = _rows("x0", x0, Qbar_t.shape[-1], Qbar_t)
    return _times(xp, x0, Qbar_t)


def q_posterior(xt, x0, Q_t, Qbar_tm1):
    """D3PM eq. 3: q(x_{t-1} | x_t, x_0) = Cat(x_{t-1}; x_t Q_t^T * x_0 Q-bar_{t-1} / (x_0 Q-bar_t x_t^T)),
    the product elementwise; the normaliser is the product's sum.  Q-bar_0 = I gives x_0 itself.
    xt, x0: states (...,) or one-hot rows (..., K), with x0 able to reach xt; Q_t, Qbar_tm1: (K, K)
    or broadcasting matrices -> (..., K)."""
    xp = _matrices("Q_t", Q_t)
    _matrices("Qbar_tm1", Qbar_tm1, Q_t.shape[-1])
    K = Q_t.shape[-1]
    xt, x0 = _rows("xt", xt, K, Q_t), _rows("x0", x0, K, Q_t)
    # BEGIN SOLUTION
    # hint: x_t Q_t^T is the column of Q_t at x_t, q(x_t | x_{t-1} = j) for every j (_times with _swap(xp, Q_t));
    # hint: x_0 Q-bar_{t-1} is q(x_{t-1} = j | x_0); multiply them and divide by their sum over j.
    likelihood = _times(xp, xt, _swap(xp, Q_t))          # (..., K): q(x_t | x_{t-1} = j)
    prior = _times(xp, x0, Qbar_tm1)                      # (..., K): q(x_{t-1} = j | x_0)
    joint = likelihood * prior
    return joint / xp.sum(joint, axis=-1, keepdims=True)
    # END SOLUTION


def p_posterior_from_x0(xt, p_x0, Q_t, Qbar_tm1):
    """The x0-parameterisation (D3PM section 3.3, eq. 4): p(x_{t-1} | x_t) = sum_{x0} q(x_{t-1} | x_t, x0)
    p(x0 | x_t), per token.  With the exact posterior q(x0 | x_t) this is the exact q(x_{t-1} | x_t).
    (Eq. 4 as printed sums q(x_{t-1}, x_t | x0) p(x0 | x_t), which also weights each x0 by
    q(x_t | x0); the two agree where that is the same for every x0 that reaches x_t, as in the
    absorbing process.)  An x0 that cannot reach x_t contributes nothing; the result is renormalised.
    xt: states (...,) or rows (..., K); p_x0: (..., K) probabilities -> (..., K)."""
    xp = _matrices("Q_t", Q_t)
    _matrices("Qbar_tm1", Qbar_tm1, Q_t.shape[-1])
    K = Q_t.shape[-1]
    xt = _rows("xt", xt, K, Q_t)
    _checks.array("p_x0", p_x0, min_ndim=1)
    if p_x0.shape[-1] != K:
        raise ValueError(f"p_x0 must have shape (..., K) with K = {K}, got {tuple(p_x0.shape)}")
    likelihood = _times(xp, xt, _swap(xp, Q_t))                      # (..., K): q(x_t | x_{t-1} = j)
    joint = xp.expand_dims(likelihood, -2) * Qbar_tm1                 # (..., K0, K): q(x_{t-1} = j, x_t | x0 = k)
    evidence = xp.sum(joint, axis=-1, keepdims=True)                  # (..., K0, 1): q(x_t | x0 = k)
    post = joint / xp.where(evidence > 0, evidence, xp.ones_like(evidence))  # q(x_{t-1} | x_t, x0 = k)
    p = _times(xp, p_x0, post)                                        # sum_k p(x0 = k | x_t) q(. | x_t, k)
    return p / xp.sum(p, axis=-1, keepdims=True)


def _log_softmax(xp, logits):
    return logits - xp.logsumexp(logits, axis=-1, keepdims=True)


def _per_example(xp, tables, t, extra_axes):
    """tables (T', K, K) indexed by the (B,) integer array t -> (B, 1, ..., 1, K, K)."""
    Q = tables[t]
    return xp.reshape(Q, (Q.shape[0],) + (1,) * extra_axes + tuple(Q.shape[-2:]))


def hybrid_loss(p_x0_logits, x0, xt, t, Qs, Qbars, lam: float = 0.01):
    """D3PM eq. 5: L_lambda = L_vb + lambda E[-log p(x0 | x_t)], per example.

    L_vb's term at t (D3PM eq. 1's bound): KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) for t >= 2,
    with p the x0-parameterisation (``p_posterior_from_x0``); at t = 1, L_0 = -log p(x0 | x_1),
    which is the same formula since Q-bar_0 = I makes q(x_0 | x_1, x_0) the point mass at x0.
    L_T = KL(q(x_T | x0) || p(x_T)) has no parameters and is left out.  Summed over the tokens.
    p_x0_logits: (B, ..., K) the model's logits of p(x0 | x_t); x0, xt: (B, ...) states;
    t: (B,) integers in [1, T]; Qs, Qbars: (T, K, K) -> (B,)."""
    lam = _checks.real("lam", lam, 0.0)
    xp = _matrices("Qs", Qs)
    _matrices("Qbars", Qbars, Qs.shape[-1])
    _checks.array("p_x0_logits", p_x0_logits, min_ndim=2)
    _checks.same_backend(p_x0_logits=p_x0_logits, x0=x0, xt=xt, t=t, Qs=Qs, Qbars=Qbars)
    T, K = Qs.shape[0], Qs.shape[-1]
    if tuple(Qbars.shape) != tuple(Qs.shape) or tuple(p_x0_logits.shape) != tuple(x0.shape) + (K,) or \
            tuple(xt.shape) != tuple(x0.shape):
        raise ValueError(f"need Qs, Qbars (T, K, K), x0, xt (B, ...) and p_x0_logits (B, ..., K); got "
                         f"{tuple(Qs.shape)}, {tuple(Qbars.shape)}, {tuple(x0.shape)}, {tuple(xt.shape)}, "
                         f"{tuple(p_x0_logits.shape)}")
    _checks.per_example("t", t, x0, "x0")
    t_host = _checks.to_numpy(t)
    if not np.issubdtype(t_host.dtype, np.integer) or (t_host.size and (t_host.min() < 1 or t_host.max() > T)):
        raise ValueError(f"t must hold integer timesteps in [1, T] = [1, {T}], got {t_host.dtype} values "
                         f"in [{t_host.min()}, {t_host.max()}]")
    extra = x0.ndim - 1
    Qbars_prev = xp.concatenate([xp.expand_dims(_eye(xp, K, Qbars), 0), Qbars[:-1]], axis=0)  # Q-bar_0 = I
    Q_t, Qbar_tm1 = _per_example(xp, Qs, t - 1, extra), _per_example(xp, Qbars_prev, t - 1, extra)
    log_p_x0 = _log_softmax(xp, p_x0_logits)
    q = q_posterior(xt, x0, Q_t, Qbar_tm1)                                     # (B, ..., K), a constant
    p = p_posterior_from_x0(xt, xp.exp(log_p_x0), Q_t, Qbar_tm1)
    log_q = xp.log(xp.where(q > 0, q, xp.ones_like(q)))
    kl = xp.sum(q * (log_q - xp.log(xp.maximum(p, _TINY))), axis=-1)          # (B, ...)
    x0_rows = _rows("x0", x0, K, q)
    ce = -xp.sum(xp.where(x0_rows > 0, log_p_x0, xp.zeros_like(log_p_x0)), axis=-1)   # (B, ...); a -inf logit elsewhere is fine
    per_token = kl + lam * ce
    return xp.sum(xp.reshape(per_token, (per_token.shape[0], -1)), axis=1)


# ----------------------------------------------------------------------------------------------
# Sampling

def sample_categorical(p, rng):
    """One draw per row of p (..., K) by the inverse CDF: the first k with u < cumsum(p)_k,
    u ~ U[0, 1) from ``rng.rand``.  -> integer states (...,)."""
    _checks.array("p", p, min_ndim=1)
    xp = namespace(p)
    c = stop_gradient(p).cumsum(-1)
    c = c / c[..., -1:]                                    # the last entry exactly 1: always some k
    u = rng.rand(tuple(p.shape[:-1]), dtype=xp.dtype_of(p))
    return xp.sum(c <= xp.expand_dims(u, -1), axis=-1)


def _probabilities(xp, out, logits: bool):
    return xp.exp(_log_softmax(xp, out)) if logits else out


def ancestral_step(xt, p_x0, Q_t, Qbar_tm1, rng):
    """One reverse step of D3PM: x_{t-1} ~ p(x_{t-1} | x_t) of eq. 4 (``p_posterior_from_x0``).
    xt: (...,) states; p_x0: (..., K) probabilities -> (...,) states."""
    return sample_categorical(p_posterior_from_x0(xt, p_x0, Q_t, Qbar_tm1), rng)


def ancestral_sample(p_x0_model, x_T, Qs, rng, logits: bool = True, callback=None):
    """D3PM ancestral sampling: x_T, then x_{t-1} ~ p(x_{t-1} | x_t) for t = T..1 (``ancestral_step``).

    p_x0_model(x_t, t) -> p(x0 | x_t) as logits (``logits=True``) or probabilities, (B, ..., K), with
    t a (B,) integer array in [1, T]; x_T: (B, ...) states; Qs: (T, K, K); rng: a generator with
    ``rand``.  Returns x_0 (B, ...).  ``callback({'x', 't', 'p_x0'})`` is called after each step."""
    _checks.function("p_x0_model", p_x0_model)
    _checks.batch("x_T", x_T)
    _matrices("Qs", Qs)
    if callback is not None:
        _checks.function("callback", callback)
    Qbars = cumulative_transitions(Qs)
    xp = namespace(x_T, Qs)
    K = Qs.shape[-1]
    x = x_T
    for t in range(Qs.shape[0], 0, -1):
        p_x0 = _probabilities(xp, p_x0_model(x, xp.int_array(np.full(x.shape[0], t), like=x)), logits)
        x = ancestral_step(x, p_x0, Qs[t - 1], Qbars[t - 2] if t > 1 else _eye(xp, K, Qs), rng)
        if callback is not None:
            callback({"x": x, "t": t - 1, "p_x0": p_x0})
    return x


# ----------------------------------------------------------------------------------------------
# Masked diffusion (MDLM): the absorbing process in continuous time, alpha_t from 1 (t = 0) to 0 (t = 1)

def linear_schedule(t):
    """MDLM's linear schedule alpha_t = 1 - t and its derivative alpha_t' = -1.  t: number or array."""
    return 1 - t, 0 * t - 1


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
    # BEGIN SOLUTION
    # hint: log p(x0 | z_t) per token: log_softmax(logits) (_log_softmax) at x0's one-hot entry (_rows; pick it
    # hint: with xp.where, as 0 * (-inf) is NaN); keep the masked tokens (xt == V), sum them per example, times
    # hint: dalpha_t / (1 - alpha_t).
    log_softmax = _log_softmax(xp, logits)
    log_p = xp.sum(xp.where(_rows("x0", x0, V, logits) > 0, log_softmax, xp.zeros_like(log_softmax)), axis=-1)  # (B, ...)
    masked = xp.asarray(xt == V, like=logits)                                          # (B, ...)
    total = xp.sum(xp.reshape(masked * log_p, (B, -1)), axis=1)                       # (B,)
    return dalpha_t / (1 - alpha_t) * total
    # END SOLUTION


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
    # BEGIN SOLUTION
    # hint: a (..., V + 1) distribution: (alpha_s - alpha_t) / (1 - alpha_t) * p_x0 for the data
    # hint: states, (1 - alpha_s) / (1 - alpha_t) for [MASK]; draw (sample_categorical) and keep xt where unmasked.
    a_t = xp.append_dims(xp.asarray(alpha_t, like=p_x0), p_x0.ndim)
    a_s = xp.append_dims(xp.asarray(alpha_s, like=p_x0), p_x0.ndim)
    unmask = (a_s - a_t) / (1 - a_t) * p_x0                                  # (B, ..., V)
    stay = (1 - a_s) / (1 - a_t) * xp.ones_like(p_x0[..., :1])               # (B, ..., 1)
    draw = sample_categorical(xp.concatenate([unmask, stay], axis=-1), rng)
    return xp.where(xt == V, draw, xt)
    # END SOLUTION


def unmasking_sample(p_x0_model, x_T, ts, alpha, rng, logits: bool = True, callback=None):
    """MDLM's ancestral sampler: from all-[MASK] x_T down the times ts[0] = 1 > ... > ts[-1] = 0
    by ``unmasking_step``.  p_x0_model(z_t, t) -> (B, ..., V) logits (``logits=True``) or
    probabilities, t a (B,) float array; alpha(t) -> alpha_t (e.g. ``linear_schedule(t)[0]``).
    ``callback({'x', 't', 'p_x0'})`` after each step.  Returns x_0 (B, ...)."""
    _checks.function("p_x0_model", p_x0_model)
    _checks.function("alpha", alpha)
    _checks.batch("x_T", x_T)
    if callback is not None:
        _checks.function("callback", callback)
    ts = np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 2 or not np.all(np.diff(ts) < 0) or ts[0] > 1 or ts[-1] < 0:
        raise ValueError(f"ts must be a decreasing 1-D array of times in [0, 1] with at least 2 entries, got {ts}")
    xp = namespace(x_T)
    x = x_T
    for t, s in zip(ts[:-1], ts[1:]):
        t_batch = xp.asarray(np.full(x.shape[0], t), dtype=xp.float64)
        if xp.name == "torch":
            t_batch = t_batch.to(x.device)
        out = p_x0_model(x, t_batch)
        p_x0 = _probabilities(xp, out, logits)
        x = unmasking_step(x, p_x0, float(alpha(t)), float(alpha(s)), rng)
        if callback is not None:
            callback({"x": x, "t": float(s), "p_x0": p_x0})
    return x


# ----------------------------------------------------------------------------------------------
# The exact denoiser of a known joint distribution of two tokens (the grid oracle)

def joint_posterior_x0(p0, xt, Qbar_t):
    """Bayes for two tokens with a factorised forward process:
    q(x0 = (a, b) | x_t = (i, j)) ∝ p0[a, b] Q-bar_t[a, i] Q-bar_t[b, j].
    p0: (K, K) joint probabilities; xt: (B, 2) states; Qbar_t: (K, K) -> (B, K, K)."""
    xp = _matrices("Qbar_t", Qbar_t)
    _matrices("p0", p0, Qbar_t.shape[-1])
    _checks.array("xt", xt, ndim=2)
    if xt.shape[1] != 2:
        raise ValueError(f"xt must have shape (B, 2), got {tuple(xt.shape)}")
    K = Qbar_t.shape[-1]
    lik = _times(xp, _rows("xt", xt, K, Qbar_t), _swap(xp, Qbar_t))    # (B, 2, K): q(x_t^l | x0^l = a)
    post = xp.expand_dims(p0, 0) * xp.expand_dims(lik[:, 0], 2) * xp.expand_dims(lik[:, 1], 1)
    return post / xp.sum(xp.sum(post, axis=2, keepdims=True), axis=1, keepdims=True)


def sample_joint(post, rng):
    """One draw (a, b) per example from a joint (B, K, K) -> (B, 2) states."""
    xp = namespace(post)
    K = post.shape[-1]
    k = sample_categorical(xp.reshape(post, (post.shape[0], K * K)), rng)   # (B,)
    return xp.stack([k // K, k % K], axis=1)


def exact_denoiser(p0, Qbar, rng=None):
    """The exact p(x0 | x_t) of a known two-token joint p0 (K, K), as a model for the samplers.

    Qbar(t) -> Q-bar_t (K, K) for the batch's time (t a (B,) array of one value).  With ``rng``
    the model returns the one-hot rows (B, 2, K) of one JOINT draw x0 ~ q(x0 | x_t)
    (``joint_posterior_x0``): the x0-parameterised step then moves each token by q(x_{t-1} | x_t, x0),
    which is exact, dependent tokens included.  Without ``rng`` it returns the per-token marginals
    of q(x0 | x_t): a factorised p(x0 | x_t), an approximation when the tokens are dependent."""
    _checks.function("Qbar", Qbar)

    def model(xt, t):
        xp = namespace(xt, p0)
        post = joint_posterior_x0(p0, xt, Qbar(t))                       # (B, K, K)
        if rng is None:
            return xp.stack([xp.sum(post, axis=2), xp.sum(post, axis=1)], axis=1)
        return _rows("x0", sample_joint(post, rng), p0.shape[-1], p0)      # (B, 2, K) one-hot

    return model


# ----------------------------------------------------------------------------------------------
# A tiny autograd MLP trained by masked diffusion on the grid (the lesson's learned model)

def init_grid_denoiser(G: int, rng=0, hidden: int = 128, depth: int = 3):
    """MLP parameters for ``grid_denoiser``: in 2 (G + 1) one-hot features of z_t (+ the time
    embedding), out 2 G logits of p(x0 | z_t), one G-way softmax per token."""
    G = _checks.integer("G", G, 2)
    return init_mlp(rng, in_dim=2 * (G + 1), hidden=hidden, depth=depth, t_dim=16, out_dim=2 * G)


def grid_denoiser(params, zt, t):
    """x_theta(z_t, t): logits (B, 2, G) of the per-token p(x0 | z_t) for z_t (B, 2) in [0, G]
    (G = [MASK]) and t (B,) in [0, 1] (embedded as 1000 t, as the continuous MLP's times)."""
    xp = namespace(params[0][0])
    G = params[-1][0].shape[1] // 2
    h = xp.reshape(_rows("zt", zt, G + 1, params[0][0]), (zt.shape[0], 2 * (G + 1)))   # (B, 2 (G + 1))
    return xp.reshape(mlp(params, h, 1000 * t), (zt.shape[0], 2, G))                      # (B, 2, G)


def train_grid_denoiser(p0, steps: int, batch: int = 256, lr: float = 2e-3, seed: int = 0, params=None,
                        hidden: int = 128, ema: float = 0.999, callback=None):
    """Train ``grid_denoiser`` on fresh draws from the grid joint p0 (G, G) by the masked-diffusion
    loss (MDLM eq. 11, linear schedule, stratified times as MDLM's low-discrepancy sampler), with
    Adam, a cosine learning-rate decay and an EMA of the weights (decay ``ema``, warmed up).
    Returns (EMA params, list of losses)."""
    from .data.grid2d import sample_grid
    steps = _checks.integer("steps", steps, 1)
    G = p0.shape[0]
    rng = np.random.default_rng(seed)
    params = init_grid_denoiser(G, rng, hidden=hidden) if params is None else params
    state, ema_params = adam_init(params), params

    def loss_fn(params, x0, zt, t):
        a, da = linear_schedule(t)
        return np.mean(masked_diffusion_loss(grid_denoiser(params, zt, t), x0, zt, a, da))

    step_fn = value_and_grad(loss_fn)
    losses = []
    for k in range(steps):
        x0 = sample_grid(p0, batch, rng)                                   # (B, 2)
        t = (rng.random() + np.arange(batch) / batch) % 1.0                # stratified U(0, 1)
        t = np.maximum(t, 1e-3)
        zt = np.where(rng.random((batch, 2)) < t[:, None], G, x0)          # masked with probability 1 - alpha_t = t
        loss, grads = step_fn(params, x0, zt, t)
        params, state = adam_update(params, grads, state, lr=lr * 0.5 * (1 + np.cos(np.pi * k / steps)))
        ema_params = ema_update(ema_params, params, ema_warmup(ema, k))
        losses.append(float(loss))
        if callback is not None:
            callback({"step": k, "loss": float(loss), "params": params})
    return ema_params, losses
