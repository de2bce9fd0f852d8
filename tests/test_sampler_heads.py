"""One head for every sampler family: (model, x, schedule, ..., randn_like, callback, progress,
**model_kwargs).  Each sampler passes the model keyword arguments to every model call, calls
the callback once per step, and runs the same with a progress bar."""
import numpy as np
import pytest

from minidiff import consistency as cm
from minidiff import edm, samplers, schedules, sde
from minidiff.backend import generator

T = 20
BETAS = schedules.linear_betas(T, 1e-3, 0.2)
ALPHA_BAR = schedules.alpha_bars(BETAS)
VP = sde.VPSDE()


def _recording(kind):
    """A model of the given form (eps, denoiser, score or consistency function) that records the
    keyword arguments of each call and checks the conditioning travels with the batch."""
    calls = []

    def model(x, t, tag=None):
        calls.append(tag)
        assert tag is not None and tag.shape == (x.shape[0],)
        if kind == "denoiser":
            return x / (1 + np.asarray(t)[:, None] ** 2)
        if kind == "consistency":
            return 0.5 * x
        if kind == "score":       # the score of N(0, I)
            return -x
        return 0.1 * x

    return model, calls


def _samplers():
    """name -> (model kind, call(model, x, randn_like, callback, progress, **kw), steps)."""
    sig = edm.karras_sigmas(4)
    tau = samplers.ddim_timesteps(T, 5, "trailing")
    return {
        "ddpm": ("eps", lambda m, x, r, cb, p, **kw: samplers.ddpm_sample(m, x, BETAS, r, callback=cb, progress=p, **kw), T),
        "ddim": ("eps", lambda m, x, r, cb, p, **kw: samplers.ddim_sample(m, x, ALPHA_BAR, tau, 1.0, r, callback=cb,
                                                                           progress=p, **kw), 5),
        "euler": ("denoiser", lambda m, x, r, cb, p, **kw: samplers.euler_sample(m, x, sig, r, callback=cb, progress=p,
                                                                                  **kw), 4),
        "heun": ("denoiser", lambda m, x, r, cb, p, **kw: samplers.heun_sample(m, x, sig, r, callback=cb, progress=p,
                                                                                **kw), 4),
        "stochastic": ("denoiser", lambda m, x, r, cb, p, **kw: samplers.stochastic_sample(
            m, x, sig, r, S_churn=1.0, callback=cb, progress=p, **kw), 4),
        "pc": ("score", lambda m, x, r, cb, p, **kw: sde.pc_sample(m, x, VP, 50, r, callback=cb, progress=p, **kw), 50),
        "ode": ("score", lambda m, x, r, cb, p, **kw: sde.ode_sample(m, x, VP, 4, "rk4", randn_like=r, callback=cb,
                                                                      progress=p, **kw), 4),
        "consistency": ("consistency", lambda m, x, r, cb, p, **kw: cm.consistency_sample(
            m, x, [1.0, 0.1], r, callback=cb, progress=p, **kw), 3),
    }


@pytest.mark.parametrize("name", list(_samplers()))
@pytest.mark.parametrize("progress", [False, True])
def test_every_sampler_passes_model_kwargs_calls_back_and_shows_progress(name, progress):
    kind, run, steps = _samplers()[name]
    model, calls = _recording(kind)
    x = generator(0).randn((6, 2))
    tag = np.arange(6)
    seen = []
    out = run(model, x, generator(1).randn_like, seen.append, progress, tag=tag)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    assert len(calls) >= steps and all(c is tag for c in calls)
    assert len(seen) == steps and all("x" in info and "i" in info for info in seen)
    # the bar changes nothing
    model2, _ = _recording(kind)
    again = run(model2, x, generator(1).randn_like, None, not progress, tag=tag)
    np.testing.assert_array_equal(again, out)


def test_rk45_passes_model_kwargs_and_calls_back_per_evaluation():
    model, calls = _recording("score")
    x = generator(0).randn((6, 2))
    seen = []
    out, nfe = sde.ode_sample_rk45(model, x, VP, callback=seen.append, progress=True, tag=np.arange(6))
    assert out.shape == x.shape and len(calls) == nfe == len(seen) and seen[0]["t"] == 1.0


def test_the_sde_samplers_refuse_the_old_argument_order():
    x = np.zeros((3, 2))
    for fn, extra in ((sde.pc_sample, (5, np.zeros_like)), (sde.ode_sample, (5,)), (sde.ode_sample_rk45, ())):
        with pytest.raises(TypeError, match=r"takes \(score_model, x_T, sde"):
            fn(VP, lambda y, t: -y, x, *extra)
