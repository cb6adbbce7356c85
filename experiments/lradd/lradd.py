"""LRAdd: a learned residual add, alpha * x + beta * y with alpha and beta learned per channel (or per add).

Why: a pre-LN transformer adds every branch to the residual stream at a fixed weight of 1, so the
stream's scale grows with depth and a block cannot damp the stream or its own branch. LRAdd lets
each channel learn how much of the stream (alpha) and of the branch (beta) to keep. The original
lmplay's LRAdd learns one alpha and one beta per add (`per_channel=False`); per channel is this port's
variant, the default. As in the original the gains are 2 * sigmoid(w): they start at exactly 1 (a plain
add, so the model is the baseline at init) and stay in (0, 2), so a gain can fade a path out or double
it but cannot flip its sign or explode. Like LayerNorm gains they are excluded from weight decay.
"""

import torch
from torch import nn


class LRAdd(nn.Module):
    def __init__(self, dim: int, per_channel: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(2, dim if per_channel else 1))
        self.weight.skip_weight_decay = True

    def gains(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha, beta), each [dim] (or [1]): the weights of the stream and of the branch."""
        alpha, beta = 2 * torch.sigmoid(self.weight)
        return alpha, beta

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: the residual stream, y: the branch's output; both [..., dim]."""
        alpha, beta = self.gains()
        return alpha * x + beta * y
