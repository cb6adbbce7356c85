"""ValueNormGPT: GPT2ish with value-norm attention (value_norm_attention.py) in every block.

A copy of experiments/gpt2ish/model.py; the one change is the attention class in `Block`.
"""

import torch
from torch import nn

from experiments.value_norm.value_norm_attention import ValueNormAttention
from lmplay.model import LMBase, LMOutput
from lmplay.modules import MLP, KVCache, TokenPositionEmbedding, init_gpt2_weights


class Block(nn.Module):
    """The baseline's pre-LN block with ValueNormAttention."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = ValueNormAttention(embed_dim, num_heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = MLP(embed_dim, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                attn_mask: torch.Tensor | None = None, positions: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln1(x), cache=cache, attn_mask=attn_mask, positions=positions))
        return x + self.mlp(self.ln2(x))


class ValueNormGPT(LMBase):
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
            h = block(h, cache=cache[i] if cache else None, attn_mask=attn_mask,
                      positions=positions)
        if last_only:  # generation reads only the newest position: nanoGPT's x[:, [-1]] at inference
            h = h[:, -1:]
        logits = self.lm_head(self.ln_f(h))
        return (logits, cache) if cache is not None else logits
