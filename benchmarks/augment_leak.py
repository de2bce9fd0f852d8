"""Does augmentation leak?  Plain ``--flip`` against EDM's non-leaking ``--augment p``
(Karras et al. 2022, section 5) on Fashion-MNIST's footwear.

Fashion-MNIST's shoes face one way: the mass of the left half of a Sandal (5), Sneaker (7) or
Ankle boot (9) is about half that of the right half.  A model trained on randomly flipped images
learns mirrored shoes as ordinary ones and samples them, so the ratio of its samples drifts
towards 1.  With ``--augment`` the flips (and shifts, scalings) are told to the U-Net as augment
labels, zero when sampling, so the clean distribution should keep the data's ratio.

1. **The leak** (unless ``--no-leak``): class-conditional EDM runs of the same length (the 'cpu'
   preset's U-Net), ``--variants`` of none / ``flip`` / ``augment=p`` (one run for each ``--p``),
   each sampled for the three footwear classes with augment labels zero (the samplers pass none);
   ratio = mean left-half mass / mean right-half mass, pixel values in [0, 1].  Target: augment
   within +-0.1 of the data, flip towards 1.  ``--probe`` samples the augment runs once more with
   the flip label 1: the direct test of whether the U-Net uses its labels.
2. **What it buys** (``--fd``, ``--p-fd``): FD on the shipped classifier's features of unconditional runs on a
   small training set (the first ``--fd-images``, default 2,000), with and without augmentation at equal
   steps (EDM: augmentation matters when data is scarce), and the memorisation ratio (Gu et al.
   2023): the fraction of samples whose nearest training image is closer than a third of the second
   nearest, beside the same for as many held-out test images (what a model that generalises scores).

    OMP_NUM_THREADS=1 python benchmarks/augment_leak.py --steps 1000 --p 0.5 --variants augment --probe --n 100 --tag cpu_p5_1000
    OMP_NUM_THREADS=1 python benchmarks/augment_leak.py --no-leak --steps 400 --p-fd 0.12 --n-fd 500 --tag cpu_fd
    bash benchmarks/augment_fashion_mnist.sh                                     # a GPU: both parts
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from minidiff.data.images import from_model_range, load_images
from minidiff.metrics import memorization_ratio, nearest_neighbour_distances
from minidiff.torch.evaluate import evaluate_images
from minidiff.torch.sampling import sample_images
from minidiff.torch.train import ImageConfig, model_from_checkpoint, train_images

FOOTWEAR = {5: "Sandal", 7: "Sneaker", 9: "Ankle boot"}
RESULTS = Path(__file__).resolve().parent / "results"


def left_right_ratio(images) -> float:
    """Mean mass of the left half / mean mass of the right half of ``images`` (N, 1, H, W) uint8."""
    a = np.asarray(images, dtype=np.float64) / 255.0
    W = a.shape[-1]
    return float(a[..., : W // 2].sum() / a[..., W - W // 2:].sum())


def data_ratios(split: str = "train") -> dict:
    images, labels = load_images("fashion-mnist", split)
    return {FOOTWEAR[c]: left_right_ratio(images[labels == c]) for c in FOOTWEAR}


def train(variant: str, args, out: Path, p: float = 0.0, **extra) -> tuple:
    opts = {"none": {}, "flip": {"flip": True}, "augment": {"augment": p}}[variant]
    budget = {"steps": args.steps} if args.steps else {"steps": 10 ** 6, "max_seconds": args.seconds}
    cfg = ImageConfig.from_preset(args.preset, dataset="fashion-mnist", method="edm", seed=args.seed,
                                  sample_every=0, ckpt_every=0, **budget, **opts, **extra)
    t0 = time.perf_counter()
    result = train_images(cfg, out, progress=False, device=args.device, log=lambda *_: None)
    return result["steps"], time.perf_counter() - t0


class WithAugmentLabels(torch.nn.Module):
    """The U-Net with fixed augment labels ``row`` (AUGMENT_DIM,) for every image: does it use them?"""

    def __init__(self, net, row):
        super().__init__()
        self.net, self.row = net, torch.as_tensor(row, dtype=torch.float32)

    def forward(self, x, t, **kw):
        return self.net(x, t, augment_labels=self.row.to(x.device).expand(len(x), -1), **kw)


def labels_ignored(data: dict, f: float) -> dict:
    """The ratio of a model that ignores the flip label and so learns the flipped mixture:
    ((1 - f) L + f R) / ((1 - f) R + f L) = ((1 - f) r + f) / ((1 - f) + f r) with r = L / R."""
    return {k: ((1 - f) * r + f) / ((1 - f) + f * r) for k, r in data.items()}


def footwear_ratios(ckpt: Path, n: int, device, flip_label: bool = False) -> dict:
    net, cfg = model_from_checkpoint(ckpt, device)
    if flip_label:                                                     # labels [flip, tx/W, ty/H, log2 s]
        net = WithAugmentLabels(net, [1.0, 0.0, 0.0, 0.0])
    out = {}
    for c, name in FOOTWEAR.items():
        x = sample_images(net, cfg, n, seed=c, class_labels=torch.full((n,), c), device=device)
        out[name] = left_right_ratio(from_model_range(x).numpy())
    return out


def runs(args) -> list:
    """(report key, variant, p) of part 1: 'augment' once for each --p."""
    out = []
    for variant in args.variants:
        ps = args.p if variant == "augment" else [0.0]
        out += [(f"augment p={p}" if variant == "augment" else variant, variant, p) for p in ps]
    return out


def leak(args, work: Path) -> dict:
    report = {"data (train)": data_ratios()}
    steps = None
    for key, variant, p in runs(args):
        kw = {"steps": steps, "seconds": None} if steps else {}      # later runs: the first run's steps
        run_args = argparse.Namespace(**{**vars(args), **kw}) if kw else args
        k, secs = train(variant, run_args, work / key, p, class_conditional=True)
        steps = steps or k
        report[key] = {"steps": k, "train_seconds": round(secs, 1),
                       "ratios": footwear_ratios(work / key, args.n, args.device)}
        if variant == "augment" and args.probe:
            report[key]["ratios_with_flip_label_1"] = footwear_ratios(work / key, args.n, args.device, True)
        print(key, report[key], flush=True)
    data = report["data (train)"]
    report["if the flip label were ignored"] = {"flip": labels_ignored(data, 0.5),
                                                **{f"augment p={p}": labels_ignored(data, p) for p in args.p}}
    for key, _, _ in runs(args):
        report[key]["minus_data"] = {k: round(v - data[k], 3) for k, v in report[key]["ratios"].items()}
    return report


def flat(images) -> np.ndarray:
    """uint8 images (N, C, H, W) -> (N, C*H*W) float64 in [0, 1]."""
    a = np.asarray(images, dtype=np.float64) / 255.0
    return a.reshape(a.shape[0], -1)


def copying(images, training) -> dict:
    """How close ``images`` lie to the training set: the fraction that copy a training image
    (d1 < d2 / 3, ``memorization_ratio``) and the mean distance to the nearest one."""
    d = nearest_neighbour_distances(flat(images), flat(training), k=1)
    return {"memorization_ratio": round(memorization_ratio(flat(images), flat(training)), 4),
            "mean_nearest_training_distance": round(float(d.mean()), 4)}


def fd(args, work: Path) -> dict:
    """Unconditional runs on the first ``--fd-images`` training images, with and without
    augmentation (p = --p-fd), at the same steps; FD of ``--n-fd`` samples against 10,000 test images,
    and how many samples copy a training image, beside what as many held-out test images score."""
    report, steps = {"p": args.p_fd, "training_images": args.fd_images}, args.fd_steps or args.steps
    training = load_images("fashion-mnist", "train", limit=args.fd_images)[0]
    report["test images (reference)"] = copying(load_images("fashion-mnist", "test", limit=args.n_fd)[0], training)
    for variant in args.fd_variants:
        run_args = argparse.Namespace(**{**vars(args), "steps": steps, "seconds": args.fd_seconds or args.seconds})
        k, secs = train(variant, run_args, work / f"fd-{variant}", args.p_fd, limit=args.fd_images)
        steps = steps or k                                              # the second run: the first's steps
        net, cfg = model_from_checkpoint(work / f"fd-{variant}", args.device)
        t0 = time.perf_counter()
        x = sample_images(net, cfg, args.n_fd, seed=0, device=args.device)
        report[variant] = {"steps": k, "train_seconds": round(secs, 1),
                           "sample_seconds": round(time.perf_counter() - t0, 1),
                           **{key: v for key, v in evaluate_images(x).items()
                              if key in ("fd", "kid_mean", "n_samples", "n_reference")},
                           **copying(from_model_range(x).cpu().numpy(), training)}
        print(variant, report[variant], flush=True)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=270.0, help="training time of the first run (later runs: "
                    "as many steps as it made)")
    ap.add_argument("--steps", type=int, default=0, help="steps per run instead of --seconds")
    ap.add_argument("--p", type=float, nargs="+", default=[0.5], help="--augment's probability, one augment run "
                    "each (0.5: as many flips as --flip; EDM: 0.12)")
    ap.add_argument("--preset", default="cpu", choices=("tiny", "cpu", "gpu"))
    ap.add_argument("--variants", nargs="+", default=["flip", "augment"], choices=("none", "flip", "augment"))
    ap.add_argument("--probe", action="store_true", help="also sample the augment model with the flip label 1 "
                    "(a model that uses the label draws mirrored shoes, ratio ~ 1 / the data's)")
    ap.add_argument("--n", type=int, default=200, help="samples per footwear class")
    ap.add_argument("--fd", action="store_true", help="also part 2: FD on --fd-images images with and without "
                    "augment")
    ap.add_argument("--no-leak", action="store_true", help="part 2 only (implies --fd)")
    ap.add_argument("--p-fd", type=float, default=0.12, help="part 2's --augment probability")
    ap.add_argument("--fd-seconds", type=float, default=0.0, help="part 2's first run's seconds (default: --seconds)")
    ap.add_argument("--fd-variants", nargs="+", default=["none", "augment"], choices=("none", "augment"),
                    help="part 2's runs (one each in two processes: give both the same --fd-steps)")
    ap.add_argument("--fd-steps", type=int, default=0, help="part 2's steps (default: --steps, or --seconds)")
    ap.add_argument("--n-fd", type=int, default=2000)
    ap.add_argument("--fd-images", type=int, default=2000, help="part 2's training set: the first N images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--tag", default="cpu")
    ap.add_argument("--results", default=str(RESULTS), help="the folder of augment_leak_<tag>.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = {"config": {k: v for k, v in vars(args).items()}, "torch_threads": torch.get_num_threads()}
        if not args.no_leak:
            report["leak"] = leak(args, Path(tmp))
        if args.fd or args.no_leak:
            report[f"fd_{args.fd_images}_images"] = fd(args, Path(tmp))
    path = Path(args.results) / f"augment_leak_{args.tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
