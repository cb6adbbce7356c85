"""Where a training step's time goes: lmplay's real loop (or with --bare, train_loop.py's bare PyTorch loop)
under torch.profiler, its time split into matmuls, attention, the loss, the optimizer and the rest, with
the largest kernels.

On a GPU the split is of kernel time, and `busy` is kernel time over wall time: near 100% means the
host keeps the GPU fed and only faster kernels can raise MFU. On a CPU it is the ops' own time.
The first --warmup steps (compilation) are not profiled. Takes train_loop.py's arguments:

    python benchmarks/profile_step.py --exp gpt2ish --device cuda --amp --compile --tokenizer gpt2 --context-len 1024 --batch-size 64 --mini-batch-size 64 --steps 5 vocab_multiple=64 curriculum.batching=packed
    python benchmarks/profile_step.py --exp gpt2ish_mini --steps 5
    python benchmarks/profile_step.py --bare --exp gpt2ish_mini --steps 5    (the same for the bare loop)
"""

import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from train_loop import BareLoop, LmplayLoop, machine, overrides, parser

from lmplay.device import synchronize

# First match wins; names are lower-cased GPU kernel names (cuBLAS, cuDNN, inductor's triton_*) or CPU ops.
CATEGORIES = [
    ("optimizer", r"adam|multi_tensor_apply|foreach"),
    ("attention", r"flash|fmha|attention|sdpa"),
    ("loss", r"log_softmax|nll_loss|cross_entropy|logsumexp"),
    ("matmul", r"gemm|nvjet|cutlass|xmma|cublas|aten::(mm|addmm|bmm|matmul)$"),
]


def category(name: str) -> str:
    lowered = name.lower()
    return next((label for label, pattern in CATEGORIES if re.search(pattern, lowered)), "other")


def in_optimizer_step(event) -> bool:
    """A CPU op run by optimizer.step() (torch marks the call with an `Optimizer.step#...` range)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return True
        parent = parent.cpu_parent
    return False


def profile_steps(loop: LmplayLoop | BareLoop, steps: int, on_gpu: bool):
    """({(category, op or kernel name): self time in us}, wall seconds) over `steps` steps of the loop.

    Of lmplay's loop only the steps and their reads are profiled (the runner's _run_steps), not what
    train() does once at its end (the final validation and checkpoint), which a real run does once in
    thousands of steps. Both loops start with the GPU idle and end when it is done.
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    times, wall = defaultdict(float), 0.0

    def profiled(run, *args):
        nonlocal wall
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            result = run(*args)
            synchronize(loop.device)
            wall += time.perf_counter() - start
        tally(prof, on_gpu, times)
        return result

    if isinstance(loop, BareLoop):
        profiled(loop.run, steps)
        return times, wall
    runner, run_steps = loop.runner, loop.runner._run_steps
    runner._run_steps = lambda *args: profiled(run_steps, *args)
    try:
        loop.run(steps)
    finally:
        del runner._run_steps
    return times, wall


def tally(prof, on_gpu: bool, times: dict) -> None:
    """Add each kernel's (GPU) or op's (CPU) self time to `times`, by category and name."""
    from torch.autograd import DeviceType

    for event in prof.events():
        if on_gpu and event.device_type == DeviceType.CPU:
            continue  # a CPU op's self device time is its kernels', which are events of their own
        self_time = event.self_device_time_total if on_gpu else event.self_cpu_time_total
        if self_time > 0:
            label = "optimizer" if not on_gpu and in_optimizer_step(event) else category(event.name)
            times[label, event.name] += self_time


def main() -> None:
    command = parser(__doc__, one_loop=True)
    command.add_argument("--bare", action="store_true", help="profile train_loop.py's bare PyTorch loop instead")
    args = command.parse_args()
    on_gpu = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as tmp:
        loop = (BareLoop if args.bare else LmplayLoop)(args, Path(tmp))
        loop.run(args.warmup)
        times, wall = profile_steps(loop, args.steps, on_gpu)
    total = sum(times.values())
    by_category = defaultdict(float)
    for (label, _), us in times.items():
        by_category[label] += us
    what = "kernel" if on_gpu else "op"
    shown = [o for o in overrides(args) if not o.startswith("max_steps=")]  # the loop runs as long as asked
    print(f"config: {' '.join(shown)}  ({'the bare loop' if args.bare else 'lmplay'}: {args.steps} "
          f"profiled steps after {args.warmup}; "
          f"{machine(args.device)})")
    print(f"wall {wall / args.steps * 1e3:.1f} ms a step; {what} time {total / args.steps / 1e3:.1f} ms a step"
          + (f" (GPU busy {total / 1e6 / wall:.0%})" if on_gpu else ""))
    for label, us in sorted(by_category.items(), key=lambda kv: -kv[1]):
        print(f"  {label:<10} {us / args.steps / 1e3:8.2f} ms  {us / total:6.1%}")
    print(f"largest {what}s:")
    for (label, name), us in sorted(times.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {us / total:6.1%}  {label:<10} {name[:110]}")


if __name__ == "__main__":
    main()
