"""Checks for lessons/12_text_to_image.py (the contrastive part: InfoNCE and the CLIP-style score).

Every formula here is backend-neutral, so the checks run it on NumPy / autograd AND on torch, in
float64, on embeddings far from unit length and of unequal sizes (B != D, N != M).  The
references are torch's own F.normalize, F.cross_entropy (with probability targets for duplicate
captions) and F.cosine_similarity, or closed forms."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from two_backends import BACKENDS, grads, host, on, rng

LESSON = "12"
exercise = pytest.mark.exercise
EPS64 = float(np.finfo(np.float64).eps)
LOG_100 = math.log(100.0)






def embeddings(seed, B=6, D=4):
    """(B, D) rows with norms between 0.3 and 5."""
    r = rng(seed)
    return r.standard_normal((B, D)) * r.uniform(0.3, 5.0, (B, 1)), r.standard_normal((B, D)) * r.uniform(0.3, 5.0, (B, 1))


def cosines(I, T):
    """(N, M) cosine similarities by torch."""
    return (F.normalize(torch.from_numpy(I), dim=-1) @ F.normalize(torch.from_numpy(T), dim=-1).T).numpy()


def reference_loss(I, T, log_scale, groups=None):
    """Symmetric InfoNCE with torch's cross_entropy: class targets, or probability targets."""
    logits = torch.from_numpy(math.exp(min(log_scale, LOG_100)) * cosines(I, T))
    B = len(I)
    if groups is None:
        target = torch.arange(B)
        return float((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    same = torch.from_numpy((groups[:, None] == groups[None, :]).astype(np.float64))
    p = same / same.sum(1, keepdim=True)
    return float((F.cross_entropy(logits, p) + F.cross_entropy(logits.T, p.T)) / 2)


GROUPS = np.array([5, 2, 5, 0, 2, 5])        # pairs 0, 2, 5 share a caption, and 1, 4


# ----------------------------------------------------------------------------------------------
# key_padding_bias: cross-attention with a mask (the caption's padding gets no weight)

@exercise("key_padding_bias")
def test_key_padding_bias_is_zero_on_real_tokens_and_minus_inf_on_padding(ex):
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    b = ex.key_padding_bias(mask, torch.float64)
    assert b.shape == (2, 1, 1, 5) and b.dtype == torch.float64
    assert (b[:, 0, 0][mask] == 0).all()
    assert torch.isneginf(b[:, 0, 0][~mask]).all()


@exercise("key_padding_bias")
def test_key_padding_bias_on_numpy_masks_is_the_same_bias(ex):
    """The core backend: a NumPy mask gives a NumPy bias of the asked dtype, equal to the torch one,
    and masked attention on NumPy arrays equals the softmax over each caption's real tokens."""
    mask = np.array([[True, False, True, True], [False, True, False, False], [True, True, True, True]])
    b = ex.key_padding_bias(mask, np.float64)
    assert isinstance(b, np.ndarray) and b.shape == (3, 1, 1, 4) and b.dtype == np.float64
    assert (b[:, 0, 0][mask] == 0).all() and np.isneginf(b[:, 0, 0][~mask]).all()
    assert ex.key_padding_bias(mask).dtype == np.float32                  # the default: float32
    np.testing.assert_array_equal(b, ex.key_padding_bias(torch.from_numpy(mask), torch.float64).numpy())
    rng = np.random.default_rng(5)
    q, k, v = rng.standard_normal((3, 2, 6)), rng.standard_normal((3, 4, 6)), rng.standard_normal((3, 4, 3))
    w = np.exp(q @ np.swapaxes(k, -1, -2) / np.sqrt(6) + b[:, 0])          # (3, 2, 4), masked keys -> 0
    out = (w / w.sum(-1, keepdims=True)) @ v
    for i in range(3):
        real = mask[i]
        s = q[i] @ k[i, real].T / np.sqrt(6)
        e = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(out[i], (e / e.sum(-1, keepdims=True)) @ v[i, real], rtol=1e-10)
    with pytest.raises(ValueError, match="no key"):
        ex.key_padding_bias(np.array([[True, True], [False, False]]))
    with pytest.raises(ValueError, match="bool"):
        ex.key_padding_bias(np.array([[1, 0]]))


@exercise("key_padding_bias")
def test_masked_attention_is_attention_over_the_real_tokens_only(ex):
    """softmax(q k^T / sqrt(d) + bias) v with the bias of a (B, S) mask: for each caption, the
    attention over its real tokens alone (captions of unequal lengths), whatever the padding holds."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64)          # (B, heads, L = H*W, d)
    k = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)          # (B, heads, S, d)
    v = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    lengths = (4, 2)
    mask = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]       # (B, S)
    bias = ex.key_padding_bias(mask, torch.float64)
    w = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + bias, dim=-1)        # (B, heads, L, S)
    out = w @ v
    for b, n in enumerate(lengths):
        expect = torch.softmax(q[b] @ k[b, :, :n].transpose(-1, -2) / 2.0, dim=-1) @ v[b, :, :n]
        torch.testing.assert_close(out[b], expect)
    k2, v2 = k.clone(), v.clone()
    k2[~mask[:, None, :].expand(2, 3, 5)] = 1e3                            # the padding's keys and values
    v2[~mask[:, None, :].expand(2, 3, 5)] = -1e3
    w2 = torch.softmax(q @ k2.transpose(-1, -2) / 2.0 + bias, dim=-1)
    torch.testing.assert_close(w2 @ v2, out)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :]))


# ----------------------------------------------------------------------------------------------
# normalize

@exercise("normalize")
@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_gives_unit_rows_in_the_same_direction(ex, backend):
    e, _ = embeddings(0, B=5, D=3)
    u = host(ex.normalize(on(backend, e)))
    assert u.shape == (5, 3)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, rtol=1e-14)
    np.testing.assert_allclose(u * np.linalg.norm(e, axis=1, keepdims=True), e, rtol=1e-13)   # a positive multiple
    np.testing.assert_allclose(u, F.normalize(torch.from_numpy(e), dim=-1).numpy(), rtol=1e-13)


@exercise("normalize")
@pytest.mark.parametrize("backend", BACKENDS)
def test_normalize_gradient_is_the_projection_off_the_direction(ex, backend):
    # d/de sum(w * e / |e|) = (w - (w . u) u) / |e| row by row: no gradient along e itself
    e, w = embeddings(1, B=4, D=5)
    (g,) = grads(backend, lambda a: (on(backend, w) * ex.normalize(a)), (e,), (0,))
    n = np.linalg.norm(e, axis=1, keepdims=True)
    u = e / n
    np.testing.assert_allclose(g, (w - np.sum(w * u, axis=1, keepdims=True) * u) / n, rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------------
# similarity_logits

@exercise("similarity_logits")
@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity_logits_are_scaled_cosines_of_every_pair(ex, backend):
    I, T = embeddings(2, B=5, D=4)
    T = T[:3]                                                            # N = 5 images, M = 3 captions
    for log_scale in (0.0, 1.3, -0.7):
        got = host(ex.similarity_logits(on(backend, I), on(backend, T), log_scale))
        assert got.shape == (5, 3)
        np.testing.assert_allclose(got, math.exp(log_scale) * cosines(I, T), rtol=1e-12, atol=1e-14)


@exercise("similarity_logits")
@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity_logits_cap_the_scale_at_100(ex, backend):
    I, T = embeddings(3, B=4, D=6)
    expected = 100 * cosines(I, T)
    for log_scale in (LOG_100, 5.0, 11.0):
        got = host(ex.similarity_logits(on(backend, I), on(backend, T), log_scale))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@exercise("similarity_logits")
@pytest.mark.parametrize("backend", BACKENDS)
def test_similarity_logits_gradient_in_the_log_scale(ex, backend):
    # d/dt exp(t) C = exp(t) C below the cap, 0 above it (the scale is then the constant 100)
    I, T = embeddings(4, B=3, D=5)
    for t, factor in ((1.1, math.exp(1.1)), (6.0, 0.0)):
        (g,) = grads(backend, lambda a, b, s: ex.similarity_logits(a, b, s), (I, T, np.float64(t)), (2,))
        assert float(g) == pytest.approx(factor * cosines(I, T).sum(), rel=1e-10, abs=1e-12)


# ----------------------------------------------------------------------------------------------
# info_nce

@exercise("info_nce")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("groups", [None, GROUPS], ids=["distinct", "duplicates"])
def test_info_nce_is_torchs_symmetric_cross_entropy(ex, backend, groups):
    I, T = embeddings(5)
    for log_scale in (0.0, 2.66, 1.0):
        got = float(host(ex.info_nce(on(backend, I), on(backend, T), log_scale, groups)))
        assert got == pytest.approx(reference_loss(I, T, log_scale, groups), rel=1e-12)


@exercise("info_nce")
@pytest.mark.parametrize("backend", BACKENDS)
def test_info_nce_of_aligned_orthogonal_pairs(ex, backend):
    # I_i, T_i along one axis each: the logits are s times the identity and each direction's
    # cross-entropy is log(1 + (B - 1) e^-s), which falls to 0 as the scale s grows
    B = 4
    basis = np.linalg.qr(rng(6).standard_normal((7, 7)))[0][:B]
    I, T = basis * rng(7).uniform(0.5, 3, (B, 1)), basis * rng(8).uniform(0.5, 3, (B, 1))
    for log_scale in (0.0, 1.5, 3.0):
        s = math.exp(log_scale)
        got = float(host(ex.info_nce(on(backend, I), on(backend, T), log_scale)))
        assert got == pytest.approx(math.log1p((B - 1) * math.exp(-s)), rel=1e-12, abs=16 * EPS64 * s)


@exercise("info_nce")
@pytest.mark.parametrize("backend", BACKENDS)
def test_info_nce_groups_only_matter_through_equal_ids(ex, backend):
    I, T = embeddings(9)
    def loss(text, groups, images=I):
        return float(host(ex.info_nce(on(backend, images), on(backend, text), 0.9, groups)))
    assert loss(T, np.array([8, 1, 4, 0, 3, 9])) == pytest.approx(loss(T, None), rel=1e-13)      # distinct: plain
    assert loss(T, np.array([1, -4, 1, 30, -4, 1])) == pytest.approx(loss(T, GROUPS), rel=1e-13)  # same partition
    # captions of one group are positives of each other: exchanging two of them changes nothing ...
    assert loss(T[[5, 1, 2, 3, 4, 0]], GROUPS) == pytest.approx(loss(T, GROUPS), rel=1e-13)
    # ... which plain CLIP does not grant
    assert abs(loss(T[[5, 1, 2, 3, 4, 0]], None) - loss(T, None)) > 1e-3


@exercise("info_nce")
@pytest.mark.parametrize("backend", BACKENDS)
def test_info_nce_gradients_match_torch_autograd_of_the_reference(ex, backend):
    I, T = embeddings(10, B=5, D=3)
    groups = GROUPS[:5]
    ours = grads(backend, lambda a, b, s: ex.info_nce(a, b, s, groups), (I, T, np.float64(1.4)), (0, 1, 2))
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (I, T, 1.4)]
    logits = torch.exp(ts[2]) * F.normalize(ts[0], dim=-1) @ F.normalize(ts[1], dim=-1).T
    g = torch.from_numpy(groups)
    p = (g[:, None] == g[None, :]).double()
    p = p / p.sum(1, keepdim=True)
    ref = torch.autograd.grad((F.cross_entropy(logits, p) + F.cross_entropy(logits.T, p.T)) / 2, ts)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------------------
# clip_style_score

@exercise("clip_style_score")
@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_style_score_is_100_times_the_clamped_cosine_of_each_pair(ex, backend):
    I, T = embeddings(11, B=8, D=3)
    cos = F.cosine_similarity(torch.from_numpy(I), torch.from_numpy(T), dim=-1).numpy()
    assert (cos < 0).sum() >= 2 and (cos > 0).sum() >= 2
    got = host(ex.clip_style_score(on(backend, I), on(backend, T)))
    assert got.shape == (8,)
    np.testing.assert_allclose(got, 100 * np.maximum(cos, 0), rtol=1e-12, atol=1e-12)


@exercise("clip_style_score")
@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_style_score_ignores_norms_and_other_pairs(ex, backend):
    I, T = embeddings(12, B=5, D=4)
    base = host(ex.clip_style_score(on(backend, I), on(backend, T)))
    scaled = host(ex.clip_style_score(on(backend, 4 * I), on(backend, T / 3)))
    np.testing.assert_allclose(scaled, base, rtol=1e-12, atol=1e-12)
    T2 = T.copy()
    T2[2] = -7 * T[0]                                                    # change pair 2 only
    changed = host(ex.clip_style_score(on(backend, I), on(backend, T2)))
    np.testing.assert_allclose(np.delete(changed, 2), np.delete(base, 2), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(host(ex.clip_style_score(on(backend, I), on(backend, 2 * I))), 100.0, rtol=1e-13)
    np.testing.assert_allclose(host(ex.clip_style_score(on(backend, I), on(backend, -I))), 0.0, atol=1e-13)
