"""Checks for lessons/11_switching_backends.py."""
import math
import types

import numpy as np
import pytest
import torch
from torch.nn import functional as F

LESSON = "11"
exercise = pytest.mark.exercise


@exercise("modulate")
def test_modulate_is_a_per_channel_scale_and_shift(ex):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    emb = torch.randn(2, 6, generator=g, dtype=torch.float64)
    out = ex.modulate(h, emb)
    assert out.shape == h.shape
    for b in range(2):
        for c in range(3):
            expected = h[b, c] * (1 + emb[b, c]) + emb[b, 3 + c]
            torch.testing.assert_close(out[b, c], expected)


@exercise("modulate")
def test_modulate_with_a_zero_embedding_is_the_identity(ex):
    h = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(ex.modulate(h, torch.zeros(3, 8, dtype=torch.float64)), h)


@exercise("attention")
def test_attention_matches_torch(ex):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 4, 7, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 4, 5, 8, generator=g, dtype=torch.float64)
    v = torch.randn(2, 4, 5, 3, generator=g, dtype=torch.float64)
    out = ex.attention(q, k, v)
    assert out.shape == (2, 4, 7, 3)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


@exercise("attention")
def test_attention_averages_the_values(ex):
    q = torch.zeros(1, 3, 4, dtype=torch.float64)              # equal scores: a plain mean of v
    k = torch.randn(1, 6, 4, dtype=torch.float64)
    v = torch.randn(1, 6, 2, dtype=torch.float64)
    torch.testing.assert_close(ex.attention(q, k, v), v.mean(dim=1, keepdim=True).expand(1, 3, 2))
    big = torch.zeros(1, 1, 4, dtype=torch.float64)
    keys = torch.zeros(1, 6, 4, dtype=torch.float64)
    keys[0, 2, 0], big[0, 0, 0] = 1.0, 200.0                    # one key dominates: its value comes back
    torch.testing.assert_close(ex.attention(big, keys, v), v[:, 2:3], atol=1e-8, rtol=0)


@exercise("attention")
def test_attention_on_numpy_arrays_is_the_same_formula_with_autograd_gradients(ex):
    """The same function on NumPy arrays (the core backend): equal to torch's fused kernel on the
    same numbers, a mask honoured, and differentiable by autograd (gradient = torch's)."""
    import autograd

    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 3, 7, 5)), rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 2))
    out = ex.attention(q, k, v)
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 7, 2)
    tq, tk, tv = (torch.from_numpy(a) for a in (q, k, v))
    np.testing.assert_allclose(out, F.scaled_dot_product_attention(tq, tk, tv).numpy(), rtol=1e-10, atol=1e-12)
    mask = np.array([[True, True, False, False], [True, True, True, False]])
    np.testing.assert_allclose(ex.attention(q, k, v, mask),
                               F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.from_numpy(
                                   mask)[:, None, None, :]).numpy(), rtol=1e-10, atol=1e-12)
    loss = lambda q_: np.sum(ex.attention(q_, k, v, mask) ** 2)
    tq.requires_grad_(True)
    (F.scaled_dot_product_attention(tq, tk, tv, attn_mask=torch.from_numpy(mask)[:, None, None, :]) ** 2).sum().backward()
    np.testing.assert_allclose(autograd.grad(loss)(q), tq.grad.numpy(), rtol=1e-8, atol=1e-10)


@exercise("image_grid")
def test_image_grid_places_images_in_reading_order(ex):
    images = np.stack([np.full((1, 3, 2), 10 * i, np.uint8) for i in range(5)])   # (5, 1, 3, 2)
    g = ex.image_grid(images, nrow=3, pad=1)
    assert g.shape == (1 + 2 * (3 + 1), 1 + 3 * (2 + 1)) and g.dtype == np.uint8
    for i in range(5):
        r, c = divmod(i, 3)
        assert (g[1 + r * 4:1 + r * 4 + 3, 1 + c * 3:1 + c * 3 + 2] == 10 * i).all(), f"image {i} misplaced"
    assert (g[0] == 255).all() and (g[:, 0] == 255).all()            # white padding
    assert (g[5:8, 7:9] == 255).all()                                # the empty sixth cell


@exercise("image_grid")
def test_image_grid_of_model_range_floats_and_colour(ex):
    x = torch.tensor([-1.0, 1.0]).reshape(2, 1, 1, 1).expand(2, 3, 2, 2)  # black and white RGB
    g = ex.image_grid(x, pad=0)
    assert g.shape == (2, 4, 3)                                      # default nrow = ceil(sqrt(2)) = 2
    assert (g[:, :2] == 0).all() and (g[:, 2:] == 255).all()


@exercise("batch_indices")
def test_batch_indices_cover_each_epoch_once(ex):
    n, B = 103, 10                                                   # 10 batches per epoch, 3 images dropped
    epoch0 = np.concatenate([ex.batch_indices(n, B, 5, k) for k in range(10)])
    assert len(set(epoch0.tolist())) == 100 and epoch0.min() >= 0 and epoch0.max() < n
    np.testing.assert_array_equal(epoch0, np.random.default_rng([5, 0, 0]).permutation(n)[:100])
    epoch1 = ex.batch_indices(n, B, 5, 10)
    np.testing.assert_array_equal(epoch1, np.random.default_rng([5, 0, 1]).permutation(n)[:10])


@exercise("batch_indices")
def test_batch_indices_depend_on_the_step_only(ex):
    np.testing.assert_array_equal(ex.batch_indices(50, 5, 1, 37), ex.batch_indices(50, 5, 1, 37))
    assert not np.array_equal(ex.batch_indices(50, 5, 1, 37), ex.batch_indices(50, 5, 2, 37))


@exercise("lr_at")
def test_lr_warms_up_linearly_then_stays(ex):
    cfg = types.SimpleNamespace(lr=1e-3, warmup=4)
    lrs = [ex.lr_at(cfg, k) for k in range(7)]
    np.testing.assert_allclose(lrs, [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3, 1e-3], rtol=1e-12)
    assert math.isclose(ex.lr_at(types.SimpleNamespace(lr=2e-4, warmup=0), 0), 2e-4)
