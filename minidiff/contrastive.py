"""Contrastive text-image learning: the symmetric InfoNCE loss of CLIP and the CLIP-style score.

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", Figure 3) embeds a batch of B images and their B captions, L2-normalises both,
and reads the (B, B) matrix of scaled cosine similarities as logits of two classifications:
each image picks its caption among the B (rows) and each caption its image (columns).  The loss
is the mean of the two cross-entropies; each is InfoNCE (Oord et al. 2018, "Representation
Learning with Contrastive Predictive Coding", eq. 4) with the other B - 1 pairs as negatives.

The score is the CLIPScore of Hessel et al. 2021 ("CLIPScore: A Reference-free Evaluation
Metric for Image Captioning", eq. 1: w max(cos, 0), w = 2.5) with w = 100 as torchmetrics
writes it, per pair.  Computed with minidiff's own caption model it is a "CLIP-style score
(minidiff caption model)", not the CLIP score of the OpenAI weights: always report it beside its
ceiling and floor (``score_ceiling_floor``).

Embeddings are (B, D) arrays of either backend; every function dispatches on its inputs.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks
from .backend import namespace

# CLIP section 2.5: the temperature "clipped to prevent scaling the logits by more than 100".
LOG_SCALE_MAX = math.log(100.0)
# CLIP's initial temperature 0.07 (section 2.5, after Wu et al. 2018), as a log scale.
LOG_SCALE_INIT = math.log(1 / 0.07)


# ----------------------------------------------------------------------------------------------
# The boundary

def _embeddings(name: str, e):
    """``e`` must be a (B, D) array with B, D >= 1; on the host also finite and with no zero row
    (whose direction is undefined).  Tensors on an accelerator are checked for shape only (a
    value check there would stall every training step)."""
    _checks.array(name, e, ndim=2)
    if 0 in tuple(e.shape):
        raise ValueError(f"{name} must have shape (B, D) with B, D >= 1, got {tuple(e.shape)}")
    xp = namespace(e)
    if _checks._on_host(xp, e):
        v = np.asarray(xp.to_numpy(e), dtype=np.float64)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} holds non-finite values (NaN or inf)")
        zero = np.flatnonzero(~np.any(v != 0, axis=-1))
        if zero.size:
            raise ValueError(f"{name} has zero vectors (rows {zero[:5].tolist()}): a zero embedding has no "
                             f"direction to normalise")
    return e


def _pair(image_emb, text_emb, same_rows: bool = True):
    """Image and text embeddings of one backend and one width D (and, where ``same_rows``, one
    batch size B: row i of each is pair i).  Returns the namespace."""
    _embeddings("image_emb", image_emb)
    _embeddings("text_emb", text_emb)
    xp = _checks.same_backend(image_emb=image_emb, text_emb=text_emb)
    (n_i, d_i), (n_t, d_t) = tuple(image_emb.shape), tuple(text_emb.shape)
    if d_i != d_t or (same_rows and n_i != n_t):
        want = "one shape (B, D): row i of each is pair i" if same_rows else "one width D"
        raise ValueError(f"image_emb and text_emb must have {want}, got {tuple(image_emb.shape)} "
                         f"and {tuple(text_emb.shape)}")
    return xp


def _log_scale(xp, log_scale, like):
    """A real number or a 0-d array (the learnable parameter, kept in the autograd graph) on
    ``like``'s backend, device and dtype."""
    if _checks.is_array(log_scale):
        if tuple(log_scale.shape) not in ((), (1,)):
            raise ValueError(f"log_scale must be a number or a 0-d array, got shape {tuple(log_scale.shape)}")
        _checks.same_backend(image_emb=like, log_scale=log_scale)
        if _checks._on_host(xp, log_scale) and not xp.all_finite(log_scale):
            raise ValueError(f"log_scale must be finite, got {xp.to_numpy(log_scale)!r}")
        if xp.name == "numpy":    # an autograd box (of a float or an array): keep the trace
            return xp.reshape(log_scale * np.ones((), dtype=xp.dtype_of(like)), ())
        return xp.reshape(xp.asarray(log_scale, like=like), ())
    return xp.asarray(_checks.real("log_scale", log_scale), like=like)


def _groups(groups, B: int, like):
    """Caption ids (B,) as an int64 array on ``like``'s backend and device; None: all distinct."""
    xp = namespace(like)
    if groups is None:
        return xp.arange(B, dtype=xp.int64, like=like)
    if not (_checks.is_array(groups) or isinstance(groups, (list, tuple))):
        raise TypeError(f"groups must be an array or a list of B integer caption ids, got {type(groups).__name__}")
    g = np.asarray(namespace(groups).to_numpy(groups))
    if g.shape != (B,):
        raise ValueError(f"groups must have shape (B,) = ({B},), one caption id per pair, got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"groups must hold integer caption ids (equal ids: the same caption), got dtype {g.dtype}")
    return xp.int_array(g, like=like)


def _check_rng(rng):
    if not callable(getattr(rng, "permutation", None)):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng), got {type(rng).__name__}")
    return rng


# ----------------------------------------------------------------------------------------------
# The loss

def normalize(e):
    """Figure 3's l2_normalize: e / ||e||_2 over the last axis.  e: (B, D) -> (B, D), each row of
    unit length.  A zero row (no direction) is a ValueError, not a silent epsilon (checked where
    reading values back is free: NumPy and CPU tensors; on an accelerator it would give NaN)."""
    xp = namespace(_embeddings("e", e))
    # BEGIN SOLUTION
    # hint: divide each row by its Euclidean norm xp.sqrt(xp.sum(e * e, axis=-1, keepdims=True))
    return e / xp.sqrt(xp.sum(e * e, axis=-1, keepdims=True))
    # END SOLUTION


def similarity_logits(image_emb, text_emb, log_scale):
    """Figure 3: logits = exp(t) I_e T_e^T, the cosine similarities of every image with every
    caption scaled by exp(log_scale).  image_emb: (N, D), text_emb: (M, D) (N = M = B in
    training; M prompts for zero-shot classification) -> (N, M).

    ``log_scale`` is CLIP's learnable temperature t, parameterised as a log so the scale stays
    positive (initialised at log(1 / 0.07): ``LOG_SCALE_INIT``).  The scale is capped at 100
    (CLIP section 2.5: "clipped to prevent scaling the logits by more than 100").  CLIP's training
    code (and open_clip's ``training/train.py``) clamps the parameter in place after each
    optimiser step; here the cap is in the formula, so log_scale > log 100 gives the logits of
    log 100 and no gradient.  A trainer should also clamp its parameter after each step, as
    open_clip does, else a parameter that crossed the cap would stay there."""
    xp = _pair(image_emb, text_emb, same_rows=False)
    t = _log_scale(xp, log_scale, image_emb)
    # BEGIN SOLUTION
    # hint: cap t at LOG_SCALE_MAX with xp.where (no gradient above it), normalise both sides,
    # hint: and return exp(t) * I_e @ T_e^T (xp.matmul, xp.transpose): shape (N, M)
    t = xp.where(t > LOG_SCALE_MAX, xp.zeros_like(t) + LOG_SCALE_MAX, t)
    return xp.exp(t) * xp.matmul(normalize(image_emb), xp.transpose(normalize(text_emb)))
    # END SOLUTION


def info_nce(image_emb, text_emb, log_scale, groups=None):
    """Figure 3's symmetric loss: (CE over rows + CE over columns) / 2 of ``similarity_logits``,
    image i's target being caption i and caption i's target image i (InfoNCE both ways).
    image_emb, text_emb: (B, D), row i of each is pair i -> a scalar.

    ``groups`` (B,) integer caption ids handle duplicate captions in a batch (equal ids: the same
    caption, e.g. two garments both "a dark sandal facing left", or two paraphrases of it when the
    ids come from the caption's content rather than its wording).  Plain CLIP takes pair i as the
    only positive of row i and column i, so a caption j that says the same thing is a negative of
    image i: a wrong label, asking the model to tell apart what the captions do not.  With
    groups, every same-id entry is a positive: row i's target is uniform over
    {j : groups[j] == groups[i]}, the loss the soft-target cross-entropy
    -sum_j p_ij log softmax(logits_i)_j (positives averaged as in Khosla et al. 2020's
    supervised contrastive loss); p is symmetric, so the columns use the same targets.
    Distinct ids (or None) give p = I: plain CLIP.  The soft-target loss is >= the targets' mean
    entropy (log k on the rows of a caption present k times), its floor.

    When the copies have exactly one embedding (one string through a deterministic encoder) the
    wrong label is harmless: the tied columns make the two losses equal in value and in gradient
    (summed over the copies, as a shared encoder sums it).  The groups change the training
    signal when the copies' embeddings differ: paraphrases, caption dropout or augmentation,
    encoder dropout."""
    xp = _pair(image_emb, text_emb)
    g = _groups(groups, image_emb.shape[0], image_emb)               # (B,) int64 caption ids
    # BEGIN SOLUTION
    # hint: logits = similarity_logits(...) (B, B); p_ij = [g_i == g_j] / (count of g_i in g),
    # hint: each row of p sums to 1 (p = I when the ids are distinct); log-softmax the logits over
    # hint: rows (axis=1, image->text) and over columns (axis=0, text->image) with xp.logsumexp;
    # hint: loss = (-mean_i sum_j p_ij logsm_rows_ij - mean_j sum_i p_ij logsm_cols_ij) / 2
    logits = similarity_logits(image_emb, text_emb, log_scale)               # (B, B)
    same = xp.asarray(g[:, None] == g[None, :], like=logits)                 # 1: same caption
    p = same / xp.sum(same, axis=1, keepdims=True)                           # soft targets, symmetric
    log_q_i2t = logits - xp.logsumexp(logits, axis=1, keepdims=True)         # image -> caption
    log_q_t2i = logits - xp.logsumexp(logits, axis=0, keepdims=True)         # caption -> image
    loss_i2t = -xp.mean(xp.sum(p * log_q_i2t, axis=1))
    loss_t2i = -xp.mean(xp.sum(p * log_q_t2i, axis=0))
    return (loss_i2t + loss_t2i) / 2
    # END SOLUTION


def info_nce_hard_negatives(image_emb, text_emb, log_scale, groups, negative_emb, negative_groups):
    """``info_nce`` with extra captions that only images choose among: NegCLIP's loss (Yuksekgonul
    et al. 2023, "When and Why Vision-Language Models Behave like Bags-of-Words", section 5).
    In-batch negatives differ from a caption mostly by class, so a model can win them while
    reading the attribute words badly; a hard negative is the caption with one word changed
    ("a dark sandal" -> "a light sandal"), and each image must now also pick its caption
    against every one of them.

    image_emb, text_emb: (B, D), row i of each is pair i; negative_emb: (M, D); groups (B,) and
    negative_groups (M,) caption ids of one numbering (equal ids: the same content).  Image ->
    caption is a soft-target cross-entropy over the B + M columns [text_emb; negative_emb], a
    column a positive of image i when its id equals groups[i] (a swapped caption can say exactly
    what another pair's caption says); caption -> image is ``info_nce``'s, over the B images
    only (a negative has no image).  Without the M negative columns this is ``info_nce``.  Returns a scalar."""
    xp = _pair(image_emb, text_emb)
    _pair(image_emb, negative_emb, same_rows=False)
    B, M = image_emb.shape[0], negative_emb.shape[0]
    g = np.asarray(xp.to_numpy(_groups(groups, B, image_emb)))
    g_neg = np.asarray(xp.to_numpy(_groups(negative_groups, M, negative_emb)))
    logits = similarity_logits(image_emb, xp.concatenate([text_emb, negative_emb], axis=0), log_scale)  # (B, B + M)
    same = g[:, None] == np.concatenate([g, g_neg])[None, :]                 # (B, B + M): positives
    p_rows = xp.asarray(same / same.sum(axis=1, keepdims=True), like=logits)
    p_cols = xp.asarray(same[:, :B] / same[:, :B].sum(axis=0, keepdims=True), like=logits)   # (B, B)
    loss_i2t = -xp.mean(xp.sum(p_rows * (logits - xp.logsumexp(logits, axis=1, keepdims=True)), axis=1))
    block = logits[:, :B]
    loss_t2i = -xp.mean(xp.sum(p_cols * (block - xp.logsumexp(block, axis=0, keepdims=True)), axis=0))
    return (loss_i2t + loss_t2i) / 2


# ----------------------------------------------------------------------------------------------
# The score

def clip_style_score(image_emb, text_emb):
    """Per pair 100 max(cos(I_i, T_i), 0) (Hessel et al. 2021 eq. 1 with w = 100): one number in
    [0, 100] for each image and its own caption.  image_emb, text_emb: (B, D) -> (B,).
    A pair that points away (cos < 0) counts 0, whatever the others do."""
    xp = _pair(image_emb, text_emb)
    # BEGIN SOLUTION
    # hint: cos_i = sum_d normalize(image_emb)_id normalize(text_emb)_id (row by row, not a matrix);
    # hint: return 100 * xp.clip(cos, 0, None)
    cos = xp.sum(normalize(image_emb) * normalize(text_emb), axis=-1)       # (B,)
    return 100 * xp.clip(cos, 0, None)
    # END SOLUTION


def clip_style_score_mean_clamped(image_emb, text_emb) -> float:
    """What torchmetrics' CLIPScore computes (torchmetrics 1.9, ``multimodal/clip_score.py``):
    ``_clip_score_update`` gives 100 cos per pair with no clamp, ``update`` sums them over every
    batch, and ``compute`` returns max(sum / n, 0): the clamp is applied once, to the mean over
    all pairs.  (The functional ``clip_score`` does the same on one call's batch.)  So a negative
    pair lowers the mean where the per-pair score counts it 0, and the mean-clamped value is
    <= the mean of ``clip_style_score``, equal when no cosine is negative.  (B, D), (B, D) -> float."""
    xp = _pair(image_emb, text_emb)
    cos = xp.sum(normalize(image_emb) * normalize(text_emb), axis=-1)       # (B,)
    return max(float(xp.to_numpy(100 * xp.mean(cos))), 0.0)


def derangement(B: int, rng) -> np.ndarray:
    """A permutation of range(B) with no fixed point, uniform over all of them (rejection: a
    uniform permutation is a derangement with probability -> 1/e, so about e draws).  B >= 2."""
    B = _checks.count("B", B, minimum=2)
    _check_rng(rng)
    while True:
        perm = rng.permutation(B)
        if not np.any(perm == np.arange(B)):
            return perm


def score_ceiling_floor(image_emb, text_emb, rng) -> tuple:
    """(ceiling, floor) of the CLIP-style score on real pairs: the mean ``clip_style_score`` of
    each image with its own caption, and of each image with another one's (the captions shuffled
    by a derangement drawn from ``rng``, a numpy Generator).  A generated image's score means
    something only between the two.  image_emb, text_emb: (B, D) with B >= 2 -> two floats.
    Duplicate captions in the batch raise the floor a little (an image may draw its twin's)."""
    xp = _pair(image_emb, text_emb)
    if image_emb.shape[0] < 2:
        raise ValueError(f"image_emb and text_emb need B >= 2 pairs to shuffle for the floor, got B = {image_emb.shape[0]}")
    perm = xp.int_array(derangement(image_emb.shape[0], _check_rng(rng)), like=text_emb)
    ceiling = float(xp.to_numpy(xp.mean(clip_style_score(image_emb, text_emb))))
    floor = float(xp.to_numpy(xp.mean(clip_style_score(image_emb, text_emb[perm]))))
    return ceiling, floor
