"""minidiff.discrete (D3PM, MDLM) and the exact grid oracle of minidiff.data.grid2d.

Formulas are checked against brute-force Bayes on small K, in float64, on NumPy and torch; the
samplers with the exact denoiser must reproduce the exact grid distribution within the TV that
the same number of exact draws reaches."""
import numpy as np
import pytest
import torch

from minidiff import discrete as d
from minidiff.backend import generator
from minidiff.data import grid2d
from minidiff.data.toy2d import eight_gaussians_mixture

BACKENDS = ("numpy", "torch")


def on(backend, a):
    return torch.from_numpy(np.ascontiguousarray(a)) if backend == "torch" else a


def host(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def reachable_pair(r, K, shape, absorbing):
    """x0 (data states) and an x_t it can reach."""
    x0 = r.integers(0, K - 1 if absorbing else K, shape)
    xt = np.where(r.random(shape) < 0.5, K - 1, x0) if absorbing else r.integers(0, K, shape)
    return x0, xt


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ("uniform", "absorbing"))
def test_products_match_the_closed_forms(backend, kind):
    K, betas = 5, np.array([0.05, 0.2, 0.1, 0.4, 0.3])
    step, closed = ((d.uniform_transition, d.uniform_cumulative) if kind == "uniform"
                    else (d.absorbing_transition, d.absorbing_cumulative))
    Qbars = host(d.cumulative_transitions(step(on(backend, betas), K)))
    np.testing.assert_allclose(Qbars, closed(np.cumprod(1 - betas), K), rtol=0, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_x0_parameterisation_with_the_exact_posterior_is_the_exact_reverse_step(backend):
    # q(x_{t-1} | x_t) by brute force over a random p(x0) and a random (non-symmetric) chain
    r = np.random.default_rng(0)
    K, t = 4, 3
    Qs = r.random((4, K, K)) + 0.1
    Qs /= Qs.sum(-1, keepdims=True)
    Qbars = np.stack([np.linalg.multi_dot([np.eye(K)] + list(Qs[:s + 1])) for s in range(4)])
    p0 = r.dirichlet(np.ones(K))
    joint = p0[:, None, None] * Qbars[t - 2][:, :, None] * Qs[t - 1][None]   # (x0, x_{t-1}, x_t)
    xt = np.arange(K)
    exact = joint.sum(0)[:, xt].T / joint.sum((0, 1))[xt, None]               # q(x_{t-1} | x_t)
    post_x0 = joint.sum(1)[:, xt].T / joint.sum((0, 1))[xt, None]             # q(x0 | x_t)
    got = d.p_posterior_from_x0(on(backend, xt), on(backend, post_x0), on(backend, Qs[t - 1]), on(backend, Qbars[t - 2]))
    np.testing.assert_allclose(host(got), exact, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ("uniform", "absorbing"))
def test_hybrid_loss_is_the_same_on_both_backends_and_its_first_term_is_the_nll(kind):
    r = np.random.default_rng(1)
    K, T, B, L = 5, 6, 7, 3
    betas = np.linspace(0.1, 0.5, T)
    Qs = (d.uniform_transition if kind == "uniform" else d.absorbing_transition)(betas, K)
    Qbars = d.cumulative_transitions(Qs)
    x0, xt = reachable_pair(r, K, (B, L), kind == "absorbing")
    t = r.integers(1, T + 1, B)
    logits = 3 * r.standard_normal((B, L, K))
    loss = d.hybrid_loss(logits, x0, xt, t, Qs, Qbars, lam=0.3)
    loss_t = d.hybrid_loss(*(torch.from_numpy(a) for a in (logits, x0, xt, t, Qs, Qbars)), lam=0.3)
    np.testing.assert_allclose(host(loss_t), loss, rtol=1e-12)
    assert np.all(loss >= 0)
    # t = 1, uniform: every x0 reaches x_1, so p(x0 | x_1) is the model's softmax and
    # L = (1 + lam) (-log softmax(logits)[x0]) summed over the tokens
    if kind == "uniform":
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp, x0[..., None], -1)[..., 0].sum(1)
        one = d.hybrid_loss(logits, x0, xt, np.ones(B, dtype=np.int64), Qs, Qbars, lam=0.3)
        np.testing.assert_allclose(one, 1.3 * nll, rtol=1e-12)


def test_masked_loss_and_unmasking_are_the_same_on_both_backends():
    r = np.random.default_rng(2)
    V, B, L = 4, 6, 5
    x0, xt = reachable_pair(r, V + 1, (B, L), True)
    logits, a_t = r.standard_normal((B, L, V)), r.uniform(0.1, 0.9, B)
    args = (logits, x0, xt, a_t, -np.ones(B))
    np.testing.assert_allclose(host(d.masked_diffusion_loss(*(torch.from_numpy(a) for a in args))),
                               d.masked_diffusion_loss(*args), rtol=1e-12)
    # all-or-nothing steps need no randomness to agree: alpha_s = 1 unmasks every token to
    # the only state the one-hot p_x0 allows
    p = np.eye(V)[x0]
    for backend in BACKENDS:
        out = d.unmasking_step(on(backend, xt), on(backend, p), 0.3, 1.0, generator(0, backend))
        np.testing.assert_array_equal(host(out), x0)


def test_sample_categorical_draws_the_given_probabilities():
    p = np.array([0.1, 0.0, 0.6, 0.3])
    x = d.sample_categorical(np.broadcast_to(p, (20000, 4)), generator(3))
    freq = np.bincount(x, minlength=4) / 20000
    assert freq[1] == 0
    np.testing.assert_allclose(freq, p, atol=5 * np.sqrt(0.25 / 20000))


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="beta"):
        d.uniform_transition(1.5, 4)
    with pytest.raises(ValueError, match="K"):
        d.absorbing_transition(0.1, 1)
    with pytest.raises(ValueError, match="xt"):
        d.q_posterior(np.array([5]), np.array([0]), np.eye(4), np.eye(4))
    Qs = d.uniform_transition(np.full(3, 0.2), 4)
    with pytest.raises(ValueError, match=r"t must hold integer timesteps in \[1, T\]"):
        d.hybrid_loss(np.zeros((2, 4)), np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64), np.array([0, 1]),
                      Qs, d.cumulative_transitions(Qs))
    with pytest.raises(ValueError, match="ts"):
        d.unmasking_sample(lambda x, t: x, np.zeros((2, 2), dtype=np.int64), [0.0, 1.0], lambda t: 1 - t, generator(0))


# ----------------------------------------------------------------------------------------------
# The exact grid oracle

G, N = 8, 3000


@pytest.fixture(scope="module")
def grid():
    p0 = grid2d.eight_gaussians_grid(G)
    mean, std = grid2d.tv_floor(p0, N, repeats=30, rng=11)
    return p0, mean + 4 * std           # what N exact draws reach, with a tolerance of 4 std


def test_grid_probabilities_are_exact_bin_masses():
    p0 = grid2d.eight_gaussians_grid(G)
    assert p0.shape == (G, G) and abs(p0.sum() - 1) < 1e-12
    x = eight_gaussians_mixture(std=0.3).sample(200_000, rng=5)
    e = grid2d.bin_edges(G)
    cells = np.stack([np.searchsorted(e, x[:, i], side="right") - 1 for i in (0, 1)], 1)
    # each cell's frequency within 5 binomial standard errors of its exact mass
    assert np.all(np.abs(grid2d.histogram(cells, G) - p0) <= 5 * np.sqrt(p0 * (1 - p0) / 200_000) + 1e-12)


def absorbing_oracle(p0):
    K = G + 1
    pK = np.zeros((K, K))
    pK[:G, :G] = p0
    return pK, K


@pytest.mark.parametrize("kind", ("uniform", "absorbing"))
def test_d3pm_with_the_exact_denoiser_reproduces_the_grid(grid, kind):
    p0, tolerance = grid
    T = 8
    if kind == "uniform":
        K, pK = G, p0
        Qs = d.uniform_transition(np.linspace(0.1, 1.0, T), K)          # beta_T = 1: x_T is uniform
        x_T = generator(4).randint(0, K, (N, 2))
    else:
        pK, K = absorbing_oracle(p0)
        Qs = d.absorbing_transition(1 / (T - np.arange(T)), K)           # beta_t = 1 / (T - t + 1)
        x_T = np.full((N, 2), K - 1)
    Qbars = d.cumulative_transitions(Qs)
    rng = generator(5)
    model = d.exact_denoiser(pK, lambda t: Qbars[int(t[0]) - 1], rng)
    x = d.ancestral_sample(model, x_T, Qs, rng, logits=False)
    assert grid2d.total_variation(grid2d.histogram(x, G), p0) < tolerance


@pytest.mark.parametrize("steps", (1, 4))
def test_unmasking_with_the_exact_joint_denoiser_reproduces_the_grid(grid, steps):
    # exact even in one step (x0 drawn jointly); the factorised per-token denoiser is not: in one
    # step both tokens unmask together and lose their dependence, far beyond the floor
    p0, tolerance = grid
    pK, K = absorbing_oracle(p0)
    alpha = lambda t: d.linear_schedule(t)[0]
    ts = np.linspace(1, 0, steps + 1)
    rng = generator(6)
    for joint in (True, False):
        model = d.exact_denoiser(pK, lambda t: d.absorbing_cumulative(float(alpha(float(t[0]))), K),
                                 rng if joint else None)
        x = d.unmasking_sample(lambda x, t: model(x, t)[..., :G], np.full((N, 2), G), ts, alpha, rng, logits=False)
        tv = grid2d.total_variation(grid2d.histogram(x, G), p0)
        if joint:
            assert tv < tolerance
        elif steps == 1:
            assert tv > 2 * tolerance


def test_losses_take_minus_infinity_logits_on_impossible_states():
    # a model may rule a state out exactly (a -inf logit): the losses stay finite, no 0 * inf
    r = np.random.default_rng(7)
    K, T, B = 4, 3, 5
    Qs = d.absorbing_transition(1 / (T - np.arange(T)), K)
    x0, xt = reachable_pair(r, K, (B, 2), True)
    logits = r.standard_normal((B, 2, K))
    logits[..., K - 1] = -np.inf                       # x0 is never [MASK]
    t = r.integers(1, T, B)                             # t < T: at T every token is masked (beta_T = 1)
    loss = d.hybrid_loss(logits, x0, xt, t, Qs, d.cumulative_transitions(Qs))
    assert np.all(np.isfinite(loss))
    other = (x0 + 1) % (K - 1)                          # a wrong data state ruled out on every token
    lg = r.standard_normal((B, 2, K - 1))
    np.put_along_axis(lg, other[..., None], -np.inf, -1)
    assert np.all(np.isfinite(d.masked_diffusion_loss(lg, x0, xt, 0.5, -1.0)))


def test_a_short_masked_diffusion_training_run_moves_towards_the_grid():
    # 150 steps on a 4 x 4 grid: the MLP's samples get closer to p0 than the untrained model's
    p0 = grid2d.eight_gaussians_grid(4)
    alpha = lambda t: d.linear_schedule(t)[0]
    ts = np.linspace(1, 0, 21)

    def tv(params):
        probs = lambda z, t: np.exp(d._log_softmax(d.namespace(z), d.grid_denoiser(params, z, t)))
        x = d.unmasking_sample(probs, np.full((4000, 2), 4), ts, alpha, generator(8), logits=False)
        return grid2d.total_variation(grid2d.histogram(x, 4), p0)

    untrained = d.init_grid_denoiser(4, rng=0, hidden=32)
    trained, losses = d.train_grid_denoiser(p0, 150, batch=128, lr=5e-3, params=untrained)
    assert np.mean(losses[-30:]) < np.mean(losses[:30])
    assert tv(trained) < 0.5 * tv(untrained)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ancestral_sample_ends_at_a_certain_prediction_on_both_backends(backend):
    # absorbing, beta_T = 1: from all-[MASK], a model certain of x0 (a one-hot p(x0 | x_t)) is
    # sampled back to exactly that x0 whatever the draws; the callback sees every step
    r = np.random.default_rng(9)
    K, T = 5, 4
    x0 = r.integers(0, K - 1, (6, 3))
    Qs = on(backend, d.absorbing_transition(1 / (T - np.arange(T)), K))
    seen = []
    model = lambda x, t: on(backend, np.eye(K)[x0])
    x = d.ancestral_sample(model, on(backend, np.full((6, 3), K - 1)), Qs, generator(0, backend), logits=False,
                           callback=lambda info: seen.append(info["t"]))
    np.testing.assert_array_equal(host(x), x0)
    assert seen == [3, 2, 1, 0]
