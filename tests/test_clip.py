"""minidiff's CLIP-style caption model: the shipped weights reproduce their recorded numbers, the
encoders' contract, the log-scale clamp, a tiny training run through the one loop, the score's
ceiling above its floor, bad input, and the score against torchmetrics' CLIPScore fed our model."""
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

from minidiff import contrastive as C
from minidiff.data.captions import caption_dataset, captions
from minidiff.data.images import load_images, to_model_range
from minidiff.torch import clip

EPS32 = float(np.finfo(np.float32).eps)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return clip.default_caption_model()


@pytest.fixture(scope="module")
def test_set():
    x, y = load_images("fashion-mnist", "test", limit=1000)
    return x, y, captions(x, y, seed=0, hold_out=False)


def within_binomial(rate_subset: float, n: int, recorded: float, sigmas: float = 4.0) -> bool:
    """A subset's rate agrees with the full test set's recorded one: |p_sub - p| <= 4 sigma of a
    binomial proportion of n draws (plus the JSON's rounding to 4 decimals)."""
    p = min(max(recorded, 1.0 / n), 1 - 1.0 / n)
    return abs(rate_subset - recorded) <= sigmas * math.sqrt(p * (1 - p) / n) + 1e-4


# ----------------------------------------------------------------------------------------------
# The shipped weights

def test_the_shipped_weights_reproduce_their_recorded_numbers(model, test_set):
    record = clip.caption_model_record()
    assert record["architecture"] == "CaptionCLIP" and record["storage_dtype"] == "float16"
    assert record["bytes"] < 4 << 20 and record["test"]["n"] == 10000
    x, y, text = test_set
    acc = clip.zero_shot_accuracy(model, x, y)
    assert within_binomial(acc, len(y), record["test"]["zero_shot_accuracy"])
    swap = clip.attribute_swap(model, x, text)
    for name, (rate, n) in swap.items():
        assert n > 50 and within_binomial(rate, n, record["test"]["attribute_swap"][name]["rate"]), name
    ret, want = clip.retrieval(model, x, y, text), record["test"]["retrieval"]   # the record's 1,000 images
    assert ret["n_images"] == want["n_images"] == len(y)
    for key in ("exact_recall@1", "exact_recall@5", "exact_recall@10", "consistent_recall@1"):
        assert abs(ret[key] - want[key]) <= 0.01, (key, ret[key], want[key])   # a few rank ties may flip on another CPU
    assert ret["consistent_recall@1"] > 10 * ret["exact_recall@1"]   # many images fit a caption; one is its own
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_a_changed_weights_file_is_refused(tmp_path):
    src_w, src_j = clip._weight_paths()
    data = bytearray(src_w.read_bytes())
    data[-1] ^= 1
    (tmp_path / src_w.name).write_bytes(bytes(data))
    (tmp_path / src_j.name).write_text(src_j.read_text())
    with pytest.raises(ValueError, match="sha256 differs"):
        clip.load_caption_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="--train"):
        clip.load_caption_model(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------------------------
# The encoders

def test_encoders_give_unit_vectors_of_the_joint_width(model, test_set):
    x, _, text = test_set
    I = model.encode_images(to_model_range(torch.from_numpy(x[:7])))
    T = model.encode_text(model.tokenize(text[:5]))
    D = model.config.embed_dim
    assert I.shape == (7, D) and T.shape == (5, D)
    for E in (I, T):
        norms = E.detach().double().norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=8 * math.sqrt(D) * EPS32)
    # an image's embedding does not depend on its batch (no batch statistics anywhere)
    one = model.encode_images(to_model_range(torch.from_numpy(x[3:4])))
    assert torch.allclose(one, I[3:4], atol=1e-5)


def test_the_log_scale_is_clamped_at_log_100():
    m = clip.CaptionCLIP(clip.CLIPConfig(channels=(4,), embed_dim=8))
    assert m.log_scale.item() == pytest.approx(C.LOG_SCALE_INIT, rel=1e-6)
    with torch.no_grad():
        m.log_scale.fill_(7.0)
    m.clamp_log_scale_()
    assert m.log_scale.item() == pytest.approx(C.LOG_SCALE_MAX, rel=1e-6)
    with torch.no_grad():
        m.log_scale.fill_(1.0)
    m.clamp_log_scale_()
    assert m.log_scale.item() == 1.0                                 # below the cap: untouched


def test_content_groups_join_paraphrases_only():
    g = clip.content_groups(["a dark sandal", "a photo of a black open shoe", "a sandal", "a light sandal",
                             "an image of a dim sandal"])
    assert g[0] == g[1] == g[4] and len({g[0], g[2], g[3]}) == 3


def test_a_hard_negative_changes_one_attribute_and_nothing_else():
    x, y = load_images("fashion-mnist", "train", limit=300)
    texts = captions(x, y, seed=3, hold_out=False)
    rng = np.random.default_rng(0)
    changed = 0
    for text in texts:
        neg = clip.hard_negative(text, rng)
        (k, a), (k_neg, a_neg) = clip.parse_caption(text), clip.parse_caption(neg)
        assert k_neg == k and a_neg.keys() == a.keys()
        assert sum(a[n] != a_neg[n] for n in a) == (1 if a else 0), (text, neg)
        assert len(neg.split()) == len(text.split())              # one word for another, same template
        changed += neg != text
    assert changed > 0.8 * len(texts)


def test_training_data_numbers_negatives_with_their_captions():
    cfg = clip.CLIPTrainConfig(limit=200, caption_sets=2, hard_negatives=True)
    x, ids, groups, (neg_ids, neg_groups) = clip.training_data(cfg)
    assert ids.shape == neg_ids.shape == (2, 200, 20) and groups.shape == neg_groups.shape == (2, 200)
    same = groups == neg_groups                                    # captions that say no attribute
    assert 0 < same.mean() < 0.3
    assert np.array_equal(ids[same], neg_ids[same]) and not np.any(np.all(ids[~same] == neg_ids[~same], axis=-1))
    assert clip.training_data(dataclasses.replace(cfg, hard_negatives=False))[3] is None


# ----------------------------------------------------------------------------------------------
# Training through the loop

def _tiny_run(tmp_path, name, **kw):
    cfg = clip.CLIPTrainConfig(steps=8, batch_size=32, lr=3e-3, warmup=1, limit=256, caption_sets=2, **kw,
                               model=clip.CLIPConfig(channels=(4, 8), embed_dim=16,
                                                     text=clip.TextConfig(vocab_size=clip._tokenizer().get_vocab_size(),
                                                                          context_length=20, width=16, layers=1,
                                                                          heads=2)))
    torch.set_num_threads(1)
    model, result = clip.train(cfg, tmp_path / name, progress=False, log=lambda *a: None)
    return model, result["losses"]


def test_a_tiny_training_run_lowers_the_loss_and_is_deterministic(tmp_path):
    m1, losses1 = _tiny_run(tmp_path, "a")
    m2, losses2 = _tiny_run(tmp_path, "b")
    assert losses1 == losses2                                        # same seed, same numbers
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert np.mean(losses1[-3:]) < np.mean(losses1[:3])
    assert float(m1.log_scale.detach()) <= C.LOG_SCALE_MAX


def test_a_tiny_run_with_hard_negatives_trains_on_its_own_loss(tmp_path):
    m, losses = _tiny_run(tmp_path, "hn", hard_negatives=True)
    _, plain = _tiny_run(tmp_path, "plain")
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert losses[0] > plain[0]                       # the same first batch, more captions to choose among


# ----------------------------------------------------------------------------------------------
# The score

def test_real_pairs_score_above_shuffled_ones(model, test_set):
    x, _, text = test_set
    ceiling, floor = clip.real_ceiling_floor(model, x, text)
    assert 0 <= floor < ceiling <= 100
    assert ceiling - floor > 10


def test_prompt_report_gives_the_score_beside_its_ceiling_and_floor(model):
    from minidiff.torch.evaluate import prompt_report

    x, _, text = caption_dataset("test", limit=40)
    samples = to_model_range(torch.from_numpy(x))
    own = prompt_report(samples, text, caption_model=model)
    assert own["clip_style_score_label"] == "CLIP-style score (minidiff caption model)"
    shuffled = prompt_report(samples, text[1:] + text[:1], caption_model=model)
    assert own["clip_style_score"] > shuffled["clip_style_score"]
    assert own["clip_style_score_mean_clamped"] <= own["clip_style_score"] + 100 * 8 * EPS32   # float32 cosines
    assert own["clip_style_score_floor"] < own["clip_style_score_ceiling"]
    I = model.encode_images(samples)
    T = model.encode_text(model.tokenize(text))
    assert own["clip_style_score"] == pytest.approx(float(C.clip_style_score(I, T).mean()), rel=1e-6)


def test_mean_clamped_score_matches_torchmetrics_fed_our_model(model, test_set):
    pytest.importorskip("torchmetrics")
    from torchmetrics.multimodal.clip_score import CLIPScore

    x, _, text = test_set
    images = to_model_range(torch.from_numpy(x[:24]))
    prompts = text[3:27]                                             # mostly other images' captions
    ours = C.clip_style_score_mean_clamped(model.encode_images(images).detach(),
                                           model.encode_text(model.tokenize(prompts)).detach())
    metric = CLIPScore(model_name_or_path=clip.for_torchmetrics(model))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric.update(list(images[:10]), prompts[:10])
        metric.update(list(images[10:]), prompts[10:])
    # float32 cosines (24 terms of size <= 100) and torchmetrics' float32 running sum
    assert float(metric.compute()) == pytest.approx(ours, rel=0, abs=24 * 100 * 8 * EPS32)


# ----------------------------------------------------------------------------------------------
# Bad input

def test_bad_input_names_the_argument(model):
    with pytest.raises(ValueError, match="images must be float images of shape"):
        model.encode_images(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="images must be float images of shape"):
        model.encode_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    L = model.config.text.context_length
    with pytest.raises(ValueError, match=r"ids must lie in \[0, vocab_size\).*another tokenizer"):
        model.encode_text(torch.full((1, L), 5000))
    with pytest.raises(ValueError, match="ids must be integer token ids of shape"):
        model.encode_text(torch.zeros(1, L + 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="says no brightness word"):
        clip.swap_attribute("a bag", "brightness")
