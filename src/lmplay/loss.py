"""The next-token loss and top-1 accuracy every model trains with: summed cross-entropy over real targets,
over the tokenizer's columns of a vocabulary that may be padded past it (vocab_multiple).

On a GPU with Triton (every CUDA or ROCm build of torch) two kernels of lmplay's (lmplay/kernels) compute both
in one pass over the logits; elsewhere, or with `fused_loss=false`, PyTorch's cross-entropy does.
"""

import torch
import torch.nn.functional as F

from lmplay.data.batch import IGNORE_INDEX

try:  # a GPU build of torch brings Triton; a CPU one has none, and there the PyTorch loss runs
    from lmplay.kernels import cross_entropy as triton_kernels
except ImportError:
    triton_kernels = None


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, vocab: int,
                    fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and the number of correct top-1 predictions of `logits` (..., columns) for
    `targets` (...), IGNORE_INDEX left out. `fused`: with the Triton kernels where they run.

    Sums, not means: the runner divides by the tokens of the whole effective batch so that gradient accumulation
    equals one big batch. Under compile=true the Triton loss writes its gradient over `logits`: a loss_terms that
    reads them again after this call (a z-loss) fails to compile, and the runner says to train with fused_loss=false.
    """
    flat_logits, flat_targets = logits.reshape(-1, logits.size(-1)), targets.reshape(-1)
    ties = torch.finfo(logits.dtype).bits < 32  # computed in bf16 or fp16
    if fused and triton_loss_runs_on(logits.device):
        # compiled, the gradient is written over the logits (one buffer of their size, not two)
        return triton_kernels.cross_entropy(flat_logits, flat_targets, vocab, ties, overwrite=True)
    flat_logits = real_columns(flat_logits.float(), vocab)
    log_probs = flat_logits.log_softmax(-1)  # cross-entropy's own two steps, its per-target losses kept
    losses = F.nll_loss(log_probs, flat_targets, ignore_index=IGNORE_INDEX, reduction="none")
    if ties:  # detached: no autograd nodes
        return losses.sum(), top1_correct(flat_logits.detach(), flat_targets, ties)
    return losses.sum(), targets_at_max(losses.detach(), log_probs.detach(), flat_targets)


def triton_loss_runs_on(device: torch.device) -> bool:
    """Whether lmplay's Triton loss kernels run there: on a GPU, with Triton (CUDA and ROCm builds of torch)."""
    return device.type == "cuda" and triton_kernels is not None


def top1_correct(logits: torch.Tensor, targets: torch.Tensor, ties: bool = False) -> torch.Tensor:
    """How many real targets are their logits' argmax. Logits computed in fp32 hardly ever tie, and there `target
    logit >= max logit` counts the same hits 5-10x faster on a CPU than an argmax; a bf16 or fp16 model's logits
    (amp=true) do tie (`ties`): counted as hits, ties read ~1% more accuracy than the same model's in fp32."""
    real = targets != IGNORE_INDEX
    if ties:
        return ((logits.argmax(-1) == targets) & real).sum()
    target_logits = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return ((target_logits >= logits.amax(-1)) & real).sum()


def targets_at_max(losses: torch.Tensor, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """top1_correct's count for fp32 logits (`target >= max`), from what the loss computed already: a real
    target's loss is minus its log-probability, so it is at its row's max where its loss plus the row's largest
    log-probability is <= 0 (logits a rounding apart inside log_softmax count as tied, and ties as hits). Four ops
    new to the step where top1_correct runs seven: on a CPU each op a step has not run yet costs ~10 us (its code
    back in cache), together ~2% of test_runner's step (benchmarks/README.md)."""
    return (((losses + log_probs.amax(-1)) <= 0) & (targets != IGNORE_INDEX)).sum()


def real_columns(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits of a vocabulary padded past the tokenizer's `vocab` (vocab_multiple) with the padding left out
    of any softmax, max or loss taken over them.

    On a GPU the padding is masked, keeping whole aligned rows: the compiled loss runs 1.6x faster than
    over a slice (H200 and H100, benchmarks/loss_kernels.py). On a CPU the slice is faster (the mask took 1.3x as
    long compiled, 2x eager). The loss and its gradient are the same either way.
    """
    if logits.size(-1) == vocab:
        return logits
    return mask_padding(logits, vocab) if logits.is_cuda else logits[..., :vocab]


def mask_padding(logits: torch.Tensor, vocab: int) -> torch.Tensor:
    """The columns past `vocab` set to -inf: they get no probability, no gradient and never the max."""
    padding = torch.arange(logits.size(-1), device=logits.device) >= vocab
    return logits.masked_fill(padding, float("-inf"))


def split_terms(terms: object, owner: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """A model's `loss_terms` result as (summed cross-entropy, correct count, summed auxiliary loss or None).

    An idea with a loss of its own besides next-token prediction (a z-loss, MoE load balancing) returns it third:
    it trains (the runner backpropagates the sum), but the recorded, validated and plotted loss stays the
    cross-entropy the baseline's is, so that a comparison at equal tokens compares like with like."""
    if isinstance(terms, (tuple, list)) and len(terms) in (2, 3) and all(isinstance(t, torch.Tensor) for t in terms):
        if len(terms) == 3 and terms[2].dim():
            raise TypeError(f"{owner}.loss_terms returned an auxiliary loss of shape {list(terms[2].shape)}; return "
                            f"it summed to one number (a 0-dim tensor), as the cross-entropy is")
        return terms[0], terms[1], terms[2] if len(terms) == 3 else None
    shown = (f"a {type(terms).__name__} of {len(terms)}" if isinstance(terms, dict) else
             f"({', '.join(type(t).__name__ for t in terms)})" if isinstance(terms, (tuple, list))
             else f"a {type(terms).__name__}")
    raise TypeError(f"{owner}.loss_terms returned {shown}; it must return tensors (summed cross-entropy, correct "
                    f"count), or (summed cross-entropy, correct count, summed auxiliary loss) for a loss of the "
                    f"idea's own that trains but is not recorded as its loss")
