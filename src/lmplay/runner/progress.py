"""What a run shows while it trains: the last train record as the progress bar's postfix under a terminal;
without one (a SLURM or nohup log), plain lines with how far into its stage the run is and an ETA."""

import os
import sys
import time
from typing import Any

from tqdm import tqdm

from lmplay.cli import say
from lmplay.stats.speed import format_speed

PLAIN_LINE_SECONDS = 30.0  # progress lines in a log file: about two a minute
FIRST_ETA_SECONDS = 5.0  # the line after a stage's first step's, the first with an ETA, comes sooner


class Progress:
    """`shown`: on the main rank, unless TQDM_DISABLE hides progress. `plain`: lines instead of the bar's postfix,
    where stderr is no terminal tqdm draws on (a SLURM or nohup log)."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown and not os.environ.get("TQDM_DISABLE")  # tqdm reads it only for what is not passed
        self.plain = self.shown and not draws_a_bar()
        self.bar: tqdm | None = None  # the stage's
        self._next_line = self._next_postfix = float("-inf")
        self._clock: tuple[float | None, int, int] = (None, 0, 0)  # (started at, its stage step, the stage's steps)
        self._of = "of the stage"

    def stage_started(self, name: str, stage_step: int, total: int, capped: bool = False) -> None:
        """A stage starts (or resumes) at `stage_step` of `total`: its bar where shown, and no ETA until its first
        step is done. `capped`: `total` is where max_steps stops the run inside the stage (a full bar, or "25/25 of
        the stage", read as the stage done)."""
        self._clock = (None, stage_step, total)
        self._of = "to max_steps" if capped else "of the stage"
        self.bar = tqdm(total=total, initial=stage_step, desc=f"{name} (to max_steps)" if capped else name,
                        unit="step", dynamic_ncols=True, disable=self.plain or not self.shown)

    def step_done(self) -> None:
        self.bar.update(1)

    def stage_ended(self) -> None:
        self.bar.close()

    def first_step_done(self, stage_step: int, total: int) -> None:
        """The ETA's clock starts after the stage's first step, which also imports, opens files and warms up: an
        ETA timed on it was 10-20x too long."""
        self._clock = (time.monotonic(), stage_step, total)

    def show(self, records: dict[str, list[dict[str, Any]]], stage_step: int, last: bool = False) -> None:
        """The last train record (of the stats `records`) as the bar's postfix; as a plain line every
        PLAIN_LINE_SECONDS (the line after a stage's first step's comes after FIRST_ETA_SECONDS). The text is made
        only when it can show: the bar redraws at most every `bar.mininterval`, and making it at each step cost
        ~10 us, 0.15% of test_runner's step. `last`: the stage's last step, which the bar shows as it closes."""
        bar, now = self.bar, time.monotonic()
        due = (not last and now >= self._next_line) if self.plain else \
            (not bar.disable and (last or now >= self._next_postfix))
        if not due or not records["train"]:
            return
        r, validated = records["train"][-1], records["validation"][-1:]
        val = f"{validated[0]['loss']:.3f}" if validated else "-"  # 5.560, not round()'s 5.56 beside loss 5.419
        text = f"step {r['step']} loss {r['loss']:.3f} val {val} tok {r['tokens']:,}, {format_speed(r)}"
        if self.plain:
            say(f"{r['stage']} {text}{self.eta(stage_step)}")
            timed = self._clock[0] is not None  # this line showed an ETA
            self._next_line = now + (PLAIN_LINE_SECONDS if timed else FIRST_ETA_SECONDS)
        else:
            bar.set_postfix_str(text, refresh=False)
            self._next_postfix = now + bar.mininterval

    def eta(self, stage_step: int) -> str:
        """What the bar shows and a log line lacks: how far into its stage the run is, and the time left."""
        start, first_step, total = self._clock
        done, left = stage_step - first_step, max(total - stage_step, 0)
        timed = start is not None and done > 0
        eta = f", ETA {tqdm.format_interval(left * (time.monotonic() - start) / done)}" if timed else ""
        return f" [{stage_step:,}/{total:,} {self._of}{eta}]"

    def validation(self, stage: str, step: int, values: dict[str, float]) -> None:
        """A validation's own line in a log file (the bar's postfix shows it with the next record)."""
        if self.plain:
            say(f"{stage} step {step}: validation loss {values['loss']:.4f} accuracy {values['accuracy']:.4f}")


def draws_a_bar() -> bool:
    """Whether stderr is a terminal tqdm draws on: not one of 0 columns (`script` in CI, `docker run -t` driven by
    a script), where tqdm drew nothing and the run, its validations in the bar's postfix, showed no progress."""
    if not sys.stderr.isatty():
        return False
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except (OSError, ValueError):  # a terminal whose size is not told: tqdm draws at its default width
        return True
