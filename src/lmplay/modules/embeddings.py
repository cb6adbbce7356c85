"""Token + learned absolute position embeddings, GPT-2 style."""

import torch
from torch import nn


class TokenPositionEmbedding(nn.Module):
    def __init__(self, vocab_size: int, context_len: int, embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, embed_dim)
        self.pos = nn.Embedding(context_len, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """idx [B, T]; positions [T] or [B, T] (per-row positions for left-padded batches)."""
        return self.dropout(self.tok(idx) + self.pos(positions))
