"""The `minidiff` command end to end on tiny runs: train, sample (several samplers), errors."""
import argparse
import json

import numpy as np
import pytest

from minidiff.cli import main


def test_train_then_sample_with_each_sampler(tmp_path, capsys):
    out = tmp_path / "ddpm"
    assert main(["train", "--dataset", "8gaussians", "--steps", "20", "--T", "50", "--out", str(out), "--n", "200"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["n"] == 200 and report["sliced_wasserstein"] > 0 and report["data_floor"] > 0
    for args in (["--sampler", "ddim", "--steps", "10", "--eta", "0.5"], ["--sampler", "heun", "--steps", "5"],
                 ["--gif"]):
        assert main(["sample", "--ckpt", str(out), "--n", "100", *args]) == 0
    assert np.load(out / "samples.npy").shape == (100, 2)
    assert (out / "reverse.gif").exists() and (out / "samples.png").exists()


def test_edm_and_consistency_from_the_command_line(tmp_path):
    teacher = tmp_path / "edm"
    assert main(["train", "--dataset", "8gaussians", "--method", "edm", "--steps", "10", "--out", str(teacher)]) == 0
    assert main(["sample", "--ckpt", str(teacher), "--n", "50", "--sampler", "stochastic", "--steps", "4",
                 "--churn", "5"]) == 0
    student = tmp_path / "cd"
    assert main(["train", "--dataset", "8gaussians", "--method", "cd", "--teacher", str(teacher), "--steps", "5",
                 "--out", str(student)]) == 0
    assert main(["sample", "--ckpt", str(student), "--n", "50", "--steps", "2", "--tau", "0.5"]) == 0


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["sample", "--ckpt", str(tmp_path / "missing"), "--n", "10"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    out = tmp_path / "ddpm"
    main(["train", "--dataset", "8gaussians", "--steps", "5", "--T", "20", "--out", str(out)])
    assert main(["sample", "--ckpt", str(out), "--sampler", "consistency"]) == 2
    assert "sampler" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "swissroll"])


def _subcommands():
    from minidiff.cli import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


@pytest.mark.parametrize("argv", [[]] + [[name] for name in _subcommands()], ids=lambda a: " ".join(a) or "minidiff")
def test_help_of_every_subcommand(argv, capsys):
    """argparse formats help strings with %: a bare one (e.g. '10% dropped') crashes --help."""
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: minidiff" + "".join(" " + a for a in argv)) and len(out.splitlines()) > 3
