"""Two-sample distances for point clouds: sliced Wasserstein, MMD, energy distance; exact NLL.
And the image metrics of lesson 10, on feature vectors: the Frechet distance and KID.

The 2-D distances take x: (N, d) and y: (M, d) arrays of either backend and return a float.
The feature metrics (``feature_statistics``, ``trace_sqrt_product``, ``frechet_distance``,
``polynomial_mmd2``, ``kid``) are NumPy only, in float64: features (N, D) come from a feature
network (``minidiff.torch.evaluate.image_features``), and these functions never see an image.
Memorisation (``nearest_neighbour_distances``, ``memorization_ratio``) compares flattened images
with the training set directly, NumPy, float64.
"""
from __future__ import annotations

import numpy as np

from . import _checks
from .backend import namespace, to_numpy


def _check_pair(x, y):
    """Two point clouds (N, d) and (M, d) of one backend, N, M >= 2, finite; half precision is
    lifted to float32 (the pairwise sums lose every digit in float16).  -> (x, y)."""
    _checks.array("x", x)
    _checks.array("y", y)
    xp = _checks.same_backend(x=x, y=y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have shapes (N, d) and (M, d), got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("x and y need at least 2 points each")
    _checks.finite_input("x", x)
    _checks.finite_input("y", y)
    return _checks.at_least_float32(xp, x), _checks.at_least_float32(xp, y)


def _pairwise_sq_dists(xp, a, b):
    d2 = xp.sum(a * a, axis=1)[:, None] + xp.sum(b * b, axis=1)[None, :] - 2 * xp.matmul(a, xp.transpose(b))
    return xp.clip(d2, 0.0, None)


def _quantiles(xp, sorted_cols, n: int):
    """n evenly spaced quantiles ((i + 0.5) / n) of each column of an already sorted (N, P) array."""
    N = sorted_cols.shape[0]
    pos = np.clip((np.arange(n) + 0.5) / n * N - 0.5, 0, N - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, N - 1)
    w = xp.asarray((pos - lo)[:, None], like=sorted_cols)
    return sorted_cols[lo] * (1 - w) + sorted_cols[hi] * w


def sliced_wasserstein(x, y, n_projections: int = 256, seed: int = 0, p: int = 2) -> float:
    """Sliced p-Wasserstein distance (Rabin et al. 2011): the 1-D W_p along random unit
    directions, averaged as (mean_theta W_p^p)^(1/p).  Unequal sizes are compared by quantiles.
    n_projections in [1, 10^6], seed >= 0, p >= 1."""
    x, y = _check_pair(x, y)
    n_projections = _checks.integer("n_projections", n_projections, 1, 10 ** 6)
    seed = _checks.integer("seed", seed, 0)
    p = _checks.real("p", p, 1.0, 64.0)
    # BEGIN SOLUTION
    # hint: project both clouds on random unit directions, sort each projection, average
    # hint: |difference|^p over points and directions, then take the 1/p power
    xp = namespace(x, y)
    theta = np.random.default_rng(seed).standard_normal((x.shape[1], n_projections))
    theta = xp.asarray(theta / np.linalg.norm(theta, axis=0, keepdims=True), like=x)
    px = xp.sort(xp.matmul(x, theta), axis=0)                   # (N, P)
    py = xp.sort(xp.matmul(xp.asarray(y, like=x), theta), axis=0)  # (M, P)
    if px.shape[0] != py.shape[0]:  # compare quantiles at n common levels, linearly interpolated
        n = max(px.shape[0], py.shape[0])
        px, py = _quantiles(xp, px, n), _quantiles(xp, py, n)
    return float(xp.mean(xp.abs(px - py) ** p) ** (1.0 / p))
    # END SOLUTION


def sliced_wasserstein_report(samples=None, data=(), floor_pairs=(), **sw_kwargs) -> dict:
    """The model's sliced Wasserstein distance to held-out data next to the data-against-data
    floor, like with like: both are means over independent data sets of one size.

    samples: (N, d), or a list with one (N, d) array per set of ``data`` (e.g. one per seed), or
    None (the floor only); data: a list of (N, d) data sets; floor_pairs: a list of pairs (a, b)
    of independent data sets.  ``sw_kwargs`` go to ``sliced_wasserstein``.  Returns
    {'per_set': [SW(samples_i, data_i)], 'sliced_wasserstein': their mean,
     'floor_per_pair': [SW(a_j, b_j)], 'data_floor': their mean, 'ratio': the quotient}
    (None where there is nothing to average)."""
    for name, v in (("data", data), ("floor_pairs", floor_pairs)):
        if not isinstance(v, (list, tuple)):
            raise TypeError(f"{name} must be a list (or tuple), got {type(v).__name__}")
    if any(not isinstance(pair, (list, tuple)) or len(pair) != 2 for pair in floor_pairs):
        raise TypeError("floor_pairs must be a list of pairs (a, b) of data sets")
    data, floor_pairs = list(data), list(floor_pairs)
    if samples is None:
        per_set = []
    else:
        each = list(samples) if isinstance(samples, (list, tuple)) else [samples] * len(data)
        if len(each) != len(data):
            raise ValueError(f"samples must be one (N, d) array or one per data set ({len(data)}), got {len(each)}")
        per_set = [sliced_wasserstein(x, d, **sw_kwargs) for x, d in zip(each, data)]
    floor = [sliced_wasserstein(a, b, **sw_kwargs) for a, b in floor_pairs]
    swd = float(np.mean(per_set)) if per_set else None
    data_floor = float(np.mean(floor)) if floor else None
    return {"per_set": per_set, "sliced_wasserstein": swd, "floor_per_pair": floor, "data_floor": data_floor,
            "ratio": swd / data_floor if swd is not None and data_floor else None}


def mmd2_unbiased(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased squared MMD (Gretton et al. 2012, eq. 3) with a sum of Gaussian kernels
    k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)).  Can be slightly negative when p = q.
    bandwidths: a non-empty sequence of finite h > 0 (no kernel: MMD 0 for any two clouds)."""
    x, y = _check_pair(x, y)
    if isinstance(bandwidths, (str, bytes)) or not hasattr(bandwidths, "__len__") or _checks.is_array(bandwidths):
        raise TypeError(f"bandwidths must be a non-empty sequence of numbers (e.g. a tuple), got {bandwidths!r}")
    if len(bandwidths) == 0:
        raise ValueError("bandwidths must hold at least one kernel bandwidth h > 0, got an empty sequence")
    bandwidths = tuple(_checks.real("bandwidths", h, 0.0, lo_open=True) for h in bandwidths)
    # BEGIN SOLUTION
    # hint: Gretton et al. eq. 3: mean k(x,x') over i != j, plus the same for y, minus 2 mean
    # hint: k(x,y); k is a sum of Gaussian kernels over the bandwidths
    xp = namespace(x, y)
    y = xp.asarray(y, like=x)
    n, m = x.shape[0], y.shape[0]

    def k(a, b):
        d2 = _pairwise_sq_dists(xp, a, b)
        return sum(xp.exp(-d2 / (2 * h * h)) for h in bandwidths)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    diag = float(len(bandwidths))  # k(a, a) = number of kernels
    return float((xp.sum(kxx) - n * diag) / (n * (n - 1)) + (xp.sum(kyy) - m * diag) / (m * (m - 1))
                 - 2 * xp.mean(kxy))
    # END SOLUTION


def energy_distance(x, y) -> float:
    """Energy distance (Szekely & Rizzo 2013): 2 E|X - Y| - E|X - X'| - E|Y - Y'|, the
    within-sample means taken over distinct pairs."""
    x, y = _check_pair(x, y)
    # BEGIN SOLUTION
    # hint: 2 E|X-Y| - E|X-X'| - E|Y-Y'|, the within-sample means over distinct pairs (divide by
    # hint: n(n-1))
    xp = namespace(x, y)
    y = xp.asarray(y, like=x)
    n, m = x.shape[0], y.shape[0]
    dxy = xp.mean(xp.sqrt(_pairwise_sq_dists(xp, x, y)))
    dxx = xp.sum(xp.sqrt(_pairwise_sq_dists(xp, x, x))) / (n * (n - 1))
    dyy = xp.sum(xp.sqrt(_pairwise_sq_dists(xp, y, y))) / (m * (m - 1))
    return float(2 * dxy - dxx - dyy)
    # END SOLUTION


def exact_nll(log_prob, x) -> float:
    """Mean negative log-likelihood in nats of points x under a known density ``log_prob(x) -> (N,)``."""
    _checks.callable_arg("log_prob", log_prob)
    _checks.array("x", x, min_ndim=1)
    _checks.finite_input("x", x)
    xp = namespace(x)
    lp = log_prob(x)
    if not _checks.is_array(lp) or tuple(lp.shape) != (x.shape[0],):
        got = f"shape {tuple(lp.shape)}" if _checks.is_array(lp) else f"a {type(lp).__name__}"
        raise ValueError(f"log_prob returned {got}, expected one value per point ({x.shape[0]},)")
    if not namespace(lp).all_finite(lp):
        raise ValueError("log_prob returned NaN or inf (a point outside the support has infinite NLL)")
    return float(-xp.mean(lp))


# ----------------------------------------------------------------------------------------------
# Image metrics on feature vectors (lesson 10): the Frechet distance (FID's formula) and KID.
# NumPy only, float64; the feature network lives in minidiff.torch.evaluate.

def _numeric(name: str, a) -> np.ndarray:
    """``a`` (an array of either backend or an array-like such as nested lists) as float64 NumPy;
    None, a string or something without numbers is a TypeError naming ``name``."""
    if a is None or isinstance(a, (str, bytes, bool, np.bool_)):
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}")
    try:
        return np.asarray(to_numpy(a), dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an array of numbers, got {type(a).__name__}") from None


def _features(name: str, f, min_rows: int = 2) -> np.ndarray:
    """``f`` as a finite float64 (N, D) array with N >= min_rows, or a ValueError naming ``name``."""
    a = _numeric(name, f)
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array of features (N, D) with D >= 1, got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} samples (rows), got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def _gaussian(name: str, mu, sigma):
    """A checked (mu (D,), Sigma (D, D)) pair, float64."""
    mu = _numeric(f"mu{name}", mu)
    sigma = _covariance(f"sigma{name}", sigma)
    if mu.ndim != 1 or mu.shape[0] != sigma.shape[0]:
        raise ValueError(f"mu{name} must have shape (D,) = ({sigma.shape[0]},) to match sigma{name}, got {mu.shape}")
    if not np.all(np.isfinite(mu)):
        raise ValueError(f"mu{name} contains NaN or inf")
    return mu, sigma


def _covariance(name: str, sigma) -> np.ndarray:
    """A covariance matrix: square, finite, symmetric and positive semi-definite up to round-off,
    float64.  The tolerance is tol = 10 D eps max|Sigma_ij|: a few roundings per entry of a D-term
    sum, with eps that of sigma's dtype but at least float32's (feature statistics pass through
    float32 features or files before they get here, and a float64 copy keeps that round-off).  Symmetry: |Sigma - Sigma^T| <= tol;
    PSD: Sigma + tol I has a Cholesky factor (its least eigenvalue > -tol), which is cheaper than
    the eigenvalues themselves."""
    s = _numeric(name, sigma)
    raw = to_numpy(sigma)
    if s.ndim != 2 or s.shape[0] != s.shape[1] or s.shape[0] < 1:
        raise ValueError(f"{name} must be a square covariance matrix (D, D), got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or inf")
    dt = getattr(raw, "dtype", np.dtype(np.float64))
    eps = max(np.finfo(dt).eps if np.issubdtype(dt, np.floating) else 0.0, np.finfo(np.float32).eps)
    tol = 10 * s.shape[0] * float(eps) * float(np.abs(s).max())
    if np.abs(s - s.T).max() > tol:
        raise ValueError(f"{name} must be symmetric (a covariance), got max |{name} - {name}^T| = "
                         f"{np.abs(s - s.T).max():.3g} > {tol:.3g}")
    try:
        np.linalg.cholesky((s + s.T) / 2 + (tol + np.finfo(np.float64).tiny) * np.eye(s.shape[0]))
    except np.linalg.LinAlgError:
        lam = np.linalg.eigvalsh((s + s.T) / 2).min()
        raise ValueError(f"{name} must be positive semi-definite (a covariance), got the eigenvalue {lam:.4g} "
                         f"< -{tol:.3g}") from None
    return s


def feature_statistics(features):
    """Mean and unbiased covariance of a set of feature vectors: the Gaussian that FID fits.

    features: (N, D), N >= 2.  Returns mu (D,) and Sigma (D, D), float64, with
    Sigma = sum_i (f_i - mu)(f_i - mu)^T / (N - 1)   (the unbiased estimate, as np.cov).
    """
    f = _features("features", features)
    # BEGIN SOLUTION
    # hint: mu = mean over rows; Sigma = (f - mu)^T (f - mu) / (N - 1), the unbiased covariance (D,
    # hint: D)
    mu = f.mean(axis=0)                     # (D,)
    centred = f - mu                        # (N, D)
    sigma = centred.T @ centred / (f.shape[0] - 1)   # (D, D)
    return mu, sigma
    # END SOLUTION


def trace_sqrt_product(sigma1, sigma2) -> float:
    """tr((Sigma1 Sigma2)^(1/2)) for two covariance (symmetric PSD) matrices (D, D).

    Sigma1 Sigma2 is not symmetric, but it is similar to the symmetric PSD matrix
    M = Sigma1^(1/2) Sigma2 Sigma1^(1/2) (multiply by Sigma1^(-1/2) on the left and Sigma1^(1/2) on
    the right), so both have the same eigenvalues lambda_i >= 0 and the trace of the square root is
    sum_i sqrt(lambda_i).  Use np.linalg.eigh twice (for Sigma1^(1/2) and for M's eigenvalues) and
    clip the tiny negative eigenvalues that round-off produces to 0 before any square root.
    """
    sigma1, sigma2 = _covariance("sigma1", sigma1), _covariance("sigma2", sigma2)
    if sigma1.shape != sigma2.shape:
        raise ValueError(f"sigma1 and sigma2 must have the same shape (D, D), got {sigma1.shape} and {sigma2.shape}")
    # BEGIN SOLUTION
    # hint: eigh(Sigma1) -> Sigma1^(1/2) = V diag(sqrt(clip(lam, 0))) V^T; M = Sigma1^(1/2) Sigma2
    # hint: Sigma1^(1/2); return the sum of sqrt(clip(eigvalsh(M), 0))
    lam1, V = np.linalg.eigh((sigma1 + sigma1.T) / 2)       # Sigma1 = V diag(lam1) V^T
    root1 = (V * np.sqrt(np.clip(lam1, 0.0, None))) @ V.T   # Sigma1^(1/2), symmetric
    M = root1 @ sigma2 @ root1                              # symmetric PSD, same eigenvalues as Sigma1 Sigma2
    lam = np.linalg.eigvalsh((M + M.T) / 2)
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))
    # END SOLUTION


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """The Frechet (2-Wasserstein) distance between N(mu1, Sigma1) and N(mu2, Sigma2), squared:

        d^2 = ||mu1 - mu2||^2 + tr(Sigma1 + Sigma2 - 2 (Sigma1 Sigma2)^(1/2))

    (Dowson & Landau 1982; FID is this between Gaussians fitted to Inception features, Heusel et al. 2017).
    mu: (D,), sigma: (D, D).  Use trace_sqrt_product for the last term.
    """
    mu1, sigma1 = _gaussian("1", mu1, sigma1)
    mu2, sigma2 = _gaussian("2", mu2, sigma2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two Gaussians must have the same dimension D, got mu1 {mu1.shape} and mu2 {mu2.shape}")
    # BEGIN SOLUTION
    # hint: |mu1 - mu2|^2 + tr(Sigma1) + tr(Sigma2) - 2 trace_sqrt_product(Sigma1, Sigma2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))
    # END SOLUTION


def polynomial_mmd2(features_x, features_y, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3) with KID's polynomial kernel
    k(a, b) = (a . b / D + coef)^degree  (Binkowski et al. 2018, "Demystifying MMD GANs").

    features_x: (m, D), features_y: (n, D), m, n >= 2:
    sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 sum_{i,j} k(x_i, y_j) / (m n).
    Unbiased, so it can be slightly negative when the two sets come from one distribution.
    """
    x, y = _features("features_x", features_x), _features("features_y", features_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features_x and features_y must have the same feature dimension D, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    degree = _checks.integer("degree", degree, 1, 64)
    coef = _checks.real("coef", coef)
    # BEGIN SOLUTION
    # hint: k = (x y^T / D + coef)^degree; the within-set means skip the diagonal (divide the off-
    # hint: diagonal sum by m(m-1)); minus 2 times the mean of k(x, y)
    m, n, D = x.shape[0], y.shape[0], x.shape[1]

    def k(a, b):                          # the kernel matrix (len(a), len(b))
        g = a @ b.T / D + coef
        out = g
        for _ in range(degree - 1):       # repeated products: many times faster than g ** degree in NumPy
            out = out * g
        return out

    k_xx, k_yy, k_xy = k(x, x), k(y, y), k(x, y)   # (m, m), (n, n), (m, n)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
                 + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())
    # END SOLUTION


def kid(features_x, features_y, subsets: int = 100, subset_size: int = 1000, seed=0):
    """Kernel Inception Distance (Binkowski et al. 2018): polynomial_mmd2 on ``subsets`` random
    subsets of ``subset_size`` rows drawn without replacement from each set, averaged.

    features_x: (N, D), features_y: (M, D).  seed: an int or a np.random.Generator; draw each
    subset's rows with rng.choice(N, subset_size, replace=False), first from x, then from y.
    Returns (mean, std) over the subsets (std with ddof=0, as torchmetrics reports it).
    """
    x, y = _features("features_x", features_x), _features("features_y", features_y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"features_x and features_y must have the same feature dimension D, "
                         f"got {x.shape[1]} and {y.shape[1]}")
    subsets = _checks.integer("subsets", subsets, 1, 10 ** 6)
    largest = min(x.shape[0], y.shape[0])
    message = f"subset_size must be an integer in [2, min(N, M)] = [2, {largest}], got {subset_size!r}"
    if isinstance(subset_size, (bool, np.bool_)) or not isinstance(subset_size, (int, np.integer)):
        raise TypeError(message)
    if not 2 <= subset_size <= largest:
        raise ValueError(message)
    if not isinstance(seed, np.random.Generator):
        seed = _checks.integer("seed", seed, 0, 2 ** 63 - 1)
    rng = np.random.default_rng(seed)
    # BEGIN SOLUTION
    # hint: for each subset: ix = rng.choice(N, subset_size, replace=False), then iy likewise;
    # hint: polynomial_mmd2(x[ix], y[iy]); return the mean and the std (ddof=0)
    values = np.empty(subsets)
    for s in range(subsets):
        ix = rng.choice(x.shape[0], subset_size, replace=False)
        iy = rng.choice(y.shape[0], subset_size, replace=False)
        values[s] = polynomial_mmd2(x[ix], y[iy])
    return float(values.mean()), float(values.std())
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# Memorisation: does a model return its training images?  NumPy, float64, on flattened images.

def nearest_neighbour_distances(x, reference, k: int = 2, chunk: int = 256) -> np.ndarray:
    """Euclidean distances from each row of ``x`` (N, D) to its ``k`` nearest rows of
    ``reference`` (M, D), nearest first: (N, k), float64.  Images go in flattened, (N, C*H*W).

    The k nearest are found with the expanded ||a||^2 + ||b||^2 - 2 a.b (``chunk`` rows of x at a
    time), then their distances are recomputed directly, so a copy of a reference row is at 0.
    """
    a = _features("x", x, min_rows=1)
    k = _checks.integer("k", k, 1, 10 ** 6)
    b = _features("reference", reference, min_rows=k)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and reference must have the same number of columns D, got {a.shape[1]} and {b.shape[1]}")
    chunk = _checks.integer("chunk", chunk, 1, 10 ** 6)
    out = np.empty((a.shape[0], k))
    for lo in range(0, a.shape[0], chunk):
        rows = a[lo:lo + chunk]                                               # (n, D)
        d2 = _pairwise_sq_dists(np, rows, b)                                  # (n, M)
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k]                       # (n, k), unordered
        exact = np.sqrt(np.sum((rows[:, None, :] - b[idx]) ** 2, axis=2))     # (n, k)
        out[lo:lo + chunk] = np.sort(exact, axis=1)
    return out


def memorization_ratio(samples, training, threshold: float = 1 / 3) -> float:
    """The fraction of ``samples`` that copy a training image (Gu et al. 2023, after Yoon et al.
    2023): a sample is a copy when its nearest training image is closer than ``threshold`` times
    its second nearest, d1 < threshold * d2.  Duplicate training rows are merged first, so a copy
    of an image stored twice is still a copy (its d2 is to another image).

    samples: (N, D), training: (M, D) with at least 2 distinct rows, flattened images on one scale.
    threshold in (0, 1].  A model that generalises scores about what held-out real images score.
    """
    threshold = _checks.real("threshold", threshold, 0.0, 1.0, lo_open=True)
    x, train = _features("samples", samples, min_rows=1), _features("training", training, min_rows=2)
    if x.shape[1] != train.shape[1]:
        raise ValueError(f"samples and training must have the same number of columns D, "
                         f"got {x.shape[1]} and {train.shape[1]}")
    train = np.unique(train, axis=0)            # an image stored twice is one image: d2 is to another
    if train.shape[0] < 2:
        raise ValueError("training needs at least 2 distinct rows (a nearest and a second nearest image)")
    d = nearest_neighbour_distances(x, train, k=2)                            # (N, 2)
    return float(np.mean(d[:, 0] < threshold * d[:, 1]))
