"""Datasets: 2-D toy distributions (``toy2d``) and, with the torch extra, images."""
from .images import load_images
from .toy2d import DATASETS, GaussianMixture, eight_gaussians_mixture, sample_toy

__all__ = ["DATASETS", "GaussianMixture", "eight_gaussians_mixture", "sample_toy", "load_images"]
