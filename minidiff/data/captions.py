"""Captions for Fashion-MNIST that say more than the label (issue 13), NumPy only.

Each caption names the class and some of four attributes *measured on the image*: brightness
(dark / light), size (small / large), facing (left / right, footwear only) and pattern (plain /
patterned).  The same attribute functions score generated images against the prompt they were
asked for (attribute accuracy), through ``parse_caption``.

Brightness, size and pattern compare a measure with a per-class threshold, the median over the
training set (``fit_thresholds``; the table ``THRESHOLDS``), so each splits each class about in
half.  A caption names them only where they are clearly true (``caption_attributes``): an image
inside the middle fifth of its class (between the 0.4 and 0.6 quantiles, ``BANDS``) is neither
dark nor light to a reader, and a word decided there by a hair would teach noise.  Facing is a
fact, not a relative judgement: its threshold is 0.  Fashion-MNIST's footwear almost all points
its toe to the left (the toe is the low, far end; the shaft, heel counter or ankle strap stands
above the other end): of the training set's sandals 8.0 % face right, of its sneakers 0.25 %, of
its ankle boots none.

Some attribute-class combinations (``HELD_OUT``, e.g. no "dark sandal") never appear in training
captions, to measure whether a text-conditioned model composes them.
"""
from __future__ import annotations

import numpy as np

NUM_CLASSES = 10
IMAGE_SIZE = 28
GARMENT_LEVEL = 20          # a pixel above this (of 255) belongs to the garment
FOOTWEAR = (5, 7, 9)        # Sandal, Sneaker, Ankle boot
ATTRIBUTES = ("brightness", "size", "facing", "pattern")

# Class words (the first is the canonical one); Fashion-MNIST labels 0..9.  Multi-word names are
# matched as phrases by parse_caption.
CLASS_WORDS = (
    ("t-shirt", "top", "tee"),
    ("trousers", "pants", "jeans"),
    ("pullover", "sweater", "jumper"),
    ("dress", "frock"),
    ("coat", "jacket"),
    ("sandal", "open shoe"),
    ("shirt", "blouse"),
    ("sneaker", "trainer", "running shoe"),
    ("bag", "handbag", "purse"),
    ("ankle boot", "boot", "bootie"),
)
PLURAL = frozenset({"trousers", "pants", "jeans"})   # "a pair of ..."

# Attribute name -> value -> words (the first is the value itself).
ATTRIBUTE_WORDS = {
    "brightness": {"dark": ("dark", "black", "dim"), "light": ("light", "white", "pale")},
    "size": {"small": ("small", "little", "compact"), "large": ("large", "big", "bulky")},
    "facing": {"left": ("left",), "right": ("right",)},
    "pattern": {"plain": ("plain", "smooth", "simple"), "patterned": ("patterned", "textured", "printed")},
}
FACING_PHRASES = ("facing {}", "pointing {}", "with its toe to the {}", "turned to the {}")
ADJECTIVE_ORDER = ("size", "brightness", "pattern")   # English order: "a small dark patterned bag"
MENTION_P = 0.5            # each attribute that applies is named with this probability

# Caption templates.  {a}: the article ("a", "an", "a pair of"), {adjectives}: the attribute
# words before the noun, {commas}: the same joined by commas, {and}: joined by "and", {facing}:
# a facing phrase or "".  Templates 3-5 need at least one adjective and fall back to template 0.
TEMPLATES = (
    "{a} {adjectives} {noun} {facing}",
    "a photo of {a} {adjectives} {noun} {facing}",
    "an image of {a} {adjectives} {noun} {facing}",
    "{commas} {noun} {facing}",
    "{a} {noun} {facing}, {and}",
    "{a} {noun} that is {and} {facing}",
)

# Per-class thresholds: the training-set medians (fit_thresholds on load_images("fashion-mnist",
# "train")); tests/test_captions.py recomputes them.  Above the threshold: light, large, patterned.
THRESHOLDS = {
    "brightness": (162.1381645021645, 176.45321806633734, 166.54503594996555, 174.50094348306334, 184.0113586046649,
                   129.36617723492725, 147.22685934389784, 146.11529417084972, 174.2511016051253, 177.9369499633309),
    "size": (0.5459183673469388, 0.3201530612244898, 0.6147959183673469, 0.39285714285714285, 0.5778061224489796,
             0.2512755102040816, 0.5969387755102041, 0.2895408163265306, 0.5408163265306123, 0.4336734693877551),
    "pattern": (48.74039829672327, 82.5138612412178, 57.24533915654429, 63.657362667489124, 61.01384770889488,
                124.9921875, 58.05068868483413, 93.81088621961601, 55.30021459227468, 67.74951520718514),
}
# The middle band of each class: the training set's BAND quantiles of each measure (fit_thresholds
# with q = 0.4 and q = 0.6; tests/test_captions.py recomputes them).  An image whose measure lies
# inside its class's band is about as dark as it is light, so its caption names neither word.
BAND = (0.4, 0.6)
BANDS = {
    "brightness": (
        (145.07114832535885, 166.34616397857332, 148.38170765404806, 161.3930630220666, 174.75266771527725,
         122.46651785714286, 128.61612965781478, 138.7552773826458, 165.51096598639455, 171.54642985935808),
        (176.39582505822344, 185.26985507246377, 180.3502711323764, 186.21871162219492, 191.8233248109087,
         137.21810889230244, 163.98784482196427, 153.51355975485188, 181.17888695652172, 183.29925236281562)),
    "size": (
        (0.5318877551020408, 0.3125, 0.5956632653061225, 0.37244897959183676, 0.5612244897959183, 0.22704081632653061,
         0.5778061224489796, 0.2780612244897959, 0.5127551020408163, 0.41581632653061223),
        (0.5599489795918368, 0.32908163265306123, 0.6339285714285714, 0.4145408163265306, 0.5931122448979592,
         0.274234693877551, 0.6147959183673469, 0.3022959183673469, 0.5676020408163265, 0.4528061224489796)),
    "pattern": (
        (44.16975747563983, 79.0429865666979, 54.14209610784953, 57.8996673459996, 57.079982215005124,
         117.22016842105263, 53.299396583060705, 88.41346472646896, 50.87913379073756, 64.0268751722928),
        (54.27057337711543, 86.20698503207413, 60.599324615875275, 70.5397384305835, 65.3703031853149,
         134.66097972972972, 63.146060808076, 99.37559377559377, 59.92519673934505, 72.02098533554864)),
}
FACING_THRESHOLD = 0.0     # facing_score > 0: the toe points right

# (attribute, value, label): training captions never pair these words.
HELD_OUT = (("brightness", "dark", 5), ("size", "small", 9), ("pattern", "patterned", 8))


# ----------------------------------------------------------------------------------------------
# Checks

def _images(images) -> np.ndarray:
    """images (N, 1, 28, 28) or (N, 28, 28), real values in [0, 255] -> float32 (N, 28, 28).
    float32 holds every uint8 image exactly, and the measures' sums (integers below 2^24) too."""
    a = np.asarray(images)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 3 or a.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must have shape (N, 1, 28, 28) or (N, 28, 28), got {a.shape}")
    if a.dtype.kind not in "uif":
        raise ValueError(f"images must hold real numbers in [0, 255], got dtype {a.dtype}")
    if a.size and not (np.all(np.isfinite(a)) and a.min() >= 0 and a.max() <= 255):
        raise ValueError(f"images must lie in [0, 255] (uint8, as load_images gives), got values in "
                         f"[{a.min()}, {a.max()}]")
    return a.astype(np.float32)


def _labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels must have shape ({n},), one per image, got {y.shape}")
    if y.size and (y.dtype.kind not in "ui" or y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be integers in [0, {NUM_CLASSES}), got dtype {y.dtype} "
                         f"with values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def _checked(images, labels):
    x = _images(images)
    return x, _labels(labels, len(x))


# ----------------------------------------------------------------------------------------------
# Measures: one number per image (N,), NaN where the image has no garment pixel.

def garment_mask(x: np.ndarray) -> np.ndarray:
    """The garment's pixels (N, 28, 28) bool: intensity above GARMENT_LEVEL."""
    return x > GARMENT_LEVEL


def mean_intensity(x: np.ndarray) -> np.ndarray:
    """Brightness measure: the mean intensity of the garment's pixels (N,)."""
    m = garment_mask(x)
    n = m.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(m, x, 0).sum((1, 2), dtype=np.float64) / n, np.nan)


def coverage(x: np.ndarray) -> np.ndarray:
    """Size measure: the fraction of the image's pixels the garment covers (N,)."""
    m = garment_mask(x)
    n = m.sum((1, 2))
    return np.where(n > 0, n / m[0].size if len(m) else 0.0, np.nan)


def laplacian_energy(x: np.ndarray) -> np.ndarray:
    """Pattern measure: the mean |Laplacian| (4-neighbour, 4 x - up - down - left - right) over
    the garment's interior, the pixels whose four neighbours are garment too, so that the outline
    does not count as pattern (N,).  NaN without interior pixels."""
    m = garment_mask(x)
    c = x[:, 1:-1, 1:-1]
    lap = np.abs(4 * c - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:])
    inner = (m[:, 1:-1, 1:-1] & m[:, :-2, 1:-1] & m[:, 2:, 1:-1] & m[:, 1:-1, :-2] & m[:, 1:-1, 2:])
    n = inner.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(inner, lap, 0).sum((1, 2), dtype=np.float64) / n, np.nan)


def facing_score(x: np.ndarray) -> np.ndarray:
    """Facing measure (N,), positive when the toe points right: the centre of the garment's
    bounding box minus the intensity centroid of its upper half (the rows above the box's middle),
    over the box's width.  The upper half is the shaft, heel counter or ankle strap, which stands
    over the heel; the toe is the far end.  NaN without garment pixels."""
    m = garment_mask(x)
    cols, rows = m.any(1), m.any(2)                      # (N, 28) each
    some = cols.any(1)
    c0, c1 = cols.argmax(1), IMAGE_SIZE - 1 - cols[:, ::-1].argmax(1)
    r0, r1 = rows.argmax(1), IMAGE_SIZE - 1 - rows[:, ::-1].argmax(1)
    j = np.arange(IMAGE_SIZE)
    upper = m & (j[None, :, None] < ((r0 + r1) / 2)[:, None, None])
    w = np.where(upper, x, 0)
    mass = w.sum((1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (w.sum(1, dtype=np.float64) @ j) / mass
        s = ((c0 + c1) / 2 - cx) / np.maximum(c1 - c0, 1)
    return np.where(some & (mass > 0), s, np.nan)


MEASURES = {"brightness": mean_intensity, "size": coverage, "pattern": laplacian_energy}
CHUNK = 1024                # images per step: the temporaries stay in cache (measured 1.3-5x faster)


def measure(name: str, x: np.ndarray) -> np.ndarray:
    """MEASURES[name] (or facing_score for 'facing') of checked images x (N, 28, 28), in chunks."""
    f = facing_score if name == "facing" else MEASURES[name]
    if len(x) <= CHUNK:
        return f(x)
    return np.concatenate([f(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])


def fit_thresholds(images, labels, q: float = 0.5) -> dict:
    """The per-class thresholds: for brightness, size and pattern, the q-quantile (default: the
    median) of the measure over each class's images (NaNs left out).  Returns {attribute: (10,)
    float64}; q = BAND[0] and BAND[1] give the table BANDS."""
    from .._checks import real

    q = real("q", q, 0.0, 1.0)
    x, y = _checked(images, labels)
    out = {}
    for name in MEASURES:
        v = measure(name, x)
        out[name] = np.array([np.nanquantile(v[y == k], q) if np.any((y == k) & ~np.isnan(v)) else np.nan
                              for k in range(NUM_CLASSES)])
    return out


# ----------------------------------------------------------------------------------------------
# Attribute words: (N,) arrays of str, "" where the attribute does not apply.

WORDS = {"brightness": ("dark", "light"), "size": ("small", "large"), "pattern": ("plain", "patterned")}


def _split(name: str, x: np.ndarray, y: np.ndarray, clear_only: bool = False) -> np.ndarray:
    """The words of a thresholded attribute for checked images x (N, 28, 28) and labels y (N,):
    the side of the class median; with ``clear_only``, "" inside the class's band (BANDS)."""
    below, above = WORDS[name]
    v = measure(name, x)
    t = np.asarray(THRESHOLDS[name], dtype=np.float64)[y]
    words = np.where(np.isnan(v), "", np.where(v > t, above, below))
    if clear_only:
        lo, hi = (np.asarray(b, dtype=np.float64)[y] for b in BANDS[name])
        words = np.where((v < lo) | (v > hi), words, "")                 # NaN compares False: ""
    return words.astype(object)


def _facing(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.full(len(y), "", dtype=object)
    shoe = np.isin(y, FOOTWEAR)
    s = measure("facing", x[shoe])
    out[shoe] = np.where(np.isnan(s), "", np.where(s > FACING_THRESHOLD, "right", "left"))
    return out


def brightness(images, labels) -> np.ndarray:
    """'dark' / 'light': the garment's mean intensity against its class's median."""
    return _split("brightness", *_checked(images, labels))


def size(images, labels) -> np.ndarray:
    """'small' / 'large': the fraction of pixels the garment covers against its class's median."""
    return _split("size", *_checked(images, labels))


def pattern(images, labels) -> np.ndarray:
    """'plain' / 'patterned': the garment's interior mean |Laplacian| against its class's median."""
    return _split("pattern", *_checked(images, labels))


def facing(images, labels) -> np.ndarray:
    """'left' / 'right': the way the toe points (facing_score against 0), for footwear (Sandal,
    Sneaker, Ankle boot); '' for every other class."""
    return _facing(*_checked(images, labels))


def attributes(images, labels) -> dict:
    """{attribute: (N,) words} for every attribute in ATTRIBUTES."""
    x, y = _checked(images, labels)
    return {"brightness": _split("brightness", x, y), "size": _split("size", x, y), "facing": _facing(x, y),
            "pattern": _split("pattern", x, y)}


def caption_attributes(images, labels) -> dict:
    """What a caption may say: ``attributes``, with "" where the image lies inside its class's
    middle band (BANDS) of brightness, size or pattern, where neither word is clearly true.
    Facing is a fact and is kept."""
    x, y = _checked(images, labels)
    return {"brightness": _split("brightness", x, y, True), "size": _split("size", x, y, True),
            "facing": _facing(x, y), "pattern": _split("pattern", x, y, True)}


def is_held_out(labels, attrs) -> np.ndarray:
    """(N,) bool: the image's class and attributes form one of the HELD_OUT combinations."""
    y = np.asarray(labels)
    out = np.zeros(len(y), dtype=bool)
    for name, value, label in HELD_OUT:
        if name not in attrs:
            raise ValueError(f"attrs must hold the attribute {name!r} (see ATTRIBUTES), got {sorted(attrs)}")
        words = np.asarray(attrs[name], dtype=object)
        if words.shape != y.shape:
            raise ValueError(f"attrs[{name!r}] must have labels' shape {y.shape}, got {words.shape}")
        out |= (y == label) & (words == value)
    return out


def held_out_words(label: int, attrs: dict) -> set:
    """The attribute names whose words this (label, attrs) pair must not say in training."""
    return {name for name, value, k in HELD_OUT if k == label and attrs.get(name) == value}


# ----------------------------------------------------------------------------------------------
# Captions

def _article(next_word: str, noun: str) -> str:
    if noun in PLURAL:
        return "a pair of"
    return "an" if next_word[:1] in "aeiou" else "a"


def render(template: int, label: int, words: dict, rng) -> str:
    """One caption from template number ``template``: the class ``label`` named with a random
    synonym and the attribute words ``words`` ({attribute: value}, the ones to say) with random
    synonyms."""
    noun = CLASS_WORDS[label][rng.integers(len(CLASS_WORDS[label]))]
    adjs = []
    for name in ADJECTIVE_ORDER:
        if words.get(name):
            options = ATTRIBUTE_WORDS[name][words[name]]
            adjs.append(options[rng.integers(len(options))])
    face = ""
    if words.get("facing"):
        face = FACING_PHRASES[rng.integers(len(FACING_PHRASES))].format(words["facing"])
    if not adjs and template >= 3:
        template = 0
    if template == 4 and face:        # "a sneaker facing left, small and dark"
        face = face + ","
        fmt = "{a} {noun} {facing} {and}"
    elif template == 5 and face:      # "a sneaker that is small and dark, facing left"
        fmt = "{a} {noun} that is {and}, {facing}"
    else:
        fmt = TEMPLATES[template]
    if template == 3 and len(adjs) > 1:
        adjs = [adjs[i] for i in rng.permutation(len(adjs))]   # a list's order is free
    first = (adjs[0] if adjs and "{adjectives}" in fmt else noun)
    and_list = " and ".join(filter(None, [", ".join(adjs[:-1])] + adjs[-1:]))   # "small, dark and plain"
    text = fmt.format(a=_article(first, noun), adjectives=" ".join(adjs), noun=noun, facing=face,
                      commas=", ".join(adjs), **{"and": and_list})
    return " ".join(text.replace(" ,", ",").split()).rstrip(",")


def caption(label: int, attrs: dict, rng, hold_out: bool = False) -> str:
    """A caption for one image of class ``label`` with attribute words ``attrs`` ({attribute:
    value}, "" where it does not apply): a random template, random synonyms, each attribute named
    with probability MENTION_P.  hold_out: never say a HELD_OUT attribute word for this class."""
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be an integer in [0, {NUM_CLASSES}), got {label!r}")
    for name, value in attrs.items():
        if name not in ATTRIBUTE_WORDS or (value and value not in ATTRIBUTE_WORDS[name]):
            raise ValueError(f"attrs must map attributes {ATTRIBUTES} to their values or '', got {name!r}: {value!r}")
    banned = held_out_words(int(label), attrs) if hold_out else set()
    template = int(rng.integers(len(TEMPLATES)))
    keep = rng.random(len(ATTRIBUTES)) < MENTION_P
    words = {name: attrs.get(name, "") for name, k in zip(ATTRIBUTES, keep) if k and name not in banned}
    return render(template, int(label), words, rng)


def captions(images, labels, seed: int = 0, hold_out: bool = False) -> list:
    """One caption per image (a list of N str), deterministic in (seed, index): image i's
    randomness is ``np.random.default_rng((seed, i))``."""
    from .._checks import int_at_least

    seed = int_at_least("seed", seed, 0)
    x, y = _checked(images, labels)
    attrs = caption_attributes(x, y)
    return [caption(int(y[i]), {name: str(attrs[name][i]) for name in ATTRIBUTES},
                    np.random.default_rng((seed, i)), hold_out=hold_out) for i in range(len(y))]


def held_out_prompts(n: int, seed: int = 0) -> list:
    """``n`` prompts that each ask for one HELD_OUT combination (cycled), e.g. "a black sandal":
    a random template and synonyms, the held-out attribute word always said and the class's
    other attributes never (they are unmeasured wishes): what a model never read in training."""
    from .._checks import int_at_least

    n = int_at_least("n", n, 1)
    out = []
    for i in range(n):
        name, value, label = HELD_OUT[i % len(HELD_OUT)]
        rng = np.random.default_rng((seed, i, 1))
        out.append(render(int(rng.integers(len(TEMPLATES))), label, {name: value}, rng))
    return out


def _phrases():
    """(words tuple, kind, value) for every class and attribute word, longest phrase first."""
    out = [(tuple(w.split()), "class", k) for k, names in enumerate(CLASS_WORDS) for w in names]
    out += [((w,), name, value) for name, values in ATTRIBUTE_WORDS.items() for value, ws in values.items()
            for w in ws]
    return sorted(out, key=lambda p: -len(p[0]))


def _words(text: str) -> list:
    return text.lower().replace(",", " ").replace(".", " ").replace(":", " ").replace(";", " ").split()


def parse_caption(text: str):
    """The inverse of ``caption``: (label, {attribute: value}) for the class and attribute words
    ``text`` says, through the synonym tables (other words are ignored).  A text that names no
    class, two classes, or two values of one attribute is a ValueError naming it."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = _words(text)
    labels, attrs = set(), {}
    i = 0
    while i < len(words):
        for phrase, kind, value in _phrases():
            if tuple(words[i:i + len(phrase)]) == phrase:
                if kind == "class":
                    labels.add(value)
                elif attrs.setdefault(kind, value) != value:
                    raise ValueError(f"caption {text!r} says two {kind} values, {attrs[kind]!r} and {value!r}")
                i += len(phrase)
                break
        else:
            i += 1
    if not labels:
        raise ValueError(f"caption {text!r} names no class (known words: "
                         + ", ".join(w for names in CLASS_WORDS for w in names) + ")")
    if len(labels) > 1:
        raise ValueError(f"caption {text!r} names more than one class: {sorted(labels)}")
    return labels.pop(), attrs


def vocabulary() -> list:
    """Every word a caption can use (templates, class names, attribute words, facing phrases),
    sorted; the tokenizer's corpus includes them all so a hand-written prompt from the same words
    has no unknown token."""
    text = " ".join(TEMPLATES + FACING_PHRASES) + " a an pair of and that is"
    text = text.replace("{", " {").replace("}", "} ")
    words = {w for w in _words(text) if not w.startswith("{")}
    words |= {w for names in CLASS_WORDS for n in names for w in n.split()}
    words |= {w for values in ATTRIBUTE_WORDS.values() for ws in values.values() for w in ws}
    return sorted(words)


def caption_dataset(split: str = "train", root=None, limit=None, seed: int = 0):
    """Fashion-MNIST with captions: (images uint8 (N, 1, 28, 28), labels int64 (N,), captions
    list of N str).  The HELD_OUT combinations are applied to the train split only ('all': the
    train part, then the test part, each captioned as in its own split)."""
    from .images import load_images

    if split == "all":
        parts = [caption_dataset(s, root, None, seed) for s in ("train", "test")]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        text = parts[0][2] + parts[1][2]
        if limit is not None:
            x, y, text = x[:limit], y[:limit], text[:limit]
        return x, y, text
    x, y = load_images("fashion-mnist", split, root=root, limit=limit)
    return x, y, captions(x, y, seed=seed, hold_out=split == "train")
