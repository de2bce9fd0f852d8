"""Training throughput on CPU: our U-Net against diffusers' UNet2DModel, side by side.

The two networks are the same architecture written twice.  ``diffusers_twin`` builds the
UNet2DModel that mirrors a ``UNetConfig`` block for block: the same channels per level, residual
blocks per level (diffusers' up blocks also have one more than the down blocks), self-attention
at the same resolutions with the same number of heads, GroupNorm groups, the time embedding
injected as scale and shift ("scale_shift", our AdaGN), cos-then-sin time features, strided-conv
downsampling and nearest-upsampling + conv.  Both take Fashion-MNIST's 1x28x28 as they are: a
3-level U-Net halves 28 -> 14 -> 7 and diffusers needs no padding for that.  ``port_weights``
copies our initial weights into the twin; the script checks that both give the same output, so
the two sides time the same function with the same weights, batches and parameter count.

One training step = forward, eps-MSE loss (DDPM: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,
linear betas, T = 1000), backward, gradient clipping at 1, AdamW update (torch defaults,
foreach), on real Fashion-MNIST images in float32.  After a warm-up the two steps are timed
alternately (the order flips every round) so both see the same machine load.

    python benchmarks/unet_vs_diffusers.py --threads 1                 # the 'cpu' preset's U-Net
    python benchmarks/unet_vs_diffusers.py --threads 1 --config gpu    # the 'gpu' preset's (batch 32)

Writes benchmarks/results/unet_vs_diffusers_<config>_threads<N>.json and .md (or ``--out``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from minidiff.schedules import alpha_bars, linear_betas
from minidiff.torch.train import PRESETS, ImageConfig
from minidiff.torch.unet import Attention, Downsample, ResBlock, UNet, UNetConfig, Upsample

warnings.filterwarnings("ignore", category=FutureWarning)

LR = 1e-4
CLIP = 1.0
N_BATCHES = 4   # pre-drawn batches, cycled, so data preparation is not timed
T = 1000


def unet_config(preset: str) -> UNetConfig:
    """The U-Net that ``minidiff train --preset PRESET --dataset fashion-mnist`` builds."""
    return ImageConfig.from_preset(preset, dataset="fashion-mnist").unet


def diffusers_twin(cfg: UNetConfig):
    """diffusers' UNet2DModel with the architecture of our ``UNet(cfg)`` (unconditional)."""
    from diffusers import UNet2DModel

    if cfg.num_classes is not None or cfg.time_embedding != "sinusoidal":
        raise ValueError("diffusers_twin mirrors unconditional U-Nets with the sinusoidal time embedding only")
    chans = [cfg.base_channels * m for m in cfg.channel_mults]
    attn = [res in cfg.attention_resolutions for res in cfg.resolutions]
    attn_chans = {c for c, a in zip(chans, attn) if a}      # our middle block has attention iff attn[-1]
    # UNet2DModel takes one attention_head_dim for all levels and its middle block:
    # heads = channels / head_dim, so our num_heads everywhere needs equal channels wherever attention runs.
    if len(attn_chans) > 1:
        raise ValueError(f"diffusers_twin needs the same channel count at every attention level and the middle, "
                         f"got {sorted(attn_chans)}")
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
        block_out_channels=tuple(chans), layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=chans[-1] // cfg.num_heads, norm_num_groups=cfg.groups, attn_norm_num_groups=cfg.groups,
        add_attention=attn[-1], resnet_time_scale_shift="scale_shift", dropout=cfg.dropout,
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0)


def _blocks_in_call_order(net, kinds, x, t) -> list:
    """The modules of the given types in the order a forward pass enters them."""
    order = []
    hooks = [m.register_forward_pre_hook(lambda m, args: order.append(m)) for m in net.modules()
             if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            net(x, t)
    finally:
        for h in hooks:
            h.remove()
    return order


@torch.no_grad()
def port_weights(ours: UNet, theirs) -> None:
    """Copy every weight of ``ours`` into its diffusers twin (in place)."""
    from diffusers.models.attention_processor import Attention as DAttention
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    def copy(dst: nn.Module, src: nn.Module):
        for name, p in src.named_parameters(recurse=False):
            getattr(dst, name).copy_(p.reshape(getattr(dst, name).shape))

    cfg = ours.config
    x = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    t = torch.zeros(1, dtype=torch.long)
    a = _blocks_in_call_order(ours, (ResBlock, Attention, Downsample, Upsample), x, t)
    b = _blocks_in_call_order(theirs, (ResnetBlock2D, DAttention, Downsample2D, Upsample2D), x, t)
    pairs = {ResBlock: ResnetBlock2D, Attention: DAttention, Downsample: Downsample2D, Upsample: Upsample2D}
    if len(a) != len(b) or any(not isinstance(d, pairs[type(s)]) for s, d in zip(a, b)):
        raise ValueError(f"the twin's blocks ({len(b)}) do not pair with ours ({len(a)}): not the same architecture")
    for src, dst in zip(a, b):
        if isinstance(src, ResBlock):
            for s, d in (("norm1", "norm1"), ("conv1", "conv1"), ("emb", "time_emb_proj"), ("norm2", "norm2"),
                         ("conv2", "conv2")):
                copy(getattr(dst, d), getattr(src, s))
            if isinstance(src.skip, nn.Conv2d):
                copy(dst.conv_shortcut, src.skip)
        elif isinstance(src, Attention):
            copy(dst.group_norm, src.norm)
            C = src.proj.weight.shape[0]
            for i, d in enumerate((dst.to_q, dst.to_k, dst.to_v)):   # qkv rows: [q; k; v], C each
                d.weight.copy_(src.qkv.weight[i * C:(i + 1) * C, :, 0, 0])
                d.bias.copy_(src.qkv.bias[i * C:(i + 1) * C])
            copy(dst.to_out[0], src.proj)
        else:
            copy(dst.conv, src.conv)
    for s, d in ((ours.time_mlp[0], theirs.time_embedding.linear_1), (ours.time_mlp[2], theirs.time_embedding.linear_2),
                 (ours.stem, theirs.conv_in), (ours.out[0], theirs.conv_norm_out), (ours.out[2], theirs.conv_out)):
        copy(d, s)


def build_pair(cfg: UNetConfig, seed: int = 0):
    """(ours with its own initialisation, its twin with the same weights)."""
    torch.manual_seed(seed)
    ours = UNet(cfg)
    theirs = diffusers_twin(cfg)
    port_weights(ours, theirs)
    return ours.train(), theirs.train()


@torch.no_grad()
def equivalence_check(cfg: UNetConfig, seed: int = 0) -> dict:
    """Our U-Net with random O(1) weights (not the near-zero initialisation, whose output is ~1e-5)
    against its twin with the same weights, in eval mode: max |difference| / max |output|."""
    torch.manual_seed(seed)
    ours = UNet(cfg).eval()
    for p in ours.parameters():
        p.normal_(0.0, 0.3)
    theirs = diffusers_twin(cfg).eval()
    port_weights(ours, theirs)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.tensor([0, 10, 250, 999])
    y_ours, y_theirs = ours(x, t), theirs(x, t).sample
    scale = float(y_ours.abs().max())
    return {"max_abs_output": scale, "max_abs_diff": float((y_ours - y_theirs).abs().max()),
            "rel_diff": float((y_ours - y_theirs).abs().max()) / scale}


def _batches(cfg: UNetConfig, batch_size: int, seed: int = 1):
    """N_BATCHES (x_t, t, eps) of real Fashion-MNIST training images, DDPM-noised."""
    from minidiff.data.images import load_images, to_model_range

    imgs, _ = load_images("fashion-mnist", "train", limit=N_BATCHES * batch_size)
    x0 = torch.from_numpy(to_model_range(imgs))                        # (N, 1, 28, 28)
    abar = torch.from_numpy(alpha_bars(linear_betas(T))).float()
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(N_BATCHES):
        x = x0[i * batch_size:(i + 1) * batch_size]
        t = torch.randint(0, T, (batch_size,), generator=g)
        eps = torch.randn(x.shape, generator=g)
        a = abar[t][:, None, None, None]
        out.append((a.sqrt() * x + (1 - a).sqrt() * eps, t, eps))      # x_t, DDPM eq. (4)
    return out


def make_step(net: nn.Module, forward):
    """One training step of ``net``: forward, eps-MSE, backward, clip, AdamW.  Returns the loss."""
    opt = torch.optim.AdamW(net.parameters(), lr=LR)

    def step(x_t, t, eps) -> float:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(forward(x_t, t), eps)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), CLIP)
        opt.step()
        return float(loss.detach())

    return step


def measure(cfg: UNetConfig, batch_size: int, warmup: int, rounds: int) -> dict:
    same = equivalence_check(cfg)
    ours, theirs = build_pair(cfg)
    n_ours, n_theirs = (sum(p.numel() for p in m.parameters()) for m in (ours, theirs))
    step_ours = make_step(ours, lambda x, t: ours(x, t))
    step_theirs = make_step(theirs, lambda x, t: theirs(x, t).sample)
    batches = _batches(cfg, batch_size)
    first = []
    for i in range(max(warmup, 3)):
        b = batches[i % N_BATCHES]
        first.append((step_ours(*b), step_theirs(*b)))
    t_ours, t_theirs = [], []
    timer = time.perf_counter
    for r in range(rounds):
        b = batches[r % N_BATCHES]
        order = ((step_ours, t_ours), (step_theirs, t_theirs)) if r % 2 == 0 else \
            ((step_theirs, t_theirs), (step_ours, t_ours))
        for step, out in order:
            t0 = timer()
            step(*b)
            out.append(timer() - t0)
    a, b = np.asarray(t_ours), np.asarray(t_theirs)
    med_a, med_b = float(np.median(a)), float(np.median(b))
    return {"batch_size": batch_size, "rounds": rounds, "warmup": warmup,
            "params_ours": n_ours, "params_diffusers": n_theirs,
            "params_rel_diff": round((n_theirs - n_ours) / n_ours, 6),
            "same_weights_same_output": same,
            "ours_ms_median": round(1e3 * med_a, 2), "diffusers_ms_median": round(1e3 * med_b, 2),
            "ours_ms_iqr": [round(1e3 * q, 2) for q in np.percentile(a, [25, 75])],
            "diffusers_ms_iqr": [round(1e3 * q, 2) for q in np.percentile(b, [25, 75])],
            "ours_images_per_s": round(batch_size / med_a, 2), "diffusers_images_per_s": round(batch_size / med_b, 2),
            # > 1: ours trains more images per second
            "ratio_images_per_s_ours_over_diffusers": round(med_b / med_a, 3),
            "median_of_paired_ratios": round(float(np.median(b / a)), 3),
            "first_losses_ours_diffusers": [[round(x, 5), round(y, 5)] for x, y in first[:3]]}


def _markdown(rec: dict) -> str:
    r, c, load = rec["result"], rec["unet"], rec["machine"]["loadavg_before_after"]
    return "\n".join([
        f"# Our U-Net vs diffusers' UNet2DModel: CPU training throughput ({rec['config']} preset)",
        "",
        f"`{rec['command']}` -- {rec['date']}, {rec['machine']['platform']}, {rec['machine']['cpu_count']} CPUs, "
        f"torch {rec['machine']['torch']} ({rec['threads']['torch_num_threads']} threads), "
        f"diffusers {rec['machine']['diffusers']}; load average (1 min) before {load[0][0]:.1f}, after {load[1][0]:.1f}",
        "",
        f"U-Net: {rec['summary']}; dropout {c['dropout']}.  Input 1x28x28 on both sides (no padding).",
        "",
        "| side | parameters | ms / step (median) | IQR | images / s |",
        "|---|---:|---:|---:|---:|",
        f"| ours (`minidiff.torch.unet.UNet`) | {r['params_ours']:,} | {r['ours_ms_median']:.1f} | "
        f"{r['ours_ms_iqr'][0]:.1f}-{r['ours_ms_iqr'][1]:.1f} | {r['ours_images_per_s']:.1f} |",
        f"| diffusers `UNet2DModel` (twin) | {r['params_diffusers']:,} | {r['diffusers_ms_median']:.1f} | "
        f"{r['diffusers_ms_iqr'][0]:.1f}-{r['diffusers_ms_iqr'][1]:.1f} | {r['diffusers_images_per_s']:.1f} |",
        "",
        f"**ratio (images/s ours / diffusers) = {r['ratio_images_per_s_ours_over_diffusers']:.3f}** "
        f"(median of per-round ratios {r['median_of_paired_ratios']:.3f}); batch {r['batch_size']}, "
        f"{r['rounds']} interleaved rounds after {r['warmup']} warm-up steps each.",
        "",
        f"Same architecture: with the same random weights (ported) the outputs differ by at most "
        f"{r['same_weights_same_output']['max_abs_diff']:.1e} (outputs up to "
        f"{r['same_weights_same_output']['max_abs_output']:.2f}).  Both sides start from our initial weights; "
        f"first losses (ours, diffusers): {r['first_losses_ours_diffusers']}.",
        "One step: forward, eps-MSE, backward, clip_grad_norm_(1.0), AdamW (foreach), float32.",
        ""])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cpu", choices=("tiny", "cpu", "gpu"),
                    help="whose U-Net: the preset of `minidiff train --preset` (default cpu)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="default: the preset's batch size; 32 for the gpu preset (its 256 takes ~50 s a step on "
                         "one core)")
    ap.add_argument("--rounds", type=int, default=None, help="timed steps per side (default 60; 12 for --config gpu)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="if > 0: torch.set_num_threads(N); 0 (default): torch's default (one per core)")
    ap.add_argument("--out", default=None, help="the JSON file (the .md goes beside it)")
    args = ap.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = unet_config(args.config)
    batch = args.batch_size or (32 if args.config == "gpu" else PRESETS[args.config]["batch_size"])
    rounds = args.rounds or (12 if args.config == "gpu" else 60)
    import diffusers

    summary = UNet(cfg).summary()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), diffusers {diffusers.__version__}")
    print(f"{summary}; batch {batch}, {rounds} interleaved rounds after {args.warmup} warm-up steps", flush=True)
    load_before = os.getloadavg()
    r = measure(cfg, batch, args.warmup, rounds)
    load_after = os.getloadavg()
    print(f"parameters: ours {r['params_ours']:,}, diffusers {r['params_diffusers']:,} "
          f"({100 * r['params_rel_diff']:+.3f}%); same random weights -> max |output diff| "
          f"{r['same_weights_same_output']['max_abs_diff']:.1e} of outputs up to "
          f"{r['same_weights_same_output']['max_abs_output']:.2f}")
    print(f"ours      {r['ours_ms_median']:9.1f} ms/step  {r['ours_images_per_s']:8.1f} images/s")
    print(f"diffusers {r['diffusers_ms_median']:9.1f} ms/step  {r['diffusers_images_per_s']:8.1f} images/s")
    print(f"ratio images/s ours/diffusers {r['ratio_images_per_s_ours_over_diffusers']:.3f} "
          f"(paired {r['median_of_paired_ratios']:.3f}); load average before {load_before}, after {load_after}")

    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"unet_vs_diffusers_{args.config}" +
                                   (f"_threads{args.threads}" if args.threads else "") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    rec = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
           "machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "torch": torch.__version__, "diffusers": diffusers.__version__,
                       "loadavg_before_after": [load_before, load_after]},
           "threads": {"torch_num_threads": torch.get_num_threads(),
                       "torch_interop_threads": torch.get_num_interop_threads()},
           "config": args.config, "summary": summary, "unet": json.loads(json.dumps(cfg.__dict__)),
           "step": {"loss": "eps-MSE, DDPM linear betas, T=1000", "clip": CLIP, "optimizer": "AdamW (foreach)",
                    "lr": LR, "dtype": "float32", "input": "1x28x28 both sides, no padding"},
           "result": r}
    with open(out, "w") as f:
        json.dump(rec, f, indent=1)
    md = os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(_markdown(rec))
    print(f"wrote {out} and {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
