"""Learning-rate schedules as pure functions of (step, total_steps) within a stage.

A schedule holds no state of its own, so a resumed run that knows its step has exactly the lr
an uninterrupted run would have had.
"""

import math
from dataclasses import dataclass

from lmplay.errors import ConfigError


@dataclass
class Schedule:
    """Linear warmup (by warmup_steps, else warmup_fraction of the stage), then `decay` from base lr to min_lr."""

    warmup_fraction: float = 0.0
    warmup_steps: int | None = None
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"scheduler.warmup_fraction={self.warmup_fraction} must be in [0, 1)")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ConfigError(f"scheduler.warmup_steps={self.warmup_steps} must be >= 0")
        if not self.min_lr >= 0.0:  # nan too: a negative lr trains up the loss, and the run said nothing
            raise ConfigError(f"scheduler.min_lr={self.min_lr} must be >= 0")

    def warmup(self, total_steps: int) -> int:
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_fraction * total_steps)

    def decay(self, step: int, steps: int) -> float:
        """1 at the first of the `steps` after warmup, 0 at the last; 1 throughout for schedules that do not decay."""
        return 1.0

    def lr(self, base_lr: float, step: int, total_steps: int) -> float:
        """The lr of optimizer step `step` (0-based) of a stage of `total_steps`. Warmup climbs as nanoGPT's
        does, so that the base lr comes once, at the first step after warmup."""
        warmup = self.warmup(total_steps)
        if step < warmup:
            return base_lr * (step + 1) / (warmup + 1)
        return self.min_lr + (base_lr - self.min_lr) * self.decay(step - warmup, max(total_steps - warmup, 1))


class Constant(Schedule):
    def __init__(self) -> None:
        super().__init__()


class LinearWarmup(Schedule):
    """Linear warmup to the base lr, then constant."""

    def __init__(self, warmup_fraction: float = 0.0, warmup_steps: int | None = None) -> None:
        super().__init__(warmup_fraction, warmup_steps)


class Cosine(Schedule):
    """Warmup, then cosine from the base lr to min_lr at the end of the stage."""

    def decay(self, step: int, steps: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step / max(steps - 1, 1), 1.0)))


@dataclass
class WarmupStableDecay(Schedule):
    """Warmup, hold the base lr, then decay linearly to min_lr over the last decay_fraction of the steps after the
    warmup (of the stage's steps, without warmup)."""

    decay_fraction: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.decay_fraction <= 1.0:  # 3 decayed from the first step, -1 on the last one alone
            raise ConfigError(f"scheduler.decay_fraction={self.decay_fraction} must be in (0, 1]: the share of the "
                              f"steps after warmup that decay to min_lr")

    def decay(self, step: int, steps: int) -> float:
        decay_steps = max(int(self.decay_fraction * steps), 1)
        into_decay = step - (steps - decay_steps)
        return 1.0 if into_decay < 0 else max(1.0 - (into_decay + 1) / decay_steps, 0.0)
