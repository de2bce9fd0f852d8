"""The autoencoder trainer's presets, VQ dead-code restarts, the SSIM term and the
reconstruction evaluation (minidiff.torch.train_autoencoder, minidiff.torch.autoencoder,
minidiff.torch.evaluate.evaluate_autoencoder)."""
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("sklearn")
pytest.importorskip("torchmetrics")

from minidiff.checkpoint import load_image_checkpoint  # noqa: E402
from minidiff.torch.autoencoder import (Autoencoder, AutoencoderConfig, largest_ssim_sigma,  # noqa: E402
                                        ssim_per_image, ssim_window)
from minidiff.torch.evaluate import evaluate_autoencoder  # noqa: E402
from minidiff.torch.loop import Dist  # noqa: E402
from minidiff.torch.train_autoencoder import (PRESETS, AutoencoderTask, AutoencoderTrainConfig,  # noqa: E402
                                              even_latent_padding, factor_mults, train_autoencoder)

TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), groups=4, latent_channels=2, codebook_size=16)


def tiny(reg="kl", **kw):
    a = {"reg": reg, **kw.pop("autoencoder", {})}
    return AutoencoderTrainConfig.from_preset("tiny", **{"dataset": "digits", "steps": 10, "ckpt_every": 3, **kw},
                                              autoencoder=a)


# ----------------------------------------------------------------------------------------------
# Presets.

def test_presets_give_a_4x8x8_latent_for_28x28_images_and_fit_other_datasets():
    for name in ("cpu", "gpu"):
        cfg = AutoencoderTrainConfig.from_preset(name).validate()
        a = cfg.autoencoder
        assert cfg.dataset == "fashion-mnist" and a.factor == 4 and a.padding == 2 and a.latent_shape == (4, 8, 8)
    vq = AutoencoderTrainConfig.from_preset("cpu", steps=7, autoencoder={"reg": "vq"}).validate()
    assert vq.autoencoder.reg == "vq" and vq.steps == 7 and vq.autoencoder.latent_shape == (4, 8, 8)
    f2 = AutoencoderTrainConfig.from_preset("cpu", autoencoder={"channel_mults": (1, 2)}).validate()
    assert f2.autoencoder.padding == 0 and f2.autoencoder.latent_shape == (4, 14, 14)
    digits = AutoencoderTrainConfig.from_preset("cpu", dataset="digits").validate()
    assert (digits.autoencoder.image_size, digits.autoencoder.padding) == (8, 0)
    given = AutoencoderTrainConfig.from_preset("cpu", autoencoder={"padding": 6}).validate()
    assert given.autoencoder.latent_shape == (4, 10, 10)
    f8 = AutoencoderTrainConfig.from_preset("cpu", autoencoder={"channel_mults": factor_mults("cpu", 8)}).validate()
    assert f8.autoencoder.factor == 8 and f8.autoencoder.padding == 2 and f8.autoencoder.latent_shape == (4, 4, 4)
    assert AutoencoderTrainConfig.from_dict(vq.to_dict()) == vq            # strict round trip


@pytest.mark.parametrize("size,f", [(28, 4), (28, 2), (28, 8), (8, 4), (28, 1), (30, 4), (7, 2)])
def test_even_latent_padding_is_the_least_padding_giving_an_even_latent_side(size, f):
    p = even_latent_padding(size, f)
    assert (size + 2 * p) % (2 * f) == 0 or size % 2            # an odd side cannot be padded to an even one
    assert all((size + 2 * q) % (2 * f) for q in range(p))


def test_factor_mults_give_one_level_per_halving_up_to_f_8():
    for f in (1, 2, 4, 8):
        mults = factor_mults("cpu", f)
        preset = PRESETS["cpu"]["autoencoder"]["channel_mults"]
        assert 2 ** (len(mults) - 1) == f and mults[:len(preset)] == preset[:len(mults)]   # the preset's, extended
    with pytest.raises(ValueError, match=r"factor must be one of \(1, 2, 4, 8\)"):
        factor_mults("cpu", 16)
    with pytest.raises(ValueError, match="channel_mults may hold at most 4 entries"):
        AutoencoderConfig(channel_mults=(1, 2, 2, 2, 2), image_size=32)


def test_bad_preset_name_is_named():
    with pytest.raises(ValueError, match=r"preset must be one of \('tiny', 'cpu', 'gpu'\)"):
        AutoencoderTrainConfig.from_preset("huge")
    with pytest.raises(TypeError, match="autoencoder overrides"):
        AutoencoderTrainConfig.from_preset("cpu", autoencoder="vq")
    assert set(PRESETS) == {"tiny", "cpu", "gpu"}


@pytest.mark.parametrize("field,value", [("restart_every", -1), ("restart_threshold", -1.0),
                                         ("ssim_weight", -0.5), ("ssim_sigma", 0.0), ("ssim_weight", float("nan"))])
def test_bad_new_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value}).validate()


# ----------------------------------------------------------------------------------------------
# VQ code usage and dead-code restarts.

def vq_net(K=16):
    net = Autoencoder(AutoencoderConfig(**{**TINY, "reg": "vq", "codebook_size": K}))
    with torch.no_grad():                   # one live code at the origin, every other one far away: dead
        net.codebook.fill_(1e3)
        net.codebook[0] = 0.0
        net.code_sums.copy_(net.codebook)
        net.code_counts.fill_(1.0)
    return net


def test_dead_codes_are_restarted_from_the_batch_and_usage_rises():
    K = 16
    net = vq_net(K).train()
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    for _ in range(2):
        net(x)
    before = net.code_statistics()
    assert before["usage"] == 1 / K and before["picks"] == 2 * 8 * 4 * 4
    z, live = net.last_z_e.clone(), net.codebook[0].clone()              # (N, c) of the last batch
    n = net.restart_dead_codes(1.0, np.random.default_rng(0))
    assert n == K - 1 and int(net.code_window.sum()) == 0                 # the window is cleared
    assert torch.equal(net.codebook[0], live)                             # a live code stays
    for i in range(1, K):                                                 # each dead code: a row of z
        assert (net.codebook[i] == z).all(1).any()
    assert torch.equal(net.code_counts[1:], torch.ones(K - 1))            # EMA state restarted as at init
    assert torch.equal(net.code_sums[1:], net.codebook[1:])
    net(x)
    assert net.code_statistics()["usage"] >= 4 / K


def test_restart_candidates_follow_the_generator():
    a, b = vq_net().train(), vq_net().train()
    x = torch.rand(8, 1, 8, 8) * 2 - 1
    b.load_state_dict(a.state_dict())
    a(x), b(x)
    a.restart_dead_codes(1.0, np.random.default_rng(1))
    b.restart_dead_codes(1.0, np.random.default_rng(1))
    assert torch.equal(a.codebook, b.codebook)
    with pytest.raises(RuntimeError, match="training forward"):
        vq_net().restart_dead_codes(1.0, np.random.default_rng(0))


def test_training_logs_usage_per_window_and_restarts(tmp_path):
    logs = []
    cfg = tiny("vq", steps=9, restart_every=3, batch_size=16)
    result = train_autoencoder(cfg, tmp_path, progress=False, log=logs.append)
    stats = result["code_stats"]
    assert [s["step"] for s in stats] == [3, 6, 9]
    assert all(s["picks"] == 3 * 16 * 4 * 4 and 0 < s["usage"] <= 1 and 1 <= s["perplexity"] <= 16 for s in stats)
    assert sum("codebook usage" in m for m in logs) == 3
    tensors, _ = load_image_checkpoint(tmp_path)
    assert int(tensors["model.code_window"].sum()) == 0                   # cleared at the last restart
    kl = train_autoencoder(tiny("kl", steps=3, restart_every=1), tmp_path / "kl", progress=False)
    assert kl["code_stats"] == []                                         # 'kl' has no codebook


def test_vq_resume_with_restarts_reproduces_the_uninterrupted_run(tmp_path):
    kw = dict(steps=10, ckpt_every=3, restart_every=3, restart_threshold=3.0)
    first = train_autoencoder(tiny("vq", **kw), tmp_path / "a", progress=False)
    assert any(s["restarted"] for s in first["code_stats"])               # restarts happen in this run
    train_autoencoder(tiny("vq", **kw, max_seconds=1e-9), tmp_path / "b", progress=False)
    assert load_image_checkpoint(tmp_path / "b")[1]["step"] == 1          # mid-window: the window is checkpointed
    train_autoencoder(tiny("vq", **kw), tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    a, _ = load_image_checkpoint(tmp_path / "a")
    b, state = load_image_checkpoint(tmp_path / "b")
    assert state["step"] == 10 and set(a) == set(b) and "model.code_window" in a
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


# ----------------------------------------------------------------------------------------------
# SSIM in the loss.

def built_task(cfg):
    task = AutoencoderTask(cfg)
    torch.manual_seed(cfg.seed)
    net = task.build(torch.device("cpu"), Dist())
    return task, net


def test_ssim_weight_zero_is_the_old_loss_and_the_term_adds_its_scaled_value():
    cfg = tiny("kl", autoencoder={"image_size": 8})
    task, net = built_task(cfg)
    k = 3
    old = task.loss(net, k)
    # the loss as it was before the SSIM term, from the same batch and noise
    from minidiff.backend import generator
    from minidiff.data.images import to_model_range
    from minidiff.torch.loop import batch_indices, step_seed
    x = to_model_range(task.data[torch.from_numpy(batch_indices(len(task.data), cfg.batch_size, cfg.seed, k))])
    noise = generator(step_seed(cfg.seed, k, 1), backend="torch").randn((cfg.batch_size, *cfg.autoencoder.latent_shape),
                                                                        dtype=torch.float32)
    out = net(x, noise)
    rec = (out["reconstruction"] - x).abs().flatten(1).sum(1)
    assert torch.equal(old, (rec + cfg.kl_weight * out["kl"]).mean() / 64.0)
    with_ssim = AutoencoderTrainConfig.from_dict({**cfg.to_dict(), "ssim_weight": 0.5, "ssim_sigma": 0.7})
    task2, net2 = built_task(with_ssim)
    s = ssim_per_image(out["reconstruction"], x, 0.7)
    extra = float((task2.loss(net2, k) - old).detach())
    expected = float(0.5 * (1 - s).mean().detach())
    # a float32 sum of B * P terms of size <= 2: rounding ~ eps * (B P) * 2 / P per pixel
    assert abs(extra - expected) <= 8 * np.finfo(np.float32).eps * cfg.batch_size * 2 + 1e-6


def test_ssim_gradient_reaches_the_encoder_at_28x28_with_the_default_window():
    assert ssim_window(1.5) == 11 and ssim_window(0.7) == 5
    net = Autoencoder(AutoencoderConfig(base_channels=8, groups=4, channel_mults=(1, 2, 2), padding=2))
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    s = ssim_per_image(net(x)["reconstruction"], x)                       # sigma 1.5: an 11x11 window
    assert s.shape == (3,) and torch.isfinite(s).all()
    (1 - s).sum().backward()
    g = net.enc_in.weight.grad
    assert g is not None and float(g.abs().max()) > 0
    assert torch.allclose(ssim_per_image(x, x), torch.ones(3), atol=1e-5)


def test_ssim_window_larger_than_8x8_digits_is_refused_with_the_sigma_that_fits(tmp_path):
    assert ssim_window(largest_ssim_sigma(8) - 1e-6) <= 8 < ssim_window(largest_ssim_sigma(8))
    with pytest.raises(ValueError, match="ssim_sigma=1.5 gives a 11-pixel"):
        tiny(ssim_weight=0.1).validate()
    with pytest.raises(ValueError, match="ssim_sigma"):
        ssim_per_image(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 1.5)
    result = train_autoencoder(tiny("vq", steps=2, ssim_weight=0.1, ssim_sigma=0.7), tmp_path, progress=False)
    assert np.all(np.isfinite(result["losses"]))


# ----------------------------------------------------------------------------------------------
# Reconstruction evaluation.

class Shifted(torch.nn.Module):
    """A 'kl' stand-in: the posterior mode is x itself and decode adds delta * pattern, so the
    reconstruction error is known exactly."""

    def __init__(self, delta, C=1, size=28):
        super().__init__()
        self.config = types.SimpleNamespace(reg="kl", in_channels=C, image_size=size)
        self.w = torch.nn.Parameter(torch.zeros(()))
        g = torch.Generator().manual_seed(0)
        self.register_buffer("pattern", torch.rand(1, C, size, size, generator=g) * 2 - 1)
        self.delta = delta

    def encode(self, x):
        return torch.cat([x, torch.zeros_like(x)], 1)                    # mean x, log-variance 0

    def decode(self, z):
        return z + self.delta * self.pattern


def some_images(n=200, size=28):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, size, size, generator=g) - 0.5               # in [-0.5, 0.5]: no clipping below


def test_psnr_follows_the_mse_and_a_perfect_reconstruction_has_mse_0_and_fd_0():
    x = some_images()
    reports = [evaluate_autoencoder(Shifted(d), x, batch_size=64) for d in (0.4, 0.1, 0.01)]
    for d, r in zip((0.4, 0.1, 0.01), reports):
        expected = d ** 2 * float((Shifted(d).pattern.double() ** 2).mean())
        assert r["mse"] == pytest.approx(expected, rel=1e-5)             # float32 decode: rounding ~ 1e-7 relative
        assert r["psnr"] == pytest.approx(10 * np.log10(4 / r["mse"]), rel=1e-12)
    assert reports[0]["psnr"] < reports[1]["psnr"] < reports[2]["psnr"]
    assert reports[0]["ssim"] < reports[1]["ssim"] < reports[2]["ssim"] <= 1
    perfect = evaluate_autoencoder(Shifted(0.0), x, batch_size=64)
    assert perfect["mse"] == 0 and perfect["psnr"] == float("inf") and perfect["ssim"] == pytest.approx(1, abs=1e-5)
    # identical inputs give identical features, so mu1 - mu2 = 0 exactly and FD = 2 tr(S) - 2 sum sqrt(eig(S^2)).
    # The eigenvalues of S^(1/2) S S^(1/2) carry an absolute error ~ D eps lam_max^2, whose square root
    # is up to sqrt(D eps) lam_max per eigenvalue (worst at the zero ones): |FD| <= 2 D sqrt(D eps) tr(S).
    from minidiff.metrics import feature_statistics
    from minidiff.torch.evaluate import image_features
    _, S = feature_statistics(image_features(x))
    D = S.shape[0]
    assert abs(perfect["fd"]) <= 2 * D * np.sqrt(D * np.finfo(np.float64).eps) * np.trace(S)
    assert reports[0]["fd"] > 2 * D * np.sqrt(D * np.finfo(np.float64).eps) * np.trace(S)
    assert "reconstructions against their originals" in perfect["fd_label"]


def test_fd_is_skipped_for_images_the_classifier_does_not_take():
    r = evaluate_autoencoder(Shifted(0.1, size=8), some_images(20, 8))
    assert r["fd"] is None and "pass network=" in r["fd_skipped"]
    assert r["ssim"] is None and "ssim_sigma" in r["ssim_skipped"]       # 11x11 window on 8x8
    assert evaluate_autoencoder(Shifted(0.1, size=8), some_images(20, 8), ssim_sigma=0.7)["ssim"] < 1


def test_vq_usage_over_the_set_and_a_low_usage_warning():
    net = vq_net(16)
    x = some_images(40, 8)
    with pytest.warns(UserWarning, match=r"uses 0\.06\d of its 16 codes"):
        r = evaluate_autoencoder(net, x, batch_size=7, ssim_sigma=0.7)
    assert r["codebook_usage"] == 1 / 16 and r["perplexity"] == pytest.approx(1.0)
    assert net.training                                                  # the mode is restored
    assert int(net.code_window.sum()) == 0                               # evaluation does not train the codebook
    trained = Autoencoder(AutoencoderConfig(**{**TINY, "reg": "vq"}))
    full = evaluate_autoencoder(trained, x, ssim_sigma=0.7, min_usage=0.0)
    with torch.no_grad():
        hist = np.bincount(trained.eval().quantize(trained.encode(x))[1].flatten().numpy(), minlength=16)
    assert full["codebook_usage"] == float(np.mean(hist > 0))


@pytest.mark.parametrize("images,match", [(torch.zeros(2, 1, 8, 8), "shape"), (torch.zeros(0, 1, 28, 28), "shape"),
                                          (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "dtype"),
                                          (torch.full((2, 1, 28, 28), 2.0), r"\[-1, 1\]"),
                                          (torch.full((2, 1, 28, 28), float("nan")), "finite")])
def test_bad_images_are_named(images, match):
    with pytest.raises(ValueError, match=match):
        evaluate_autoencoder(Shifted(0.1), images)


def test_bad_net_and_arguments_are_named():
    with pytest.raises(TypeError, match="net must be a minidiff Autoencoder"):
        evaluate_autoencoder(torch.nn.Linear(2, 2), some_images(2))
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_autoencoder(Shifted(0.1), some_images(2), batch_size=0)
    with pytest.raises(ValueError, match="min_usage"):
        evaluate_autoencoder(Shifted(0.1), some_images(2), min_usage=2)


# ----------------------------------------------------------------------------------------------
# The optional PatchGAN discriminator.

def test_discriminator_trains_from_disc_start_and_its_optimiser_is_checkpointed(tmp_path):
    result = train_autoencoder(tiny("kl", steps=4, disc_weight=0.5, disc_start=2, disc_layers=1, disc_channels=8),
                               tmp_path / "gan", progress=False)
    assert np.all(np.isfinite(result["losses"]))
    tensors, state = load_image_checkpoint(tmp_path / "gan")
    assert any(k.startswith("disc.") for k in tensors) and any(k.startswith("optim_disc.") for k in tensors)
    assert int(tensors["optim_disc.0.step"]) == 2                        # D stepped at steps 2 and 3 only
    assert state["extra_optimizers"]["disc"][0]["betas"] == [0.5, 0.9]
    plain, _ = load_image_checkpoint(train_autoencoder(tiny("kl", steps=4), tmp_path / "plain",
                                                       progress=False)["checkpoint"])
    late, _ = load_image_checkpoint(train_autoencoder(tiny("kl", steps=4, disc_weight=0.5, disc_start=10,
                                                           disc_layers=1, disc_channels=8), tmp_path / "late",
                                                      progress=False)["checkpoint"])
    for k in plain:                                                      # before disc_start: no GAN at all
        assert torch.equal(plain[k], late[k]), k


def test_gan_resume_reproduces_the_uninterrupted_run(tmp_path):
    kw = dict(steps=6, ckpt_every=3, disc_weight=0.5, disc_start=0, disc_layers=1, disc_channels=8)
    train_autoencoder(tiny("vq", **kw), tmp_path / "a", progress=False)
    train_autoencoder(tiny("vq", **kw, max_seconds=1e-9), tmp_path / "b", progress=False)
    train_autoencoder(tiny("vq", **kw), tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    a, _ = load_image_checkpoint(tmp_path / "a")
    b, state = load_image_checkpoint(tmp_path / "b")
    assert state["step"] == 6 and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_adaptive_weight_matches_the_gradient_norms_at_the_last_layer():
    from minidiff.torch.autoencoder import PatchDiscriminator, adaptive_gan_weight
    net = Autoencoder(AutoencoderConfig(**TINY)).double()
    D = PatchDiscriminator(1, 8, 1).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2 - 1
    x_hat = net(x)["reconstruction"]
    rec, g = (x_hat - x).abs().mean(), -D(x_hat).mean()
    W = net.dec_out[-1].weight
    lam = adaptive_gan_weight(rec, g, W, eps=0.0)
    g_rec, = torch.autograd.grad(rec, W, retain_graph=True)
    g_gan, = torch.autograd.grad(lam * g, W, retain_graph=True)
    assert not lam.requires_grad
    assert float(g_gan.norm()) == pytest.approx(float(g_rec.norm()), rel=1e-12)


@pytest.mark.parametrize("field,value,match", [("disc_layers", 2, "disc_layers=2 leaves no patch"),
                                               ("disc_channels", 6, "disc_channels"), ("disc_weight", -1.0,
                                                                                       "disc_weight"),
                                               ("disc_start", -1, "disc_start")])
def test_bad_discriminator_fields_are_named(field, value, match):
    with pytest.raises(ValueError, match=match):
        tiny(**{"disc_weight": 0.1, field: value}).validate()


def test_no_autoencoder_loss_uses_the_evaluation_classifier(tmp_path):
    """A metric must not be trained against: a first stage trained with every loss term (l1,
    SSIM, KL or VQ, the PatchGAN) never loads the shipped classifier whose features FD uses."""
    import subprocess
    import sys
    code = f"""
import sys
from minidiff.torch.train_autoencoder import AutoencoderTrainConfig, train_autoencoder
for reg in ("kl", "vq"):
    cfg = AutoencoderTrainConfig.from_preset("tiny", dataset="digits", steps=3, ckpt_every=0, ssim_weight=0.1,
                                             ssim_sigma=0.7, disc_weight=0.5, disc_start=1, disc_layers=1,
                                             disc_channels=8, autoencoder={{"reg": reg}})
    train_autoencoder(cfg, {str(tmp_path)!r} + "/" + reg, progress=False)
loaded = [m for m in sys.modules if m.startswith("minidiff") and "classifier" in m]
assert not loaded, loaded
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "kl").is_dir() and (tmp_path / "vq").is_dir()
