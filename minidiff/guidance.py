"""Classifier-free guidance (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance"; the
algorithm and equation numbers refer to that paper).

One network learns both p(x | c) and p(x): during training its label is replaced by a null
label with probability p_uncond (Algorithm 1, line 3).  At sampling time the two predictions are
extrapolated (eq. 6), eps~ = (1 + w) eps(x, c) - w eps(x).  For the score this reads
grad log p(x | c) + w grad log p(c | x) (Bayes' rule): the gradient of an implicit classifier.

``w`` is the paper's guidance strength: w = 0 is the plain conditional model, w = -1 the
unconditional one; diffusers' ``guidance_scale`` is 1 + w.  The combination has weights summing
to 1, so it applies unchanged to any prediction affine in the score at fixed (x, t): eps, x0,
the EDM denoiser D, v, or the score itself.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import namespace


def _check_w(w) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(w):
        raise ValueError(f"w (the guidance strength) must be a finite number (0: conditional, "
                         f"-1: unconditional), got {w!r}")
    return float(w)


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
    # BEGIN SOLUTION
    # hint: d = xp.int_array(rng.random(B) < p_uncond, like=labels) (1 where dropped), with
    # hint: labels.ndim - 1 trailing axes (xp.append_dims); return labels * (1 - d) + null_label * d
    d = xp.append_dims(xp.int_array(rng.random(labels.shape[0]) < p_uncond, like=labels), labels.ndim)  # 1: dropped
    return labels * (1 - d) + null_label * d
    # END SOLUTION


def guided(cond, uncond, w: float):
    """Eq. 6: (1 + w) cond - w uncond, for the conditional and unconditional predictions of
    one network (same shape; eps, x0, D, v or score)."""
    w = _check_w(w)
    # BEGIN SOLUTION
    # hint: eq. 6: (1 + w) * cond - w * uncond
    return (1 + w) * cond - w * uncond
    # END SOLUTION


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
        # BEGIN SOLUTION
        # hint: one model call on xp.concatenate([x, x]), the same for t, and the condition
        # hint: [c; null_c] under key; split the output at B and return guided(first half, second half, w)
        out = model(xp.concatenate([x, x], axis=0), xp.concatenate([t, t], axis=0),
                    **{key: xp.concatenate([c, null_c], axis=0)}, **rest)   # (2B, ...)
        return guided(out[:B], out[B:], w)
        # END SOLUTION

    return guided_model
