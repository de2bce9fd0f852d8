"""The regularised latent space of latent diffusion (Rombach, Blattmann, Lorenz, Esser & Ommer
2022, "High-Resolution Image Synthesis with Latent Diffusion Models", LDM): the formulas only,
on both backends.

Two ways to keep an autoencoder's latent space well-behaved (LDM section 3.1, Appendix G):

- **KL**: the encoder outputs a diagonal Gaussian posterior q(z | x) = N(mu, sigma^2), sampled
  with the reparameterisation trick and pulled slightly towards N(0, I) (as in a VAE, Kingma &
  Welling 2014).
- **VQ**: the encoder output z_e is snapped to its nearest codebook vector e_k (van den Oord,
  Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation Learning", VQ-VAE), with the
  straight-through gradient, the codebook and commitment losses, the EMA codebook update
  (VQ-VAE Appendix A.1), dead-code restarts (Dhariwal et al. 2020, "Jukebox") and code-usage
  statistics.

The diffusion model then runs on latents multiplied by a scale factor 1 / std (``scale_factor``).
Randomness is passed in (the noise of ``kl_sample``, the candidates of ``restart_dead_codes``).
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks
from .backend import namespace, stop_gradient, to_numpy

# ----------------------------------------------------------------------------------------------
# KL regularisation: a diagonal Gaussian posterior (LDM Appendix G; taming's DiagonalGaussianDistribution).

LOGVAR_RANGE = (-30.0, 20.0)    # LDM's clamp of log sigma^2: keeps exp(logvar) finite in float32


def kl_posterior(moments, logvar_range=LOGVAR_RANGE):
    """The encoder's output read as the posterior N(mu, sigma^2): the first half of the channel
    axis (axis 1) is mu, the second half log sigma^2, clamped to ``logvar_range`` (LDM: [-30, 20]).
    moments: (B, 2C, ...) -> mean, logvar: (B, C, ...)."""
    _checks.array("moments", moments, min_ndim=2)
    lo, hi = _logvar_range(logvar_range)
    C2 = moments.shape[1]
    if C2 % 2:
        raise ValueError(f"moments must have an even number of channels (axis 1: mean and log-variance), "
                         f"got shape {tuple(moments.shape)}")
    xp = namespace(moments)
    mean, logvar = moments[:, :C2 // 2], moments[:, C2 // 2:]
    return mean, xp.clip(logvar, lo, hi)


def _logvar_range(value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"logvar_range must be a pair (lo, hi) of numbers, got {value!r}")
    lo, hi = _checks.real("logvar_range[0]", value[0]), _checks.real("logvar_range[1]", value[1])
    if not lo < hi:
        raise ValueError(f"logvar_range must have lo < hi, got {value!r}")
    return lo, hi


def _mean_logvar(mean, logvar):
    _checks.array("mean", mean, min_ndim=1)
    _checks.array("logvar", logvar, min_ndim=1)
    xp = _checks.same_backend(mean=mean, logvar=logvar)
    _checks.shapes_equal(mean=mean, logvar=logvar)
    return xp


def kl_sample(mean, logvar, noise):
    """The reparameterisation trick (Kingma & Welling 2014, eq. 10): z = mu + sigma * eps with
    sigma = exp(logvar / 2) and eps ~ N(0, I) passed in.  All three (B, C, ...) -> z (B, C, ...)."""
    xp = _mean_logvar(mean, logvar)
    _checks.array("noise", noise)
    _checks.same_backend(mean=mean, noise=noise)
    _checks.shapes_equal(mean=mean, noise=noise)
    # BEGIN SOLUTION
    # hint: z = mu + sigma * eps with sigma = exp(logvar / 2), elementwise (xp.exp).
    return mean + xp.exp(0.5 * logvar) * noise
    # END SOLUTION


def kl_mode(mean, logvar):
    """The posterior's mode (and mean) mu: the deterministic latent used to encode a data set."""
    _mean_logvar(mean, logvar)
    return mean


def kl_divergence(mean, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2) over every
    axis but the batch axis (Kingma & Welling 2014, Appendix B).  (B, C, ...) -> (B,)."""
    xp = _mean_logvar(mean, logvar)
    # BEGIN SOLUTION
    # hint: elementwise 1/2 (mu^2 + exp(logvar) - 1 - logvar), then reshape to (B, -1) and sum over axis 1.
    kl = 0.5 * (mean ** 2 + xp.exp(logvar) - 1.0 - logvar)
    return xp.sum(xp.reshape(kl, (kl.shape[0], -1)), axis=1)
    # END SOLUTION


# ----------------------------------------------------------------------------------------------
# VQ regularisation (VQ-VAE, van den Oord et al. 2017).  Vectors are rows: z (N, D), codebook (K, D).

def _vectors(name, z, codebook):
    _checks.array(name, z, ndim=2)
    _checks.array("codebook", codebook, ndim=2)
    xp = _checks.same_backend(**{name: z, "codebook": codebook})
    if z.shape[1] != codebook.shape[1]:
        raise ValueError(f"{name} (N, D) and codebook (K, D) must have the same D, "
                         f"got shapes {tuple(z.shape)} and {tuple(codebook.shape)}")
    return xp


def vq_distances(z, codebook):
    """Squared distances ||z_n - e_k||^2 = ||z_n||^2 + ||e_k||^2 - 2 z_n . e_k, expanded so that
    one (N, D) x (D, K) product replaces an (N, K, D) array of differences.  The expansion
    cancels: an entry may come out a few ulps below 0.  z: (N, D), codebook: (K, D) -> (N, K)."""
    xp = _vectors("z", z, codebook)
    # BEGIN SOLUTION
    # hint: ||z_n||^2 as an (N, 1) column plus ||e_k||^2 as a (1, K) row minus 2 z @ codebook^T (N, K).
    z2 = xp.sum(z ** 2, axis=1)                       # (N,)
    e2 = xp.sum(codebook ** 2, axis=1)                # (K,)
    return xp.expand_dims(z2, 1) + xp.expand_dims(e2, 0) - 2 * xp.matmul(z, xp.transpose(codebook))
    # END SOLUTION


def vq_nearest(z, codebook):
    """VQ-VAE eq. 1: k = argmin_j ||z_e - e_j||^2 (the first such j on a tie).  -> (N,) int64.
    The index is not differentiable: it is taken on the distances' value."""
    d = stop_gradient(vq_distances(z, codebook))
    return d.argmin(1)


def vq_quantize(z, codebook):
    """VQ-VAE eq. 2: z_q = e_k with k the nearest code.  -> z_q (N, D), indices (N,).
    z_q is differentiable with respect to the codebook (not z): see ``straight_through``."""
    k = vq_nearest(z, codebook)
    return codebook[k], k


def straight_through(z, z_q):
    """The straight-through estimator (VQ-VAE section 3.2; Bengio et al. 2013):
    z + sg(z_q - z), whose value is z_q and whose gradient with respect to z is the identity,
    so the decoder's gradient reaches the encoder past the non-differentiable argmin."""
    _checks.array("z", z)
    _checks.array("z_q", z_q)
    _checks.same_backend(z=z, z_q=z_q)
    _checks.shapes_equal(z=z, z_q=z_q)
    # BEGIN SOLUTION
    # hint: z + stop_gradient(z_q - z): the value is z_q, the gradient passes to z unchanged.
    return z + stop_gradient(z_q - z)
    # END SOLUTION


def vq_loss_terms(z_e, z_q):
    """VQ-VAE eq. 3, the two terms after the reconstruction, each a mean over every axis but the
    batch axis (as the implementations take, instead of the paper's sum of squares):
    codebook ||sg[z_e] - e||^2 (its gradient moves only the codebook) and
    commitment ||z_e - sg[e]||^2 (its gradient moves only the encoder).  (B, ...) -> two (B,)."""
    _checks.array("z_e", z_e, min_ndim=1)
    _checks.array("z_q", z_q, min_ndim=1)
    xp = _checks.same_backend(z_e=z_e, z_q=z_q)
    _checks.shapes_equal(z_e=z_e, z_q=z_q)
    B = z_e.shape[0]
    # BEGIN SOLUTION
    # hint: codebook = mean over non-batch axes of (sg[z_e] - z_q)^2, commitment of (z_e - sg[z_q])^2;
    # hint: stop_gradient freezes one side of each, reshape to (B, -1) and xp.mean(axis=1).
    codebook = xp.mean(xp.reshape((stop_gradient(z_e) - z_q) ** 2, (B, -1)), axis=1)
    commitment = xp.mean(xp.reshape((z_e - stop_gradient(z_q)) ** 2, (B, -1)), axis=1)
    return codebook, commitment
    # END SOLUTION


def vq_loss(z_e, z_q, beta: float = 0.25):
    """VQ-VAE eq. 3 without the reconstruction: ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2, beta
    on the commitment term (the paper's beta = 0.25).  z_q: the codebook vectors e picked for
    z_e (``vq_quantize``; not the straight-through output).  (B, ...) -> (B,).

    taming-transformers' ``VectorQuantizer2`` and diffusers' ``VectorQuantizer`` with their
    default ``legacy=True`` compute mean((sg[z_q] - z)^2) + beta mean((z_q - sg[z])^2): beta on
    the codebook term, a known bug kept for old checkpoints.  With an EMA codebook
    (``ema_codebook_update``) only the commitment term is trained."""
    beta = _checks.real("beta", beta, 0.0)
    # BEGIN SOLUTION
    # hint: codebook term + beta * commitment term (vq_loss_terms): beta weights the ENCODER's term.
    codebook, commitment = vq_loss_terms(z_e, z_q)
    return codebook + beta * commitment
    # END SOLUTION


def _indices(name, indices, K):
    """Code indices: an integer array of either backend with entries in [0, K) (the values of a
    tensor on an accelerator are not read back)."""
    _checks.array(name, indices)
    xp = namespace(indices)
    if _checks._on_host(xp, indices):
        values = to_numpy(indices)
        if not np.issubdtype(values.dtype, np.integer):
            raise TypeError(f"{name} must hold integer code indices, got dtype {values.dtype}")
        if values.size and (values.min() < 0 or values.max() >= K):
            raise ValueError(f"{name} must lie in [0, K) = [0, {K}), got values in [{values.min()}, {values.max()}]")
    return indices


def _one_hot(xp, indices, K, like):
    """(N,) indices -> (N, K) one-hot rows in ``like``'s float dtype, on its device."""
    hit = xp.expand_dims(xp.reshape(indices, (-1,)), 1) == xp.expand_dims(xp.arange(K, like=like), 0)
    return xp.asarray(hit, like=like)


def laplace_smoothing(counts, eps: float = 1e-5):
    """Laplace (additive) smoothing of the EMA code counts, as in Sonnet's VectorQuantizerEMA:
    N_i <- (N_i + eps) / (n + K eps) * n with n = sum_i N_i.  Every count becomes > 0 (an unused
    code no longer divides by zero) and the total n is kept.  counts: (K,) -> (K,)."""
    _checks.array("counts", counts, ndim=1)
    eps = _checks.real("eps", eps, 0.0, lo_open=True)
    xp = namespace(counts)
    # BEGIN SOLUTION
    # hint: n = sum of the counts, K = len(counts): (N_i + eps) / (n + K eps) * n.
    n = xp.sum(counts)
    return (counts + eps) / (n + counts.shape[0] * eps) * n
    # END SOLUTION


def ema_codebook_update(counts, sums, z, indices, decay: float = 0.99, eps: float = 1e-5):
    """VQ-VAE Appendix A.1, the EMA codebook: with n_i the number of z assigned to code i,
    N_i <- gamma N_i + (1 - gamma) n_i,  m_i <- gamma m_i + (1 - gamma) sum_{j: k_j = i} z_j,
    e_i = m_i / N_i with N Laplace-smoothed (``laplace_smoothing``).  Functional: returns new
    arrays.  counts: (K,), sums: (K, D), z: (N, D) (taken as a constant), indices: (N,) ->
    (counts (K,), sums (K, D), codebook (K, D)); the stored counts are the unsmoothed ones."""
    _checks.array("counts", counts, ndim=1)
    _checks.array("sums", sums, ndim=2)
    _checks.array("z", z, ndim=2)
    _indices("indices", indices, sums.shape[0])
    xp = _checks.same_backend(counts=counts, sums=sums, z=z, indices=indices)
    K = sums.shape[0]
    if counts.shape[0] != K or z.shape[1] != sums.shape[1]:
        raise ValueError(f"counts (K,), sums (K, D) and z (N, D) must agree in K and D, got shapes "
                         f"{tuple(counts.shape)}, {tuple(sums.shape)} and {tuple(z.shape)}")
    decay = _checks.real("decay", decay, 0.0, 1.0, hi_open=True)
    if tuple(indices.shape) != (z.shape[0],):
        raise ValueError(f"indices must have shape (N,) = ({z.shape[0]},) like z {tuple(z.shape)}, "
                         f"got {tuple(indices.shape)}")
    # BEGIN SOLUTION
    # hint: one-hot the indices (_one_hot, (N, K)): n_i = its column sums, the per-code sums of z = one_hot^T @ z;
    # hint: N and m move towards them by (1 - decay); e_i = m_i / laplace_smoothing(N)_i.
    z = stop_gradient(z)
    one_hot = _one_hot(xp, indices, K, z)                               # (N, K)
    N_new = decay * counts + (1 - decay) * xp.sum(one_hot, axis=0)      # (K,)
    m_new = decay * sums + (1 - decay) * xp.matmul(xp.transpose(one_hot), z)  # (K, D)
    codebook = m_new / xp.expand_dims(laplace_smoothing(N_new, eps), 1)
    return N_new, m_new, codebook
    # END SOLUTION


def restart_dead_codes(codebook, usage, candidates, threshold: float = 1.0):
    """Random restarts (Jukebox, Dhariwal et al. 2020, section 3.1; also Williams et al. 2020):
    every code used less than ``threshold`` times is replaced by the candidate in its row, an
    encoder output the caller picked at random (e.g. ``z[rng.integers(N, size=K)]``).
    codebook, candidates: (K, D), usage: (K,) counts (an epoch's ``code_histogram`` or the EMA
    counts) -> (codebook (K, D), dead (K,) bool).  For an EMA codebook restart its state too,
    e.g. sums <- where(dead, candidates, sums) and counts <- where(dead, 1, counts)."""
    _checks.array("codebook", codebook, ndim=2)
    _checks.array("usage", usage, ndim=1)
    _checks.array("candidates", candidates, ndim=2)
    xp = _checks.same_backend(codebook=codebook, usage=usage, candidates=candidates)
    _checks.shapes_equal(codebook=codebook, candidates=candidates)
    if usage.shape[0] != codebook.shape[0]:
        raise ValueError(f"usage must have shape (K,) = ({codebook.shape[0]},) like codebook "
                         f"{tuple(codebook.shape)}, got {tuple(usage.shape)}")
    threshold = _checks.real("threshold", threshold, 0.0)
    dead = usage < threshold
    return xp.where(xp.expand_dims(dead, 1), candidates, codebook), dead


# ----------------------------------------------------------------------------------------------
# Code usage, counted over a whole epoch: add the batches' histograms, then take the statistics.
# The perplexity of one batch is capped by its size (a batch of 16 uses at most 16 codes), so the
# mean of per-batch perplexities is not the epoch's.

def code_histogram(indices, K: int):
    """How often each of the K codes was picked: indices (any shape) -> (K,) int64 counts.
    Sum the histograms of an epoch's batches before ``perplexity`` / ``codebook_usage``."""
    K = _checks.count("K", K)
    _indices("indices", indices, K)
    xp = namespace(indices)
    hit = xp.expand_dims(xp.reshape(indices, (-1,)), 1) == xp.expand_dims(xp.arange(K, like=indices), 0)
    return xp.sum(xp.asarray(hit, dtype=xp.int64), axis=0)


def _histogram(histogram):
    _checks.array("histogram", histogram, ndim=1)
    h = np.asarray(to_numpy(histogram), dtype=np.float64)
    if not np.all(np.isfinite(h)) or np.any(h < 0) or h.sum() <= 0:
        raise ValueError("histogram must hold finite counts >= 0 with a positive total")
    return h


def perplexity(histogram) -> float:
    """exp(H(p)) = exp(-sum_k p_k log p_k) with p the code frequencies (0 log 0 = 0): the
    effective number of codes in use, K for uniform usage, 1 for a single code.  (K,) -> float."""
    p = _histogram(histogram)
    # BEGIN SOLUTION
    # hint: p = counts / total; H = -sum p log p over the p > 0 only (natural log); return exp(H) as a float.
    p = p / p.sum()
    nz = p[p > 0]
    return math.exp(-float(np.sum(nz * np.log(nz))))
    # END SOLUTION


def codebook_usage(histogram) -> float:
    """The fraction of the K codes picked at least once.  (K,) -> float in (0, 1]."""
    h = _histogram(histogram)
    return float(np.mean(h > 0))


# ----------------------------------------------------------------------------------------------
# The latent scale factor (LDM section 4.3.2 / Appendix G).

def scale_factor(latents) -> float:
    """1 / std of all entries of the training latents, so that scale * z has unit variance
    before diffusion (LDM's 0.18215 is this number for its KL-f8 autoencoder, measured on a
    batch).  The population std (correction 0); the latents are scaled, not centred.  Compute it
    once on training data and store it with the latent model.  latents: (B, ...) -> float."""
    _checks.array("latents", latents, min_ndim=1)
    xp = namespace(latents)
    if latents.shape[0] < 1:
        raise ValueError("latents must hold at least one example")
    _checks.finite_input("latents", latents)
    # BEGIN SOLUTION
    # hint: the population std (divide by the number of entries, not minus one) of ALL entries,
    # hint: as a float; raise ValueError if it is 0; return 1 / std.
    z = _checks.at_least_float32(xp, latents)
    std = float(xp.std(xp.reshape(z, (-1,))))
    if not std > 0:
        raise ValueError("latents must not be constant (their std is 0, so 1 / std is undefined)")
    return 1.0 / std
    # END SOLUTION
