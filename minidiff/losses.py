"""Training losses.  The noise and timesteps are passed in, so a loss is a pure function."""
from __future__ import annotations

from . import _checks
from .backend import namespace
from .diffusion import TARGETS, q_sample, target_of


def ddpm_loss(model, x0, t, noise, alpha_bar, target: str = "eps", **model_kwargs):
    """DDPM Algorithm 1, line 5 (L_simple): mean || target - model(x_t, t) ||^2 with
    x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps.

    ``target`` picks what the network predicts: 'eps' (DDPM), 'x0', 'score' or 'v'.
    x0, noise: (B, ...); t: (B,) integers in [0, T).  Returns a scalar.
    """
    _checks.choice("target", target, TARGETS)
    model = _checks.checked("model", model)  # its output: x_t's shape, finite
    xp = namespace(x0, noise)
    # BEGIN SOLUTION
    # hint: x_t = q_sample(x0, t, alpha_bar, noise); compare model(x_t, t) with target_of(target,
    # hint: x0, noise, t, alpha_bar) by a mean squared error
    x_t = q_sample(x0, t, alpha_bar, noise)
    prediction = model(x_t, t, **model_kwargs)
    _checks.same_shape("model output", prediction, "x0", x0)
    return xp.mean(xp.square(prediction - target_of(target, x0, noise, t, alpha_bar)))
    # END SOLUTION

