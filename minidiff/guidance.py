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

from . import _checks
from .backend import namespace


def _check_w(w) -> float:
    message = f"w (the guidance strength) must be a finite number (0: conditional, -1: unconditional), got {w!r}"
    if isinstance(w, (bool, np.bool_)) or not isinstance(w, (int, float, np.integer, np.floating)):
        raise TypeError(message)
    if not math.isfinite(w):
        raise ValueError(message)
    return float(w)


def _check_null(null, labels, num_classes=None):
    """The null condition: an int label outside the real classes (>= num_classes when given, and
    above every integer label in the batch), or an array of one example's shape on labels' backend."""
    if isinstance(null, (bool, np.bool_)) or null is None:
        raise TypeError(f"null_label must be an int label or an array of one example's shape, got {null!r}")
    if isinstance(null, (int, np.integer)):
        if null < 0:
            raise ValueError(f"null_label must be >= 0 (a label outside the real classes), got {null}")
        if num_classes is not None and null < num_classes:
            raise ValueError(f"null_label must lie outside the real classes [0, num_classes) = [0, {num_classes}), "
                             f"got {null}")
        xp = namespace(labels)
        if xp.dtype_of(labels) is not None and labels.ndim == 1 and _is_integer(labels):
            c = np.asarray(xp.to_numpy(labels))
            top = num_classes if num_classes is not None else null
            if c.size and (c.min() < 0 or c.max() >= top):
                raise ValueError(f"labels must lie in [0, {top}) (the real classes, below null_label={null}"
                                 f"{'' if num_classes is None else f' and num_classes={num_classes}'}), "
                                 f"got values in [{c.min()}, {c.max()}]: null_label would take a real class as null")
        return null
    _checks.array("null_label", null)
    _checks.same_backend(labels=labels, null_label=null)
    if tuple(null.shape) not in ((), tuple(labels.shape[1:])):
        raise ValueError(f"null_label must be an int or have one example's shape {tuple(labels.shape[1:])}, "
                         f"got shape {tuple(null.shape)}")
    return null


def _check_rng(rng):
    if not callable(getattr(rng, "random", None)):
        raise TypeError(f"rng must be a numpy Generator (np.random.default_rng), got {type(rng).__name__}")
    return rng


def _is_integer(a) -> bool:
    dt = getattr(a, "dtype", None)
    if hasattr(dt, "is_floating_point"):           # a torch dtype
        return not dt.is_floating_point and not dt.is_complex and dt != getattr(dt, "bool", None)
    return np.issubdtype(np.dtype(dt), np.integer)


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
    _checks.array("cond", cond)
    _checks.array("uncond", uncond)
    _checks.same_backend(cond=cond, uncond=uncond)
    _checks.shapes_equal(cond=cond, uncond=uncond)
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
        # BEGIN SOLUTION
        # hint: one model call on xp.concatenate([x, x]), the same for t, and the condition
        # hint: [c; null_c] under key; split the output at B and return guided(first half, second half, w)
        out = model(xp.concatenate([x, x], axis=0), xp.concatenate([t, t], axis=0),
                    **{key: xp.concatenate([c, null_c], axis=0)}, **rest)   # (2B, ...)
        return guided(out[:B], out[B:], w)
        # END SOLUTION

    return guided_model


def _doubled_batch_model(model):
    """``model`` with its output's shape checked against its input's, the doubled batch (2B, ...)
    (shape only: the sampler checks the guided values once per step)."""
    def checked(x2, t2, **kwargs):
        out = model(x2, t2, **kwargs)
        if not _checks.is_array(out) or tuple(out.shape) != tuple(x2.shape):
            raise ValueError(f"model returned {_shape(out)} for the doubled batch of shape {tuple(x2.shape)}; "
                             f"it must return one prediction per input, of the input's shape")
        return out
    return checked


def _shape(a):
    return f"shape {tuple(a.shape)}" if _checks.is_array(a) else f"a {type(a).__name__}"
