"""Checks for lessons/01_autograd_mlp_adam.py."""
import autograd
import numpy as np
import pytest
import torch

from minidiff.nn import init_mlp

LESSON = "01"
exercise = pytest.mark.exercise


@exercise("sinusoidal_embedding")
def test_embedding_shape_and_values(ex):
    t = np.array([0, 1, 10, 999])
    emb = ex.sinusoidal_embedding(t, 8, max_period=10000.0)
    assert emb.shape == (4, 8)
    freqs = 10000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(emb[:, :4], np.cos(t[:, None] * freqs), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(emb[:, 4:], np.sin(t[:, None] * freqs), rtol=1e-10, atol=1e-12)


@exercise("sinusoidal_embedding")
def test_embedding_has_constant_norm_and_separates_times(ex):
    emb = ex.sinusoidal_embedding(np.arange(50), 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), np.sqrt(8), rtol=1e-10)
    assert np.min(np.linalg.norm(emb[1:] - emb[:-1], axis=1)) > 1e-3


def _manual_mlp(params, x, t, t_dim):
    emb = np.concatenate([np.cos(t[:, None] * 10000.0 ** (-np.arange(t_dim // 2) / (t_dim // 2))),
                          np.sin(t[:, None] * 10000.0 ** (-np.arange(t_dim // 2) / (t_dim // 2)))], axis=1)
    h = np.concatenate([x, emb], axis=1)
    for i, (W, b) in enumerate(params):
        h = h @ W + b
        if i < len(params) - 1:
            h = h / (1 + np.exp(-h))
    return h


@exercise("mlp")
def test_mlp_matches_a_plain_numpy_forward_pass(ex):
    params = init_mlp(np.random.default_rng(0), in_dim=2, hidden=16, depth=2, t_dim=8)
    x = np.random.default_rng(1).standard_normal((5, 2))
    t = np.array([0, 3, 100, 500, 999])
    out = ex.mlp(params, x, t)
    assert out.shape == (5, 2)
    np.testing.assert_allclose(out, _manual_mlp(params, x, t, 8), rtol=1e-10, atol=1e-12)


@exercise("mlp")
def test_mlp_is_differentiable_with_autograd(ex):
    params = init_mlp(np.random.default_rng(2), hidden=8, depth=2, t_dim=4)
    x = np.random.default_rng(3).standard_normal((4, 2))
    t = np.array([1, 2, 3, 4])
    grads = autograd.grad(lambda p: np.sum(ex.mlp(p, x, t) ** 2))(params)
    W0 = params[0][0]
    bumped = [[w.copy(), b.copy()] for w, b in params]
    bumped[0][0][1, 2] += 1e-6
    fd = (np.sum(_manual_mlp(bumped, x, t, 4) ** 2) - np.sum(_manual_mlp(params, x, t, 4) ** 2)) / 1e-6
    assert grads[0][0].shape == W0.shape
    assert grads[0][0][1, 2] == pytest.approx(fd, rel=1e-4, abs=1e-6)


def _tree(seed):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal((3, 2)), rng.standard_normal(2)], [rng.standard_normal((2, 2)), rng.standard_normal(2)]]


def _norm(tree):
    return np.sqrt(sum(np.sum(a ** 2) for pair in tree for a in pair))


@exercise("clip_grad_norm")
def test_clip_rescales_to_max_norm_keeping_direction(ex):
    g = _tree(0)
    clipped = ex.clip_grad_norm(g, 0.5)
    assert _norm(clipped) == pytest.approx(0.5, rel=1e-6)
    ratio = clipped[0][0] / g[0][0]
    np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-10)


@exercise("clip_grad_norm")
def test_clip_leaves_small_gradients_alone(ex):
    g = _tree(1)
    out = ex.clip_grad_norm(g, 100.0)
    for (a, b), (c, d) in zip(g, out):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


@exercise("adam_update")
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_torch_adamw(ex, weight_decay):
    from minidiff.nn import adam_init
    params, lr = _tree(2), 0.01
    torch_params = [torch.tensor(a, requires_grad=True) for pair in params for a in pair]
    opt = torch.optim.AdamW(torch_params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    state = adam_init(params)
    for k in range(5):
        grads = _tree(10 + k)
        params, state = ex.adam_update(params, grads, state, lr=lr, weight_decay=weight_decay)
        for p, g in zip(torch_params, [a for pair in grads for a in pair]):
            p.grad = torch.tensor(g)
        opt.step()
    ours = [a for pair in params for a in pair]
    for a, b in zip(ours, torch_params):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-6, atol=1e-9)
    assert state["step"] == 5


@exercise("adam_update")
def test_adam_first_step_moves_each_weight_by_lr(ex):
    from minidiff.nn import adam_init
    params = _tree(3)
    grads = _tree(4)
    before = [[a.copy(), b.copy()] for a, b in params]
    new, _ = ex.adam_update(params, grads, adam_init(params), lr=0.1)
    step = new[0][0] - before[0][0]
    np.testing.assert_allclose(step, -0.1 * np.sign(grads[0][0]), rtol=1e-5)
    np.testing.assert_array_equal(params[0][0], before[0][0])  # no in-place update


@exercise("ema_update")
def test_ema_update_formula_and_limits(ex):
    e, p = _tree(5), _tree(6)
    np.testing.assert_allclose(ex.ema_update(e, p, 0.0)[1][0], p[1][0])
    np.testing.assert_allclose(ex.ema_update(e, p, 1.0)[1][0], e[1][0])
    np.testing.assert_allclose(ex.ema_update(e, p, 0.9)[0][1], 0.9 * e[0][1] + 0.1 * p[0][1], rtol=1e-12)


@exercise("ema_update")
def test_ema_converges_to_constant_params(ex):
    e, p = _tree(7), _tree(8)
    for _ in range(200):
        e = ex.ema_update(e, p, 0.95)
    np.testing.assert_allclose(e[0][0], p[0][0], atol=1e-3)


@exercise("sinusoidal_embedding")
def test_embedding_uses_the_given_max_period(ex):
    t = np.array([0.0, 2.5, 7.0])
    emb = ex.sinusoidal_embedding(t, 6, max_period=100.0)
    freqs = 100.0 ** (-np.arange(3) / 3)                # the slowest frequency is 1 / max_period^(2/3)
    np.testing.assert_allclose(emb, np.concatenate([np.cos(t[:, None] * freqs), np.sin(t[:, None] * freqs)], 1),
                               rtol=1e-10, atol=1e-12)


@exercise("adam_update")
def test_adam_uses_the_given_betas_and_eps(ex):
    from minidiff.nn import adam_init
    params, lr, b1, b2, eps = _tree(20), 0.05, 0.5, 0.9, 1e-2
    torch_params = [torch.tensor(a, requires_grad=True) for pair in params for a in pair]
    opt = torch.optim.AdamW(torch_params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=0.0)
    state = adam_init(params)
    for k in range(4):
        grads = _tree(30 + k)
        params, state = ex.adam_update(params, grads, state, lr=lr, b1=b1, b2=b2, eps=eps)
        for p, g in zip(torch_params, [a for pair in grads for a in pair]):
            p.grad = torch.tensor(g)
        opt.step()
    for a, b in zip([a for pair in params for a in pair], torch_params):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-6, atol=1e-9)
