"""NNMemoryGPT: GPT2ish with a read of a shared NNMemory (nn_memory.py) in every block.

A copy of experiments/gpt2ish/model.py; the change is a third sub-layer in `Block`, between attention
and the MLP: x + memory_read(ln(x)), where every block reads the same cells with its own queries.
"""

import weakref

import torch
from torch import nn

from experiments.nnmemory.nn_memory import NNMemory, NNMemoryRead
from lmplay.model import LMBase, LMOutput
from lmplay.modules import MLP, KVCache, MultiHeadAttention, TokenPositionEmbedding, init_gpt2_weights


class Block(nn.Module):
    """The baseline's pre-LN block with a memory read between attention and the MLP."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = MultiHeadAttention(embed_dim, num_heads, dropout=dropout)
        self.ln_mem = nn.LayerNorm(embed_dim)
        self.mem = NNMemoryRead(embed_dim, num_heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mem_keys: torch.Tensor, mem_values: torch.Tensor,
                cache: KVCache | None = None, attn_mask: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln1(x), cache=cache, attn_mask=attn_mask, positions=positions))
        x = x + self.dropout(self.mem(self.ln_mem(x), mem_keys, mem_values))
        return x + self.mlp(self.ln2(x))


class NNMemoryGPT(LMBase):
    def __init__(self, vocab_size: int, context_len: int = 1024, num_blocks: int = 6, embed_dim: int = 768,
                 num_heads: int = 12, dropout: float = 0.0, num_cells: int = 4096, tokenizer: str = "gpt2") -> None:
        super().__init__(tokenizer=tokenizer, context_len=context_len, vocab_size=vocab_size, num_blocks=num_blocks,
                         embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, num_cells=num_cells)
        self.embed = TokenPositionEmbedding(vocab_size, context_len, embed_dim, dropout)
        self.memory = NNMemory(num_cells, embed_dim, num_heads)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, dropout=dropout) for _ in range(num_blocks))
        self.ln_f = nn.LayerNorm(embed_dim)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        init_gpt2_weights(self, num_blocks)
        self._kept: tuple[weakref.ref, tuple[torch.Tensor, torch.Tensor]] | None = None  # memory_for's

    def flops_per_token(self, seq_len: int) -> float:
        """The baseline's count less the memory's cells and key/value layers, which run on the cells once a
        forward pass (a mini-batch), not per token: left out, so MFU reads that share low (~0.9% of gpt2ish-sized
        work at mini_batch_size=4 x 1024 tokens, less for larger mini-batches); plus each block's read: scores and
        values over num_cells cells, 12 x num_cells x embed_dim a token (forward and backward), as attention over
        a context that long."""
        args = self.construction_args
        memory = sum(p.numel() for p in self.memory.parameters())
        reads = 12 * args["num_blocks"] * args["num_cells"] * args["embed_dim"]
        return super().flops_per_token(seq_len) - 6 * memory + reads

    def memory_for(self, cache: list[KVCache] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory's keys and values: once per forward, and once per generation while decoding (kept with the
        generation's cache): each new token is a forward of its own, and computing them for each (two embed_dim^2
        layers over every cell) made sampling ~10x slower than the baseline's. Kept no longer than the cache lives,
        they never outlast a weight change (a fused optimizer's step leaves no mark on a tensor to check)."""
        if not cache or torch.is_grad_enabled():
            return self.memory.keys_values()
        # a cache at length 0 starts a new sequence (a new cache, or one reset() for reuse, maybe after a step)
        if self._kept is None or self._kept[0]() is not cache[0] or cache[0].length == 0:
            self._kept = (weakref.ref(cache[0]), self.memory.keys_values())
        return self._kept[1]

    def forward(self, x: torch.Tensor, cache: list[KVCache] | None = None, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False) -> LMOutput:
        """Logits [B, T, vocab] (T = 1 with `last_only`); with a cache also the cache. `positions` ([T] or
        [B, T]) default to following what is cached; left-padded batches pass their own, with `attn_mask`."""
        if positions is None:
            positions = self.next_positions(x, cache)
        h = self.embed(x, positions)
        mem_keys, mem_values = self.memory_for(cache)  # shared by every block
        for i, block in enumerate(self.blocks):
            h = block(h, mem_keys, mem_values, cache=cache[i] if cache else None, attn_mask=attn_mask,
                      positions=positions)
        if last_only:  # generation reads only the newest position: nanoGPT's x[:, [-1]] at inference
            h = h[:, -1:]
        logits = self.lm_head(self.ln_f(h))
        return (logits, cache) if cache is not None else logits
