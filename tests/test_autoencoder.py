"""The KL and VQ autoencoders (minidiff.torch.autoencoder) and their training through the one
loop (minidiff.torch.train_autoencoder), on scikit-learn's 8x8 digits with tiny channels."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("sklearn")

from minidiff.checkpoint import load_image_checkpoint  # noqa: E402
from minidiff.torch.autoencoder import Autoencoder, AutoencoderConfig  # noqa: E402
from minidiff.torch.train_autoencoder import (AutoencoderTrainConfig, autoencoder_from_checkpoint,  # noqa: E402
                                              train_autoencoder)

TINY = dict(image_size=8, base_channels=8, channel_mults=(1, 2), groups=4, latent_channels=2, codebook_size=16)


def tiny(reg="kl", **kw):
    return AutoencoderTrainConfig(**{"dataset": "digits", "steps": 30, "batch_size": 16, "lr": 2e-3, "warmup": 5,
                                     "ckpt_every": 10, "sample_every": 0, **kw},
                                  autoencoder={**TINY, "reg": reg, **kw.pop("autoencoder", {})})


@pytest.mark.parametrize("reg", ["kl", "vq"])
@pytest.mark.parametrize("mults,f", [((1,), 1), ((1, 2), 2), ((1, 2, 2), 4), ((1, 2, 2, 2), 8)])
def test_shapes_for_every_downsampling_factor(reg, mults, f):
    cfg = AutoencoderConfig(**{**TINY, "reg": reg, "channel_mults": mults, "image_size": 16, "latent_channels": 3})
    net = Autoencoder(cfg)
    x = torch.randn(5, 1, 16, 16)
    moments = net.encode(x)
    assert moments.shape == (5, 6 if reg == "kl" else 3, 16 // f, 16 // f)
    out = net(x, torch.randn(5, 3, 16 // f, 16 // f) if reg == "kl" else None)
    assert out["reconstruction"].shape == x.shape and out["latent"].shape == (5, *cfg.latent_shape)
    assert net.decode(out["latent"]).shape == x.shape
    if reg == "kl":
        assert out["kl"].shape == (5,) and (out["kl"] >= 0).all()
    else:
        assert out["commitment"].shape == (5,) and out["indices"].shape == (5, 16 // f, 16 // f)


def test_kl_latent_is_the_mode_without_noise_and_a_sample_with_it():
    net = Autoencoder(AutoencoderConfig(**TINY)).eval()
    x = torch.randn(4, 1, 8, 8)
    mean = net.encode(x)[:, :2]
    assert torch.equal(net(x)["latent"], mean)
    assert not torch.allclose(net(x, torch.randn(4, 2, 4, 4))["latent"], mean)


@pytest.mark.parametrize("reg", ["kl", "vq"])
def test_training_lowers_the_reconstruction_loss(tmp_path, reg):
    result = train_autoencoder(tiny(reg, steps=40), tmp_path, progress=False)
    assert result["steps"] == 40 and np.all(np.isfinite(result["losses"]))
    assert np.mean(result["losses"][-8:]) < 0.7 * np.mean(result["losses"][:3])


def test_vq_codebook_changes_in_training_and_not_in_eval():
    net = Autoencoder(AutoencoderConfig(**{**TINY, "reg": "vq"}))
    x = torch.randn(8, 1, 8, 8)
    before = {k: getattr(net, k).clone() for k in ("codebook", "code_counts", "code_sums")}
    net.eval()(x)
    assert all(torch.equal(getattr(net, k), v) for k, v in before.items())
    net.train()(x)
    assert all(not torch.equal(getattr(net, k), v) for k, v in before.items())


def test_straight_through_gradient_reaches_the_encoder():
    net = Autoencoder(AutoencoderConfig(**{**TINY, "reg": "vq"}))
    out = net(torch.randn(4, 1, 8, 8))
    out["reconstruction"].square().sum().backward()                   # the reconstruction alone, no commitment
    g = net.enc_in.weight.grad
    assert g is not None and float(g.abs().max()) > 0


@pytest.mark.parametrize("reg", ["kl", "vq"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, reg):
    train_autoencoder(tiny(reg, steps=10, ckpt_every=3), tmp_path / "a", progress=False)
    train_autoencoder(tiny(reg, steps=10, ckpt_every=3, max_seconds=1e-9), tmp_path / "b", progress=False)
    assert load_image_checkpoint(tmp_path / "b")[1]["step"] == 1
    train_autoencoder(tiny(reg, steps=10, ckpt_every=3), tmp_path / "b", resume=True, progress=False,
                      log=lambda *_: None)
    a, _ = load_image_checkpoint(tmp_path / "a")
    b, state = load_image_checkpoint(tmp_path / "b")
    assert state["step"] == 10 and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


@pytest.mark.parametrize("reg", ["kl", "vq"])
def test_autoencoder_from_checkpoint_round_trip(tmp_path, reg):
    cfg = tiny(reg, steps=3)
    train_autoencoder(cfg, tmp_path, progress=False)
    net, loaded = autoencoder_from_checkpoint(tmp_path)
    assert not net.training and loaded == cfg
    tensors, _ = load_image_checkpoint(tmp_path)
    for k, v in net.state_dict().items():
        source = "model" if k in ("codebook", "code_counts", "code_sums") else "ema"
        assert torch.equal(v, tensors[f"{source}.{k}"]), k
    x = torch.zeros(2, 1, 8, 8)
    assert net(x)["reconstruction"].shape == x.shape


def test_a_damaged_checkpoint_config_is_named(tmp_path):
    from minidiff.checkpoint import save_image_checkpoint
    train_autoencoder(tiny(steps=1), tmp_path, progress=False)
    tensors, state = load_image_checkpoint(tmp_path)
    state["config"]["autoencoder"]["bogus"] = 1
    save_image_checkpoint(tmp_path, tensors, state)
    with pytest.raises(ValueError, match="bogus"):
        autoencoder_from_checkpoint(tmp_path)


@pytest.mark.parametrize("field,value", [
    ("channel_mults", (1, 2, 2, 2, 2)), ("channel_mults", ()), ("reg", "ae"), ("latent_channels", 0),
    ("codebook_size", 10 ** 6), ("beta", -1.0), ("codebook_decay", 1.0), ("groups", 3), ("image_size", 9),
    ("base_channels", True)])
def test_bad_autoencoder_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        AutoencoderConfig(**{**TINY, field: value})


@pytest.mark.parametrize("field,value", [("rec_loss", "l3"), ("kl_weight", -1.0), ("limit", -1),
                                         ("dataset", "nope"), ("steps", 0)])
def test_bad_training_fields_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        tiny(**{field: value}).validate()


def test_strict_from_dict_names_unknown_and_missing_fields():
    d = tiny().to_dict()
    assert AutoencoderTrainConfig.from_dict(d) == tiny()
    with pytest.raises(ValueError, match="unknown.*extra"):
        AutoencoderTrainConfig.from_dict({**d, "extra": 1})
    with pytest.raises(ValueError, match="missing.*beta"):
        AutoencoderTrainConfig.from_dict({**d, "autoencoder": {k: v for k, v in d["autoencoder"].items()
                                                               if k != "beta"}})


@pytest.mark.parametrize("reg", ["kl", "vq"])
def test_padding_gives_a_latent_of_the_padded_size_and_crops_back(reg):
    cfg = AutoencoderConfig(**{**TINY, "reg": reg, "image_size": 6, "padding": 1, "channel_mults": (1, 2, 2)})
    assert cfg.latent_shape == (2, 2, 2)
    net = Autoencoder(cfg)
    x = torch.randn(3, 1, 6, 6)
    out = net(x, torch.randn(3, 2, 2, 2) if reg == "kl" else None)
    assert out["latent"].shape == (3, 2, 2, 2) and out["reconstruction"].shape == x.shape
    with pytest.raises(ValueError, match="padding"):
        AutoencoderConfig(**{**TINY, "image_size": 6, "padding": 0, "channel_mults": (1, 2, 2)})
    with pytest.raises(ValueError, match="padding"):
        AutoencoderConfig(**{**TINY, "padding": -1})
