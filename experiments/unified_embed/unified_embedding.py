"""Unified embeddings: a wide embedding table, integrated by a small MLP, that becomes a plain table on export.

Why: a token's embedding row only learns when the token appears, so rare tokens learn slowly. Here
each token has a wide row (`front_mul` x embed_dim) and a shared MLP (Linear, GELU, Linear) turns
it into the embed_dim vector the model uses. Every token's gradient also trains the shared MLP,
which is how frequent tokens can help rare ones. The cost is training-time only: the MLP has no
input other than the token id, so after training every token's vector is computed once and the
whole layer collapses to an ordinary `nn.Embedding` with identical outputs (`collapse()`).
This is the original lmplay's UnifiedEmbedding.
"""

import torch
import torch.nn.functional as F
from torch import nn


class UnifiedEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, front_mul: int = 8, init_std: float = 0.02) -> None:
        super().__init__()
        if front_mul < 1:  # an empty wide row gives every token the same vector, and the init divides by its std
            raise ValueError(f"front_mul={front_mul} must be >= 1 (each token's wide row is front_mul x embed_dim)")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.init_std = init_std
        self.front = nn.Embedding(num_embeddings, front_mul * embedding_dim)
        self.fc1 = nn.Linear(front_mul * embedding_dim, embedding_dim)
        self.fc2 = nn.Linear(embedding_dim, embedding_dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Unit-normal front rows and PyTorch's default Linear init, then fc2 scaled so that the generated
        rows start with std `init_std`: the scale a plain table has under GPT-2's init (the rows share a common
        direction a table's do not, GELU's positive mean, so the start is near the baseline's, not at it)."""
        nn.init.normal_(self.front.weight)
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()
        nn.init.zeros_(self.fc2.bias)
        sample = torch.arange(min(self.num_embeddings, 4096), device=self.front.weight.device)
        self.fc2.weight.mul_(self.init_std / self.rows(sample).std())

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The embedding vectors of `ids` (any shape) -> [..., embedding_dim]."""
        return self.fc2(F.gelu(self.fc1(self.front(ids))))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        # A batch repeats tokens a lot: run the MLP once per distinct token, then scatter the rows back.
        ids, inverse = torch.unique(idx, return_inverse=True)
        return self.rows(ids)[inverse]

    @torch.no_grad()
    def collapse(self, chunk: int = 8192) -> nn.Embedding:
        """A plain nn.Embedding whose rows are this layer's outputs: same lookups, none of the training-time weights."""
        weight = self.front.weight
        table = nn.Embedding(self.num_embeddings, self.embedding_dim, device=weight.device, dtype=weight.dtype)
        for start in range(0, self.num_embeddings, chunk):
            ids = torch.arange(start, min(start + chunk, self.num_embeddings), device=weight.device)
            table.weight[start:start + len(ids)] = self.rows(ids)
        return table
