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


def drop_labels(labels, p_uncond: float, null_label: int, rng):
    """Algorithm 1, line 3: c <- null with probability p_uncond, independently per example.
    labels: (B,) integers of either backend; rng: a numpy Generator (one uniform per example).
    -> (B,) labels, the dropped ones set to ``null_label``."""
    if not 0 <= p_uncond < 1:
        raise ValueError(f"p_uncond must lie in [0, 1), got {p_uncond!r}")
    xp = namespace(labels)
    # BEGIN SOLUTION
    # hint: d = xp.int_array(rng.random(B) < p_uncond, like=labels) (1 where dropped); return labels
    # hint: * (1 - d) + null_label * d
    d = xp.int_array(rng.random(labels.shape[0]) < p_uncond, like=labels)   # (B,) 1 where dropped
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
        # BEGIN SOLUTION
        # hint: inside guided_model: one model call on xp.concatenate([x, x]), the same for t, and
        # hint: labels [class_labels; null_label repeated B times]; split the output at B and return
        # hint: guided(first half, second half, w)
        null = xp.int_array(np.full(B, null_label), like=class_labels)    # (B,)
        out = model(xp.concatenate([x, x], axis=0), xp.concatenate([t, t], axis=0),
                    class_labels=xp.concatenate([class_labels, null], axis=0))   # (2B, ...)
        return guided(out[:B], out[B:], w)
        # END SOLUTION

    return guided_model
