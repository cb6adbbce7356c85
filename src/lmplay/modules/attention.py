"""Causal multi-head self-attention on `scaled_dot_product_attention` (flash / memory-efficient kernels where available)."""

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from lmplay.modules.kv_cache import KVCache


def causal_mask(q_len: int, k_len: int, device: torch.device) -> torch.Tensor:
    """Boolean [q_len, k_len] mask (True = may attend) for queries that are the last q_len of k_len positions."""
    offset = k_len - q_len
    rows = torch.arange(q_len, device=device).unsqueeze(1) + offset
    return torch.arange(k_len, device=device).unsqueeze(0) <= rows


def positions_taken(method) -> str | None:
    """How a bound heads() takes positions: "keyword" (a parameter named positions, keyword-only too, or **kwargs),
    "position" (a second positional parameter of another name, `heads(x, pos)`, or *args), or None (`heads(x)`,
    written before)."""
    parameters = inspect.signature(method).parameters.values()
    if any(p.name == "positions" and p.kind is not p.POSITIONAL_ONLY for p in parameters):
        return "keyword"
    if any(p.kind is p.VAR_POSITIONAL for p in parameters) or \
            sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters) >= 2:
        return "position"  # heads(x, pos=None, **kwargs) too
    return "keyword" if any(p.kind is p.VAR_KEYWORD for p in parameters) else None  # a wrapper passing them on


class MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if min(embed_dim, num_heads) < 1:  # an empty layer trains without a word (accuracy 1.0 of nothing)
            raise ValueError(f"embed_dim={embed_dim} and num_heads={num_heads} must be >= 1")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.dropout = dropout
        # how heads() takes positions ("keyword", "position", or None: heads(self, x), written before, still runs)
        self.positions_passed = positions_taken(self.heads)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, T, 3C] -> q, k, v each [B, H, T, D]."""
        B, T, _ = x.shape
        q, k, v = x.view(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return q, k, v

    def heads(self, x: torch.Tensor,
              positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, T, C] -> this step's q, k, v ([B, H, T, D]), before k and v join the cache: the place for an
        idea that changes them, so that cached decoding sees what a full forward does. `positions` ([T] or [B, T]):
        each token's position in its own row, what a positional idea (rotary, ALiBi) reads. Generation passes
        them for rows left-padded or slid past the context; a cache's `length` counts its columns, no position."""
        return self.split_heads(self.qkv(x))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attn_mask: torch.Tensor | None) -> torch.Tensor:
        """SDPA with the cheapest correct masking: `is_causal` when q and k line up, an explicit mask otherwise."""
        q_len, k_len = q.shape[2], k.shape[2]
        dropout = self.dropout if self.training else 0.0
        if attn_mask is None and q_len == k_len:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        if attn_mask is None and q_len > 1:
            attn_mask = causal_mask(q_len, k_len, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, attn_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """attn_mask, if given, is a boolean [B or 1, 1, T, K] mask (True = attend) over all K cached + new keys."""
        B, T, C = x.shape
        taken = self.positions_passed
        q, k, v = self.heads(x, positions=positions) if taken == "keyword" else \
            self.heads(x, positions) if taken == "position" else self.heads(x)
        if cache is not None:
            k, v = cache.append(k, v)
        y = self.attend(q, k, v, attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))
