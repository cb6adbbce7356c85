"""Learned attention temperature: each query token picks, per head, how sharp its attention is.

Why: the fixed 1/sqrt(head_dim) scale treats every head and token alike, but some heads want a
near-hard lookup (copy one token) and others a broad average. Here a linear map of the attention
input gives a temperature t = 2 * sigmoid(w . x + b) in (0, 2) per head and query position, and the
scores become q.k / (sqrt(head_dim) * t). This is the original lmplay's `learn_scale="full"`.
w and b start at zero, so t = 1 and the layer is exactly the baseline's attention at init; the
bound keeps a temperature from collapsing to 0 or growing without limit.

Scaling the queries by 1/t is the same as scaling the scores (t depends on the query row only), so
the fused `scaled_dot_product_attention` kernels and the KV cache work unchanged.
"""

import torch
import torch.nn.functional as F
from torch import nn

from lmplay.modules.attention import MultiHeadAttention


class LearnedTemperatureAttention(MultiHeadAttention):
    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, dropout=dropout)
        # Plain parameters, not an nn.Linear, so GPT-2's weight init leaves them at zero (t = 1).
        self.temperature_weight = nn.Parameter(torch.zeros(num_heads, embed_dim))
        self.temperature_bias = nn.Parameter(torch.zeros(num_heads))
        self.temperature_bias.skip_weight_decay = True

    def temperature(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> per-head, per-position temperatures [B, H, T, 1] in (0, 2)."""
        t = 2 * torch.sigmoid(F.linear(x, self.temperature_weight, self.temperature_bias))
        return t.transpose(1, 2).unsqueeze(-1)

    def heads(self, x: torch.Tensor,
              positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = super().heads(x, positions)
        return q / self.temperature(x), k, v
