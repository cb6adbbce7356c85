"""GPT2ish: GPT-2's architecture (pre-LN blocks, learned positions, GELU MLP x4) with an untied output layer.

This file is the baseline to copy: `python -m lmplay.new_exp NAME` copies the package, then change one thing.
"""

import torch
from torch import nn

from lmplay.model import LMBase, LMOutput
from lmplay.modules import Block, KVCache, TokenPositionEmbedding, init_gpt2_weights


class GPT2ish(LMBase):
    def __init__(self, vocab_size: int, context_len: int = 1024, num_blocks: int = 6, embed_dim: int = 768,
                 num_heads: int = 12, dropout: float = 0.0, tokenizer: str = "gpt2") -> None:
        super().__init__(tokenizer=tokenizer, context_len=context_len, vocab_size=vocab_size, num_blocks=num_blocks,
                         embed_dim=embed_dim, num_heads=num_heads, dropout=dropout)
        self.embed = TokenPositionEmbedding(vocab_size, context_len, embed_dim, dropout)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, dropout=dropout) for _ in range(num_blocks))
        self.ln_f = nn.LayerNorm(embed_dim)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        init_gpt2_weights(self, num_blocks)

    def forward(self, x: torch.Tensor, cache: list[KVCache] | None = None, positions: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, last_only: bool = False) -> LMOutput:
        """Logits [B, T, vocab] (T = 1 with `last_only`); with a cache also the cache. `positions` ([T] or
        [B, T]) default to following what is cached; left-padded batches pass their own, with `attn_mask`."""
        if positions is None:
            positions = self.next_positions(x, cache)
        h = self.embed(x, positions)
        for i, block in enumerate(self.blocks):
            h = block(h, cache=cache[i] if cache else None, attn_mask=attn_mask, positions=positions)
        if last_only:  # generation reads only the newest position: nanoGPT's x[:, [-1]] at inference
            h = h[:, -1:]
        logits = self.lm_head(self.ln_f(h))
        return (logits, cache) if cache is not None else logits
