"""Checks for lessons/07_consistency.py."""
import math

import numpy as np
import pytest
import torch

from minidiff.consistency import cm_boundaries, consistency_function

LESSON = "07"
exercise = pytest.mark.exercise


@exercise("consistency_coefficients")
def test_boundary_condition(ex):
    c_skip, c_out, c_in, c_noise = ex.consistency_coefficients(np.array([0.002, 0.002]), 0.5, 0.002)
    np.testing.assert_allclose(c_skip, 1.0, rtol=1e-12)
    np.testing.assert_allclose(c_out, 0.0, atol=1e-15)


@exercise("consistency_coefficients")
def test_coefficients_match_diffusers(ex):
    from diffusers import CMStochasticIterativeScheduler
    sched = CMStochasticIterativeScheduler(sigma_min=0.002, sigma_data=0.5)
    t = np.array([0.01, 0.5, 3.0, 80.0])
    c_skip, c_out, c_in, c_noise = ex.consistency_coefficients(t, 0.5, 0.002)
    ref_skip, ref_out = sched.get_scalings_for_boundary_condition(torch.from_numpy(t))
    np.testing.assert_allclose(c_skip, ref_skip.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_out, ref_out.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(t ** 2 + 0.25), rtol=1e-12)
    np.testing.assert_allclose(c_noise, 0.25 * np.log(t), rtol=1e-12)


@exercise("ct_schedule")
def test_ct_schedule_endpoints(ex):
    assert ex.ct_schedule(0, 1000, s0=2, s1=150)[0] == 2
    assert ex.ct_schedule(1000, 1000, s0=2, s1=150)[0] == 151
    N, mu = ex.ct_schedule(0, 1000, s0=2, s1=150, mu0=0.9)
    assert mu == pytest.approx(math.exp(2 * math.log(0.9) / 2))


@exercise("ct_schedule")
def test_ct_schedule_grows_and_the_ema_tightens(ex):
    Ns, mus = zip(*(ex.ct_schedule(k, 500) for k in range(0, 501, 25)))
    assert all(b >= a for a, b in zip(Ns, Ns[1:])) and Ns[-1] > Ns[0]
    assert all(b >= a for a, b in zip(mus, mus[1:]))
    k = 123
    N, mu = ex.ct_schedule(k, 500, s0=2, s1=150, mu0=0.9)
    assert N == math.ceil(math.sqrt(k / 500 * (151 ** 2 - 4) + 4) - 1) + 1


@exercise("distance")
def test_pseudo_huber_limits(ex):
    x = np.zeros((3, 4))
    small, large = np.full((3, 4), 1e-6), np.full((3, 4), 10.0)
    c = 0.00054 * math.sqrt(4)
    np.testing.assert_allclose(ex.distance(x, small, "pseudo_huber"), 4e-12 / (2 * c), rtol=1e-3)
    np.testing.assert_allclose(ex.distance(x, large, "pseudo_huber"), 20.0 - c, rtol=1e-6)
    np.testing.assert_allclose(ex.distance(x, large, "pseudo_huber", c=1.0), math.sqrt(401) - 1, rtol=1e-12)


@exercise("distance")
def test_l2_and_l1(ex):
    x, y = np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])
    assert ex.distance(x, y, "l2")[0] == pytest.approx(5.0)
    assert ex.distance(x, y, "l1")[0] == pytest.approx(3.0)


def _scaling_f(x, t):
    return x / (1 + np.asarray(t).reshape(-1, 1))


@exercise("cd_loss")
def test_cd_loss_takes_one_heun_step_of_the_teacher(ex):
    rng = np.random.default_rng(0)
    b = cm_boundaries(10)
    x0, z = rng.standard_normal((6, 2)), rng.standard_normal((6, 2))
    n = np.array([0, 1, 3, 5, 7, 8])
    teacher = lambda x, s: x * 0.25 / (0.25 + np.asarray(s).reshape(-1, 1) ** 2)
    t1, t0 = b[n + 1][:, None], b[n][:, None]
    x1 = x0 + t1 * z
    d = (x1 - teacher(x1, t1[:, 0])) / t1
    xe = x1 + (t0 - t1) * d
    d2 = (xe - teacher(xe, t0[:, 0])) / t0
    x_hat = x1 + (t0 - t1) * (d + d2) / 2
    expected = np.mean(np.sum((_scaling_f(x1, t1[:, 0]) - _scaling_f(x_hat, t0[:, 0])) ** 2, axis=1))
    assert ex.cd_loss(_scaling_f, _scaling_f, teacher, x0, n, z, b) == pytest.approx(expected, rel=1e-10)


@exercise("cd_loss")
def test_cd_loss_vanishes_for_the_exact_consistency_function(ex):
    # Gaussian data N(0, s2): the flow scales x by sqrt((s2 + t'^2)/(s2 + t^2)), so
    # f*(x, t) = x sqrt((s2 + eps^2)/(s2 + t^2)) is the exact consistency function.
    s2, eps = 0.25, 0.002
    f_star = lambda x, t: x * np.sqrt((s2 + eps ** 2) / (s2 + np.asarray(t).reshape(-1, 1) ** 2))
    teacher = lambda x, s: x * s2 / (s2 + np.asarray(s).reshape(-1, 1) ** 2)
    rng = np.random.default_rng(1)
    b = cm_boundaries(200)
    x0, z = np.sqrt(s2) * rng.standard_normal((500, 2)), rng.standard_normal((500, 2))
    n = rng.integers(0, 199, 500)
    loss = ex.cd_loss(f_star, f_star, teacher, x0, n, z, b)
    wrong = ex.cd_loss(lambda x, t: x, lambda x, t: x, teacher, x0, n, z, b)
    assert loss < 1e-4 * wrong


@exercise("ct_loss")
def test_ct_loss_formula(ex):
    rng = np.random.default_rng(2)
    b = cm_boundaries(12)
    x0, z = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    n = np.array([0, 2, 4, 6, 10])
    w = 1 / (b[n + 1] - b[n])
    t1, t0 = b[n + 1][:, None], b[n][:, None]
    diff = _scaling_f(x0 + t1 * z, b[n + 1]) - _scaling_f(x0 + t0 * z, b[n])
    c = 0.00054 * math.sqrt(3)
    expected = np.mean(w * (np.sqrt(np.sum(diff ** 2, axis=1) + c * c) - c))
    got = ex.ct_loss(_scaling_f, _scaling_f, x0, n, z, b, metric="pseudo_huber", weight=w)
    assert got == pytest.approx(expected, rel=1e-10)


@exercise("ct_loss")
def test_ct_loss_is_zero_for_a_point_mass(ex):
    # Data concentrated at one point x*: every trajectory is x* + t z and f*(x, t) = x*.
    rng = np.random.default_rng(3)
    star = np.array([[0.3, -0.7]])
    x0, z = np.repeat(star, 50, axis=0), rng.standard_normal((50, 2))
    b = cm_boundaries(20)
    n = rng.integers(0, 19, 50)
    assert ex.ct_loss(lambda x, t: 0 * x + star, lambda x, t: 0 * x + star, x0, n, z, b) == pytest.approx(0.0, abs=1e-20)
    assert ex.ct_loss(lambda x, t: x, lambda x, t: x, x0, n, z, b) > 1e-3


@exercise("consistency_sample")
def test_one_step_sampling_is_one_evaluation(ex):
    calls = []
    f = lambda x, t: (calls.append(t), 0.5 * x)[1]
    x_T = np.ones((4, 2)) * 80
    out = ex.consistency_sample(f, x_T, [], np.zeros_like, T=80.0)
    np.testing.assert_allclose(out, 40.0)
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 80.0, err_msg="one step: f evaluated at the top noise level T")


@exercise("consistency_sample")
def test_multistep_sampling_matches_diffusers(ex):
    from diffusers import CMStochasticIterativeScheduler
    sched = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=0.002, sigma_max=80.0,
                                           sigma_data=0.5, clip_denoised=False)
    raw = lambda x, c_noise: torch.tanh(x) if isinstance(x, torch.Tensor) else np.tanh(x)
    f = consistency_function(raw, sigma_data=0.5, eps=0.002)
    taus = [20.0, 2.0, 0.5]
    sigmas = [80.0] + taus
    sched.sigmas = torch.tensor(sigmas + [0.002], dtype=torch.float64)
    sched.timesteps = torch.from_numpy(sched.sigma_to_t(np.array(sigmas)))
    x_T = 80.0 * np.random.default_rng(4).standard_normal((6, 2))
    sample = torch.from_numpy(x_T)
    for i, t in enumerate(sched.timesteps):
        model_output = raw(sched.scale_model_input(sample, t), None)
        sample = sched.step(model_output, t, sample, generator=torch.Generator().manual_seed(i)).prev_sample
    # diffusers draws step i's noise from a generator seeded with i; replay the same draws
    seeds = iter(range(len(taus)))
    draw = lambda x: torch.randn((6, 2), generator=torch.Generator().manual_seed(next(seeds)),
                                 dtype=torch.float64).numpy()
    ours = ex.consistency_sample(f, x_T, taus, draw, T=80.0, eps=0.002)
    np.testing.assert_allclose(ours, sample.numpy(), rtol=1e-8, atol=1e-10)


@exercise("consistency_coefficients")
def test_coefficients_follow_sigma_data_and_eps(ex):
    from diffusers import CMStochasticIterativeScheduler
    sd, eps = 1.3, 0.01
    sched = CMStochasticIterativeScheduler(sigma_min=eps, sigma_data=sd)
    t = np.array([eps, 0.05, 0.5, 3.0, 80.0])
    c_skip, c_out, c_in, _ = ex.consistency_coefficients(t, sd, eps)
    ref_skip, ref_out = sched.get_scalings_for_boundary_condition(torch.from_numpy(t))
    np.testing.assert_allclose(c_skip, ref_skip.numpy(), rtol=1e-12)
    np.testing.assert_allclose(c_out, ref_out.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(t ** 2 + sd ** 2), rtol=1e-12)
    assert c_skip[0] == pytest.approx(1.0, rel=1e-12) and c_out[0] == pytest.approx(0.0, abs=1e-15)


# Gradients: the target network's output is a constant of the loss, and the student is the
# network at the noisier level t_{n+1}.  f_theta below is a tiny torch "network".

def _net(theta):
    def f(x, t):
        t = t.reshape(-1, 1)
        return theta[0] * x / (1 + t) + theta[1] * torch.tanh(x) * t + theta[2] * t
    return f


def _grad_case(seed, N=12, B=6, d=2):
    rng = np.random.default_rng(seed)
    b = cm_boundaries(N)
    x0, z = (torch.from_numpy(rng.standard_normal((B, d))) for _ in range(2))
    n = rng.integers(0, N - 1, B)
    w = torch.from_numpy(rng.uniform(0.5, 2.0, B))
    return b, x0, z, n, w


def _expected_grads(theta, student_in, t_student, target, w):
    """loss = mean w |f_theta(student_in, t_student) - target|^2 with target a constant."""
    loss = torch.mean(w * torch.sum((_net(theta)(student_in, t_student) - target) ** 2, dim=1))
    return loss, torch.autograd.grad(loss, theta)[0]


def _check_gradients(loss_of, student_in, t_student, target_in, t_target, w):
    theta = torch.tensor([0.8, -0.3, 0.2], dtype=torch.float64, requires_grad=True)
    phi = torch.tensor([0.5, 0.4, -0.1], dtype=torch.float64, requires_grad=True)    # a separate target net
    # f_target = f: the gradient flows through the student only
    with torch.no_grad():
        target = _net(theta)(target_in, t_target)
    loss = loss_of(_net(theta), _net(theta))
    expected_loss, expected = _expected_grads(theta, student_in, t_student, target, w)
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-10)
    (got,) = torch.autograd.grad(loss, theta)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-9, atol=1e-12,
                               err_msg="with f_target = f, the gradient must not flow through the target")
    # f_target a separate network: it gets no gradient, the student's is against its output
    with torch.no_grad():
        target = _net(phi)(target_in, t_target)
    loss = loss_of(_net(theta), _net(phi))
    _, expected = _expected_grads(theta, student_in, t_student, target, w)
    got, got_phi = torch.autograd.grad(loss, (theta, phi), allow_unused=True)
    assert got is not None, "the student f gets no gradient: is f the network at t_{n+1}?"
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-9, atol=1e-12,
                               err_msg="the student is f at the noisier level t_{n+1}")
    assert got_phi is None or float(got_phi.abs().max()) == 0.0, "the target network must get no gradient"


@exercise("ct_loss")
def test_ct_loss_gradient_flows_through_the_student_only(ex):
    b, x0, z, n, w = _grad_case(5)
    t1, t0 = torch.from_numpy(b[n + 1]), torch.from_numpy(b[n])
    _check_gradients(lambda f, f_target: ex.ct_loss(f, f_target, x0, torch.from_numpy(n), z, b, weight=w),
                     x0 + t1[:, None] * z, t1, x0 + t0[:, None] * z, t0, w)


@exercise("cd_loss")
def test_cd_loss_gradient_flows_through_the_student_only(ex):
    b, x0, z, n, w = _grad_case(6)
    teacher = lambda x, s: x * 0.25 / (0.25 + s.reshape(-1, 1) ** 2)
    t1, t0 = torch.from_numpy(b[n + 1])[:, None], torch.from_numpy(b[n])[:, None]
    x1 = x0 + t1 * z
    d = (x1 - teacher(x1, t1)) / t1                              # the teacher's Heun step t_{n+1} -> t_n
    xe = x1 + (t0 - t1) * d
    x_hat = x1 + (t0 - t1) * (d + (xe - teacher(xe, t0)) / t0) / 2
    _check_gradients(lambda f, f_target: ex.cd_loss(f, f_target, teacher, x0, torch.from_numpy(n), z, b, weight=w),
                     x1, t1[:, 0], x_hat, t0[:, 0], w)
