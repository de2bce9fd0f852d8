"""Checkpoints, every format minidiff writes.  2-D models: one NumPy ``.npz`` holding the
weights, the training state and its JSON state, with a sha256 over all of it.  PyTorch models
(the training loop's): one safetensors file holding the weights, the EMA, the optimiser state
and a JSON state in its metadata, with a sha256 over all of it.  Every file is written
atomically (temp file, fsync, then os.replace) with the user's umask; loading checks the file
is a regular one of bounded size, never unpickles, and refuses a digest that does not hold.
``RunLock`` keeps two runs from writing one folder."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np


# Bounds on what a loader reads before it allocates: a checkpoint is refused, not read, past them.
MAX_STATE_BYTES = 16 << 20          # state JSON (a config, an optimiser's settings, RNG states)
MAX_TOY_BYTES = 256 << 20           # all arrays of a 2-D checkpoint, uncompressed
MAX_IMAGE_BYTES = 64 << 30          # one safetensors file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write):
    """Write through a temp file in the same folder: fsync, the user's umask, then one rename,
    so a kill at any moment leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())           # mkstemp makes 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


TEMP_SUFFIX = ".minidiff-tmp"


def regular_file(path: Path, max_bytes: int, what: str = "checkpoint") -> int:
    """The size of ``path`` if it is a regular file of at most ``max_bytes`` (a FIFO, a device
    such as /dev/zero behind a symlink, or an oversized file is refused before it is opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is not a regular file (a FIFO, device or folder): refused")
    if st.st_size > max_bytes:
        raise ValueError(f"{what} {path} is {st.st_size} bytes, over the {max_bytes}-byte limit: refused")
    return st.st_size


class RunLock:
    """One writer per run folder: an exclusive ``flock`` on ``folder/.lock`` held while training
    (the kernel drops it when the process dies, even by kill -9), with the holder's pid in the
    file.  Taking it also removes temp files an interrupted run left behind."""

    def __init__(self, folder):
        self.folder, self._f = Path(folder), None

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / ".lock", "a+")
        try:
            import fcntl
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:                                       # no flock (Windows): no lock, say nothing
            pass
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ValueError(f"another minidiff run (pid {holder}) is writing to {self.folder}: wait for it to "
                             "finish or choose another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._f = f
        for tmp in self.folder.glob(f"*{TEMP_SUFFIX}"):           # left by a run killed mid-write
            tmp.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc):
        if self._f is not None:
            self._f.close()                                       # closing releases the flock
            self._f = None


def _array_digest(arrays: dict, state_text: str) -> str:
    """sha256 over the state JSON and every array's name, dtype, shape and bytes (name order)."""
    h = hashlib.sha256(state_text.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def flatten_params(prefix, params) -> dict:
    """An ``init_mlp``-style list [[W, b], ...] as named arrays '<prefix>.<i>.W' / '.b'."""
    out = {}
    for i, (W, b) in enumerate(params):
        out[f"{prefix}.{i}.W"] = np.asarray(W)
        out[f"{prefix}.{i}.b"] = np.asarray(b)
    return out


def unflatten_params(prefix, arrays):
    """The inverse of ``flatten_params``."""
    n = len([k for k in arrays if k.startswith(prefix + ".") and k.endswith(".W")])
    if n == 0:
        raise ValueError(f"checkpoint has no '{prefix}' weights")
    try:
        return [[arrays[f"{prefix}.{i}.W"], arrays[f"{prefix}.{i}.b"]] for i in range(n)]
    except KeyError as e:
        raise ValueError(f"checkpoint lacks the array {e.args[0]!r}") from None


TOY_FORMAT = "minidiff-toy-v2"
TOY_FILE = "model.npz"
_STATE, _DIGEST = "__state__", "__sha256__"


def save_toy_checkpoint(folder, params, ema_params, config: dict, step: int, arrays=None, state=None) -> Path:
    """Write one ``model.npz`` into ``folder``: the weights, the EMA weights, any training
    ``arrays`` (name -> array: optimiser moments, a target network), and the JSON state (format,
    step, config, ``state``'s entries) with a sha256 over all of it, so weights and state cannot
    be separated or edited apart.  ``state.json`` beside it, for people, is written first (so it
    never lags the checkpoint it describes; its sha256 names that checkpoint)."""
    folder = Path(folder)
    out = {**flatten_params("params", params), **flatten_params("ema", ema_params)}
    for name, a in (arrays or {}).items():
        out[f"train.{name}"] = np.asarray(a)
    full = {"format": TOY_FORMAT, "step": int(step), "config": config, **(state or {})}
    text = json.dumps(full, sort_keys=True)
    digest = _array_digest(out, text)
    _atomic_write(folder / "state.json", lambda f: f.write(json.dumps({**full, "sha256": digest}, indent=2).encode()))
    members = {**out, _STATE: np.frombuffer(text.encode(), np.uint8), _DIGEST: np.frombuffer(digest.encode(), np.uint8)}
    _atomic_write(folder / TOY_FILE, lambda f: _write_npz(f, members))
    return folder / TOY_FILE


def _write_npz(f, arrays: dict):
    """``np.savez`` with fixed member order and timestamps, so the same arrays give the same bytes."""
    import io

    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def _read_npz(path: Path, max_bytes: int) -> dict:
    """The arrays of an .npz, each header checked against its member's size before any array is
    allocated, the uncompressed total bounded, no pickles."""
    arrays, total = {}, 0
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            total += info.file_size
            if total > max_bytes:
                raise ValueError(f"its arrays would take over {max_bytes} bytes uncompressed: refused")
            with z.open(info) as f:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"member {info.filename} has .npy format {version}, not 1.0 or 2.0")
                shape, fortran, dtype = read_header(f)
                if dtype.hasobject:
                    raise ValueError(f"member {info.filename} holds Python objects: refused")
                n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if n != info.file_size - f.tell():
                    raise ValueError(f"member {info.filename} declares shape {shape} ({n} bytes) but holds "
                                     f"{info.file_size - f.tell()} bytes")
                a = np.frombuffer(bytearray(f.read(n)), dtype=dtype)   # writable, one copy
                a = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
            arrays[info.filename.removesuffix(".npy")] = a
    return arrays


def read_toy_checkpoint(folder):
    """(arrays, state) of a checkpoint written by ``save_toy_checkpoint``, verified: its sha256
    must hold.  ``folder``: the run folder or its ``model.npz``."""
    folder = Path(folder)
    if folder.is_file() or folder.suffix == ".npz":
        folder = folder.parent
    path = folder / TOY_FILE
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {folder}: expected {TOY_FILE} (written by `minidiff train`)")
    regular_file(path, MAX_TOY_BYTES)
    try:
        arrays = _read_npz(path, MAX_TOY_BYTES)
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:    # truncated npz: BadZipFile
        raise ValueError(f"checkpoint {path} is unreadable (truncated or tampered?): {e}") from e
    except ValueError as e:
        raise ValueError(f"checkpoint {path} is unreadable: {e}") from None
    if _STATE not in arrays or _DIGEST not in arrays:
        raise ValueError(f"{path} is not a minidiff 2-D checkpoint of format {TOY_FORMAT} (an older minidiff "
                         "wrote it, or something else did): retrain it")
    text, digest = arrays.pop(_STATE).tobytes().decode(errors="replace"), arrays.pop(_DIGEST).tobytes().decode()
    if _array_digest(arrays, text) != digest:
        raise ValueError(f"checkpoint {path} fails its sha256 check: the file was changed after it was written")
    try:
        state = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"checkpoint {path} has an unreadable state: {e}") from None
    if not isinstance(state, dict) or state.get("format") != TOY_FORMAT:
        fmt = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a minidiff 2-D checkpoint (format {fmt!r})")
    if not isinstance(state.get("config"), dict):
        raise ValueError(f"checkpoint {path} holds no 'config' dict in its state")
    return arrays, state


def load_toy_checkpoint(folder):
    """(params, ema_params, state) of a checkpoint written by ``save_toy_checkpoint``."""
    arrays, state = read_toy_checkpoint(folder)
    return unflatten_params("params", arrays), unflatten_params("ema", arrays), state


def is_toy_checkpoint(folder) -> bool:
    return (Path(folder) / TOY_FILE).exists()


# ----------------------------------------------------------------------------------------------
# Image-model checkpoints (PyTorch backend): one safetensors file, so one atomic write.

IMAGE_FORMAT = "minidiff-images-v2"
IMAGE_FORMATS_READ = ("minidiff-images-v1", IMAGE_FORMAT)
IMAGE_FILE = "checkpoint.safetensors"
_META_KEY = "minidiff"          # v2: ONE metadata entry (safetensors writes several in random order)


def _digest(tensors: dict, state: str) -> str:
    """sha256 over the state JSON and every tensor's name, dtype, shape and bytes (in name order):
    a changed byte anywhere fails the check."""
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
    fsync, os.replace), so a kill at any moment leaves the previous checkpoint intact; the same
    run gives the same bytes.  The state also goes to ``state.json`` beside it, for people
    (loading reads only the safetensors file), written first so that it never lags the
    checkpoint it describes (its sha256 names that checkpoint).
    ``path``: a folder (the file is ``checkpoint.safetensors`` in it) or a ``.safetensors`` file."""
    from safetensors.torch import save

    file = _image_path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    text = json.dumps(state, sort_keys=True)
    digest = _digest(tensors, text)
    meta = {_META_KEY: json.dumps({"format": IMAGE_FORMAT, "sha256": digest, "state": text}, sort_keys=True)}
    blob = save(tensors, metadata=meta)
    _atomic_write(file.parent / "state.json",
                  lambda f: f.write(json.dumps({**state, "sha256": digest}, indent=2).encode()))
    _atomic_write(file, lambda f: f.write(blob))
    return file


def load_image_checkpoint(path, device="cpu"):
    """Read a file written by ``save_image_checkpoint``: (tensors dict, state dict).  Never
    unpickles; a truncated file, a changed byte or another format raises ValueError."""
    from safetensors import safe_open

    file = _image_path(path)
    if not file.exists():
        raise FileNotFoundError(f"no image checkpoint at {file} (written by `minidiff train --backend torch "
                                "--dataset ...`)")
    regular_file(file, MAX_IMAGE_BYTES)
    try:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error type for a bad header or short file
        raise ValueError(f"checkpoint {file} is unreadable (truncated or tampered?): {e}") from e
    if _META_KEY in meta:                                      # v2: everything in one entry
        try:
            meta = json.loads(meta[_META_KEY])
        except json.JSONDecodeError as e:
            raise ValueError(f"checkpoint {file} has unreadable metadata: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") not in IMAGE_FORMATS_READ:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{file} is not a minidiff image checkpoint (format={fmt!r})")
    if _digest(tensors, meta.get("state", "")) != meta.get("sha256"):
        raise ValueError(f"checkpoint {file} fails its sha256 check: the file was changed after it was written")
    try:
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"checkpoint {file} has no readable state: {e}") from e
    return tensors, state


def image_checkpoint_sha256(path) -> str:
    """The sha256 that names an image checkpoint (over its state and every tensor, as
    ``load_image_checkpoint`` verifies it): read from the file's metadata, not recomputed."""
    from safetensors import safe_open

    file = _image_path(path)
    if not file.exists():
        raise FileNotFoundError(f"no image checkpoint at {file}")
    regular_file(file, MAX_IMAGE_BYTES)
    try:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
        digest = json.loads(meta[_META_KEY])["sha256"] if _META_KEY in meta else meta.get("sha256")
    except Exception as e:
        raise ValueError(f"checkpoint {file} is unreadable (truncated or tampered?): {e}") from e
    if not isinstance(digest, str) or len(digest) != 64:
        raise ValueError(f"checkpoint {file} carries no sha256")
    return digest


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
