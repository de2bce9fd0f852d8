"""Checkpoints, every format minidiff writes.  2-D models: arrays in a NumPy ``.npz`` (loaded
with allow_pickle=False) plus a JSON of the config and step.  PyTorch models (the training loop's): one safetensors file holding the weights, the EMA,
the optimiser state and a JSON state in its metadata, with a sha256 over all of it.  Every file
is written atomically (temp file, fsync, then os.replace); nothing is ever unpickled."""
from __future__ import annotations

import dataclasses
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


# ----------------------------------------------------------------------------------------------
# Image-model checkpoints (PyTorch backend): one safetensors file, so one atomic write.

IMAGE_FORMAT = "minidiff-images-v1"
IMAGE_FILE = "checkpoint.safetensors"


def _digest(tensors: dict, state: str) -> str:
    """sha256 over the state JSON and every tensor's name, dtype, shape and bytes (in name order):
    a changed byte anywhere fails the check."""
    import hashlib

    import torch

    h = hashlib.sha256(state.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _image_path(path) -> Path:
    path = Path(path)
    return path / IMAGE_FILE if path.suffix != ".safetensors" else path


def is_image_checkpoint(path) -> bool:
    return _image_path(path).exists()


def save_image_checkpoint(path, tensors: dict, state: dict) -> Path:
    """Write ``tensors`` (name -> torch tensor) and ``state`` (a JSON-able dict: step, config,
    RNG scheme, optimiser hyper-parameters) into ONE safetensors file, atomically (temp file,
    fsync, os.replace), so a kill at any moment leaves the previous checkpoint intact.  The state
    also goes to ``state.json`` beside it, for people (loading reads only the safetensors file).
    ``path``: a folder (the file is ``checkpoint.safetensors`` in it) or a ``.safetensors`` file."""
    from safetensors.torch import save

    file = _image_path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = json.dumps(state)
    meta = {"format": IMAGE_FORMAT, "state": text, "sha256": _digest(tensors, text)}
    blob = save(tensors, metadata=meta)
    _atomic_write(file, lambda f: f.write(blob))
    _atomic_write(file.parent / "state.json", lambda f: f.write(json.dumps(state, indent=2).encode()))
    return file


def load_image_checkpoint(path, device="cpu"):
    """Read a file written by ``save_image_checkpoint``: (tensors dict, state dict).  Never
    unpickles; a truncated file, a changed byte or another format raises ValueError."""
    from safetensors import safe_open

    file = _image_path(path)
    if not file.exists():
        raise FileNotFoundError(f"no image checkpoint at {file} (written by `minidiff train --backend torch "
                                "--dataset ...`)")
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type for a bad header or short file
        raise ValueError(f"checkpoint {file} is unreadable (truncated or tampered?): {e}") from e
    if meta.get("format") != IMAGE_FORMAT:
        raise ValueError(f"{file} is not a minidiff image checkpoint (format={meta.get('format')!r})")
    if _digest(tensors, meta.get("state", "")) != meta.get("sha256"):
        raise ValueError(f"checkpoint {file} fails its sha256 check: the file was changed after it was written")
    try:
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {file} has no readable state: {e}") from e
    return tensors, state


def json_norm(v):
    """A value as JSON stores it (tuples become lists, dataclasses dicts), for comparing configs."""
    return json.loads(json.dumps(v, default=dataclasses.asdict))


def module_tensors(modules: dict, opt=None) -> dict:
    """The tensors of a training state: ``modules`` (name -> nn.Module) under '<name>.' and the
    optimiser's per-parameter state under 'optim.<index>.'."""
    import torch

    tensors = {f"{name}.{k}": v for name, m in modules.items() for k, v in m.state_dict().items()}
    if opt is not None:
        for i, s in opt.state_dict()["state"].items():
            for name, v in s.items():
                tensors[f"optim.{i}.{name}"] = torch.as_tensor(v)
    return tensors


def prefixed(tensors: dict, prefix: str) -> dict:
    """The tensors saved under '<prefix>.', with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_modules(modules: dict, tensors: dict, file):
    """Load each module's weights (strictly); another architecture is a ValueError naming it."""
    for name, module in modules.items():
        try:
            module.load_state_dict(prefixed(tensors, name), strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ValueError(f"checkpoint {file} holds a different architecture than the one asked for ({name}): "
                             f"{first[0] if first else e}") from None


def load_optimizer(opt, tensors: dict, param_groups: list):
    """Restore an optimiser from the 'optim.' tensors and the saved hyper-parameter groups."""
    opt_state = {"state": {}, "param_groups": []}
    for name, v in prefixed(tensors, "optim").items():
        i, key = name.split(".", 1)
        opt_state["state"].setdefault(int(i), {})[key] = v
    if len(param_groups) != len(opt.param_groups):
        raise ValueError(f"the checkpoint's optimiser has {len(param_groups)} parameter groups, this one "
                         f"{len(opt.param_groups)}")
    sizes = np.cumsum([0] + [len(g["params"]) for g in opt.param_groups])
    opt_state["param_groups"] = [{**g, "params": list(range(a, b))}
                                 for g, a, b in zip(param_groups, sizes[:-1].tolist(), sizes[1:].tolist())]
    opt.load_state_dict(opt_state)
