"""Lesson 09: Latent diffusion: KL and VQ autoencoders, the scale factor, diffusion in the latent space.

Write the functions below; the notebook notebooks/09_latent_diffusion.ipynb explains the maths.
Check your work with:   minidiff check 09
(or: python -m pytest tests/lessons/test_09_latent_diffusion.py --impl=lesson)

Generated from the reference in minidiff/ by `python -m minidiff.exercises --write`;
the lines that are not NotImplementedError are given to you.
"""
from __future__ import annotations

import math

import numpy as np

from minidiff import _checks
from minidiff.autoencoding import _histogram, _indices, _mean_logvar, _one_hot, _vectors
from minidiff.backend import namespace, stop_gradient


def kl_sample(mean, logvar, noise):
    """The reparameterisation trick (Kingma & Welling 2014, eq. 10): z = mu + sigma * eps with
    sigma = exp(logvar / 2) and eps ~ N(0, I) passed in.  All three (B, C, ...) -> z (B, C, ...)."""
    xp = _mean_logvar(mean, logvar)
    _checks.array("noise", noise)
    _checks.same_backend(mean=mean, noise=noise)
    _checks.shapes_equal(mean=mean, noise=noise)
    raise NotImplementedError("EXERCISE kl_sample: write this function (see its docstring)")


def kl_divergence(mean, logvar):
    """KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum (mu^2 + sigma^2 - 1 - log sigma^2) over every
    axis but the batch axis (Kingma & Welling 2014, Appendix B).  (B, C, ...) -> (B,)."""
    xp = _mean_logvar(mean, logvar)
    raise NotImplementedError("EXERCISE kl_divergence: write this function (see its docstring)")


def vq_distances(z, codebook):
    """Squared distances ||z_n - e_k||^2 = ||z_n||^2 + ||e_k||^2 - 2 z_n . e_k, expanded so that
    one (N, D) x (D, K) product replaces an (N, K, D) array of differences.  The expansion
    cancels: an entry may come out a few ulps below 0.  z: (N, D), codebook: (K, D) -> (N, K)."""
    xp = _vectors("z", z, codebook)
    raise NotImplementedError("EXERCISE vq_distances: write this function (see its docstring)")


def straight_through(z, z_q):
    """The straight-through estimator (VQ-VAE section 3.2; Bengio et al. 2013):
    z + sg(z_q - z), whose value is z_q and whose gradient with respect to z is the identity,
    so the decoder's gradient reaches the encoder past the non-differentiable argmin."""
    _checks.array("z", z)
    _checks.array("z_q", z_q)
    _checks.same_backend(z=z, z_q=z_q)
    _checks.shapes_equal(z=z, z_q=z_q)
    raise NotImplementedError("EXERCISE straight_through: write this function (see its docstring)")


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
    raise NotImplementedError("EXERCISE vq_loss_terms: write this function (see its docstring)")


def vq_loss(z_e, z_q, beta: float = 0.25):
    """VQ-VAE eq. 3 without the reconstruction: ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2, beta
    on the commitment term (the paper's beta = 0.25).  z_q: the codebook vectors e picked for
    z_e (``vq_quantize``; not the straight-through output).  (B, ...) -> (B,).

    taming-transformers' ``VectorQuantizer2`` and diffusers' ``VectorQuantizer`` with their
    default ``legacy=True`` compute mean((sg[z_q] - z)^2) + beta mean((z_q - sg[z])^2): beta on
    the codebook term, a known bug kept for old checkpoints.  With an EMA codebook
    (``ema_codebook_update``) only the commitment term is trained."""
    beta = _checks.real("beta", beta, 0.0)
    raise NotImplementedError("EXERCISE vq_loss: write this function (see its docstring)")


def laplace_smoothing(counts, eps: float = 1e-5):
    """Laplace (additive) smoothing of the EMA code counts, as in Sonnet's VectorQuantizerEMA:
    N_i <- (N_i + eps) / (n + K eps) * n with n = sum_i N_i.  Every count becomes > 0 (an unused
    code no longer divides by zero) and the total n is kept.  counts: (K,) -> (K,)."""
    _checks.array("counts", counts, ndim=1)
    eps = _checks.real("eps", eps, 0.0, lo_open=True)
    xp = namespace(counts)
    raise NotImplementedError("EXERCISE laplace_smoothing: write this function (see its docstring)")


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
    raise NotImplementedError("EXERCISE ema_codebook_update: write this function (see its docstring)")


def perplexity(histogram) -> float:
    """exp(H(p)) = exp(-sum_k p_k log p_k) with p the code frequencies (0 log 0 = 0): the
    effective number of codes in use, K for uniform usage, 1 for a single code.  (K,) -> float."""
    p = _histogram(histogram)
    raise NotImplementedError("EXERCISE perplexity: write this function (see its docstring)")


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
    raise NotImplementedError("EXERCISE scale_factor: write this function (see its docstring)")
