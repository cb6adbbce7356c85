"""lmplay's training loop vs a bare PyTorch loop on the same model, batches, optimizer, device and dtype.

Each measurement runs in its own subprocess (so peak memory is per variant), alternating
lmplay, bare, lmplay, bare, ... and the medians are compared. Targets: speed ratio >= 0.97,
peak memory ratio <= 1.15.

    python benchmarks/train_loop.py --exp test_runner --steps 60
    python benchmarks/train_loop.py --exp gpt2ish --tokenizer bytes --steps 6 --context-len 256
    python benchmarks/train_loop.py --exp gpt2ish --device cuda --amp --compile --steps 50
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]


def overrides(args) -> list[str]:
    out = [f"exp={args.exp}", f"device={args.device}", f"max_steps={args.steps + args.warmup}",
           f"amp={str(args.amp).lower()}", f"compile={str(args.compile).lower()}"]
    for key in ("tokenizer", "context_len", "batch_size", "mini_batch_size"):
        value = getattr(args, key)
        if value is not None:
            out.append(f"{key}={value}")
    return out + args.overrides


def build_runner(args, run_dir: Path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_class
    from omegaconf import open_dict

    from lmplay.cli import CONF_DIR
    from lmplay.runner import LMRunnerBase

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=overrides(args), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    runner = LMRunnerBase(cfg, run_dir, get_class(cfg.model._target_))
    runner.setup(None)
    return runner


def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory(device) -> float:
    """Peak bytes: CUDA allocator peak on a GPU, the process's max RSS on a CPU."""
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_lmplay(args, run_dir: Path) -> dict:
    """The real path: runner.train() with curriculum, accumulation, stats, TensorBoard and checkpoints as configured.

    Timed over the training loop itself: the wall-clock windows between log points (every step by
    default) cover everything the loop does, periodic validation and checkpoints included, but not the
    one-off start and end of a run (first-stage set-up, the final validation and save), which a real
    run spreads over thousands of steps.
    """
    runner = build_runner(args, run_dir)
    runner.cfg.max_steps = args.warmup + args.steps
    runner.train()
    records = runner.stats.records["train"]
    timed = [(b["tokens"] - a["tokens"], b["tokens_per_second"]) for a, b in zip(records, records[1:])
             if b["step"] > args.warmup]
    seconds = sum(tokens / rate for tokens, rate in timed)
    return {"tokens_per_second": sum(tokens for tokens, _ in timed) / seconds,
            "peak_memory": peak_memory(runner.device)}


def run_bare(args, run_dir: Path) -> dict:
    """What a researcher would write by hand: same model class and init, same batches, fused/plain AdamW."""
    import torch
    import torch.nn.functional as F

    from lmplay.data.batch import IGNORE_INDEX

    runner = build_runner(args, run_dir)  # only to get the same model, batches and settings
    model, device, settings = runner.model, runner.device, runner.runner_c.settings
    batches = [runner.curriculum.next_batch(settings.batch_size, True) for _ in range(args.warmup + args.steps)]
    optimizer = runner.optimizer_c.optimizer
    autocast = runner.autocast
    del runner

    def step(batch):
        total = batch.num_tokens
        for mini in batch.split(settings.mini_batch_size):
            x, y = mini.inputs.to(device, non_blocking=True), mini.targets.to(device, non_blocking=True)
            with autocast():
                logits = model(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1),
                                       ignore_index=IGNORE_INDEX, reduction="sum") / total
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


    for batch in batches[: args.warmup]:
        step(batch)
    sync(device)
    start = time.perf_counter()
    tokens = 0
    for batch in batches[args.warmup:]:
        step(batch)
        tokens += batch.num_tokens
    sync(device)
    elapsed = time.perf_counter() - start
    return {"tokens_per_second": tokens / elapsed, "peak_memory": peak_memory(device)}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default="test_runner")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer")
    parser.add_argument("--context-len", dest="context_len", type=int)
    parser.add_argument("--batch-size", dest="batch_size", type=int)
    parser.add_argument("--mini-batch-size", dest="mini_batch_size", type=int)
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--variant", choices=["lmplay", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. runner.save_interval=100000")
    return parser.parse_args(argv)


def measure(variant: str, argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--variant", variant, *argv], capture_output=True, text=True,
                          env={"TQDM_DISABLE": "1", **__import__("os").environ})
    if proc.returncode:
        raise SystemExit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse()
    if args.variant:
        with tempfile.TemporaryDirectory() as tmp:
            result = (run_lmplay if args.variant == "lmplay" else run_bare)(args, Path(tmp))
        print(json.dumps(result))
        return
    argv = sys.argv[1:]
    results = {"lmplay": [], "bare": []}
    for _ in range(args.pairs):
        for variant in ("lmplay", "bare"):
            results[variant].append(measure(variant, argv))
    speed = {v: statistics.median(r["tokens_per_second"] for r in rs) for v, rs in results.items()}
    memory = {v: statistics.median(r["peak_memory"] for r in rs) for v, rs in results.items()}
    print(f"config: {' '.join(overrides(args))}  ({args.pairs} alternating pairs, {args.steps} timed steps each)")
    print(f"tokens/s     lmplay {speed['lmplay']:,.0f}   bare {speed['bare']:,.0f}   "
          f"ratio {speed['lmplay'] / speed['bare']:.3f}  (target >= 0.97)")
    print(f"peak memory  lmplay {memory['lmplay'] / 2**20:,.0f} MiB   bare {memory['bare'] / 2**20:,.0f} MiB   "
          f"ratio {memory['lmplay'] / memory['bare']:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
