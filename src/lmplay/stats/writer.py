"""stats.json and TensorBoard, written as training goes.

stats.json is rewritten atomically (temp + rename), so it is valid JSON at any moment; on resume the
records come from the checkpoint, which rewinds whatever was logged after it.
"""

import json
import os
import time
from pathlib import Path
from typing import Any


class StatsWriter:
    KINDS = ("train", "validation")

    def __init__(self, run_dir: Path, records: dict[str, list[dict[str, Any]]] | None = None,
                 write: bool = True, flush_seconds: float = 10.0) -> None:
        """`write=False` keeps the records in memory only (DDP ranks other than 0)."""
        self.path = Path(run_dir) / "stats.json"
        self.write = write
        self.records = {k: list((records or {}).get(k, [])) for k in self.KINDS}
        self.flush_seconds = flush_seconds
        self._last_flush = 0.0
        self._tb = None
        if write:
            # imported here: ~0.25 s even after torch (tensorboard pulls in boto3), which non-writing ranks skip
            from torch.utils.tensorboard import SummaryWriter

            seen = max((r["tokens"] for kind in self.KINDS for r in self.records[kind]), default=0)
            self._tb = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=seen + 1)
        self.flush()
        self._last_flush = float("-inf")  # the first record is written at once, so a new run shows up quickly

    def add(self, kind: str, record: dict[str, Any]) -> None:
        self.records[kind].append(record)
        if self._tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "tokens", "samples"):
                    self._tb.add_scalar(f"{kind}/{key}", value, global_step=record["tokens"])
        if kind == "validation" or time.monotonic() - self._last_flush > self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.write:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.records))
        os.replace(tmp, self.path)
        if self._tb is not None:
            self._tb.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._tb is not None:
            self._tb.close()
