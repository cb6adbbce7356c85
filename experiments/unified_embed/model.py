"""UnifiedEmbedGPT: GPT2ish whose token embedding is a UnifiedEmbedding (unified_embedding.py).

A copy of experiments/gpt2ish/model.py; the change is the token table in `Embedding`, plus `export()`,
which collapses the unified embedding into a plain table (`collapsed=True`) with identical logits.
"""

import torch
from torch import nn

from experiments.unified_embed.unified_embedding import UnifiedEmbedding
from lmplay.model import LMBase, LMOutput
from lmplay.modules import Block, KVCache, init_gpt2_weights


class Embedding(nn.Module):
    """Token + learned position embeddings, with a unified embedding (or, once collapsed, a plain table) for tokens."""

    def __init__(self, vocab_size: int, context_len: int, embed_dim: int, front_mul: int, collapsed: bool,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.tok = (nn.Embedding(vocab_size, embed_dim) if collapsed
                    else UnifiedEmbedding(vocab_size, embed_dim, front_mul))
        self.pos = nn.Embedding(context_len, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.tok(idx) + self.pos(positions))


class UnifiedEmbedGPT(LMBase):
    def __init__(self, vocab_size: int, context_len: int = 1024, num_blocks: int = 6, embed_dim: int = 768,
                 num_heads: int = 12, dropout: float = 0.0, front_mul: int = 4, collapsed: bool = False,
                 tokenizer: str = "gpt2") -> None:
        super().__init__(tokenizer=tokenizer, context_len=context_len, vocab_size=vocab_size, num_blocks=num_blocks,
                         embed_dim=embed_dim, num_heads=num_heads, dropout=dropout, front_mul=front_mul,
                         collapsed=collapsed)
        self.embed = Embedding(vocab_size, context_len, embed_dim, front_mul, collapsed, dropout)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, dropout=dropout) for _ in range(num_blocks))
        self.ln_f = nn.LayerNorm(embed_dim)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        init_gpt2_weights(self, num_blocks)
        if not collapsed:
            self.embed.tok.reset_parameters()  # its own init: GPT-2's N(0, 0.02) everywhere would start it near zero

    @torch.no_grad()
    def export(self) -> "UnifiedEmbedGPT":
        """The same model with the unified embedding collapsed into a plain table: identical logits, and the
        parameter count of the baseline (the wide table and its MLP exist only for training)."""
        if self.construction_args["collapsed"]:
            return self
        with torch.random.fork_rng(devices=[]):  # new layers' initial weights, overwritten: the caller's draws stay
            weight = self.embed.tok.front.weight  # a bf16 or fp64 model exports as one, not as float32
            exported = type(self)(**{**self.construction_args, "collapsed": True}).to(weight.device, weight.dtype)
            state = {k: v for k, v in self.state_dict().items() if not k.startswith("embed.tok.")}
            state["embed.tok.weight"] = self.embed.tok.collapse().weight
        exported.load_state_dict(state)
        return exported.train(self.training)

    def flops_per_token(self, seq_len: int) -> float:
        """The baseline's count less the unified embedding's MLP, which runs once per distinct token of a forward
        pass (a mini-batch), not per token: left out, as a table's lookups are, so MFU reads that share low (GPT-2
        text has ~1,100 distinct tokens in 4,096: ~0.9% of gpt2ish-sized work; less for larger mini-batches)."""
        mlp = 0 if self.construction_args["collapsed"] else sum(
            p.numel() for layer in (self.embed.tok.fc1, self.embed.tok.fc2) for p in layer.parameters())
        return super().flops_per_token(seq_len) - 6 * mlp

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
