"""Value-norm attention: causal self-attention with a LayerNorm on each head's value vectors.

Why: attention output is a weighted sum of values, and a value with a large norm dominates that sum
whatever the weights say. Normalising every head's values (one LayerNorm over the head dimension,
shared by the heads, as in the original lmplay's `norm_v`) makes the mix depend on the attention
weights, and leaves the scale to the LayerNorm's learned gain.
"""

import torch
from torch import nn

from lmplay.modules.attention import MultiHeadAttention
from lmplay.modules.kv_cache import KVCache


class ValueNormAttention(MultiHeadAttention):
    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, dropout=dropout)
        self.value_norm = nn.LayerNorm(self.head_dim, bias=bias)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.split_heads(self.qkv(x))
        v = self.value_norm(v)  # before the cache, so cached decoding sees the same values as a full forward
        if cache is not None:
            k, v = cache.append(k, v)
        y = self.attend(q, k, v, attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))
