"""EDM's non-leaking augmentation (minidiff.augment): the pipe, its labels, the U-Net's augment
labels and the image trainer's ``augment`` option.  Exact resume with augment is one case of
tests/test_image_train.py's resume test."""
import math

import numpy as np
import pytest

from minidiff.augment import AUGMENT_DIM, apply_augmentations, augment, augment_labels, draw_augmentations
from minidiff.backend import generator

torch = pytest.importorskip("torch")

from minidiff.cli import main  # noqa: E402
from minidiff.torch.train import ImageConfig  # noqa: E402
from minidiff.torch.unet import UNet, UNetConfig  # noqa: E402

N = 28


def images(B=6, C=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (B, C, N, N))           # (B, C, 28, 28) float64


def only(B, **values):
    """Parameters with every transform off except ``values`` (name -> (B,) array)."""
    p = {k: np.zeros(B) for k in ("flip", "tx", "ty", "log2_scale")}
    return {**p, **{k: np.asarray(v, dtype=np.float64) for k, v in values.items()}}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_p_zero_is_the_identity_with_zero_labels(backend):
    x = images()
    x = torch.as_tensor(x, dtype=torch.float32) if backend == "torch" else x.astype(np.float32)
    y, labels = augment(x, 0.0, generator(1, backend=backend))
    assert type(y) is type(x) and y.dtype == x.dtype and tuple(labels.shape) == (6, AUGMENT_DIM)
    assert (y == x).all() and (labels == 0).all()


def test_flip_twice_is_the_identity_and_flip_mirrors():
    x, B = images(), 6
    once = apply_augmentations(x, only(B, flip=np.ones(B)))
    np.testing.assert_array_equal(once, x[..., ::-1])
    np.testing.assert_array_equal(apply_augmentations(once, only(B, flip=np.ones(B))), x)


def test_p_one_flips_every_image_and_labels_say_so():
    params = draw_augmentations(500, 1.0, generator(2, backend="numpy"), N)
    labels = augment_labels(params, N)
    assert (labels[:, 0] == 1).all() and (labels[:, 3] != 0).all()
    m = math.floor(0.125 * N)
    np.testing.assert_array_equal(labels[:, 1] * N, params["tx"])
    assert set(np.unique(params["tx"])) == set(range(-m, m + 1)) == set(np.unique(params["ty"]))


def test_translation_moves_a_pixel_where_the_labels_say():
    params = draw_augmentations(40, 1.0, generator(3, backend="numpy"), N)
    shift = only(40, tx=params["tx"], ty=params["ty"])
    labels = augment_labels(shift, N)
    x = -np.ones((40, 1, N, N))
    x[:, 0, 10, 17] = 1.0                                                      # one white pixel at (row 10, col 17)
    y = apply_augmentations(x, shift)
    for b in range(40):
        row, col = 10 + round(labels[b, 2] * N), 17 + round(labels[b, 1] * N)  # +tx: right, +ty: down
        expected = -np.ones((N, N))
        expected[row, col] = 1.0
        np.testing.assert_array_equal(y[b, 0], expected)                       # the rest is background


def test_scaling_a_centred_blob_scales_its_radius_by_two_to_the_label():
    """The radius sqrt(E[r^2]) of the mass above the background: bilinear interpolation widens a
    sigma = 3 px Gaussian by about 1 % (its variance grows by ~1/6 px^2); a wrong factor (the
    inverse, 2^-0.4 at the smallest label used) is 15 % off."""
    c = (N - 1) / 2
    q = np.arange(N)
    r2 = (q[:, None] - c) ** 2 + (q[None, :] - c) ** 2                          # (28, 28)
    x = np.broadcast_to(2 * np.exp(-r2 / (2 * 3.0 ** 2)) - 1, (8, 1, N, N))
    params = draw_augmentations(8, 1.0, generator(4, backend="numpy"), N, scale_std=0.3)
    params = only(8, log2_scale=np.where(np.abs(params["log2_scale"]) < 0.2, 0.3, params["log2_scale"]))
    labels = augment_labels(params, N)
    y = apply_augmentations(x, params)

    def radius(img):
        m = img + 1
        return np.sqrt((r2 * m).sum() / m.sum())

    for b in range(8):
        np.testing.assert_allclose(radius(y[b, 0]) / radius(x[b, 0]), 2 ** labels[b, 3], rtol=0.02)


def test_each_transform_is_applied_with_probability_p():
    """Binomial counts, 5 standard deviations; a shift of 0 px on both axes is drawn with
    probability 1 / 7^2 even when applied."""
    n, p = 4000, 0.3
    params = draw_augmentations(n, p, generator(5, backend="torch"), N)
    m = math.floor(0.125 * N)
    frequencies = {"flip": (params["flip"] != 0, p), "scale": (params["log2_scale"] != 0, p),
                   "shift": ((params["tx"] != 0) | (params["ty"] != 0), p * (1 - 1 / (2 * m + 1) ** 2))}
    for name, (hit, q) in frequencies.items():
        assert abs(float(hit.double().mean()) - q) < 5 * math.sqrt(q * (1 - q) / n), name


def test_numpy_and_torch_give_the_same_augmentation():
    x = images()
    params = draw_augmentations(6, 1.0, generator(6, backend="numpy"), N)
    a = apply_augmentations(x, params)
    b = apply_augmentations(torch.as_tensor(x), {k: torch.as_tensor(v) for k, v in params.items()})
    np.testing.assert_allclose(a, b.numpy(), rtol=0, atol=1e-12)
    assert not np.allclose(a, x)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="p must lie in"):
        augment(images(), 1.5, generator(0, backend="numpy"))
    with pytest.raises(ValueError, match="square"):
        augment(np.zeros((2, 1, 8, 6)), 0.5, generator(0, backend="numpy"))


def test_unet_takes_augment_labels_and_none_means_zeros():
    torch.manual_seed(0)
    cfg = UNetConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(),
                     groups=4, dropout=0.0, augment_dim=AUGMENT_DIM)
    net = UNet(cfg).eval()
    for p in net.parameters():                                 # no near-zero output layer: labels must show
        torch.nn.init.normal_(p, std=0.2)
    x, t = torch.randn(3, 1, N, N), torch.tensor([1.0, 5.0, 20.0])
    with torch.no_grad():
        none = net(x, t)
        assert torch.equal(none, net(x, t, augment_labels=torch.zeros(3, AUGMENT_DIM)))
        assert not torch.allclose(none, net(x, t, augment_labels=torch.ones(3, AUGMENT_DIM)))
    with pytest.raises(ValueError, match="augment_labels must be floats of shape"):
        net(x, t, augment_labels=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="augment_dim=0"):
        UNet(UNetConfig(base_channels=8, channel_mults=(1, 2), attention_resolutions=(), groups=4))(
            x, t, augment_labels=torch.zeros(3, AUGMENT_DIM))
    with pytest.raises(ValueError, match="augment_dim must be"):
        UNetConfig(augment_dim=-1)


@pytest.mark.parametrize("fields,match", [({"augment": 1.0}, r"augment must be a finite number in \[0, 1\)"),
                                          ({"augment": -0.1}, "augment must be"),
                                          ({"augment": float("nan")}, "augment must be"),
                                          ({"augment": 0.2, "flip": True}, "augment and flip exclude each other"),
                                          ({"augment": 0.2, "autoencoder": "runs/ae"}, "augment is for pixel models"),
                                          ({"augment": 0.2, "unet": {"augment_dim": 0}}, "augment_dim = 4")])
def test_image_config_refuses_bad_augment(fields, match):
    unet = {"base_channels": 8, "channel_mults": (1, 2), "groups": 4, "attention_resolutions": (),
            "augment_dim": AUGMENT_DIM, **fields.pop("unet", {})}
    with pytest.raises(ValueError, match=match):
        ImageConfig(dataset="digits", unet=dict(image_size=8, **unet), **fields).validate()


def test_from_preset_sizes_the_augment_labels():
    assert ImageConfig.from_preset("tiny", dataset="digits", augment=0.2).validate().unet.augment_dim == AUGMENT_DIM
    assert ImageConfig.from_preset("tiny", dataset="digits").unet.augment_dim == 0


@pytest.mark.parametrize("args,exit_code", [(["--augment", "1.5"], 2), (["--augment", "1"], 2),
                                            (["--augment", "0.2", "--flip"], 2)])
def test_cli_augment_errors_are_one_line(args, exit_code, tmp_path, capsys):
    argv = ["train", "--backend", "torch", "--dataset", "digits", "--preset", "tiny", "--out", str(tmp_path / "r"),
            *args]
    try:
        code = main(argv)
    except SystemExit as e:                                    # argparse: a value out of its type's range
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == exit_code and len(err) <= 2 and "augment" in err[-1], err
