"""Image metrics (DESIGN section 7): the from-scratch Frechet distance and KID against closed
forms, scipy's sqrtm and torchmetrics given the same features; the shipped Fashion-MNIST
classifier; evaluate_images on real and broken images; clear errors.

make test's data step (`minidiff data fashion-mnist`) provides Fashion-MNIST, so nothing here skips."""
import copy
import json
import sys

import numpy as np
import pytest
import scipy.linalg
import torch

from minidiff.data.images import load_images, to_model_range
from minidiff.metrics import feature_statistics, frechet_distance, kid, polynomial_mmd2, trace_sqrt_product
from minidiff.torch.classifier import WEIGHTS_DIR, ClassifierConfig, FashionMNISTClassifier, load_classifier
from minidiff.torch.evaluate import classifier_accuracy, evaluate_images, image_features

WEIGHTS = WEIGHTS_DIR / "fashion_mnist_classifier.safetensors"


def _random_psd(rng, d, rank=None):
    A = rng.standard_normal((d, rank or d))
    return A @ A.T / d


# ----------------------------------------------------------------------------------------------
# The Frechet distance.

def test_feature_statistics_is_mean_and_unbiased_covariance():
    f = np.random.default_rng(0).standard_normal((50, 4)) * [1, 2, 3, 4]
    mu, sigma = feature_statistics(f)
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-12)


def test_frechet_distance_closed_form_for_commuting_covariances():
    # Sigma1 = Q diag(a) Q^T, Sigma2 = Q diag(b) Q^T commute: d^2 = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2
    rng = np.random.default_rng(1)
    d = 6
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    S1, S2 = Q @ np.diag(a) @ Q.T, Q @ np.diag(b) @ Q.T
    assert frechet_distance(mu1, S1, mu2, S2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, S1, mu1, S1) == pytest.approx(0.0, abs=1e-10)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [-1.0], [[9.0]]) == pytest.approx(4.0 + 1.0, rel=1e-12)


@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")   # sqrtm of a singular matrix
def test_trace_sqrt_product_matches_scipy_sqrtm(rank):
    rng = np.random.default_rng(2)
    for _ in range(3):
        S1, S2 = _random_psd(rng, 12, rank), _random_psd(rng, 12)
        expected = np.trace(scipy.linalg.sqrtm(S1 @ S2)).real
        assert trace_sqrt_product(S1, S2) == pytest.approx(expected, rel=1e-7, abs=1e-9)
        mu1, mu2 = rng.standard_normal(12), rng.standard_normal(12)
        fd_scipy = np.sum((mu1 - mu2) ** 2) + np.trace(S1 + S2) - 2 * expected
        assert frechet_distance(mu1, S1, mu2, S2) == pytest.approx(fd_scipy, rel=1e-7, abs=1e-8)


class _Given(torch.nn.Module):
    """A 'feature network' that returns its input: torchmetrics then sees exactly our features."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, f):
        return f


def test_frechet_distance_matches_torchmetrics_on_the_same_features():
    from torchmetrics.image.fid import FrechetInceptionDistance

    rng = np.random.default_rng(3)
    d = 16
    fx = rng.standard_normal((600, d)) @ rng.standard_normal((d, d)) * 0.3 + 0.5
    fy = rng.standard_normal((500, d)) * rng.uniform(0.5, 2, d)
    metric = FrechetInceptionDistance(feature=_Given(d))
    metric.update(torch.from_numpy(fx), real=True)
    metric.update(torch.from_numpy(fy), real=False)
    ours = frechet_distance(*feature_statistics(fx), *feature_statistics(fy))
    assert ours == pytest.approx(float(metric.compute()), rel=1e-6)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_matches_torchmetrics_and_a_direct_computation():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(4)
    d, n = 8, 120
    fx, fy = rng.standard_normal((n, d)), rng.standard_normal((n, d)) * 1.3 + 0.2
    # with subset_size = n every subset is the whole set, so torchmetrics' random draws do not matter
    metric = KernelInceptionDistance(feature=_Given(d), subsets=3, subset_size=n)
    metric.update(torch.from_numpy(fx), real=True)
    metric.update(torch.from_numpy(fy), real=False)
    tm_mean, tm_std = metric.compute()
    mean, std = kid(fx, fy, subsets=3, subset_size=n)
    assert mean == pytest.approx(float(tm_mean), rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-12) and float(tm_std) == pytest.approx(0.0, abs=1e-9)

    # unbiased MMD^2 by a double loop, with unequal set sizes
    x, y = fx[:7], fy[:5]
    k = lambda a, b: (a @ b / d + 1) ** 3
    xx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    xy = sum(k(x[i], y[j]) for i in range(7) for j in range(5)) / (7 * 5)
    assert polynomial_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)

    # KID's subsets: the same draws by hand
    r = np.random.default_rng(7)
    vals = []
    for _ in range(4):
        ix, iy = r.choice(n, 30, replace=False), r.choice(n, 30, replace=False)
        vals.append(polynomial_mmd2(fx[ix], fy[iy]))
    assert kid(fx, fy, subsets=4, subset_size=30, seed=7) == pytest.approx((np.mean(vals), np.std(vals)), rel=1e-12)
    assert kid(fx, fy, subsets=4, subset_size=30, seed=np.random.default_rng(7))[0] == pytest.approx(np.mean(vals))


def test_fd_is_biased_at_small_n_and_kid_is_not():
    # Two samples of ONE Gaussian: the true distance is 0.  FD's estimate falls with N; KID averages to ~0.
    rng = np.random.default_rng(5)
    d = 10
    L = np.linalg.cholesky(_random_psd(rng, d) + 0.1 * np.eye(d))
    draw = lambda n: rng.standard_normal((n, d)) @ L.T
    fd_mean, kid_mean = [], []
    for n in (25, 100, 400, 1000):
        fds, kids = [], []
        for _ in range(8):
            x, y = draw(n), draw(n)
            fds.append(frechet_distance(*feature_statistics(x), *feature_statistics(y)))
            kids.append(polynomial_mmd2(x, y))
        fd_mean.append(np.mean(fds))
        kid_mean.append((np.mean(kids), np.std(kids) / np.sqrt(len(kids))))
    assert all(b < a for a, b in zip(fd_mean, fd_mean[1:])), fd_mean
    assert fd_mean[0] > 8 * fd_mean[-1] > 0
    assert all(abs(m) < 4 * se for m, se in kid_mean), kid_mean


@pytest.mark.parametrize("call, match", [
    (lambda: feature_statistics(np.zeros(5)), "features must be a 2-D array"),
    (lambda: feature_statistics(np.zeros((1, 3))), "at least 2 samples"),
    (lambda: feature_statistics(np.array([[0.0, np.nan], [1.0, 2.0]])), "features contains NaN"),
    (lambda: trace_sqrt_product(np.eye(3), np.eye(4)), "sigma1 and sigma2 must have the same shape"),
    (lambda: trace_sqrt_product(np.ones((3, 2)), np.eye(3)), "sigma1 must be a square covariance matrix"),
    (lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4)), "same dimension D"),
    (lambda: frechet_distance(np.zeros(2), np.eye(3), np.zeros(3), np.eye(3)), r"mu1 must have shape \(D,\)"),
    (lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.full((3, 3), np.nan)), "sigma2 contains NaN"),
    (lambda: kid(np.zeros((10, 3)), np.zeros((10, 4)), subset_size=5), "same feature dimension"),
    (lambda: kid(np.zeros((10, 3)), np.zeros((8, 3)), subset_size=9), r"subset_size must be an integer in \[2, min"),
    (lambda: kid(np.zeros((10, 3)), np.zeros((8, 3)), subsets=0, subset_size=5), "subsets must be an integer >= 1"),
    (lambda: polynomial_mmd2(np.zeros((1, 3)), np.zeros((8, 3))), "features_x needs at least 2 samples"),
])
def test_metric_errors_name_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------------
# The shipped classifier and evaluate_images (Fashion-MNIST from Debian's package; CI installs it).

@pytest.fixture(scope="module")
def test_images():
    x, y = load_images("fashion-mnist", "test", limit=2000)
    return torch.from_numpy(to_model_range(x)), y


def test_shipped_classifier_loads_and_reaches_90_percent(test_images):
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert WEIGHTS.stat().st_size < 2_000_000
    assert record["test_accuracy"] >= 0.90 and record["n_test"] == 10000 and record["storage_dtype"] == "float16"
    for key in ("train_command", "seed", "epochs", "date", "config"):
        assert key in record
    net = load_classifier()
    assert not net.training and net.config == ClassifierConfig(**record["config"])
    x, y = test_images
    assert classifier_accuracy(x, y, net) >= 0.90
    assert classifier_accuracy(x[:500], (y[:500] + 1) % 10, net) < 0.1


def test_load_classifier_refuses_mismatched_files(tmp_path):
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())
    (tmp_path / WEIGHTS.name).write_bytes(WEIGHTS.read_bytes())
    other = dict(record, config=dict(record["config"], feature_dim=64))
    (tmp_path / WEIGHTS.with_suffix(".json").name).write_text(json.dumps(other))
    with pytest.raises(ValueError, match="does not match the architecture"):
        load_classifier(tmp_path)
    (tmp_path / WEIGHTS.with_suffix(".json").name).write_text(json.dumps(dict(record, sha256="0" * 64)))
    with pytest.raises(ValueError, match="sha256 differs"):
        load_classifier(tmp_path / WEIGHTS.name)
    with pytest.raises(FileNotFoundError, match="--train"):
        load_classifier(tmp_path / "elsewhere")


def test_image_features_shape_dtype_and_batching(test_images):
    x = test_images[0][:64]
    f = image_features(x)
    assert f.shape == (64, 128) and f.dtype == np.float64
    f7 = image_features(x.numpy(), batch_size=7)
    # The network runs in float32, and how its convolutions block the sums depends on the batch size
    # and the CPU, so neither run is bit-exact.  Compare both with the same network in float64: the
    # float32 forward error is at most ~ eps32 times the summed reduction lengths of its layers
    # (relative to the feature scale), on any machine.
    net = copy.deepcopy(load_classifier()).double().eval()
    with torch.no_grad():
        exact = net.features(x.double().clamp(-1, 1)).numpy()
    K = sum(m.in_channels * m.kernel_size[0] * m.kernel_size[1] if isinstance(m, torch.nn.Conv2d) else m.in_features
            for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m is not net.head)
    atol = np.finfo(np.float32).eps * K * np.abs(exact).max()
    np.testing.assert_allclose(f, exact, rtol=0, atol=atol)
    np.testing.assert_allclose(f7, exact, rtol=0, atol=atol)


def test_a_stale_dataset_variable_falls_back_like_load_images(monkeypatch):
    """$MINIDIFF_FASHION_MNIST naming a folder without the dataset is one place among several for
    load_images; evaluate_images' reference set must not turn it into a strict root."""
    from minidiff.torch import evaluate

    x = torch.rand(20, 1, 28, 28) * 2 - 1
    before = evaluate_images(x, n_reference=50, kid_subsets=2)
    monkeypatch.setenv("MINIDIFF_FASHION_MNIST", "/nonexistent")
    assert load_images("fashion-mnist", "test", limit=3)[0].shape == (3, 1, 28, 28)
    evaluate._cached_reference_features.cache_clear()
    after = evaluate_images(x, n_reference=50, kid_subsets=2)
    assert after["fd"] == before["fd"]


def test_evaluate_images_real_vs_blurred_vs_noise(test_images):
    x_train, _ = load_images("fashion-mnist", "train", limit=600)
    train = torch.from_numpy(to_model_range(x_train))
    real = evaluate_images(train, n_reference=1500, kid_subsets=20)
    noise = evaluate_images(torch.rand(600, 1, 28, 28) * 2 - 1, n_reference=1500, kid_subsets=20)
    blurred = torch.nn.functional.avg_pool2d(train, 3, stride=1, padding=1, count_include_pad=False)
    blur = evaluate_images(blurred, n_reference=1500, kid_subsets=20)
    assert set(real) >= {"fd", "kid_mean", "kid_std", "n_samples", "n_reference", "feature"}
    assert real["n_samples"] == 600 and real["n_reference"] == 1500 and real["kid_subset_size"] == 600
    assert "Inception" not in real["feature"] and real["fd_label"] == "FD (Fashion-MNIST classifier features)"
    assert real["fd"] < blur["fd"] < noise["fd"] and noise["fd"] > 20 * real["fd"]
    assert abs(real["kid_mean"]) < 0.05 * noise["kid_mean"]
    # an explicit reference array: the first 1000 test images
    ref = evaluate_images(train, reference=test_images[0][:1000], kid_subsets=2)
    assert ref["n_reference"] == 1000 and ref["fd"] < blur["fd"]


@pytest.mark.parametrize("samples, match", [
    (np.zeros((4, 28, 28), dtype=np.float32), r"samples must have shape \(N, 1, 28, 28\)"),
    (np.zeros((4, 3, 28, 28), dtype=np.float32), r"samples must have shape \(N, 1, 28, 28\)"),
    (np.zeros((4, 1, 28, 28), dtype=np.uint8), "to_model_range"),
    (np.full((4, 1, 28, 28), np.nan, dtype=np.float32), "NaN"),
    (np.zeros((1, 1, 28, 28), dtype=np.float32), "at least 2 images"),
])
def test_evaluate_images_rejects_bad_samples(samples, match):
    with pytest.raises(ValueError, match=match):
        evaluate_images(samples, n_reference=100)


def test_classifier_accuracy_checks_labels(test_images):
    x = test_images[0][:10]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        classifier_accuracy(x, np.full(10, 10))
    with pytest.raises(ValueError, match="same length"):
        classifier_accuracy(x, np.zeros(9, dtype=np.int64))
    with pytest.raises(ValueError, match="1-D integer"):
        classifier_accuracy(x, np.zeros(10))


def test_inception_path_never_downloads(tmp_path, monkeypatch):
    x = torch.zeros(4, 1, 28, 28)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        evaluate_images(x, reference=x + 0.1, kid_subsets=1, inception_weights=tmp_path / "missing.pth")
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)   # as if it were not installed
    with pytest.raises(ImportError, match="pip install torch-fidelity"):
        evaluate_images(x, reference=x + 0.1, kid_subsets=1, inception_weights=weights)


def test_classifier_config_errors():
    with pytest.raises(ValueError, match="image_size must be divisible"):
        ClassifierConfig(channels=(8, 8, 8))
    with pytest.raises(ValueError, match="feature_dim must be an integer >= 1"):
        ClassifierConfig(feature_dim=0)
    with pytest.raises(ValueError, match=r"x must have shape \(B, 1, 28, 28\)"):
        FashionMNISTClassifier().features(torch.zeros(2, 28, 28))
