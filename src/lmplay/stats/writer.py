"""stats.json and TensorBoard, written as training goes.

stats.json is rewritten atomically (temp + rename), so it is valid JSON at any moment; on resume the
records come from the checkpoint, which rewinds whatever was logged after it. Each record is turned into
JSON once, as it comes: a rewrite (and a checkpoint's copy of the records) joins those texts, a copy of
bytes, where serializing every record again made a 20k-step run's validations and saves 10x slower than
its first ones. Flushes are spaced at least `flush_seconds` apart and at least 50 times their own
duration: a long run spends under 2% of its time keeping them current. A validation record rewrites
stats.json at once; TensorBoard gets it at the next flush (which also keeps tensorboard's import out of
the time to the first step).
"""

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmplay.files import RECORD_KINDS, STATS, write_atomic

if TYPE_CHECKING:
    from lmplay.stats.tensorboard import EventFile


class StatsWriter:
    def __init__(self, run_dir: Path, records: dict[str, list[dict[str, Any]]] | None = None,
                 write: bool = True, flush_seconds: float = 10.0, stage_tags: bool = False,
                 parameters: int | None = None) -> None:
        """`write=False` keeps the records in memory only (DDP ranks other than 0). `stage_tags`: TensorBoard
        gets a validation chart per stage (validation/<stage>/loss), for a plan of several stages, whose held-out
        rows differ: one chart joined them, and a stage's switch of data read as the model's change. `parameters`:
        the model's count, kept beside the records, so that comparisons can say when runs differ in size."""
        self.path = Path(run_dir) / STATS
        self.write = write
        self.records = {k: list((records or {}).get(k, [])) for k in RECORD_KINDS}
        self._texts = {k: [json.dumps(r) for r in self.records[k]] for k in RECORD_KINDS}  # each record's JSON
        self.flush_seconds = flush_seconds
        self.stage_tags = stage_tags
        self.parameters = parameters
        self._flush_gap = flush_seconds
        self._tb = None
        self._events_failed = False
        self._pending: list[tuple[str, dict[str, Any], float]] = []  # (kind, record, time) not yet in TensorBoard
        seen = max((r["tokens"] for kind in RECORD_KINDS for r in self.records[kind]), default=-1)
        # past the checkpoint's last record; without one, from 0: a run killed before its first save had
        # already drawn its step-0 validation, which the restart draws again
        self._purge_step: int | None = seen + 1
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush()
        self._last_flush = float("-inf")  # the first record is written at once, so a new run shows up quickly

    def add(self, kind: str, record: dict[str, Any]) -> None:
        """Keep a record; at the next flush TensorBoard gets its numbers as one event at x = tokens."""
        self.records[kind].append(record)
        self._texts[kind].append(json.dumps(record))
        if not self.write:
            return
        self._pending.append((kind, record, time.time()))
        if kind == "validation":
            self._write_json()  # what users watch; TensorBoard catches up at the next flush
        elif time.monotonic() - self._last_flush > self._flush_gap:
            self.flush()

    @property
    def events_open(self) -> bool:
        return self._tb is not None

    def _events(self) -> "EventFile":
        """The event file, opened on first use (again after close(), if training goes on)."""
        if self._tb is None:
            # imported here: tensorboard's record writer costs ~0.25 s even after torch; non-writing ranks
            # and commands that never train skip it
            from lmplay.stats.tensorboard import EventFile

            self._tb = EventFile(self.path.parent / "tb", purge_step=self._purge_step)
            self._purge_step = None
        return self._tb

    def as_json(self) -> str:
        """The records as JSON, what json.dumps(self.records) gives, from each record's text."""
        size = f', "parameters": {self.parameters}' if self.parameters is not None else ""
        return "{" + ", ".join(f'"{k}": [' + ", ".join(self._texts[k]) + "]" for k in RECORD_KINDS) + size + "}"

    def _write_json(self) -> None:
        write_atomic(self.path, self.as_json())

    def flush(self) -> None:
        """stats.json and the TensorBoard file, up to the last record."""
        if not self.write:
            return
        start = time.monotonic()
        self._write_json()
        if self._pending and not self._events_failed:  # in one go: per step, in the loop, ~4x the cost
            try:
                events = self._events()
                for kind, record, wall_time in self._pending:
                    tag = f"{kind}/{record['stage']}" if self.stage_tags and kind == "validation" else kind
                    events.scalars({f"{tag}/{key}": value for key, value in record.items()
                                    if isinstance(value, (int, float)) and key not in ("step", "tokens", "samples")},
                                   step=record["tokens"], wall_time=wall_time)
                events.flush()
            except OSError as e:  # a full disk, or tb/ taken by a file: training and its checkpoints go on
                self._events_failed = True
                print(f"warning: TensorBoard events cannot be written in {self.path.parent / 'tb'} "
                      f"({e.strerror or e}); training goes on, and stats.json keeps every record", file=sys.stderr)
        self._pending.clear()
        self._last_flush = time.monotonic()
        self._flush_gap = max(self.flush_seconds, 50 * (self._last_flush - start))

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            with contextlib.suppress(OSError):  # said at the flush that failed
                self._tb.close()
            self._tb = None
