"""Batch: what one optimizer step trains on."""

from dataclasses import dataclass
from functools import cached_property

import torch

IGNORE_INDEX = -100  # the targets that do not count: padding, and prompts when include_prompts=False


@dataclass
class Batch:
    """`inputs[n, t]` is fed to the model and `targets[n, t]` is the token it should predict next.

    Samples are right-padded with the tokenizer's eot id up to the longest sample of the batch; padded
    positions have target IGNORE_INDEX, so models never need a separate mask: the loss is
    `cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / batch.num_tokens`.
    """

    inputs: torch.Tensor   # [N, T] int64
    targets: torch.Tensor  # [N, T] int64
    row_lengths: tuple[int, ...] | None = None  # each row's inputs that are no padding (collate's); None: all T

    @cached_property
    def num_tokens(self) -> int:
        """The tokens that count in the loss: the normaliser of a whole batch, and the unit of `tokens` stats.
        Counted once: the loop asks several times a step, and a batch's targets never change."""
        return int((self.targets != IGNORE_INDEX).sum())

    @property
    def num_positions(self) -> int:
        """The positions the model computes on, padding left out: what a step's FLOPs are counted on (MFU).
        More than num_tokens where prompts are trained through without a loss (include_prompts=false)."""
        return self.inputs.numel() if self.row_lengths is None else sum(self.row_lengths)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def split(self, mini_batch_size: int) -> list["Batch"]:
        """Consecutive chunks of at most `mini_batch_size` samples (for gradient accumulation)."""
        return [Batch(i, t) for i, t in zip(self.inputs.split(mini_batch_size), self.targets.split(mini_batch_size))]

    def padded(self, rows: int) -> "Batch":
        """The batch with rows appended that count nothing (token 0 in, no target), up to `rows`."""
        extra = rows - len(self)
        if extra <= 0:
            return self
        width = self.inputs.size(1)
        return Batch(torch.cat([self.inputs, self.inputs.new_zeros(extra, width)]),
                     torch.cat([self.targets, self.targets.new_full((extra, width), IGNORE_INDEX)]), self.row_lengths)

    def shard(self, rank: int, world: int) -> "Batch":
        """Samples rank, rank + world, ... : this process's share under data parallelism; contiguous, as a padded
        one is (compile=true guards on strides: a stage's last shard, filled up, recompiled the loss)."""
        if world == 1:
            return self
        return Batch(self.inputs[rank::world].contiguous(), self.targets[rank::world].contiguous())

    def pin_memory(self) -> "Batch":
        return Batch(self.inputs.pin_memory(), self.targets.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking))
