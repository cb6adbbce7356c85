"""GPT-2 as OpenAI released it: the baseline's blocks with the tanh GELU, layer-norm epsilon 1e-5, biases
everywhere, and the output layer tied to the token embedding.

Parameter names follow lmplay's modules; `experiments.gpt2.import_hf` maps Hugging Face's names onto them.
"""

import torch
from torch import nn

from lmplay.model import LMBase, LMOutput
from lmplay.modules import Block, KVCache, TokenPositionEmbedding, init_gpt2_weights

LN_EPS = 1e-5


class GPT2(LMBase):
    def __init__(self, vocab_size: int = 50257, context_len: int = 1024, num_blocks: int = 12, embed_dim: int = 768,
                 num_heads: int = 12, dropout: float = 0.0, tokenizer: str = "gpt2") -> None:
        super().__init__(tokenizer=tokenizer, context_len=context_len, vocab_size=vocab_size, num_blocks=num_blocks,
                         embed_dim=embed_dim, num_heads=num_heads, dropout=dropout)
        self.embed = TokenPositionEmbedding(vocab_size, context_len, embed_dim, dropout)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, bias=True, dropout=dropout, gelu="tanh", ln_eps=LN_EPS)
                                    for _ in range(num_blocks))
        self.ln_f = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.lm_head.weight = self.embed.tok.weight
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
