"""The row stream of a stage: its datasets interleaved, each reshuffled on every pass, epoch after epoch.

Interleaving follows HF `interleave_datasets`: without weights datasets take turns; with weights each
draw picks a dataset at random with those probabilities. `first_exhausted` ends an epoch when a dataset
runs out (round-robin: at the end of that round, so every dataset gave min-length rows);
`all_exhausted` restarts a dataset that ran out (a new pass, reshuffled) until every dataset has run out
once. Each epoch starts every dataset on a new pass. Within a pass a dataset's rows come in a seeded
permutation: no row is repeated or skipped.

Everything is a function of (seed, stage index, epoch, pass), so a position is a few integers and a
resumed run rebuilds exactly the same order. Sized datasets get a whole epoch planned at once (numpy),
which also lets estimate_stage_steps count steps exactly; a stage with a streamed dataset is drawn
one row at a time, and a stream notices that it ran out only when a read fails.
"""

import math
from typing import Iterator

import numpy as np

from lmplay.data.rows import Row
from lmplay.data.tokenized import SizedRows, StreamedRows
from lmplay.errors import ConfigError

STRATEGIES = ("first_exhausted", "all_exhausted")
MAX_EPOCH_REPEATS = 1000  # an all_exhausted epoch of more draws than this many times the rows is a mistake
ORDER_TAG, SCHEDULE_TAG, SPILL_TAG = 0x6F_72_64, 0x73_63_68, 0x73_70_6C  # independent seeded streams
SCHEDULE_BLOCK = 4096


def rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) % 2**32 for k in keys])


class DrawSchedule:
    """Which dataset each draw of an epoch takes: round-robin, or weighted random in seeded blocks
    (the same for every epoch, so every epoch of a sized stage has the same length)."""

    def __init__(self, num: int, weights: list[float] | None, seed: int, stage: int) -> None:
        self.num, self.seed, self.stage = num, seed, stage
        self.p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self._block: tuple[int, np.ndarray] | None = None  # the block draw() read last

    def draw(self, k: int) -> int:
        """The dataset of draw k, for streams that draw one row at a time (a block is made once, not per row)."""
        b = k // SCHEDULE_BLOCK
        if self._block is None or self._block[0] != b:
            self._block = (b, self.choices(b * SCHEDULE_BLOCK, (b + 1) * SCHEDULE_BLOCK))
        return int(self._block[1][k % SCHEDULE_BLOCK])

    def block(self, b: int) -> np.ndarray:
        return rng(self.seed, self.stage, SCHEDULE_TAG, b).choice(self.num, SCHEDULE_BLOCK, p=self.p)

    def choices(self, start: int, stop: int) -> np.ndarray:
        if self.p is None:
            return np.arange(start, stop) % self.num
        blocks = range(start // SCHEDULE_BLOCK, (stop - 1) // SCHEDULE_BLOCK + 1) if stop > start else []
        drawn = np.concatenate([self.block(b) for b in blocks]) if blocks else np.zeros(0, np.int64)
        first = (start // SCHEDULE_BLOCK) * SCHEDULE_BLOCK
        return drawn[start - first: stop - first]


def check_interleave(strategy: str, weights: list[float] | None, num: int, where: str) -> None:
    if strategy not in STRATEGIES:
        raise ConfigError(f"{where}: interleave={strategy!r} is unknown; use one of: {', '.join(STRATEGIES)}")
    if weights is not None and (not isinstance(weights, (list, tuple)) or len(weights) != num or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 < w < math.inf for w in weights)):
        raise ConfigError(f"{where}: weights={weights!r} must be a list of {num} positive finite number(s), one per "
                          f"dataset")


class SizedStream:
    """The rows of a stage whose datasets all have a known size; position = (epoch, row of the epoch)."""

    def __init__(self, sources: list[SizedRows], strategy: str, weights: list[float] | None, seed: int,
                 stage: int, where: str = "a stage") -> None:
        self.sources, self.strategy, self.seed, self.stage = sources, strategy, seed, stage
        self.schedule = DrawSchedule(len(sources), weights, seed, stage)
        self._check_epoch_size(weights, where)
        self.epoch_len = self._epoch_len()
        self.epoch, self.pos = 0, 0
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None

    def _check_epoch_size(self, weights: list[float] | None, where: str) -> None:
        """all_exhausted draws until the rarest dataset runs out: ~len/probability draws, which a tiny weight
        makes endless (counting the epoch would hang, then its plan would not fit in memory)."""
        if self.schedule.p is None or self.strategy != "all_exhausted":
            return
        lens = np.array([len(s) for s in self.sources], dtype=np.float64)
        draws = lens / self.schedule.p
        if draws.max() > MAX_EPOCH_REPEATS * lens.sum():
            d = int(draws.argmax())
            raise ConfigError(f"{where}: interleave=all_exhausted with weights={list(weights)} would draw ~"
                              f"{draws[d]:,.0f} rows an epoch, until dataset {d + 1} ({int(lens[d]):,} rows at weight "
                              f"{weights[d]}) runs out; raise its weight, or use interleave=first_exhausted")

    def _epoch_len(self) -> int:
        lens = np.array([len(s) for s in self.sources])
        if self.schedule.p is None:
            return int(len(lens) * (lens.min() if self.strategy == "first_exhausted" else lens.max()))
        done_at = np.full(len(lens), -1)  # the draw that exhausts each dataset the first time
        counts = np.zeros(len(lens), dtype=np.int64)
        b = 0
        while True:
            block = self.schedule.block(b)
            for d in np.flatnonzero(done_at < 0):
                hits = np.flatnonzero(block == d)
                if counts[d] + len(hits) >= lens[d]:
                    done_at[d] = b * SCHEDULE_BLOCK + hits[lens[d] - counts[d] - 1]
                counts[d] += len(hits)
            if self.strategy == "first_exhausted" and (done_at >= 0).any():
                return int(done_at[done_at >= 0].min()) + 1
            if self.strategy == "all_exhausted" and (done_at >= 0).all():
                return int(done_at.max()) + 1
            b += 1

    def order(self, d: int, epoch: int, pass_index: int) -> np.ndarray:
        """Dataset d's rows (table row ids) in the order of one of its passes."""
        src = self.sources[d]
        return src.index[rng(self.seed, self.stage, ORDER_TAG, d, epoch, pass_index).permutation(len(src))]

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset, table row) of every row of an epoch, in order."""
        if self._plan is not None and self._plan[0] == epoch:
            return self._plan[1], self._plan[2]
        which = self.schedule.choices(0, self.epoch_len)
        rows = np.empty(self.epoch_len, dtype=np.int64)
        for d, src in enumerate(self.sources):
            at = np.flatnonzero(which == d)
            nth = np.arange(len(at))
            for p in range(-(-len(at) // len(src))):
                sel = nth // len(src) == p
                rows[at[sel]] = self.order(d, epoch, p)[nth[sel] - p * len(src)]
        self._plan = (epoch, which, rows)
        return which, rows

    def next_row(self) -> Row:
        if self.pos == self.epoch_len:
            self.epoch, self.pos = self.epoch + 1, 0
        which, rows = self.plan(self.epoch)
        row = self.sources[which[self.pos]].table.row(int(rows[self.pos]))
        self.pos += 1
        return row

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        if self.pos > self.epoch_len:  # the data shrank since the checkpoint: its epoch is over
            self.epoch, self.pos = self.epoch + 1, 0


class HeldOutStream:
    """A stage's held-out rows, for its validation: every row of every dataset once, drawn as the stage draws
    (turns, or its weights); a draw of a dataset that ran out goes to one of those left, by their weights.

    An epoch of the stage's own interleave would not do: first_exhausted ends at the smallest held-out set's
    end, leaving most rows of the others out, and all_exhausted repeats the smaller sets. Until a set runs out,
    the order is a SizedStream's first epoch (the same held-out batches as before for a single dataset)."""

    def __init__(self, sources: list[SizedRows], weights: list[float] | None, seed: int, stage: int) -> None:
        self.sources, self.schedule = sources, DrawSchedule(len(sources), weights, seed, stage)
        self.rows = [src.index[rng(seed, stage, ORDER_TAG, d, 0, 0).permutation(len(src))]
                     for d, src in enumerate(sources)]
        self.cursor, self.draws = [0] * len(sources), 0
        self.epoch_len = sum(len(src) for src in sources)
        self.weights = np.ones(len(sources)) if weights is None else np.asarray(weights, dtype=np.float64)
        self._spill = rng(seed, stage, SPILL_TAG)

    def next_row(self) -> Row:
        d = self.schedule.draw(self.draws)
        self.draws += 1
        if self.cursor[d] == len(self.rows[d]):  # a draw of a dataset with no rows left: one of those with some, by
            left = [i for i, rows in enumerate(self.rows) if self.cursor[i] < len(rows)]  # their weights (redrawing
            p = self.weights[left] / self.weights[left].sum()  # the schedule took ~1/weight draws: a hang)
            d = int(self._spill.choice(left, p=p))
        self.cursor[d] += 1
        return self.sources[d].table.row(int(self.rows[d][self.cursor[d] - 1]))

    def state_dict(self) -> dict:
        return {"draws": self.draws, "cursor": list(self.cursor)}


class DrawnStream:
    """The rows of a stage with at least one streamed dataset, drawn one at a time. A stream starts a new pass only
    when it runs out itself. Position = (epoch, draws this epoch, and per dataset: passes begun, rows read this
    pass, ran out)."""

    def __init__(self, sources: list[SizedRows | StreamedRows], strategy: str, weights: list[float] | None,
                 seed: int, stage: int) -> None:
        self.sources, self.strategy, self.seed, self.stage = sources, strategy, seed, stage
        self.schedule = DrawSchedule(len(sources), weights, seed, stage)
        n = len(sources)
        self.epoch, self.draws = 0, 0
        self.passes, self.cursor, self.exhausted = [0] * n, [0] * n, [0] * n
        self._iters: list[Iterator[Row] | None] = [None] * n

    def _pull(self, d: int) -> Row | None:
        src, pass_index = self.sources[d], self.passes[d]
        if isinstance(src, SizedRows):
            if self.cursor[d] == len(src):
                return None
            if self._iters[d] is None:
                perm = rng(self.seed, self.stage, ORDER_TAG, d, pass_index).permutation(len(src))
                self._iters[d] = iter(src.index[perm[self.cursor[d]:]])
            row = src.table.row(int(next(self._iters[d])))
        else:
            if self._iters[d] is None:
                stream_seed = int(rng(self.seed, self.stage, ORDER_TAG, d).integers(2**31))
                self._iters[d] = src.open(stream_seed, pass_index, self.cursor[d])
            row = next(self._iters[d], None)
            if row is None:
                return None
        self.cursor[d] += 1
        return row

    def _restart(self, d: int) -> None:
        self.passes[d] += 1
        self.cursor[d] = 0
        self._iters[d] = None

    def next_row(self) -> Row:
        while True:
            d = self.schedule.draw(self.draws)
            row = self._pull(d)
            if row is not None:
                self.draws += 1
                return row
            if self.cursor[d] == 0:
                raise ConfigError(f"dataset {self.sources[d].label!r} gave no rows to train on; check its path, "
                                  f"split and columns")
            self.exhausted[d] = 1
            self._restart(d)
            done = any if self.strategy == "first_exhausted" else all
            if done(self.exhausted):  # a new epoch reshuffles the datasets of known size; a stream reads on
                self.epoch, self.draws, self.exhausted = self.epoch + 1, 0, [0] * len(self.sources)
                for other in range(len(self.sources)):  # (restarted, it re-read its head every epoch of a small
                    if other != d and isinstance(self.sources[other], SizedRows):  # dataset beside it)
                        self._restart(other)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "draws": self.draws, "passes": list(self.passes), "cursor": list(self.cursor),
                "exhausted": list(self.exhausted)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.draws = int(state["epoch"]), int(state["draws"])
        self.passes = [int(x) for x in state["passes"]]
        self.cursor = [int(x) for x in state["cursor"]]
        self.exhausted = [int(x) for x in state["exhausted"]]
        self._iters = [None] * len(self.sources)


class RowFeed:
    """A stage's rows with its row budget (from `epochs`): `take()` gives None once the budget is used."""

    def __init__(self, stream: SizedStream | DrawnStream | HeldOutStream, budget: int | None) -> None:
        self.stream, self.budget, self.rows = stream, budget, 0

    def take(self) -> Row | None:
        if self.budget is not None and self.rows >= self.budget:
            return None
        self.rows += 1
        return self.stream.next_row()

    def state_dict(self) -> dict:
        return {"rows": self.rows, "stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rows = int(state["rows"])
        self.stream.load_state_dict(state["stream"])
