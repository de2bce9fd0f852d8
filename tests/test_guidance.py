"""Classifier-free guidance: bad input, the exact mixture's class-conditional score, and guidance
through the image trainer, sampler and CLI (the lesson-08 checks test the algorithm itself)."""
import numpy as np
import pytest

from minidiff.backend import namespace
from minidiff.data.toy2d import GaussianMixture, eight_gaussians_mixture
from minidiff.guidance import classifier_free_guidance, drop_labels, guided

GMM = eight_gaussians_mixture()


@pytest.mark.parametrize("w, error", [(float("inf"), ValueError), (float("nan"), ValueError), (None, TypeError),
                                      ("2", TypeError), (True, TypeError)])
def test_guidance_strength_must_be_a_finite_number(w, error):
    with pytest.raises(error, match="w \\(the guidance strength\\) must be a finite number"):
        guided(np.zeros(2), np.zeros(2), w)
    with pytest.raises(error, match="w \\(the guidance strength\\)"):
        classifier_free_guidance(lambda x, t, class_labels=None: x, w, 8)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_p_uncond_must_lie_in_0_1(p):
    with pytest.raises(ValueError, match="p_uncond must lie in \\[0, 1\\)"):
        drop_labels(np.arange(4), p, 8, np.random.default_rng(0))


def test_guided_model_needs_class_labels():
    model = classifier_free_guidance(lambda x, t, class_labels=None: x, 1.0, 8)
    with pytest.raises(ValueError, match="needs class_labels"):
        model(np.zeros((2, 2)), np.ones(2))


def test_class_score_of_a_component_is_that_gaussians_score_and_the_null_class_the_mixture():
    rng = np.random.default_rng(0)
    x, sigma = rng.standard_normal((8, 2)), 0.5
    c = np.arange(8)
    var = GMM.vars[c] + sigma ** 2
    np.testing.assert_allclose(GMM.score(x, 1.0, sigma, c), -(x - GMM.means[c]) / var, rtol=1e-12)
    np.testing.assert_allclose(GMM.score(x, 1.0, sigma, np.full(8, 8)), GMM.score(x, 1.0, sigma), rtol=1e-12)
    post = GMM.class_posterior(x, 1.0, sigma)
    assert post.shape == (8, 8)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)
    # the mixture's score is the posterior-weighted mean of the class scores
    each = np.stack([GMM.score(x, 1.0, sigma, np.full(8, k)) for k in range(8)], axis=1)   # (B, K, d)
    np.testing.assert_allclose(np.sum(post[:, :, None] * each, axis=1), GMM.score(x, 1.0, sigma), rtol=1e-10)


@pytest.mark.parametrize("labels", [np.array([0, 9]), np.array([0.0, 1.0]), np.array([0, 1, 2]), np.array([-1, 0])])
def test_class_labels_of_the_mixture_are_checked(labels):
    with pytest.raises(ValueError, match="class_labels must be 2 integers in \\[0, 8\\]"):
        GMM.score(np.zeros((2, 2)), 1.0, 0.3, labels)


def test_class_score_on_torch_matches_numpy():
    torch = pytest.importorskip("torch")
    g = GaussianMixture([[0.0, 0.0], [2.0, 1.0]], [0.3, 0.5], weights=[0.3, 0.7])
    x, c = np.random.default_rng(1).standard_normal((5, 2)), np.array([0, 1, 2, 0, 1])
    a = g.denoise(x, 1.0, 0.7, c)
    b = g.denoise(torch.as_tensor(x), 1.0, 0.7, torch.as_tensor(c))
    np.testing.assert_allclose(b.numpy(), a, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# Any conditioning keyword: a text-like ``context`` (B, L, D) with a zero null embedding.

def _context_model(calls):
    """A model conditioned on context (B, L, D): x + the context's mean over L (and D = x's dim)."""
    def model(x, t, context=None, scale=None):
        xp = namespace(x)
        calls.append((tuple(x.shape), tuple(context.shape), scale))
        return x * xp.append_dims(t, x.ndim) + xp.mean(context, axis=1)
    return model


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_drop_labels_drops_a_context_array_to_the_null_embedding(backend):
    rng = np.random.default_rng(3)
    ctx = rng.standard_normal((200, 3, 2)) + 5.0
    null = np.zeros((3, 2))
    if backend == "torch":
        torch = pytest.importorskip("torch")
        ctx_in, null_in = torch.as_tensor(ctx), torch.as_tensor(null)
    else:
        ctx_in, null_in = ctx, null
    out = np.asarray(drop_labels(ctx_in, 0.3, null_in, np.random.default_rng(4)))
    dropped = np.random.default_rng(4).random(200) < 0.3          # the same uniforms, one per example
    assert 0 < dropped.sum() < 200
    np.testing.assert_array_equal(out[dropped], 0.0)
    np.testing.assert_array_equal(out[~dropped], ctx[~dropped])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_guidance_on_a_context_keyword_is_one_call_on_the_doubled_batch(backend):
    rng = np.random.default_rng(5)
    x, t, ctx = rng.standard_normal((4, 2)), np.full(4, 0.7), rng.standard_normal((4, 3, 2))
    null = np.zeros((3, 2))
    if backend == "torch":
        torch = pytest.importorskip("torch")
        x_in, t_in, ctx_in, null_in = (torch.as_tensor(a) for a in (x, t, ctx, null))
    else:
        x_in, t_in, ctx_in, null_in = x, t, ctx, null
    calls = []
    model = _context_model(calls)
    out = classifier_free_guidance(model, 1.5, key="context", null=null_in)(x_in, t_in, context=ctx_in, scale=2)
    assert calls == [((8, 2), (8, 3, 2), 2)]       # one call, doubled batch, other kwargs passed through
    cond = x * t[:, None] + ctx.mean(axis=1)
    uncond = x * t[:, None]                          # the zero embedding
    np.testing.assert_allclose(np.asarray(out), 2.5 * cond - 1.5 * uncond, atol=1e-12)
    with pytest.raises(ValueError, match="needs context"):
        classifier_free_guidance(model, 1.5, key="context", null=null_in)(x_in, t_in)


def test_guidance_needs_exactly_one_null():
    with pytest.raises(ValueError, match="exactly one of null or null_label"):
        classifier_free_guidance(lambda x, t, context=None: x, 1.0)
    with pytest.raises(ValueError, match="exactly one of null or null_label"):
        classifier_free_guidance(lambda x, t, context=None: x, 1.0, 8, null=8)


# ------------------------------------------------------------------------------------------------
# Images: the trainer's label dropout is drop_labels; sample_images and the CLI take the guidance.

@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    pytest.importorskip("sklearn")
    from minidiff.torch.train import ImageConfig, train_images

    out = tmp_path_factory.mktemp("cfg")
    cfg = ImageConfig.from_preset("tiny", dataset="digits", sample_every=0, steps=6, class_conditional=True)
    train_images(cfg, out, progress=False)
    return out


def test_guided_image_sampling_interpolates_between_the_conditional_and_unconditional_model(conditional_run):
    import torch

    from minidiff.torch.sampling import sample_images
    from minidiff.torch.train import model_from_checkpoint

    net, config = model_from_checkpoint(conditional_run)
    labels = [0, 1, 2, 3]
    kw = dict(steps=3, class_labels=labels)
    cond = sample_images(net, config, 4, **kw)
    uncond = sample_images(net, config, 4, steps=3, class_labels=[10] * 4)
    # The guided runs evaluate the float32 network on the doubled batch, whose convolutions may sum in
    # another order than on B: allow eps32 times the summed reduction lengths of the network's layers
    # for each of the 2 x 3 evaluations (Heun, 3 steps), relative to the samples' scale.
    fan_ins = sum(m.weight[0].numel() for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    tol = float(np.finfo(np.float32).eps) * fan_ins * 2 * 3
    atol = tol * float(cond.abs().max())
    g0, g1 = (sample_images(net, config, 4, guidance=w, **kw) for w in (0.0, -1.0))
    assert torch.equal(g0, cond)      # w = 0 is the conditional model: sampled on B, not on the doubled batch
    torch.testing.assert_close(g1, uncond, atol=atol, rtol=0)
    # and each is the right one of the two models, whatever the tolerance
    assert (g0 - cond).abs().max() < 0.5 * (g0 - uncond).abs().max()
    assert (g1 - uncond).abs().max() < 0.5 * (g1 - cond).abs().max()
    strong = sample_images(net, config, 4, guidance=3.0, **kw)
    assert strong.shape == (4, 1, 8, 8) and torch.isfinite(strong).all()
    assert (strong - cond).abs().max() > 1e-3


def test_guidance_needs_a_class_conditional_image_model(tmp_path):
    pytest.importorskip("torch")
    from minidiff.torch.sampling import sample_images
    from minidiff.torch.train import ImageConfig, model_from_checkpoint, train_images

    cfg = ImageConfig.from_preset("tiny", dataset="digits", sample_every=0, steps=1)
    net, config = model_from_checkpoint(train_images(cfg, tmp_path, progress=False)["checkpoint"])
    with pytest.raises(ValueError, match="guidance needs a conditional model"):
        sample_images(net, config, 2, steps=2, guidance=2.0)


def test_cli_samples_and_evaluates_with_guidance_and_one_class(conditional_run, tmp_path, capsys):
    from minidiff.cli import main

    png = tmp_path / "three.png"
    assert main(["sample", "--ckpt", str(conditional_run), "--n", "4", "--steps", "2", "--guidance", "2",
                 "--class", "3", "--out", str(png)]) == 0
    assert png.exists() and png.stat().st_size > 0
    assert main(["sample", "--ckpt", str(conditional_run), "--n", "4", "--steps", "2", "--class", "11"]) == 2
    assert "class_labels must be 4 integers in [0, 10]" in capsys.readouterr().err


def test_cli_refuses_guidance_for_a_2d_checkpoint(tmp_path, capsys):
    from minidiff.cli import main

    run = tmp_path / "toy"
    assert main(["train", "--dataset", "8gaussians", "--steps", "5", "--out", str(run)]) == 0
    assert main(["sample", "--ckpt", str(run), "--guidance", "1"]) == 2
    assert "conditional image models" in capsys.readouterr().err
