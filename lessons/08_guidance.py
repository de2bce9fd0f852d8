"""Lesson 08: Conditioning and classifier-free guidance.

Write the functions below; the notebook notebooks/08_guidance.ipynb explains the maths.
Check your work with:   minidiff check 08
(or: python -m pytest tests/lessons/test_08_guidance.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import numpy as np

from minidiff import _checks
from minidiff.backend import namespace, to_numpy
from minidiff.data.toy2d import _mixture_parameters, _mixture_terms, _noise_parameters, _points
from minidiff.guidance import _check_null, _check_rng, _check_w, _doubled_batch_model


def mixture_class_posterior(x, means, variances, weights, alpha=1.0, sigma=0.0):
    """Bayes' rule with the components as classes: p(c = k | x) = pi_k N(x; alpha mu_k, C_k) / p(x),
    C_k = alpha^2 v_k + sigma^2, computed in log space (softmax over k).
    x: (B, d); means, variances: (K, d); weights: (K,); alpha, sigma: scalars or (B,).  -> (B, K)."""
    _mixture_parameters(means, variances, weights)
    _points("x", x, np.shape(to_numpy(means))[1])
    _noise_parameters(x, alpha, sigma)
    xp = namespace(x)
    raise NotImplementedError("EXERCISE mixture_class_posterior: write this function (see its docstring)")


def drop_labels(labels, p_uncond: float, null_label, rng, num_classes=None):
    """Algorithm 1, line 3: c <- null with probability p_uncond, independently per example.
    labels: (B, ...) of either backend, the conditioning of one keyword: integer class labels
    (B,), or e.g. a text embedding (B, L, D); null_label: an int label, or an array of one
    example's shape (e.g. a zero embedding), broadcast over the batch.  rng: a numpy Generator
    (one uniform per example); num_classes (optional): the number of real classes, which an int
    null_label must not be below.  An int null_label must exceed every integer label given.
    -> labels with the dropped examples set to the null."""
    p_uncond = _checks.real("p_uncond", p_uncond)
    if not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}")
    _checks.array("labels", labels, min_ndim=1)
    if num_classes is not None:
        num_classes = _checks.integer("num_classes", num_classes)
    null_label = _check_null(null_label, labels, num_classes)
    _check_rng(rng)
    xp = namespace(labels)
    if not isinstance(null_label, (int, np.integer)):
        null_label = xp.asarray(null_label, like=labels, dtype=labels.dtype)   # labels' backend, device, dtype
    raise NotImplementedError("EXERCISE drop_labels: write this function (see its docstring)")


def guided(cond, uncond, w: float):
    """Eq. 6: (1 + w) cond - w uncond, for the conditional and unconditional predictions of
    one network (same shape; eps, x0, D, v or score)."""
    w = _check_w(w)
    _checks.array("cond", cond)
    _checks.array("uncond", uncond)
    _checks.same_backend(cond=cond, uncond=uncond)
    _checks.shapes_equal(cond=cond, uncond=uncond)
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
    model = _doubled_batch_model(_checks.callable_arg("model", model))
    if not isinstance(key, str) or not key.isidentifier():
        raise TypeError(f"key must be the name of the conditioning keyword (a str), got {key!r}")
    if (null is None) == (null_label is None):
        raise ValueError("classifier_free_guidance needs the null condition: pass exactly one of null or null_label")
    null = null_label if null is None else null
    if isinstance(null, (bool, np.bool_)) or not (isinstance(null, (int, np.integer)) or _checks.is_array(null)):
        raise TypeError(f"null (null_label) must be an int label or an array of one example's shape, got {null!r}")

    def guided_model(x, t, **model_kwargs):
        c = model_kwargs.pop(key, None)
        if c is None:
            raise ValueError(f"classifier-free guidance needs {key} (B, ...) for the conditional prediction")
        _checks.array("x", x, min_ndim=1)
        _checks.array(key, c, min_ndim=1)
        xp = _checks.same_backend(x=x, t=t, **{key: c})
        _checks.per_example("t", t, x)
        B = x.shape[0]
        if c.shape[0] != B:
            raise ValueError(f"{key} must hold one condition per example of x {tuple(x.shape)}, got shape {tuple(c.shape)}")
        t = t if _checks.is_array(t) else xp.asarray(np.full(B, t), like=x)
        rest = {k: xp.concatenate([v, v], axis=0) if xp.is_array(v) else v for k, v in model_kwargs.items()}
        null_c = xp.zeros_like(c) + (null if isinstance(null, (int, np.integer))
                                     else xp.asarray(null, like=c, dtype=c.dtype))   # e.g. the empty caption's ids
        raise NotImplementedError("EXERCISE classifier_free_guidance: write this function (see its docstring)")

    return guided_model
