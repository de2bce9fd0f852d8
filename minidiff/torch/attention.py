"""Attention for the U-Net (Vaswani et al. 2017, "Attention Is All You Need"; equation numbers refer
to that paper).  ``attention`` is eq. 1; the modules split their channels into heads, run it on
every head at once and merge the heads again.  Self-attention (``Attention``) takes its queries,
keys and values from the same feature map; a cross-attention block (queries from the image, keys
and values from a conditioning sequence such as a text embedding) fits beside it on the same
``split_heads`` / ``merge_heads`` and kernel.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ._init import _near_zero_


def attention(q, k, v):
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1): softmax(q k^T / sqrt(d)) v,
    the softmax over the keys.  q: (..., L, d), k: (..., S, d), v: (..., S, d_v) -> (..., L, d_v)."""
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"q (..., L, d), k (..., S, d) and v (..., S, d_v) do not fit: {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    # BEGIN SOLUTION
    # hint: weights = softmax(q @ k^T / sqrt(d), over the last axis); return weights @ v
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)   # (..., L, S)
    return weights @ v
    # END SOLUTION


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
