"""minidiff.contrastive against independent references: torch's cross_entropy (with probability
targets for duplicate captions), torch autograd, closed forms, and torchmetrics' CLIPScore
driven by a tiny model of our own (no Hugging Face download, no ``transformers``).

Inputs are float64, embeddings of unequal norms, B != D."""
import math
import types
import warnings

import autograd
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from minidiff import contrastive as C

BACKENDS = ("numpy", "torch")
EPS64, EPS32 = float(np.finfo(np.float64).eps), float(np.finfo(np.float32).eps)


def rng(seed):
    return np.random.default_rng(seed)


def on(backend, a):
    return torch.from_numpy(np.ascontiguousarray(a)) if backend == "torch" else a


def host(a):
    return a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def embeddings(seed, B=6, D=4):
    """(B, D) image and text embeddings, rows of norms between 0.3 and 5 (far from unit length)."""
    r = rng(seed)
    I = r.standard_normal((B, D)) * r.uniform(0.3, 5.0, (B, 1))
    T = r.standard_normal((B, D)) * r.uniform(0.3, 5.0, (B, 1))
    return I, T


def reference_loss(I, T, log_scale, groups=None):
    """Symmetric InfoNCE written with torch's own pieces: F.normalize, F.cross_entropy with class
    targets (plain CLIP, Figure 3) or with probability targets (duplicate captions)."""
    I, T = F.normalize(I, dim=-1), F.normalize(T, dim=-1)
    logits = torch.exp(torch.clamp(log_scale, max=math.log(100))) * I @ T.T
    B = len(I)
    if groups is None:
        labels = torch.arange(B)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    g = torch.as_tensor(groups)
    same = (g[:, None] == g[None, :]).double()
    p = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, p) + F.cross_entropy(logits.T, p.T)) / 2


DUPLICATES = np.array([3, 7, 3, 1, 7, 3])   # pairs 0, 2, 5 share a caption, and 1, 4


# ----------------------------------------------------------------------------------------------
# The loss against torch's cross-entropy, on both backends, with its gradients

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("groups", [None, DUPLICATES], ids=["distinct", "duplicates"])
def test_info_nce_matches_torch_cross_entropy(backend, groups):
    I, T = embeddings(0)
    for log_scale in (0.0, C.LOG_SCALE_INIT, 1.3):
        got = host(C.info_nce(on(backend, I), on(backend, T), log_scale, groups))
        expected = reference_loss(torch.from_numpy(I), torch.from_numpy(T), torch.tensor(log_scale, dtype=torch.float64),
                                  groups)
        np.testing.assert_allclose(got, expected.item(), rtol=1e-12)


def test_numpy_and_torch_give_the_same_numbers():
    I, T = embeddings(1, B=5, D=7)
    It, Tt = torch.from_numpy(I), torch.from_numpy(T)
    pairs = [
        (C.normalize(I), C.normalize(It)),
        (C.similarity_logits(I, T[:3], 2.1), C.similarity_logits(It, Tt[:3], 2.1)),
        (C.info_nce(I, T, 2.1), C.info_nce(It, Tt, 2.1)),
        (C.info_nce(I, T, 2.1, DUPLICATES[:5]), C.info_nce(It, Tt, torch.tensor(2.1, dtype=torch.float64),
                                                           torch.from_numpy(DUPLICATES[:5]))),
        (C.clip_style_score(I, T), C.clip_style_score(It, Tt)),
    ]
    for a, b in pairs:
        assert isinstance(b, torch.Tensor) and b.dtype == torch.float64
        np.testing.assert_allclose(host(a), host(b), rtol=1e-10, atol=1e-12)
    assert C.clip_style_score_mean_clamped(I, T) == pytest.approx(C.clip_style_score_mean_clamped(It, Tt), rel=1e-10)


@pytest.mark.parametrize("groups", [None, DUPLICATES], ids=["distinct", "duplicates"])
def test_gradients_match_torch_autograd_including_the_log_scale(groups):
    I, T = embeddings(2)
    log_scale = 1.7
    # autograd through our NumPy path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g_np = [autograd.grad(lambda *a: C.info_nce(*a, groups), i)(I, T, log_scale) for i in range(3)]
    # torch backward through our torch path, and through the independent reference
    ts = [torch.tensor(I, requires_grad=True), torch.tensor(T, requires_grad=True),
          torch.tensor(log_scale, dtype=torch.float64, requires_grad=True)]
    g_ours = torch.autograd.grad(C.info_nce(*ts, groups), ts)
    g_ref = torch.autograd.grad(reference_loss(*ts, groups), ts)
    for a, b, c in zip(g_np, g_ours, g_ref):
        np.testing.assert_allclose(np.asarray(a), c.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-10, atol=1e-13)
    assert abs(float(g_np[2])) > 1e-3          # the temperature is learnt: a real gradient


def test_log_scale_is_capped_at_log_100():
    I, T = embeddings(3)
    at_cap = C.similarity_logits(I, T, C.LOG_SCALE_MAX)
    np.testing.assert_allclose(C.similarity_logits(I, T, 7.0), at_cap, rtol=1e-15)
    cos = (I / np.linalg.norm(I, axis=1, keepdims=True)) @ (T / np.linalg.norm(T, axis=1, keepdims=True)).T
    np.testing.assert_allclose(at_cap, 100 * cos, rtol=1e-12)
    s = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    C.info_nce(torch.from_numpy(I), torch.from_numpy(T), s).backward()
    assert s.grad.item() == 0.0                # past the cap the scale is a constant


# ----------------------------------------------------------------------------------------------
# Limits and closed forms

@pytest.mark.parametrize("backend", BACKENDS)
def test_aligned_orthogonal_pairs_have_the_closed_form_loss(backend):
    # I_i = a_i e_i, T_i = b_i e_i: logits s I (identity), each cross-entropy log(1 + (B-1) e^-s)
    B, D = 5, 8
    basis = np.linalg.qr(rng(4).standard_normal((D, D)))[0][:B]          # B orthonormal rows
    I, T = basis * rng(5).uniform(0.5, 4, (B, 1)), basis * rng(6).uniform(0.5, 4, (B, 1))
    losses = []
    for log_scale in (0.0, 1.0, 2.5, C.LOG_SCALE_MAX, 9.0):
        s = math.exp(min(log_scale, C.LOG_SCALE_MAX))
        got = float(host(C.info_nce(on(backend, I), on(backend, T), log_scale)))
        # the loss is logsumexp(logits) - s: an absolute rounding error of a few eps times s
        assert got == pytest.approx(math.log1p((B - 1) * math.exp(-s)), rel=1e-12, abs=16 * EPS64 * s)
        losses.append(got)
    assert all(a > b for a, b in zip(losses[:3], losses[1:4]))           # falls as the scale grows
    assert losses[3] < 1e-40                                             # -> 0 at the cap (scale 100)


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_pairs_cost_about_log_b(backend):
    I, T = embeddings(7, B=9, D=3)
    # scale -> 0: every softmax is uniform, the loss is log B exactly in the limit
    assert float(host(C.info_nce(on(backend, I), on(backend, T), -40.0))) == pytest.approx(math.log(9), abs=1e-15)
    # at scale s every logit lies in [-s, s], so each cross-entropy lies in log B +- 2 s
    for log_scale in (0.0, 0.5):
        s = math.exp(log_scale)
        got = float(host(C.info_nce(on(backend, I), on(backend, T), log_scale)))
        assert math.log(9) - 2 * s <= got <= math.log(9) + 2 * s


# ----------------------------------------------------------------------------------------------
# Duplicate captions

@pytest.mark.parametrize("backend", BACKENDS)
def test_distinct_groups_are_plain_clip_and_only_equality_of_ids_matters(backend):
    I, T = embeddings(8)
    It, Tt = on(backend, I), on(backend, T)
    plain = float(host(C.info_nce(It, Tt, 1.1)))
    assert float(host(C.info_nce(It, Tt, 1.1, np.array([9, 4, 0, 13, 2, 5])))) == pytest.approx(plain, rel=1e-13)
    grouped = float(host(C.info_nce(It, Tt, 1.1, DUPLICATES)))
    relabelled = np.array([-2, 40, -2, 0, 40, -2])                       # the same partition, other ids
    assert float(host(C.info_nce(It, Tt, 1.1, relabelled))) == pytest.approx(grouped, rel=1e-13)
    assert abs(grouped - plain) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_captions_of_one_group_are_interchangeable(backend):
    # Swapping the captions of two pairs with the same caption id leaves the grouped loss alone
    # (they are positives of each other); plain CLIP calls one of them a negative and changes.
    I, T = embeddings(9)
    swapped = T[[2, 1, 0, 3, 4, 5]]                                      # pairs 0 and 2 share id 3
    def loss(text, groups):
        return float(host(C.info_nce(on(backend, I), on(backend, text), 1.4, groups)))
    assert loss(swapped, DUPLICATES) == pytest.approx(loss(T, DUPLICATES), rel=1e-13)
    assert abs(loss(swapped, None) - loss(T, None)) > 1e-3
    # one group for the whole batch: any shuffle of the captions is the same batch
    same = np.zeros(6, dtype=np.int64)
    assert loss(T[rng(10).permutation(6)], same) == pytest.approx(loss(T, same), rel=1e-13)


def test_exact_duplicates_reach_the_entropy_floor_and_need_no_groups():
    # captions 0 and 1 are one string through one encoder (one embedding), images 0 and 1 both
    # show it.  The grouped loss has the floor log 2 on their rows (its targets' mean entropy)
    # and reaches it; plain CLIP has the same value there: the tied columns cannot be told apart.
    basis = np.eye(5)[:3]
    T = basis[[0, 0, 1, 2]] * np.array([[1.0], [1.0], [2.0], [0.5]])
    I = basis[[0, 0, 1, 2]] * np.array([[3.0], [0.7], [1.0], [2.0]])
    groups = np.array([0, 0, 1, 2])
    floor = (2 * math.log(2) / 4 + 2 * math.log(2) / 4) / 2             # mean entropy, both directions
    assert C.info_nce(I, T, C.LOG_SCALE_MAX, groups) - floor == pytest.approx(0.0, abs=16 * EPS64 * 100)
    assert C.info_nce(I, T, C.LOG_SCALE_MAX) == pytest.approx(floor, rel=1e-12)
    # anywhere else too: with exactly shared embeddings the groups change neither the value nor
    # the gradient a shared encoder sees (the sum over the copies), only each copy's own part
    I, T = embeddings(20)
    T[[2, 5]] = T[0]                                                     # DUPLICATES: 0, 2, 5 and 1, 4
    T[4] = T[1]
    assert C.info_nce(I, T, 1.2, DUPLICATES) == pytest.approx(C.info_nce(I, T, 1.2), rel=1e-13)
    g_plain = autograd.grad(lambda t: C.info_nce(I, t, 1.2))(T)
    g_grouped = autograd.grad(lambda t: C.info_nce(I, t, 1.2, DUPLICATES))(T)
    for copies in ([0, 2, 5], [1, 4]):
        np.testing.assert_allclose(g_grouped[copies].sum(0), g_plain[copies].sum(0), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(g_grouped[copies], np.broadcast_to(g_grouped[copies[0]], (len(copies), 4)),
                                   rtol=1e-10, atol=1e-14)               # grouped: no copy is singled out
    assert np.abs(g_plain[0] - g_plain[2]).max() > 1e-3                  # plain: each copy pulled its own way
    np.testing.assert_allclose(autograd.grad(lambda i: C.info_nce(i, T, 1.2, DUPLICATES))(I),
                               autograd.grad(lambda i: C.info_nce(i, T, 1.2))(I), rtol=1e-10, atol=1e-14)


# ----------------------------------------------------------------------------------------------
# NegCLIP's hard negatives

def reference_hard_negative_loss(I, T, N, log_scale, groups, neg_groups):
    """NegCLIP with torch's pieces: image -> caption over [T; N] with probability targets (a
    column is a positive when its id is the image's), caption -> image over the B images."""
    I, T, N = F.normalize(I, dim=-1), F.normalize(T, dim=-1), F.normalize(N, dim=-1)
    scale = torch.exp(torch.clamp(log_scale, max=math.log(100)))
    g, h = torch.as_tensor(groups), torch.as_tensor(np.concatenate([groups, neg_groups]))
    rows = (g[:, None] == h[None, :]).double()
    cols = (g[:, None] == g[None, :]).double()
    logits = scale * I @ torch.cat([T, N]).T
    return (F.cross_entropy(logits, rows / rows.sum(1, keepdim=True))
            + F.cross_entropy(logits[:, :len(T)].T, (cols / cols.sum(0, keepdim=True)).T)) / 2


NEG_GROUPS = np.array([8, 7, 9, 3, 4])     # 7 and 3: a swapped caption that says what pairs 1, 4 / 0, 2, 5 say


@pytest.mark.parametrize("backend", BACKENDS)
def test_hard_negative_loss_matches_torch_cross_entropy(backend):
    I, T = embeddings(30)
    N = rng(31).standard_normal((5, 4)) * rng(32).uniform(0.3, 5.0, (5, 1))      # M = 5 != B = 6
    for log_scale in (0.4, 2.7, 5.0):
        got = host(C.info_nce_hard_negatives(on(backend, I), on(backend, T), log_scale, DUPLICATES,
                                             on(backend, N), NEG_GROUPS))
        want = reference_hard_negative_loss(*map(torch.from_numpy, (I, T, N)), torch.tensor(log_scale, dtype=torch.float64),
                                            DUPLICATES, NEG_GROUPS).item()
        assert float(got) == pytest.approx(want, rel=1e-12)


def test_hard_negative_gradients_match_torch_autograd():
    I, T = embeddings(33)
    N = rng(34).standard_normal((5, 4))
    ts = [torch.from_numpy(a).requires_grad_() for a in (I, T, N)] + [torch.tensor(1.3, dtype=torch.float64,
                                                                                   requires_grad=True)]
    want = torch.autograd.grad(reference_hard_negative_loss(*ts[:3], ts[3], DUPLICATES, NEG_GROUPS), ts)
    f = lambda i, t, n, s: C.info_nce_hard_negatives(i, t, s, DUPLICATES, n, NEG_GROUPS)
    got_np = [autograd.grad(f, k)(I, T, N, 1.3) for k in range(4)]
    got_t = torch.autograd.grad(C.info_nce_hard_negatives(ts[0], ts[1], ts[3], DUPLICATES, ts[2], NEG_GROUPS), ts)
    for a, b, c in zip(got_np, got_t, want):
        np.testing.assert_allclose(np.asarray(a), c.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(b.numpy(), c.numpy(), rtol=1e-10, atol=1e-13)


def test_a_hard_negative_costs_more_the_closer_it_comes_and_never_if_it_says_the_same():
    I, T = embeddings(35)
    groups = np.arange(6)
    far = -I[:1] + 0.01                                        # swapped caption of pair 0, pointing away
    near = I[:1] * 2.0 + 0.01                                  # ... and the same, now on top of image 0
    loss = lambda n, g: float(C.info_nce_hard_negatives(I, T, 2.0, groups, n, np.array([g])))
    assert loss(far, 10) < loss(near, 10)                     # a negative near the image is a real cost
    assert loss(far, 10) > float(C.info_nce(I, T, 2.0))        # any negative adds to the image's choices
    # the same caption content (a swap that changed nothing, or a twin): a positive of image 0,
    # so bringing it close lowers the loss instead
    assert loss(near, 0) < loss(far, 0)
    # and the torch backend's backward pass runs through the extended columns to the captions
    Tt, It = torch.from_numpy(T).requires_grad_(), torch.from_numpy(I)
    C.info_nce_hard_negatives(It, Tt, 2.0, groups, torch.from_numpy(near), np.array([10])).backward()
    assert torch.isfinite(Tt.grad).all()


def test_hard_negative_bad_input_names_the_argument():
    I, T = embeddings(36)
    with pytest.raises(ValueError, match="negative_emb|text_emb"):
        C.info_nce_hard_negatives(I, T, 0.0, None, np.ones((3, 5)), np.arange(3))
    with pytest.raises(ValueError, match="groups"):
        C.info_nce_hard_negatives(I, T, 0.0, None, np.ones((3, 4)), np.arange(4))


# ----------------------------------------------------------------------------------------------
# The score

@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_style_score_is_100_times_the_clamped_cosine_per_pair(backend):
    I, T = embeddings(11, B=8, D=3)
    cos = F.cosine_similarity(torch.from_numpy(I), torch.from_numpy(T), dim=-1).numpy()
    assert (cos < 0).sum() >= 2 and (cos > 0).sum() >= 2                 # both kinds of pair present
    got = host(C.clip_style_score(on(backend, I), on(backend, T)))
    np.testing.assert_allclose(got, 100 * np.maximum(cos, 0), rtol=1e-12, atol=1e-12)
    # norms do not matter; a pair with itself scores 100
    np.testing.assert_allclose(host(C.clip_style_score(on(backend, 3 * I), on(backend, T / 7))), got, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(C.clip_style_score(on(backend, I), on(backend, 2 * I))), 100.0, rtol=1e-13)


class _TinyClip(torch.nn.Module):
    """A CLIP-compatible model as torchmetrics' CLIPScore duck-types it: get_image_features on
    pixel values, get_text_features on token ids, a ``config`` (read for the text length).
    Fixed random linear maps: images (B, 1, 4, 4) -> R^5, caption k -> row k of a table -> R^5."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W_image = torch.randn(16, 5, generator=g, dtype=torch.float64)
        self.table = torch.randn(10, 5, generator=g, dtype=torch.float64) * torch.rand(10, 1, generator=g, dtype=torch.float64)
        self.config = types.SimpleNamespace()

    def get_image_features(self, pixel_values):
        return pixel_values.reshape(len(pixel_values), -1).double() @ self.W_image

    def get_text_features(self, input_ids, attention_mask):
        return self.table[input_ids[:, 0]]


def _tiny_processor(text=None, images=None, return_tensors="pt", padding=True):
    """Captions are "caption <k>" (token id k); images are stacked as they are."""
    if images is not None:
        return {"pixel_values": torch.stack(list(images))}
    ids = torch.tensor([[int(t.split()[-1])] for t in text])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_mean_clamped_score_matches_torchmetrics_with_our_own_model():
    pytest.importorskip("torchmetrics")
    from torchmetrics.functional.multimodal.clip_score import clip_score
    from torchmetrics.multimodal.clip_score import CLIPScore

    model = _TinyClip()
    images = torch.from_numpy(rng(12).standard_normal((7, 1, 4, 4)))
    captions = [f"caption {k}" for k in (3, 0, 9, 3, 5, 1, 8)]
    I = model.get_image_features(images)
    T = model.get_text_features(_tiny_processor(text=captions)["input_ids"], None)
    cos = F.cosine_similarity(I, T, dim=-1)
    assert (cos < 0).any() and (cos > 0).any() and cos.mean() > 0       # the clamps differ here

    ours = C.clip_style_score_mean_clamped(I, T)
    functional = clip_score(images, captions, lambda: (model, _tiny_processor))
    assert float(functional) == pytest.approx(ours, rel=1e-12)           # float64 all the way
    metric = CLIPScore(lambda: (model, _tiny_processor))
    metric.update(images[:4], captions[:4])                              # two batches: one mean over all
    metric.update(images[4:], captions[4:])
    # its running sum is a float32 state: 7 terms of size <= 100
    assert float(metric.compute()) == pytest.approx(ours, rel=0, abs=8 * 100 * EPS32)
    # the per-pair clamp counts the negative pairs as 0 instead of letting them lower the mean
    per_pair = float(C.clip_style_score(I, T).mean())
    assert per_pair == pytest.approx(float(100 * cos.clamp(min=0).mean()), rel=1e-12)
    assert per_pair > ours + 1.0


def test_the_two_clamps_where_every_pair_is_negative_or_positive():
    I, T = embeddings(13, B=5, D=4)
    assert C.clip_style_score_mean_clamped(I, -I) == 0.0 == float(C.clip_style_score(I, -I).mean())
    # mean cos < 0 but one pair positive: the mean clamp gives 0, the per-pair mean does not
    T_mixed = np.concatenate([I[:1], -I[1:]])
    assert C.clip_style_score_mean_clamped(I, T_mixed) == 0.0
    assert float(C.clip_style_score(I, T_mixed).mean()) == pytest.approx(20.0, rel=1e-12)
    # all positive: the two agree
    assert C.clip_style_score_mean_clamped(I, 2 * I + 0.01 * T) == pytest.approx(
        float(C.clip_style_score(I, 2 * I + 0.01 * T).mean()), rel=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ceiling_and_floor(backend):
    I, T = embeddings(14, B=7, D=5)
    T_close = I + 0.2 * T                                                # captions that fit their images
    ceiling, floor = C.score_ceiling_floor(on(backend, I), on(backend, T_close), rng(15))
    perm = C.derangement(7, rng(15))                                     # the same draw from the same seed
    assert sorted(perm) == list(range(7)) and not np.any(perm == np.arange(7))
    assert ceiling == pytest.approx(float(np.mean(host(C.clip_style_score(I, T_close)))), rel=1e-12)
    assert floor == pytest.approx(float(np.mean(host(C.clip_style_score(I, T_close[perm])))), rel=1e-12)
    assert ceiling > floor
    assert C.score_ceiling_floor(on(backend, I), on(backend, T_close), rng(15)) == (ceiling, floor)
    # orthogonal pairs: the ceiling 100, the floor 0 (every other caption is orthogonal)
    basis = np.linalg.qr(rng(16).standard_normal((6, 6)))[0][:4]
    assert C.score_ceiling_floor(on(backend, 2 * basis), on(backend, basis), rng(17)) == pytest.approx((100.0, 0.0), abs=1e-12)


def test_derangements_are_uniform_over_the_nine_of_four():
    draws = [tuple(C.derangement(4, r)) for r in [rng(18)] for _ in range(1800)]
    counts = np.array(list({d: draws.count(d) for d in set(draws)}.values()))
    assert len(counts) == 9                                              # D(4) = 9 derangements of 4
    assert np.all(np.abs(counts - 200) < 5 * math.sqrt(200))             # ~ 200 each, 5 sigma


# ----------------------------------------------------------------------------------------------
# Bad input

def test_bad_input_names_the_argument():
    I, T = embeddings(19, B=4, D=3)
    with pytest.raises(ValueError, match="image_emb and text_emb"):
        C.info_nce(I, T[:3], 0.0)
    with pytest.raises(ValueError, match="image_emb and text_emb"):
        C.similarity_logits(I, T[:, :2], 0.0)
    with pytest.raises(ValueError, match="text_emb must have 2 dimensions"):
        C.clip_style_score(I, T[0])
    bad = T.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="text_emb holds non-finite"):
        C.info_nce(I, bad, 0.0)
    with pytest.raises(ValueError, match="image_emb has zero vectors"):
        C.clip_style_score(np.concatenate([I[:3], np.zeros((1, 3))]), T)
    with pytest.raises(ValueError, match="e has zero vectors"):
        C.normalize(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="log_scale must be finite"):
        C.info_nce(I, T, math.inf)
    with pytest.raises(ValueError, match="log_scale must be finite"):
        C.info_nce(torch.from_numpy(I), torch.from_numpy(T), torch.tensor(math.nan, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"groups must have shape \(B,\)"):
        C.info_nce(I, T, 0.0, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="groups must hold integer"):
        C.info_nce(I, T, 0.0, np.array([0.0, 1.0, 0.0, 2.0]))
    with pytest.raises(TypeError, match="arrays of both backends"):
        C.info_nce(I, torch.from_numpy(T), 0.0)
    with pytest.raises(ValueError, match="B >= 2"):
        C.score_ceiling_floor(I[:1], T[:1], rng(0))
    with pytest.raises(TypeError, match="rng must be a numpy Generator"):
        C.score_ceiling_floor(I, T, 0)
