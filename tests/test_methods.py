"""The method layer (minidiff.methods): one config for the method fields, validated once for
both trainers; checkpoints' JSON back into the dataclasses, strictly; one table of default
samplers; the command line's choices taken from the library's constants."""
import dataclasses
import json
import math

import numpy as np
import pytest

from minidiff import methods
from minidiff.checkpoint import load_toy_checkpoint, save_toy_checkpoint
from minidiff.cli import build_parser
from minidiff.diffusion import TARGETS
from minidiff.methods import DEFAULT_SAMPLERS, SAMPLERS, MethodConfig, config_from_dict, resolve_sampler
from minidiff.train import ToyConfig, sample_from_params, train_toy


def image_config_class():
    pytest.importorskip("torch")
    from minidiff.torch.train import ImageConfig
    return ImageConfig


def configs():
    """A ToyConfig and an ImageConfig, both valid."""
    ImageConfig = image_config_class()
    return [ToyConfig(), ImageConfig.from_preset("tiny", dataset="digits")]


@pytest.mark.parametrize("field,value,match", [
    ("target", "noise", "target must be one of"), ("scheme", "karras", "scheme must be one of"),
    ("cm_N", 1, "cm_N must be an integer >= 2"), ("cm_N", 2.5, "cm_N"), ("ema_decay", 1.0, "ema_decay"),
    ("ema_decay", float("nan"), "ema_decay"), ("sigma_data", 0.0, "sigma_data"), ("T", 0, "T must be"),
    ("schedule", "sigmoid", "schedule must be one of"), ("metric", "l3", "metric must be one of"),
    ("method", "gan", "method must be one of"), ("cm_mu", -0.1, "cm_mu"), ("P_std", 0.0, "P_std"),
    ("P_mean", float("nan"), "P_mean"), ("P_std", float("inf"), "P_std")])
def test_both_trainers_refuse_the_same_bad_method_field(field, value, match):
    for cfg in configs():
        bad = dataclasses.replace(cfg, **{field: value})
        with pytest.raises(ValueError, match=match):
            bad.validate()


def test_both_configs_hold_every_method_field():
    names = {f.name for f in dataclasses.fields(MethodConfig)}
    for cfg in configs():
        assert names <= {f.name for f in dataclasses.fields(cfg)}
        assert isinstance(cfg, MethodConfig)


def test_from_dict_round_trips_and_names_unknown_and_missing_fields():
    for cfg in configs():
        cls = type(cfg)
        d = json.loads(json.dumps(cfg.to_dict()))              # as a checkpoint stores it
        back = cls.from_dict(d)
        assert back == cfg
        with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
            cls.from_dict({**d, "colour": "red"})
        with pytest.raises(ValueError, match=r"missing field\(s\) \['sigma_data'\]"):
            cls.from_dict({k: v for k, v in d.items() if k != "sigma_data"})
    with pytest.raises(TypeError, match="config must be"):
        ToyConfig.from_dict(["method", "ddpm"])


def test_an_image_checkpoint_config_is_strict_about_the_unet_too():
    ImageConfig = image_config_class()
    d = json.loads(json.dumps(ImageConfig.from_preset("tiny", dataset="digits").to_dict()))
    d["unet"]["wings"] = 2
    with pytest.raises(ValueError, match=r"unet.*unknown field\(s\) \['wings'\]"):
        ImageConfig.from_dict(d)


def test_a_2d_checkpoint_loads_back_into_its_config(tmp_path):
    cfg = ToyConfig(steps=3, batch_size=16, hidden=8, depth=1)
    run = train_toy(cfg, progress=False)
    save_toy_checkpoint(tmp_path, run["params"], run["ema"], run["config"], run["steps"])
    _, _, state = load_toy_checkpoint(tmp_path)
    assert ToyConfig.from_dict(state["config"]) == cfg


def test_one_table_decides_the_default_sampler():
    ImageConfig = image_config_class()
    for method in methods.METHODS:
        toy = ToyConfig(method=method, T=321, teacher="x")
        image = ImageConfig.from_preset("tiny", dataset="digits", method=method, T=321, teacher="x")
        for cfg, kind in ((toy, "points"), (image, "images")):
            sampler, steps = DEFAULT_SAMPLERS[method][kind]
            assert cfg.default_sampler() == (sampler, 321 if steps is None else steps)
            assert resolve_sampler(cfg) == cfg.default_sampler()
            assert cfg.default_sampler()[0] in SAMPLERS[method]
    assert ToyConfig(method="ddpm").default_sampler() != ImageConfig(method="ddpm").default_sampler()


def test_resolve_sampler_refuses_a_sampler_the_method_cannot_run():
    with pytest.raises(ValueError, match="sampler .for a 'edm' model. must be one of"):
        resolve_sampler(ToyConfig(method="edm"), "ddim")
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        resolve_sampler(ToyConfig(method="edm"), "heun", 0)


def test_a_partial_dict_takes_the_dataclass_defaults_but_an_unknown_key_is_refused():
    params = train_toy(ToyConfig(steps=2, batch_size=8, hidden=8, depth=1, T=20), progress=False)["ema"]
    a = sample_from_params(params, {"T": 20, "hidden": 8, "depth": 1}, 7, seed=3)
    b = sample_from_params(params, ToyConfig(T=20, hidden=8, depth=1), 7, seed=3)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown field"):
        sample_from_params(params, {"T": 20, "temperature": 1.0}, 7)


def test_later_fields_fill_in_at_their_defaults_and_only_they():
    """A field added after checkpoints were saved (a class's LATER_FIELDS, its bases' too) may be
    missing from a saved config: its default is what those runs did.  Nothing else may."""
    for cfg in configs():
        cls = type(cfg)
        later = methods.later_fields(cls)
        assert {"P_mean", "P_std"} <= set(later)
        d = json.loads(json.dumps(cfg.to_dict()))
        old = {k: v for k, v in d.items() if k not in later}
        assert cls.from_dict(old) == cls.from_dict(d)
        assert methods.later_fields_filled(cls, old) == d
    ImageConfig = image_config_class()
    assert {"lr_decay", "ema_std"} <= set(methods.later_fields(ImageConfig))   # LoopConfig's, through the MRO


def test_edm_P_mean_keeps_the_noise_to_data_ratios_of_edm():
    from minidiff import edm
    assert edm.edm_P_mean(0.5) == -1.2
    for sigma_data in (0.25, 1.0, 3.7):     # ln(sigma / sigma_data) has the same law as for sigma_data = 0.5
        assert math.isclose(edm.edm_P_mean(sigma_data) - math.log(sigma_data), -1.2 - math.log(0.5))


def test_edm_training_noise_follows_P_mean_and_P_std():
    from minidiff.backend import generator
    for P_mean, P_std in ((-1.2, 1.2), (0.3, 0.5)):
        obj = methods.Objective(MethodConfig(method="edm", P_mean=P_mean, P_std=P_std))
        log_sigma = np.log(obj.draw(generator(0), (20000, 2), 0)["sigma"])
        assert abs(log_sigma.mean() - P_mean) < 0.03 and abs(log_sigma.std() - P_std) < 0.03


def test_config_from_dict_allows_missing_only_when_asked():
    @dataclasses.dataclass
    class C:
        a: int = 1
        b: int = 2
    assert config_from_dict(C, {"a": 5}, allow_missing=True) == C(5, 2)
    with pytest.raises(ValueError, match=r"missing field\(s\) \['b'\]"):
        config_from_dict(C, {"a": 5})


def _choices(parser, command, option):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if option in a.option_strings).choices)


def test_the_command_line_takes_its_choices_from_the_library():
    parser = build_parser()
    assert _choices(parser, "train", "--method") == methods.METHODS
    assert _choices(parser, "train", "--scheme") == methods.SCHEMES
    assert _choices(parser, "train", "--target") == TARGETS
    assert _choices(parser, "train", "--schedule") == methods.SCHEDULES
    assert _choices(parser, "train", "--metric") == methods.METRICS
    for command in ("sample", "eval"):
        assert set(_choices(parser, command, "--sampler")) == {s for v in SAMPLERS.values() for s in v}
