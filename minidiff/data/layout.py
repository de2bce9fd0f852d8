"""Layouts for layout-to-image (Rombach et al. 2022, section 4.3.1: the layout tau_theta maps
(class, top-left, bottom-right) tokens, their positions quantised on a grid): a canvas dataset
built from Fashion-MNIST, the layout checks, and the layout numbers of generated canvases.

A layout is an int64 array (O, 5) of rows (class, x0, y0, x1, y1), in pixels of the canvas,
x1 and y1 exclusive; rows of class -1 are padding (no object).  A batch of layouts is (n, O, 5).

    canvases, layouts = make_canvases(images, labels, n=1000, seed=0)   # (n, 1, 56, 56) uint8, (n, 3, 5)
    cells = quantise_layout(layouts, canvas=56, grid=14)                # the encoder's tokens
    found = find_boxes(samples, layouts)                                # (n, 3, 4) boxes found on samples
    layout_report(samples, layouts, class_probabilities)                # IoU >= 0.5 fraction, class accuracy

NumPy only: the classifier of ``layout_report`` is passed in (e.g.
``minidiff.torch.evaluate.class_probabilities``)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .images import class_names, load_images

PAD = -1                  # the class of a padding row
SPLIT_SEEDS = {"train": 0, "test": 1}   # canvas_dataset: the canvases of a split are fixed by its seed


@dataclasses.dataclass
class LayoutConfig:
    """The canvases and the layout encoder tau of a layout-conditioned run."""
    canvas: int = 56           # canvas side in pixels
    grid: int = 14             # box corners are quantised to (grid + 1) positions per axis
    min_objects: int = 2       # garments per canvas: min_objects..max_objects
    max_objects: int = 3
    width: int = 64            # tau's token width D (the U-Net's context_dim)

    def __post_init__(self):
        for name, lo, hi in (("canvas", 28, 1024), ("grid", 1, 1024), ("min_objects", 1, 64),
                             ("max_objects", 1, 64), ("width", 1, 4096)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"layout.{name} must be an integer in [{lo}, {hi}], got {v!r}")
        if self.min_objects > self.max_objects:
            raise ValueError(f"layout.min_objects ({self.min_objects}) must be <= max_objects ({self.max_objects})")


def empty_layout(max_objects: int) -> np.ndarray:
    """The empty layout (max_objects, 5) int64, every row padding: the null condition."""
    empty = np.zeros((max_objects, 5), np.int64)
    empty[:, 0] = PAD
    return empty


def tight_boxes(images) -> np.ndarray:
    """The tight box (x0, y0, x1, y1), exclusive ends, of the non-zero pixels of each image
    (N, 1, h, w) uint8 -> (N, 4) int64 (an empty image: (0, 0, 0, 0))."""
    ink = np.asarray(images)[:, 0] > 0                                    # (N, h, w)
    rows, cols = ink.any(axis=2), ink.any(axis=1)                         # (N, h), (N, w)
    h, w = ink.shape[1:]
    y0, y1 = rows.argmax(1), h - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), w - cols[:, ::-1].argmax(1)
    empty = ~rows.any(1)
    return np.where(empty[:, None], 0, np.stack([x0, y0, x1, y1], 1)).astype(np.int64)


def make_canvases(images, labels, n: int, seed: int, canvas: int = 56, objects=(2, 3), gap: int = 2,
                  tries: int = 50):
    """``n`` canvases of ``objects[0]..objects[1]`` garments: each a random image of ``images``
    (N, 1, h, w) uint8 cropped to its tight box, placed at a random position at least ``gap``
    pixels from the others (so boxes never overlap or touch), composited by max.  Deterministic
    in ``seed``.  -> (canvases (n, 1, canvas, canvas) uint8, layouts (n, objects[1], 5) int64 of
    rows (class, x0, y0, x1, y1), padded with class -1)."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[1] != 1 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(f"images must be uint8 (N, 1, h, w) with N labels, got {images.dtype} {images.shape} "
                         f"and {labels.shape} labels")
    lo, hi = objects
    if not 1 <= lo <= hi or max(images.shape[2:]) > canvas:
        raise ValueError(f"objects must be (min, max) with 1 <= min <= max and the images at most canvas={canvas} "
                         f"pixels, got {objects} and {images.shape[2]}x{images.shape[3]} images")
    boxes = tight_boxes(images)
    keep = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))   # no empty garments
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 1, canvas, canvas), np.uint8)
    layouts = np.full((n, hi, 5), 0, np.int64)
    layouts[..., 0] = PAD
    for i in range(n):
        placed = []                                                       # (x0, y0, x1, y1) of this canvas
        for j in rng.choice(keep, size=rng.integers(lo, hi + 1)):
            bx0, by0, bx1, by1 = boxes[j]
            w, h = bx1 - bx0, by1 - by0
            for _ in range(tries):
                x0, y0 = rng.integers(0, canvas - w + 1), rng.integers(0, canvas - h + 1)
                if all(x0 >= q[2] + gap or q[0] >= x0 + w + gap or y0 >= q[3] + gap or q[1] >= y0 + h + gap
                       for q in placed):
                    break
            else:
                continue                                                  # no room left: one garment fewer
            region = out[i, 0, y0:y0 + h, x0:x0 + w]
            np.maximum(region, images[j, 0, by0:by1, bx0:bx1], out=region)
            layouts[i, len(placed)] = (labels[j], x0, y0, x0 + w, y0 + h)
            placed.append((x0, y0, x0 + w, y0 + h))
    return out, layouts


def canvas_dataset(split: str = "train", n=None, config: LayoutConfig | None = None, root=None):
    """The canvases of a Fashion-MNIST split (garments of that split only): (canvases (n, 1, C, C)
    uint8, layouts (n, max_objects, 5) int64), fixed by the split (seed ``SPLIT_SEEDS[split]``).
    n: default the split's number of images (60,000 train, 10,000 test)."""
    cfg = config if config is not None else LayoutConfig()
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_SEEDS)}, got {split!r}")
    images, labels = load_images("fashion-mnist", split, root=root)
    n = len(images) if n is None else int(n)
    return make_canvases(images, labels, n, SPLIT_SEEDS[split], cfg.canvas, (cfg.min_objects, cfg.max_objects))


def quantise_layout(layouts, canvas: int, grid: int) -> np.ndarray:
    """The layout tokens' positions: each corner coordinate v in [0, canvas] -> the nearest of
    grid + 1 grid lines, round(v * grid / canvas) in [0, grid] (a cell is canvas / grid pixels);
    the class column is kept, padding rows get cells 0.  (..., 5) -> (..., 5) int64."""
    layouts = np.asarray(layouts, dtype=np.int64)
    cells = np.clip(np.round(layouts[..., 1:] * (grid / canvas)), 0, grid).astype(np.int64)
    cells[layouts[..., 0] == PAD] = 0
    return np.concatenate([layouts[..., :1], cells], axis=-1)


def _describe(row) -> str:
    c = int(row[0])
    name = class_names[c].lower() if 0 <= c < len(class_names) else f"class {c}"
    return f"{name} {int(row[1])},{int(row[2])},{int(row[3])},{int(row[4])}"


def check_layout(layout, canvas: int, num_classes: int = 10, max_objects=None, name: str = "layout") -> np.ndarray:
    """A layout (O, 5) or a batch (n, O, 5) of integer rows (class, x0, y0, x1, y1), checked:
    every real row's class in [0, num_classes), its box inside the canvas (0 <= x0, y0 and
    x1, y1 <= canvas) with positive area (x0 < x1, y0 < y1); padding rows have class -1.  A
    ValueError names the box.  -> the layout as int64."""
    a = np.asarray(layout)
    if a.dtype == object or a.ndim not in (2, 3) or a.shape[-1] != 5 or not (
            np.issubdtype(a.dtype, np.integer) or (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))):
        raise ValueError(f"{name} must be integer rows (class, x0, y0, x1, y1) of shape (O, 5) or (n, O, 5), "
                         f"got {a.dtype} {a.shape}")
    a = a.astype(np.int64)
    if max_objects is not None and a.shape[-2] > max_objects:
        raise ValueError(f"{name} has {a.shape[-2]} boxes; this model takes at most {max_objects}")
    for idx in np.ndindex(a.shape[:-1]):
        row = a[idx]
        where = f"{name} box {idx[-1]}" + (f" of layout {idx[0]}" if a.ndim == 3 else "") + f" ({_describe(row)})"
        if row[0] == PAD:
            continue
        if not 0 <= row[0] < num_classes:
            raise ValueError(f"{where}: class {row[0]} is unknown (classes 0..{num_classes - 1}, -1: padding)")
        x0, y0, x1, y1 = row[1:]
        if min(x0, y0) < 0 or max(x1, y1) > canvas:
            raise ValueError(f"{where} lies outside the {canvas}x{canvas} canvas (0 <= x0, y0 and x1, y1 <= {canvas})")
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"{where} has zero area: it needs x0 < x1 and y0 < y1 (x1, y1 exclusive)")
    return a


def iou(a, b) -> np.ndarray:
    """Intersection over union of boxes (..., 4) = (x0, y0, x1, y1), exclusive ends, broadcast;
    0 where either box is empty (e.g. the (-1, -1, -1, -1) of a box not found)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    area = lambda q: np.clip(q[..., 2] - q[..., 0], 0, None) * np.clip(q[..., 3] - q[..., 1], 0, None)  # noqa: E731
    iw = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter, union = iw * ih, area(a) + area(b) - iw * ih
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def connected_components(mask) -> np.ndarray:
    """8-connected components of boolean images (N, H, W): labels (N, H, W) int64, -1 off the
    mask, else the flat index of one pixel of the component (the smallest).  Min-label
    propagation with pointer jumping, vectorised over the batch."""
    mask = np.asarray(mask, bool)
    N, H, W = mask.shape
    big = N * H * W
    lab = np.where(mask, np.arange(big).reshape(N, H, W), big)
    while True:
        p = np.pad(lab, ((0, 0), (1, 1), (1, 1)), constant_values=big)
        m = lab.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(m, p[:, dy:dy + H, dx:dx + W], out=m)
        m = np.where(mask, m, big)
        flat = m.reshape(-1)
        m = np.where(mask, flat[np.minimum(flat, big - 1)].reshape(N, H, W), big)   # pointer jumping
        if np.array_equal(m, lab):
            return np.where(mask, lab, -1)
        lab = m


def find_boxes(canvas_images, asked_layout, threshold: float = -0.8, min_pixels: int = 3) -> np.ndarray:
    """The box found on each canvas for each asked object: the canvas (N, 1, H, W) in the model
    range [-1, 1] thresholded at ``threshold``, its 8-connected components of at least
    ``min_pixels`` pixels; an asked box gets the bounding box of the components lying mostly
    (> half their pixels) inside it, else of the one component with most pixels inside it.
    asked_layout (N, O, 5) -> boxes (N, O, 4) int64, (-1, -1, -1, -1) for padding or nothing found."""
    x = np.asarray(canvas_images, np.float64)
    x = x[:, 0] if x.ndim == 4 else x                                     # (N, H, W)
    asked = np.asarray(asked_layout, np.int64)
    if asked.ndim != 3 or asked.shape[0] != x.shape[0] or asked.shape[2] != 5:
        raise ValueError(f"asked_layout must be (N, O, 5) for {x.shape[0]} canvases, got {asked.shape}")
    lab = connected_components(x > threshold)
    N, H, W = lab.shape
    ys, xs = np.mgrid[0:H, 0:W]
    found = np.full(asked.shape[:2] + (4,), -1, np.int64)
    for i in range(N):
        on = lab[i] >= 0
        ids, inv, sizes = np.unique(lab[i][on], return_inverse=True, return_counts=True)
        px, py = xs[on], ys[on]
        ok = sizes >= min_pixels
        for o, (c, x0, y0, x1, y1) in enumerate(asked[i]):
            if c == PAD:
                continue
            inside = (px >= x0) & (px < x1) & (py >= y0) & (py < y1)
            n_in = np.bincount(inv, weights=inside, minlength=len(ids))    # each component's pixels in the box
            pick = ok & (n_in > sizes / 2)
            if not pick.any():
                if not (ok & (n_in > 0)).any():
                    continue
                pick = np.arange(len(ids)) == np.argmax(np.where(ok, n_in, -1))
            sel = pick[inv]
            found[i, o] = (px[sel].min(), py[sel].min(), px[sel].max() + 1, py[sel].max() + 1)
    return found


def crop_to_classifier(image, box, size: int = 28) -> np.ndarray:
    """The crop ``box`` (x0, y0, x1, y1) of one canvas (H, W) in [-1, 1], shrunk (nearest
    neighbour, aspect kept) if a side exceeds ``size`` and centred on a ``size`` x ``size``
    background of -1: the classifier's input (size, size)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    crop = np.asarray(image, np.float64)[y0:y1, x0:x1]
    h, w = crop.shape
    out = np.full((size, size), -1.0)
    if h == 0 or w == 0:
        return out
    s = min(1.0, size / max(h, w))
    nh, nw = max(1, int(h * s)), max(1, int(w * s))
    crop = crop[(np.arange(nh) * h // nh)[:, None], np.arange(nw) * w // nw]
    top, left = (size - nh) // 2, (size - nw) // 2
    out[top:top + nh, left:left + nw] = crop
    return out


def layout_report(samples, layouts, classifier, threshold: float = -0.8) -> dict:
    """The layout numbers of canvases generated for ``layouts`` (N, O, 5): for every asked
    garment the box found on its canvas (``find_boxes``), 'iou_at_least_0.5' the fraction with
    IoU >= 0.5 against the asked box, 'mean_iou', and 'class_accuracy' the fraction whose found
    crop the ``classifier`` (crops (M, 1, 28, 28) in [-1, 1] -> probabilities (M, K), e.g.
    ``minidiff.torch.evaluate.class_probabilities``) assigns the asked class (a garment not found
    counts as wrong); 'class_accuracy_of_hits' the same among those with IoU >= 0.5.
    samples: (N, 1, H, W) in the model range [-1, 1]."""
    x = np.asarray(samples, np.float64)
    asked = np.asarray(layouts, np.int64)
    found = find_boxes(x, asked, threshold)
    real = asked[..., 0] != PAD                                            # (N, O)
    overlap = iou(found, asked[..., 1:])[real]                             # (M,)
    i_s, o_s = np.nonzero(real)
    crops = np.stack([crop_to_classifier(x[i, 0], found[i, o]) for i, o in zip(i_s, o_s)])[:, None]
    probs = np.asarray(classifier(crops.astype(np.float32)))
    right = (probs.argmax(1) == asked[i_s, o_s, 0]) & (found[i_s, o_s, 2] > 0)
    hit = overlap >= 0.5
    return {"n_canvases": int(len(x)), "n_garments": int(real.sum()), "iou_at_least_0.5": float(hit.mean()),
            "mean_iou": float(overlap.mean()), "class_accuracy": float(right.mean()),
            "class_accuracy_of_hits": float(right[hit].mean()) if hit.any() else float("nan"),
            "threshold": threshold}
