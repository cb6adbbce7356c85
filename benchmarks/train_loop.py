"""lmplay's training loop vs a bare PyTorch loop on the same model, batches, optimizer, device and dtype.

Speed: both loops run in one process and take turns every --chunk steps, so the load of a shared
machine falls on both alike; this is done twice, in fresh processes, once with each loop's model built
first (the order alone moved the ratio ~5% on a CPU). lmplay trains in one runner.train() call and the
bare loop's turns run inside it, between two of its steps; both are timed by the same wall clock, so
everything lmplay does between its steps counts (batching, records, stats.json and TensorBoard, and the
validations and checkpoints of its cadence, where they fall in a turn). The headline ratio is that of the
totals: a validation or checkpoint lands in one turn of many, and the median over turns (printed beside it,
which a burst of someone else's work cannot move) left it out. Memory: each loop alone in a fresh process,
for its own peak, once the speed runs have tokenized the data (a cold cache's tokenizing, in lmplay's
process only, read as 1.45x), and the part of it training added (on a CPU the whole peak is mostly the
imports and the runner both processes build). Targets: speed ratio >= 0.97, memory ratio <= 1.15. A plan of
several stages, or stages with their own batch settings, trains in the bare loop as in lmplay's: each stage
with its own batch_size, mini_batch_size, grad_clip and include_prompts.

    python benchmarks/train_loop.py --exp gpt2ish_mini --steps 40
    python benchmarks/train_loop.py --exp test_runner --steps 400 runner.validation_interval=10000 runner.save_interval=50000
    python benchmarks/train_loop.py --exp gpt2ish --tokenizer bytes --context-len 256 --batch-size 8 --steps 6
    python benchmarks/train_loop.py --exp gpt2ish --device cuda --amp --compile --steps 50 curriculum.batching=packed

With --compile, use packed batches (one shape) or a longer --warmup: rows batches vary in length, and
the one recompile to dynamic shapes would otherwise land in a timed turn. The bare loop does what the run's
settings ask of a step: it clips gradients at grad_clip and compiles with compile_options; fp16 (a
GradScaler) is refused.
"""

import argparse
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from lmplay.device import synchronize  # imports torch only when called


def overrides(args) -> list[str]:
    out = [f"exp={args.exp}", f"device={args.device}", f"max_steps={args.steps + args.warmup + 1}",  # + 1: see take_turns
           f"amp={str(args.amp).lower()}", f"compile={str(args.compile).lower()}"]
    for key in ("tokenizer", "context_len", "batch_size", "mini_batch_size"):
        value = getattr(args, key)
        if value is not None:
            out.append(f"{key}={value}")
    return out + args.overrides


def lmplay_runner(args, run_dir: Path):
    from hydra.errors import HydraException

    from lmplay.errors import LmplayError
    from lmplay.runner.build import runner_from_overrides

    try:  # in a new temporary dir: nothing to resume
        runner = runner_from_overrides(overrides(args), run_dir, set())
        if runner.cfg.amp and runner.cfg.amp_dtype == "fp16":
            raise SystemExit("error: amp_dtype=fp16 trains through a GradScaler, which the bare loop has not; "
                             "benchmark bf16 (the default)")
        runner.setup(None)
    except (LmplayError, HydraException) as e:  # a mistake in the command: one line, as `lmplay.train` says it
        raise SystemExit(f"error: {' '.join(str(e).split())[:500]}") from None
    return runner


def machine(device: str) -> str:
    """What the numbers were measured on, for the results table."""
    import torch
    where = torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    return f"torch {torch.__version__}, {where}"


def peak_memory(device) -> float:
    """Peak bytes: CUDA allocator peak on a GPU, the process's max RSS on a CPU."""
    import torch
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def file_backed_memory(device) -> float | None:
    """On a CPU under Linux, the bytes of the process's memory that are files read in (RssFile): mostly the
    libraries' code, paged in as a path first runs. Part of the peak, but no tensor: lmplay's validations and
    checkpoints page in code the bare loop never runs. None where it cannot be told (a GPU's peak has none)."""
    if device.type != "cpu":
        return None
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kib = [line.split()[1] for line in status.splitlines() if line.startswith("RssFile:")]
    return int(kib[0]) * 1024 if kib else None


class LmplayLoop:
    """The real path: runner.train() with curriculum, accumulation, stats, TensorBoard and checkpoints as configured."""

    def __init__(self, args, run_dir: Path) -> None:
        self.runner = lmplay_runner(args, run_dir)
        self.device = self.runner.device

    def run(self, steps: int) -> None:
        """Train `steps` more steps (untimed: for a profile, or for the peak memory)."""
        self.runner.cfg.max_steps = self.runner.runner_c.progress["step"] + steps
        with contextlib.redirect_stdout(io.StringIO()):
            self.runner.train()

    def take_turns(self, bare: "BareLoop", warmup: int, steps: int, chunk: int) -> list[dict[str, tuple[int, float]]]:
        """One train() call of warmup + steps steps (and one more, untimed: the run's closing validation and
        save are not part of a step); from the warm-up's end on, the bare loop trains `chunk` steps at each
        turn, between two of lmplay's. Returns each turn's {loop: (tokens, seconds)}."""
        runner, progress = self.runner, self.runner.runner_c.progress
        start = progress["step"] + warmup
        ends = set(range(start, start + steps + 1, chunk)) | {start + steps}
        turns, mark = [], {}
        train_step = runner.train_step

        def timed_train_step(*step_args, **step_kwargs):
            if progress["step"] in ends:
                synchronize(self.device)
                now = time.perf_counter()
                if mark:  # lmplay's turn ends as its next step starts; the bare loop's turn follows
                    turns.append({"lmplay": (progress["tokens"] - mark["tokens"], now - mark["time"]),
                                  "bare": bare.run(progress["step"] - mark["step"])})
                else:  # the bare loop's warm-up: its compiles and caches
                    bare.run(warmup)
                if progress["step"] < start + steps:
                    synchronize(self.device)
                    mark.update(time=time.perf_counter(), tokens=progress["tokens"], step=progress["step"])
            return train_step(*step_args, **step_kwargs)

        runner.train_step = timed_train_step
        try:
            self.run(warmup + steps + 1)
        finally:
            del runner.train_step
        return turns


class BareLoop:
    """What a researcher would write by hand: same model class and init, same optimizer and param groups,
    the same batches drawn from the same curriculum inside the loop (so the ratio is the runner's cost;
    the data side has its own benchmark, data_pipeline.py)."""

    def __init__(self, args, run_dir: Path) -> None:
        import torch

        from lmplay.runner.compiling import torch_compiled

        runner = lmplay_runner(args, run_dir)  # only to get the same model, optimizer, batches and settings
        self.runner, self.model, self.device = runner, runner.model, runner.device
        self.clip_grad_norm = torch.nn.utils.clip_grad_norm_
        self.loss_sum = torch_compiled(self.summed_loss, runner.cfg) or self.summed_loss  # as lmplay compiles it
        self.curriculum, self.optimizer, self.autocast = runner.curriculum, runner.optimizer_c.optimizer, runner.autocast
        self.settings = self.stage_settings()

    def stage_settings(self):
        """The current stage's settings: the run's under the stage's overrides, as lmplay's loop trains it with."""
        return self.runner.stage_plan(self.curriculum.stages[self.curriculum.stage_index]).settings

    def summed_loss(self, x, y):
        """Model and loss in one function, as nanoGPT's forward returns its loss: compiled together, the
        logits are never stored in fp32."""
        import torch.nn.functional as F

        from lmplay.data.batch import IGNORE_INDEX

        logits = self.model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1), ignore_index=IGNORE_INDEX,
                               reduction="sum")

    def step(self) -> int:
        batch = self.curriculum.next_batch(self.settings.batch_size, self.settings.include_prompts)
        if batch is None and self.curriculum.advance_stage():  # the stage ended: on to the next, as lmplay does
            self.settings = self.stage_settings()
            batch = self.curriculum.next_batch(self.settings.batch_size, self.settings.include_prompts)
        total = batch.num_tokens
        for mini in batch.split(self.settings.mini_batch_size):
            x = mini.inputs.to(self.device, non_blocking=True)
            y = mini.targets.to(self.device, non_blocking=True)
            with self.autocast():
                loss = self.loss_sum(x, y) / total
            loss.backward()
        if self.settings.grad_clip:
            self.clip_grad_norm(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    def run(self, steps: int) -> tuple[int, float]:
        synchronize(self.device)
        start = time.perf_counter()
        tokens = sum(self.step() for _ in range(steps))
        synchronize(self.device)
        return tokens, time.perf_counter() - start


def chunk_steps(args, settings) -> int:
    """--chunk, or else the longest validation/checkpoint period (in steps) that fits in --steps, else 5:
    each of lmplay's turns then carries the same share of that work."""
    if args.chunk is not None:
        return min(args.chunk, args.steps)
    periods = [-(-interval // settings.batch_size) for interval in (settings.validation_interval,
                                                                   settings.save_interval)]
    return min(max([p for p in periods if p <= args.steps // 2], default=5), args.steps)


def measure_speed(args, first: str) -> dict:
    """Both loops in this process, taking turns (LmplayLoop.take_turns), so that whatever else the machine is
    doing slows both alike; the first --warmup steps of each are not timed. `first` is the loop whose model
    is built first: that alone moved the ratio by ~5% on a CPU (memory placement), so main() measures both
    orders."""
    with tempfile.TemporaryDirectory() as tmp:
        build = {"lmplay": LmplayLoop, "bare": BareLoop}
        loops = {name: build[name](args, Path(tmp, name)) for name in (first, *(set(build) - {first}))}
        chunk = chunk_steps(args, loops["bare"].settings)
        turns = loops["lmplay"].take_turns(loops["bare"], args.warmup, args.steps, chunk)
    totals = {name: [sum(t[name][0] for t in turns), sum(t[name][1] for t in turns)] for name in loops}
    turn_ratios = [(t["lmplay"][0] / t["lmplay"][1]) / (t["bare"][0] / t["bare"][1]) for t in turns]
    return {"totals": totals, "turn_ratios": turn_ratios, "chunk": chunk}


def peak_memory_run(variant: str, args) -> dict:
    """One variant alone in this (fresh) process, for its peak memory, and the peak before its first step: both
    processes build lmplay's runner (the bare loop takes its model and batches from it), and on a CPU the ~300 MiB
    of torch, Hydra and datasets they share made the whole peaks' ratio ~1 whatever the loops added."""
    with tempfile.TemporaryDirectory() as tmp:
        loop = (LmplayLoop if variant == "lmplay" else BareLoop)(args, Path(tmp))
        before, files_before = peak_memory(loop.device), file_backed_memory(loop.device)
        loop.run(args.warmup + 2)
        files_after = file_backed_memory(loop.device)
        return {"peak_memory": peak_memory(loop.device), "before_training": before,
                "files_read_in": None if files_before is None else files_after - files_before}


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low`; anything else is argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value
    return parse


def torch_device(text: str) -> str:
    """An argparse type: a device this machine has, by lmplay's own rule (`device=`; auto picks one)."""
    from lmplay.device import pick_device
    from lmplay.errors import ConfigError

    try:
        return str(pick_device(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).replace("device=", "--device ")) from None


def parser(description: str = __doc__, one_loop: bool = False) -> argparse.ArgumentParser:
    """The command line of this script; profile_step.py (`one_loop`: it runs one loop, without turns) takes the same."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", default="test_runner")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokenizer")
    parser.add_argument("--context-len", dest="context_len", type=at_least(2))
    parser.add_argument("--batch-size", dest="batch_size", type=at_least(1))
    parser.add_argument("--mini-batch-size", dest="mini_batch_size", type=at_least(1))
    parser.add_argument("--amp", action="store_true")
    parser.add_argument("--compile", action="store_true")
    each = "" if one_loop else " of each loop"
    parser.add_argument("--steps", type=at_least(1), default=40, help=f"timed steps{each}")
    parser.add_argument("--warmup", type=at_least(0), default=3, help=f"untimed steps{each} first")
    if not one_loop:
        parser.add_argument("--chunk", type=at_least(1), help="steps per turn when the two loops alternate (default: "
                            "the longest validation or checkpoint period, in steps, within half of --steps, else 5)")
    parser.add_argument("--threads", type=at_least(1),
                        help="torch CPU threads (default: torch's); 1 is steadier on a busy machine")
    parser.add_argument("--memory-of", choices=["lmplay", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--speed-first", choices=["lmplay", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. runner.save_interval=100000")
    return parser


def subprocess_json(argv: list[str]) -> dict:
    """Run this script with `argv` in a fresh process; its last stdout line is JSON."""
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode:
        said = proc.stderr.strip().splitlines()
        if said and said[-1].startswith("error: "):  # a mistake in the command: its one line
            raise SystemExit(said[-1])
        raise SystemExit(f"the {'memory' if '--memory-of' in argv else 'speed'} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parser().parse_args()
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps(peak_memory_run(args.memory_of, args)))
        return
    if args.speed_first:
        print(json.dumps(measure_speed(args, args.speed_first)))
        return
    argv = sys.argv[1:]
    runs = [subprocess_json(["--speed-first", first, *argv]) for first in ("lmplay", "bare")]
    memory = {v: subprocess_json(["--memory-of", v, *argv]) for v in ("lmplay", "bare")}
    peak = {v: memory[v]["peak_memory"] for v in memory}
    added = {v: max(memory[v]["peak_memory"] - memory[v]["before_training"], 1) for v in memory}
    ratios = [r for run in runs for r in run["turn_ratios"]]
    rate = {v: sum(run["totals"][v][0] for run in runs) / sum(run["totals"][v][1] for run in runs)
            for v in ("lmplay", "bare")}
    by_order = "; ".join(f"{first}'s model built first {statistics.median(run['turn_ratios']):.3f}"
                         for first, run in zip(("lmplay", "bare"), runs))
    chunk, last = runs[0]["chunk"], args.steps % runs[0]["chunk"]
    print(f"config: {' '.join(overrides(args))}  (2 runs x {args.steps} timed steps of each loop, turns of "
          f"{chunk} step{'s' * (chunk > 1)}{f', the last of {last}' if last else ''}; {machine(args.device)})")
    print(f"tokens/s     lmplay {rate['lmplay']:,.0f}   bare {rate['bare']:,.0f}   "
          f"ratio {rate['lmplay'] / rate['bare']:.3f} of totals (target >= 0.97); "
          f"{statistics.median(ratios):.3f} median over {len(ratios)} turns; {by_order}")
    print(f"peak memory  lmplay {peak['lmplay'] / 2**20:,.0f} MiB   bare {peak['bare'] / 2**20:,.0f} MiB   "
          f"ratio {peak['lmplay'] / peak['bare']:.3f}  (target <= 1.15)")
    print(f"  of it, training's (the peak past the one before the first step): lmplay {added['lmplay'] / 2**20:,.1f} "
          f"MiB   bare {added['bare'] / 2**20:,.1f} MiB   ratio {added['lmplay'] / added['bare']:.3f}")
    if all(memory[v]["files_read_in"] is not None for v in memory):
        files = {v: memory[v]["files_read_in"] for v in memory}
        rest = {v: max(added[v] - files[v], 1) for v in memory}
        print(f"    of that, library code read in (file pages): lmplay {files['lmplay'] / 2**20:,.1f} MiB   bare "
              f"{files['bare'] / 2**20:,.1f} MiB; the rest: lmplay {rest['lmplay'] / 2**20:,.1f} MiB   bare "
              f"{rest['bare'] / 2**20:,.1f} MiB   ratio {rest['lmplay'] / rest['bare']:.3f}")


if __name__ == "__main__":
    main()
