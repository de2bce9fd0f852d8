"""Checks for lessons/04_score_sde.py."""
import numpy as np
import pytest
import torch

from minidiff import sde as S
from minidiff.backend import generator
from minidiff.data.toy2d import eight_gaussians_mixture

LESSON = "04"
exercise = pytest.mark.exercise


def _x(seed, n=16, d=2):
    return np.random.default_rng(seed).standard_normal((n, d))


@exercise("vp_sde")
def test_vp_sde_coefficients(ex):
    x = _x(0)
    t = np.linspace(0.0, 1.0, 16)
    f, g = ex.vp_sde(x, t, 0.1, 20.0)
    beta = 0.1 + t * 19.9
    np.testing.assert_allclose(f, -0.5 * beta[:, None] * x, rtol=1e-12)
    np.testing.assert_allclose(g, np.sqrt(beta), rtol=1e-12)


@exercise("vp_sde")
def test_vp_sde_generates_the_vp_marginals(ex):
    # For dx = f dt + g dw with f = -beta x / 2: d log alpha / dt = -beta / 2 and
    # d sigma^2 / dt = g^2 - beta sigma^2 (eq. 5.51 of Sarkka & Solin); check both numerically.
    sde = S.VPSDE()
    x = np.ones((3, 2))
    t, h = np.array([0.2, 0.5, 0.9]), 1e-6
    f, g = ex.vp_sde(x, t, 0.1, 20.0)
    a0, s0 = sde.marginal(t, x)
    a1, s1 = sde.marginal(t + h, x)
    np.testing.assert_allclose((np.log(a1) - np.log(a0)) / h, f[:, 0], rtol=1e-4)
    np.testing.assert_allclose((s1 ** 2 - s0 ** 2) / h, g ** 2 + 2 * f[:, 0] * s0 ** 2, rtol=1e-4)


@exercise("vp_sde")
def test_vp_sde_accepts_a_scalar_time_and_torch(ex):
    x = torch.randn(4, 3, dtype=torch.float64)
    f, g = ex.vp_sde(x, 0.5)
    assert f.shape == (4, 3) and g.shape == (4,)
    np.testing.assert_allclose(g.numpy(), np.sqrt(0.1 + 0.5 * 19.9), rtol=1e-12)


@exercise("dsm_loss")
def test_dsm_loss_of_a_zero_model_is_the_noise_energy(ex):
    x0, noise = _x(1, 64), _x(2, 64)
    t = np.linspace(0.1, 1.0, 64)
    loss = ex.dsm_loss(lambda x, tt: 0 * x, S.VPSDE(), x0, t, noise)
    assert loss == pytest.approx(np.mean(np.sum(noise ** 2, axis=1)), rel=1e-12)


@exercise("dsm_loss")
def test_dsm_loss_is_smallest_at_the_true_score(ex):
    gmm, sde = eight_gaussians_mixture(), S.VPSDE()
    x0, noise = gmm.sample(4000, 3), _x(4, 4000)
    t = np.random.default_rng(5).uniform(0.05, 1.0, 4000)

    def score(scale, shift):
        def s(x, tt):
            a, sig = sde.marginal(tt, x)
            return scale * gmm.score(x, a, sig) + shift
        return s

    best = ex.dsm_loss(score(1.0, 0.0), sde, x0, t, noise)
    assert best < ex.dsm_loss(score(1.2, 0.0), sde, x0, t, noise)
    assert best < ex.dsm_loss(score(0.8, 0.0), sde, x0, t, noise)
    assert best < ex.dsm_loss(score(1.0, 0.2), sde, x0, t, noise)


@exercise("reverse_drift")
def test_reverse_drift_formula(ex):
    for sde in (S.VPSDE(), S.VESDE(0.01, 10.0), S.SubVPSDE()):
        x, s = _x(6), _x(7)
        t = np.linspace(0.1, 0.9, 16)
        f, g = sde.sde(x, t)
        np.testing.assert_allclose(ex.reverse_drift(sde, s, x, t), f - (g ** 2)[:, None] * s, rtol=1e-12)


@exercise("probability_flow_drift")
def test_probability_flow_drift_is_halfway_between_forward_and_reverse(ex):
    sde = S.VPSDE()
    x, s = _x(8), _x(9)
    t = np.full(16, 0.3)
    f, g = sde.sde(x, t)
    np.testing.assert_allclose(ex.probability_flow_drift(sde, s, x, t), f - 0.5 * (g ** 2)[:, None] * s, rtol=1e-12)


@exercise("probability_flow_drift")
def test_probability_flow_preserves_a_gaussian(ex):
    # Data N(0, I) under the VP SDE stays N(0, I) and its score is -x, so the flow is the
    # identity map: f - g^2 s / 2 = -beta x / 2 + beta x / 2 = 0.
    sde = S.VPSDE()
    x = _x(10)
    np.testing.assert_allclose(ex.probability_flow_drift(sde, -x, x, np.full(16, 0.7)), 0.0, atol=1e-12)


@exercise("euler_maruyama_step")
def test_euler_maruyama_step_formula(ex):
    sde = S.VESDE(0.01, 10.0)
    x, z = _x(11), _x(12)
    score = lambda y, tt: -y / 4
    out = ex.euler_maruyama_step(sde, score, x, 0.5, -0.01, z)
    _, g = sde.sde(x, np.full(16, 0.5))
    expected = x + (0 - (g ** 2)[:, None] * (-x / 4)) * -0.01 + g[:, None] * np.sqrt(0.01) * z
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@exercise("euler_maruyama_step")
def test_reverse_sde_keeps_a_standard_gaussian(ex):
    sde, rng = S.VPSDE(), generator(13)
    x = rng.randn((20000, 1))
    n = 200
    for t in np.linspace(1.0, 1e-3, n):
        x = ex.euler_maruyama_step(sde, lambda y, tt: -y, x, float(t), -(1 - 1e-3) / n, rng.randn_like(x))
    assert np.var(x) == pytest.approx(1.0, abs=0.05) and abs(np.mean(x)) < 0.03


@exercise("langevin_step")
def test_langevin_step_size_rule(ex):
    x, z = _x(14), _x(15)
    s = -x
    out = ex.langevin_step(lambda y, tt: -y, x, 0.5, 0.16, z, alpha=0.9)
    eps = 2 * 0.9 * (0.16 * np.linalg.norm(z, axis=1).mean() / np.linalg.norm(s, axis=1).mean()) ** 2
    np.testing.assert_allclose(out, x + eps * s + np.sqrt(2 * eps) * z, rtol=1e-12)


@exercise("langevin_step")
def test_langevin_corrector_leaves_its_target_nearly_invariant(ex):
    rng = generator(16)
    x = 3.0 + 0.1 * rng.randn((5000, 2))          # start far from N(0, I)
    for _ in range(300):
        x = ex.langevin_step(lambda y, tt: -y, x, 0.5, 0.3, rng.randn_like(x))
    assert abs(np.mean(x)) < 0.1 and np.var(x) == pytest.approx(1.0, abs=0.15)


@exercise("divergence_hutchinson")
def test_hutchinson_is_z_transpose_J_z(ex):
    A = np.array([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0], [0.0, 1.0, 2.0]])
    x, z = _x(17, 5, 3), np.sign(_x(18, 5, 3))
    got = ex.divergence_hutchinson(lambda y: y @ A.T, x, z)
    np.testing.assert_allclose(got, np.einsum("bi,ij,bj->b", z, A, z), rtol=1e-12)


@exercise("divergence_hutchinson")
def test_hutchinson_is_unbiased_for_the_trace(ex):
    W = np.array([[0.3, -1.0], [2.0, 0.7]])
    fun = lambda y: np.tanh(y @ W.T)
    x = np.repeat(_x(19, 1), 20000, axis=0)
    z = np.sign(np.random.default_rng(20).standard_normal(x.shape))
    exact = S.divergence_exact(fun, x[:1])[0]
    assert np.mean(ex.divergence_hutchinson(fun, x, z)) == pytest.approx(exact, abs=0.03)


def _recording_score(seen):
    """A score that depends on the time it is told (so evaluating at the wrong t shows)."""
    def score(y, tt, **kwargs):
        seen.append((np.array(y), np.array(tt), kwargs))
        return -y * (1 + np.asarray(tt)).reshape(-1, 1)
    return score


@exercise("dsm_loss")
def test_dsm_loss_evaluates_the_model_at_the_perturbed_point_and_its_time(ex):
    sde = S.VPSDE()
    x0, noise = _x(21, 8), _x(22, 8)
    t = np.linspace(0.05, 1.0, 8)
    seen = []
    loss = ex.dsm_loss(_recording_score(seen), sde, x0, t, noise, class_labels=np.arange(8))
    assert len(seen) == 1
    x_seen, t_seen, kwargs = seen[0]
    alpha, sigma = sde.marginal(t, x0)
    x_t = alpha[:, None] * x0 + sigma[:, None] * noise
    np.testing.assert_allclose(x_seen, x_t, rtol=1e-12)
    np.testing.assert_allclose(t_seen, t, rtol=1e-15)
    np.testing.assert_array_equal(kwargs.get("class_labels"), np.arange(8))
    # lambda(t) = sigma(t)^2: || sigma s + z ||^2 per example, averaged
    per_example = [np.sum((sigma[i] * -x_t[i] * (1 + t[i]) + noise[i]) ** 2) for i in range(8)]
    assert loss == pytest.approx(np.mean(per_example), rel=1e-12)


@exercise("euler_maruyama_step")
def test_euler_maruyama_step_uses_the_drift_and_the_score_at_the_current_time(ex):
    sde = S.VPSDE()                       # f != 0 here, unlike VE
    x, z = _x(23), _x(24)
    t, dt = 0.6, -0.02
    seen = []
    out = ex.euler_maruyama_step(sde, _recording_score(seen), x, t, dt, z)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0][1].reshape(-1) * np.ones(16), t, rtol=1e-15)   # the score at t, not t + dt
    f, g = sde.sde(x, np.full(16, t))
    s = -x * (1 + t)
    expected = x + (f - (g ** 2)[:, None] * s) * dt + g[:, None] * np.sqrt(-dt) * z
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@exercise("langevin_step")
def test_langevin_step_asks_the_score_at_its_time(ex):
    x, z = _x(25), _x(26)
    seen = []
    out = ex.langevin_step(_recording_score(seen), x, 0.3, 0.16, z, alpha=1.0)
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0][1].reshape(-1) * np.ones(16), 0.3, rtol=1e-15)
    s = -x * 1.3
    eps = 2 * (0.16 * np.linalg.norm(z, axis=1).mean() / np.linalg.norm(s, axis=1).mean()) ** 2
    np.testing.assert_allclose(out, x + eps * s + np.sqrt(2 * eps) * z, rtol=1e-12)
