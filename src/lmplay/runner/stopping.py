"""What a stop signal (Ctrl-C, SIGTERM, a closed terminal, a job's preemption) does to a run.

During set-up there is nothing to save: the signal stops it cleanly (StoppedBeforeTraining). During training
the first signal asks for a save after the current step (StopRequest), and a second one stops at once: a big
model's step and save take seconds, which invites a second Ctrl-C, and the last checkpoint stays good either way
because saves are atomic.
"""

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmplay.cli import tell
from lmplay.files import CHECKPOINT


def stop_signals() -> tuple[signal.Signals, ...]:
    """Ctrl-C, SIGTERM, SIGHUP (a closed terminal or a dropped ssh) and, where the platform has it, the signal
    SLURM sends before a time limit or a preemption (submitit's SIGUSR2, or what SUBMITIT_PREEMPT_SIGNAL names).
    Not one the process was started ignoring: nohup's SIGHUP, a shell script's background job's SIGINT (a Ctrl-C
    meant for the script stopped the training it started once set-up was done, and not before)."""
    preempt = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    candidates = (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None), preempt)
    return tuple(dict.fromkeys(s for s in candidates if s is not None and signal.getsignal(s) != signal.SIG_IGN))


class StoppedBeforeTraining(KeyboardInterrupt):
    """A SIGTERM or SIGHUP during set-up (a scheduler's stop while a big dataset tokenizes, a closed terminal):
    handled like a Ctrl-C there, so that the set-up's own clean-up runs and the log says what happened."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


def _stop_setup(signum: int, frame: object) -> None:
    raise StoppedBeforeTraining(signum)


@contextmanager
def stops_during_setup() -> Iterator[None]:
    """SIGTERM and SIGHUP (unless ignored: nohup) stop set-up cleanly inside the block (a Ctrl-C does already);
    the handlers before are put back after it, however it ends."""
    stopping = [s for s in stop_signals() if s in (signal.SIGTERM, getattr(signal, "SIGHUP", None))]
    previous = {s: signal.signal(s, _stop_setup) for s in stopping}
    try:
        yield
    finally:
        restore_signals(previous)


def restore_signals(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


class StopRequest:
    """A training run's stop signals. `signum` is the first one received (torchrun's agent sends a SIGTERM after
    passing on a Ctrl-C: the user's is the one reported); the loop reads it between steps and saves.

    `speaks`: this process says what happens (the main rank); `run_dir`: where the last checkpoint is, to say what
    a stop without a save leaves.
    """

    def __init__(self, run_dir: Path, speaks: bool) -> None:
        self.run_dir = run_dir
        self.speaks = speaks
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @contextmanager
    def handled(self) -> Iterator[None]:
        """Stop signals handled by this request inside the block; the handlers before put back after it."""
        self._previous = {s: signal.signal(s, self.on_signal) for s in stop_signals()}
        try:
            yield
        finally:
            restore_signals(self._previous)

    def stopped_elsewhere(self) -> None:
        """Another rank received a stop signal: this one stops after the same step, as for a SIGTERM of its own."""
        self.signum = self.signum or signal.SIGTERM

    def on_signal(self, signum: int, frame: object) -> None:
        """Save after this step and stop; said at once, with what a second signal would do."""
        first = self.signum is None
        self.signum = self.signum or signum
        signal.signal(signum, self.on_second_signal)
        if first and self.speaks:
            name = signal.Signals(signum).name
            grace = (" (torchrun kills the ranks 30 s after its signal unless launched with --shutdown-timeout "
                     "SECONDS, which torch 2.13's torchrun has)") if "TORCHELASTIC_RUN_ID" in os.environ else ""
            tell(f"\n{name}: will save after this step and stop{grace}; {name} again stops at once without saving "
                 f"({self.without_save()})\n")

    def on_second_signal(self, signum: int, frame: object) -> None:
        """Stop at once, as the signal's default would, saying so."""
        if self.speaks:
            tell(f"\n{signal.Signals(signum).name} again: stopped without saving; {self.without_save()}\n")
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def without_save(self) -> str:
        """Where a run stopped without saving goes on from: its step says what a second signal would lose (an
        impatient second Ctrl-C during a save lost the steps since the one before, unsaid)."""
        from lmplay.runner.checkpoint import trained_step

        if (self.run_dir / CHECKPOINT).exists():
            step = trained_step(self.run_dir / CHECKPOINT)
            return "the run then resumes from its last checkpoint" + (f", of step {step}" if step is not None else "")
        return "nothing is saved yet, so a rerun starts over"

    def stopped(self, saved: Path, step: int, resume_hint: str) -> None:
        """After the save at `step`, exit with 128 + the signal's number (the shell's code for a signal: scripts
        tell an interruption from a crash). On a job's preemption signal, hand over to the handler the job
        installed first (submitit requeues the job, which resumes from `saved`)."""
        signum = self.signum
        name, previous = signal.Signals(signum).name, self._previous.get(signum)
        if signum not in (signal.SIGINT, signal.SIGTERM) and callable(previous):
            tell(f"{name}: saved {saved} at step {step}; handing over to the job's own handler\n")
            previous(signum, None)
        if self.speaks:  # best-effort: after a SIGHUP the terminal is gone
            tell(f"{name}: saved {saved} at step {step}; {resume_hint}\n")
        raise SystemExit(128 + signum)
