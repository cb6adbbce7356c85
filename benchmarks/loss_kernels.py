"""The compiled output loss alone: ways of leaving a padded vocabulary's columns out, timed side by side.

With `vocab_multiple=64` the output layer computes a few columns no token uses, and the loss must leave
them out. Compiled, the loss is memory-bound: its floor is reading the bf16 logits once forward (online
softmax), then reading them again and writing their gradient backward. This times forward + backward of
each variant on the same random logits and prints milliseconds (forward + backward, and forward alone)
and the share of that floor reached:

- `slice`: cross-entropy and accuracy over `logits[:, :vocab]` (lmplay's way on a CPU, and on a GPU
  until 2026-11-26);
- `mask`: the padding columns set to -inf instead, so every kernel runs over the whole aligned row
  (`lmplay.loss.mask_padding`, what PyTorch's loss does on a GPU); the same loss and gradient;
- `full`: the padding left in the softmax (nanoGPT's way: a different loss, for reference);
- `slice_noacc`, `mask_noacc`: `slice` and `mask` without the accuracy, to show what it costs (the accuracy
  of these bf16 logits is an argmax, ties counted as the models count them under amp: until 2026-11-28 this
  benchmark timed fp32 logits' cheaper max comparison, which no amp run computes);
- `mask_lse`: `mask` as an autograd function that saves each row's log-sum-exp, so that its backward is
  one pointwise pass (softmax minus one-hot) instead of inductor's log_softmax backward reduction;
- `triton`: lmplay's Triton kernels (lmplay/kernels/cross_entropy.py, the models' loss on a GPU with
  fused_loss=true): one online-softmax pass forward with the accuracy, one pointwise pass backward; here its
  gradient gets a buffer of its own (the same traffic as the models' compiled backward, which writes it over
  the logits: here that would change the logits every variant reads).

    python benchmarks/loss_kernels.py --device cuda --rows 65536
    python benchmarks/loss_kernels.py --device cuda --rows 65536 --option coordinate_descent_tuning=true
    python benchmarks/loss_kernels.py --device cuda --rows 65536 --backward-configs 2048x4 4096x8 8192x16

`--backward-configs BLOCKxWARPS...` times the Triton backward kernel alone for each block size (columns a
program steps over) and warp count, out of place, against the one the models run (BACKWARD_BLOCK x
BACKWARD_WARPS): the backward is never autotuned (written over the logits, a second run would read its own
output), so its configuration is chosen here, by hand.
"""

import argparse
import functools
import importlib.util
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "src")]  # this checkout's lmplay, as train_loop.py

from train_loop import at_least, torch_device

from lmplay.data.batch import IGNORE_INDEX
from lmplay.device import synchronize
from lmplay.loss import mask_padding, top1_correct


def accuracy(logits, targets):
    """As loss_terms counts it for bf16 logits (amp=true): an argmax, ties counted as argmax breaks them."""
    return top1_correct(logits.detach(), targets, ties=True)


def slice_loss(logits, targets, vocab):
    real = logits[:, :vocab]
    return F.cross_entropy(real.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"), accuracy(real, targets)


def mask_loss(logits, targets, vocab):
    masked = mask_padding(logits.float(), vocab)
    return F.cross_entropy(masked, targets, ignore_index=IGNORE_INDEX, reduction="sum"), accuracy(masked, targets)


def full_loss(logits, targets, vocab):
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"), \
        accuracy(logits, targets)


def slice_noacc_loss(logits, targets, vocab):
    real = logits[:, :vocab]
    return F.cross_entropy(real.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"), logits.new_zeros(())


def mask_noacc_loss(logits, targets, vocab):
    masked = mask_padding(logits.float(), vocab)
    return F.cross_entropy(masked, targets, ignore_index=IGNORE_INDEX, reduction="sum"), logits.new_zeros(())


class MaskedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy over the first `vocab` columns; the backward recomputes the softmax from the
    saved log-sum-exp."""

    @staticmethod
    def forward(ctx, logits, targets, vocab):
        x = mask_padding(logits.float(), vocab)
        lse = torch.logsumexp(x, -1)
        real = targets != IGNORE_INDEX
        index = targets.clamp(min=0)
        ctx.save_for_backward(logits, index, lse, real)
        ctx.vocab = vocab
        return torch.where(real, lse - x.gather(-1, index.unsqueeze(-1)).squeeze(-1), 0.0).sum()

    @staticmethod
    def backward(ctx, grad):
        logits, index, lse, real = ctx.saved_tensors
        x = mask_padding(logits.float(), ctx.vocab)
        one_hot = torch.arange(x.size(-1), device=x.device) == index.unsqueeze(-1)
        softmax_minus_target = torch.exp(x - lse.unsqueeze(-1)) - one_hot.float()
        return (softmax_minus_target * (real.float() * grad).unsqueeze(-1)).to(logits.dtype), None, None


def mask_lse_loss(logits, targets, vocab):
    return MaskedCrossEntropy.apply(logits, targets, vocab), accuracy(mask_padding(logits.detach(), vocab), targets)


def triton_loss(logits, targets, vocab):
    from lmplay.kernels.cross_entropy import cross_entropy

    return cross_entropy(logits, targets, vocab, ties=True)


VARIANTS = {"slice": slice_loss, "mask": mask_loss, "full": full_loss, "slice_noacc": slice_noacc_loss,
            "mask_noacc": mask_noacc_loss, "mask_lse": mask_lse_loss, "triton": triton_loss}


def mean_seconds(once, repeats: int, device: torch.device):
    """Mean seconds of `once()` after 3 warm-up calls, and its last result."""
    for _ in range(3):
        once()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = once()
    synchronize(device)
    return (time.perf_counter() - start) / repeats, result


def time_variant(fn, logits, targets, vocab, repeats: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Mean seconds of forward + backward and of forward alone; also the loss and the logits' gradient."""
    def forward_backward():
        logits.grad = None
        loss, _ = fn(logits, targets, vocab)
        loss.backward()
        return loss
    both, loss = mean_seconds(forward_backward, repeats, logits.device)
    grad = logits.grad
    forward, _ = mean_seconds(lambda: fn(logits, targets, vocab), repeats, logits.device)
    return both, forward, loss.detach(), grad


def matches_reference(loss: torch.Tensor, grad: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                      vocab: int) -> str:
    """How the loss and gradient compare with lmplay's loss computed in fp64: the padding left out of the softmax,
    no gradient on its columns. In chunks of rows (a whole fp64 copy would not fit). Leaving the padding in
    (`full`) moves the loss by ~7e-5 relative and the real columns' gradients by ~0.1%, under bf16's rounding:
    the padding columns' gradient is the sharp test, and the loss is held to 1e-5."""
    total, grad_ok, padding = 0.0, True, 0.0
    for x, g, t in zip(logits.detach().split(4096), grad.split(4096), targets.split(4096)):
        real = x[:, :vocab].double()
        total += F.cross_entropy(real, t, ignore_index=IGNORE_INDEX, reduction="sum").item()
        expected = torch.softmax(real, -1) - F.one_hot(t.clamp(min=0), vocab).double()
        expected[t == IGNORE_INDEX] = 0
        grad_ok &= torch.allclose(g[:, :vocab].double(), expected, rtol=2 ** -7, atol=1e-6)
        padding = max(padding, g[:, vocab:].abs().max().item() if g.size(1) > vocab else 0.0)
    loss_error = abs(loss.item() - total) / abs(total)
    if loss_error <= 1e-5 and grad_ok and padding == 0:
        return "  = lmplay's loss and gradient (fp64 reference)"
    return (f"  DIFFERS from lmplay's loss (fp64): loss off by {loss_error:.1e} relative, real columns' gradient "
            f"{'within' if grad_ok else 'outside'} bf16 rounding, padding gradient up to {padding:.1e}")


def backward_config(text: str) -> tuple[int, int]:
    block, _, warps = text.partition("x")
    if not (block.isdigit() and warps.isdigit() and int(block) & (int(block) - 1) == 0 < int(warps)):
        raise argparse.ArgumentTypeError(f"{text!r} is no BLOCKxWARPS with a power-of-two block, like 4096x8")
    return int(block), int(warps)


def time_backward_configs(logits, targets, vocab: int, configs: list[tuple[int, int]], repeats: int) -> None:
    """The backward kernel alone for each (block, warps), its gradient checked against the models' configuration's:
    milliseconds and the GB/s of its traffic (the logits read, their gradient written)."""
    from lmplay.kernels import cross_entropy as kernels

    _, _, lses = kernels._forward(logits.detach(), targets, vocab, True, False)
    loss_grads = torch.ones(logits.size(0), device=logits.device)
    x = logits.detach()

    def once(block: int, warps: int) -> torch.Tensor:
        grads = torch.empty_like(x)
        kernels._cross_entropy_backward_kernel[(x.size(0),)](x, targets, lses, loss_grads, grads, x.stride(0),
                                                             IGNORE_INDEX, columns_total=x.size(1), vocab=vocab,
                                                             BLOCK=block, num_warps=warps)
        return grads

    models = (kernels.BACKWARD_BLOCK, kernels.BACKWARD_WARPS)
    reference = once(*models)
    traffic = 2 * x.numel() * x.element_size()
    for block, warps in dict.fromkeys([models, *configs]):
        seconds, grads = mean_seconds(functools.partial(once, block, warps), repeats, x.device)
        same = "" if torch.equal(grads, reference) else "  GRADIENT DIFFERS from the models' configuration's"
        print(f"backward {block:5d} x {warps:2d} warps {seconds * 1e3:8.2f} ms  {traffic / seconds / 1e9:7.0f} GB/s"
              + (" (the models')" if (block, warps) == models else "") + same, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", type=torch_device, default="cpu")
    parser.add_argument("--rows", type=at_least(1), default=2048, help="tokens: mini-batch x context")
    parser.add_argument("--vocab", type=at_least(2), default=50257)
    parser.add_argument("--padded", type=at_least(2), default=50304, help="columns, --vocab or more")
    parser.add_argument("--repeats", type=at_least(1), default=10)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=[v for v in VARIANTS if v != "triton" or importlib.util.find_spec("triton")])
    parser.add_argument("--backward-configs", nargs="+", type=backward_config, metavar="BLOCKxWARPS",
                        help="time the Triton backward kernel alone in these configurations (and no variant)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an inductor option for torch.compile, as lmplay's compile_options (repeatable)")
    args = parser.parse_args()
    if args.padded < args.vocab:
        parser.error(f"--padded {args.padded} is below --vocab {args.vocab}: the padding adds columns")
    if bad := [o for o in args.option if not o.split("=", 1)[0] or "=" not in o]:
        parser.error(f"--option {bad[0]!r} is no KEY=VALUE")
    options = {key: yaml.safe_load(value) for key, value in (option.split("=", 1) for option in args.option)}
    if unknown := sorted(set(options) - set(torch._inductor.config.get_config_copy())):
        parser.error(f"--option {unknown[0]} is no inductor option (torch._inductor.config)")
    device = torch.device(args.device)
    torch.manual_seed(0)
    logits = (torch.randn(args.rows, args.padded, device=device) * 2).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.rows,), device=device)
    targets[::17] = IGNORE_INDEX
    floor_bytes = 3 * logits.numel() * logits.element_size()
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{args.rows} rows x {args.padded} columns ({args.vocab} real), bf16; torch {torch.__version__}, {where}"
          + (f"; inductor options {options}" if options else ""))
    if args.backward_configs and not importlib.util.find_spec("triton"):
        parser.error("--backward-configs times lmplay's Triton kernel: it needs Triton (a GPU build of torch)")
    if args.backward_configs:
        time_backward_configs(logits, targets, args.vocab, args.backward_configs, args.repeats)
        return
    for name in args.variants:
        try:
            compiled = torch.compile(VARIANTS[name], options=options or None)
        except RuntimeError as e:  # an option's type: "Unexpected type of attr max_autotune, got str should be bool"
            parser.error(f"--option: {str(e).splitlines()[0]}")
        seconds, forward, loss, grad = time_variant(compiled, logits, targets, args.vocab, args.repeats)
        check = matches_reference(loss, grad, logits, targets, args.vocab)
        print(f"{name:12s} {seconds * 1e3:8.2f} ms  {floor_bytes / seconds / 1e9:7.0f} GB/s of the floor's "
              f"traffic; forward alone {forward * 1e3:.2f} ms, {floor_bytes / 3 / forward / 1e9:.0f} GB/s{check}"
              + (" (as it should: nanoGPT's loss)" if name == "full" else ""), flush=True)


if __name__ == "__main__":
    main()
