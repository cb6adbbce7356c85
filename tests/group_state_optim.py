"""An optimizer of one's own that keeps running state in its param_groups, as Prodigy (`d`, `k`) and schedule-free
AdamW (`weight_sum`, `k`) do (tests/test_resume.py)."""

import torch


class GroupCounted(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "k": 0, "d": 1.0})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            group["k"] += 1
            group["d"] *= 1.5
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(torch.sign(p.grad), alpha=-group["lr"] * group["d"] / group["k"])
