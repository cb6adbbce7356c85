"""The registered versions; each has a conf/exp/<name>.yaml with the same shape as the baseline's version."""

from lmplay.runner import BasicModelRunner, expose_runner

from experiments.lradd.model import LRAddGPT


@expose_runner("lradd", description="LRAdd residuals at the baseline's size (6 blocks, 768 wide, 12 heads)")
def lradd(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(LRAddGPT, {"num_blocks": 6, "embed_dim": 768, "num_heads": 12, **(overrides or {})})


@expose_runner("lradd_mini", description="LRAdd residuals at gpt2ish_mini's size; compare with gpt2ish_mini")
def lradd_mini(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(LRAddGPT, {"num_blocks": 4, "embed_dim": 128, "num_heads": 4,
                                       "tokenizer": "bytes", "context_len": 256, **(overrides or {})})


@expose_runner("lradd_test", description="LRAdd residuals at test_runner's size, for tests")
def lradd_test(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(LRAddGPT, {"num_blocks": 2, "embed_dim": 32, "num_heads": 2,
                                       "tokenizer": "bytes", "context_len": 64, **(overrides or {})})
