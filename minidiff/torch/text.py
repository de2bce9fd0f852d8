"""tau for text (Rombach et al. 2022, section 3.3): a small transformer trained from scratch on
caption tokens, jointly with the U-Net it conditions (as LDM trained its text encoder on
LAION captions), and the text tower of minidiff's CLIP-style model.

Token and position embeddings, pre-LayerNorm blocks of self-attention and feed-forward (Vaswani
et al. 2017; the pre-norm order of GPT-2), a final LayerNorm.  Attention is bidirectional, with
the padding masked out of every softmax.  The token ids come from ``minidiff.data.tokenizer``:
[PAD] = 0, so the mask is ``ids != 0``.

    enc = TextEncoder(TextConfig(vocab_size=len(vocab)))
    tokens, mask = enc(ids)                # ids: (B, L) int64 -> (B, L, width), (B, L) bool
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .attention import FeedForward, MultiHeadAttention

PAD_ID = 0   # minidiff.data.tokenizer's [PAD]; the mask of a token sequence is ids != PAD_ID


@dataclasses.dataclass
class TextConfig:
    vocab_size: int = 128          # the tokenizer's vocabulary size
    context_length: int = 24       # L: tokens per caption, [BOS] and [EOS] included (captions: at most 19)
    width: int = 64                # D: the embedding size (the U-Net's context_dim)
    layers: int = 2
    heads: int = 4

    def __post_init__(self):
        for name, hi in (("vocab_size", 1 << 20), ("context_length", 1024), ("width", 4096), ("layers", 64),
                         ("heads", 64)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise ValueError(f"{name} must be an integer in [1, {hi}], got {v!r}")
        if self.width % self.heads:
            raise ValueError(f"heads={self.heads} must divide width={self.width}")


class TextBlock(nn.Module):
    """One pre-norm transformer block: x + SelfAttention(LN(x)), then x + FF(LN(x))."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = MultiHeadAttention(width, heads)
        self.ff = FeedForward(width)

    def forward(self, x, mask):  # (B, L, D), (B, L) bool -> (B, L, D)
        # the padded keys get no weight; padded positions still compute (their outputs go unused)
        return self.ff(self.attn(x, context_mask=mask))


class TextEncoder(nn.Module):
    """tau_theta(y): caption token ids (B, L) -> (token embeddings (B, L, width), mask (B, L) bool)."""

    def __init__(self, config: TextConfig | None = None):
        super().__init__()
        cfg = self.config = config if config is not None else TextConfig()
        self.token_emb = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_emb = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(TextBlock(cfg.width, cfg.heads) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)

    @property
    def width(self) -> int:
        return self.config.width

    def forward(self, ids):
        cfg = self.config
        ids = torch.as_tensor(ids)
        if ids.ndim != 2 or ids.shape[1] != cfg.context_length or ids.is_floating_point():
            raise ValueError(f"ids must be integer token ids of shape (B, context_length) = (B, {cfg.context_length}), "
                             f"got {ids.dtype} {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size):
            raise ValueError(f"ids must lie in [0, vocab_size) = [0, {cfg.vocab_size}), got values in "
                             f"[{int(ids.min())}, {int(ids.max())}]: was this model trained with another tokenizer?")
        mask = ids != PAD_ID                                               # (B, L) True: a real token
        x = self.token_emb(ids.long()) + self.pos_emb                      # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask

    @staticmethod
    def pooled(tokens, mask):
        """One vector per caption: the mean of its real tokens' embeddings.  (B, L, D), (B, L) -> (B, D)."""
        m = mask.to(tokens.dtype)[..., None]                               # (B, L, 1)
        return (tokens * m).sum(1) / m.sum(1).clamp_min(1)
