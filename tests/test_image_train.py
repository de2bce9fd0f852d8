"""The image trainer (minidiff.torch.train): every method trains, checkpoints resume exactly (also
after kill -9), two gloo processes agree with one process on the doubled batch, bad input and
damaged checkpoints give clear errors.  All on scikit-learn's 8x8 digits with the 'tiny' preset."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("sklearn")

from minidiff.checkpoint import load_image_checkpoint, save_image_checkpoint  # noqa: E402
from minidiff.torch.loop import batch_indices  # noqa: E402
from minidiff.torch.sampling import sample_images  # noqa: E402
from minidiff.torch.train import ImageConfig, model_from_checkpoint, train_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw):
    return ImageConfig.from_preset("tiny", **{"dataset": "digits", "sample_every": 0, **kw})


def weights(folder):
    tensors, state = load_image_checkpoint(folder)
    return tensors, state


def cli(*args, env=None, **kw):
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "minidiff.cli", *args], cwd=ROOT, env=e, capture_output=True,
                          text=True, **kw)


@pytest.fixture(scope="module")
def edm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("edm")
    result = train_images(tiny(steps=40, lr=2e-3), out, progress=False)
    return out, result


def test_edm_training_lowers_the_loss_and_writes_a_checkpoint(edm_run):
    out, result = edm_run
    assert result["steps"] == 40 and len(result["losses"]) == 40
    assert np.mean(result["losses"][-8:]) < 0.85 * np.mean(result["losses"][:3])
    tensors, state = weights(out)
    assert state["step"] == 40 and state["config"]["method"] == "edm"
    assert any(k.startswith("ema.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
    assert json.loads((out / "state.json").read_text())["step"] == 40      # the human-readable copy


@pytest.mark.parametrize("method", ["ddpm", "ct", "ict"])
def test_other_methods_train(tmp_path, method):
    result = train_images(tiny(method=method, steps=4), tmp_path, progress=False)
    assert result["steps"] == 4 and np.all(np.isfinite(result["losses"]))
    net, config = model_from_checkpoint(tmp_path)                        # default sampler: DDIM / consistency
    x = sample_images(net, config, 3, steps=3)
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()


def test_consistency_distillation_from_an_edm_teacher(edm_run, tmp_path):
    teacher, _ = edm_run
    result = train_images(tiny(method="cd", teacher=str(teacher), steps=3), tmp_path, progress=False)
    assert np.all(np.isfinite(result["losses"]))
    tensors, _ = weights(tmp_path)
    assert any(k.startswith("target.") for k in tensors)
    net, config = model_from_checkpoint(tmp_path)
    x = sample_images(net, config, 5, steps=2)
    assert x.shape == (5, 1, 8, 8) and torch.isfinite(x).all()


@pytest.mark.parametrize("sampler,steps", [("heun", 4), ("euler", 4), ("stochastic", 4)])
def test_samplers_drive_the_unet(edm_run, sampler, steps):
    out, _ = edm_run
    net, config = model_from_checkpoint(out)
    a = sample_images(net, config, 6, sampler=sampler, steps=steps, seed=1, batch_size=4)
    b = sample_images(net, config, 6, sampler=sampler, steps=steps, seed=1, batch_size=4)
    assert a.shape == (6, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b)                                             # same seed, same numbers


def test_batches_walk_a_permutation_per_epoch():
    seen = np.concatenate([batch_indices(100, 10, seed=3, k=k) for k in range(10)])
    assert sorted(seen) == list(range(100))                              # epoch 0: every image once
    assert not np.array_equal(batch_indices(100, 10, 3, 10), batch_indices(100, 10, 3, 0))


@pytest.mark.parametrize("method,extra", [("edm", {}), ("ct", {}), ("edm", {"augment": 0.5}),  # augment: its draws
                                          ("edm", {"ema_std": 0.1, "lr_decay": 3})],         # EDM2's schedules
                         ids=["edm", "ct", "edm-augment", "edm-power-ema"])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, method, extra):
    kw = dict(method=method, steps=10, ckpt_every=3, unet=dict(dropout=0.1), **extra)   # dropout: its RNG must resume too
    train_images(tiny(**kw), tmp_path / "a", progress=False)
    train_images(tiny(**kw, max_seconds=1e-9), tmp_path / "b", progress=False)  # stops (and saves) after step 1
    assert weights(tmp_path / "b")[1]["step"] == 1
    train_images(tiny(**kw), tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    a, _ = weights(tmp_path / "a")
    b, state = weights(tmp_path / "b")
    assert state["step"] == 10 and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


# The loop's guarantees hold for any model it trains: the U-Net through the CLI, the small
# denoising MLP of tests/loop_models.py and the autoencoders through the same train_loop.
LOOP_MODELS = {
    "unet": ["-m", "minidiff.cli", "train", "--backend", "torch", "--dataset", "digits", "--preset", "tiny",
             "--sample-every", "0", "--device", "cpu"],
    "mlp": [str(ROOT / "tests" / "loop_models.py")],
    # the VQ autoencoder with dead-code restarts every 3 steps and a PatchGAN from step 2: its EMA
    # codebook, code histogram and restart candidates see every rank's z_e and indices (all-gathered);
    # the discriminator's weights and its own optimiser resume, its gradients and the adaptive
    # weight's are averaged over the ranks (one model for both, to keep CI's time)
    "autoencoder-vq-gan": ["-m", "minidiff.torch.train_autoencoder", "--reg", "vq", "--restart-every", "3",
                           "--disc-weight", "0.5", "--disc-start", "2"],
}
NO_DROPOUT = {"unet": [], "mlp": ["--dropout", "0"],   # the tiny U-Net has none; each rank draws its own masks
              "autoencoder-vq-gan": []}
# kill -9: the KL autoencoder (resumed in tests/test_autoencoder.py) adds nothing the VQ + GAN one does not.  Two gloo
# processes (CI's time): the U-Net, and the VQ + GAN autoencoder for a model that is not a U-Net,
# with its all-gathers and second optimiser; the MLP and the KL autoencoder use nothing of the
# loop's multi-process code that these two do not.
KILL_MODELS = ["mlp", "unet", "autoencoder-vq-gan"]
GLOO_MODELS = ["unet", "autoencoder-vq-gan"]


def checkpoint_step(folder) -> int:
    """The step of the checkpoint in ``folder`` (0 while there is none)."""
    try:
        return weights(folder)[1]["step"]
    except (FileNotFoundError, ValueError):
        return 0


def loop_command(model, *args):
    return [*LOOP_MODELS[model], *args]


def run_loop(model, *args, **kw):
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *loop_command(model, *args)], cwd=ROOT, env=e, capture_output=True,
                          text=True, **kw)


@pytest.mark.parametrize("model", KILL_MODELS)
def test_kill_9_then_resume_ends_at_the_same_weights(tmp_path, model):
    args = ["--steps", "60", "--ckpt-every", "5", "--seed", "7"]
    straight = run_loop(model, *args, "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, *loop_command(model, *args, "--out", str(tmp_path / "killed"))],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, seen = time.time() + 120, 0
    while time.time() < deadline and proc.poll() is None and seen < 15:
        seen = checkpoint_step(tmp_path / "killed")      # the moment is read from the checkpoint itself
        time.sleep(0.01)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, state = weights(tmp_path / "killed")               # the last complete checkpoint, intact
    assert seen <= state["step"] < 60 and state["step"] % 5 == 0
    r = run_loop(model, *args, "--out", str(tmp_path / "killed"), "--resume")
    assert r.returncode == 0, r.stderr
    assert f"resuming from {tmp_path / 'killed'} at step {state['step']}" in r.stdout + r.stderr
    a, _ = weights(tmp_path / "straight")
    b, end = weights(tmp_path / "killed")
    assert end["step"] == 60 and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a), "kill -9 + --resume does not end at the uninterrupted weights"


@pytest.mark.parametrize("model", GLOO_MODELS)
def test_two_gloo_processes_match_one_process_on_the_doubled_batch(tmp_path, model):
    common = ["--steps", "4", "--ckpt-every", "4", *NO_DROPOUT[model]]
    one = run_loop(model, *common, "--batch-size", "16", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *loop_command(model, *common, "--batch-size", "8", "--out", str(tmp_path / "two"))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    zero = run_loop(model, "--steps", "1", "--ckpt-every", "1", "--batch-size", "16", "--lr", "1e-12", "--warmup", "1",
                    "--out", str(tmp_path / "zero"))
    a, _ = weights(tmp_path / "one")
    b, _ = weights(tmp_path / "two")
    for k in a:
        if k.startswith(("model.", "disc.")):
            np.testing.assert_allclose(b[k].numpy(), a[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)
    assert zero.returncode == 0, zero.stderr
    z, _ = weights(tmp_path / "zero")                                     # (nearly) the initial weights
    moved = max(float((a[k] - z[k]).abs().max()) for k in a if k.startswith("model.") and a[k].is_floating_point())
    assert moved > 1e-4                                                   # the comparison is not of two no-ops


# ----------------------------------------------------------------------------------------------
# Bad input and damaged checkpoints.

def test_wrong_image_size_for_the_model_is_named(tmp_path):
    with pytest.raises(ValueError, match="image_size"):
        train_images(tiny(unet=dict(image_size=16)), tmp_path, progress=False)


def test_edm2_schedules_reach_the_optimiser_and_the_ema(tmp_path):
    cfg = tiny(steps=10, warmup=0, lr=2e-3, lr_decay=2, ema_std=0.1)
    train_images(cfg, tmp_path / "a", progress=False)
    tensors, state = weights(tmp_path / "a")
    assert math.isclose(state["optimizer"]["param_groups"][0]["lr"], 2e-3 / math.sqrt(9 / 2))   # step k = 9
    train_images(tiny(steps=1, ema_std=0.1), tmp_path / "one", progress=False)
    t1, _ = weights(tmp_path / "one")
    names = [k[len("model."):] for k in t1 if k.startswith("model.")]
    assert names and all(torch.equal(t1[f"model.{n}"], t1[f"ema.{n}"]) for n in names)   # step 0 copies
    train_images(tiny(steps=1), tmp_path / "fixed", progress=False)                      # the fixed EMA does not
    t2, _ = weights(tmp_path / "fixed")
    assert not all(torch.equal(t2[f"model.{n}"], t2[f"ema.{n}"]) for n in names)


def test_a_checkpoint_from_before_later_fields_loads_and_resumes(edm_run, tmp_path):
    """Fields added since (LoopConfig.LATER_FIELDS, UNetConfig.LATER_FIELDS) take their defaults, which
    are what the older runs did; any other missing field is still refused."""
    out, _ = edm_run
    tensors, state = load_image_checkpoint(out)
    for k in ("lr_decay", "ema_std", "P_mean", "P_std"):
        del state["config"][k]
    del state["config"]["unet"]["pooled_context"]
    save_image_checkpoint(tmp_path / "old", tensors, state)
    model_from_checkpoint(tmp_path / "old")
    train_images(tiny(steps=41, lr=2e-3), tmp_path / "old", resume=True, progress=False, log=lambda *_: None)
    assert weights(tmp_path / "old")[1]["step"] == 41
    del state["config"]["lr"]
    save_image_checkpoint(tmp_path / "broken", tensors, state)
    with pytest.raises(ValueError, match=r"missing field\(s\) \['lr'\]"):
        model_from_checkpoint(tmp_path / "broken")


@pytest.mark.parametrize("field,value,match", [("dataset", "cifar", "dataset must be one of"),
                                               ("ema_std", 0.3, r"ema_std must be .* in \[0, 0.2887\)"),
                                               ("lr_decay", -1, "lr_decay"),
                                               ("method", "gan", "method must be one of"),
                                               ("lr", -1.0, "lr must be a finite number > 0"),
                                               ("batch_size", 0, "batch_size")])
def test_bad_config_is_named(tmp_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        train_images(tiny(**{field: value}), tmp_path, progress=False)


def test_cd_needs_an_edm_teacher(tmp_path):
    with pytest.raises(ValueError, match="teacher"):
        tiny(method="cd").validate()
    train_images(tiny(method="ddpm", steps=1), tmp_path / "ddpm", progress=False)
    with pytest.raises(ValueError, match="must be an 'edm' model"):
        train_images(tiny(method="cd", teacher=str(tmp_path / "ddpm"), steps=1), tmp_path / "cd", progress=False)


def test_resume_with_another_architecture_is_refused(edm_run, tmp_path):
    out, _ = edm_run
    import shutil
    shutil.copytree(out, tmp_path / "run")
    with pytest.raises(ValueError, match=r"cannot resume .* differs in \['unet'\]"):
        train_images(tiny(steps=41, lr=2e-3, unet=dict(base_channels=8)), tmp_path / "run", resume=True,
                     progress=False)


def test_a_checkpoint_of_another_architecture_is_refused(edm_run, tmp_path):
    out, _ = edm_run
    tensors, state = load_image_checkpoint(out)
    state["config"]["unet"]["base_channels"] = 8          # a consistent file whose weights do not fit it
    save_image_checkpoint(tmp_path, tensors, state)
    with pytest.raises(ValueError, match="different architecture"):
        model_from_checkpoint(tmp_path)


def test_truncated_and_tampered_checkpoints_are_refused(edm_run, tmp_path):
    out, _ = edm_run
    blob = (out / "checkpoint.safetensors").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "checkpoint.safetensors").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="unreadable"):
        model_from_checkpoint(tmp_path / "cut")
    changed = bytearray(blob)
    changed[-10] ^= 0x01                                   # one bit of one weight
    (tmp_path / "bit").mkdir()
    (tmp_path / "bit" / "checkpoint.safetensors").write_bytes(bytes(changed))
    with pytest.raises(ValueError, match="sha256"):
        model_from_checkpoint(tmp_path / "bit")
    with pytest.raises(FileNotFoundError, match="no image checkpoint"):
        model_from_checkpoint(tmp_path / "nothing")


def test_checkpoint_file_holds_no_pickle(edm_run):
    out, _ = edm_run
    head = (out / "checkpoint.safetensors").read_bytes()[:64]
    assert b"\x80\x04" not in head and b"\x80\x02" not in head       # safetensors: a JSON header, raw bytes


def test_cli_train_sample_and_errors(edm_run, tmp_path):
    out, _ = edm_run
    r = cli("sample", "--ckpt", str(out), "--n", "9", "--steps", "3", "--out", str(tmp_path / "g.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.png").stat().st_size > 100
    r = cli("train", "--dataset", "digits", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "--backend torch" in r.stderr
    r = cli("sample", "--ckpt", str(out), "--sampler", "consistency")
    assert r.returncode == 2 and "sampler (for a 'edm' model) must be one of" in r.stderr


def test_cli_eval_reports_fd_and_kid_on_classifier_features(tmp_path, capsys):
    from minidiff.cli import main

    run = tmp_path / "fm"
    train_images(ImageConfig.from_preset("tiny", dataset="fashion-mnist", limit=256, steps=3, sample_every=0), run,
                 progress=False)
    assert main(["eval", "--ckpt", str(run), "--n", "24", "--steps", "2", "--n-reference", "100",
                 "--batch-size", "12"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["fd_label"] == "FD (Fashion-MNIST classifier features)" and "Inception" not in report["feature"]
    assert report["n_samples"] == 24 and report["n_reference"] == 100 and report["fd"] > 0
    assert report["sampler"] == "heun" and report["steps"] == 2
    assert "FD (Fashion-MNIST classifier features)" in capsys.readouterr().out
    assert main(["eval", "--ckpt", str(tmp_path / "none")]) == 2


def test_class_conditional_training_and_sampling(tmp_path):
    cfg = tiny(class_conditional=True, steps=4)
    assert cfg.unet.num_classes == 10
    train_images(cfg, tmp_path, progress=False)
    net, config = model_from_checkpoint(tmp_path)
    a = sample_images(net, config, 4, steps=3, class_labels=[0, 1, 2, 10])       # 10: the null class
    b = sample_images(net, config, 4, steps=3, class_labels=[5, 1, 2, 10])
    assert a.shape == (4, 1, 8, 8) and not torch.equal(a[0], b[0]) and torch.equal(a[1:], b[1:])
    with pytest.raises(ValueError, match="class_labels must be 4 integers in"):
        sample_images(net, config, 4, steps=3, class_labels=[0, 1, 2, 11])
    unconditional, uconf = model_from_checkpoint(train_images(tiny(steps=1), tmp_path / "u", progress=False)["checkpoint"])
    with pytest.raises(ValueError, match="unconditional"):
        sample_images(unconditional, uconf, 2, steps=2, class_labels=[0, 1])


def test_cli_eval_of_a_class_conditional_model_reports_class_accuracy(tmp_path):
    from minidiff.cli import main

    run = tmp_path / "fmc"
    assert main(["train", "--backend", "torch", "--dataset", "fashion-mnist", "--preset", "tiny", "--limit", "256",
                 "--steps", "3", "--sample-every", "0", "--class-conditional", "--out", str(run)]) == 0
    assert main(["eval", "--ckpt", str(run), "--n", "20", "--steps", "2", "--n-reference", "100"]) == 0
    report = json.loads((run / "eval.json").read_text())
    assert 0.0 <= report["class_accuracy"] <= 1.0 and report["guidance"] is None
    assert main(["eval", "--ckpt", str(run), "--n", "20", "--steps", "2", "--n-reference", "100",
                 "--guidance", "1.5", "--class", "4", "--out", str(run / "guided.json")]) == 0
    guided = json.loads((run / "guided.json").read_text())
    assert guided["guidance"] == 1.5 and guided["class"] == 4 and 0.0 <= guided["class_accuracy"] <= 1.0
