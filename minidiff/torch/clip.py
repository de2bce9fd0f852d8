"""minidiff's CLIP-style caption model: an image encoder and a text encoder trained together with
CLIP's symmetric InfoNCE loss (Radford et al. 2021, Figure 3; ``minidiff.contrastive``) on the
Fashion-MNIST captions of ``minidiff.data.captions``, and the score it gives.

It exists to *score* text-to-image samples: the "CLIP-style score (minidiff caption model)", per
pair 100 max(cos(E_I(x), E_T(c)), 0), always reported beside its ceiling (real test images with
their own captions) and floor (shuffled captions).  It is never the CLIP score of the OpenAI
weights, and it is never used as a training loss for the diffusion models (a scorer that is
also optimised against stops measuring anything).

    model = default_caption_model()              # the shipped weights, eval mode, float32
    I = model.encode_images(x)                   # x: (N, 1, 28, 28) in [-1, 1] -> (N, D), unit rows
    T = model.encode_text(model.tokenize(["a dark ankle boot facing left"]))   # -> (1, D), unit rows

Duplicate captions in a batch are positives of each other: ``info_nce``'s ``groups`` are the
caption's *content* (the class and the attribute words it says, ``parse_caption``), so "a dark
sandal" and "a photo of a black open shoe" are one group.  The model is trained by the one loop
(``minidiff.torch.loop.train_loop``): a ``CaptionCLIPTask``; the log scale is clamped to
log 100 after every optimiser step, as CLIP's code does.

Retrain (seeded, a few minutes on one CPU core):
    python -m minidiff.torch.clip --train --out minidiff/torch/weights
Measure the shipped weights on the test split:
    python -m minidiff.torch.clip --eval
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from .. import contrastive
from ..data.captions import ATTRIBUTE_WORDS, CLASS_WORDS, attributes, captions, parse_caption
from ..data.images import to_model_range
from ..data.tokenizer import caption_tokenizer, encode, tokenizer_sha256
from .classifier import _atomic_write, load_shipped, save_shipped, weight_paths
from .loop import LoopConfig, Task, batch_indices, step_seed, train_loop
from .text import TextConfig, TextEncoder

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_NAME = "caption_clip"
SCORE_LABEL = "CLIP-style score (minidiff caption model)"
# Zero-shot prompts: every class word in each template (prompt ensembling, CLIP section 3.1.4).
ZERO_SHOT_TEMPLATES = ("{a} {noun}", "a photo of {a} {noun}", "an image of {a} {noun}")


@dataclasses.dataclass
class CLIPConfig:
    embed_dim: int = 64                # D: the joint embedding space
    channels: tuple = (16, 32, 64)     # image encoder: one (3x3 conv, ReLU, 2x2 max-pool) per entry
    text: TextConfig = dataclasses.field(default_factory=lambda: TextConfig(
        vocab_size=caption_tokenizer().get_vocab_size(), context_length=20, width=64, layers=1, heads=4))

    def __post_init__(self):
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        self.channels = tuple(self.channels)
        if isinstance(self.embed_dim, bool) or not isinstance(self.embed_dim, int) or not 1 <= self.embed_dim <= 4096:
            raise ValueError(f"embed_dim must be an integer in [1, 4096], got {self.embed_dim!r}")
        if not 1 <= len(self.channels) <= 4 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1
                                                    for c in self.channels):
            raise ValueError(f"channels must be 1 to 4 integers >= 1, got {self.channels!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


class ImageEncoder(nn.Module):
    """E_I: (N, 1, 28, 28) in [-1, 1] -> (N, D).  Plain conv blocks, no normalisation layer (a
    GroupNorm would divide out the brightness that captions talk about), then a linear map."""

    def __init__(self, channels, embed_dim: int):
        super().__init__()
        layers, c_in, side = [], 1, 28
        for c in channels:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, side = c, side // 2
        self.blocks = nn.Sequential(*layers)
        self.proj = nn.Linear(c_in * side * side, embed_dim)

    def forward(self, x):                                              # (N, 1, 28, 28) -> (N, D)
        return self.proj(self.blocks(x).flatten(1))


class CaptionCLIP(nn.Module):
    """The image encoder, the text tower (``TextEncoder``, mean over the real tokens, a linear
    projection to D) and CLIP's learnable log scale t (logits = exp(t) cos, t <= log 100)."""

    def __init__(self, config: CLIPConfig | None = None):
        super().__init__()
        self.config = cfg = config if config is not None else CLIPConfig()
        self.image = ImageEncoder(cfg.channels, cfg.embed_dim)
        self.text = TextEncoder(cfg.text)
        self.text_proj = nn.Linear(cfg.text.width, cfg.embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(contrastive.LOG_SCALE_INIT))

    def _images(self, x):
        x = torch.as_tensor(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28) or not x.is_floating_point():
            raise ValueError(f"images must be float images of shape (N, 1, 28, 28) in the model range [-1, 1], "
                             f"got {x.dtype} {tuple(x.shape)}")
        return x.to(self.log_scale.device, torch.float32)

    def image_features(self, x):
        """E_I(x) before normalisation: (N, 1, 28, 28) -> (N, D)."""
        return self.image(self._images(x))

    def text_features(self, ids):
        """E_T(ids) before normalisation: token ids (N, L) -> (N, D) (the mean of the real tokens'
        outputs, projected).  Ids outside the vocabulary are a ValueError naming ``ids``."""
        tokens, mask = self.text(torch.as_tensor(ids).to(self.log_scale.device))
        return self.text_proj(TextEncoder.pooled(tokens, mask))

    def encode_images(self, x):
        """L2-normalised image embeddings (N, D)."""
        return contrastive.normalize(self.image_features(x))

    def encode_text(self, ids):
        """L2-normalised caption embeddings (N, D)."""
        return contrastive.normalize(self.text_features(ids))

    def forward(self, x, ids):
        """(E_I(x) (B, D), E_T(ids) (B, D), log_scale ()): what ``contrastive.info_nce`` takes."""
        return self.image_features(x), self.text_features(ids), self.log_scale

    @torch.no_grad()
    def clamp_log_scale_(self):
        """t <- min(t, log 100) in place (CLIP section 2.5), after each optimiser step."""
        self.log_scale.clamp_(max=contrastive.LOG_SCALE_MAX)

    def tokenize(self, prompts) -> torch.Tensor:
        """Token ids (N, L) of a list of prompts with the caption tokenizer (unknown words and
        over-long prompts warn, see ``minidiff.data.tokenizer.encode``)."""
        return torch.from_numpy(encode(_tokenizer(), prompts, self.config.text.context_length))


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return caption_tokenizer()


# ----------------------------------------------------------------------------------------------
# Training: a Task of the one loop.

def content_groups(texts) -> np.ndarray:
    """(N,) int64 caption ids from each caption's content: its class and the attribute words it
    says (``parse_caption``), so paraphrases share an id (``info_nce``'s groups)."""
    keys = [(k, tuple(sorted(a.items()))) for k, a in map(parse_caption, texts)]
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([index[k] for k in keys], dtype=np.int64)


@dataclasses.dataclass
class CLIPTrainConfig(LoopConfig):
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    warmup: int = 100
    ema_decay: float = 0.998
    ckpt_every: int = 0
    sample_every: int = 0
    caption_sets: int = 3              # captions drawn per image (seeds 0..K-1): paraphrases of one content
    hard_negatives: bool = False       # NegCLIP: each caption with one attribute word swapped, a negative for images
    limit: int = 0                     # train images (0: all 60,000)
    model: CLIPConfig = dataclasses.field(default_factory=CLIPConfig)

    RESUMABLE_CHANGES = LoopConfig.RESUMABLE_CHANGES
    LATER_FIELDS: ClassVar[tuple] = ("hard_negatives",)   # added since runs were saved without it

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d


class CaptionCLIPTask(Task):
    """Symmetric InfoNCE with content groups on (train image, one of its K captions) pairs; with
    ``negatives`` (ids (K, N, L), groups (K, N): each caption with one attribute word swapped),
    NegCLIP's loss (``contrastive.info_nce_hard_negatives``) with the batch's B swapped captions."""

    def __init__(self, cfg: CLIPTrainConfig, images_u8: np.ndarray, ids: np.ndarray, groups: np.ndarray,
                 negatives=None):
        self.cfg, self.x = cfg, torch.from_numpy(images_u8)           # (N, 1, 28, 28) uint8
        self.ids, self.groups = torch.from_numpy(ids), torch.from_numpy(groups)   # (K, N, L), (K, N)
        self.negatives = None if negatives is None else tuple(map(torch.from_numpy, negatives))

    def build(self, device, dist):
        self.device = device
        return CaptionCLIP(self.cfg.model)

    def loss(self, net, k: int):
        cfg = self.cfg
        idx = torch.from_numpy(batch_indices(len(self.x), cfg.batch_size, cfg.seed, k))              # (B,)
        which = torch.from_numpy(np.random.default_rng(step_seed(cfg.seed, k, 1)).integers(len(self.ids), size=len(idx)))
        x = to_model_range(self.x[idx]).to(self.device)                                             # (B, 1, 28, 28)
        ids, groups = self.ids[which, idx].to(self.device), self.groups[which, idx]                 # (B, L), (B,)
        I, T, t = net(x, ids)
        if self.negatives is None:
            return contrastive.info_nce(I, T, t, groups)
        neg_ids, neg_groups = self.negatives[0][which, idx].to(self.device), self.negatives[1][which, idx]
        return contrastive.info_nce_hard_negatives(I, T, t, groups, net.text_features(neg_ids), neg_groups)

    def after_step(self, model, k: int):
        model.clamp_log_scale_()


def hard_negative(text: str, rng) -> str:
    """NegCLIP's hard negative of a caption: one of the attribute words it says (drawn by ``rng``)
    swapped to its opposite (``swap_attribute``); a caption that says none is its own copy (the
    same content id, so a positive, not a false negative)."""
    said = list(parse_caption(text)[1])
    return swap_attribute(text, said[rng.integers(len(said))]) if said else text


def training_data(cfg: CLIPTrainConfig, root=None):
    """(images uint8 (N, 1, 28, 28), ids (K, N, L), groups (K, N), negatives): the train split with
    K caption sets (seeds 0..K-1), the content ids shared across the sets; ``negatives`` (ids
    (K, N, L), groups (K, N) in the same numbering) the hard negatives of every caption, or None
    without ``cfg.hard_negatives``.  No combination is held out: the scorer should know every
    caption it will be asked to judge (the held-out combinations concern the diffusion models'
    training captions, not the judge's)."""
    from ..data.images import load_images

    x, y = load_images("fashion-mnist", "train", root=root, limit=cfg.limit or None)
    texts = [captions(x, y, seed=s, hold_out=False) for s in range(cfg.caption_sets)]
    flat = [t for ts in texts for t in ts]
    if cfg.hard_negatives:
        rng = np.random.default_rng(step_seed(cfg.seed, 0, 2))
        flat += [hard_negative(t, rng) for t in flat]
    K, N, L = len(texts), len(y), cfg.model.text.context_length
    ids = encode(_tokenizer(), flat, L).reshape(-1, K, N, L)                                   # (1 or 2, K, N, L)
    groups = content_groups(flat).reshape(-1, K, N)                                           # (1 or 2, K, N)
    negatives = (ids[1], groups[1]) if cfg.hard_negatives else None
    return x, ids[0], groups[0], negatives


def train(cfg: CLIPTrainConfig, run_dir, root=None, progress: bool = True, log=print):
    """Train with ``train_loop`` into ``run_dir``; returns (the EMA model in eval mode, loop result)."""
    x, ids, groups, negatives = training_data(cfg, root)
    task = CaptionCLIPTask(cfg, x, ids, groups, negatives)
    result = train_loop(task, cfg.validate_loop(), run_dir, device="cpu", progress=progress, log=log, desc="caption clip")
    from .. import checkpoint

    tensors, _ = checkpoint.load_image_checkpoint(run_dir)
    model = CaptionCLIP(cfg.model)
    model.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
    return model.eval(), result


# ----------------------------------------------------------------------------------------------
# Saving and loading the shipped weights (safetensors, float16 on disk; no pickle is ever read).

def _weight_paths(path=None):
    return weight_paths(path, WEIGHTS_NAME)


def save_caption_model(model: CaptionCLIP, out, record: dict) -> Path:
    """Write ``out``/caption_clip.safetensors (float16) and its .json (``record`` plus the
    architecture, config, tokenizer digest and the file's sha256), each atomically."""
    return save_shipped(model, out, WEIGHTS_NAME, {"tokenizer_sha256": tokenizer_sha256(_tokenizer()), **record})


def load_caption_model(path=None, device="cpu") -> CaptionCLIP:
    """The caption model from ``path`` (a ``.safetensors`` file with its ``.json`` beside it, or
    their folder; default: the shipped weights), eval mode, float32.  A missing file is a
    FileNotFoundError; weights whose sha256, tokenizer or shapes differ from the JSON a ValueError."""
    model, record = load_shipped(path, WEIGHTS_NAME, CaptionCLIP, CLIPConfig, "caption model", "minidiff.torch.clip",
                                 require_sha256=True)
    if record.get("tokenizer_sha256") != tokenizer_sha256(_tokenizer()):
        raise ValueError(f"{_weight_paths(path)[1]}: the model was trained with another tokenizer than "
                         "minidiff.data.tokenizer.caption_tokenizer() (tokenizer_sha256 differs)")
    return model.to(device)


@functools.lru_cache(maxsize=1)
def default_caption_model() -> CaptionCLIP:
    """The shipped caption model (minidiff/torch/weights/caption_clip.safetensors), loaded once."""
    return load_caption_model()


def caption_model_record(path=None) -> dict:
    """The JSON record of the shipped (or ``path``'s) weights: command, seed, date, numbers."""
    return json.loads(_weight_paths(path)[1].read_text())


# ----------------------------------------------------------------------------------------------
# Measuring: zero-shot classes, attribute swaps, retrieval, the score's ceiling and floor.

@torch.no_grad()
def embed_images(model: CaptionCLIP, images, batch_size: int = 1000) -> torch.Tensor:
    """Unit image embeddings (N, D) of uint8 (N, 1, 28, 28) images or float ones in [-1, 1]."""
    x = torch.as_tensor(images)
    if not x.is_floating_point():
        x = to_model_range(x)
    model.eval()
    return torch.cat([model.encode_images(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@torch.no_grad()
def embed_texts(model: CaptionCLIP, texts, batch_size: int = 2000) -> torch.Tensor:
    """Unit caption embeddings (N, D) of a list of N str."""
    model.eval()
    return torch.cat([model.encode_text(model.tokenize(texts[i:i + batch_size]))
                      for i in range(0, len(texts), batch_size)])


def _article(noun: str) -> str:
    from ..data.captions import PLURAL

    return "a pair of" if noun in PLURAL else "an" if noun[0] in "aeiou" else "a"


def zero_shot_prompts() -> list:
    """[(label, prompt)]: every class word in every ZERO_SHOT_TEMPLATE (28 words x 3 templates)."""
    return [(k, t.format(a=_article(w), noun=w)) for k, words in enumerate(CLASS_WORDS) for w in words
            for t in ZERO_SHOT_TEMPLATES]


@torch.no_grad()
def class_embeddings(model: CaptionCLIP) -> torch.Tensor:
    """(10, D): each class's prompts embedded, averaged and renormalised (CLIP's prompt ensemble)."""
    labels, prompts = zip(*zero_shot_prompts())
    T = embed_texts(model, list(prompts))
    labels = torch.tensor(labels)
    return contrastive.normalize(torch.stack([T[labels == k].mean(0) for k in range(len(CLASS_WORDS))]))


def zero_shot_accuracy(model: CaptionCLIP, images, labels) -> float:
    """Fraction of ``images`` whose nearest class embedding (``class_embeddings``) is their label."""
    pred = (embed_images(model, images) @ class_embeddings(model).T).argmax(1).numpy()
    return float(np.mean(pred == np.asarray(labels)))


OPPOSITE = {w: ws_other[i] for values in ATTRIBUTE_WORDS.values() for (v, ws), (_, ws_other) in
            zip(values.items(), reversed(list(values.items()))) for i, w in enumerate(ws)}


def swap_attribute(text: str, name: str) -> str:
    """``text`` with its word for attribute ``name`` replaced by the same-position synonym of the
    opposite value (dark -> light, black -> white, left -> right, ...)."""
    for word in (w for ws in ATTRIBUTE_WORDS[name].values() for w in ws):
        pattern = rf"(?<![\w-]){re.escape(word)}(?![\w-])"
        if re.search(pattern, text):
            return re.sub(pattern, OPPOSITE[word], text, count=1)
    raise ValueError(f"caption {text!r} says no {name} word")


def attribute_swap(model: CaptionCLIP, images, texts) -> dict:
    """The attribute-swap test: for every attribute word a caption says, does the image sit closer
    to its true caption than to the caption with that word swapped to its opposite?
    Returns {attribute: (rate, n)} and 'all'."""
    I = embed_images(model, images)
    rows, true, swapped, names = [], [], [], []
    for i, text in enumerate(texts):
        for name in parse_caption(text)[1]:
            rows.append(i), true.append(text), swapped.append(swap_attribute(text, name)), names.append(name)
    rows = torch.tensor(rows)
    win = ((I[rows] * embed_texts(model, true)).sum(1) > (I[rows] * embed_texts(model, swapped)).sum(1)).numpy()
    names = np.array(names)
    out = {n: (float(win[names == n].mean()), int((names == n).sum())) for n in ATTRIBUTE_WORDS if (names == n).any()}
    out["all"] = (float(win.mean()), int(len(win)))
    return out


def retrieval(model: CaptionCLIP, images_u8, labels, texts, ks=(1, 5, 10)) -> dict:
    """Caption-to-image retrieval among the given images (rank all N by cosine for each caption).
    'exact': the caption's own image is in the top k (near-duplicates make this low: many images
    fit "a bag"); 'consistent': the top k holds an image of which the caption is true (its class,
    and every attribute word it says, measured on that image by the caption functions)."""
    I, T = embed_images(model, images_u8), embed_texts(model, list(texts))
    top = (T @ I.T).topk(max(ks), dim=1).indices.numpy()                   # (N, k_max)
    y = np.asarray(labels)
    measured = attributes(np.asarray(images_u8), y)
    parsed = [parse_caption(t) for t in texts]
    fits = np.zeros(top.shape, dtype=bool)
    for q, (k, said) in enumerate(parsed):
        c = top[q]
        ok = y[c] == k
        for name, value in said.items():
            ok &= measured[name][c] == value
        fits[q] = ok
    own = top == np.arange(len(texts))[:, None]
    return {f"{kind}_recall@{k}": float(hit[:, :k].any(1).mean()) for kind, hit in (("exact", own), ("consistent", fits))
            for k in ks} | {"n_images": len(texts)}


def real_ceiling_floor(model: CaptionCLIP, images_u8, texts, seed: int = 0) -> tuple:
    """(ceiling, floor) of the score on real images: with their own captions, and shuffled."""
    return contrastive.score_ceiling_floor(embed_images(model, images_u8), embed_texts(model, list(texts)),
                                           np.random.default_rng(seed))


def measure(model: CaptionCLIP, split: str = "test", limit=None, n_retrieval: int = 1000, root=None) -> dict:
    """Every number of the record on ``split`` (captions seed 0, none held out)."""
    from ..data.images import load_images

    x, y = load_images("fashion-mnist", split, root=root, limit=limit)
    texts = captions(x, y, seed=0, hold_out=False)
    swap = attribute_swap(model, x, texts)
    ceiling, floor = real_ceiling_floor(model, x, texts)
    return {"split": split, "n": len(y), "zero_shot_accuracy": zero_shot_accuracy(model, x, y),
            "attribute_swap": {k: {"rate": r, "n": n} for k, (r, n) in swap.items()},
            "retrieval": retrieval(model, x[:n_retrieval], y[:n_retrieval], texts[:n_retrieval]),
            "score_ceiling": ceiling, "score_floor": floor}


# ----------------------------------------------------------------------------------------------
# torchmetrics' CLIPScore, fed this model.

class _TorchmetricsModel(nn.Module):
    """What torchmetrics' CLIPScore duck-types: get_image_features(pixel_values),
    get_text_features(input_ids, attention_mask) and a ``config``."""

    def __init__(self, model: CaptionCLIP):
        super().__init__()
        self.model, self.config = model, type("Config", (), {})()

    def get_image_features(self, pixel_values):
        return self.model.image_features(pixel_values)

    def get_text_features(self, input_ids, attention_mask=None):
        return self.model.text_features(input_ids)


def for_torchmetrics(model: CaptionCLIP | None = None):
    """A callable for ``CLIPScore(model_name_or_path=...)`` (torchmetrics >= 1.9): it returns
    (model, processor) with this caption model and the caption tokenizer.  Images go in as
    float (1, 28, 28) in [-1, 1]."""
    model = default_caption_model() if model is None else model

    def processor(text=None, images=None, return_tensors="pt", padding=True):
        if images is not None:
            return {"pixel_values": torch.stack([torch.as_tensor(i) for i in images])}
        ids = model.tokenize(list(text))
        return {"input_ids": ids, "attention_mask": ids != 0}

    return lambda: (_TorchmetricsModel(model).eval(), processor)


# ----------------------------------------------------------------------------------------------
# The command line.

def _rounded(d):
    if isinstance(d, float):
        return round(d, 4)
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return d


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minidiff.torch.clip",
                                     description="Train or measure minidiff's CLIP-style caption model.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--train", action="store_true", help="train on the train split and write the weights to --out")
    group.add_argument("--eval", action="store_true", help="measure --weights on the test split")
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for the weights and the JSON (--train)")
    parser.add_argument("--weights", default=None, help="weights file or folder to measure (--eval; default: shipped)")
    parser.add_argument("--run-dir", default=None, help="the loop's checkpoint folder (default: a temporary one)")
    parser.add_argument("--steps", type=int, default=CLIPTrainConfig.steps)
    parser.add_argument("--batch-size", type=int, default=CLIPTrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=CLIPTrainConfig.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="stop after this much training time (0: no limit); the record says the steps done")
    parser.add_argument("--hard-negatives", action="store_true",
                        help="NegCLIP's loss: each caption with one attribute word swapped is a negative too "
                             "(off by default: it did not reach the attribute-swap target, benchmarks/results/caption_clip.md)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--root", default=None, help="folder of the Fashion-MNIST IDX files (default: Debian's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.eval:
        print(json.dumps(_rounded(measure(load_caption_model(args.weights), root=args.root)), indent=2))
        return 0
    cfg = CLIPTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          max_seconds=args.max_seconds, hard_negatives=args.hard_negatives)
    with tempfile.TemporaryDirectory() as tmp:
        model, result = train(cfg, args.run_dir or tmp, args.root)
    command = shlex.join(["python", "-m", "minidiff.torch.clip", *(sys.argv[1:] if argv is None else argv)])
    record = {"train_command": command, "seed": args.seed, "train": {k: v for k, v in cfg.to_dict().items() if k != "model"},
              "loss": "symmetric InfoNCE (CLIP Figure 3), duplicate captions grouped by content (class + attribute "
                      "words said)" + ("; NegCLIP's hard negatives (each caption with one attribute word swapped, "
                                       "among the images' choices)" if cfg.hard_negatives else "")
                      + "; learnable log scale clamped to log 100 after each step; the EMA weights shipped",
              "train_split": "fashion-mnist train (60,000), K caption sets (seeds 0..K-1), no combination held out",
              "steps_done": result["steps"], "training_seconds": round(result["seconds"], 1), "final_loss": round(float(np.mean(result["losses"][-50:])), 4),
              "threads": args.threads, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "zero_shot_templates": list(ZERO_SHOT_TEMPLATES), "score_label": SCORE_LABEL}
    weights = save_caption_model(model, args.out, record)
    shipped = load_caption_model(weights)                                # the float16 file's numbers
    record_path = weights.with_suffix(".json")
    saved = json.loads(record_path.read_text())
    saved["log_scale"] = round(float(shipped.log_scale.detach()), 4)
    saved["test"] = _rounded(measure(shipped, root=args.root))
    _atomic_write(record_path, lambda tmp: Path(tmp).write_text(json.dumps(saved, indent=2) + "\n"))
    print(json.dumps(saved, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
