"""Training on both backends gives the same numbers; our AdamW and clipping match torch's;
checkpoints round-trip, are written atomically and are never unpickled."""
import json
import os

import numpy as np
import pytest
import torch

import minidiff.torch  # noqa: F401  (registers the torch backend of the 2-D trainer)

from minidiff import checkpoint, train
from minidiff.nn import adam_init, adam_update, clip_grad_norm, ema_update, global_norm, init_mlp



def _cfg(**kw):
    base = dict(dataset="two_moons", steps=30, batch_size=128, hidden=32, depth=2, t_dim=16, T=100, seed=3)
    base.update(kw)
    return train.ToyConfig(**base)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("float64", 1e-8)])
def test_train_toy_same_losses_on_both_backends(dtype, tol):
    """numpy: autograd + our AdamW + our clipping; torch: backward() + torch.optim.AdamW +
    clip_grad_norm_.  Measured: max |loss difference| over 30 steps 1.2e-7 (float32) and
    2e-16 to 5e-10 (float64, depending on torch's thread count, i.e. its summation order)."""
    a = train.train_toy(_cfg(backend="numpy", dtype=dtype), progress=False)
    b = train.train_toy(_cfg(backend="torch", dtype=dtype), progress=False)
    assert a["losses"].shape == (30,) and a["steps"] == 30 and np.isfinite(a["losses"]).all()
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=tol, atol=tol)
    for (Wa, ba), (Wb, bb) in zip(a["params"], b["params"]):
        assert Wa.dtype == Wb.dtype == np.dtype(dtype)
        np.testing.assert_allclose(Wa, Wb, rtol=10 * tol, atol=10 * tol)
    for (Wa, _), (Wb, _) in zip(a["ema"], b["ema"]):
        np.testing.assert_allclose(Wa, Wb, rtol=10 * tol, atol=10 * tol)
    # the parameters moved (lr warm-up is short but not zero), and a rerun is identical
    init = init_mlp(np.random.default_rng(3), 2, 32, 2, 16, dtype=np.dtype(dtype))
    assert not np.allclose(a["params"][0][0], init[0][0])
    np.testing.assert_array_equal(train.train_toy(_cfg(backend="numpy", dtype=dtype), progress=False)["losses"],
                                  a["losses"])


def test_a_longer_run_learns():
    """Enough steps past the warm-up that the loss must fall clearly below the untrained level."""
    out = train.train_toy(_cfg(backend="numpy", steps=300, lr=3e-3), progress=False)
    assert out["losses"][-50:].mean() < 0.8 * out["losses"][:20].mean()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_our_adamw_equals_torch_adamw(weight_decay):
    """Kingma & Ba Algorithm 1 with Loshchilov & Hutter's decoupled decay, as torch implements it:
    p <- p (1 - lr wd) - lr m_hat / (sqrt(v_hat) + eps)."""
    rng = np.random.default_rng(0)
    params = [[rng.standard_normal((3, 4)), rng.standard_normal(4)], [rng.standard_normal((4, 2)), rng.standard_normal(2)]]
    tparams = [torch.tensor(p, requires_grad=True) for layer in params for p in layer]
    opt = torch.optim.AdamW(tparams, lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    state = adam_init(params)
    for k in range(6):
        grads = [[rng.standard_normal(W.shape) * 10 ** (k - 3), rng.standard_normal(b.shape)] for W, b in params]
        params, state = adam_update(params, grads, state, lr=0.05, b1=0.8, b2=0.95, eps=1e-6, weight_decay=weight_decay)
        for p, g in zip(tparams, [g for layer in grads for g in layer]):
            p.grad = torch.from_numpy(g)
        opt.step()
        ours = [p for layer in params for p in layer]
        for a, b in zip(ours, tparams):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert state["step"] == 6


def test_clip_grad_norm_matches_torch():
    rng = np.random.default_rng(1)
    grads = [[rng.standard_normal((5, 3)), rng.standard_normal(3)]]
    norm = np.sqrt(sum(np.sum(g ** 2) for layer in grads for g in layer))
    assert global_norm(grads) == pytest.approx(norm, rel=1e-14)
    clipped = clip_grad_norm(grads, 1.0)
    tg = [torch.tensor(g, requires_grad=True) for g in grads[0]]
    for p, g in zip(tg, grads[0]):
        p.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_norm_(tg, 1.0)
    for a, b in zip(clipped[0], tg):
        # torch divides by (norm + 1e-6), we by (norm + 1e-12)
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-6)
    assert global_norm(clipped) == pytest.approx(1.0, rel=1e-9)
    assert clip_grad_norm(grads, 2 * norm) is grads  # below the threshold: untouched
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm(grads, 0.0)


def test_ema_update():
    e, p = [[np.ones(2), np.zeros(1)]], [[np.full(2, 3.0), np.ones(1)]]
    out = ema_update(e, p, 0.9)
    np.testing.assert_allclose(out[0][0], [1.2, 1.2])
    np.testing.assert_allclose(out[0][1], [0.1])
    with pytest.raises(ValueError, match="decay"):
        ema_update(e, p, 1.5)


# ---------------------------------------------------------------------------------------------
# Checkpoints.

def _params(seed, dtype=np.float32):
    return init_mlp(seed, 2, hidden=8, depth=2, t_dim=4, dtype=dtype)


def _save(folder, step=7):
    params, ema = _params(0), _params(1)
    config = train.ToyConfig(steps=7).__dict__.copy()
    checkpoint.save_toy_checkpoint(folder, params, ema, config, step)
    return params, ema, config


def test_round_trip(tmp_path):
    folder = tmp_path / "run"
    params, ema, config = _save(folder)
    assert sorted(os.listdir(folder)) == ["model.npz", "state.json"]  # no temp files left behind
    p2, e2, state = checkpoint.load_toy_checkpoint(folder)
    for a, b in zip(params + ema, p2 + e2):
        for x, y in zip(a, b):
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x, y)
    assert state["step"] == 7 and state["config"] == config and state["format"] == "minidiff-toy-v2"
    # the path of either file works too
    p3, _, _ = checkpoint.load_toy_checkpoint(folder / "model.npz")
    np.testing.assert_array_equal(p3[0][0], params[0][0])
    # a loaded checkpoint samples
    x = train.sample_from_params(p2, state["config"] | {"T": 20}, 10, seed=0)
    assert x.shape == (10, 2) and np.isfinite(x).all()


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous checkpoint intact and no temp file."""
    folder = tmp_path / "run"
    params, _, _ = _save(folder, step=1)

    def broken_savez(f, arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "_write_npz", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_toy_checkpoint(folder, _params(5), _params(6), {}, 2)
    monkeypatch.undo()
    assert sorted(os.listdir(folder)) == ["model.npz", "state.json"]
    p2, _, state = checkpoint.load_toy_checkpoint(folder)
    assert state["step"] == 1
    np.testing.assert_array_equal(p2[0][0], params[0][0])


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -10])
def test_truncated_model_gives_a_clear_error(tmp_path, keep):
    _save(tmp_path)
    data = (tmp_path / "model.npz").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    (tmp_path / "model.npz").write_bytes(data[:n])
    with pytest.raises(ValueError, match="unreadable"):
        checkpoint.load_toy_checkpoint(tmp_path)


def test_state_json_is_for_people_only(tmp_path):
    """Loading reads the one model.npz: editing state.json changes nothing."""
    _save(tmp_path)
    (tmp_path / "state.json").write_text('{"format": "something-else", "step": 1, "config": {"T": 3}}')
    _, _, state = checkpoint.load_toy_checkpoint(tmp_path)
    assert state["step"] == 7 and state["config"]["T"] == 1000


def _members(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_weights_and_state_are_bound_by_one_digest(tmp_path):
    """Another run's state beside these weights, or an edited T, fails the sha256 check."""
    _save(tmp_path / "a")
    checkpoint.save_toy_checkpoint(tmp_path / "b", _params(3), _params(4), train.ToyConfig(method="edm").to_dict(), 9)
    a, b = _members(tmp_path / "a" / "model.npz"), _members(tmp_path / "b" / "model.npz")
    for name, value in (("__state__", b["__state__"]),
                        ("__state__", np.frombuffer(a["__state__"].tobytes().replace(b'"T": 1000', b'"T": 100'), np.uint8))):
        forged = {**a, name: value}
        with open(tmp_path / "a" / "model.npz", "wb") as f:
            np.savez(f, **forged)
        with pytest.raises(ValueError, match="sha256"):
            checkpoint.load_toy_checkpoint(tmp_path / "a")


def test_a_checkpoint_of_the_old_two_file_format_is_refused_by_name(tmp_path):
    with open(tmp_path / "model.npz", "wb") as f:
        np.savez(f, **{"params.0.W": np.zeros((2, 2)), "params.0.b": np.zeros(2)})
    with pytest.raises(ValueError, match="minidiff-toy-v2.*retrain"):
        checkpoint.load_toy_checkpoint(tmp_path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected model.npz"):
        checkpoint.load_toy_checkpoint(tmp_path / "nothing")


class _Payload:
    """Unpickling this would create a file (an observable side effect)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_load_never_unpickles(tmp_path):
    _save(tmp_path)
    marker = tmp_path / "pwned"
    arrays = {"params.0.W": np.array([_Payload(str(marker))], dtype=object), "params.0.b": np.zeros(2),
              "ema.0.W": np.zeros((2, 2)), "ema.0.b": np.zeros(2)}
    with open(tmp_path / "model.npz", "wb") as f:
        np.savez(f, **arrays)  # object arrays are pickled inside the .npz
    with pytest.raises(ValueError):
        checkpoint.load_toy_checkpoint(tmp_path)
    assert not marker.exists()
    # the state file is plain JSON
    json.loads((tmp_path / "state.json").read_text())


def test_the_torch_backend_of_the_2d_trainer_comes_with_the_torch_package():
    """The core never imports minidiff.torch; without it, backend 'torch' says what to import."""
    import subprocess
    import sys
    code = ("from minidiff import train\n"
            "try:\n    train.toy_backend('torch')\nexcept ValueError as e:\n    print(e)\n"
            "import minidiff.torch\nprint(train.toy_backend('torch').stepper.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "import minidiff.torch" in out and out.strip().endswith("TorchStepper")
