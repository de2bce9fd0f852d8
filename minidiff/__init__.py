"""minidiff: diffusion models from scratch, one algorithm on two backends (NumPy/autograd, PyTorch)."""
from . import backend, diffusion, elbo, losses, metrics, samplers, schedules
from .backend import generator, namespace, set_backend, value_and_grad

__version__ = "0.1.0"

__all__ = ["backend", "diffusion", "elbo", "losses", "metrics", "samplers", "schedules",
           "generator", "namespace", "set_backend", "value_and_grad"]
