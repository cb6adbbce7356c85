"""GPT-2's initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 * num_blocks)."""

import math

from torch import nn


def init_gpt2_weights(model: nn.Module, num_blocks: int) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * num_blocks) if name.endswith(".proj") else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
