"""The registered versions; each has a conf/exp/<name>.yaml with the same shape as the baseline's version."""

from lmplay.runner import BasicModelRunner, expose_runner

from experiments.nnmemory.model import NNMemoryGPT


@expose_runner("nnmemory", description="NNMemory at the baseline's size (6 blocks, 768 wide, 12 heads)")
def nnmemory(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(NNMemoryGPT, {"num_blocks": 6, "embed_dim": 768, "num_heads": 12, "num_cells": 4096,
                                          **(overrides or {})})


@expose_runner("nnmemory_mini", description="NNMemory at gpt2ish_mini's size; compare with gpt2ish_mini")
def nnmemory_mini(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(NNMemoryGPT, {"num_blocks": 4, "embed_dim": 128, "num_heads": 4,
                                          "tokenizer": "bytes", "context_len": 256, "num_cells": 256,
                                          **(overrides or {})})


@expose_runner("nnmemory_test", description="NNMemory at test_runner's size, for tests")
def nnmemory_test(overrides: dict | None = None) -> BasicModelRunner:
    return BasicModelRunner(NNMemoryGPT, {"num_blocks": 2, "embed_dim": 32, "num_heads": 2,
                                          "tokenizer": "bytes", "context_len": 64, "num_cells": 16,
                                          **(overrides or {})})
