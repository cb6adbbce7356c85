"""tokens/s and MFU of training, over the wall-clock windows between train records."""

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import torch

from lmplay.data.batch import Batch
from lmplay.stats.mfu import mfu, peak_flops


class SpeedMeter:
    """A train record's tokens/s and MFU cover the wall time since the record before it. What is not training (a
    validation, a save, the first opening of the TensorBoard file) runs `paused()`, so its time counts in no
    record: tokens/s is the loop's, and the cadence's cost shows in the run's wall time."""

    def __init__(self, flops_per_token: Callable[[int], float], device: torch.device, world_size: int) -> None:
        """`flops_per_token(length)`: the model's training FLOPs per token of a row `length` tokens long (its
        attention spans that, not the context): LMBase.flops_per_token."""
        self.peak = peak_flops(device)
        self.flops_per_token = cache(flops_per_token)  # a few widths, asked at every step
        self.world_size = world_size
        self.flops_done = 0.0  # model FLOPs of the steps trained in this process
        self._start = (0.0, 0, 0.0)  # (time, tokens, flops) where the current window began

    def add(self, batch: Batch) -> None:
        """A step over `batch` was trained: the FLOPs MFU counts, each row's inputs (padding left out, prompts
        without a loss in) attending over that row alone, not the padding up to the batch's longest (PaLM's
        per-sequence count: rows batching read ~8% high with the bytes tokenizer). tokens/s counts the loss's
        tokens, the unit of the `tokens` axis."""
        lengths = Counter(batch.row_lengths or (batch.inputs.size(1),) * len(batch))
        self.flops_done += sum(count * n * self.flops_per_token(n) for n, count in lengths.items())

    def restart(self, tokens: int) -> None:
        """The next window begins now, at `tokens` seen (a stage's first step)."""
        self._start = (time.perf_counter(), tokens, self.flops_done)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """What runs inside is not training: the window's clock skips it, and its steps so far still count."""
        start = time.perf_counter()
        try:
            yield
        finally:
            began, tokens, flops = self._start
            self._start = (began + time.perf_counter() - start, tokens, flops)

    def read(self, tokens: int, flops: float) -> dict[str, float]:
        """The rates from the window's start to now, at `tokens` and `flops`; the next window starts here. None ({})
        for a window this process trained nothing of (a record resumed from a checkpoint's window): not a rate of 0."""
        now, (start, tokens_before, flops_before) = time.perf_counter(), self._start
        self._start = (now, tokens, flops)
        seconds = now - start
        if tokens == tokens_before:
            return {}
        return self.rates((tokens - tokens_before) / seconds, (flops - flops_before) / seconds)

    def rates(self, tokens_per_second: float, flops_per_second: float) -> dict[str, float]:
        """tokens/s of the whole run (all ranks) and, on a GPU the peak table knows, MFU: each rank's share of
        the FLOPs against one device's peak. Wall-clock values: the only ones a resume can't replay."""
        speed = {"tokens_per_second": tokens_per_second}
        value = mfu(flops_per_second / self.world_size, self.peak)
        if value is not None:
            speed["mfu"] = value
        return speed


def format_speed(speed: dict[str, float]) -> str:
    if "tokens_per_second" not in speed:
        return "- tok/s"
    text = f"{speed['tokens_per_second']:,.0f} tok/s"
    return text + (f" MFU {speed['mfu']:.1%}" if "mfu" in speed else "")
