"""Weight initialisation shared by the torch modules."""
from __future__ import annotations

import torch
from torch import nn


def _near_zero_(module: nn.Module, scale: float = 1e-5) -> nn.Module:
    """Start a residual branch almost at zero so each block begins as the identity (as EDM's
    init_weight=1e-5); not exactly zero, so that gradients reach every weight from step one."""
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(scale)
    return module
