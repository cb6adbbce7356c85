"""Value-norm attention: causal self-attention with a LayerNorm on each head's value vectors.

Why: attention output is a weighted sum of values, and a value with a large norm dominates that sum
whatever the weights say. Normalising every head's values (one LayerNorm over the head dimension,
shared by the heads, as in the original lmplay's `norm_v`) makes the mix depend on the attention
weights, and leaves the scale to the LayerNorm's learned gain.
"""

import torch
from torch import nn

from lmplay.modules.attention import MultiHeadAttention


class ValueNormAttention(MultiHeadAttention):
    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, dropout=dropout)
        self.value_norm = nn.LayerNorm(self.head_dim, bias=bias)

    def heads(self, x: torch.Tensor,
              positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().heads(x, positions)
        return q, k, self.value_norm(v)
