"""The registered versions; each has a conf/exp/<name>.yaml with the same shape as the baseline's version."""

from lmplay.runner import BasicModelRunner, expose_runner

from experiments.unified_embed.model import UnifiedEmbedGPT


@expose_runner("unified_embed", description="Unified embeddings at the baseline's size (6 blocks, 768 wide, 12 heads)")
def unified_embed(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(UnifiedEmbedGPT, {"num_blocks": 6, "embed_dim": 768, "num_heads": 12, "front_mul": 4,
                                              **(overrides or {})})


@expose_runner("unified_embed_mini", description="Unified embeddings at gpt2ish_mini's size; compare with gpt2ish_mini")
def unified_embed_mini(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(UnifiedEmbedGPT, {"num_blocks": 4, "embed_dim": 128, "num_heads": 4,
                                              "tokenizer": "bytes", "context_len": 256, "front_mul": 16,
                                              **(overrides or {})})


@expose_runner("unified_embed_test", description="Unified embeddings at test_runner's size, for tests")
def unified_embed_test(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(UnifiedEmbedGPT, {"num_blocks": 2, "embed_dim": 32, "num_heads": 2,
                                              "tokenizer": "bytes", "context_len": 64, "front_mul": 4,
                                              **(overrides or {})})
