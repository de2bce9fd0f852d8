"""Text-to-image on Fashion-MNIST captions: the trainer's condition='text' (tokenizer beside the
checkpoint, captions dropped to the empty caption, exact resume), sampling with prompts and
guidance, the refusals, and the prompt report (class and attribute accuracy).  Tiny runs only."""
import json
import warnings

import numpy as np
import pytest
import torch

from minidiff.cli import main
from minidiff.data.captions import HELD_OUT, caption_dataset
from minidiff.data.images import to_model_range
from minidiff.data.tokenizer import caption_tokenizer, empty_caption_ids, encode
from minidiff.torch.evaluate import prompt_report
from minidiff.torch.sampling import sample_images
from minidiff.torch.train import (ImageConfig, TOKENIZER_FILE, load_run_tokenizer, model_from_checkpoint,
                                  train_images)

QUIET = dict(progress=False, log=lambda *_: None)


def tiny(**kw):
    return ImageConfig.from_preset("tiny", dataset="fashion-mnist", condition="text", limit=64, steps=4,
                                   ckpt_every=2, sample_every=0, p_uncond=0.25, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("text") / "run"
    result = train_images(tiny(), out, device="cpu", **QUIET)
    return out, result


def test_a_text_model_trains_records_its_tokenizer_and_resumes_exactly(run, tmp_path):
    out, result = run
    cfg = result["config"]
    assert (out / TOKENIZER_FILE).is_file() and len(cfg.tokenizer_sha256) == 64
    assert cfg.text.vocab_size == caption_tokenizer().get_vocab_size()
    assert cfg.unet.context_dim == cfg.text.width and cfg.unet.pooled_context and np.isfinite(result["losses"]).all()
    # stopped after step 1, then resumed to 4: the straight run's weights (captions dropped by (seed, step))
    train_images(tiny(max_seconds=1e-9), tmp_path / "b", device="cpu", **QUIET)
    train_images(tiny(), tmp_path / "b", resume=True, device="cpu", **QUIET)
    a, _ = model_from_checkpoint(out, use_ema=False)
    b, _ = model_from_checkpoint(tmp_path / "b", use_ema=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert any(k.startswith("encoder.") for k in sa)                  # tau is part of the model, trained jointly
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_sampling_follows_the_prompt_and_guidance_against_the_empty_caption(run):
    out, _ = run
    net, cfg = model_from_checkpoint(out)
    tok = load_run_tokenizer(out, cfg)
    ids = encode(tok, ["a dark ankle boot facing left", "a pair of trousers"], cfg.text.context_length)
    kw = dict(sampler="heun", steps=3, seed=1)
    x = sample_images(net, cfg, 2, tokens=ids, **kw)
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
    one = sample_images(net, cfg, 2, tokens=ids[0], **kw)              # one (L,) prompt for every image
    torch.testing.assert_close(one[0], x[0])
    empty = sample_images(net, cfg, 2, tokens=empty_caption_ids(cfg.text.context_length), **kw)
    minus_one = sample_images(net, cfg, 2, tokens=ids, guidance=-1.0, **kw)    # w = -1: the unconditional model
    torch.testing.assert_close(minus_one, empty, rtol=1e-4, atol=1e-5)
    guided = sample_images(net, cfg, 2, tokens=ids, guidance=3.0, **kw)
    assert not torch.allclose(guided, x)
    with pytest.raises(ValueError, match="text-conditioned: pass tokens"):
        sample_images(net, cfg, 2, **kw)
    with pytest.raises(ValueError, match="class_labels"):
        sample_images(net, cfg, 2, tokens=ids, class_labels=[0, 1], **kw)
    with pytest.raises(ValueError, match="tokens must be integer token ids"):
        sample_images(net, cfg, 3, tokens=ids, **kw)


def test_a_tokenizer_that_does_not_match_the_model_is_refused(run, tmp_path):
    out, _ = run
    _, cfg = model_from_checkpoint(out)
    doc = json.loads((out / TOKENIZER_FILE).read_text())
    vocab = doc["model"]["vocab"]
    a, b = "boot", "coat"
    vocab[a], vocab[b] = vocab[b], vocab[a]                            # two words swapped: another vocabulary
    (tmp_path / TOKENIZER_FILE).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not match the model"):
        load_run_tokenizer(tmp_path, cfg)


def test_the_command_line_samples_prompts_and_warns_in_one_line(run, tmp_path, capsys):
    out, _ = run
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# the asked-for captions\na dark ankle boot facing left\n\nsneaker\n")
    common = ["sample", "--ckpt", str(out), "--n", "3", "--steps", "2", "--sampler", "euler"]
    assert main(common + ["--prompt-file", str(prompts), "--guidance", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert main(common + ["--prompt", "", "--out", str(tmp_path / "b.png")]) == 0              # unconditional
    capsys.readouterr()
    assert main(common + ["--prompt", "a purple ankle boot " + "very " * 30, "--out", str(tmp_path / "c.png")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 2 and "'purple'" in warned[0] and "truncated" in warned[1]
    for argv, what in ((common, "--prompt"), (common + ["--class", "3", "--prompt", "bag"], "--class"),
                       (common + ["--prompt", "bag", "--prompt-file", str(prompts)], "--prompt-file")):
        try:
            code = main(argv + ["--out", str(tmp_path / "d.png")])
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and what in err[0], err


def test_eval_reports_fd_and_what_the_prompts_asked_for(run, tmp_path, capsys):
    out, _ = run
    prompts = tmp_path / "prompts.txt"
    held = "a dark sandal facing left"                                 # a HELD_OUT combination
    prompts.write_text(f"a pair of light trousers\n{held}\nan ankle boot facing right\n")
    path = tmp_path / "eval.json"
    common = ["eval", "--ckpt", str(out), "--n", "6", "--steps", "2", "--n-reference", "40", "--out", str(path)]
    assert main(common + ["--prompt-file", str(prompts), "--guidance", "1"]) == 0
    report = json.loads(path.read_text())
    r = report["prompts"]
    assert np.isfinite(report["fd"]) and report["n_samples"] == 6 and report["guidance"] == 1.0
    assert 0 <= r["class_accuracy"] <= 1 and 0 <= r["attribute_accuracy"] <= 1 and r["attribute_words"] >= 6
    assert r["held_out"]["n"] == 2                                     # prompt 2 of 3, for images 1 and 4
    assert r["clip_style_score_floor"] < r["clip_style_score_ceiling"]
    assert r["clip_style_score_label"] == "CLIP-style score (minidiff caption model)"
    assert "held-out combinations, 2 images" in capsys.readouterr().out
    assert main(common + ["--prompt", ""]) == 0                        # the unconditional model: FD, no prompt report
    assert "prompts" not in json.loads(path.read_text())
    capsys.readouterr()
    assert main(common + ["--prompt", "something dark"]) == 2          # names no garment: refused before sampling,
    err = capsys.readouterr().err                                      # in one line that names the flag
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "error: --prompt:" in errors[0] and "names no class" in errors[0], err
    assert "sampling" not in err


@pytest.mark.parametrize("change, match", [
    (dict(flip=True), "flip"),
    (dict(class_conditional=True), "class_conditional"),
    (dict(unet={"context_dim": 48}), "context_dim"),
])
def test_text_config_refusals(change, match):
    with pytest.raises(ValueError, match=match):
        tiny(**change).validate()
    with pytest.raises(ValueError, match="captions"):
        ImageConfig.from_preset("tiny", dataset="digits", condition="text").validate()
    with pytest.raises(ValueError, match="condition='text'"):
        ImageConfig.from_preset("tiny", unet={"context_dim": 8, "attention_resolutions": (14,)}).validate()


def test_prompt_report_of_real_images_against_their_own_captions():
    """Test images with the captions made from them: every attribute word they say is right
    (the same functions measured them), the classifier's accuracy is its test accuracy; with the
    captions of other images the attribute words fall to about chance."""
    x, y, text = caption_dataset("test", limit=600)
    samples = to_model_range(torch.from_numpy(x))
    own = prompt_report(samples, text)
    assert own["attribute_accuracy"] == 1.0 and own["attribute_words"] > 300
    assert 0.85 < own["class_accuracy"] < 0.97
    order = np.argsort(y, kind="stable")
    shuffled = prompt_report(samples[order], [text[j] for j in np.roll(order, 1)])   # a neighbour's caption
    assert 0.3 < shuffled["attribute_accuracy"] < 0.75
    assert shuffled["class_accuracy"] > 0.8                            # neighbours in class order share the class
    held = own["held_out"]                                             # the test split keeps those captions
    assert 0 < held["n"] < len(text) and held["attribute_accuracy"] == 1.0
    asked = [f"a {w} {'sandal' if k == 5 else 'ankle boot' if k == 9 else 'bag'}" for a, w, k in HELD_OUT]
    report = prompt_report(samples[:3], asked)
    assert report["held_out"]["n"] == 3
    with pytest.raises(ValueError, match="prompts"):
        prompt_report(samples[:2], ["a bag"])


def test_text_conditioning_on_the_latents_of_an_autoencoder(tmp_path, monkeypatch):
    """The same text model on a latent space (LDM): the captions of the training images travel
    with their latents, sampling decodes."""
    from minidiff.torch.latent import first_stage_for
    from minidiff.torch.train_autoencoder import AutoencoderTrainConfig, train_autoencoder

    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path / "cache"))
    ae = AutoencoderTrainConfig.from_preset("tiny", dataset="fashion-mnist", limit=64, steps=2, ckpt_every=0,
                                            sample_every=0)
    train_autoencoder(ae, tmp_path / "ae", progress=False)
    cfg = tiny(autoencoder=str(tmp_path / "ae"))
    result = train_images(cfg, tmp_path / "latent", device="cpu", **QUIET)
    net, cfg = model_from_checkpoint(tmp_path / "latent")
    assert cfg.scale_factor > 0 and cfg.unet.in_channels == ae.autoencoder.latent_channels
    assert np.isfinite(result["losses"]).all()
    ids = encode(load_run_tokenizer(tmp_path / "latent", cfg), ["a small bag"], cfg.text.context_length)
    x = sample_images(net, cfg, 2, tokens=ids[0], guidance=2.0, sampler="euler", steps=2,
                      autoencoder=first_stage_for(cfg))
    assert x.shape == (2, 1, 28, 28) and torch.isfinite(x).all()
