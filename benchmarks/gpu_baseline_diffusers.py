"""The baseline of benchmarks/gpu_fashion_mnist.sh: a plain diffusers DDPM on Fashion-MNIST.

diffusers' UNet2DModel sized like our U-Net of ``--preset`` (``unet_vs_diffusers.diffusers_twin``:
the same channels, blocks, attention resolutions and heads, within a few hundred parameters of
ours), with diffusers' own initialisation, trained the way diffusers' examples train a DDPM:
``DDPMScheduler.add_noise`` (linear betas, T = 1000) and the eps-MSE loss (Ho et al. 2020,
Algorithm 1).  The rest of the recipe is ours, so that only the method and the network differ:
AdamW with the preset's learning rate and linear warm-up, gradient clipping at 1, bf16 autocast
on CUDA, the preset's EMA decay with the same warm-up, the same batch size and the same
wall-clock budget.  Then ``--n`` samples from the EMA weights with DDIMScheduler (eta 0, 50
steps; float32, like ``minidiff eval``), scored with ``minidiff.torch.evaluate.evaluate_images``.

    python benchmarks/gpu_baseline_diffusers.py --preset gpu --max-seconds 150 --out runs/baseline
    python benchmarks/gpu_baseline_diffusers.py --preset tiny --max-seconds 10 --n 200 --n-reference 500 --device cpu

Writes OUT/baseline.json and OUT/baseline_grid.png.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_vs_diffusers import diffusers_twin  # noqa: E402

from minidiff.torch.loop import lr_at, pick_device  # noqa: E402
from minidiff.torch.train import ImageConfig  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def train(model, ema, data, cfg: ImageConfig, args, device, log=print) -> dict:
    """DDPM training of ``model`` (eps-MSE) until ``args.max_seconds`` or ``cfg.steps``."""
    from diffusers import DDPMScheduler

    from minidiff.data.images import to_model_range

    cuda = device.type == "cuda"
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    g = torch.Generator(device=device).manual_seed(args.seed)
    B, N = cfg.batch_size, len(data)
    perm, j = torch.randperm(N, generator=g, device=device), 0
    losses, k = [], 0
    model.train()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    while k < cfg.steps:
        if j + B > N:                                                  # a new epoch
            perm, j = torch.randperm(N, generator=g, device=device), 0
        x0 = to_model_range(data[perm[j:j + B]])                       # (B, 1, 28, 28) in [-1, 1]
        j += B
        noise = torch.randn(x0.shape, generator=g, device=device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (B,), generator=g, device=device)
        x_t = scheduler.add_noise(x0, noise, t)                       # DDPM eq. (4)
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, k)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and not args.no_bf16):
            pred = model(x_t, t).sample
        loss = F.mse_loss(pred.float(), noise)                        # Algorithm 1, line 5
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(cfg.ema_decay, (1 + k) / (10 + k))             # the same EMA warm-up as ours
            torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
        k += 1
        if k % 50 == 0 or k == 1:
            losses.append((k, float(loss.detach())))
            if k % 1000 == 0:
                log(f"baseline step {k}: loss {losses[-1][1]:.4f} ({time.perf_counter() - t0:.0f} s)")
        if time.perf_counter() - t0 > args.max_seconds:
            break
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"steps": k, "seconds": seconds, "images_per_second": k * B / seconds, "losses_every_50": losses,
            "recent_loss": sum(v for _, v in losses[-5:]) / max(len(losses[-5:]), 1)}


@torch.no_grad()
def sample(net, n: int, batch_size: int, sampler: str, steps: int, seed: int, device, shape) -> torch.Tensor:
    """``n`` images in [-1, 1] with diffusers' DDIM (eta 0) or DDPM sampler: (n, C, H, W) float32 on the CPU."""
    from diffusers import DDIMScheduler, DDPMScheduler

    ddpm = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    scheduler = DDIMScheduler.from_config(ddpm.config) if sampler == "ddim" else ddpm
    scheduler.set_timesteps(steps)
    net.eval()
    out = []
    for i, s in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - s)
        g = torch.Generator(device=device).manual_seed(seed * 1_000_003 + i)
        x = torch.randn((b,) + tuple(shape), generator=g, device=device)    # x_T: (b, C, H, W)
        for t in scheduler.timesteps:
            eps = net(x, t).sample
            step = scheduler.step(eps, t, x, eta=0.0) if sampler == "ddim" else scheduler.step(eps, t, x, generator=g)
            x = step.prev_sample
        out.append(x.clamp(-1, 1).float().cpu())
    return torch.cat(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpu", choices=("tiny", "cpu", "gpu"),
                    help="size the network, batch, lr, warm-up and EMA like `minidiff train --preset`")
    ap.add_argument("--max-seconds", type=float, default=150.0, help="training budget (wall clock)")
    ap.add_argument("--steps", type=int, default=None, help="at most this many steps (default: the preset's)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--n", type=int, default=10000, help="samples to evaluate")
    ap.add_argument("--sample-batch", type=int, default=1000)
    ap.add_argument("--sampler", default="ddim", choices=("ddim", "ddpm"))
    ap.add_argument("--sampling-steps", type=int, default=50)
    ap.add_argument("--n-reference", type=int, default=10000, help="test images to compare with")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda, then mps, then cpu")
    ap.add_argument("--no-bf16", action="store_true", help="train in float32 on CUDA too")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network for training")
    ap.add_argument("--data-root", default=None, help="Fashion-MNIST's folder (default: $MINIDIFF_FASHION_MNIST, "
                    "then /usr/share/datasets/fashion-mnist)")
    ap.add_argument("--out", default="runs/baseline", help="folder for baseline.json and baseline_grid.png")
    args = ap.parse_args(argv)

    import diffusers

    from minidiff.data.images import load_images
    from minidiff.plot import save_image_grid
    from minidiff.torch.evaluate import evaluate_images

    overrides = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr))
                 if v is not None}
    cfg = ImageConfig.from_preset(args.preset, dataset="fashion-mnist", seed=args.seed, **overrides)
    device = pick_device(args.device)
    cuda = device.type == "cuda"
    device_name = torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine()
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True                  # as minidiff's trainer
        torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    t_start = time.perf_counter()
    images, _ = load_images("fashion-mnist", "train", root=args.data_root)
    data = torch.from_numpy(images).to(device)                         # (60000, 1, 28, 28) uint8
    torch.manual_seed(args.seed)
    model = diffusers_twin(cfg.unet).to(device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"baseline: diffusers {diffusers.__version__} UNet2DModel, {n_params:,} parameters, on {device_name}; "
          f"DDPM eps-MSE, batch {cfg.batch_size}, lr {cfg.lr} (warm-up {cfg.warmup}), EMA {cfg.ema_decay}, "
          f"{args.max_seconds:.0f} s budget", flush=True)
    net = torch.compile(model) if args.compile else model
    tr = train(net, ema, data, cfg, args, device)
    print(f"baseline trained {tr['steps']} steps in {tr['seconds']:.1f} s ({tr['images_per_second']:.0f} images/s, "
          f"recent loss {tr['recent_loss']:.4f})", flush=True)

    torch.backends.cuda.matmul.allow_tf32 = False                      # sample as `minidiff eval` does
    t0 = time.perf_counter()
    x = sample(ema, args.n, args.sample_batch, args.sampler, args.sampling_steps, args.seed, device,
               data.shape[1:])
    if cuda:
        torch.cuda.synchronize()
    sampling_seconds = time.perf_counter() - t0
    print(f"baseline: {args.n} samples ({args.sampler}, {args.sampling_steps} steps) in {sampling_seconds:.1f} s",
          flush=True)
    save_image_grid(x[:64], out / "baseline_grid.png")
    t0 = time.perf_counter()
    report = evaluate_images(x, reference="fashion-mnist", n_reference=args.n_reference, seed=args.seed,
                             root=args.data_root)
    eval_seconds = time.perf_counter() - t0
    print(f"baseline: {report.get('fd_label', 'FD')} {report['fd']:.3f}, KID {report['kid_mean']:.5f} "
          f"+- {report['kid_std']:.5f} ({report['n_samples']} samples vs {report['n_reference']})", flush=True)
    rec = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
           "device": str(device), "device_name": device_name, "torch": torch.__version__,
           "diffusers": diffusers.__version__, "preset": args.preset, "parameters": n_params,
           "recipe": {"model": "diffusers UNet2DModel (diffusers_twin of the preset's U-Net), diffusers' init",
                      "loss": "eps-MSE, DDPMScheduler.add_noise, linear betas, T=1000",
                      "batch_size": cfg.batch_size, "lr": cfg.lr, "warmup": cfg.warmup, "ema_decay": cfg.ema_decay,
                      "clip": 1.0, "bf16": cuda and not args.no_bf16, "compile": args.compile,
                      "max_seconds": args.max_seconds, "max_steps": cfg.steps},
           "train": tr, "sampler": args.sampler, "sampling_steps": args.sampling_steps,
           "nfe": args.sampling_steps, "sampling_seconds": sampling_seconds, "eval_seconds": eval_seconds,
           "total_seconds": time.perf_counter() - t_start, **report}
    (out / "baseline.json").write_text(json.dumps(rec, indent=1, default=str))
    print(f"wrote {out / 'baseline.json'} and {out / 'baseline_grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
