"""The two batching modes: `rows` (the original lmplay's, the default) and `packed` (nanoGPT-style).

rows: each row is a sample; a row longer than the context continues in further samples of the same
    batch (see rows.py); what does not fit in the batch is dropped, so no text is split across two
    optimizer steps and the model never learns a row's end from an update on its beginning. Samples are
    padded to the longest one; padding never counts in the loss.
packed: rows (eot + prompt + text) are joined into one stream and cut into full windows of context_len+1
    tokens, each window starting on the last token of the one before, so every token but the stage's
    first is a target exactly once; no padding. A row may span windows and batches: that is the point.
    Without prompts in the loss, a window that lies inside one prompt has no target: it is skipped, so a
    batch (and a stage's step) always trains on something.

Both take rows from a RowFeed and keep their position as plain integers.
"""

import numpy as np
import torch

from lmplay.data.batch import IGNORE_INDEX, Batch
from lmplay.data.interleave import RowFeed
from lmplay.data.rows import frame_row

MODES = ("rows", "packed")


def collate(samples: list[tuple[np.ndarray, np.ndarray]], eot_id: int) -> Batch:
    """(tokens, counted) samples -> Batch, right-padded with eot to the longest sample."""
    width = max(len(tokens) for tokens, _ in samples) - 1
    inputs = np.full((len(samples), width), eot_id, dtype=np.int64)
    targets = np.full((len(samples), width), IGNORE_INDEX, dtype=np.int64)
    for i, (tokens, counted) in enumerate(samples):
        n = len(tokens) - 1
        inputs[i, :n] = tokens[:-1]
        targets[i, :n] = np.where(counted[1:], tokens[1:], IGNORE_INDEX)
    return Batch(torch.from_numpy(inputs), torch.from_numpy(targets), tuple(len(tokens) - 1 for tokens, _ in samples))


class RowsBatcher:
    """Whole rows per batch. The position is the feed's, which is always at a row boundary."""

    def __init__(self, context_len: int, eot_id: int) -> None:
        self.context_len, self.eot_id = context_len, eot_id
        self.skipped = 0  # a row always has a target: its text's end

    def next_batch(self, feed: RowFeed, batch_size: int, include_prompts: bool) -> Batch | None:
        """`batch_size` samples, or fewer for the last batch of the stage's rows; None when there are none."""
        samples: list[tuple[np.ndarray, np.ndarray]] = []
        while len(samples) < batch_size:
            row = feed.take()
            if row is None:
                break
            samples += frame_row(row, self.context_len, self.eot_id, include_prompts,
                                 max_samples=batch_size - len(samples))
        return collate(samples, self.eot_id) if samples else None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict, feed: RowFeed) -> None:
        pass


class PackedBatcher:
    """Full windows cut from the stream of rows. The position is the feed's position before the row the
    next window starts in, plus the offset in that row."""

    def __init__(self, context_len: int, eot_id: int) -> None:
        self.context_len, self.eot_id = context_len, eot_id
        self.doc: tuple[np.ndarray, np.ndarray] | None = None  # (tokens, is_prompt) of eot + prompt + text
        self.offset = 0
        self.doc_start: dict | None = None  # the feed's state before it gave `doc`
        self.skipped = 0  # windows with no target, in this process

    def _next_doc(self, feed: RowFeed) -> bool:
        self.doc_start = feed.state_dict()
        row = feed.take()
        if row is None:
            self.doc = None
            return False
        tokens = np.concatenate(([self.eot_id], row.tokens)).astype(np.int64)
        is_prompt = np.zeros(len(tokens), dtype=bool)
        is_prompt[1:1 + row.prompt_len] = True
        self.doc, self.offset = (tokens, is_prompt), 0
        return True

    def _window(self, feed: RowFeed, include_prompts: bool) -> tuple[np.ndarray, np.ndarray] | None:
        need = self.context_len + 1
        parts, got = [], 0
        while got < need:
            if self.doc is None or self.offset >= len(self.doc[0]):
                if not self._next_doc(feed):
                    return None  # the stage's rows end inside this window: the partial window is dropped
            tokens, is_prompt = self.doc
            n = min(need - got, len(tokens) - self.offset)
            parts.append((tokens[self.offset:self.offset + n], is_prompt[self.offset:self.offset + n]))
            self.offset += n
            got += n
        self.offset -= 1  # the next window starts on this window's last token
        tokens = np.concatenate([t for t, _ in parts])
        is_prompt = np.concatenate([p for _, p in parts])
        return tokens, (np.ones(len(tokens), dtype=bool) if include_prompts else ~is_prompt)

    def next_batch(self, feed: RowFeed, batch_size: int, include_prompts: bool) -> Batch | None:
        windows = []
        while len(windows) < batch_size:
            window = self._window(feed, include_prompts)
            if window is None:
                break
            if window[1][1:].any():
                windows.append(window)
            else:
                self.skipped += 1
        return collate(windows, self.eot_id) if windows else None

    def state_dict(self) -> dict:
        return {"doc_start": self.doc_start, "offset": self.offset} if self.doc is not None else {}

    def load_state_dict(self, state: dict, feed: RowFeed) -> None:
        """Re-read the row the next window starts in (the feed must be at `doc_start`'s position first). Where
        the data changed since the save and that row is now shorter than the offset, go on at the next row."""
        self.doc, self.offset, self.doc_start = None, 0, None
        if state:
            feed.load_state_dict(state["doc_start"])
            if self._next_doc(feed):
                self.offset = min(int(state["offset"]), len(self.doc[0]))


def make_batcher(mode: str, context_len: int, eot_id: int) -> RowsBatcher | PackedBatcher:
    """`mode` is one of MODES, as parse_stage checked."""
    return (RowsBatcher if mode == "rows" else PackedBatcher)(context_len, eot_id)
