"""NNMemory: attention over a bank of learned memory cells, shared by every block that reads it.

Why: self-attention can only retrieve what is in the context; the MLPs store knowledge, but
implicitly. NNMemory gives the model an explicit, content-addressed store: a set of learned cells
whose keys and values every token can attend to, like attending to a context that never changes.
Reads are per token (a token sees the cells, never other tokens), so the layer is causal by
construction and needs no KV cache; the cells' keys and values are computed once per forward pass (once per
generation when decoding: NNMemoryGPT keeps them for the generation's cache).
This is the original lmplay's NNMemory (its cells came from a unified embedding; here they are a
plain learned tensor, so the idea stands on its own).
"""

import torch
import torch.nn.functional as F
from torch import nn


class NNMemory(nn.Module):
    """`num_cells` learned cells of `embed_dim`, exposed as per-head keys and values."""

    def __init__(self, num_cells: int, embed_dim: int, num_heads: int, bias: bool = True) -> None:
        super().__init__()
        if min(num_cells, embed_dim, num_heads) < 1:  # an empty layer trains without a word (accuracy 1.0 of nothing)
            raise ValueError(f"num_cells={num_cells}, embed_dim={embed_dim} and num_heads={num_heads} must be >= 1")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.cells = nn.Parameter(torch.randn(num_cells, embed_dim))
        self.cells.skip_weight_decay = True  # a table, like an embedding's
        self.key = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.value = nn.Linear(embed_dim, embed_dim, bias=bias)

    def keys_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the cells, each [1, H, num_cells, head_dim]."""
        M = self.cells.shape[0]
        k = self.key(self.cells).view(1, M, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.value(self.cells).view(1, M, self.num_heads, self.head_dim).transpose(1, 2)
        return k, v


class NNMemoryRead(nn.Module):
    """One block's read of an NNMemory: project queries, attend over all cells (no mask), project back."""

    def __init__(self, embed_dim: int, num_heads: int, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.query = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """x [B, T, C]; keys, values [1, H, M, D] from `NNMemory.keys_values()`."""
        B, T, C = x.shape
        q = self.query(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, keys.expand(B, -1, -1, -1), values.expand(B, -1, -1, -1),
                                           dropout_p=dropout)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))
