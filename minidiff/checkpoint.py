"""Checkpoints for the 2-D models: arrays in a NumPy ``.npz`` (loaded with allow_pickle=False)
plus a JSON of the config and step, each written atomically (temp file, then os.replace)."""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def _atomic_write(path: Path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _flatten(prefix, params, out):
    for i, (W, b) in enumerate(params):
        out[f"{prefix}.{i}.W"] = np.asarray(W)
        out[f"{prefix}.{i}.b"] = np.asarray(b)


def _unflatten(prefix, arrays):
    n = len([k for k in arrays if k.startswith(prefix + ".") and k.endswith(".W")])
    if n == 0:
        raise ValueError(f"checkpoint has no '{prefix}' weights")
    return [[arrays[f"{prefix}.{i}.W"], arrays[f"{prefix}.{i}.b"]] for i in range(n)]


def save_toy_checkpoint(folder, params, ema_params, config: dict, step: int):
    """Write ``model.npz`` (params and EMA params) and ``state.json`` into ``folder``."""
    folder = Path(folder)
    arrays = {}
    _flatten("params", params, arrays)
    _flatten("ema", ema_params, arrays)
    _atomic_write(folder / "model.npz", lambda f: np.savez(f, **arrays))
    state = {"format": "minidiff-toy-v1", "step": int(step), "config": config}
    _atomic_write(folder / "state.json", lambda f: f.write(json.dumps(state, indent=2).encode()))


def load_toy_checkpoint(folder):
    """Read a folder written by ``save_toy_checkpoint``: (params, ema_params, state dict)."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    model, state_path = folder / "model.npz", folder / "state.json"
    if not model.exists() or not state_path.exists():
        raise FileNotFoundError(f"no checkpoint in {folder}: expected model.npz and state.json "
                                "(written by `minidiff train`)")
    try:
        state = json.loads(state_path.read_text())
        with np.load(model, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:  # truncated npz: BadZipFile
        raise ValueError(f"checkpoint in {folder} is unreadable (truncated or tampered?): {e}") from e
    if not isinstance(state, dict) or state.get("format") != "minidiff-toy-v1":
        fmt = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{state_path} is not a minidiff 2-D checkpoint (format={fmt!r})")
    return _unflatten("params", arrays), _unflatten("ema", arrays), state
