"""Lesson 12: Text-to-image: tokens, cross-attention, guidance with the empty caption, InfoNCE and the CLIP-style score.

Write the functions below; the notebook notebooks/12_text_to_image.ipynb explains the maths.
Check your work with:   minidiff check 12
(or: python -m pytest tests/lessons/test_12_text_to_image.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff.backend import namespace
from minidiff.contrastive import LOG_SCALE_MAX, _embeddings, _groups, _log_scale, _pair


def key_padding_bias(mask, dtype=None):
    """The additive form of a key padding mask: 0 where ``mask`` is True (a real token), -inf
    where it is False (padding), so that softmax gives padding exactly zero weight.  A (B, S)
    mask becomes (B, 1, 1, S), broadcast over heads and queries; other shapes are kept.  A row
    with no real key would be all -inf (NaN after softmax): refused.  ``dtype``: the result's
    (default float32 of the mask's backend); the result lives where the mask does."""
    xp = namespace(mask)
    host = xp.to_numpy(mask)
    if host.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array (True: a key that takes part), got {host.dtype}")
    if host.ndim == 2:
        mask = xp.reshape(mask, (host.shape[0], 1, 1, host.shape[1]))   # (B, S) -> (B, 1, 1, S)
    if host.shape[-1] == 0 or not host.any(axis=-1).all():
        raise ValueError("mask leaves a query with no key to attend to (every key masked); "
                         "an empty caption still has its [BOS] and [EOS] tokens")
    dtype = xp.float32 if dtype is None else dtype
    raise NotImplementedError("EXERCISE key_padding_bias: write this function (see its docstring)")


def normalize(e):
    """Figure 3's l2_normalize: e / ||e||_2 over the last axis.  e: (B, D) -> (B, D), each row of
    unit length.  A zero row (no direction) is a ValueError, not a silent epsilon (checked where
    reading values back is free: NumPy and CPU tensors; on an accelerator it would give NaN)."""
    xp = namespace(_embeddings("e", e))
    raise NotImplementedError("EXERCISE normalize: write this function (see its docstring)")


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
    raise NotImplementedError("EXERCISE similarity_logits: write this function (see its docstring)")


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
    raise NotImplementedError("EXERCISE info_nce: write this function (see its docstring)")


def clip_style_score(image_emb, text_emb):
    """Per pair 100 max(cos(I_i, T_i), 0) (Hessel et al. 2021 eq. 1 with w = 100): one number in
    [0, 100] for each image and its own caption.  image_emb, text_emb: (B, D) -> (B,).
    A pair that points away (cos < 0) counts 0, whatever the others do."""
    xp = _pair(image_emb, text_emb)
    raise NotImplementedError("EXERCISE clip_style_score: write this function (see its docstring)")
