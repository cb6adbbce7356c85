"""The registered versions of the baseline; each has a conf/exp/<name>.yaml with the same shape."""

from lmplay.runner import BasicModelRunner, expose_runner

from experiments.gpt2ish.model import GPT2ish


@expose_runner("gpt2ish", description="The baseline: 6 blocks, 768 wide, 12 heads (~120M params, GPT-2 vocab)")
def gpt2ish(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(GPT2ish, {"num_blocks": 6, "embed_dim": 768, "num_heads": 12, **(overrides or {})})


@expose_runner("gpt2ish_med", description="24 blocks, 1024 wide, 16 heads")
def gpt2ish_med(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(GPT2ish, {"num_blocks": 24, "embed_dim": 1024, "num_heads": 16, **(overrides or {})})


@expose_runner("gpt2ish_large", description="36 blocks, 1280 wide, 20 heads")
def gpt2ish_large(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(GPT2ish, {"num_blocks": 36, "embed_dim": 1280, "num_heads": 20, **(overrides or {})})


@expose_runner("gpt2ish_mini", description="Laptop size: 4 blocks, 128 wide, byte-level; the default")
def gpt2ish_mini(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(GPT2ish, {"num_blocks": 4, "embed_dim": 128, "num_heads": 4,
                                      "tokenizer": "bytes", "context_len": 256, **(overrides or {})})


@expose_runner("test_runner", description="Tiny: 2 blocks, 32 wide, for tests")
def test_runner(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(GPT2ish, {"num_blocks": 2, "embed_dim": 32, "num_heads": 2,
                                      "tokenizer": "bytes", "context_len": 64, **(overrides or {})})
