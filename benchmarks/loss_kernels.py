"""The compiled output loss alone: ways of leaving a padded vocabulary's columns out, timed side by side.

With `vocab_multiple=64` the output layer computes a few columns no token uses, and the loss must leave
them out. Compiled, the loss is memory-bound: its floor is reading the bf16 logits once forward (online
softmax), then reading them again and writing their gradient backward. This times forward + backward of
each variant on the same random logits and prints milliseconds (forward + backward, and forward alone)
and the share of that floor reached:

- `slice`: cross-entropy and accuracy over `logits[:, :vocab]` (lmplay's way on a CPU, and on a GPU
  until 2026-11-26);
- `mask`: the padding columns set to -inf instead, so every kernel runs over the whole aligned row
  (`lmplay.model.mask_padding`, what the models' loss_terms do on a GPU now); the same loss and gradient;
- `full`: the padding left in the softmax (nanoGPT's way: a different loss, for reference);
- `slice_noacc`: `slice` without the accuracy's max, to show what the accuracy costs;
- `mask_lse`: `mask` as an autograd function that saves each row's log-sum-exp, so that its backward is
  one pointwise pass (softmax minus one-hot) instead of inductor's log_softmax backward reduction.

    python benchmarks/loss_kernels.py --device cuda --rows 65536
    python benchmarks/loss_kernels.py --device cuda --rows 65536 --option coordinate_descent_tuning=true
"""

import argparse
import time

import torch
import torch.nn.functional as F
import yaml

from lmplay.data.batch import IGNORE_INDEX
from lmplay.model import mask_padding, top1_correct
from train_loop import sync


def slice_loss(logits, targets, vocab):
    real = logits[:, :vocab]
    return F.cross_entropy(real.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"), \
        top1_correct(real.detach(), targets)


def mask_loss(logits, targets, vocab):
    masked = mask_padding(logits.float(), vocab)
    return F.cross_entropy(masked, targets, ignore_index=IGNORE_INDEX, reduction="sum"), \
        top1_correct(masked.detach(), targets)


def full_loss(logits, targets, vocab):
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"), \
        top1_correct(logits.detach(), targets)


def slice_noacc_loss(logits, targets, vocab):
    real = logits[:, :vocab]
    return F.cross_entropy(real.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum"), logits.new_zeros(())


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
    return MaskedCrossEntropy.apply(logits, targets, vocab), top1_correct(mask_padding(logits.detach(), vocab), targets)


VARIANTS = {"slice": slice_loss, "mask": mask_loss, "full": full_loss, "slice_noacc": slice_noacc_loss,
            "mask_lse": mask_lse_loss}


def mean_seconds(once, repeats: int, device: torch.device):
    """Mean seconds of `once()` after 3 warm-up calls, and its last result."""
    for _ in range(3):
        once()
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = once()
    sync(device)
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


def same_gradient(grad: torch.Tensor, reference: torch.Tensor, vocab: int) -> bool:
    """Equal on the real columns up to bf16 rounding (one unit in the last place where kernels sum in another
    order), a few thousand rows at a time (a whole fp32 copy would not fit beside the rest)."""
    return all(torch.allclose(g[:, :vocab].float(), r.float(), rtol=2 ** -7, atol=1e-6)
               for g, r in zip(grad.split(4096), reference.split(4096)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=2048, help="tokens: mini-batch x context")
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--padded", type=int, default=50304)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="an inductor option for torch.compile, as lmplay's compile_options (repeatable)")
    args = parser.parse_args()
    options = {key: yaml.safe_load(value) for key, value in (option.split("=", 1) for option in args.option)}
    device = torch.device(args.device)
    torch.manual_seed(0)
    logits = (torch.randn(args.rows, args.padded, device=device) * 2).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, args.vocab, (args.rows,), device=device)
    targets[::17] = IGNORE_INDEX
    floor_bytes = 3 * logits.numel() * logits.element_size()
    where = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{args.rows} rows x {args.padded} columns ({args.vocab} real), bf16; torch {torch.__version__}, {where}"
          + (f"; inductor options {options}" if options else ""))
    reference = None
    for name in args.variants:
        compiled = torch.compile(VARIANTS[name], options=options or None)
        seconds, forward, loss, grad = time_variant(compiled, logits, targets, args.vocab, args.repeats)
        same = ""
        if reference is None:
            reference = (loss, grad[:, :args.vocab].clone())
        elif name != "full":
            equal = torch.allclose(loss, reference[0], rtol=1e-4) and same_gradient(grad, reference[1], args.vocab)
            same = "  same loss and gradient as the first" if equal else "  DIFFERS from the first"
        print(f"{name:12s} {seconds * 1e3:8.2f} ms  {floor_bytes / seconds / 1e9:7.0f} GB/s of the floor's "
              f"traffic; forward alone {forward * 1e3:.2f} ms, {floor_bytes / 3 / forward / 1e9:.0f} GB/s{same}",
              flush=True)


if __name__ == "__main__":
    main()
