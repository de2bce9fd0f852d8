"""Every error of the `minidiff` command is one line on stderr and exit code 2, never a traceback,
and it is raised before any training or sampling starts: each option of each subcommand with a
bad value, checkpoints of another version or half-valid ones, operating-system errors."""
import argparse
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minidiff.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent

# A bad value for each option that takes a string (the typed ones get theirs from their type),
# as the argv that replaces [option, value], and what the error line must name.
FILE = "<a file>"
BAD_STRINGS = {
    "--out": ([FILE + "/sub"], "--out"),
    "--dest": ([FILE + "/sub"], "--dest"),
    "--ckpt": (["/nonexistent/ckpt"], "--ckpt"),
    "--teacher": (["/nonexistent/teacher", "--method", "cd"], "--teacher"),
    "--data-root": (["/nonexistent/data"], "--data-root"),
    "--device": (["bogus"], "--device"),
    "--autoencoder": (["/nonexistent/ae"], "--autoencoder"),
    "--inception-weights": (["/nonexistent/weights.pth"], "--inception-weights"),
    "--prompt": (["a dark ankle boot"], "--prompt"),          # none of the test checkpoints is text-conditioned
    "--prompt-file": (["/nonexistent/prompts.txt"], "--prompt-file"),
    "--layout": (["sneaker 2,2,26,26"], "--layout"),          # nor layout-conditioned
    "--url": (["ftp://example"], "--url"),
    "--hint": (["no_such_exercise"], "no_such_exercise"),
    "lesson": (["42"], "lesson"),
}


def _bad_values(action):
    """[(values, what the error names)] for one parser action; [] for flags."""
    name = action.option_strings[0] if action.option_strings else action.dest
    if action.nargs == 0 or isinstance(action, argparse._HelpAction):
        return []
    if action.choices is not None:
        return [(["2" if action.type is int else "bogus"], name)]
    type_name = getattr(action.type, "__name__", "")
    if type_name.startswith("integer >= "):
        lo = int(type_name.split(">= ")[1])
        return [([str(lo - 1)], name), (["1.5"], name)]
    if type_name == "number":
        return [(["nan"], name), (["-inf"], name), (["x"], name)]
    assert name in BAD_STRINGS, f"option {name} needs a bad value in BAD_STRINGS"
    return [BAD_STRINGS[name]]


def _subparsers():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices


IMAGE_ONLY = {a.option_strings[0] for a in _subparsers()["train"]._actions
              if a.dest in _subparsers()["train"].get_default("image_only").values()}


def _cases():
    """(subcommand, base, option, values, what) for every option of every subcommand; the bases
    are valid command lines, so that the bad value alone makes the error."""
    bases = {"demo": ["demo"], "train": ["train:2d", "train:images"], "sample": ["sample:2d", "sample:images"],
             "eval": ["eval"], "check": ["check"], "data": ["data"]}
    cases = []
    for command, parser in _subparsers().items():
        for action in parser._actions:
            for values, what in _bad_values(action):
                name = action.option_strings[0] if action.option_strings else action.dest
                for base in bases[command]:
                    if base == "train:2d" and name in IMAGE_ONLY:
                        continue                            # refused on 2-D runs whatever the value
                    cases.append(pytest.param(base, name, values, what, id=f"{base} {name} {' '.join(values)}"))
    return cases


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny 2-D DDPM and a tiny image EDM checkpoint (a few optimiser steps each)."""
    tmp = tmp_path_factory.mktemp("ckpts")
    assert main(["train", "--dataset", "8gaussians", "--steps", "3", "--T", "20", "--out", str(tmp / "toy")]) == 0
    assert main(["train", "--dataset", "digits", "--backend", "torch", "--preset", "tiny", "--steps", "2",
                 "--sample-every", "0", "--out", str(tmp / "img")]) == 0
    (tmp / "a-file").write_text("not a folder")
    return tmp


def _base(base, tmp, ckpts):
    out = str(tmp / "out")
    return {"demo": ["demo", "--max-seconds", "1", "--n", "10", "--out", out],
            "train:2d": ["train", "--dataset", "8gaussians", "--steps", "2", "--T", "20", "--out", out],
            "train:images": ["train", "--dataset", "digits", "--backend", "torch", "--preset", "tiny", "--steps",
                             "2", "--out", out],
            "sample:2d": ["sample", "--ckpt", str(ckpts / "toy"), "--n", "10"],
            "sample:images": ["sample", "--ckpt", str(ckpts / "img"), "--n", "2"],
            "eval": ["eval", "--ckpt", str(ckpts / "img"), "--n", "4", "--n-reference", "4"],
            "check": ["check", "03"],
            "data": ["data", "fashion-mnist", "--no-apt"]}[base]


def _run(argv, capsys):
    """(exit code, stderr) of main(argv) in this process."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _assert_one_line(code, err, what):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("minidiff")
    assert what in lines[0], lines[0]


@pytest.mark.parametrize("base, name, values, what", _cases())
def test_a_bad_value_of_each_option_is_one_line_and_exit_2(base, name, values, what, checkpoints, tmp_path, capsys):
    values = [v.replace(FILE, str(checkpoints / "a-file")) for v in values]
    argv = _base(base, tmp_path, checkpoints)
    if name in argv:                                    # replace the base's own value of this option
        i = argv.index(name)
        argv = argv[:i] + argv[i + 2:]
    if name == "lesson":
        argv = [argv[0], *values]
    elif name == "dataset" and base == "data":
        argv = ["data", *values]
    else:
        argv = argv + [name, *values]
    code, err = _run(argv, capsys)
    _assert_one_line(code, err, what)
    assert not (tmp_path / "out").exists()             # refused before anything was written


@pytest.mark.parametrize("option", sorted(IMAGE_ONLY))
def test_image_only_options_are_refused_on_2d_runs(option, tmp_path, capsys):
    action = next(a for a in _subparsers()["train"]._actions if option in a.option_strings)
    value = [] if action.nargs == 0 else {"--preset": ["tiny"], "--channels": ["1"], "--device": ["cpu"],
                                          "--data-root": [str(tmp_path)], "--model": ["autoencoder"],
                                          "--reg": ["vq"], "--factor": ["2"], "--autoencoder": [str(tmp_path)],
                                          "--condition": ["text"], "--augment": ["0.2"],
                                          "--ema-std": ["0.1"]}.get(option, ["3"])
    code, err = _run(["train", "--dataset", "8gaussians", "--steps", "2", "--out", str(tmp_path / "o"), option,
                      *value], capsys)
    _assert_one_line(code, err, option)
    assert "image" in err


def test_steps_with_the_ancestral_sampler_is_refused_unless_it_is_T(checkpoints, capsys):
    ckpt = str(checkpoints / "toy")
    code, err = _run(["sample", "--ckpt", ckpt, "--sampler", "ddpm", "--steps", "5", "--out",
                      str(checkpoints / "s")], capsys)
    _assert_one_line(code, err, "--steps")
    assert main(["sample", "--ckpt", ckpt, "--sampler", "ddpm", "--steps", "20", "--n", "10", "--out",
                 str(checkpoints / "s")]) == 0


def test_options_of_another_sampler_are_refused(checkpoints, capsys):
    code, err = _run(["sample", "--ckpt", str(checkpoints / "toy"), "--sampler", "ddim", "--churn", "1"], capsys)
    _assert_one_line(code, err, "--churn")


def _toy_copy(checkpoints, tmp_path, edit_state=None, edit_arrays=None):
    """A copy of the 2-D checkpoint with its state or arrays edited and a fresh, valid digest
    (what a buggy or newer writer would produce), so the loader's checks past the digest run."""
    from minidiff import checkpoint

    dst = tmp_path / "toy"
    dst.mkdir()
    arrays, state = checkpoint.read_toy_checkpoint(checkpoints / "toy")
    if edit_state:
        edit_state(state)
    if edit_arrays:
        edit_arrays(arrays)
    text = json.dumps(state, sort_keys=True)
    digest = checkpoint._array_digest(arrays, text)
    members = {**arrays, "__state__": np.frombuffer(text.encode(), np.uint8),
               "__sha256__": np.frombuffer(digest.encode(), np.uint8)}
    with open(dst / "model.npz", "wb") as f:
        checkpoint._write_npz(f, members)
    return dst


HALF_VALID_TOY = {
    "no config": (lambda s: s.pop("config"), None, "'config'"),
    "config not a dict": (lambda s: s.update(config=[1, 2]), None, "'config'"),
    "a newer version's field": (lambda s: s["config"].update(new_field=1), None, "new_field"),
    "an older version's config": (lambda s: s["config"].pop("t_dim"), None, "t_dim"),
    "unknown method": (lambda s: s["config"].update(method="flow"), None, "flow"),
    "missing bias": (None, lambda a: a.pop("ema.1.b"), "ema.1.b"),
    "transposed weights": (None, lambda a: a.update({"ema.0.W": a["ema.0.W"].T.copy()}), "ema.0"),
    "missing layer": (None, lambda a: [a.pop(k) for k in ("ema.3.W", "ema.3.b")], "layers"),
}


@pytest.mark.parametrize("case", sorted(HALF_VALID_TOY))
def test_half_valid_2d_checkpoints_are_named_errors(case, checkpoints, tmp_path, capsys):
    edit_state, edit_arrays, what = HALF_VALID_TOY[case]
    ckpt = _toy_copy(checkpoints, tmp_path, edit_state, edit_arrays)
    code, err = _run(["sample", "--ckpt", str(ckpt), "--n", "10"], capsys)
    _assert_one_line(code, err, what)
    assert not (ckpt / "samples.npy").exists()
    # the same checkpoint as a consistency-distillation teacher: refused before training
    code, err = _run(["train", "--dataset", "8gaussians", "--method", "cd", "--teacher", str(ckpt), "--steps", "2",
                      "--out", str(tmp_path / "cd")], capsys)
    _assert_one_line(code, err, what)
    assert not (tmp_path / "cd").exists()


HALF_VALID_IMAGE = {
    "no config": (lambda s: s.pop("config"), None, "'config'"),
    "a newer version's field": (lambda s: s["config"].update(new_field=1), None, "new_field"),
    "an older version's unet": (lambda s: s["config"]["unet"].pop("groups"), None, "groups"),
    "unknown method": (lambda s: s["config"].update(method="flow"), None, "flow"),
    "missing weights": (None, lambda t: t.pop(next(k for k in sorted(t) if k.startswith("ema."))), "ema"),
    "transposed weights": (None, lambda t: t.update({k: t[k].transpose(0, 1).contiguous() for k in t
                                                     if k.startswith("ema.") and t[k].ndim == 2
                                                     and t[k].shape[0] != t[k].shape[1]}), "ema"),
}


@pytest.mark.parametrize("case", sorted(HALF_VALID_IMAGE))
def test_half_valid_image_checkpoints_are_named_errors(case, checkpoints, tmp_path, capsys):
    from minidiff.checkpoint import load_image_checkpoint, save_image_checkpoint

    edit_state, edit_tensors, what = HALF_VALID_IMAGE[case]
    tensors, state = load_image_checkpoint(checkpoints / "img")
    (edit_state or (lambda s: None))(state)
    (edit_tensors or (lambda t: None))(tensors)
    save_image_checkpoint(tmp_path / "img", tensors, state)    # a valid digest over the damaged content
    for argv in (["sample", "--ckpt", str(tmp_path / "img"), "--n", "2"],
                 ["eval", "--ckpt", str(tmp_path / "img"), "--n", "4", "--n-reference", "4"]):
        code, err = _run(argv, capsys)
        _assert_one_line(code, err, what)
    assert not (tmp_path / "img" / "grid.png").exists()


def test_disk_full_while_saving_is_one_line(tmp_path, capsys, monkeypatch):
    from minidiff import checkpoint

    def full(path, write):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint, "_atomic_write", full)
    code, err = _run(["train", "--dataset", "8gaussians", "--steps", "2", "--T", "20", "--out", str(tmp_path)], capsys)
    progress = "it/s]"                                 # training ran: its progress bar is on stderr too
    _assert_one_line(code, "\n".join(line for line in err.splitlines() if progress not in line),
                     "No space left on device")


def test_a_broken_image_in_a_dataset_folder_is_one_line(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "data").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "data" / "good.png")
    (tmp_path / "data" / "broken.png").write_bytes(b"not a png")
    code, err = _run(["train", "--dataset", "folder", "--backend", "torch", "--preset", "tiny", "--data-root",
                      str(tmp_path / "data"), "--image-size", "8", "--steps", "2", "--out", str(tmp_path / "o")],
                     capsys)
    _assert_one_line(code, err, "broken.png")


def test_data_root_without_the_files_is_refused_not_replaced(tmp_path):
    from minidiff.data.images import load_images

    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_images("fashion-mnist", "test", root=tmp_path)        # never falls back to the Debian folder
    with pytest.raises(ValueError, match="root"):
        load_images("digits", root=tmp_path)


def test_devices_the_machine_lacks_are_value_errors_naming_them():
    import torch

    from minidiff.torch.loop import pick_device

    for name in ("bogus", "cuda:99", *(() if torch.cuda.is_available() else ("cuda",))):
        with pytest.raises(ValueError, match=name.split(":")[0]):
            pick_device(name)
    assert pick_device("cpu").type == "cpu"


@pytest.mark.parametrize("argv", [["train", "--n", "0"], ["train", "--dataset", "8gaussians", "--lr", "inf"],
                                  ["sample", "--ckpt", "IMG", "--device", "cuda:99"], ["check", "42"],
                                  ["sample", "--ckpt", "BROKEN"]], ids=" ".join)
def test_the_command_itself_prints_one_line_and_exits_2(argv, checkpoints, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text(json.dumps({"format": "minidiff-toy-v1", "step": 1}))
    np.savez(broken / "model.npz", x=np.zeros(1))
    argv = [{"IMG": str(checkpoints / "img"), "BROKEN": str(broken)}.get(a, a) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "minidiff.cli", *argv], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr


def test_an_out_folder_that_cannot_be_written_is_refused_before_training(tmp_path, capsys, monkeypatch):
    import minidiff.cli

    monkeypatch.setattr(minidiff.cli.os, "access", lambda path, mode: False)   # as a read-only folder reads
    code, err = _run(["train", "--dataset", "8gaussians", "--steps", "2", "--out", str(tmp_path / "o")], capsys)
    _assert_one_line(code, err, "--out")
    assert "cannot write" in err and "it/s" not in err                 # no training started


@pytest.mark.parametrize("field, value", [("lr", float("nan")), ("lr", float("inf")), ("max_seconds", -1.0),
                                          ("max_seconds", float("nan")), ("clip", float("inf")), ("clip", -1.0)])
def test_toy_config_refuses_non_finite_and_negative_values(field, value):
    from minidiff.train import ToyConfig

    with pytest.raises(ValueError, match=field):
        ToyConfig(**{field: value}).validate()


def test_an_existing_out_file_is_rewritten(checkpoints, tmp_path):
    """An existing --out file (the last grid.png, eval.json) is rewritten, not refused as 'a file'."""
    out = tmp_path / "grid.png"
    argv = ["sample", "--ckpt", str(checkpoints / "img"), "--n", "4", "--steps", "2", "--out", str(out)]
    assert main(argv) == 0 and main(argv) == 0


@pytest.mark.parametrize("option", ["--P-mean", "--P-std"])
def test_diffusion_noise_options_are_refused_on_an_autoencoder_run(option, tmp_path, capsys):
    pytest.importorskip("torch")
    code, err = _run(["train", "--backend", "torch", "--model", "autoencoder", "--dataset", "digits",
                      "--preset", "tiny", "--out", str(tmp_path / "ae"), option, "0.5"], capsys)
    _assert_one_line(code, err, option)
    assert not (tmp_path / "ae").exists()
