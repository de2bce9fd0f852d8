"""Evaluating image samples: FD and KID on the Fashion-MNIST classifier's features, and the
accuracy of class-conditional samples.

The metrics themselves are NumPy functions in ``minidiff.metrics`` (lesson 10); this file only
turns images into feature vectors with a network.  By default that network is the small CNN
shipped in ``minidiff/torch/weights`` (see ``minidiff.torch.classifier``), so the number reported
is "FD (Fashion-MNIST classifier features)": the formula of FID on other features.  It is
comparable across runs of this project, not with published FID values.  With the Inception-v3
weights file of torch-fidelity on disk, ``evaluate_images(..., inception_weights=PATH)`` adds
torchmetrics' FID as well; nothing is ever downloaded.

    from minidiff.torch.evaluate import evaluate_images, classifier_accuracy
    report = evaluate_images(samples)          # samples: (N, 1, 28, 28) in [-1, 1]
    report["fd"], report["kid_mean"], report["kid_std"]
    classifier_accuracy(samples, labels)       # class-conditional samples and their intended labels
    evaluate_autoencoder(net, images)          # a first stage's MSE, PSNR, SSIM, reconstruction FD, VQ usage
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from ..data.images import from_model_range
from ..metrics import feature_statistics, frechet_distance, kid
from .classifier import FashionMNISTClassifier, load_classifier

FD_LABEL = "FD (Fashion-MNIST classifier features)"
FEATURE_LABEL = ("Fashion-MNIST classifier features: the penultimate layer of minidiff's shipped CNN "
                 "(minidiff/torch/weights/fashion_mnist_classifier.safetensors)")


@functools.lru_cache(maxsize=1)
def default_network() -> FashionMNISTClassifier:
    """The shipped classifier, loaded once."""
    return load_classifier()


def _network(network):
    net = default_network() if network is None else network
    if not isinstance(net, torch.nn.Module) or not hasattr(net, "features"):
        raise TypeError(f"network must be a torch module with a features(x) method (e.g. load_classifier()), "
                        f"got {type(net).__name__}")
    return net


def _as_images(name: str, images, net) -> torch.Tensor:
    """``images`` as a float32 CPU tensor (N, C, H, W) that ``net`` accepts, clipped to [-1, 1]."""
    c = getattr(net, "config", None)   # a user network without a config: any (N, C, H, W)
    want = f"(N, {c.in_channels}, {c.image_size}, {c.image_size})" if c is not None else "(N, C, H, W)"
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    else:
        a = np.asarray(images)
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{name} must be a numeric array {want}, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.ndim != 4 or (c is not None and tuple(t.shape[1:]) != (c.in_channels, c.image_size, c.image_size)):
        raise ValueError(f"{name} must have shape {want} in the model range [-1, 1], got {tuple(t.shape)}")
    if t.shape[0] < 1:
        raise ValueError(f"{name} holds no images")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be float images in the model range [-1, 1], got dtype {t.dtype}; "
                         "convert uint8 images with minidiff.data.images.to_model_range")
    t = t.float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf (a diverged sampler?)")
    return t.clamp(-1.0, 1.0)   # what saving the samples as uint8 images would keep


@torch.no_grad()
def image_features(images, network=None, batch_size: int = 500) -> np.ndarray:
    """The feature vectors (N, D) float64 of ``images`` (N, 1, 28, 28), a torch tensor or a NumPy
    array in the model range [-1, 1] (values outside are clipped).  network: a module with
    ``features(x)`` (default: the shipped Fashion-MNIST classifier), used in eval mode."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return _batched(lambda net, xb: net.features(xb).double(), images, network, batch_size)   # (N, D)


@torch.no_grad()
def class_probabilities(images, network=None, batch_size: int = 500) -> np.ndarray:
    """softmax(logits) (N, num_classes) of the classifier on ``images`` (N, 1, 28, 28) in [-1, 1]."""
    return _batched(lambda net, xb: torch.softmax(net(xb).double(), dim=1), images, network, batch_size)


def _batched(fn, images, network, batch_size: int) -> np.ndarray:
    """fn(net, batch) over ``images`` in batches, the network in eval mode (restored after)."""
    net = _network(network)
    x = _as_images("images", images, net)
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        out = [fn(net, x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    finally:
        net.train(was_training)
    return torch.cat(out).numpy()


def classifier_accuracy(samples, labels, network=None) -> float:
    """The fraction of class-conditional ``samples`` (N, 1, 28, 28) in [-1, 1] that the classifier
    assigns to their intended ``labels`` (N,) in [0, num_classes).  On real test images the shipped
    classifier scores its recorded test accuracy (about 0.91), the ceiling for samples."""
    net = _network(network)
    lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array (N,), got shape {lab.shape} and dtype {lab.dtype}")
    probs = class_probabilities(samples, net)     # (N, num_classes)
    k = probs.shape[1]
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got values in [{lab.min()}, {lab.max()}]")
    if len(probs) != len(lab):
        raise ValueError(f"samples and labels must have the same length N, got {len(probs)} and {len(lab)}")
    return float(np.mean(probs.argmax(axis=1) == lab))


def prompt_report(samples, prompts, network=None, caption_model=None) -> dict:
    """What text-conditioned ``samples`` (N, 1, 28, 28) in [-1, 1] show of their ``prompts``
    (N str): the class accuracy (the shipped classifier against the class each prompt names)
    and the attribute accuracy (``minidiff.data.captions``' attribute functions measured on each
    sample against every attribute word its prompt says), overall, per attribute, and on the
    prompts that ask for a HELD_OUT combination (never said in training), reported apart.

    With them the "CLIP-style score (minidiff caption model)" of each sample against its prompt
    (``caption_model``, default the shipped ``minidiff.torch.clip`` model): 'clip_style_score',
    the mean of the per-pair 100 max(cos, 0); 'clip_style_score_mean_clamped', max(mean 100 cos, 0)
    as torchmetrics' CLIPScore computes it; and beside them 'clip_style_score_ceiling' and
    '_floor', the same model's score of real test images with their own and with shuffled
    captions (``real_score_bounds``): a sample's score means something only between the two."""
    from ..data.captions import ATTRIBUTES, HELD_OUT, attributes, parse_caption
    from ..data.images import from_model_range

    if isinstance(prompts, str) or len(prompts) != len(samples):
        raise ValueError(f"prompts must be a list of one str per sample ({len(samples)}), got "
                         f"{'a str' if isinstance(prompts, str) else len(prompts)}")
    parsed = [parse_caption(p) for p in prompts]                      # (label, {attribute: word}) each
    labels = np.array([k for k, _ in parsed], dtype=np.int64)
    hit = class_probabilities(samples, network).argmax(axis=1) == labels          # (N,)
    measured = attributes(np.asarray(from_model_range(torch.as_tensor(samples).cpu())), labels)
    held = np.array([any(k == c and asked.get(a) == w for a, w, c in HELD_OUT) for k, asked in parsed])
    from .. import contrastive
    from .clip import default_caption_model, embed_images, embed_texts

    clip_model = default_caption_model() if caption_model is None else caption_model
    I, T = embed_images(clip_model, _as_images("samples", samples, None)), embed_texts(clip_model, list(prompts))
    per_pair = contrastive.clip_style_score(I, T).double().numpy()                 # (N,)

    def summary(rows) -> dict:
        out = {"n": int(rows.sum()), "class_accuracy": float(hit[rows].mean()) if rows.any() else None}
        right = total = 0
        for name in ATTRIBUTES:
            asked = np.array([a.get(name, "") for _, a in parsed], dtype=object)
            said = rows & (asked != "")
            ok = int((measured[name][said] == asked[said]).sum())
            out[f"{name}_accuracy"] = ok / int(said.sum()) if said.any() else None
            right, total = right + ok, total + int(said.sum())
        out["attribute_accuracy"] = right / total if total else None
        out["attribute_words"] = total
        out["clip_style_score"] = float(per_pair[rows].mean()) if rows.any() else None
        out["clip_style_score_mean_clamped"] = contrastive.clip_style_score_mean_clamped(I[rows], T[rows]) \
            if rows.any() else None
        return out

    ceiling, floor = real_score_bounds(clip_model)
    return {**summary(np.ones(len(parsed), dtype=bool)), "clip_style_score_label": CLIP_STYLE_LABEL,
            "clip_style_score_ceiling": ceiling, "clip_style_score_floor": floor, "held_out": summary(held)}


CLIP_STYLE_LABEL = "CLIP-style score (minidiff caption model)"
N_SCORE_BOUNDS = 1000


@functools.lru_cache(maxsize=4)
def real_score_bounds(caption_model, n: int = N_SCORE_BOUNDS, seed: int = 0) -> tuple:
    """(ceiling, floor) of the CLIP-style score of ``caption_model`` on the first ``n`` real test
    images: with their own captions (seed 0, none held out), and with the captions shuffled by a
    derangement drawn with ``seed`` (``minidiff.contrastive.score_ceiling_floor``).  Cached."""
    from ..data.captions import captions
    from ..data.images import load_images
    from .clip import real_ceiling_floor

    x, y = load_images("fashion-mnist", "test", limit=n)
    return real_ceiling_floor(caption_model, x, captions(x, y, seed=0, hold_out=False), seed)


# ----------------------------------------------------------------------------------------------
# FD and KID against a reference set.

def reference_images(reference="fashion-mnist", split="test", n_reference=10000, seed=0, root=None) -> torch.Tensor:
    """``n_reference`` images of a dataset of ``minidiff.data.images.load_images`` in [-1, 1]: a
    random subset (without replacement, drawn with ``seed``) when the split holds more; None = all."""
    from ..data.images import load_images, to_model_range

    x, _ = load_images(reference, split, root=root)
    if n_reference is not None:
        if isinstance(n_reference, bool) or not isinstance(n_reference, (int, np.integer)) or n_reference < 2:
            raise ValueError(f"n_reference must be None (all) or an integer >= 2, got {n_reference!r}")
        if n_reference > len(x):
            raise ValueError(f"n_reference must be at most the {len(x)} images of {reference!r} split {split!r}, "
                             f"got {n_reference}")
        if n_reference < len(x):
            x = x[np.sort(np.random.default_rng(seed).choice(len(x), n_reference, replace=False))]
    return torch.from_numpy(to_model_range(x))   # (n_reference, C, H, W)


@functools.lru_cache(maxsize=8)
def _cached_reference_features(reference, split, n_reference, seed, root, env_folder=None) -> np.ndarray:
    # env_folder: $MINIDIFF_FASHION_MNIST when root is None, only a cache key (load_images reads it
    # itself, falling back to the other places where it holds no dataset)
    f = image_features(reference_images(reference, split, n_reference, seed, root))
    f.flags.writeable = False
    return f


def evaluate_images(samples, reference="fashion-mnist", split="test", n_reference=10000, seed=0, root=None, *,
                    network=None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                    inception_weights=None) -> dict:
    """FD and KID of ``samples`` (N, 1, 28, 28) in [-1, 1] against a reference set, on the
    classifier's features.

    reference: a dataset name of ``load_images`` ('fashion-mnist', ...) of which ``n_reference``
    images of ``split`` are drawn with ``seed`` (None = all), or an array of reference images
    (N_ref, 1, 28, 28) in [-1, 1].  KID uses ``kid_subsets`` subsets of min(kid_subset_size, N,
    N_ref) rows.  inception_weights: the path of torch-fidelity's Inception-v3 weights file
    (pt_inception-2015-12-05-6726825d.pth); when given, torchmetrics' FID on those weights is added
    as "fid_inception" (needs torch-fidelity; nothing is downloaded; slow on a CPU).

    Returns {"fd", "kid_mean", "kid_std", "n_samples", "n_reference", "feature", "fd_label",
    "kid_subsets", "kid_subset_size"[, "fid_inception"]}.  FD is biased upwards at small N
    (lesson 10): compare numbers only at equal n_samples and n_reference.
    """
    net = _network(network)
    x = _as_images("samples", samples, net)
    if len(x) < 2:
        raise ValueError(f"samples needs at least 2 images, got {len(x)}")
    if isinstance(reference, str):
        if network is None:
            from ..data.images import FASHION_MNIST_ENV

            env = os.environ.get(FASHION_MNIST_ENV) if root is None else None      # what load_images reads
            f_ref = _cached_reference_features(reference, split, n_reference, seed,
                                               None if root is None else str(root), env)
        else:
            f_ref = image_features(reference_images(reference, split, n_reference, seed, root), net)
        ref_images = None
    else:
        ref_images = _as_images("reference", reference, net)
        if len(ref_images) < 2:
            raise ValueError(f"reference needs at least 2 images, got {len(ref_images)}")
        f_ref = image_features(ref_images, net)
    f_x = image_features(x, net)
    mu_x, sigma_x = feature_statistics(f_x)
    mu_r, sigma_r = feature_statistics(f_ref)
    subset = int(min(kid_subset_size, len(f_x), len(f_ref)))
    kid_mean, kid_std = kid(f_x, f_ref, subsets=kid_subsets, subset_size=subset, seed=seed)
    report = {"fd": frechet_distance(mu_x, sigma_x, mu_r, sigma_r), "kid_mean": kid_mean, "kid_std": kid_std,
              "n_samples": len(f_x), "n_reference": len(f_ref),
              "feature": FEATURE_LABEL if network is None else f"features of {type(net).__name__} (user network)",
              "fd_label": FD_LABEL if network is None else "FD (user network features)",
              "kid_subsets": int(kid_subsets), "kid_subset_size": subset}
    if inception_weights is not None:
        if ref_images is None:
            ref_images = reference_images(reference, split, n_reference, seed, root)
        report["fid_inception"] = _inception_fid(x, ref_images, inception_weights)
    return report


def _to_uint8_rgb(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (B, 1 or 3, H, W) -> uint8 (B, 3, H, W), what torchmetrics' Inception expects."""
    u8 = from_model_range(x)
    return u8.expand(-1, 3, -1, -1) if u8.shape[1] == 1 else u8


def _inception_fid(samples, reference, weights_path, batch_size: int = 100) -> float:
    """torchmetrics' FrechetInceptionDistance (2048-d pool features) between two image sets in
    [-1, 1], with the Inception-v3 weights read from ``weights_path`` only (never downloaded).
    Needs torch-fidelity; the weights file is read by torch-fidelity with ``torch.load``."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"inception_weights file {path} not found; minidiff never downloads weights: pass "
                                "the path of torch-fidelity's pt_inception-2015-12-05-6726825d.pth that you have")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as e:
        raise ImportError("the Inception path (inception_weights=...) needs torch-fidelity: "
                          "`pip install torch-fidelity` (or `pip install 'torchmetrics[image]'`)") from e
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(path), normalize=False)
    for images, real in ((reference, True), (samples, False)):
        for i in range(0, len(images), batch_size):
            fid.update(_to_uint8_rgb(images[i:i + batch_size]), real=real)
    return float(fid.compute())


# ----------------------------------------------------------------------------------------------
# The first stage of latent diffusion: how well an autoencoder reconstructs.

def _psnr(mse01: float) -> float:
    """PSNR = 10 log10(MAX^2 / MSE) with MAX = 1 (images in [0, 1]); inf for MSE 0."""
    return float("inf") if mse01 == 0 else 10.0 * float(np.log10(1.0 / mse01))


@torch.no_grad()
def evaluate_autoencoder(net, images, batch_size: int = 500, network=None, *, ssim_sigma: float = 1.5,
                         min_usage: float | None = None) -> dict:
    """Reconstructions x_hat = decode(encode(x)) of ``images`` (N, C, H, W) in [-1, 1] by the
    autoencoder ``net`` in eval mode (restored after): 'kl' decodes the posterior's mode, 'vq'
    its quantised latent.  The reconstructions are clipped to [-1, 1] (what saving them keeps).

    Returns {'mse': mean squared error on the model range [-1, 1], 'psnr': 10 log10(1 / MSE)
    on the images mapped to [0, 1] (data range 1; the set's MSE, so psnr = 10 log10(4 / mse)),
    'ssim': the mean over images of SSIM (torchmetrics, Gaussian window of ``ssim_sigma``, on
    [0, 1]), 'fd': the FD between the classifier features of the reconstructions and of the
    originals (``image_features``, ``minidiff.metrics``), 'n_images', 'fd_label'} and for 'vq'
    'codebook_usage' and 'perplexity' of the codes picked over the whole set.  FD needs
    ``network`` unless the images are 1x28x28 (the shipped classifier's); otherwise 'fd' is None
    and 'fd_skipped' says why; likewise 'ssim' / 'ssim_skipped' when the SSIM window does not fit
    in the images.  A 'vq' usage below ``min_usage`` (default ``MIN_CODE_USAGE``, 0.25) is warned about."""
    import warnings

    from .. import autoencoding as ae
    from .autoencoder import MIN_CODE_USAGE, ssim_per_image, ssim_window

    min_usage = MIN_CODE_USAGE if min_usage is None else min_usage

    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not (isinstance(min_usage, (int, float)) and not isinstance(min_usage, bool) and 0 <= min_usage <= 1):
        raise ValueError(f"min_usage must be a number in [0, 1], got {min_usage!r}")
    cfg = getattr(net, "config", None)
    if not isinstance(net, torch.nn.Module) or cfg is None or getattr(cfg, "reg", None) not in ("kl", "vq"):
        raise TypeError(f"net must be a minidiff Autoencoder (a module with encode, decode and a config whose reg "
                        f"is 'kl' or 'vq'), got {type(net).__name__}")
    x = _autoencoder_images(images, cfg)                               # (N, C, H, W) float32 in [-1, 1]
    was_training = net.training
    net.eval()
    try:
        device = next(iter(net.parameters()), torch.empty(0)).device
        recs, hist = [], None
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            h = net.encode(xb)
            if cfg.reg == "kl":
                z = ae.kl_mode(*ae.kl_posterior(h))
            else:
                z = h
                counts = ae.code_histogram(net.quantize(h)[1], cfg.codebook_size)
                hist = counts if hist is None else hist + counts
            recs.append(net.decode(z).float().clamp(-1.0, 1.0).cpu())   # (b, C, H, W)
    finally:
        net.train(was_training)
    x_hat = torch.cat(recs)                                            # (N, C, H, W)
    mse = float(((x_hat.double() - x.double()) ** 2).mean())
    report = {"mse": mse, "psnr": _psnr(mse / 4.0), "n_images": len(x)}   # [-1, 1] -> [0, 1] divides MSE by 4
    if ssim_window(ssim_sigma) <= min(x.shape[-2:]):
        report["ssim"] = float(torch.cat([ssim_per_image(x_hat[i:i + batch_size], x[i:i + batch_size], ssim_sigma)
                                          for i in range(0, len(x), batch_size)]).double().mean())
    else:
        report["ssim"] = None
        report["ssim_skipped"] = (f"the {ssim_window(ssim_sigma)}-pixel SSIM window of ssim_sigma={ssim_sigma} does "
                                  f"not fit in {x.shape[-2]}x{x.shape[-1]} images: pass a smaller ssim_sigma")
    if network is None and tuple(x.shape[1:]) != (1, 28, 28):
        report["fd"] = None
        report["fd_skipped"] = (f"the shipped classifier takes 1x28x28 images, these are "
                                f"{'x'.join(map(str, x.shape[1:]))}: pass network=")
    elif len(x) < 2:
        report["fd"] = None
        report["fd_skipped"] = "FD needs at least 2 images"
    else:
        net_f = _network(network)
        f_x, f_rec = image_features(x, net_f, batch_size), image_features(x_hat, net_f, batch_size)
        report["fd"] = frechet_distance(*feature_statistics(f_rec), *feature_statistics(f_x))
        report["fd_label"] = (FD_LABEL if network is None else "FD (user network features)") + \
            ": reconstructions against their originals"
    if cfg.reg == "vq":
        report["codebook_usage"], report["perplexity"] = ae.codebook_usage(hist), ae.perplexity(hist)
        if report["codebook_usage"] < min_usage:
            warnings.warn(f"the VQ autoencoder uses {report['codebook_usage']:.3f} of its {cfg.codebook_size} codes "
                          f"on these {len(x)} images (below min_usage={min_usage}; perplexity "
                          f"{report['perplexity']:.1f}): dead codes (train with restart_every)", stacklevel=2)
    return report


def _autoencoder_images(images, cfg) -> torch.Tensor:
    """``images`` as a float32 CPU tensor (N, C, H, W) of the autoencoder's shape, in [-1, 1]."""
    want = f"(N, {cfg.in_channels}, {cfg.image_size}, {cfg.image_size})"
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    else:
        a = np.asarray(images)
        if a.dtype == object or not np.issubdtype(a.dtype, np.number):
            raise ValueError(f"images must be a numeric array {want}, got dtype {a.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(a))
    if t.ndim != 4 or tuple(t.shape[1:]) != (cfg.in_channels, cfg.image_size, cfg.image_size) or not len(t):
        raise ValueError(f"images must have shape {want} with N >= 1 (the autoencoder's), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"images must be float images in the model range [-1, 1], got dtype {t.dtype}; "
                         "convert uint8 images with minidiff.data.images.to_model_range")
    t = t.float()
    if not torch.isfinite(t).all() or float(t.min()) < -1.0 or float(t.max()) > 1.0:
        raise ValueError(f"images must be finite and in the model range [-1, 1], got values in "
                         f"[{float(t.min())}, {float(t.max())}]")
    return t
