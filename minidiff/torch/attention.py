"""Attention for the U-Net and the text encoder (Vaswani et al. 2017, "Attention Is All You Need";
equation numbers refer to that paper).  ``attention`` is eq. 1 and ``key_padding_bias`` its
mask, both written once for both backends in ``minidiff.nn.attention``; the modules split their
channels into heads, run it on every head at once and merge the heads again.

- ``Attention``: self-attention over a feature map's H*W positions (the plain U-Net's).
- ``MultiHeadAttention``: on token sequences; self-attention (the text encoder), or
  cross-attention when given a context: Q = W_Q phi(z), K = W_K tau(y), V = W_V tau(y)
  (Rombach et al. 2022, eq. 3 and section 3.3), with a key padding mask so that the padding
  of a short caption gets no weight (LDM passes none).
- ``TransformerBlock``: LDM's spatial transformer: the feature map as tokens through
  self-attention, cross-attention on the context and a feed-forward layer, each pre-LayerNorm
  and residual, and a near-zero projection back (``_near_zero_``: scaled by 1e-5, as EDM's
  init_weight), so that the block starts as the identity yet every weight has a gradient at step one.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.attention import attention, key_padding_bias  # noqa: F401  (the formula, written once)
from ..nn.mlp import sinusoidal_embedding
from ._init import _near_zero_


def split_heads(x, num_heads: int):
    """(B, L, C) -> (B, num_heads, L, C / num_heads): head n holds channels n hs .. (n + 1) hs - 1."""
    B, L, C = x.shape
    return x.reshape(B, L, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(h):
    """The inverse of ``split_heads``: (B, num_heads, L, hs) -> (B, L, num_heads hs)."""
    B, nh, L, hs = h.shape
    return h.transpose(1, 2).reshape(B, L, nh * hs)


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, pre-GroupNorm, residual.  ``kernel``
    computes softmax(q k^T / sqrt(d)) v: by default torch's fused version of ``attention`` (equal
    to it, tested; flash / memory-efficient kernels on a GPU); set it to ``attention`` to run that."""

    kernel = staticmethod(F.scaled_dot_product_attention)

    def __init__(self, ch: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _near_zero_(nn.Conv2d(ch, ch, 1))

    def forward(self, x):  # (B, C, H, W) -> (B, C, H, W)
        B, C, H, W = x.shape
        tokens = self.qkv(self.norm(x)).flatten(2).transpose(1, 2)            # (B, HW, 3C)
        q, k, v = (split_heads(a, self.num_heads) for a in tokens.chunk(3, dim=-1))   # (B, nh, HW, hs) each
        h = merge_heads(self.kernel(q, k, v))                                 # attention(q, k, v): (B, HW, C)
        return x + self.proj(h.transpose(1, 2).reshape(B, C, H, W))


class MultiHeadAttention(nn.Module):
    """Multi-head attention on token sequences, pre-LayerNorm, residual: x + W_O attention(Q, K, V).
    Self-attention when ``context`` is None; cross-attention (LDM eq. 3) when given: Q = W_Q x,
    K = W_K context, V = W_V context, the context's padding masked out by ``context_mask``.
    ``store_weights = True`` keeps the last softmax weights (B, heads, L, S) in ``self.weights``
    (cross-attention maps), computed with ``attention``'s formula instead of the fused kernel."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the width {dim}")
        self.num_heads, self.store_weights, self.weights = num_heads, False, None
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.proj = _near_zero_(nn.Linear(dim, dim))

    def forward(self, x, context=None, context_mask=None):
        # x: (B, L, dim); context: (B, S, context_dim) or None; context_mask: (B, S) bool -> (B, L, dim)
        h = self.norm(x)
        kv = h if context is None else context
        if context_mask is not None and context_mask.shape != kv.shape[:2]:
            raise ValueError(f"context_mask must have shape (B, S) = {tuple(kv.shape[:2])}, "
                             f"got {tuple(context_mask.shape)}")
        q = split_heads(self.to_q(h), self.num_heads)                            # (B, nh, L, hs)
        k, v = (split_heads(a, self.num_heads) for a in self.to_kv(kv).chunk(2, dim=-1))   # (B, nh, S, hs)
        if self.store_weights:
            bias = 0.0 if context_mask is None else key_padding_bias(context_mask, q.dtype)
            self.weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias, dim=-1)
            out = self.weights @ v
        else:
            mask = None if context_mask is None else key_padding_bias(context_mask, q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)      # = attention(q, k, v, mask)
        return x + self.proj(merge_heads(out))


class FeedForward(nn.Module):
    """x + W_2 GELU(W_1 LayerNorm(x)), 4x wider inside (Vaswani et al. 2017, eq. 2, pre-norm)."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mult * dim), nn.GELU(),
                                 _near_zero_(nn.Linear(mult * dim, dim)))

    def forward(self, x):  # (B, L, dim) -> (B, L, dim)
        return x + self.net(x)


def position_code(H: int, W: int, dim: int, device=None, dtype=torch.float32):
    """The fixed 2-D sinusoidal position code (H*W, dim) of a feature map's tokens, row-major: the
    first dim/2 channels are the row i's sinusoidal embedding (``minidiff.nn.sinusoidal_embedding``,
    the time embedding of lesson 01: [cos(p omega_k), sin(p omega_k)], omega_k = 10000^(-k / (dim/4))),
    the last dim/2 the column j's (Vaswani et al. 2017, section 3.5, once per axis as in ViT/MAE)."""
    if dim % 4:
        raise ValueError(f"the 2-D position code needs a width divisible by 4, got {dim}")
    i, j = torch.meshgrid(torch.arange(H, device=device, dtype=torch.float64),
                          torch.arange(W, device=device, dtype=torch.float64), indexing="ij")
    rows, cols = (sinusoidal_embedding(p.flatten(), dim // 2) for p in (i, j))   # (H*W, dim/2) each
    return torch.cat([rows, cols], dim=1).to(dtype)                               # (H*W, dim)


class TransformerBlock(nn.Module):
    """LDM's spatial transformer (Rombach et al. 2022, section 3.3 and appendix): GroupNorm and a
    1x1 projection turn the feature map (B, C, H, W) into H*W tokens, which pass through
    self-attention, cross-attention on the context tau(y) (B, S, context_dim) and a feed-forward
    layer; a near-zero (1e-5-scaled) 1x1 projection maps them back, added to the input.
    ``position=True`` adds ``position_code`` to the tokens first, so that the attention knows
    where each token is (layouts: a query must tell whether it lies inside a box); LDM adds none
    and leaves position to the convolutions' zero padding."""

    def __init__(self, ch: int, context_dim: int, num_heads: int, groups: int, position: bool = False):
        super().__init__()
        self.position = position
        self.norm = nn.GroupNorm(groups, ch)
        self.proj_in = nn.Conv2d(ch, ch, 1)
        self.self_attn = MultiHeadAttention(ch, num_heads)
        self.cross_attn = MultiHeadAttention(ch, num_heads, context_dim)
        self.ff = FeedForward(ch)
        self.proj_out = _near_zero_(nn.Conv2d(ch, ch, 1))

    def forward(self, x, context, context_mask=None):
        # x: (B, C, H, W), context: (B, S, context_dim), context_mask: (B, S) bool -> (B, C, H, W)
        B, C, H, W = x.shape
        if context is None:
            raise ValueError("this U-Net has cross-attention (context_dim is set): pass context (B, S, context_dim)")
        if context.ndim != 3 or context.shape[0] != B:
            raise ValueError(f"context must have shape (B, S, context_dim) with B = {B}, got {tuple(context.shape)}")
        h = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)              # (B, HW, C)
        if self.position:
            h = h + position_code(H, W, C, h.device, h.dtype)                  # (HW, C), the same for every image
        h = self.self_attn(h)
        h = self.cross_attn(h, context, context_mask)
        h = self.ff(h)
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))
