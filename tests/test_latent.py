"""Latent diffusion (minidiff.torch.latent): a U-Net trained on the scaled latents of a trained
autoencoder with the unchanged objectives and samplers, the encoded-dataset cache keyed by the
autoencoder's sha256, and the refusals (another autoencoder, a bad scale factor, images given
to a latent model).  On scikit-learn's 8x8 digits with tiny networks."""
import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("sklearn")

from minidiff.checkpoint import image_checkpoint_sha256, load_image_checkpoint  # noqa: E402
from minidiff.data.images import load_images  # noqa: E402
from minidiff.torch import latent  # noqa: E402
from minidiff.torch.sampling import decode_latents, sample_images  # noqa: E402
from minidiff.torch.train import ImageConfig, fitting_mults, model_from_checkpoint, train_images  # noqa: E402
from minidiff.torch.train_autoencoder import AutoencoderTrainConfig, train_autoencoder  # noqa: E402

AE = dict(image_size=8, base_channels=8, channel_mults=(1, 2), groups=4, latent_channels=2, codebook_size=16)


def ae_config(reg="kl", seed=3, steps=30, **ae):
    return AutoencoderTrainConfig(dataset="digits", steps=steps, batch_size=32, lr=3e-3, warmup=5, ckpt_every=0,
                                  sample_every=0, seed=seed, autoencoder={**AE, "reg": reg, **ae})


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test gets its own latent cache ($MINIDIFF_DATA)."""
    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache" / "latents"


@pytest.fixture(scope="module", params=["kl", "vq"])
def first_stage(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ae-{request.param}")
    train_autoencoder(ae_config(request.param), out, progress=False)
    return out


@pytest.fixture(scope="module")
def kl_stage(tmp_path_factory):
    out = tmp_path_factory.mktemp("ae-kl")
    train_autoencoder(ae_config("kl"), out, progress=False)
    return out


def latent_cfg(ae_dir, method="edm", **kw):
    return ImageConfig.from_preset("tiny", dataset="digits", method=method, autoencoder=str(ae_dir),
                                   **{"steps": 6, "batch_size": 16, "ckpt_every": 3, **kw})


def quiet(*_):
    pass


def test_the_preset_sizes_the_unet_for_the_latent(kl_stage):
    cfg = latent_cfg(kl_stage)
    assert (cfg.unet.in_channels, cfg.unet.image_size) == (2, 4)
    assert fitting_mults((1, 2, 4), 8) == (1, 2, 4) and fitting_mults((1, 2, 4), 14) == (1, 2)
    assert fitting_mults((1, 2, 2), 4) == (1, 2) and fitting_mults((1, 2), 3) == (1,)
    # EDM's sigma_data is the data's std, and s makes the latents' std 1 (a pixel model keeps 0.5)
    assert cfg.sigma_data == 1.0 and ImageConfig.from_preset("tiny").sigma_data == 0.5
    assert latent_cfg(kl_stage, sigma_data=0.7).sigma_data == 0.7
    # EDM's training noise follows: the same sigma / sigma_data as a pixel model's (P_mean -1.2 at 0.5)
    assert cfg.P_mean == pytest.approx(-1.2 + math.log(2)) and ImageConfig.from_preset("tiny").P_mean == -1.2
    assert latent_cfg(kl_stage, sigma_data=0.7).P_mean == pytest.approx(-1.2 + math.log(1.4))
    assert latent_cfg(kl_stage, P_mean=0.3).P_mean == 0.3
    assert cfg.P_std == 1.0 and ImageConfig.from_preset("tiny").P_std == 1.2 and latent_cfg(kl_stage, P_std=2).P_std == 2
    # the cpu preset's latent U-Net: twice as wide (a latent step costs far less than a pixel one)
    cpu = ImageConfig.from_preset("cpu", dataset="digits", method="edm", autoencoder=str(kl_stage))
    assert cpu.unet.base_channels == 32 and cpu.unet.channel_mults == (1, 2)
    assert ImageConfig.from_preset("cpu", dataset="fashion-mnist").unet.base_channels == 16


def test_training_records_the_autoencoder_and_a_scale_giving_unit_variance(first_stage, tmp_path):
    result = train_images(latent_cfg(first_stage), tmp_path / "run", progress=False, log=quiet)
    _, state = load_image_checkpoint(tmp_path / "run")
    saved = state["config"]
    assert saved["autoencoder_sha256"] == image_checkpoint_sha256(first_stage) == result["config"].autoencoder_sha256
    # independently: the training latents (KL: one posterior sample each) times s have std 1
    ae, ae_cfg, _ = latent.load_first_stage(first_stage)
    images, _ = load_images("digits", "train")
    with torch.no_grad():
        h = ae.encode(torch.from_numpy(images).float() / 127.5 - 1.0).double()
    if ae_cfg.autoencoder.reg == "kl":
        mean, logvar = h.chunk(2, dim=1)
        noise = latent.generator(latent.step_seed(0, 0, latent.SCALE_STREAM), backend="torch").randn(
            mean.shape, dtype=torch.float32).double()
        h = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * noise
    s = saved["scale_factor"]
    assert s > 0 and abs(s * float(h.std(unbiased=False)) - 1.0) < 1e-4


def test_samples_are_decoded_images_and_need_the_autoencoder(first_stage, tmp_path):
    train_images(latent_cfg(first_stage, steps=3), tmp_path / "run", progress=False, log=quiet)
    net, cfg = model_from_checkpoint(tmp_path / "run")
    ae = latent.first_stage_for(cfg)
    x = sample_images(net, cfg, 5, steps=3, autoencoder=ae)
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()
    # the decoder's input is z / s: decoding the sampled latents by hand gives the same images
    torch.manual_seed(0)
    z = torch.randn(2, 2, 4, 4)
    assert torch.allclose(decode_latents(ae, z, cfg.scale_factor), ae.eval().decode(z / cfg.scale_factor))
    with pytest.raises(ValueError, match="latent model: pass autoencoder"):
        sample_images(net, cfg, 2, steps=2)
    with pytest.raises(ValueError, match="scale_factor"):
        sample_images(net, dataclasses.replace(cfg, scale_factor=math.inf), 2, steps=2, autoencoder=ae)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):       # images given to a latent model
        net(torch.zeros(2, 1, 8, 8), torch.ones(2))


def test_the_cache_is_written_once_and_read_back(kl_stage, tmp_path, cache, monkeypatch):
    train_images(latent_cfg(kl_stage, steps=2), tmp_path / "a", progress=False, log=quiet)
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1 and files[0].name.startswith(image_checkpoint_sha256(kl_stage)[:16])

    def no_encoding(*a, **k):
        raise AssertionError("encoded again although the cache holds the latents")
    monkeypatch.setattr(latent, "encode_images", no_encoding)
    train_images(latent_cfg(kl_stage, steps=2), tmp_path / "b", progress=False, log=quiet)
    a, _ = load_image_checkpoint(tmp_path / "a")
    b, _ = load_image_checkpoint(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    files[0].write_bytes(b"not a safetensors file")                    # a damaged cache is rebuilt
    monkeypatch.undo()
    train_images(latent_cfg(kl_stage, steps=2), tmp_path / "c", progress=False, log=quiet)
    c, _ = load_image_checkpoint(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_resume_is_bit_identical(kl_stage, tmp_path):
    train_images(latent_cfg(kl_stage), tmp_path / "a", progress=False, log=quiet)
    train_images(latent_cfg(kl_stage, max_seconds=1e-9), tmp_path / "b", progress=False, log=quiet)
    assert load_image_checkpoint(tmp_path / "b")[1]["step"] == 1
    train_images(latent_cfg(kl_stage), tmp_path / "b", resume=True, progress=False, log=quiet)
    a, _ = load_image_checkpoint(tmp_path / "a")
    b, state = load_image_checkpoint(tmp_path / "b")
    assert state["step"] == 6 and all(torch.equal(a[k], b[k]) for k in a)


def test_another_autoencoder_is_refused(tmp_path):
    ae_dir = tmp_path / "ae"
    train_autoencoder(ae_config("kl", steps=4), ae_dir, progress=False)
    train_images(latent_cfg(ae_dir, steps=2), tmp_path / "run", progress=False, log=quiet)
    net, cfg = model_from_checkpoint(tmp_path / "run")
    train_autoencoder(ae_config("kl", steps=4, seed=11), ae_dir, progress=False)   # same folder, new weights
    with pytest.raises(ValueError, match="sha256"):
        latent.first_stage_for(cfg)
    with pytest.raises(ValueError, match="autoencoder_sha256"):         # resuming on the new autoencoder
        train_images(latent_cfg(ae_dir, steps=4), tmp_path / "run", resume=True, progress=False, log=quiet)
    with pytest.raises(FileNotFoundError, match="--autoencoder"):
        latent.first_stage_for(cfg, tmp_path / "nowhere")
    for field in ("autoencoder_sha256", "scale_factor"):               # an edited config: nothing to check
        with pytest.raises(ValueError, match="records no autoencoder_sha256 or scale_factor"):
            latent.first_stage_for(dataclasses.replace(cfg, **{field: type(getattr(cfg, field))()}))


def test_an_autoencoder_of_another_size_is_refused(kl_stage, tmp_path):
    cfg = latent_cfg(kl_stage)
    wrong = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, in_channels=3))
    with pytest.raises(ValueError, match="in_channels"):
        train_images(wrong, tmp_path / "run", progress=False, log=quiet)
    other = tmp_path / "ae-f1"
    train_autoencoder(ae_config("kl", steps=2, channel_mults=(1,)), other, progress=False)
    ae, _, _ = latent.load_first_stage(other)
    train_images(latent_cfg(kl_stage, steps=1), tmp_path / "ok", progress=False, log=quiet)
    net, good = model_from_checkpoint(tmp_path / "ok")
    with pytest.raises(ValueError, match="latents"):
        sample_images(net, good, 2, steps=2, autoencoder=ae)


@pytest.mark.parametrize("field,value,match", [
    ("scale_factor", math.nan, "scale_factor"), ("scale_factor", math.inf, "scale_factor"),
    ("scale_factor", -1.0, "scale_factor"), ("autoencoder_sha256", "abc", "autoencoder_sha256"),
    ("flip", True, "flip")])
def test_bad_latent_fields_are_named(kl_stage, field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(latent_cfg(kl_stage), **{field: value}).validate()


def test_latent_fields_without_an_autoencoder_are_refused():
    with pytest.raises(ValueError, match="set autoencoder"):
        ImageConfig.from_preset("tiny", dataset="digits", scale_factor=0.5).validate()


def test_a_collapsed_autoencoder_has_no_scale_factor(kl_stage):
    ae, ae_cfg, _ = latent.load_first_stage(kl_stage)
    encoded = torch.zeros(10, 4, 4, 4)                                  # mu = 0, log-variance 0 ... sample: std 1
    assert abs(latent.latent_scale_factor(ae_cfg.autoencoder, encoded) - 1.0) < 0.3
    vq = dataclasses.replace(ae_cfg.autoencoder, reg="vq")
    with pytest.raises(ValueError, match="collapsed"):
        latent.latent_scale_factor(vq, torch.zeros(10, 2, 4, 4))


@pytest.mark.parametrize("method,sampler", [("ddpm", "ddim"), ("ddpm", "ddpm"), ("edm", "stochastic"),
                                            ("ct", "consistency"), ("ict", "consistency")])
def test_the_other_objectives_and_samplers_run_on_latents_unchanged(kl_stage, tmp_path, method, sampler):
    result = train_images(latent_cfg(kl_stage, method=method, steps=4), tmp_path / method, progress=False, log=quiet)
    assert result["steps"] == 4 and np.all(np.isfinite(result["losses"]))
    net, cfg = model_from_checkpoint(tmp_path / method)
    ae = latent.first_stage_for(cfg)
    steps = {"ddim": 5, "ddpm": None, "stochastic": 4, "consistency": 2}[sampler]
    kw = {"S_churn": 40.0} if sampler == "stochastic" else {}
    x = sample_images(net, cfg, 3, sampler=sampler, steps=steps, autoencoder=ae, **kw)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    # the sampler ran on latents: the same seed's samples are the decoder's image of a (3, 2, 4, 4) draw
    assert torch.equal(x, sample_images(net, cfg, 3, sampler=sampler, steps=steps, autoencoder=ae, **kw))


def test_consistency_distillation_on_latents_needs_a_teacher_of_the_same_first_stage(kl_stage, tmp_path):
    train_images(latent_cfg(kl_stage, steps=3), tmp_path / "teacher", progress=False, log=quiet)
    result = train_images(latent_cfg(kl_stage, method="cd", teacher=str(tmp_path / "teacher"), steps=3),
                          tmp_path / "cd", progress=False, log=quiet)
    assert result["steps"] == 3 and np.all(np.isfinite(result["losses"]))
    net, cfg = model_from_checkpoint(tmp_path / "cd")
    assert sample_images(net, cfg, 2, steps=1, autoencoder=latent.first_stage_for(cfg)).shape == (2, 1, 8, 8)
    other = tmp_path / "ae-other"                                     # a teacher of another autoencoder
    train_autoencoder(ae_config("kl", steps=4, seed=11), other, progress=False)
    train_images(latent_cfg(other, steps=2), tmp_path / "other-teacher", progress=False, log=quiet)
    with pytest.raises(ValueError, match="latents of another autoencoder"):
        train_images(latent_cfg(kl_stage, method="cd", teacher=str(tmp_path / "other-teacher"), steps=2),
                     tmp_path / "cd2", progress=False, log=quiet)


def test_an_f_8_first_stage_pads_its_images_and_drives_a_latent_model(tmp_path):
    ae_dir = tmp_path / "ae8"                                         # 8x8 digits padded to 16x16: 2x2 latents
    train_autoencoder(ae_config("kl", steps=6, channel_mults=(1, 2, 2, 2), padding=4), ae_dir, progress=False)
    cfg = latent_cfg(ae_dir, steps=2)
    assert (cfg.unet.in_channels, cfg.unet.image_size) == (2, 2)
    train_images(cfg, tmp_path / "run", progress=False, log=quiet)
    net, cfg = model_from_checkpoint(tmp_path / "run")
    x = sample_images(net, cfg, 3, steps=3, autoencoder=latent.first_stage_for(cfg))
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


def test_the_command_line_trains_and_samples_a_latent_model(kl_stage, tmp_path, capsys):
    from minidiff.cli import main

    run, grid = tmp_path / "run", tmp_path / "g.png"
    assert main(["train", "--backend", "torch", "--dataset", "digits", "--preset", "tiny", "--steps", "2",
                 "--autoencoder", str(kl_stage), "--out", str(run)]) == 0
    assert "on the latents of" in capsys.readouterr().out
    assert main(["sample", "--ckpt", str(run), "--n", "4", "--steps", "2", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 100
    other = tmp_path / "other"
    train_autoencoder(ae_config("kl", steps=2, seed=5), other, progress=False)
    assert main(["sample", "--ckpt", str(run), "--n", "4", "--autoencoder", str(other)]) == 2
    assert "sha256" in capsys.readouterr().err
    for argv, says in ((["--autoencoder", str(tmp_path / "nowhere")], "no such checkpoint"),
                       (["--autoencoder", str(kl_stage), "--flip"], "flip"),
                       (["--reg", "vq"], "--model autoencoder")):
        assert main(["train", "--backend", "torch", "--dataset", "digits", "--preset", "tiny", "--steps", "1",
                     "--out", str(tmp_path / "x"), *argv]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err


def test_the_command_line_trains_evaluates_and_resumes_an_autoencoder_then_a_latent_model(tmp_path, capsys):
    """Fashion-MNIST (256 images) end to end: `--model autoencoder`, `eval` of its reconstructions,
    `--resume`, then a latent EDM on it whose `eval` reports FD like a pixel model's."""
    import json

    from minidiff.cli import main

    ae, run = tmp_path / "ae", tmp_path / "latent"
    base = ["train", "--backend", "torch", "--dataset", "fashion-mnist", "--preset", "tiny", "--limit", "256"]
    assert main([*base, "--model", "autoencoder", "--reg", "vq", "--steps", "3", "--out", str(ae)]) == 0
    assert "vq autoencoder on fashion-mnist" in capsys.readouterr().out
    assert main([*base, "--model", "autoencoder", "--reg", "vq", "--steps", "5", "--out", str(ae), "--resume"]) == 0
    assert load_image_checkpoint(ae)[1]["step"] == 5
    assert main(["eval", "--ckpt", str(ae), "--n", "64", "--device", "cpu"]) == 0
    report = json.loads((ae / "eval.json").read_text())
    assert report["n_images"] == 64 and report["mse"] > 0 and 0 < report["codebook_usage"] <= 1
    assert math.isfinite(report["psnr"]) and math.isfinite(report["fd"]) and report["perplexity"] >= 1
    assert main(["sample", "--ckpt", str(ae), "--n", "8", "--out", str(tmp_path / "rec.png")]) == 0
    assert (tmp_path / "rec.png").stat().st_size > 100
    assert main(["eval", "--ckpt", str(ae), "--guidance", "1"]) == 2
    assert "autoencoder checkpoint" in capsys.readouterr().err
    assert main([*base, "--model", "autoencoder", "--method", "edm", "--out", str(tmp_path / "x")]) == 2
    assert "--method" in capsys.readouterr().err
    # the PatchGAN term from the command line: recorded in the checkpoint's config; refused on a U-Net
    gan = tmp_path / "gan"
    assert main([*base, "--model", "autoencoder", "--steps", "3", "--disc-weight", "0.5", "--disc-start", "1",
                 "--out", str(gan)]) == 0
    saved = load_image_checkpoint(gan)[1]["config"]
    assert (saved["disc_weight"], saved["disc_start"]) == (0.5, 1)
    assert main([*base, "--disc-weight", "0.5", "--out", str(tmp_path / "y")]) == 2
    assert "--disc-weight" in capsys.readouterr().err

    assert main([*base, "--steps", "2", "--autoencoder", str(ae), "--out", str(run)]) == 0
    assert main(["eval", "--ckpt", str(run), "--n", "20", "--steps", "2", "--n-reference", "100"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["n_samples"] == 20 and report["fd"] > 0
    assert report["autoencoder_sha256"] == image_checkpoint_sha256(ae)


def test_a_collapsed_vq_codebook_is_warned_about_with_its_usage(tmp_path):
    ae_dir = tmp_path / "vq"
    train_autoencoder(ae_config("vq", steps=2), ae_dir, progress=False)
    ae, _, _ = latent.load_first_stage(ae_dir)
    one_code = ae.codebook[3].reshape(1, -1, 1, 1).expand(20, -1, 4, 4)      # every latent pixel at code 3
    with pytest.warns(UserWarning, match=r"uses 0\.062 of its 16 codes"):
        assert latent.warn_if_collapsed(ae, one_code.contiguous()) == 1 / 16
    spread = ae.codebook.T.reshape(1, -1, 4, 4).expand(3, -1, -1, -1)        # all 16 codes once per example
    assert latent.warn_if_collapsed(ae, spread.contiguous()) == 1.0
