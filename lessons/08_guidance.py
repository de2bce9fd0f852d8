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


def drop_labels(labels, p_uncond: float, null_label: int, rng):
    """Algorithm 1, line 3: c <- null with probability p_uncond, independently per example.
    labels: (B,) integers of either backend; rng: a numpy Generator (one uniform per example).
    -> (B,) labels, the dropped ones set to ``null_label``."""
    if not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}")
    xp = namespace(labels)
    raise NotImplementedError("EXERCISE drop_labels: write this function (see its docstring)")


def guided(cond, uncond, w: float):
    """Eq. 6: (1 + w) cond - w uncond, for the conditional and unconditional predictions of
    one network (same shape; eps, x0, D, v or score)."""
    w = _check_w(w)
    raise NotImplementedError("EXERCISE guided: write this function (see its docstring)")


def classifier_free_guidance(model, w: float, null_label: int):
    """Wrap a class-conditional ``model(x, t, class_labels=c)`` into the guided model with the
    same signature, for any sampler.  One call on the doubled batch [x; x] with labels
    [c; null] gives both predictions (one network evaluation per step, twice the batch)."""
    w = _check_w(w)

    def guided_model(x, t, class_labels=None):
        if class_labels is None:
            raise ValueError("classifier-free guidance needs class_labels (B,) for the conditional prediction")
        xp = namespace(x)
        B = x.shape[0]
        raise NotImplementedError("EXERCISE classifier_free_guidance: write this function (see its docstring)")

    return guided_model
