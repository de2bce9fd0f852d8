"""Masked diffusion on torch (minidiff.torch.masked_diffusion): the core's formulas on torch
tensors equal their NumPy path, the forward process masks at rate t, both models (the U-Net on
binarised Fashion-MNIST, the transformer on captions) train through the one loop and resume
bit-identically, sampling unmasks everything and is seeded, bad input is named."""
import numpy as np
import pytest
import torch

from minidiff import discrete as d
from minidiff.backend import generator
from minidiff.checkpoint import load_image_checkpoint
from minidiff.torch import masked_diffusion as md


@pytest.fixture(scope="module")
def tokens():
    """64 training examples of each corpus as tokens."""
    from minidiff.data.captions import caption_dataset

    images, _, captions = caption_dataset("train", limit=64)
    return {"fashion-mnist": md.binarise(images), "captions": md.caption_tokens(captions)}


def test_the_torch_bound_is_the_numpy_bound():
    r = np.random.default_rng(0)
    B, L, V = 5, 7, 4
    logits = r.normal(size=(B, L, V)) * 3
    x0 = r.integers(0, V, (B, L))
    zt = np.where(r.random((B, L)) < 0.6, V, x0)
    t = r.uniform(0.05, 1.0, B)
    alpha, dalpha = d.linear_schedule(t)
    want = d.masked_diffusion_loss(logits, x0, zt, alpha, dalpha)                 # NumPy, float64
    got = md.masked_bound(lambda z, s: torch.from_numpy(logits), torch.from_numpy(x0), torch.from_numpy(zt),
                          torch.from_numpy(t))
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-13, atol=0)
    assert np.all(want > 0)


def test_mask_tokens_masks_each_token_with_probability_t():
    B, n, V = 4, 20000, 3
    x0 = torch.from_numpy(np.random.default_rng(1).integers(0, V, (B, n)))
    t = torch.tensor([0.0, 0.3, 0.7, 1.0])
    zt = md.mask_tokens(x0, t, generator(0, backend="torch"), V)
    masked = (zt == V).double().mean(1).numpy()
    sd = np.sqrt(t.numpy() * (1 - t.numpy()) / n)
    assert np.all(np.abs(masked - t.numpy()) <= 5 * sd + 1e-12)
    assert torch.equal(zt[zt != V], x0[zt != V])                                  # kept tokens are x0's
    assert torch.equal(zt, md.mask_tokens(x0, t, generator(0, backend="torch"), V))


def test_low_discrepancy_times_cover_the_interval():
    t = md.draw_times(8, generator(3, backend="torch"), 0.01).double()
    u = (t - 0.01) / 0.99
    assert torch.all((u >= torch.arange(8) / 8 - 1e-6) & (u < (torch.arange(8) + 1) / 8 + 1e-6))


@pytest.mark.parametrize("data", md.DATA)
def test_tiny_run_lowers_the_loss_and_resumes_exactly(data, tokens, tmp_path):
    cfg = md.MaskedDiffusionConfig.from_preset("tiny", data=data, steps=12, ckpt_every=6, warmup=2)
    quiet = dict(progress=False, log=lambda *a: None, tokens=tokens[data])
    whole = md.train_masked(cfg, tmp_path / "whole", **quiet)
    assert np.mean(whole["losses"][-3:]) < 0.9 * np.mean(whole["losses"][:3])
    md.train_masked(md.MaskedDiffusionConfig.from_preset("tiny", data=data, steps=6, ckpt_every=6, warmup=2),
                    tmp_path / "split", **quiet)
    resumed = md.train_masked(cfg, tmp_path / "split", resume=True, **quiet)
    assert resumed["losses"] == whole["losses"][6:]
    a, b = load_image_checkpoint(tmp_path / "whole")[0], load_image_checkpoint(tmp_path / "split")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    net, loaded = md.model_from_checkpoint(tmp_path / "whole")
    assert loaded.data == data and loaded.tokenizer_sha256 == ("" if data == "fashion-mnist" else cfg_sha())
    x = md.sample_tokens(net, loaded, 3, seed=5, steps=4)
    assert x.shape == (3,) + loaded.token_shape and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < loaded.states                     # no [MASK] left
    assert torch.equal(x, md.sample_tokens(net, loaded, 3, seed=5, steps=4))
    assert not torch.equal(x, md.sample_tokens(net, loaded, 3, seed=6, steps=4))


def cfg_sha():
    from minidiff.data.tokenizer import caption_tokenizer, tokenizer_sha256

    return tokenizer_sha256(caption_tokenizer())


def test_the_reports_on_the_data_itself(tokens):
    c = tokens["captions"]
    r = md.caption_report(c[:32], c, c[32:])
    assert r["parsed_fraction"] == 1.0 and r["well_formed_fraction"] == 1.0 and r["copy_fraction"] == 1.0
    assert r["class_tv_to_corpus"] < 0.5
    garbled = c[:8].copy()
    garbled[:, 0] = garbled[:, 1]                                                 # no [BOS]
    assert md.caption_report(garbled, c, c)["well_formed_fraction"] == 0.0


def test_bad_input_is_named():
    cfg = md.MaskedDiffusionConfig.from_preset("tiny")
    net = md.build_denoiser(cfg)
    with pytest.raises(ValueError, match="zt must hold states in \\[0, 2\\]"):
        net(torch.full((2, 28, 28), 3), torch.ones(2))
    with pytest.raises(ValueError, match="zt must be integer tokens of shape \\(B, 28, 28\\)"):
        net(torch.zeros(2, 1, 28, 28, dtype=torch.int64), torch.ones(2))
    with pytest.raises(ValueError, match="zt must be integer tokens"):
        net(torch.zeros(2, 28, 28), torch.ones(2))
    with pytest.raises(ValueError, match="t must be float times of shape \\(B,\\)"):
        net(torch.zeros(2, 28, 28, dtype=torch.int64), torch.ones(3))
    text = md.build_denoiser(md.MaskedDiffusionConfig.from_preset("tiny", data="captions"))
    with pytest.raises(ValueError, match="zt must be integer tokens of shape \\(B, 24\\)"):
        text(torch.zeros(2, 23, dtype=torch.int64), torch.ones(2))
    with pytest.raises(ValueError, match="x0 must hold states"):
        md.masked_bound(lambda z, s: torch.zeros(1, 4, 2), torch.tensor([[0, 1, 2, 0]]), torch.tensor([[2, 2, 2, 2]]),
                        torch.ones(1))
    with pytest.raises(ValueError, match="tokens must hold states in \\[0, 2\\) \\(data states"):
        md.MaskedDiffusionTask(cfg, np.full((4, 28, 28), 2)).build(torch.device("cpu"), None)
    with pytest.raises(ValueError, match="data must be one of"):
        md.MaskedDiffusionConfig.from_preset("tiny", data="mnist").validate()
    with pytest.raises(ValueError, match="unet must take in_channels=3"):
        md.MaskedDiffusionConfig.from_preset("tiny", unet={"in_channels": 1}).validate()
    with pytest.raises(ValueError, match="images must be uint8 of shape \\(N, 1, 28, 28\\)"):
        md.binarise(np.zeros((2, 28, 28), np.uint8))
