"""The optimizer step alone: torch's fused kernel (what `optimizer.fused=null` takes on CUDA and on a CPU) against
its per-tensor loop (`optimizer.fused=false` on a CPU; foreach=False here on a GPU too), on one experiment's model
and parameter groups, in turns.

The step's work depends only on the parameters, so random gradients stand in for a batch's. Takes train_loop.py's
arguments (the model's size: --exp and Hydra overrides):

    python benchmarks/optimizer_step.py --exp test_runner --steps 200
    python benchmarks/optimizer_step.py --exp gpt2ish --steps 20
"""

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from train_loop import lmplay_runner, machine, parser

from lmplay.device import synchronize

if TYPE_CHECKING:
    import torch


TURNS = 5  # each kind of step timed this many times, in turns, so that the machine's load falls on both alike


def timed_steps(optimizer: "torch.optim.Optimizer", steps: int, device: "torch.device") -> float:
    """Seconds a step, over `steps` steps."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    import torch

    args = parser(__doc__, one_loop=True).parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as run_dir:
        runner = lmplay_runner(args, Path(run_dir))
        optimizer = runner.optimizer_c.optimizer
        if "fused" not in optimizer.defaults:
            raise SystemExit(f"error: {type(optimizer).__name__} has no fused kernel to compare; use optimizer=adamw")
        def groups() -> list[dict]:  # each optimizer its own: torch fills a group's dict with its defaults
            return [{k: v for k, v in group.items() if k not in ("fused", "foreach")}
                    for group in optimizer.param_groups]

        optimizers = {"fused": type(optimizer)(groups(), fused=True),
                      "per-tensor": type(optimizer)(groups(), fused=False, foreach=False)}
        assert [each.param_groups[0]["fused"] for each in optimizers.values()] == [True, False]
        for p in runner.model.parameters():
            p.grad = torch.randn_like(p) if p.requires_grad else None
        times = {name: [] for name in optimizers}
        for _ in range(max(args.warmup, 1)):  # their state (the moments) allocated before any step is timed
            for each in optimizers.values():
                each.step()
        for _ in range(TURNS):
            for name, each in optimizers.items():
                times[name].append(timed_steps(each, args.steps, runner.device))
    median = {name: statistics.median(t) for name, t in times.items()}
    params = sum(p.numel() for p in runner.model.parameters() if p.requires_grad)
    print(f"{args.exp}: {params:,} parameters, {type(optimizer).__name__}'s step, median of {TURNS} turns of "
          f"{args.steps} ({machine(args.device)})")
    print(f"fused {median['fused'] * 1e3:.3f} ms   per-tensor {median['per-tensor'] * 1e3:.3f} ms   "
          f"fused is {median['per-tensor'] / median['fused']:.2f}x as fast")


if __name__ == "__main__":
    main()
