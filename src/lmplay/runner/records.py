"""A training step's stats on their way to a record: the window of steps a record averages over (kept in
checkpoints, so that a resumed run's records equal the uninterrupted run's), and one step's values in flight from
the device."""

from dataclasses import dataclass

import torch

from lmplay.runner.distributed import World


@dataclass
class RecordWindow:
    """The steps since the last train record, which the next one averages over: their summed loss and correct
    count (on the device, unread), tokens and number."""

    loss: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    tokens: int = 0
    steps: int = 0
    lr: float | None = None  # the last step's, which its record is stamped with

    def add(self, loss: torch.Tensor, correct: torch.Tensor, tokens: int, lr: float) -> None:
        self.loss, self.correct = (loss, correct) if not self.steps else (self.loss + loss, self.correct + correct)
        self.tokens += tokens
        self.steps += 1
        self.lr = lr

    def totals(self, world: World) -> dict[str, float | int]:
        """What a checkpoint keeps of it: the sums over all ranks (a collective: every rank saves)."""
        if not self.steps:
            return {"steps": 0}
        loss, correct = world.sum(float(self.loss), float(self.correct))
        return {"loss": loss, "correct": correct, "tokens": self.tokens, "steps": self.steps, "lr": self.lr}

    @classmethod
    def resumed(cls, totals: dict[str, float | int], device: torch.device, is_main: bool) -> "RecordWindow":
        """The window a checkpoint was saved in, so that the resumed run's next record equals the uninterrupted
        run's: its sums on rank 0 (each record sums the ranks' shares), zero on the others."""
        if not totals.get("steps"):
            return cls()
        scale = 1.0 if is_main else 0.0
        return cls(torch.tensor(totals["loss"] * scale, dtype=torch.float32, device=device),
                   torch.tensor(round(totals["correct"] * scale), dtype=torch.int64, device=device), totals["tokens"],
                   totals["steps"], totals.get("lr"))  # none in a checkpoint older than lr in its window


@dataclass
class StepLog:
    """A training step's stats, on their way from the device until log_step reads them."""

    stage: str
    lr: float
    at: dict[str, int]  # step, samples, tokens after the step
    loss: torch.Tensor  # summed over the record's steps' tokens, as are correct and num_tokens
    correct: torch.Tensor
    ready: "torch.cuda.Event | None"  # on a GPU, recorded once the copies to the host are done
    num_tokens: int
    steps: int
    flops: float  # the model FLOPs done so far, after the step (for MFU over the record's window)

    @classmethod
    def start(cls, stage: str, lr: float, at: dict[str, int], loss: torch.Tensor, correct: torch.Tensor,
              num_tokens: int, steps: int, flops: float) -> "StepLog":
        """Queue the copies of the step's loss and correct count to the host right behind the step's kernels.

        On a GPU they go to pinned memory without waiting, and an event marks their end. `.item()` at
        read time would instead queue behind the next step's kernels and wait for those too, leaving
        the GPU idle while the host prepares the step after.
        """
        loss, ready = loss.detach(), None
        if loss.is_cuda:
            loss, correct = loss.to("cpu", non_blocking=True), correct.to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        return cls(stage, lr, at, loss, correct, ready, num_tokens, steps, flops)

    def read(self) -> tuple[float, int]:
        """The loss and correct count, once this step (and no later one) is done."""
        if self.ready is not None:
            self.ready.synchronize()
        return self.loss.item(), self.correct.item()
