"""The GPT-2 pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

import torch
from torch import nn

from lmplay.modules.attention import MultiHeadAttention
from lmplay.modules.kv_cache import KVCache


class MLP(nn.Module):
    def __init__(self, embed_dim: int, expansion: int = 4, bias: bool = True, dropout: float = 0.0,
                 gelu: str = "none") -> None:
        super().__init__()
        self.fc = nn.Linear(embed_dim, expansion * embed_dim, bias=bias)
        self.act = nn.GELU(approximate=gelu)
        self.proj = nn.Linear(expansion * embed_dim, embed_dim, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0,
                 gelu: str = "none", ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim, eps=ln_eps, bias=bias)
        self.attn = MultiHeadAttention(embed_dim, num_heads, bias=bias, dropout=dropout)
        self.ln2 = nn.LayerNorm(embed_dim, eps=ln_eps, bias=bias)
        self.mlp = MLP(embed_dim, bias=bias, dropout=dropout, gelu=gelu)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, attn_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        given = {"positions": positions} if positions is not None else {}  # an attention of one's own may take none
        x = x + self.dropout(self.attn(self.ln1(x), cache=cache, attn_mask=attn_mask, **given))
        return x + self.mlp(self.ln2(x))
