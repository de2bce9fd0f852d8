"""Training the image models: DDPM, EDM, consistency distillation and consistency training of a
U-Net on Fashion-MNIST (or any dataset of ``minidiff.data.images``), on one device or on several
with ``torchrun``.

The losses, each method's randomness and the samplers are the method layer's
(``minidiff.methods``), the very functions the 2-D lessons build; the optimiser, EMA, processes
and checkpoints are the one training loop's (``minidiff.torch.loop``).  This file is the
diffusion ``Task`` handed to that loop: the U-Net, its data and its loss.

    minidiff train --backend torch --dataset fashion-mnist --method edm --preset cpu --out runs/fmnist
    torchrun --nproc_per_node 2 -m minidiff.cli train --backend torch --dataset fashion-mnist ...

Same seed, same numbers: every step's batch, noise and dropout come from generators seeded by
(seed, step), so a resumed run draws exactly what an uninterrupted one would have drawn.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import warnings

import numpy as np
import torch

from .. import _checks
from ..augment import AUGMENT_DIM, augment
from ..backend import generator
from ..checkpoint import json_norm, load_modules
from ..data.images import DATASET_SHAPES, NUM_CLASSES
from ..data.images import DATASETS as IMAGE_DATASETS
from ..data.images import load_images, random_flip, to_model_range
from ..data.layout import LayoutConfig, canvas_dataset, empty_layout
from ..edm import edm_P_mean
from ..guidance import drop_labels
from ..methods import MethodConfig, Objective, config_from_dict, raw_to_model
from .latent import (LATENT_STREAM, encoded_dataset, latent_of, latent_scale_factor, load_first_stage,
                     warn_if_collapsed)
from .loop import LoopConfig, Task, batch_indices, ema_into, frozen, load_run, pick_device, step_seed, train_loop
from .conditioning import ClassTokenEncoder, ConditionedUNet, LayoutEncoder
from .sampling import save_grid
from .text import TextConfig, TextEncoder
from .train_autoencoder import AutoencoderTrainConfig
from .unet import UNet, UNetConfig

# step_seed streams: 0-3 the loop's (data, noise, dropout, sampling), 4 the latent noise, 5 CFG's label drops
AUGMENT_STREAM = 6                 # ... and each step's augmentations

# Presets: 'cpu' shows recognisable Fashion-MNIST samples after minutes on a laptop CPU, 'gpu' is
# a real run for one GPU, 'tiny' is for tests.  Any field can be overridden on the command line.
# 'attention_levels' index the U-Net's resolutions (-1: the lowest), whatever the image size.
PRESETS = {
    "tiny": dict(steps=20, batch_size=16, lr=1e-3, warmup=5, ckpt_every=10, sample_every=0, n_grid=16,
                 unet=dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, dropout=0.0, groups=4),
                attention_levels=(), text=dict(width=32, layers=1, heads=2)),
    "cpu": dict(steps=2000, batch_size=32, lr=1e-3, warmup=100, ckpt_every=250, sample_every=500,
                unet=dict(base_channels=16, channel_mults=(1, 2, 4), num_res_blocks=1, dropout=0.0),
                attention_levels=(-1,), text=dict(width=64, layers=2, heads=4),
                latent_unet=dict(base_channels=32)),   # a latent model: twice as wide (on 4x8x8 still 0.4x a pixel step)
    "gpu": dict(steps=40000, batch_size=256, lr=1e-3, warmup=1000, ckpt_every=2000, sample_every=5000,
                ema_decay=0.9995,
                unet=dict(base_channels=64, channel_mults=(1, 2, 2), num_res_blocks=2, dropout=0.1),
                attention_levels=(-2, -1), text=dict(width=128, layers=4, heads=4)),
}
LATENT_SIGMA_DATA = 1.0   # a latent model's sigma_data: s = 1 / std makes the latents unit-std
LATENT_P_STD = 1.0        # a latent model's P_std (EDM2's for its latent models; EDM's 1.2 for pixels)
TOKENIZER_FILE = "tokenizer.json"   # beside a text-conditioned run's checkpoint
CONDITIONS = ("", "text", "layout", "class")   # through cross-attention: '' none (or class_conditional's
                                               # embedding), 'text' captions, 'layout' boxes of garments on
                                               # canvases, 'class' the label as one token (LDM's tau for classes)
TEXT_KEY = "tokens"         # the keyword a text-conditioned model takes its caption token ids (B, L) by
LAYOUT_KEY = "layout"       # the keyword a layout-conditioned model takes its layouts (B, O, 5) by
CLASS_KEY = "class_labels"  # ... and a class-conditional one its labels (B,), by embedding or by token


@dataclasses.dataclass
class ImageConfig(MethodConfig, LoopConfig):
    """Everything that defines an image run (saved in the checkpoint): the method fields are
    ``MethodConfig``'s (shared with the 2-D ``ToyConfig``), the optimiser / EMA / checkpoint
    fields ``LoopConfig``'s, and these the data and the U-Net."""
    kind = "images"

    method: str = "edm"
    dataset: str = "fashion-mnist"
    data_root: str = ""                # a folder with the dataset's files ('' : the default place)
    limit: int = 0                     # train on the first `limit` images only (0: all)
    flip: bool = False                 # random left-right flips
    augment: float = 0.0               # EDM's non-leaking augmentation: each transform with this probability,
                                       # its parameters given to the U-Net as augment labels (0: off)
    class_conditional: bool = False    # feed the labels to the U-Net (unet.num_classes = the number of classes)
    p_uncond: float = 0.1              # class_conditional: drop a label to the null class with this probability
                                       # (trains the unconditional model classifier-free guidance needs)
    # a latent model (Rombach et al. 2022): the U-Net learns scale_factor * E(x) of this autoencoder
    autoencoder: str = ""              # the autoencoder's checkpoint folder ('' : a pixel model)
    autoencoder_sha256: str = ""       # its checkpoint's sha256, recorded when training starts
    scale_factor: float = 0.0          # s: 1 / std of the training latents (0: measure it when training starts)
    # text-to-image (Rombach et al. 2022, section 3.3): captions -> tokens -> tau (TextEncoder) -> cross-attention
    condition: str = ""                # '', 'text' (captions of minidiff.data.captions; p_uncond drops them to ""),
                                       # 'layout' (canvases of minidiff.data.layout; dropped to the empty layout)
                                       # or 'class' (class_conditional's labels as one cross-attention token)
    tokenizer_sha256: str = ""         # the run's tokenizer.json, recorded when training starts
    text: TextConfig = dataclasses.field(default_factory=TextConfig)
    # layout-to-image (LDM section 4.3.1): Fashion-MNIST canvases (minidiff.data.layout), their layouts -> tau
    layout: LayoutConfig = dataclasses.field(default_factory=LayoutConfig)
    unet: UNetConfig = dataclasses.field(default_factory=UNetConfig)

    def __post_init__(self):
        self.unet = config_from_dict(UNetConfig, self.unet, "unet", allow_missing=True)
        self.text = config_from_dict(TextConfig, self.text, "text", allow_missing=True)
        self.layout = config_from_dict(LayoutConfig, self.layout, "layout", allow_missing=True)

    def validate(self):
        MethodConfig.validate(self)
        self.validate_loop()
        _checks.choice("dataset", self.dataset, IMAGE_DATASETS)
        _checks.int_at_least("limit", self.limit, 0)
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"p_uncond must lie in [0, 1), got {self.p_uncond}")
        if self.class_conditional and self.unet.num_classes is None:
            raise ValueError("class_conditional needs unet.num_classes (from_preset sets it for the built-in datasets)")
        if not isinstance(self.autoencoder, str) or not isinstance(self.autoencoder_sha256, str):
            raise ValueError("autoencoder and autoencoder_sha256 must be strings (a path, a hex digest)")
        _checks.finite_number("scale_factor", self.scale_factor, lambda v: v >= 0, ">= 0 (0: measure it)")
        if self.autoencoder_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.autoencoder_sha256):
            raise ValueError(f"autoencoder_sha256 must be 64 hex digits, got {self.autoencoder_sha256!r}")
        if not self.autoencoder and (self.autoencoder_sha256 or self.scale_factor):
            raise ValueError("autoencoder_sha256 and scale_factor belong to a latent model: set autoencoder too")
        if self.autoencoder and self.flip:
            raise ValueError("flip is for pixel models: a latent model trains on the latents of unflipped images")
        _checks.choice("condition", self.condition, CONDITIONS)
        if self.condition == "text":
            if self.dataset != "fashion-mnist":
                raise ValueError(f"condition 'text' needs captions: only fashion-mnist has them, got {self.dataset!r}")
            if self.class_conditional:
                raise ValueError("condition 'text' and class_conditional exclude each other: the caption names the class")
            if self.unet.context_dim != self.text.width:
                raise ValueError(f"condition 'text' needs unet.context_dim = text.width ({self.text.width}), "
                                 f"got {self.unet.context_dim} (from_preset sets it)")
            if self.flip:
                raise ValueError("condition 'text' refuses flip: a flipped shoe would contradict its caption's 'facing'")
        elif self.condition == "layout":
            self._validate_layout()
        elif self.condition == "class":
            if not self.class_conditional or self.unet.num_classes is None:
                raise ValueError("condition 'class' gives the labels to the U-Net as a token: it needs "
                                 "class_conditional and unet.num_classes (from_preset sets both)")
            if self.unet.context_dim is None or self.tokenizer_sha256:
                raise ValueError("condition 'class' needs unet.context_dim (the class token's width; from_preset "
                                 "sets it) and no tokenizer")
        elif self.unet.context_dim is not None or self.tokenizer_sha256:
            raise ValueError("unet.context_dim and tokenizer_sha256 belong to a model conditioned through "
                             "cross-attention: set condition='text' (or 'layout', 'class')")
        if self.tokenizer_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.tokenizer_sha256):
            raise ValueError(f"tokenizer_sha256 must be 64 hex digits, got {self.tokenizer_sha256!r}")
        _checks.finite_number("augment", self.augment, lambda v: 0 <= v < 1, "in [0, 1) (the probability p "
                              "of each augmentation; 0: off)")
        if self.augment and self.flip:
            raise ValueError("augment and flip exclude each other: augment already flips, and tells the U-Net so "
                             "(augment labels, zero when sampling); plain flip would teach it mirrored images "
                             "as clean ones, the leak augment avoids")
        if self.augment and self.autoencoder:
            raise ValueError("augment is for pixel models: a latent model trains on the latents of unaugmented images")
        if self.augment and self.unet.augment_dim != AUGMENT_DIM:
            raise ValueError(f"augment needs unet.augment_dim = {AUGMENT_DIM} (the augment labels' size; "
                             f"from_preset sets it), got {self.unet.augment_dim}")
        return self

    def _validate_layout(self):
        """condition 'layout': pixels of the layout's canvases, built from Fashion-MNIST garments."""
        u, lay = self.unet, self.layout
        if self.dataset != "fashion-mnist":
            raise ValueError(f"condition 'layout' builds its canvases from fashion-mnist garments, got {self.dataset!r}")
        if self.class_conditional or self.autoencoder or self.flip or self.tokenizer_sha256:
            raise ValueError("condition 'layout' excludes class_conditional (the layout names the classes), "
                             "autoencoder (a pixel model), flip (it would mirror the boxes) and tokenizer_sha256")
        if (u.in_channels, u.image_size) != (1, lay.canvas):
            raise ValueError(f"condition 'layout' needs unet in_channels=1 and image_size=layout.canvas ({lay.canvas}), "
                             f"got {u.in_channels} and {u.image_size} (from_preset sets them)")
        if u.context_dim != lay.width:
            raise ValueError(f"condition 'layout' needs unet.context_dim = layout.width ({lay.width}), "
                             f"got {u.context_dim} (from_preset sets it)")

    @classmethod
    def from_dict(cls, d: dict, what: str = "config"):
        """A checkpoint's config, strictly: an unknown or missing field (the U-Net's too) is named."""
        if isinstance(d, dict) and isinstance(d.get("unet"), dict):
            d = {**d, "unet": config_from_dict(UNetConfig, d["unet"], f"{what}['unet']")}
        if isinstance(d, dict) and isinstance(d.get("text"), dict):
            d = {**d, "text": config_from_dict(TextConfig, d["text"], f"{what}['text']")}
        if isinstance(d, dict) and isinstance(d.get("layout"), dict):
            d = {**d, "layout": config_from_dict(LayoutConfig, d["layout"], f"{what}['layout']")}
        return config_from_dict(cls, d, what)

    @classmethod
    def from_preset(cls, name: str, **overrides):
        """A preset, with the U-Net sized for ``overrides['dataset']`` and any field overridden
        (``unet`` fields by a dict)."""
        _checks.choice("preset", name, tuple(PRESETS))
        preset = {k: v for k, v in PRESETS[name].items() if k not in ("unet", "attention_levels", "text", "latent_unet")}
        fields = {**preset, **{k: v for k, v in overrides.items() if k not in ("unet", "text", "layout")}}
        dataset = fields.get("dataset", cls.dataset)
        C, size = DATASET_SHAPES.get(dataset, (1, 28))
        if fields.get("autoencoder"):                                  # a latent model: the U-Net sized for z
            C, size, _ = first_stage_shape(fields["autoencoder"])
            # EDM's sigma_data is the data's std: s z has std 1 by the scale factor's definition
            fields.setdefault("sigma_data", LATENT_SIGMA_DATA)
            # ... and EDM's training noise at the same sigma / sigma_data as for pixels (P_mean -1.2 + ln 2),
            # narrower as EDM2 trains its latent models (benchmarks/results/latent_ablation_cpu.md)
            fields.setdefault("P_mean", edm_P_mean(fields["sigma_data"]))
            fields.setdefault("P_std", LATENT_P_STD)
        if fields.get("condition") == "layout":                        # canvases; tau as wide as the text's
            fields["layout"] = {"width": PRESETS[name]["text"]["width"], **dict(overrides.get("layout", {}))}
            C, size = 1, LayoutConfig(**fields["layout"]).canvas
        unet = dict(overrides.get("unet", {}))
        if fields.get("autoencoder"):
            unet = {**PRESETS[name].get("latent_unet", {}), **unet}
        C, size = unet.pop("in_channels", C), unet.pop("image_size", size)
        levels = None
        if fields.get("condition") == "class":                         # the labels, as one token as wide as
            fields["class_conditional"] = True                         # a caption's, through cross-attention
            unet.setdefault("context_dim", PRESETS[name]["text"]["width"])
            levels = PRESETS[name]["attention_levels"] or (-1,)
        if fields.get("class_conditional") and "num_classes" not in unet:
            unet["num_classes"] = NUM_CLASSES.get(dataset)
        if fields.get("augment") and "augment_dim" not in unet:
            unet["augment_dim"] = AUGMENT_DIM
        if fields.get("condition") == "text":                          # tau's width is the U-Net's context_dim
            fields["text"] = {**PRESETS[name]["text"], **dict(overrides.get("text", {}))}
            unet.setdefault("context_dim", fields["text"]["width"])
            unet.setdefault("pooled_context", True)                    # Imagen's pooled caption embedding too
            levels = PRESETS[name]["attention_levels"] or (-1,)        # cross-attention needs attention somewhere
        if fields.get("condition") == "layout":
            unet.setdefault("context_dim", fields["layout"]["width"])
            unet.setdefault("position_embedding", True)                # queries that know where they are
            levels = PRESETS[name]["attention_levels"] or (-1,)
        fields["unet"] = preset_unet(name, C, size, levels=levels, **unet)
        return cls(**fields)


def preset_unet(name: str, in_channels: int, image_size: int, levels=None, **overrides) -> dict:
    """The U-Net fields of preset ``name`` for inputs (in_channels, image_size, image_size): its
    channel_mults cut to what the size allows (``fitting_mults``), self-attention at the preset's
    levels (or at ``levels``: indices into the resolutions, -1 the lowest), any field overridden."""
    _checks.choice("preset", name, tuple(PRESETS))
    preset = PRESETS[name]
    unet = {"in_channels": in_channels, "image_size": image_size, **preset["unet"],
            "channel_mults": fitting_mults(preset["unet"]["channel_mults"], image_size), **overrides}
    if "attention_resolutions" not in overrides:
        res = [unet["image_size"] // 2 ** i for i in range(len(unet["channel_mults"]))]
        levels = preset["attention_levels"] if levels is None else levels
        unet["attention_resolutions"] = tuple(sorted({res[i] for i in levels}))
    return unet


def first_stage_shape(path) -> tuple:
    """(c, h, w): the latent shape of the autoencoder checkpoint at ``path``."""
    try:
        _, ae_cfg = load_run(path, AutoencoderTrainConfig, "autoencoder")
    except FileNotFoundError:
        raise FileNotFoundError(f"autoencoder {path}: no checkpoint there (train one with `minidiff train "
                                "--backend torch --model autoencoder --out DIR`)") from None
    return ae_cfg.autoencoder.latent_shape


def fitting_mults(mults: tuple, size: int) -> tuple:
    """The longest prefix of ``mults`` whose halvings divide ``size`` and leave at least 2x2."""
    while len(mults) > 1 and (size % 2 ** (len(mults) - 1) or size // 2 ** (len(mults) - 1) < 2):
        mults = mults[:-1]
    return tuple(mults)


# ----------------------------------------------------------------------------------------------
# Data: the whole training set lives on the device as uint8 (Fashion-MNIST: 47 MB).

def build_network(cfg: ImageConfig):
    """The raw network F of ``cfg``: a U-Net, or (condition 'text') the text encoder tau and a
    U-Net with cross-attention on tau(tokens), trained jointly as one module (LDM eq. 3); the
    same with tau a layout's tokens ('layout') or one token of the class label ('class': no
    class embedding in the U-Net, the label reaches it through cross-attention only)."""
    if cfg.condition == "text":
        return ConditionedUNet(cfg.unet, TextEncoder(cfg.text), TEXT_KEY)
    if cfg.condition == "class":
        unet = dataclasses.replace(cfg.unet, num_classes=None)
        return ConditionedUNet(unet, ClassTokenEncoder(cfg.unet.num_classes, cfg.unet.context_dim), CLASS_KEY)
    if cfg.condition == "layout":
        return ConditionedUNet(cfg.unet, layout_encoder(cfg), LAYOUT_KEY)
    return UNet(cfg.unet)


def layout_encoder(cfg: ImageConfig) -> LayoutEncoder:
    """tau of a layout-conditioned run: tokens of the Fashion-MNIST classes and the layout's grid."""
    lay = cfg.layout
    return LayoutEncoder(NUM_CLASSES["fashion-mnist"], lay.grid, lay.width, lay.max_objects, lay.canvas)


def load_training_images(cfg: ImageConfig, device):
    """(images (N, C, H, W) uint8, labels (N,) int64), both on ``device``, checked against the U-Net.
    Condition 'layout': (canvases (N, 1, canvas, canvas), layouts (N, max_objects, 5) int64)."""
    if cfg.condition == "layout":
        canvases, layouts = canvas_dataset("train", n=cfg.limit or None, config=cfg.layout,
                                           root=cfg.data_root or None)
        return torch.from_numpy(canvases).to(device), torch.from_numpy(layouts).to(device)
    images, labels = load_images(cfg.dataset, "train", root=cfg.data_root or None, limit=cfg.limit or None,
                            image_size=cfg.unet.image_size if cfg.dataset == "folder" else None,
                            channels=cfg.unet.in_channels)
    _, C, H, W = images.shape
    u = cfg.unet
    if C != u.in_channels or (H, W) != (u.image_size, u.image_size):
        raise ValueError(f"dataset {cfg.dataset!r} has {C}x{H}x{W} images but the U-Net takes "
                         f"in_channels={u.in_channels}, image_size={u.image_size}: set unet in_channels/image_size "
                         f"to {C} and {H}")
    if cfg.class_conditional and labels.max() >= u.num_classes:
        raise ValueError(f"dataset {cfg.dataset!r} has labels up to {labels.max()} but unet.num_classes is "
                         f"{u.num_classes}")
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)


class DiffusionTask(Task):
    """A U-Net trained with one of the methods (``Objective``): what ``train_loop`` runs for
    ``train_images``."""

    def __init__(self, cfg: ImageConfig, first_stage=None, tokens=None):
        self.cfg, self.objective = cfg, Objective(cfg)
        self.target = self.teacher = self.teacher_D = None
        # a latent model: (autoencoder, its train config, the training set's encodings, labels)
        self.first_stage = first_stage
        self.tokens = tokens           # condition 'text': the training captions' token ids (N, L) int64

    def build(self, device, dist):
        cfg = self.cfg
        self.device, self.dist = device, dist
        if self.first_stage is None:
            self.data, self.labels = load_training_images(cfg, device)  # (N, C, H, W) uint8, (N,) int64
        else:                                                          # (N, 2c or c, h, w) float32, (N,)
            self.data, self.labels = (t.to(device) for t in self.first_stage[2:])
        if self.tokens is not None:                                    # (N, L) int64 and the null caption (L,)
            from ..data.tokenizer import empty_caption_ids

            self.tokens = torch.as_tensor(self.tokens).to(device)
            self.null_tokens = torch.as_tensor(empty_caption_ids(cfg.text.context_length)).to(device)
            if len(self.tokens) != len(self.data):
                raise ValueError(f"{len(self.tokens)} captions for {len(self.data)} training images")
        self.model = build_network(cfg).to(device)
        if self.objective.uses_target:                                 # CD, CT: an EMA target network
            self.target = copy.deepcopy(self.model).requires_grad_(False).eval()
        if cfg.method == "cd":
            self.teacher, t_config = model_from_checkpoint(cfg.teacher, device)
            if t_config.method != "edm":
                raise ValueError(f"the teacher must be an 'edm' model, {cfg.teacher} holds {t_config.method!r}")
            if json_norm(cfg.unet) != json_norm(t_config.unet):
                raise ValueError("method 'cd' starts from the teacher's weights: its unet config must equal "
                                 "the teacher's")
            if (cfg.autoencoder_sha256, cfg.scale_factor) != (t_config.autoencoder_sha256, t_config.scale_factor):
                raise ValueError("method 'cd': the teacher learnt the latents of another autoencoder (or another "
                                 "scale factor) than this run's")
            self.teacher.requires_grad_(False)
            self.teacher_D = raw_to_model(frozen(self.teacher), t_config)
        return self.model

    def extra_modules(self) -> dict:
        return {"target": self.target} if self.target is not None else {}

    def start(self, model, ema):
        if self.teacher is not None:                                   # CM: initialise from the teacher
            for m in (model, ema, self.target):
                m.load_state_dict(self.teacher.state_dict())

    def loss(self, net, k: int):
        cfg, dist, device = self.cfg, self.dist, self.device
        GB, u = cfg.batch_size * dist.world, cfg.unet
        shape, mine = (GB, u.in_channels, u.image_size, u.image_size), dist.mine(GB)
        # this step's batch and randomness: seeded by (seed, step), drawn for the global batch, sliced
        idx = torch.from_numpy(batch_indices(len(self.data), GB, cfg.seed, k)).to(device)
        if self.first_stage is None:
            x0 = to_model_range(self.data[idx])                        # (GB, C, H, W) in [-1, 1]
        else:                                                          # (GB, c, h, w): z = s E(x)
            ae_cfg = self.first_stage[1].autoencoder
            eps = (generator(step_seed(cfg.seed, k, LATENT_STREAM), backend="torch", device=device).randn(
                shape, dtype=torch.float32) if ae_cfg.reg == "kl" else None)
            x0 = cfg.scale_factor * latent_of(ae_cfg, self.data[idx], eps)
        model_kwargs = {}
        if cfg.class_conditional:                                      # CFG Algorithm 1: some labels -> null
            y = drop_labels(self.labels[idx], cfg.p_uncond, cfg.unet.num_classes,
                            np.random.default_rng([cfg.seed, 5, k]), num_classes=cfg.unet.num_classes)
            model_kwargs = {CLASS_KEY: y[mine]}
        if cfg.condition == "text":                                    # the same, the null being the empty caption
            c = drop_labels(self.tokens[idx], cfg.p_uncond, self.null_tokens, np.random.default_rng([cfg.seed, 5, k]))
            model_kwargs = {TEXT_KEY: c[mine]}
        if cfg.condition == "layout":                                  # the null being the empty layout
            null = torch.from_numpy(empty_layout(cfg.layout.max_objects)).to(device)
            c = drop_labels(self.labels[idx], cfg.p_uncond, null, np.random.default_rng([cfg.seed, 5, k]))
            model_kwargs = {LAYOUT_KEY: c[mine]}
        noise_rng = generator(step_seed(cfg.seed, k, 1), backend="torch", device=device)
        if cfg.flip:
            x0 = random_flip(x0, noise_rng)
        if cfg.augment:                                                # EDM section 5: labelled augmentations
            # in float64 on CUDA: its matmuls would be rounded by TF32 and bf16 autocast, which leave float64 alone
            wide = torch.float64 if device.type == "cuda" else x0.dtype
            x0, a = augment(x0.to(wide), cfg.augment, generator(step_seed(cfg.seed, k, AUGMENT_STREAM),
                                                                backend="torch", device=device))
            x0, model_kwargs["augment_labels"] = x0.float(), a[mine].float()     # (B, AUGMENT_DIM)
        z = noise_rng.randn(shape, dtype=torch.float32)                # (GB, C, H, W)
        draws = self.objective.draw(generator(step_seed(cfg.seed, k, 1), backend="numpy"), shape, k, np.float32, z=z)
        draws = {name: torch.as_tensor(v if name == "boundaries" else v[mine], device=device)
                 for name, v in draws.items()}
        target_net = {"cd": self.target, "ct": self.target, "ict": self.model}.get(cfg.method)
        # losses that sum over pixels are divided by their number, so clipping and the lr see per-pixel sizes
        per_pixel = 1.0 if cfg.method == "ddpm" else 1.0 / float(np.prod(shape[1:]))
        return per_pixel * self.objective.loss(net, x0[mine], draws, frozen(target_net) if target_net else None,
                                               self.teacher_D, **model_kwargs)

    def after_step(self, model, k: int):
        if self.target is not None:
            ema_into(self.target, model, self.objective.levels(k)[1])

    def sample(self, ema, path):
        ae = self.first_stage[0].to(self.device) if self.first_stage is not None else None
        text = {"tokens": self.tokens[:self.cfg.n_grid]} if self.tokens is not None else {}   # training captions
        if self.cfg.condition == "layout":                              # the training canvases' layouts
            text = {"layout": self.labels[torch.arange(self.cfg.n_grid, device=self.device) % len(self.labels)]}
        save_grid(ema, self.cfg, path, self.cfg.n_grid, device=self.device, autoencoder=ae, **text)


def train_images(cfg: ImageConfig, out, resume: bool = False, device=None, progress: bool = True,
                 log=print) -> dict:
    """Train ``cfg.method`` on ``cfg.dataset``; write checkpoints and sample grids into ``out``.
    With ``resume`` continue from ``out``'s checkpoint.  Under torchrun every process calls this
    (RANK / WORLD_SIZE / LOCAL_RANK from the environment); rank 0 writes.
    Returns {'steps', 'losses', 'seconds', 'images_per_second', 'checkpoint'}."""
    cfg.validate()
    first_stage = tokens = None
    if cfg.autoencoder:
        cfg, first_stage = prepare_latents(cfg, device, log)
    if cfg.condition == "text":
        cfg, tokens = prepare_captions(cfg, out, log)
    result = train_loop(DiffusionTask(cfg, first_stage, tokens), cfg, out, resume=resume, device=device, progress=progress,
                        log=log, desc=f"{cfg.method} on {cfg.dataset}" + (" latents" if cfg.autoencoder else ""))
    result["images_per_second"] = result.pop("examples_per_second")
    result["config"] = cfg
    return result


def prepare_latents(cfg: ImageConfig, device=None, log=print):
    """A latent run's first stage: (cfg with the autoencoder's sha256 and the scale factor filled
    in, (autoencoder, its config, the training set's encodings, labels)).  The encodings come
    from the cache keyed by the autoencoder's sha256 (``encoded_dataset``); the U-Net must take
    the autoencoder's latents, and an autoencoder other than the recorded one is refused."""
    ae, ae_cfg, sha = load_first_stage(cfg.autoencoder, cfg.autoencoder_sha256 or None,
                                       pick_device(str(device) if device is not None else None))
    u, c = cfg.unet, ae_cfg.autoencoder.latent_shape
    if (u.in_channels, u.image_size, u.image_size) != c:
        raise ValueError(f"autoencoder {cfg.autoencoder} gives {c[0]}x{c[1]}x{c[2]} latents but the U-Net takes "
                         f"in_channels={u.in_channels}, image_size={u.image_size}: set them to {c[0]} and {c[1]} "
                         "(ImageConfig.from_preset(..., autoencoder=...) does)")
    if cfg.dataset != ae_cfg.dataset:
        log(f"note: the autoencoder was trained on {ae_cfg.dataset!r}, the latent model learns {cfg.dataset!r}")
    encoded, labels = encoded_dataset(ae, sha, cfg.dataset, "train", root=cfg.data_root or None,
                                      limit=cfg.limit, device=next(ae.parameters()).device, log=log)
    if cfg.class_conditional and int(labels.max()) >= u.num_classes:
        raise ValueError(f"dataset {cfg.dataset!r} has labels up to {int(labels.max())} but unet.num_classes is "
                         f"{u.num_classes}")
    warn_if_collapsed(ae, encoded)
    scale = cfg.scale_factor or latent_scale_factor(ae_cfg.autoencoder, encoded, cfg.seed)
    cfg = dataclasses.replace(cfg, autoencoder_sha256=sha, scale_factor=scale)
    return cfg, (ae, ae_cfg, encoded, labels)


def prepare_captions(cfg: ImageConfig, out, log=print):
    """A text-conditioned run's captions: (cfg with the tokenizer's sha256 and vocabulary size
    filled in, the training captions' token ids (N, L) int64).  The tokenizer
    (``caption_tokenizer``: word-level, trained on the captions' vocabulary, deterministic) is
    written to ``out/tokenizer.json`` beside the checkpoint; a resumed run whose tokenizer
    differs from the recorded one is refused by the config check."""
    from pathlib import Path

    from ..data.captions import caption_dataset
    from ..data.tokenizer import caption_tokenizer, encode, save_tokenizer, tokenizer_sha256

    _, _, captions = caption_dataset("train", root=cfg.data_root or None, limit=cfg.limit or None)
    tok = caption_tokenizer()
    sha, V = tokenizer_sha256(tok), tok.get_vocab_size()
    if cfg.tokenizer_sha256 and cfg.tokenizer_sha256 != sha:
        raise ValueError(f"tokenizer_sha256 {cfg.tokenizer_sha256[:12]}... does not match the caption tokenizer "
                         f"({sha[:12]}...): this model was trained on another vocabulary")
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).mkdir(parents=True, exist_ok=True)
        save_tokenizer(tok, Path(out) / TOKENIZER_FILE)
    text = dataclasses.replace(cfg.text, vocab_size=V)
    with warnings.catch_warnings(record=True) as caught:   # the tokenizer knows every caption word
        warnings.simplefilter("always")
        ids = encode(tok, captions, text.context_length)                   # (N, L) int64
    if caught:
        raise ValueError(f"text.context_length={text.context_length} is too short for the training captions "
                         f"({len(caught)} would be cut, e.g. {caught[0].message}); the captions need at most 19 tokens")
    log(f"captions: {len(captions)} for training, vocabulary {V} words, context {text.context_length} tokens")
    return dataclasses.replace(cfg, text=text, tokenizer_sha256=sha), ids


def load_run_tokenizer(path, cfg: ImageConfig):
    """The tokenizer a text-conditioned run was trained with (``tokenizer.json`` beside its
    checkpoint), checked against the sha256 its config records."""
    from pathlib import Path

    from ..data.tokenizer import load_tokenizer, tokenizer_sha256

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    tok = load_tokenizer(folder / TOKENIZER_FILE)
    if tokenizer_sha256(tok) != cfg.tokenizer_sha256:
        raise ValueError(f"{folder / TOKENIZER_FILE} does not match the model (sha256 {tokenizer_sha256(tok)[:12]}... "
                         f"against the recorded {cfg.tokenizer_sha256[:12]}...): it is another run's tokenizer")
    return tok


def model_from_checkpoint(path, device="cpu", use_ema: bool = True):
    """(U-Net with the checkpoint's weights, in eval mode; the run's ``ImageConfig``).  A state
    without a config, a config of another version (a missing or unknown field), an unknown
    method and missing or misshapen weights are ValueErrors naming what is wrong."""
    tensors, cfg = load_run(path, ImageConfig, "unet")
    net = build_network(cfg)
    load_modules({"ema" if use_ema else "model": net}, tensors, path)
    return net.to(device).eval(), cfg
