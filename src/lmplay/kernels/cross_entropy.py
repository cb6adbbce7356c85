"""The output loss as two Triton kernels: cross-entropy, its gradient and the top-1 hits of a (padded) vocabulary.

The loss is memory-bound: its floor is reading the bf16 logits once forward and once more backward, writing
their gradient. One forward pass per row keeps a running max, sum of exponentials (an online softmax) and argmax,
and saves the row's log-sum-exp, so that the backward is one pointwise pass: softmax minus one-hot. Logits stay
in their own dtype in memory (never an fp32 copy); the arithmetic is fp32. Columns past `vocab` (vocab_multiple's
padding) get no probability and no gradient; rows whose target is IGNORE_INDEX count nothing. On an H100, 65,536
rows of GPT-2's padded 50,304 took 7.49 ms forward and backward, at 2,640 GB/s of the floor's traffic, against
12.29 ms (1,610 GB/s) for compiled PyTorch's loss and accuracy (benchmarks/loss_kernels.py).

Triton compiles them for GPUs (CUDA and ROCm builds of torch), once for each vocabulary width (a constant to
them, as in Unsloth's kernels); its interpreter runs them on a CPU, for tests, with TRITON_INTERPRET=1 set before
triton is imported.
"""

import os

import torch
import triton
import triton.language as tl

from lmplay.data.batch import IGNORE_INDEX

# The forward's columns a program reads at a time and its warps, timed on its first call for each vocabulary width
# (a second or two); GPT-2's 50,304 columns are 4 to 25 blocks a row. Triton's interpreter has no GPU to time
# them on: one. The backward is never tuned: tuning reruns a kernel on the same arguments, and compiled, the
# backward writes over its input (the first step of every run got a gradient computed from a gradient).
CONFIGS = [triton.Config({"BLOCK": block}, num_warps=warps)
           for block, warps in ((4096, 8), (2048, 4), (8192, 8), (8192, 16), (16384, 16))]
if os.environ.get("TRITON_INTERPRET") == "1":
    CONFIGS = CONFIGS[:1]
BACKWARD_BLOCK, BACKWARD_WARPS = 4096, 8


@triton.autotune(CONFIGS, key=["vocab"])
@triton.jit
def _cross_entropy_forward_kernel(logits, targets, losses, lses, hits, row_stride, ignore_index, vocab: tl.constexpr,
                                  BLOCK: tl.constexpr, TIES: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    row_start = logits + row * row_stride
    target = tl.load(targets + row)
    real = target != ignore_index
    running_max = -float("inf")
    running_sum = 0.0
    argmax = 0
    for start in tl.range(0, vocab, BLOCK):
        columns = start + tl.arange(0, BLOCK)
        x = tl.load(row_start + columns, mask=columns < vocab, other=-float("inf")).to(tl.float32)
        block_max, block_argmax = tl.max(x, 0, return_indices=True)  # the first index of the max, as torch's argmax
        new_max = tl.maximum(running_max, block_max)
        shift = tl.where(new_max == -float("inf"), 0.0, new_max)  # a block of -inf alone: exp(-inf - -inf) is NaN
        running_sum = running_sum * tl.exp(running_max - shift) + tl.sum(tl.exp(x - shift), 0)
        argmax = tl.where(block_max > running_max, start + block_argmax, argmax)  # ties keep the earlier index
        running_max = new_max
    lse = running_max + tl.log(running_sum)
    in_range = real & (target >= 0) & (target < vocab)  # a target outside the vocabulary: an infinite loss
    target_logit = tl.load(row_start + tl.where(in_range, target, 0), mask=in_range, other=-float("inf"))
    target_logit = target_logit.to(tl.float32)
    hit = (argmax == target) if TIES else (target_logit >= running_max)
    loss = (running_max - target_logit) + tl.log(running_sum)  # not lse - target: large logits round less
    tl.store(losses + row, tl.where(real, loss, 0.0))
    tl.store(hits + row, (real & hit).to(tl.int32))
    tl.store(lses + row, lse)


@triton.jit
def _cross_entropy_backward_kernel(logits, targets, lses, loss_grads, grads, row_stride, ignore_index,
                                   columns_total: tl.constexpr, vocab: tl.constexpr, BLOCK: tl.constexpr):
    """`grads` may be `logits` itself: each block is read before its gradient is written over it."""
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(targets + row)
    scale = tl.where(target != ignore_index, tl.load(loss_grads + row), 0.0)
    lse = tl.load(lses + row)
    for start in tl.range(0, columns_total, BLOCK):
        columns = start + tl.arange(0, BLOCK)
        real = columns < vocab
        x = tl.load(logits + row * row_stride + columns, mask=real, other=-float("inf")).to(tl.float32)
        grad = (tl.exp(x - lse) - ((columns == target) & real).to(tl.float32)) * scale
        grad = tl.where(real, grad, 0.0)  # the padding: none, also for a NaN row or a target among its columns
        tl.store(grads + row * row_stride + columns, grad.to(grads.dtype.element_ty), mask=columns < columns_total)


@torch.library.custom_op("lmplay::cross_entropy_forward", mutates_args=())
def _forward(logits: torch.Tensor, targets: torch.Tensor, vocab: int, ties: bool,
             overwrite: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = logits.size(0)
    losses = torch.empty(rows, dtype=torch.float32, device=logits.device)
    lses, hits = torch.empty_like(losses), torch.empty(rows, dtype=torch.int32, device=logits.device)
    if rows:
        _cross_entropy_forward_kernel[(rows,)](logits, targets, losses, lses, hits, logits.stride(0),
                                               IGNORE_INDEX, vocab=vocab, TIES=ties)
    return losses, hits, lses


@_forward.register_fake
def _(logits, targets, vocab, ties, overwrite):
    rows = logits.size(0)
    return (logits.new_empty(rows, dtype=torch.float32), logits.new_empty(rows, dtype=torch.int32),
            logits.new_empty(rows, dtype=torch.float32))


def _launch_backward(loss_grads, logits, targets, lses, vocab, grads) -> None:
    if logits.size(0):
        _cross_entropy_backward_kernel[(logits.size(0),)](logits, targets, lses, loss_grads.contiguous(), grads,
                                                          logits.stride(0), IGNORE_INDEX,
                                                          columns_total=logits.size(1), vocab=vocab,
                                                          BLOCK=BACKWARD_BLOCK, num_warps=BACKWARD_WARPS)


@torch.library.custom_op("lmplay::cross_entropy_backward", mutates_args=())
def _backward(loss_grads: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, lses: torch.Tensor,
              vocab: int) -> torch.Tensor:
    grads = torch.empty_like(logits)
    _launch_backward(loss_grads, logits, targets, lses, vocab, grads)
    return grads


@_backward.register_fake
def _(loss_grads, logits, targets, lses, vocab):
    return torch.empty_like(logits)


@torch.library.custom_op("lmplay::cross_entropy_gradient_over_logits", mutates_args=("logits",))
def _gradient_over_logits(loss_grads: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, lses: torch.Tensor,
                          vocab: int) -> None:
    _launch_backward(loss_grads, logits, targets, lses, vocab, logits)


def _setup_context(ctx, inputs, output) -> None:
    logits, targets, vocab, _, overwrite = inputs
    ctx.save_for_backward(logits, targets, output[2])
    ctx.vocab, ctx.overwrite = vocab, overwrite


def _loss_backward(ctx, loss_grads, hits_grads, lse_grads):
    """With `overwrite` and compiled, the gradient is written over the logits: one buffer of their size, not two (as
    inductor's own loss reuses it; with a second, lmplay's peak memory was 1.35x the bare loop's on an H100).
    Eager, or without `overwrite`, the gradient gets a buffer of its own."""
    logits, targets, lses = ctx.saved_tensors
    if not (ctx.overwrite and torch.compiler.is_compiling()):
        return _backward(loss_grads, logits, targets, lses, ctx.vocab), None, None, None, None
    _gradient_over_logits(loss_grads, logits, targets, lses, ctx.vocab)
    return logits, None, None, None, None


_forward.register_autograd(_loss_backward, setup_context=_setup_context)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, vocab: int, ties: bool,
                  overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the first `vocab` columns of `logits` [rows, columns] and how many real targets
    are their row's argmax (`ties`: the first index of a tied max, as torch's argmax; else a target tying the max
    counts, as `lmplay.loss.top1_correct`). The same loss, gradient and count as loss_terms' PyTorch path.

    `overwrite`: in a compiled graph, the backward writes the gradient over the logits, for callers that never
    read them again (loss_terms). Inductor copies them first where its graph returns them; logits from outside the
    graph (a graph break before the loss) are overwritten in place, and where another op saved them for its
    backward, autograd refuses them as changed. No double backward: its second backward has no formula."""
    logits = logits.contiguous()  # the kernels step through rows of one stride, the gradient's too
    losses, hits, _ = _forward(logits, targets.contiguous(), vocab, ties, overwrite)
    return losses.sum(), hits.sum()
