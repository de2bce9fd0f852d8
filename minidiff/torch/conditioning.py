"""Conditioning through cross-attention (Rombach et al. 2022, section 3.3 and eq. 3): a domain
encoder tau maps the condition y to a sequence tau(y) (B, S, D) that the U-Net's transformer
blocks attend to, and the two are trained jointly.  One mechanism for every kind of condition:

- text: ``minidiff.torch.text.TextEncoder`` on caption token ids (B, L);
- classes: ``ClassTokenEncoder``, one embedding token per image (label K = the null class);
- layouts: ``LayoutEncoder``, one token per object from its class and its box on a grid.

``ConditionedUNet(unet_config, encoder, key)`` is the network the trainers and samplers see:
``net(x, t, **{key: y})``.  The condition travels as that keyword through the samplers and
through classifier-free guidance (``classifier_free_guidance(..., key=key, null=...)``), as class
labels do; its null is the encoder's ``null`` (the empty caption's ids, the null class, the
empty layout)."""
from __future__ import annotations

import torch
from torch import nn

from ..data.layout import empty_layout
from .unet import UNet, UNetConfig


class ConditionedUNet(nn.Module):
    """eps_theta(x, t, tau(y)): a U-Net with cross-attention (``unet_config.context_dim`` = the
    encoder's width) and the encoder tau of its condition, one module with one optimiser.
    forward(x (B, C, H, W), t (B,), **{key: y (B, ...)}) -> (B, C, H, W)."""

    def __init__(self, unet_config: UNetConfig, encoder: nn.Module, key: str):
        super().__init__()
        if unet_config.context_dim != encoder.width:
            raise ValueError(f"unet.context_dim ({unet_config.context_dim}) must equal the encoder's width "
                             f"({encoder.width})")
        self.unet, self.encoder, self.key = UNet(unet_config), encoder, key
        self.config = unet_config

    def forward(self, x, t, **kwargs):
        y = kwargs.pop(self.key, None)
        if y is None:
            raise ValueError(f"this model is conditioned on {self.key!r} through cross-attention: pass {self.key}= "
                             f"(its null condition gives the unconditional model)")
        context, mask = self.encoder(y)                                    # (B, S, D), (B, S)
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"{self.key} must hold one condition per image: x has {x.shape[0]}, "
                             f"{self.key} {context.shape[0]}")
        return self.unet(x, t, context=context, context_mask=mask, **kwargs)

    def cross_attention_maps(self, store: bool = True) -> list:
        """Switch on (or off) keeping the cross-attention weights; returns the cross-attention
        modules, whose ``weights`` (B, heads, H*W, S) hold the last forward's maps."""
        mods = [m.cross_attn for m in self.unet.modules() if hasattr(m, "cross_attn")]
        for m in mods:
            m.store_weights, m.weights = store, None
        return mods

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def summary(self) -> str:
        return (f"{self.unet.summary()} | tau: {type(self.encoder).__name__} "
                f"({sum(p.numel() for p in self.encoder.parameters()):,} parameters), condition {self.key!r}")


class ClassTokenEncoder(nn.Module):
    """tau for classes: label y -> one token, an embedding (label num_classes: the null class).
    (B,) int64 -> ((B, 1, width), mask (B, 1) all True)."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.emb = nn.Embedding(num_classes + 1, width)

    @property
    def null(self) -> int:
        return self.num_classes

    def forward(self, y):
        y = torch.as_tensor(y)
        if y.ndim != 1 or y.is_floating_point() or (y.numel() and (y.min() < 0 or y.max() > self.num_classes)):
            raise ValueError(f"class labels must be integers in [0, {self.num_classes}] of shape (B,) "
                             f"({self.num_classes}: no class), got {y.dtype} {tuple(y.shape)}")
        tokens = self.emb(y.long())[:, None, :]                            # (B, 1, width)
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


class LayoutEncoder(nn.Module):
    """tau for layouts (LDM section 4.3.1): a layout (B, O, 5) int64 of rows (class, x0, y0, x1, y1)
    in canvas pixels (class -1: padding) -> one token per object, the sum of its class's embedding
    and the embeddings of its four corner coordinates quantised on the grid
    (``minidiff.data.layout.quantise_layout``: round(v * grid / canvas) in [0, grid]), after one
    learnt start token that is always there, so that the empty layout (the null condition of
    classifier-free guidance) still has a key.  -> (tokens (B, 1 + O, width), mask (B, 1 + O) bool:
    the start token and the real objects)."""

    def __init__(self, num_classes: int, grid: int, width: int, max_objects: int, canvas: int = 56):
        super().__init__()
        self.num_classes, self.grid, self.width = num_classes, grid, width
        self.max_objects, self.canvas = max_objects, canvas
        self.class_emb = nn.Embedding(num_classes, width)
        self.coord_emb = nn.ModuleList(nn.Embedding(grid + 1, width) for _ in range(4))   # x0, y0, x1, y1
        self.start = nn.Parameter(torch.randn(width) * 0.02)

    @property
    def null(self) -> torch.Tensor:
        """The empty layout (max_objects, 5): every row padding."""
        return torch.from_numpy(empty_layout(self.max_objects))

    def cells(self, y) -> torch.Tensor:
        """The quantised corners (B, O, 4) int64 of layouts (B, O, 5) (padding rows: 0)."""
        c = torch.round(y[..., 1:].double() * (self.grid / self.canvas)).clamp(0, self.grid).long()
        return torch.where(y[..., :1] < 0, 0, c)

    def forward(self, y):
        y = torch.as_tensor(y)
        if y.ndim != 3 or y.shape[-1] != 5 or y.shape[1] > self.max_objects or y.is_floating_point():
            raise ValueError(f"layout must be integer rows (class, x0, y0, x1, y1) of shape (B, O, 5) with "
                             f"O <= {self.max_objects}, got {y.dtype} {tuple(y.shape)}")
        cls = y[..., 0].long()
        if y.numel() and (int(cls.min()) < -1 or int(cls.max()) >= self.num_classes):
            raise ValueError(f"layout classes must lie in [-1, {self.num_classes}) (-1: padding), got "
                             f"[{int(cls.min())}, {int(cls.max())}]")
        real = cls >= 0                                                     # (B, O)
        cells = self.cells(y)                                               # (B, O, 4)
        tok = self.class_emb(cls.clamp(min=0)) + sum(e(cells[..., i]) for i, e in enumerate(self.coord_emb))
        tok = torch.where(real[..., None], tok, torch.zeros((), dtype=tok.dtype, device=tok.device))
        start = self.start.expand(y.shape[0], 1, -1)                        # (B, 1, width)
        mask = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)       # (B, 1 + O)
        return torch.cat([start, tok], dim=1), mask
