"""The summary table of ``benchmarks/latent_fashion_mnist.sh`` (its results folder, run folder,
budget, mode and factors as arguments): summary.json and summary.md."""
import datetime
import json
import os
import re
import sys
from pathlib import Path


def main(res, run, budget, mode, factors) -> int:
    res, run, budget, factors = Path(res), Path(run), float(budget), factors.split()
    log = (res / "log.txt").read_text()
    ips = [float(x) for x in re.findall(r"trained to step \d+ \((\d+) images/s", log)]   # the AEs, the latents, pixel
    sides = [f"latent{f}" for f in factors] + ["pixel"]
    ev = {s: json.loads((res / f"{s}_eval.json").read_text()) for s in sides}
    sto = {s: json.loads(p.read_text()) for s in sides if (p := res / f"{s}_eval_stochastic.json").exists()}
    st = {s: json.loads((run / s / "state.json").read_text()) for s in sides}
    compute = json.loads((res / "compute.json").read_text())
    summary = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "mode": mode, "budget_seconds": budget,
               "n_samples": ev["pixel"]["n_samples"], "n_reference": ev["pixel"]["n_reference"],
               "feature": ev["pixel"]["feature"], "compute": compute["rows"], "autoencoders": {},
               "train_args": os.environ.get("TRAIN_ARGS", "")}
    for i, f in enumerate(factors):
        ae = json.loads((res / f"ae{f}_eval.json").read_text())
        secs = int(re.findall(rf"autoencoder f={f} wall seconds: (\d+)", log)[-1])
        summary["autoencoders"][f] = {"wall_seconds": secs, "images_per_second": ips[i] if len(ips) > i else None,
                                      **{k: ae.get(k) for k in ("mse", "psnr", "ssim", "fd", "n_images")}}
    for i, s in enumerate(sides):
        j = len(factors) + i
        summary[s] = {"steps": st[s]["step"], "images_per_second": ips[j] if len(ips) > j else None,
                      "fd": ev[s]["fd"], "kid_mean": ev[s]["kid_mean"], "kid_std": ev[s]["kid_std"],
                      "sampling_seconds": ev[s]["sampling_seconds"], "unet": st[s]["config"]["unet"],
                      "scale_factor": st[s]["config"].get("scale_factor"),
                      "fd_ratio_to_pixel": ev[s]["fd"] / ev["pixel"]["fd"],
                      "fd_stochastic": sto[s]["fd"] if s in sto else None}
    (res / "summary.json").write_text(json.dumps(summary, indent=1))
    L = [f"# Latent vs pixel EDM on Fashion-MNIST, {budget:.0f} s of diffusion training each ({mode}, "
         f"{summary['date']})", "", "First stages (KL autoencoders), reconstruction of test images:", "",
         "| f | training s | images | MSE | PSNR dB | SSIM | reconstruction FD |", "|---|---:|---:|---:|---:|---:|---:|"]
    for f, a in summary["autoencoders"].items():
        fd = "n/a" if a["fd"] is None else f"{a['fd']:.2f}"
        L.append(f"| {f} | {a['wall_seconds']} | {a['n_images']} | {a['mse']:.4f} | {a['psnr']:.2f} | "
                 f"{a['ssim']:.3f} | {fd} |")
    if summary["train_args"]:
        L += ["", f"Both diffusion trainings with `{summary['train_args']}` (TRAIN_ARGS)."]
    L += ["", f"{summary['n_samples']} samples (Heun 18, 35 NFE) vs {summary['n_reference']} test images, "
          f"{summary['feature']}", "",
          "| model | U-Net input | steps | training images/s | FD | FD / pixel FD | KID | sampling s (incl. decoder) "
          "| FD, stochastic 40 steps, S_churn 40 (79 NFE) |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sides:
        r, u = summary[s], summary[s]["unet"]
        L.append(f"| {s} | {u['in_channels']}x{u['image_size']}x{u['image_size']}, base {u['base_channels']} | {r['steps']} | "
                 f"{r['images_per_second'] or float('nan'):.0f} | {r['fd']:.2f} | {r['fd_ratio_to_pixel']:.3f} | "
                 f"{r['kid_mean']:.4f} +- {r['kid_std']:.4f} | {r['sampling_seconds']:.1f} | "
                 f"{'n/a' if r['fd_stochastic'] is None else format(r['fd_stochastic'], '.2f')} |")
    L += ["", (res / "compute.md").read_text()]
    (res / "summary.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
