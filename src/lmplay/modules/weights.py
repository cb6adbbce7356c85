"""GPT-2's initialisation: N(0, 0.02), zero biases, residual projections scaled by 1/sqrt(2 * num_blocks)."""

import math
import zlib

import torch
from torch import nn


def init_gpt2_weights(model: nn.Module, num_blocks: int) -> None:
    """Each weight is drawn from a generator of its own, seeded by the model's `init_seed` (LMBase draws it first
    thing) and the weight's name: an idea's added layers, wherever they sit, then leave every weight the baseline also
    has as the baseline's at the same seed, so that runs of one seed differ by the idea alone. A model without an
    `init_seed` draws from torch's global generator, in module order."""
    seed = getattr(model, "init_seed", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * num_blocks) if name.endswith(".proj") else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std, generator=own_generator(seed, name, module.weight))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02, generator=own_generator(seed, name, module.weight))


def own_generator(seed: int | None, name: str, weight: torch.Tensor) -> torch.Generator | None:
    if seed is None or weight.is_meta:  # meta: shapes only, nothing to draw
        return None
    return torch.Generator(weight.device).manual_seed((seed + zlib.crc32(name.encode())) % 2**63)
