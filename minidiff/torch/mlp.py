"""The torch twin of ``minidiff.nn.mlp``: the same architecture as an ``nn.Module``."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..nn.mlp import sinusoidal_embedding


class TorchMLP(nn.Module):
    """eps_theta(x, t): concat(x, emb(t)) -> [Linear -> SiLU] * depth -> Linear."""

    def __init__(self, in_dim: int = 2, hidden: int = 128, depth: int = 3, t_dim: int = 32, out_dim=None):
        super().__init__()
        self.t_dim = t_dim
        sizes = [in_dim + t_dim] + [hidden] * depth + [out_dim or in_dim]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    @classmethod
    def from_params(cls, params, dtype=None):
        """Build the module holding exactly the weights of a NumPy ``init_mlp`` parameter list."""
        in_dim = params[-1][0].shape[1]
        t_dim = params[0][0].shape[0] - in_dim
        model = cls(in_dim, params[0][0].shape[1], len(params) - 1, t_dim, params[-1][0].shape[1])
        # cast before copying: copying float64 weights into the default float32 layers would round them
        model = model.to(dtype or torch.as_tensor(np.asarray(params[0][0])).dtype)
        with torch.no_grad():
            for lin, (W, b) in zip(model.linears, params):
                lin.weight.copy_(torch.as_tensor(np.asarray(W).T))
                lin.bias.copy_(torch.as_tensor(np.asarray(b)))
        return model

    def to_params(self):
        """The weights as a NumPy ``init_mlp``-style parameter list."""
        return [[lin.weight.detach().cpu().numpy().T.copy(), lin.bias.detach().cpu().numpy().copy()]
                for lin in self.linears]

    def forward(self, x, t):  # x: (B, d), t: (B,) -> (B, d_out)
        h = torch.cat([x, sinusoidal_embedding(t, self.t_dim).to(x.dtype)], dim=1)
        for i, lin in enumerate(self.linears):
            h = lin(h)
            if i < len(self.linears) - 1:
                h = nn.functional.silu(h)
        return h
