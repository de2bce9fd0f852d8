"""Masked diffusion on torch: binarised Fashion-MNIST with the U-Net, captions with a small transformer.

Trains both models of ``minidiff.torch.masked_diffusion`` (preset ``--preset``, each for at most
``--seconds-images`` / ``--seconds-captions`` of training time), samples them by unmasking and
records:

- images (784 binary tokens): the FD of the shipped classifier's features of ``--n-images``
  samples against the binarised test set, beside the floor (as many binarised TRAINING images
  against the same test set); the classifier was trained on grey levels, so only these two FDs
  compare, not a grey-level FD.  The light-pixel fraction, and MDLM's bound in bits per pixel on
  test images beside the cross-entropy of the best factorised model (independent pixels with the
  training set's per-pixel frequencies).  Class accuracy: not applicable (unconditional).
- captions (24 tokens, [PAD] generated as a token): the fraction of ``--n-captions`` samples that
  ``parse_caption`` parses, that are well formed, their class distribution's total variation to
  the corpus's, and the fraction copied exactly from the training corpus beside the same fraction
  for the held-out test captions; MDLM's bound in nats per token on test captions beside the
  per-position unigram cross-entropy.

    OMP_NUM_THREADS=1 python benchmarks/discrete_fashion_mnist.py                  # CPU, about 12 minutes
    python benchmarks/discrete_fashion_mnist.py --device cuda --preset gpu --seconds-images 1800 \\
        --seconds-captions 600 --n-images 10000 --n-captions 10000 --sample-steps 784 \\
        --out benchmarks/results/discrete_fashion_mnist_gpu.md                    # GPU variant (not run)

Writes benchmarks/results/discrete_fashion_mnist.md (or ``--out``) and a .json beside it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from minidiff.torch import masked_diffusion as md


def factorised_cross_entropy(train, test, V: int) -> float:
    """The cross-entropy (nats per token) on ``test`` of independent tokens with the training
    set's per-position frequencies (add-one smoothed): the best model with no dependence."""
    tr, te = train.reshape(len(train), -1), test.reshape(len(test), -1)
    counts = np.stack([np.bincount(tr[:, j], minlength=V) for j in range(tr.shape[1])]) + 1.0   # (P, V)
    logp = np.log(counts / counts.sum(1, keepdims=True))
    return float(-logp[np.arange(te.shape[1])[None], te].mean())


def run(data, args, out_dir: Path, log) -> dict:
    seconds = args.seconds_images if data == "fashion-mnist" else args.seconds_captions
    cfg = md.MaskedDiffusionConfig.from_preset(args.preset, data=data, max_seconds=seconds, steps=args.max_steps,
                                               sample_steps=args.sample_steps)
    r = md.train_masked(cfg, out_dir / data, device=args.device, progress=False, log=log)
    net, cfg = md.model_from_checkpoint(out_dir / data, device=args.device or "cpu")
    train = md.training_tokens(cfg)
    test = md.training_tokens(cfg, "test")
    n = args.n_images if data == "fashion-mnist" else args.n_captions
    t0 = time.perf_counter()
    samples = torch.cat([md.sample_tokens(net, cfg, min(args.sample_batch, n - i), seed=args.seed + i)
                         for i in range(0, n, args.sample_batch)])
    sample_s = time.perf_counter() - t0
    n_bound = min(len(test), args.n_bound)
    bound = md.bound_per_token(net, cfg, torch.as_tensor(test[:n_bound]), n_times=2, seed=args.seed)
    factorised = factorised_cross_entropy(train, test[:n_bound], cfg.states)
    out = {"steps": r["steps"], "train_seconds": r["seconds"], "sample_seconds": sample_s,
           "loss_first_50": float(np.mean(r["losses"][:50])), "loss_last_50": float(np.mean(r["losses"][-50:])),
           "parameters": sum(p.numel() for p in net.parameters()), "batch_size": cfg.batch_size,
           "sample_steps": cfg.sample_steps, "bound_nats_per_token_test": bound,
           "factorised_nats_per_token_test": factorised, "n_bound": n_bound}
    if data == "fashion-mnist":
        ref = test[:args.n_reference]
        out.update(md.binary_image_report(samples, ref, train))
        from minidiff.plot import save_image_grid

        save_image_grid(md.tokens_to_images(samples[:64]).numpy(), args.out.with_suffix(".png"))
    else:
        out.update(md.caption_report(samples, train, test))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device")
    ap.add_argument("--seconds-images", type=float, default=420.0)
    ap.add_argument("--seconds-captions", type=float, default=150.0)
    ap.add_argument("--max-steps", type=int, default=100_000, help="steps, if the time runs out later")
    ap.add_argument("--n-images", type=int, default=256)
    ap.add_argument("--n-reference", type=int, default=2000)
    ap.add_argument("--n-captions", type=int, default=1000)
    ap.add_argument("--n-bound", type=int, default=500)
    ap.add_argument("--sample-steps", type=int, default=64)
    ap.add_argument("--sample-batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=Path("runs/discrete_fashion_mnist"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "discrete_fashion_mnist.md")
    args = ap.parse_args(argv)
    command = "python benchmarks/discrete_fashion_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {}
    for data in md.DATA:
        results[data] = run(data, args, args.runs, log=print)
        print(data, json.dumps({k: v for k, v in results[data].items() if k != "examples"}, default=str))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "command": command,
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "device": args.device or "cpu"}
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, **results}, indent=1, default=str) + "\n")
    args.out.write_text(report(meta, results, args))
    print(f"wrote {args.out}")


def report(meta, res, args) -> str:
    im, ca = res["fashion-mnist"], res["captions"]
    bits = 1 / np.log(2)
    lines = [
        "# Masked diffusion on torch: binarised Fashion-MNIST and captions (benchmarks/discrete_fashion_mnist.py)", "",
        f"Date {meta['date']}, {meta['cpus']} CPUs, {meta['threads']} torch thread(s), torch {meta['torch']}, "
        f"device {meta['device']}.", "", f"Command: `OMP_NUM_THREADS=1 {meta['command']}`", "",
        "## Binarised Fashion-MNIST (784 tokens in {0, 1}, [MASK] = 2; U-Net, MDLM loss, linear schedule)", "",
        f"{im['parameters']:,} parameters, {im['steps']} steps of batch {im['batch_size']} in {im['train_seconds']:.0f} s "
        f"(loss {im['loss_first_50']:.4f} over the first 50 steps, {im['loss_last_50']:.4f} nats/pixel over the last 50); "
        f"{im['n_samples']} samples (EMA weights), {im['sample_steps']} unmasking steps, {im['sample_seconds']:.0f} s.", "",
        "| measure | samples | reference |", "|---|---|---|",
        f"| FD (shipped classifier's features) to {im['n_reference']} binarised test images | "
        f"{im['fd_vs_binarised_test']:.2f} | floor {im['fd_floor_binarised_train_vs_test']:.2f} "
        f"({im['n_samples']} binarised training images); ratio {im['fd_ratio_to_floor']:.2f} |",
        f"| light-pixel fraction | {im['light_fraction_samples']:.4f} | test {im['light_fraction_test']:.4f} |",
        f"| bound on -log p(x), bits/pixel, {im['n_bound']} test images | {im['bound_nats_per_token_test'] * bits:.4f} "
        f"| independent pixels {im['factorised_nats_per_token_test'] * bits:.4f} |",
        "| class accuracy | n/a (unconditional) | |", "",
        "The FD is on a classifier trained on grey-level images: it compares binarised samples with "
        "binarised data (and the floor), not with any grey-level FD of the other benchmarks.", "",
        f"Samples: `{args.out.with_suffix('.png').name}`.", "",
        "## Captions (24 tokens, [PAD] a generated token, [MASK] = vocabulary size; transformer)", "",
        f"{ca['parameters']:,} parameters, {ca['steps']} steps of batch {ca['batch_size']} in {ca['train_seconds']:.0f} s "
        f"(loss {ca['loss_first_50']:.4f} -> {ca['loss_last_50']:.4f} nats/token); {ca['n_samples']} samples, "
        f"{ca['sample_steps']} unmasking steps, {ca['sample_seconds']:.0f} s.", "",
        "| measure | value |", "|---|---|",
        f"| parsed by `parse_caption` (one class, attributes consistent) | {ca['parsed_fraction']:.3f} |",
        f"| well formed ([BOS] words [EOS] [PAD]...) | {ca['well_formed_fraction']:.3f} |",
        f"| class distribution, total variation to the corpus's | {ca['class_tv_to_corpus']:.3f} |",
        f"| exact copies of a training caption | {ca['copy_fraction']:.3f} (test captions: "
        f"{ca['copy_fraction_test_captions']:.3f}) |",
        f"| distinct samples | {ca['unique_fraction']:.3f} |",
        f"| bound, nats/token, {ca['n_bound']} test captions | {ca['bound_nats_per_token_test']:.4f} "
        f"(per-position unigrams {ca['factorised_nats_per_token_test']:.4f}) |", "",
        f"Class distribution of the parsed samples: {ca['class_distribution_samples']}",
        f"of the corpus: {ca['class_distribution_corpus']}", "",
        "The corpus is made of templates and repeats itself: the copy fraction of held-out test "
        "captions is the floor against which the samples' copies say something about memorisation.", "",
        "Examples:", "", *[f"- {t}" for t in ca["examples"]], "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
