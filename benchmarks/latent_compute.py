"""The compute saving of latent diffusion (Rombach et al. 2022), measured side by side: the same
preset's U-Net on Fashion-MNIST pixels (1x28x28) and on the latents of the same preset's first
stages with f = 2 (c x 14 x 14) and f = 4 (c x 8 x 8: 28 padded to 32).

For each: the U-Net's FLOPs per training image (forward + backward, counted by
``torch.utils.flop_counter.FlopCounterMode`` on one batch), the wall time per training image
(forward, the EDM loss, backward, AdamW: the loop's step without EMA) and the sampling time per image
with Heun (18 steps, 35 evaluations) INCLUDING the decoder for the latent models.  All rows are
timed in one process, alternating rows each round, so they see the same machine load; the
ratios to the pixel row are the result.  Weights are random: compute does not depend on them.

    python benchmarks/latent_compute.py --preset gpu --threads 2          # the issue's compute table
    python benchmarks/latent_compute.py --preset cpu --threads 2

Writes benchmarks/results/latent_compute_<preset>.json and .md (or --out).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from minidiff.backend import generator
from minidiff.methods import Objective, raw_to_model, run_sampler
from minidiff.torch.autoencoder import Autoencoder, AutoencoderConfig
from minidiff.torch.train import PRESETS, ImageConfig, preset_unet
from minidiff.torch.train_autoencoder import AutoencoderTrainConfig, factor_mults
from minidiff.torch.unet import UNet, UNetConfig

FACTORS = {"pixels 1x28x28": None, "latent f=2": 2, "latent f=4": 4}


def first_stage(preset: str, f: int, trained: dict) -> AutoencoderConfig:
    """The autoencoder of factor f among ``trained`` (checkpoint folders' configs by factor), else
    the one `minidiff train --model autoencoder --preset PRESET --factor F` builds."""
    if f in trained:
        return trained[f]
    return AutoencoderTrainConfig.from_preset(preset, autoencoder={"channel_mults": factor_mults(preset, f)}).autoencoder


def trained_first_stages(paths) -> dict:
    """{f: AutoencoderConfig} of autoencoder checkpoint folders (their state.json; no weights read)."""
    out = {}
    for path in paths:
        with open(os.path.join(path, "state.json")) as fh:
            a = AutoencoderConfig(**json.load(fh)["config"]["autoencoder"])
        out[a.factor] = a
    return out


def rows(preset: str, trained: dict | None = None) -> list:
    """The pixel U-Net, the same U-Net on each latent, and where the preset widens a latent model's
    U-Net (``latent_unet``), that U-Net too: the one `--autoencoder` training builds."""
    out, wider = [], PRESETS[preset].get("latent_unet", {})
    for name, f in FACTORS.items():
        a = None if f is None else first_stage(preset, f, trained or {})
        C, size = (1, 28) if a is None else a.latent_shape[:2]
        for extra in ({}, wider) if a is not None and wider else ({},):
            cfg = ImageConfig(method="edm", unet=UNetConfig(**preset_unet(preset, C, size, **extra)))
            label = name + (", the latent preset's U-Net" if extra else "")
            out.append({"name": label, "cfg": cfg, "ae": a})
    return out


def train_step_fn(cfg: ImageConfig, batch: int, device):
    """One training step of the U-Net on random inputs of its shape: the method layer's EDM loss
    (``Objective``, as ``DiffusionTask``), backward, AdamW."""
    net = UNet(cfg.unet).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    objective, u = Objective(cfg), cfg.unet
    shape = (batch, u.in_channels, u.image_size, u.image_size)
    x0 = torch.randn(shape, device=device)
    z = torch.randn(shape, device=device)
    draws = objective.draw(generator(0, backend="numpy"), shape, 0, np.float32, z=z)
    draws = {k: torch.as_tensor(v, device=device) for k, v in draws.items()}

    def step():
        loss = objective.loss(net, x0, draws, None, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net, step


def flops_per_image(cfg: ImageConfig, batch: int, device) -> float:
    _, step = train_step_fn(cfg, batch, device)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / batch


def sample_fn(row, n: int, device):
    cfg = row["cfg"]
    net = UNet(cfg.unet).to(device).eval()
    ae = Autoencoder(row["ae"]).to(device).eval() if row["ae"] is not None else None
    model = raw_to_model(net, cfg)
    u = cfg.unet

    @torch.no_grad()
    def sample():
        z = torch.randn(n, u.in_channels, u.image_size, u.image_size, device=device)
        x = run_sampler(model, cfg, "heun", 18, 0.0, z, None)
        if ae is not None:
            x = ae.decode(x)
        return x
    return sample


def timed(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="gpu", choices=("tiny", "cpu", "gpu"))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n-sample", type=int, default=32, help="images per sampling batch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--autoencoders", nargs="*", default=(), metavar="DIR",
                   help="trained autoencoder checkpoints: their latent shapes (default: the preset's first stages)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    table = rows(args.preset, trained_first_stages(args.autoencoders))
    for r in table:
        r["flops"] = flops_per_image(r["cfg"], args.batch, device)
        r["params"] = sum(q.numel() for q in UNet(r["cfg"].unet).parameters())
        r["train"], r["sample"] = train_step_fn(r["cfg"], args.batch, device)[1], sample_fn(r, args.n_sample, device)
        r["train_s"], r["sample_s"] = [], []
        r["train"](), r["sample"]()                                      # warm-up
    for k in range(args.rounds):                                        # alternate the order each round
        for r in (table if k % 2 == 0 else table[::-1]):
            r["train_s"].append(timed(r["train"], device) / args.batch)
            r["sample_s"].append(timed(r["sample"], device) / args.n_sample)
    base = table[0]
    med = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    result = {"preset": args.preset, "batch": args.batch, "n_sample": args.n_sample, "rounds": args.rounds,
              "device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv), "rows": []}
    for r in table:
        u = r["cfg"].unet
        result["rows"].append({
            "model": r["name"], "unet_input": f"{u.in_channels}x{u.image_size}x{u.image_size}",
            "channel_mults": list(u.channel_mults), "base_channels": u.base_channels, "params": r["params"],
            "gflops_per_training_image": r["flops"] / 1e9, "flops_ratio": base["flops"] / r["flops"],
            "ms_per_training_image": 1e3 * med(r["train_s"]), "train_time_ratio": med(base["train_s"]) / med(r["train_s"]),
            "ms_per_sample_heun18_with_decoder": 1e3 * med(r["sample_s"]),
            "sample_time_ratio": med(base["sample_s"]) / med(r["sample_s"])})
    out = args.out or f"benchmarks/results/latent_compute_{args.preset}"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out + ".json", "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"# Latent vs pixel compute, preset {args.preset} ({result['device']}, {result['threads']} threads, "
             f"{result['date']})", "", f"`{result['command']}`", "",
             "| model | U-Net input | base, mults | GFLOPs / training image | x fewer | ms / training image | x faster "
             "| ms / sample (Heun 18, incl. decoder) | x faster |", "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['unet_input']} | {r['base_channels']}, {r['channel_mults']} | {r['gflops_per_training_image']:.3f} "
                     f"| {r['flops_ratio']:.2f} | {r['ms_per_training_image']:.2f} | {r['train_time_ratio']:.2f} "
                     f"| {r['ms_per_sample_heun18_with_decoder']:.2f} | {r['sample_time_ratio']:.2f} |")
    with open(out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
