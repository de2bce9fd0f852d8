"""The PyTorch backend's models (needs the ``torch`` extra: ``pip install minidiff[torch]``)."""
try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("minidiff.torch needs PyTorch: pip install 'minidiff[torch]' (see the README)") from e

from . import toy  # noqa: F401  (registers the torch backend of the 2-D trainer)
from .mlp import TorchMLP
from .unet import UNet, UNetConfig

__all__ = ["TorchMLP", "UNet", "UNetConfig"]
