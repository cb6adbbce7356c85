"""How many optimizer steps a stage gives, counted without tokenizing or batching anything.

The scheduler needs a stage's length in steps before the first batch, and a stage of `epochs` or `tokens` is
only as long as its batches make it. For datasets of known size the count replays the stage's batching on row
sizes alone (the same rows, order and cuts the batchers use, so the count is exact); for streams it divides the
stage's tokens by the tokens a batch of the held-out rows holds (an estimate: a stream's size is unknown).
"""

import math
from collections.abc import Callable

import numpy as np

from lmplay.data.interleave import SizedStream
from lmplay.data.rows import kept_prompt_len, plan_cuts, row_samples
from lmplay.data.tokenized import SizedRows

RowStats = Callable[[SizedRows], tuple[np.ndarray, np.ndarray]]  # a table's (samples, counted tokens) per row


def row_stats(src: SizedRows, context_len: int, include_prompts: bool) -> tuple[np.ndarray, np.ndarray]:
    """(samples, counted tokens) of every row of a dataset's table when framed whole (rows batching)."""
    t, T = src.table, context_len
    samples = row_samples(t.prompt_lens, t.text_lens, t.boundaries, T)
    # rows.kept_prompt_len's rule, over the whole table at once instead of row by row in Python
    keep = np.where(t.prompt_lens + t.text_lens + 1 <= T, t.prompt_lens, np.minimum(t.prompt_lens, T // 2))
    return samples, t.text_lens + 1 + (keep if include_prompts else 0)


def window_counts(prompts: np.ndarray, docs: np.ndarray, context_len: int, partial: bool = False) -> np.ndarray:
    """The counted targets of each packed window without prompts in the loss (0: one the batcher skips). Window k's
    targets are the stream's tokens kT+1..kT+T (the last, short window's up to the stream's end where `partial`); a
    doc starting at s holds its eot at s (a target) and its prompt at s+1..s+p."""
    T, total = context_len, int(docs.sum())
    windows = -(-(total - 1) // T) if partial else (total - 1) // T
    starts = np.concatenate(([0], np.cumsum(docs)[:-1]))
    before = np.concatenate(([0], np.cumsum(prompts)))  # prompt tokens of the docs before each

    def prompt_tokens_upto(x: np.ndarray) -> np.ndarray:
        doc = np.searchsorted(starts, x, side="right") - 1
        return before[doc] + np.clip(x - starts[doc], 0, prompts[doc])

    begins = np.arange(windows, dtype=np.int64) * T
    ends = np.minimum(begins + T, total - 1)
    return (ends - begins) - (prompt_tokens_upto(ends) - prompt_tokens_upto(begins))


def _stage_rows(stream: SizedStream, epochs: int, budget: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(dataset, table row) of the stage's rows over its first `epochs` epochs, up to its row budget."""
    which = np.concatenate([stream.plan(e)[0] for e in range(epochs)])
    rows = np.concatenate([stream.plan(e)[1] for e in range(epochs)])
    return (which, rows) if budget is None else (which[:budget], rows[:budget])


def _gathered(stream: SizedStream, which: np.ndarray, rows: np.ndarray,
              columns: Callable[[SizedRows], tuple[np.ndarray, ...]]) -> list[np.ndarray]:
    """Per-row columns of each dataset's table (`columns`), read at the stage's rows: dataset `which`, table row
    `rows`."""
    out: list[np.ndarray] = []
    for d, src in enumerate(stream.sources):
        sel = which == d
        for i, column in enumerate(columns(src)):
            if i == len(out):
                out.append(np.zeros(len(rows), np.int64))
            out[i][sel] = column[rows[sel]]
    return out


def _first_epochs(stream: SizedStream, budget: int | None) -> int:
    return math.ceil(budget / stream.epoch_len) if budget is not None else 1


def rows_steps(stream: SizedStream, stats: RowStats, batch_size: int, context_len: int, include_prompts: bool,
               budget: int | None, tokens: int | None, max_steps: int | None = None) -> tuple[int, float]:
    """Replays the rows batcher on row sizes alone: batches take whole rows, the last row of a full batch only the
    samples that fit. Ends after `budget` rows (epochs), once the batches hold `tokens`, or after `max_steps`
    batches. Returns the steps and the share of the tokens of the rows taken that the batches hold (the rest, a long
    row's samples past its batch, is dropped)."""
    epochs = _first_epochs(stream, budget)
    while True:
        which, rows = _stage_rows(stream, epochs, budget)
        samples, counted = _gathered(stream, which, rows, stats)
        cum_samples, cum_counted = np.cumsum(samples), np.cumsum(counted)
        i, steps, held = 0, 0, 0
        while i < len(rows) and (tokens is None or held < tokens) and (max_steps is None or steps < max_steps):
            before = cum_samples[i - 1] if i else 0
            j = int(np.searchsorted(cum_samples, before + batch_size, side="left"))
            counted_before = cum_counted[i - 1] if i else 0
            if j >= len(rows):  # the last, short batch
                held += int(cum_counted[-1] - counted_before)
                steps, i = steps + 1, len(rows)
                break
            fit = batch_size - int((cum_samples[j - 1] if j else 0) - before)
            held += int((cum_counted[j - 1] if j else 0) - counted_before)
            if fit == samples[j]:
                held += int(counted[j])
            else:
                table, row = stream.sources[which[j]].table, int(rows[j])
                cuts = plan_cuts(int(table.prompt_lens[row]), *table.boundaries(row), context_len, fit)
                keep = kept_prompt_len(int(table.prompt_lens[row]), int(table.text_lens[row]), context_len)
                held += sum(c.end - c.new for c in cuts) + (keep if include_prompts else 0)
            steps, i = steps + 1, j + 1
        if budget is not None or (tokens is not None and held >= tokens) or (max_steps is not None and
                                                                            steps >= max_steps):
            taken = int(cum_counted[i - 1]) if i else 0
            return steps, held / taken if taken else 1.0
        epochs *= 2


def packed_steps(stream: SizedStream, batch_size: int, context_len: int, include_prompts: bool,
                 budget: int | None, tokens: int | None) -> int:
    """Packed windows are cut from the row stream regardless of batches: count the batches of those that hold a
    target (without prompts in the loss, one inside a prompt holds none and is skipped), up to the stage's rows, or
    until they hold its tokens."""
    T = context_len
    if tokens is not None and include_prompts:  # every window counts its T tokens
        return max(1, math.ceil(tokens / (batch_size * T)))
    epochs = _first_epochs(stream, budget)
    while True:
        which, rows = _stage_rows(stream, epochs, budget)
        prompts, texts = _gathered(stream, which, rows, lambda src: (src.table.prompt_lens, src.table.text_lens))
        docs = 1 + prompts + texts
        counts = np.full((int(docs.sum()) - 1) // T, T) if include_prompts else window_counts(prompts, docs, T)
        counts = counts[counts > 0]
        if tokens is None or not len(counts):  # none: the runner says the stage gives no batch
            return max(1, math.ceil(len(counts) / batch_size))
        per_batch = np.add.reduceat(counts, np.arange(0, len(counts), batch_size))
        reached = int(np.searchsorted(np.cumsum(per_batch), tokens, side="left"))
        if reached < len(per_batch):
            return reached + 1
        epochs *= 2


def stream_steps(held: list[SizedRows], stats: RowStats, batching: str, batch_size: int, context_len: int,
                 include_prompts: bool, tokens: int) -> int:
    """tokens / (tokens per batch), the latter measured on the held-out rows: a packed window counts all its tokens
    but the prompts' where they are left out."""
    counted_per_sample = float(context_len)
    if held and batching == "rows":
        samples = counted = 0
        for v in held:
            s, c = stats(v)
            samples, counted = samples + int(s.sum()), counted + int(c.sum())
        counted_per_sample = counted / samples
    elif held and not include_prompts:  # the windows that train: those holding a target
        prompts = np.concatenate([v.table.prompt_lens[v.index] for v in held])
        docs = 1 + prompts + np.concatenate([v.table.text_lens[v.index] for v in held])
        counts = window_counts(prompts, docs, context_len, partial=True)
        counted_per_sample = float(counts[counts > 0].mean()) if (counts > 0).any() else counted_per_sample
    return max(1, math.ceil(tokens / (batch_size * counted_per_sample)))
