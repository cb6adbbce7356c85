"""The start-of-run report: what trains where, the speed features on, notes on the batch's shape, and the
settings that differ from the defaults with where each came from (what a log must show to be read later)."""

from typing import TYPE_CHECKING

import torch

from lmplay.loss import triton_loss_runs_on
from lmplay.runner.compiling import compile_options
from lmplay.runner.components import RunnerSettings

if TYPE_CHECKING:
    from lmplay.runner.base import LMRunnerBase


def start_report(runner: "LMRunnerBase") -> str:
    """The lines a run starts with (after its data's): a log read later must say what trained where, and how."""
    lines = [(f"experiment {runner.exp_name}: {runner.model.size_text()}, tokenizer {runner.tokenizer.name} (vocab "
              f"{runner.tokenizer.vocab_size}), context {runner.context_len}, device {runner.device}{ranks(runner)}"),
             f"run dir {runner.run_dir.resolve()}"]
    if speed := speed_features(runner):
        lines.append(f"speed: {', '.join(speed)}")
    if runner.cfg.compile:
        lines += uneven_mini_batches(runner)
    if settings := runner.provenance.report():
        lines += ["settings that differ from the defaults, by where they came from (all: .hydra/config.yaml):",
                  *settings]
    return "\n".join(lines)


def ranks(runner: "LMRunnerBase") -> str:
    """How many processes train (a DDP run's logs otherwise read as one process's), and a typed cuda:N that
    torchrun's one GPU a rank overrode."""
    if not runner.world.distributed:
        return ""
    import torch.distributed as dist

    typed = str(runner.cfg.device)
    ignored = f"; device={typed} is not used" if typed.startswith("cuda:") else ""
    each = "; one GPU each, cuda:LOCAL_RANK" if runner.device.type == "cuda" else ""
    return f", {runner.world.size} ranks (DDP over {dist.get_backend()}{each}{ignored})"


def speed_features(runner: "LMRunnerBase") -> list[str]:
    """What is on of amp, compile, fused optimizer, TF32, vocabulary padding and the Triton loss."""
    optimizer, padded = runner.optimizer_c.optimizer, runner.model_c.args["vocab_size"]  # a resume keeps its own
    vocab, options = runner.tokenizer.vocab_size, ", ".join(f"{k}={v}" for k, v in compile_options(runner.cfg).items())
    features = {
        f"{'bf16' if runner.amp_dtype == torch.bfloat16 else 'fp16 + GradScaler'} autocast": runner.amp_dtype,
        f"torch.compile{f' with {options}' if options else ''} (the first steps compile: about a minute "
        "on a GPU)": runner.cfg.compile,
        f"fused {type(optimizer).__name__}": optimizer.defaults.get("fused"),
        "TF32 matmuls": runner.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
        f"vocabulary padded {vocab} -> {padded}": padded != vocab,
        "the loss in Triton kernels": runner.cfg.fused_loss and triton_loss_runs_on(runner.device),
    }
    return [name for name, on in features.items() if on]


def uneven_mini_batches(runner: "LMRunnerBase") -> list[str]:
    """The notes of uneven_mini_batch for the run's settings and for each stage's own (a stage's batch_size)."""
    run, notes = runner.runner_c.settings, {}
    for stage in runner.curriculum.stages:
        settings = runner.stage_plan(stage).settings
        sizes = (settings.batch_size, settings.mini_batch_size)
        if sizes not in notes:
            own = sizes != (run.batch_size, run.mini_batch_size)
            notes[sizes] = uneven_mini_batch(settings, runner.world.size, f"stage '{stage.name}': " if own else "")
    return [note for note in notes.values() if note]


def uneven_mini_batch(settings: RunnerSettings, world_size: int, where: str = "") -> str | None:
    """A note where mini_batch_size does not divide a rank's share of the batch: compile=true fills the shorter
    last mini-batch up (LMRunnerBase.one_shape), computing samples that count nothing."""
    share, mini = settings.batch_size // world_size, settings.mini_batch_size
    if share % mini == 0 or mini > share:
        return None
    fits = max(m for m in range(1, mini + 1) if share % m == 0)
    step = mini * world_size  # batch sizes every rank's share of divides by mini_batch_size
    near = [b for b in (settings.batch_size // step * step, (settings.batch_size // step + 1) * step) if b]
    fix = (f"mini_batch_size={fits} divides it" if 2 * fits >= mini else  # not 7 mini-batches of 1 for 3+3+1
           f"batch_size={' or '.join(map(str, near))} divides by it")
    return (f"note: {where}mini_batch_size={mini} does not divide the {share} samples a rank takes a step: each "
            f"step ends with a mini-batch of {share % mini}, which compile=true fills up to {mini} with samples "
            f"that count nothing (one shape, one compiled graph): {mini - share % mini} more a step; {fix}")
