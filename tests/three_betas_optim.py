import torch


class Adan(torch.optim.Optimizer):
    """Adan's signature (three betas); the step is a stand-in."""
    def __init__(self, params, lr: float = 1e-3, betas: tuple = (0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-g["lr"])
