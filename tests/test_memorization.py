"""Memorisation (minidiff.metrics): nearest-neighbour distances against brute force, the
memorisation ratio's threshold d1 < d2 / 3 on points placed by hand, exact copies (also of a
duplicated training image), held-out Fashion-MNIST images, and clear errors."""
import numpy as np
import pytest
import torch

from minidiff.data.images import load_images
from minidiff.metrics import memorization_ratio, nearest_neighbour_distances


def _brute(x, ref, k):
    d = np.linalg.norm(x[:, None, :] - ref[None, :, :], axis=2)
    return np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_nearest_distances_equal_brute_force_on_unequal_sizes(k):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((37, 11)) * np.linspace(0.5, 3, 11) + 2.0
    ref = rng.standard_normal((53, 11)) * np.linspace(0.5, 3, 11)
    got = nearest_neighbour_distances(x, ref, k=k, chunk=5)          # chunks that do not divide N
    assert got.shape == (37, k)
    np.testing.assert_allclose(got, _brute(x, ref, k), rtol=1e-10, atol=1e-12)
    assert np.all(np.diff(got, axis=1) >= 0)                           # nearest first


def test_a_copy_is_at_distance_zero_even_far_from_the_origin():
    # ||a||^2 + ||b||^2 - 2 a.b at |a| ~ 1e4 loses every digit of a tiny distance; the recomputation keeps it
    rng = np.random.default_rng(0)
    ref = 1e3 + rng.random((40, 16))
    x = np.concatenate([ref[[3, 7]], ref[[5]] + 1e-6])
    d = nearest_neighbour_distances(x, ref, k=2)
    assert d[0, 0] == 0 and d[1, 0] == 0
    np.testing.assert_allclose(d[2, 0], 1e-6 * 4, rtol=1e-6)          # sqrt(16) * 1e-6
    assert np.all(d[:, 1] > 0.1)


def test_memorization_threshold_on_points_placed_by_hand():
    # training images at 0 and 10 e1 (and far ones): a sample at s e1 has d1 = s, d2 = 10 - s,
    # so it is a copy exactly when s / (10 - s) < threshold: s < 2.5 for 1/3
    e1 = np.eye(5)[0]
    training = np.stack([0 * e1, 10 * e1, 100 * np.eye(5)[1], -100 * np.eye(5)[2]])
    assert memorization_ratio([2.4 * e1], training) == 1.0
    assert memorization_ratio([2.6 * e1], training) == 0.0
    assert memorization_ratio([2.6 * e1], training, threshold=0.5) == 1.0     # 2.6 / 7.4 = 0.35
    samples = np.stack([s * e1 for s in (0.5, 2.0, 2.6, 4.0, 9.0)])           # 9: near 10 e1 (1 / 9)
    assert memorization_ratio(samples, training) == pytest.approx(3 / 5)


def test_exact_copies_count_also_of_a_duplicated_training_image():
    rng = np.random.default_rng(1)
    training = rng.random((30, 20))
    training[4] = training[9]            # a duplicate: d2 is to another image, so near copies of it count
    assert memorization_ratio(training[[4, 0, 1]], training) == 1.0
    fresh = rng.random((50, 20))                       # independent draws are not copies
    assert memorization_ratio(fresh, training) == 0.0
    near = training[:20] + 1e-3 * rng.standard_normal((20, 20))
    assert memorization_ratio(np.concatenate([near, fresh]), training) == pytest.approx(20 / 70)


def test_torch_input_gives_the_numpy_answer():
    rng = np.random.default_rng(2)
    training, samples = rng.random((25, 6)), rng.random((9, 6))
    samples[:3] = training[:3] + 1e-4
    assert memorization_ratio(torch.from_numpy(samples), torch.from_numpy(training)) == \
        memorization_ratio(samples, training) == pytest.approx(3 / 9)


def test_held_out_fashion_mnist_images_do_not_copy_the_training_images():
    # the reference a generalising model is compared with: real test images against 200 training images
    train = load_images("fashion-mnist", "train", limit=200)[0].reshape(200, -1) / 255.0
    test = load_images("fashion-mnist", "test", limit=500)[0].reshape(500, -1) / 255.0
    assert memorization_ratio(test, train) < 0.02
    noisy = np.clip(train + 0.02 * np.random.default_rng(0).standard_normal(train.shape), 0, 1)
    assert memorization_ratio(noisy, train) == 1.0


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan")])
def test_bad_threshold_is_refused_by_name(threshold):
    with pytest.raises(ValueError, match="threshold"):
        memorization_ratio(np.zeros((3, 2)), np.eye(2), threshold=threshold)


def test_bad_shapes_are_refused_by_name():
    with pytest.raises(ValueError, match="training"):
        memorization_ratio(np.zeros((3, 2)), np.zeros((1, 2)))        # a second nearest needs M >= 2
    with pytest.raises(ValueError, match="distinct"):
        memorization_ratio(np.zeros((3, 2)), np.ones((5, 2)))         # five copies of one image
    with pytest.raises(ValueError, match="same number of columns"):
        memorization_ratio(np.zeros((3, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        memorization_ratio(np.full((3, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="reference"):
        nearest_neighbour_distances(np.zeros((3, 2)), np.zeros((2, 2)), k=3)
    with pytest.raises(ValueError, match="k"):
        nearest_neighbour_distances(np.zeros((3, 2)), np.zeros((2, 2)), k=0)
