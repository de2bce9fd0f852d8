"""Checkpoints under faults: 2-D runs save periodically and resume exactly (also after kill -9),
one writer per run folder, temp files of a killed run cleaned up, the user's umask, the same run
giving the same bytes, and loading that is bounded (no FIFO, device or bomb gets read)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minidiff import checkpoint
from minidiff.train import ToyConfig, train_toy

ROOT = Path(__file__).resolve().parents[1]


def small(**kw):
    return ToyConfig(**{"steps": 30, "batch_size": 32, "hidden": 16, "depth": 2, "T": 50, "ckpt_every": 10, **kw})


class Interrupt(Exception):
    pass


def stop_at(step):
    def callback(k, loss):
        if k == step:
            raise Interrupt
    return callback


def arrays_of(folder):
    arrays, state = checkpoint.read_toy_checkpoint(folder)
    return arrays, state


@pytest.mark.parametrize("method", ["ddpm", "ct"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_an_interrupted_2d_run_resumes_to_the_uninterrupted_weights(tmp_path, method, backend):
    if backend == "torch":
        pytest.importorskip("minidiff.torch")     # importing it registers the 2-D torch backend
    cfg = small(method=method, backend=backend)
    train_toy(cfg, progress=False, out=tmp_path / "a")
    with pytest.raises(Interrupt):
        train_toy(cfg, progress=False, out=tmp_path / "b", callback=stop_at(14))
    assert arrays_of(tmp_path / "b")[1]["step"] == 10                        # the last periodic checkpoint
    result = train_toy(cfg, progress=False, out=tmp_path / "b", resume=True, log=lambda *_: None)
    a, sa = arrays_of(tmp_path / "a")
    b, sb = arrays_of(tmp_path / "b")
    assert sb["step"] == 30 and result["steps"] == 30 and set(a) == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)              # weights, EMA, optimiser, target, losses


def test_resume_refuses_another_run_and_an_empty_folder_starts_fresh(tmp_path):
    train_toy(small(), progress=False, out=tmp_path)
    with pytest.raises(ValueError, match=r"cannot resume .* differs in \['lr'\]"):
        train_toy(small(lr=1e-3), progress=False, out=tmp_path, resume=True)
    said = []
    train_toy(small(steps=5), progress=False, out=tmp_path / "new", resume=True, log=said.append)
    assert "no checkpoint" in said[0] and arrays_of(tmp_path / "new")[1]["step"] == 5


def test_kill_9_then_resume_a_2d_run_from_the_command_line(tmp_path):
    args = ["train", "--dataset", "swiss_roll", "--steps", "1200", "--batch-size", "64", "--ckpt-every", "50",
            "--seed", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def cli(*a):
        return subprocess.run([sys.executable, "-m", "minidiff.cli", *a], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)

    assert cli(*args, "--out", str(tmp_path / "straight")).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "minidiff.cli", *args, "--out", str(tmp_path / "killed")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen, deadline = 0, time.time() + 120
    while seen < 200 and proc.poll() is None and time.time() < deadline:
        try:
            seen = arrays_of(tmp_path / "killed")[1]["step"]                  # the moment, from the checkpoint
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    step = arrays_of(tmp_path / "killed")[1]["step"]
    assert seen <= step < 1200 and step % 50 == 0
    r = cli(*args, "--out", str(tmp_path / "killed"), "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming from {tmp_path / 'killed'} at step {step}" in r.stdout + r.stderr
    a, b = arrays_of(tmp_path / "straight")[0], arrays_of(tmp_path / "killed")[0]
    assert all(np.array_equal(a[k], b[k]) for k in a), "kill -9 + --resume does not end at the uninterrupted weights"


def test_two_runs_on_one_folder_are_refused_naming_the_holder(tmp_path):
    with checkpoint.RunLock(tmp_path):
        with pytest.raises(ValueError, match=rf"another minidiff run \(pid {os.getpid()}\) is writing to"):
            train_toy(small(steps=2), progress=False, out=tmp_path)
    train_toy(small(steps=2), progress=False, out=tmp_path)                  # released: the next run may write


def test_a_killed_writer_leaves_a_lock_the_next_run_takes(tmp_path):
    code = ("import sys, time; from minidiff import checkpoint; l = checkpoint.RunLock(sys.argv[1]).__enter__(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match=rf"pid {proc.pid}"):
        checkpoint.RunLock(tmp_path).__enter__()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with checkpoint.RunLock(tmp_path):                                      # the kernel released it
        pass


def test_temp_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    leftover = tmp_path / f"model.npzab12{checkpoint.TEMP_SUFFIX}"
    leftover.write_bytes(b"half a checkpoint")
    train_toy(small(steps=2), progress=False, out=tmp_path)
    assert not leftover.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "model.npz", "state.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_checkpoints_follow_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        train_toy(small(steps=2), progress=False, out=tmp_path)
    finally:
        os.umask(old)
    for name in ("model.npz", "state.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_state_json_never_lags_and_names_its_checkpoint(tmp_path, monkeypatch):
    """state.json is written first; if the checkpoint write then dies, state.json is ahead, never behind."""
    train_toy(small(steps=10), progress=False, out=tmp_path)
    _, state = arrays_of(tmp_path)
    human = json.loads((tmp_path / "state.json").read_text())
    assert human["step"] == state["step"] == 10
    with np.load(tmp_path / "model.npz") as z:
        assert human["sha256"] == z["__sha256__"].tobytes().decode()

    def dies(f, arrays):
        raise OSError("killed mid-write")

    monkeypatch.setattr(checkpoint, "_write_npz", dies)
    with pytest.raises(OSError):
        train_toy(small(steps=20), progress=False, out=tmp_path, resume=True, log=lambda *_: None)
    assert json.loads((tmp_path / "state.json").read_text())["step"] >= arrays_of(tmp_path)[1]["step"]


def test_the_same_2d_run_gives_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        train_toy(small(steps=5), progress=False, out=tmp_path / name)
    assert (tmp_path / "a" / "model.npz").read_bytes() == (tmp_path / "b" / "model.npz").read_bytes()


def test_the_same_image_run_gives_the_same_bytes(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from minidiff.torch.train import ImageConfig, train_images

    for name in ("a", "b"):
        train_images(ImageConfig.from_preset("tiny", dataset="digits", steps=3, sample_every=0), tmp_path / name,
                     progress=False)
    assert (tmp_path / "a" / "checkpoint.safetensors").read_bytes() == \
        (tmp_path / "b" / "checkpoint.safetensors").read_bytes()


# ----------------------------------------------------------------------------------------------
# Bounded loading.

def _refused_within(seconds, fn, match):
    """``fn`` raises ValueError(match) and does not block."""
    out = {}

    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "loading blocked"
    assert isinstance(out.get("e"), ValueError) and match in str(out["e"]), out.get("e")


def test_a_fifo_or_a_device_in_place_of_a_checkpoint_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "model.npz")
    _refused_within(10, lambda: checkpoint.load_toy_checkpoint(tmp_path), "not a regular file")
    (tmp_path / "zero").mkdir()
    os.symlink("/dev/zero", tmp_path / "zero" / "model.npz")
    _refused_within(10, lambda: checkpoint.load_toy_checkpoint(tmp_path / "zero"), "not a regular file")
    pytest.importorskip("safetensors")
    os.mkfifo(tmp_path / "checkpoint.safetensors")
    _refused_within(10, lambda: checkpoint.load_image_checkpoint(tmp_path), "not a regular file")


def test_an_npy_header_declaring_a_huge_shape_is_refused_before_allocating(tmp_path):
    header = {"descr": "<f8", "fortran_order": False, "shape": (2 ** 28, 2)}
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(tmp_path / "model.npz", "w") as z:
        z.writestr("params.0.W.npy", buf.getvalue() + b"\0" * 64)
    with pytest.raises(ValueError, match=r"declares shape \(268435456, 2\)"):
        checkpoint.load_toy_checkpoint(tmp_path)


def test_a_deflate_bomb_is_refused_by_its_size(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "MAX_TOY_BYTES", 1 << 20)
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros(1 << 19))                       # 4 MB of zeros, deflated to a few kB
    with zipfile.ZipFile(tmp_path / "model.npz", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("params.0.W.npy", buf.getvalue())
    assert (tmp_path / "model.npz").stat().st_size < 50_000
    with pytest.raises(ValueError, match="uncompressed: refused"):
        checkpoint.load_toy_checkpoint(tmp_path)


def test_an_image_checkpoint_asking_for_a_huge_unet_is_refused(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    from minidiff.torch.train import ImageConfig, model_from_checkpoint, train_images

    train_images(ImageConfig.from_preset("tiny", dataset="digits", steps=1, sample_every=0), tmp_path, progress=False)
    tensors, state = checkpoint.load_image_checkpoint(tmp_path)
    state["config"]["unet"]["image_size"] = 10 ** 6                        # self-consistent: a fresh digest
    checkpoint.save_image_checkpoint(tmp_path / "huge", tensors, state)
    with pytest.raises(ValueError, match="image_size must be at most"):
        model_from_checkpoint(tmp_path / "huge")
