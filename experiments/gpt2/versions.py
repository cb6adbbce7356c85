"""GPT-2's four released sizes; each has a conf/exp/<name>.yaml with the same shape.

A version's name is written only where it is registered (`@expose_runner`, `def`), so that
`lmplay.new_exp copy --from gpt2` renames every one of them (import_hf finds a shape's version here)."""

from experiments.gpt2.model import GPT2
from lmplay.runner import BasicModelRunner, expose_runner


def runner(num_blocks: int, embed_dim: int, num_heads: int, overrides: dict | None) -> BasicModelRunner:
    shape = {"num_blocks": num_blocks, "embed_dim": embed_dim, "num_heads": num_heads}
    return BasicModelRunner(GPT2, {**shape, **(overrides or {})})


@expose_runner("gpt2", description="GPT-2 small exactly: 12 blocks, 768 wide, 12 heads, tied embeddings (124M)")
def gpt2(overrides: dict | None = None) -> BasicModelRunner:
    return runner(12, 768, 12, overrides)


@expose_runner("gpt2_medium", description="GPT-2 medium: 24 blocks, 1024 wide, 16 heads (355M)")
def gpt2_medium(overrides: dict | None = None) -> BasicModelRunner:
    return runner(24, 1024, 16, overrides)


@expose_runner("gpt2_large", description="GPT-2 large: 36 blocks, 1280 wide, 20 heads (774M)")
def gpt2_large(overrides: dict | None = None) -> BasicModelRunner:
    return runner(36, 1280, 20, overrides)


@expose_runner("gpt2_xl", description="GPT-2 XL: 48 blocks, 1600 wide, 25 heads (1.5B)")
def gpt2_xl(overrides: dict | None = None) -> BasicModelRunner:
    return runner(48, 1600, 25, overrides)
