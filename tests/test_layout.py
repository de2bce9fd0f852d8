"""Layout-to-image (minidiff.data.layout, LayoutEncoder, condition='layout'): the canvases are
deterministic and hold their garments inside their boxes, the layout checks name the bad box,
the boxes found on real canvases are the true ones, the encoder ignores padding, and a tiny
layout model trains, resumes exactly and samples with guidance through the CLI."""
import numpy as np
import pytest

from minidiff.data.images import load_images
from minidiff.data.layout import (PAD, check_layout, connected_components, empty_layout, find_boxes, iou,
                                  layout_report, make_canvases, quantise_layout, tight_boxes)

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


@pytest.fixture(scope="module")
def garments():
    x, y = load_images("fashion-mnist", "test", limit=600)
    return x, y


@pytest.fixture(scope="module")
def canvases(garments):
    return make_canvases(*garments, n=60, seed=3)


def blobs(n, seed):
    """Synthetic garments: a random rectangle-ish blob per image whose ink is 10 + 20 * class."""
    rng = np.random.default_rng(seed)
    x, y = np.zeros((n, 1, 28, 28), np.uint8), rng.integers(0, 10, n)
    for i in range(n):
        x0, y0 = rng.integers(0, 14, 2)
        x1, y1 = x0 + rng.integers(3, 14), y0 + rng.integers(3, 14)
        x[i, 0, y0:y1, x0:x1] = 10 + 20 * y[i]
        x[i, 0, y0, x0] = 0                                  # a notch: the tight box still spans it
    return x, y


def test_canvases_are_deterministic_in_the_seed(garments):
    a = make_canvases(*garments, n=20, seed=5)
    b = make_canvases(*garments, n=20, seed=5)
    c = make_canvases(*garments, n=20, seed=6)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (20, 1, 56, 56) and a[0].dtype == np.uint8 and a[1].shape == (20, 3, 5)


def test_boxes_lie_inside_do_not_overlap_and_hold_their_garments_pixels():
    x, y = blobs(300, 0)
    imgs, layouts = make_canvases(x, y, n=40, seed=1, canvas=56, objects=(2, 3))
    for img, lay in zip(imgs[:, 0], layouts):
        rows = lay[lay[:, 0] != PAD]
        assert 2 <= len(rows) <= 3 and np.all(lay[len(rows):, 0] == PAD)   # padding only at the end
        check_layout(rows, 56)                                               # inside, positive area
        inside = np.zeros_like(img, bool)
        for c, x0, y0, x1, y1 in rows:
            region = img[y0:y1, x0:x1]
            assert not inside[y0:y1, x0:x1].any()                            # no two boxes overlap
            inside[y0:y1, x0:x1] = True
            assert set(np.unique(region)) <= {0, 10 + 20 * c}                # its own garment's pixels only
            assert np.array_equal(tight_boxes(region[None, None])[0], [0, 0, x1 - x0, y1 - y0])   # tight
        assert not img[~inside].any()                                        # background outside the boxes


def test_quantisation_is_within_half_a_cell_and_the_encoder_uses_it(canvases):
    from minidiff.torch.conditioning import LayoutEncoder

    layouts = canvases[1]
    for canvas, grid in ((56, 14), (56, 8)):
        cells = quantise_layout(layouts, canvas, grid)
        real = layouts[..., 0] != PAD
        assert np.array_equal(cells[..., 0], layouts[..., 0]) and cells[..., 1:].min() >= 0
        assert cells[..., 1:].max() <= grid
        err = np.abs(cells[..., 1:] * (canvas / grid) - layouts[..., 1:])[real]
        assert err.max() <= canvas / grid / 2 + 1e-12                          # one cell: canvas / grid
        enc = LayoutEncoder(10, grid, 16, 3, canvas)
        assert np.array_equal(enc.cells(torch.from_numpy(layouts)).numpy(), cells[..., 1:])


@pytest.mark.parametrize("row, what", [
    ([7, 2, 2, 26, 57], "outside the 56x56 canvas"),
    ([7, -1, 2, 26, 26], "outside"),
    ([7, 5, 2, 5, 26], "zero area"),
    ([7, 5, 9, 20, 3], "zero area"),
    ([10, 2, 2, 26, 26], "class 10 is unknown"),
])
def test_check_layout_names_the_bad_box(row, what):
    good = [8, 30, 28, 54, 54]
    with pytest.raises(ValueError, match=what) as e:
        check_layout([good, row], canvas=56)
    assert "box 1" in str(e.value)
    with pytest.raises(ValueError, match="shape"):
        check_layout([[1, 2, 3, 4]], canvas=56)
    assert np.array_equal(check_layout([good, [PAD, 0, 0, 0, 0]], 56), [good, [PAD, 0, 0, 0, 0]])


def test_iou_of_known_boxes():
    assert iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)
    assert iou([3, 4, 10, 12], [3, 4, 10, 12]) == 1.0
    assert iou([0, 0, 2, 2], [2, 0, 4, 2]) == 0.0                     # touching, exclusive ends
    assert iou([-1, -1, -1, -1], [0, 0, 5, 5]) == 0.0                 # not found
    assert iou([0, 0, 4, 4], [0, 0, 4, 2]) == pytest.approx(0.5)


def test_connected_components_match_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    mask = np.random.default_rng(0).random((3, 20, 20)) < 0.45
    ours = connected_components(mask)
    for m, lab in zip(mask, ours):
        ref, k = ndimage.label(m, structure=np.ones((3, 3)))
        assert len(np.unique(lab[m])) == k and np.all((lab >= 0) == m)
        pairs = set(zip(lab[m].tolist(), ref[m].tolist()))             # a bijection between the labellings
        assert len(pairs) == k


def test_find_boxes_recovers_the_true_boxes_of_real_canvases(canvases):
    imgs, layouts = canvases
    x = imgs / 127.5 - 1                                               # the model range
    found = find_boxes(x, layouts, threshold=-0.99)
    real = layouts[..., 0] != PAD
    assert iou(found, layouts[..., 1:])[real].min() >= 0.9
    assert np.all(found[~real] == -1)


def test_layout_report_on_real_canvases_beats_shuffled_layouts(canvases):
    from minidiff.torch.evaluate import class_probabilities

    imgs, layouts = canvases
    x = imgs / 127.5 - 1
    real = layout_report(x, layouts, class_probabilities)
    shuffled = layout_report(x, np.roll(layouts, 1, axis=0), class_probabilities)
    assert real["iou_at_least_0.5"] >= 0.95 and real["class_accuracy"] >= 0.7
    assert shuffled["iou_at_least_0.5"] < 0.5 and shuffled["class_accuracy"] < real["class_accuracy"]
    assert real["n_garments"] == int((layouts[..., 0] != PAD).sum())


def test_the_encoder_ignores_padding_and_takes_the_empty_layout():
    from minidiff.torch.conditioning import LayoutEncoder

    torch.manual_seed(0)
    enc = LayoutEncoder(10, 14, 16, 3, 56)
    a = torch.tensor([[[7, 2, 2, 26, 26], [8, 30, 28, 54, 54], [PAD, 0, 0, 0, 0]]])
    b = a.clone()
    b[0, 2] = torch.tensor([PAD, 5, 6, 40, 50])                        # another padded row
    (ta, ma), (tb, mb) = enc(a), enc(b)
    assert ma.tolist() == [[True, True, True, False]] and torch.equal(ma, mb)
    assert torch.equal(ta[ma], tb[mb])
    t0, m0 = enc(enc.null[None])                                        # the empty layout: the start token only
    assert t0.shape == (1, 4, 16) and m0.tolist() == [[True, False, False, False]]
    assert torch.equal(enc.null, torch.from_numpy(empty_layout(3)))
    with pytest.raises(ValueError, match="classes"):
        enc(torch.tensor([[[10, 0, 0, 4, 4]]]))
    with pytest.raises(ValueError, match="at most|O <= 3"):
        enc(torch.zeros(1, 4, 5, dtype=torch.long))


def _tiny_layout(**kw):
    from minidiff.torch.train import ImageConfig

    return ImageConfig.from_preset("tiny", **{"condition": "layout", "limit": 24, "batch_size": 4, "sample_every": 0,
                                              "unet": {"channel_mults": (1, 2, 2)}, **kw})


def test_a_padded_row_changes_nothing_in_the_conditioned_unet():
    from minidiff.torch.train import build_network

    torch.manual_seed(0)
    net = build_network(_tiny_layout()).eval()
    with torch.no_grad():
        for p in net.parameters():                     # the zero-initialised projections too: tau must matter
            if p.abs().max() < 1e-3:
                p.normal_(0, 0.2)
    x, t = torch.randn(1, 1, 56, 56), torch.full((1,), 0.5)
    a = torch.tensor([[[7, 2, 2, 26, 26], [PAD, 0, 0, 0, 0], [PAD, 0, 0, 0, 0]]])
    b, c = a.clone(), a.clone()
    b[0, 1] = torch.tensor([PAD, 9, 9, 30, 30])        # another padded row
    c[0, 1] = torch.tensor([8, 30, 28, 54, 54])        # a real one
    with torch.no_grad():
        assert torch.equal(net(x, t, layout=a), net(x, t, layout=b))
        assert not torch.allclose(net(x, t, layout=a), net(x, t, layout=c))


def test_a_tiny_layout_model_trains_resumes_exactly_and_samples_through_the_cli(tmp_path, capsys):
    from minidiff.checkpoint import load_image_checkpoint
    from minidiff.cli import main
    from minidiff.torch.train import train_images

    result = train_images(_tiny_layout(steps=3, ckpt_every=1), tmp_path / "straight", progress=False)
    assert result["steps"] == 3 and np.all(np.isfinite(result["losses"]))
    train_images(_tiny_layout(steps=2, ckpt_every=1), tmp_path / "resumed", progress=False)
    train_images(_tiny_layout(steps=3, ckpt_every=1), tmp_path / "resumed", resume=True, progress=False)
    a, _ = load_image_checkpoint(tmp_path / "straight")
    b, state = load_image_checkpoint(tmp_path / "resumed")
    assert state["step"] == 3 and state["config"]["condition"] == "layout"
    assert all(torch.equal(a[k], b[k]) for k in a)                    # same seed, same numbers

    grid, ckpt = tmp_path / "grid.png", str(tmp_path / "straight")
    assert main(["sample", "--ckpt", ckpt, "--n", "2", "--steps", "2", "--guidance", "3",
                 "--layout", "sneaker 2,2,26,26; ankle boot 30,28,54,54 | bag 4,30,28,54", "--out", str(grid)]) == 0
    assert grid.is_file()
    capsys.readouterr()
    for bad, what in (("sneaker 2,2,26,60", "outside"), ("sneaker 2,2,2,26", "zero area"), ("hat 1,1,3,3", "hat")):
        assert main(["sample", "--ckpt", ckpt, "--n", "2", "--layout", bad, "--out", str(grid)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "--layout" in err[0] and what in err[0]
    assert main(["sample", "--ckpt", ckpt, "--n", "2", "--out", str(grid)]) == 2
    assert "layout-conditioned" in capsys.readouterr().err


def test_eval_of_a_layout_model_reports_iou_and_class_beside_the_ceiling_and_the_floor(tmp_path, capsys):
    import json

    from minidiff.cli import main
    from minidiff.data.layout import canvas_dataset
    from minidiff.torch.train import train_images

    train_images(_tiny_layout(steps=1, ckpt_every=1), tmp_path / "run", progress=False)
    report_path = tmp_path / "eval.json"
    assert main(["eval", "--ckpt", str(tmp_path / "run"), "--n", "6", "--steps", "2", "--guidance", "3",
                 "--out", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    _, layouts = canvas_dataset("test", n=6, config=_tiny_layout().layout)
    asked = int((layouts[..., 0] != PAD).sum())                    # the first 6 test canvases' layouts by default
    for key in ("layout", "real_canvases", "shuffled_layouts"):
        r = report[key]
        assert r["n_canvases"] == 6 and r["n_garments"] == asked
        assert 0 <= r["iou_at_least_0.5"] <= 1 and 0 <= r["class_accuracy"] <= 1 and 0 <= r["mean_iou"] <= 1
    assert report["real_canvases"]["iou_at_least_0.5"] >= 0.8      # the box finder recovers real boxes
    assert report["guidance"] == 3.0 and "IoU >= 0.5" in capsys.readouterr().out
    assert main(["eval", "--ckpt", str(tmp_path / "run"), "--n", "2", "--steps", "2", "--layout", "bag 4,4,30,30",
                 "--out", str(report_path)]) == 0               # a given layout: no ceiling or floor to compare
    given = json.loads(report_path.read_text())
    assert given["layout"]["n_garments"] == 2 and "real_canvases" not in given


def test_parse_layout_pads_and_cycles():
    from minidiff.cli import UsageError, parse_layout

    a = parse_layout("sneaker 2,2,26,26; Ankle Boot 30,28,54,54 | 8 4,30,28,54 |", 56, 3)
    assert a.shape == (3, 3, 5) and a[0, :2, 0].tolist() == [7, 9] and a[1, 0].tolist() == [8, 4, 30, 28, 54]
    assert np.array_equal(a[2], empty_layout(3)) and a[0, 2, 0] == PAD and a[1, 1:, 0].tolist() == [PAD, PAD]
    with pytest.raises(UsageError, match="at most 3"):
        parse_layout("bag 0,0,9,9; bag 10,0,19,9; bag 20,0,29,9; bag 30,0,39,9", 56, 3)


@pytest.mark.parametrize("kw, what", [({"dataset": "digits"}, "fashion-mnist"), ({"flip": True}, "flip"),
                                      ({"class_conditional": True}, "class_conditional")])
def test_a_layout_config_refuses_what_contradicts_it(kw, what):
    with pytest.raises(ValueError, match=what):
        _tiny_layout(**kw).validate()
    _tiny_layout().validate()
