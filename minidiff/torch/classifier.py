"""A small Fashion-MNIST classifier: the feature network of minidiff's image metrics.

FID measures distances between Gaussians fitted to Inception-v3 features (Heusel et al. 2017).
Inception's weights cannot be downloaded here, and an ImageNet network is a poor judge of 28x28
grey clothes anyway, so minidiff trains this CNN on Fashion-MNIST, ships its weights
(``weights/fashion_mnist_classifier.safetensors``, float16) with a JSON record of how they were
made and the test accuracy they reach, and reports "FD (Fashion-MNIST classifier features)":
the same formula on the penultimate layer of this network.  Never call that number FID.

    net = load_classifier()                 # the shipped weights, eval mode, float32
    logits = net(x)                         # x: (B, 1, 28, 28) in [-1, 1] -> (B, 10)
    f = net.features(x)                     # (B, feature_dim): what FD and KID compare

Retrain (seeded, a few minutes on a laptop CPU):
    python -m minidiff.torch.classifier --train --out minidiff/torch/weights
Measure the shipped weights:
    python -m minidiff.torch.classifier --eval
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.images import to_model_range

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_NAME = "fashion_mnist_classifier"


@dataclasses.dataclass
class ClassifierConfig:
    in_channels: int = 1
    image_size: int = 28
    channels: tuple = (32, 64)        # one conv block (3x3 conv, [BatchNorm,] ReLU, 2x2 max-pool) per entry
    batch_norm: bool = True           # BatchNorm after each conv (in eval mode: a fixed affine map)
    feature_dim: int = 128            # the penultimate layer: the features FD and KID compare
    num_classes: int = 10
    dropout: float = 0.3              # on the features, during training only

    def __post_init__(self):
        self.channels = tuple(self.channels)
        for name in ("in_channels", "image_size", "feature_dim", "num_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not self.channels or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.channels):
            raise ValueError(f"channels must be a non-empty tuple of integers >= 1, got {self.channels!r}")
        if self.image_size % 2 ** len(self.channels):
            raise ValueError(f"image_size must be divisible by 2^len(channels) = {2 ** len(self.channels)} "
                             f"(one 2x2 pooling per block), got {self.image_size}")
        if not isinstance(self.batch_norm, bool):
            raise ValueError(f"batch_norm must be True or False, got {self.batch_norm!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


class FashionMNISTClassifier(nn.Module):
    """conv blocks -> flatten -> linear -> ReLU (the features) -> dropout -> linear (the logits).
    A ``nn.Module``; always use it in eval mode for features (BatchNorm then uses its running
    statistics, so an image's features do not depend on the rest of its batch)."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        layers, c_in = [], config.in_channels
        for c in config.channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=not config.batch_norm)]
            layers += [nn.BatchNorm2d(c)] if config.batch_norm else []
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            c_in = c
        self.blocks = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.fc = nn.Linear(c_in * side * side, config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)
        self.num_features = config.feature_dim   # read by torchmetrics when this is its feature network

    def _check(self, x):
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (B, {want[0]}, {want[1]}, {want[2]}) in the model range [-1, 1], "
                             f"got {tuple(x.shape)}")

    def features(self, x):
        """The penultimate activations: (B, C, H, W) in [-1, 1] -> (B, feature_dim)."""
        self._check(x)
        h = self.blocks(x)                         # (B, C_last, H / 2^L, W / 2^L)
        return F.relu(self.fc(h.flatten(1)))       # (B, feature_dim)

    def forward(self, x):
        """Class logits (B, num_classes)."""
        return self.head(F.dropout(self.features(x), self.config.dropout, self.training))


# ----------------------------------------------------------------------------------------------
# Loading the shipped weights (safetensors: no pickle is ever read).

def weight_paths(path, name: str):
    """(``name``.safetensors, its .json) in ``path`` (a folder or the .safetensors file itself;
    None: the shipped weights folder)."""
    path = Path(path) if path is not None else WEIGHTS_DIR
    if path.is_dir():
        path = path / f"{name}.safetensors"
    return path, path.with_suffix(".json")


def _weight_paths(path=None):
    return weight_paths(path, WEIGHTS_NAME)


def load_shipped(path, name: str, model_cls, config_cls, what: str, module: str, require_sha256: bool = False):
    """(model, record): a model shipped as float16 safetensors with its JSON record (see
    ``save_shipped``), in eval mode, float32.  A missing file is a FileNotFoundError saying how
    to train one (`python -m module --train`); a record of another architecture, a config that
    does not describe ``config_cls``, weights whose sha256 differs from the record's (or, with
    ``require_sha256``, a record without one) or whose shapes do not fit are ValueErrors."""
    from safetensors.torch import load_file

    weights, record_path = weight_paths(path, name)
    for p in (weights, record_path):
        if not p.is_file():
            raise FileNotFoundError(f"{what} file {p} not found; train one with "
                                    f"`python -m {module} --train --out {p.parent}`")
    record = json.loads(record_path.read_text())
    if record.get("architecture") != model_cls.__name__ or "config" not in record:
        raise ValueError(f"{record_path}: expected architecture {model_cls.__name__!r} with a "
                         f"'config', got architecture {record.get('architecture')!r}")
    try:
        config = config_cls(**record["config"])
    except TypeError as e:
        raise ValueError(f"{record_path}: config {record['config']} does not describe a {config_cls.__name__} ({e})") from e
    digest = record.get("sha256")
    if (digest is not None or require_sha256) and hashlib.sha256(weights.read_bytes()).hexdigest() != digest:
        raise ValueError(f"{weights} is not the file {record_path.name} describes (sha256 differs): "
                         "the two must be written together, by `--train`")
    net = model_cls(config)
    state = load_file(str(weights))
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(f"{k}: file {found[k]}, model {expected[k]}" for k in set(expected) & set(found)
                       if expected[k] != found[k])
        raise ValueError(f"{weights} does not match the architecture in {record_path.name} "
                         f"(config {config.to_dict()}): missing {missing}, unexpected {extra}, wrong shapes {wrong}")
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval(), record


def load_classifier(path=None, device="cpu") -> FashionMNISTClassifier:
    """The classifier from ``path`` (a ``.safetensors`` file with its ``.json`` beside it, or the
    folder holding both; default: the weights shipped in minidiff/torch/weights), in eval mode,
    float32.  Raises FileNotFoundError when a file is missing and ValueError when the weights do
    not fit the architecture the JSON describes."""
    net, _ = load_shipped(path, WEIGHTS_NAME, FashionMNISTClassifier, ClassifierConfig, "classifier",
                          "minidiff.torch.classifier")
    return net.to(device)


# ----------------------------------------------------------------------------------------------
# Training and measuring.

def _model_range(images_uint8) -> torch.Tensor:
    return torch.from_numpy(to_model_range(images_uint8))      # (N, 1, 28, 28) float32 in [-1, 1]


@torch.no_grad()
def accuracy(net, images, labels, batch_size: int = 1000) -> float:
    """Fraction of ``images`` (N, 1, 28, 28) in [-1, 1] that ``net`` assigns to ``labels`` (N,)."""
    net.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((net(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / len(images)


def train(epochs: int = 6, batch_size: int = 128, lr: float = 2e-3, seed: int = 0, root=None,
          config: ClassifierConfig | None = None, limit=None, progress: bool = True):
    """Train on Fashion-MNIST's train split: AdamW with a cosine learning-rate decay, random
    left-right flips.  Returns (net in eval mode, seconds)."""
    from ..data.images import load_images

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    x_u8, y = load_images("fashion-mnist", "train", root=root, limit=limit)
    x, y = _model_range(x_u8), torch.from_numpy(y)
    net = FashionMNISTClassifier(config)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(x) / batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / total)))
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            xb, yb = x[idx], y[idx]                                    # (B, 1, 28, 28), (B,)
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += float(loss.detach())
        if progress:
            print(f"epoch {epoch + 1}/{epochs}: mean loss {running / steps_per_epoch:.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return net.eval(), time.perf_counter() - t0


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_shipped(net, out, name: str, record: dict) -> Path:
    """Write ``out``/``name``.safetensors (float16) and its .json (the architecture, the config,
    ``record``, and the file's size and sha256), each atomically; returns the weights' path."""
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights, record_path = weight_paths(out, name)
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in net.state_dict().items()}
    _atomic_write(weights, lambda tmp: save_file(state, tmp))
    record = {"architecture": type(net).__name__, "config": net.config.to_dict(), **record,
              "storage_dtype": "float16", "bytes": weights.stat().st_size,
              "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
    _atomic_write(record_path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    return weights


def save_classifier(net, out, record: dict) -> Path:
    """Write ``out``/fashion_mnist_classifier.safetensors (float16) and its .json, each atomically."""
    return save_shipped(net, out, WEIGHTS_NAME, record)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.torch.classifier",
                                     description="Train or measure minidiff's Fashion-MNIST feature classifier.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--train", action="store_true", help="train on the train split and write the weights to --out")
    group.add_argument("--eval", action="store_true", help="measure the test accuracy of --weights")
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for the weights and the JSON (--train)")
    parser.add_argument("--weights", default=None, help="weights file or folder to measure (--eval; default: shipped)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ..data.images import load_images

    x_test_u8, y_test = load_images("fashion-mnist", "test", root=args.root)
    x_test, y_test = _model_range(x_test_u8), torch.from_numpy(y_test)
    if args.eval:
        net = load_classifier(args.weights)
        print(f"test accuracy of {_weight_paths(args.weights)[0]}: {accuracy(net, x_test, y_test):.4f} "
              f"on {len(y_test)} images")
        return 0
    net, seconds = train(args.epochs, args.batch_size, args.lr, args.seed, args.root)
    acc32 = accuracy(net, x_test, y_test)
    command = shlex.join(["python", "-m", "minidiff.torch.classifier", *(sys.argv[1:] if argv is None else argv)])
    record = {"train_command": command,
              "seed": args.seed, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "optimizer": "AdamW (weight decay 1e-4), cosine decay, random left-right flips",
              "train_split": "fashion-mnist train (60,000)",
              "training_seconds": round(seconds, 1), "threads": args.threads, "torch": torch.__version__,
              "date": datetime.date.today().isoformat(), "test_accuracy_float32": round(acc32, 4)}
    weights = save_classifier(net, args.out, record)
    acc16 = accuracy(load_classifier(weights), x_test, y_test)   # what the shipped float16 file reaches
    record_path = weights.with_suffix(".json")
    saved = json.loads(record_path.read_text())
    saved.update(test_accuracy=round(acc16, 4), n_test=len(y_test))
    _atomic_write(record_path, lambda tmp: Path(tmp).write_text(json.dumps(saved, indent=2) + "\n"))
    print(f"trained in {seconds:.0f} s; test accuracy {acc32:.4f} (float32), {acc16:.4f} (float16, shipped); "
          f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {record_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
