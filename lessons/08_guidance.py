"""Lesson 08: Conditioning and classifier-free guidance.

Write the functions below; the notebook notebooks/08_guidance.ipynb explains the maths.
Check your work with:   minidiff check 08
(or: python -m pytest tests/lessons/test_08_guidance.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import numpy as np

from minidiff.backend import namespace
from minidiff.data.toy2d import _mixture_terms
from minidiff.guidance import _check_w


def mixture_class_posterior(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """Bayes' rule with the components as classes: p(c = k | x) = pi_k N(x; alpha mu_k, C_k) / p(x),
    C_k = alpha^2 v_k + sigma^2, computed in log space (softmax over k).
    x: (B, d); means, variances: (K, d); weights: (K,); alpha, sigma: scalars or (B,).  -> (B, K)."""
    xp = namespace(x)
    raise NotImplementedError("EXERCISE mixture_class_posterior: write this function (see its docstring)")


def drop_labels(labels, p_uncond: float, null_label, rng):
    """Algorithm 1, line 3: c <- null with probability p_uncond, independently per example.
    labels: (B, ...) of either backend, the conditioning of one keyword: integer class labels
    (B,), or e.g. a text embedding (B, L, D); null_label: an int label, or an array of one
    example's shape (e.g. a zero embedding), broadcast over the batch.  rng: a numpy Generator
    (one uniform per example).  -> labels with the dropped examples set to the null."""
    if not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}")
    xp = namespace(labels)
    if not isinstance(null_label, (int, np.integer)):
        null_label = xp.asarray(null_label, like=labels)     # an array null: labels' backend, device, dtype
    raise NotImplementedError("EXERCISE drop_labels: write this function (see its docstring)")


def guided(cond, uncond, w: float):
    """Eq. 6: (1 + w) cond - w uncond, for the conditional and unconditional predictions of
    one network (same shape; eps, x0, D, v or score)."""
    w = _check_w(w)
    raise NotImplementedError("EXERCISE guided: write this function (see its docstring)")


def classifier_free_guidance(model, w: float, null_label=None, key: str = "class_labels", null=None):
    """Wrap a conditional ``model(x, t, **{key: c})`` into the guided model with the same
    signature, for any sampler.  One call on the doubled batch [x; x] with the condition
    [c; null] gives both predictions (one network evaluation per step, twice the batch).
    ``key`` names the conditioning keyword ('class_labels', or e.g. 'context' for text);
    the null condition (``null`` or, by its old name, ``null_label``) is an int label or an array
    of one example's shape, broadcast over the batch.  Other keyword arguments pass through,
    arrays doubled along the batch."""
    w = _check_w(w)
    if (null is None) == (null_label is None):
        raise ValueError("classifier_free_guidance needs the null condition: pass exactly one of null or null_label")
    null = null_label if null is None else null

    def guided_model(x, t, **model_kwargs):
        c = model_kwargs.pop(key, None)
        if c is None:
            raise ValueError(f"classifier-free guidance needs {key} (B, ...) for the conditional prediction")
        xp = namespace(x)
        B = x.shape[0]
        rest = {k: xp.concatenate([v, v], axis=0) if xp.is_array(v) else v for k, v in model_kwargs.items()}
        null_c = xp.zeros_like(c) + (null if isinstance(null, (int, np.integer)) else xp.asarray(null, like=c))
        raise NotImplementedError("EXERCISE classifier_free_guidance: write this function (see its docstring)")

    return guided_model
