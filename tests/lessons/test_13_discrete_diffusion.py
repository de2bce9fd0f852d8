"""Checks for lessons/13_discrete_diffusion.py.

Every formula is backend-neutral, so the checks run on NumPy / autograd AND on torch, in float64,
against brute-force computations on small K (Bayes' rule summed by hand, a loop over tokens),
with random non-symmetric transition matrices where a property must hold for any chain."""
import autograd
import autograd.numpy as anp
import numpy as np
import pytest

from minidiff.backend import generator

from two_backends import BACKENDS, host, on, rng

LESSON = "13"
exercise = pytest.mark.exercise





def stochastic(r, *shape):
    """Random transition matrices (..., K, K) with rows that are distributions (no symmetry)."""
    Q = r.random(shape) + 0.05
    return Q / Q.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------------------------
# Transition matrices

@exercise("uniform_transition")
@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_transition_is_a_doubly_stochastic_chain(ex, backend):
    K, betas = 6, np.array([0.0, 0.13, 0.5, 1.0])
    Q = host(ex.uniform_transition(on(backend, betas), K))
    assert Q.shape == (4, K, K)
    np.testing.assert_allclose(Q.sum(-1), 1, rtol=0, atol=1e-15)            # rows: distributions
    np.testing.assert_allclose(Q.sum(-2), 1, rtol=0, atol=1e-15)            # the uniform law is stationary
    np.testing.assert_allclose(Q[0], np.eye(K), atol=0)                     # beta = 0: stay
    np.testing.assert_allclose(Q[-1], np.full((K, K), 1 / K), atol=1e-16)   # beta = 1: forget
    off = Q[1][~np.eye(K, dtype=bool)]
    np.testing.assert_allclose(off, 0.13 / K, rtol=1e-14)                   # each other state: beta / K


@exercise("uniform_transition")
def test_uniform_transitions_compose_by_multiplying_one_minus_beta(ex):
    # Q(b1) Q(b2) = Q(1 - (1 - b1)(1 - b2)): the closed form of Q-bar_t follows from this
    K, b1, b2 = 5, 0.3, 0.45
    np.testing.assert_allclose(ex.uniform_transition(b1, K) @ ex.uniform_transition(b2, K),
                               ex.uniform_transition(1 - (1 - b1) * (1 - b2), K), rtol=1e-14, atol=1e-16)


@exercise("cumulative_transitions")
@pytest.mark.parametrize("backend", BACKENDS)
def test_cumulative_transitions_chapman_kolmogorov(ex, backend):
    r = rng(0)
    T, K = 6, 4
    Qs = stochastic(r, T, K, K)
    Qbars = host(ex.cumulative_transitions(on(backend, Qs)))
    assert Qbars.shape == (T, K, K)
    np.testing.assert_allclose(Qbars.sum(-1), 1, atol=1e-14)
    for t in range(1, T + 1):                      # Q-bar_t = Q_1 ... Q_t, in that order
        np.testing.assert_allclose(Qbars[t - 1], np.linalg.multi_dot([np.eye(K)] + list(Qs[:t])), rtol=1e-13)
    for s in range(1, T):                          # Q-bar_t = Q-bar_s (Q_{s+1} ... Q_t)
        np.testing.assert_allclose(Qbars[T - 1], Qbars[s - 1] @ np.linalg.multi_dot([np.eye(K)] + list(Qs[s:])),
                                   rtol=1e-13)


@exercise("cumulative_transitions")
def test_cumulative_transitions_give_the_marginal_of_a_simulated_chain(ex):
    # x_t ~ Cat(x_0 Q-bar_t): the frequencies of 40,000 simulated 3-step chains from x_0 = 0
    r = rng(1)
    K, n = 3, 40_000
    Qs = stochastic(r, 3, K, K)
    x = np.zeros(n, dtype=np.int64)
    for Q in Qs:
        c = Q[x].cumsum(-1)
        x = (c < r.random((n, 1))).sum(-1)
    freq = np.bincount(x, minlength=K) / n
    p = ex.cumulative_transitions(Qs)[-1][0]
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / n))


# ----------------------------------------------------------------------------------------------
# The posterior

@exercise("q_posterior")
@pytest.mark.parametrize("backend", BACKENDS)
def test_q_posterior_is_bayes_rule(ex, backend):
    # q(x_{t-1} = j | x_t, x_0) = q(x_t | x_{t-1} = j) q(x_{t-1} = j | x_0) / q(x_t | x_0), by hand
    r = rng(2)
    K = 5
    Q_t, Qbar_tm1 = stochastic(r, K, K), stochastic(r, K, K)
    x0, xt = r.integers(0, K, (3, 4)), r.integers(0, K, (3, 4))
    got = host(ex.q_posterior(on(backend, xt), on(backend, x0), on(backend, Q_t), on(backend, Qbar_tm1)))
    assert got.shape == (3, 4, K)
    want = np.empty((3, 4, K))
    for idx in np.ndindex(3, 4):
        joint = [Q_t[j, xt[idx]] * Qbar_tm1[x0[idx], j] for j in range(K)]
        want[idx] = np.array(joint) / (Qbar_tm1 @ Q_t)[x0[idx], xt[idx]]
    np.testing.assert_allclose(got, want, rtol=1e-13)


@exercise("q_posterior")
def test_q_posterior_takes_one_hot_rows_and_is_the_point_mass_at_t_1(ex):
    r = rng(3)
    K = 4
    Q_t, Qbar_tm1 = stochastic(r, K, K), stochastic(r, K, K)
    x0, xt = r.integers(0, K, 6), r.integers(0, K, 6)
    np.testing.assert_allclose(ex.q_posterior(np.eye(K)[xt], np.eye(K)[x0], Q_t, Qbar_tm1),
                               ex.q_posterior(xt, x0, Q_t, Qbar_tm1), rtol=1e-14)
    np.testing.assert_allclose(ex.q_posterior(xt, x0, Q_t, np.eye(K)), np.eye(K)[x0], atol=1e-15)


@exercise("q_posterior")
def test_q_posterior_averages_to_the_forward_marginal(ex):
    # sum over x_t of q(x_t | x0) q(x_{t-1} | x_t, x0) = q(x_{t-1} | x0) = x0 Q-bar_{t-1}
    r = rng(4)
    K = 5
    Q_t, Qbar_tm1 = stochastic(r, K, K), stochastic(r, K, K)
    x0 = 2
    q_xt = (Qbar_tm1 @ Q_t)[x0]
    avg = sum(q_xt[i] * ex.q_posterior(np.array([i]), np.array([x0]), Q_t, Qbar_tm1)[0] for i in range(K))
    np.testing.assert_allclose(avg, Qbar_tm1[x0], rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# The masked-diffusion loss

def direct_masked_loss(logits, x0, xt, alpha_t, dalpha_t):
    """Token by token: -alpha_t' / (1 - alpha_t) * sum over masked l of -log softmax(logits_l)[x0_l]."""
    B, L, V = logits.shape
    out = np.zeros(B)
    for b in range(B):
        for l in range(L):
            if xt[b, l] == V:
                lg = logits[b, l]
                out[b] += -(lg[x0[b, l]] - np.log(np.exp(lg - lg.max()).sum()) - lg.max())
        out[b] *= -dalpha_t[b] / (1 - alpha_t[b])
    return out


@exercise("masked_diffusion_loss")
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_diffusion_loss_against_a_direct_computation(ex, backend):
    r = rng(5)
    B, L, V = 5, 7, 4
    x0 = r.integers(0, V, (B, L))
    xt = np.where(r.random((B, L)) < 0.5, V, x0)
    logits = 4 * r.standard_normal((B, L, V)) + 30          # far from 0: log-softmax must be stable
    t = r.uniform(0.05, 0.95, B)
    a, da = 1 - t ** 2, -2 * t                               # a non-linear schedule
    got = host(ex.masked_diffusion_loss(*(on(backend, v) for v in (logits, x0, xt, a, da))))
    np.testing.assert_allclose(got, direct_masked_loss(logits, x0, xt, a, da), rtol=1e-12)
    assert np.all(got >= 0)


@exercise("masked_diffusion_loss")
def test_masked_diffusion_loss_linear_schedule_weight_is_one_over_t(ex):
    # alpha_t = 1 - t: weight 1/t on the summed cross-entropy; unmasked tokens cost nothing
    r = rng(6)
    B, L, V = 4, 3, 5
    x0 = r.integers(0, V, (B, L))
    xt = np.full((B, L), V)
    logits = r.standard_normal((B, L, V))
    t = np.array([0.1, 0.3, 0.6, 0.9])
    ce = -np.take_along_axis(logits - np.log(np.exp(logits).sum(-1, keepdims=True)), x0[..., None], -1)[..., 0].sum(1)
    np.testing.assert_allclose(ex.masked_diffusion_loss(logits, x0, xt, 1 - t, -np.ones(B)), ce / t, rtol=1e-12)
    np.testing.assert_allclose(ex.masked_diffusion_loss(logits, x0, x0, 1 - t, -np.ones(B)), 0, atol=0)


@exercise("masked_diffusion_loss")
def test_masked_diffusion_loss_ignores_the_unmasked_tokens_logits(ex):
    # gradient with respect to the logits of unmasked tokens: exactly zero
    r = rng(7)
    B, L, V = 3, 6, 4
    x0 = r.integers(0, V, (B, L))
    xt = np.where(r.random((B, L)) < 0.5, V, x0)
    g = autograd.grad(lambda lg: anp.sum(ex.masked_diffusion_loss(lg, x0, xt, 0.4, -1.0)))(r.standard_normal((B, L, V)))
    assert np.all(g[xt != V] == 0) and np.any(g[xt == V] != 0)


# ----------------------------------------------------------------------------------------------
# One unmasking step

@exercise("unmasking_step")
@pytest.mark.parametrize("backend", BACKENDS)
def test_unmasking_step_keeps_unmasked_tokens_and_never_masks(ex, backend):
    r = rng(8)
    B, L, V = 50, 6, 5
    x0 = r.integers(0, V, (B, L))
    xt = np.where(r.random((B, L)) < 0.5, V, x0)
    p = r.dirichlet(np.ones(V), (B, L))
    out = host(ex.unmasking_step(on(backend, xt), on(backend, p), 0.2, 0.7, generator(0, backend)))
    assert out.shape == (B, L)
    np.testing.assert_array_equal(out[xt != V], xt[xt != V])          # carry-over
    assert out.min() >= 0 and out.max() <= V
    full = host(ex.unmasking_step(on(backend, xt), on(backend, p), 0.2, 1.0, generator(1, backend)))
    assert np.all(full < V)                                           # alpha_s = 1: everything unmasked


@exercise("unmasking_step")
def test_unmasking_step_unmasks_at_the_rate_and_draws_from_p_x0(ex):
    # a masked token unmasks with probability (alpha_s - alpha_t) / (1 - alpha_t), to a draw from p_x0
    n, V = 40_000, 3
    p = np.array([0.2, 0.5, 0.3])
    a_t, a_s = 0.25, 0.55
    out = ex.unmasking_step(np.full((n, 1), V), np.broadcast_to(p, (n, 1, V)), a_t, a_s, generator(2))[:, 0]
    rate = (a_s - a_t) / (1 - a_t)
    freq = np.bincount(out, minlength=V + 1) / n
    want = np.append(rate * p, 1 - rate)
    assert np.all(np.abs(freq - want) <= 5 * np.sqrt(want * (1 - want) / n))
