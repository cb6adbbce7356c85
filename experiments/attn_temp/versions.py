"""The registered versions; each has a conf/exp/<name>.yaml with the same shape as the baseline's version."""

from lmplay.runner import BasicModelRunner, expose_runner

from experiments.attn_temp.model import TempAttnGPT


@expose_runner("attn_temp", description="Learned attention temperature at the baseline's size (6 blocks, 768 wide)")
def attn_temp(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(TempAttnGPT, {"num_blocks": 6, "embed_dim": 768, "num_heads": 12, **(overrides or {})})


@expose_runner("attn_temp_mini", description="Learned attention temperature at gpt2ish_mini's size; compare with it")
def attn_temp_mini(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(TempAttnGPT, {"num_blocks": 4, "embed_dim": 128, "num_heads": 4,
                                          "tokenizer": "bytes", "context_len": 256, **(overrides or {})})


@expose_runner("attn_temp_test", description="Learned attention temperature at test_runner's size, for tests")
def attn_temp_test(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(TempAttnGPT, {"num_blocks": 2, "embed_dim": 32, "num_heads": 2,
                                          "tokenizer": "bytes", "context_len": 64, **(overrides or {})})
