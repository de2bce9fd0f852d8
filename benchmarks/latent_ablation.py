"""Step-limited ablations behind the latent benchmark's choices (issue 12), one variant per call so
that several run side by side at equal steps (their quality does not depend on the machine's load):

    # first stages (f = 4, cpu preset): reconstruction of 2,000 test images
    python benchmarks/latent_ablation.py autoencoder c4 3000 '{}'
    python benchmarks/latent_ablation.py autoencoder c8 3000 '{"autoencoder": {"latent_channels": 8}}'
    python benchmarks/latent_ablation.py autoencoder c8gan 3000 \
        '{"autoencoder": {"latent_channels": 8}, "disc_weight": 0.5, "disc_start": 1000}'
    # latent EDM (cpu preset) on one autoencoder: FD of 1,000 Heun-18 samples against 10,000 test images
    python benchmarks/latent_ablation.py latent sd05 3000 '{"sigma_data": 0.5, "unet": {"base_channels": 16}}' --ae AE
    python benchmarks/latent_ablation.py latent b32 3000 '{"unet": {"base_channels": 32}}' --ae AE

Each prints one line (name, overrides, steps, training seconds, the numbers) and appends it to
--log.  Training seconds are only comparable between runs made alone on the machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def autoencoder(name: str, steps: int, over: dict, out: Path) -> dict:
    from minidiff.torch.evaluate import evaluate_autoencoder, reference_images
    from minidiff.torch.train_autoencoder import AutoencoderTrainConfig, autoencoder_from_checkpoint, train_autoencoder

    cfg = AutoencoderTrainConfig.from_preset("cpu", steps=steps, ckpt_every=0, **over)
    train_autoencoder(cfg, out / name, progress=False, log=lambda *a: None)
    net, _ = autoencoder_from_checkpoint(out / name)
    rep = evaluate_autoencoder(net, reference_images("fashion-mnist", "test", 2000, 0))
    return {k: rep.get(k) for k in ("mse", "psnr", "ssim", "fd")}


def latent(name: str, steps: int, over: dict, out: Path, ae: str) -> dict:
    from minidiff.torch.train import ImageConfig, train_images

    cfg = ImageConfig.from_preset("cpu", dataset="fashion-mnist", method="edm", autoencoder=ae, steps=steps,
                                  sample_every=0, ckpt_every=0, **over)
    train_images(cfg, out / name, device="cpu", progress=False, log=lambda *a: None)
    report = out / f"{name}_eval.json"
    subprocess.run([sys.executable, "-m", "minidiff.cli", "eval", "--ckpt", str(out / name), "--n", "1000",
                    "--sampler", "heun", "--steps", "18", "--batch-size", "500", "--n-reference", "10000",
                    "--out", str(report), "--device", "cpu"], check=True, capture_output=True)
    r = json.loads(report.read_text())
    return {"fd": r["fd"], "base_channels": cfg.unet.base_channels, "sigma_data": cfg.sigma_data}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("autoencoder", "latent"))
    p.add_argument("name")
    p.add_argument("steps", type=int)
    p.add_argument("overrides", help="JSON: config fields (the autoencoder's or the U-Net's as a nested dict)")
    p.add_argument("--ae", default="", help="latent: the autoencoder checkpoint folder")
    p.add_argument("--out", default="/tmp/minidiff_latent_ablation")
    p.add_argument("--log", default="/tmp/minidiff_latent_ablation/log.txt")
    args = p.parse_args(argv)
    out, over = Path(args.out), json.loads(args.overrides)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    numbers = (autoencoder(args.name, args.steps, over, out) if args.kind == "autoencoder"
               else latent(args.name, args.steps, over, out, args.ae))
    line = f"{args.kind} {args.name} {args.overrides} {args.steps} steps {time.time() - t0:.0f} s {numbers}"
    print(line)
    with open(args.log, "a") as f:
        f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
