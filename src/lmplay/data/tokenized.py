"""Tokenized datasets: every source is tokenized once into an arrow file under the cache dir, keyed by
what it was made from (content identity, row format, tokenizer), and read back zero-copy.

Each tokenized row stores `tokens` (prompt then text), `prompt_len`, and `sent_ends` and `line_ends` (token
offsets of the sentence and line ends in its text), which is all the batchers need. A held-out validation set is cut from the
rows by a fixed seed, so it is the same for every run, tokenizer and training seed.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
from datasets import Dataset, Features, IterableDataset, List, Value

from lmplay.data.rows import Row, RowFormat, line_cuts, render_rows, sentence_cuts
from lmplay.data.sources import LoadedSource
from lmplay.data.tokenizers import Tokenizer
from lmplay.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when rendering or boundary rules change: old cache files are then ignored
HOLDOUT_TAG = 0x68_6F_6C_64  # "hold": keeps the held-out draw independent of other uses of the same seed
PARALLEL_ROWS = 200_000      # sources with more rows are tokenized with several processes


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """Where tokenized data is cached: `cache_dir`, else $LMPLAY_CACHE, else ~/.cache/lmplay."""
    return Path(cache_dir or os.environ.get("LMPLAY_CACHE") or "~/.cache/lmplay").expanduser()


def token_features(tokenizer: Tokenizer) -> Features:
    dtype = "uint16" if tokenizer.vocab_size <= 1 << 16 else "int32"
    return Features({"tokens": List(Value(dtype)), "prompt_len": Value("int32"), "sent_ends": List(Value("int32")),
                     "line_ends": List(Value("int32"))})


def token_offsets(text: str, char_cuts: list[int], token_ends: np.ndarray) -> np.ndarray:
    """Character offsets in `text` -> the number of tokens before each (token_ends: cumulative token bytes)."""
    if text.isascii():
        byte_cuts = np.asarray(char_cuts, dtype=np.int64)
    else:
        bounds = [0, *char_cuts]
        byte_cuts = np.cumsum([len(text[a:b].encode("utf-8")) for a, b in zip(bounds, bounds[1:])], dtype=np.int64)
    ends = np.searchsorted(token_ends, byte_cuts, side="right")
    return np.unique(ends[ends > 0]).astype(np.int32)


def boundary_token_ends(text: str, ids: np.ndarray, token_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Token offsets of the sentence ends and line ends of `text`, found by mapping the cuts (in characters)
    to bytes and the tokens to their byte lengths: no per-sentence tokenization."""
    token_ends = np.cumsum(token_bytes[ids])
    return token_offsets(text, sentence_cuts(text), token_ends), token_offsets(text, line_cuts(text), token_ends)


def tokenize_batch(batch: dict[str, list], fmt: RowFormat, tokenizer: Tokenizer) -> dict[str, list]:
    """datasets.map function: records -> tokenized rows. Records without text are dropped here, before
    any row index exists, so that "every row once per epoch" is about rows that can be trained on."""
    prompts, texts = render_rows(batch, fmt)
    keep = [i for i, t in enumerate(texts) if t.strip()]
    prompt_ids = tokenizer.encode_batch([prompts[i] for i in keep])
    text_ids = tokenizer.encode_batch([texts[i] for i in keep])
    out: dict[str, list] = {"tokens": [], "prompt_len": [], "sent_ends": [], "line_ends": []}
    for i, p, t in zip(keep, prompt_ids, text_ids):
        t = np.array(t, dtype=np.int64)
        out["tokens"].append(np.concatenate((np.array(p, dtype=np.int64), t)))
        out["prompt_len"].append(len(p))
        sent_ends, line_ends = boundary_token_ends(texts[i], t, tokenizer.token_bytes)
        out["sent_ends"].append(sent_ends)
        out["line_ends"].append(line_ends)
    return out


def cache_key(identity: str, fmt: RowFormat, tokenizer: Tokenizer) -> str:
    blob = json.dumps({"source": identity, "format": asdict(fmt), "tokenizer": tokenizer.name,
                       "vocab": tokenizer.vocab_size, "layout": str(token_features(tokenizer)),
                       "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def tokenize_records(records: Dataset, fmt: RowFormat, tokenizer: Tokenizer, identity: str, label: str,
                     cache_dir: Path, procs: int | None) -> tuple[Dataset, str]:
    """The tokenized rows of `records`, from the cache when they were tokenized before."""
    key = cache_key(identity, fmt, tokenizer)
    safe_label = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[-60:]
    path = cache_dir / "tokenized" / f"{safe_label}-{tokenizer.name}-{key}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    if procs is None:
        procs = min(os.cpu_count() or 1, 8) if len(records) > PARALLEL_ROWS else 1
    tokenized = records.map(tokenize_batch, batched=True, batch_size=256, remove_columns=records.column_names,
                            features=token_features(tokenizer), fn_kwargs={"fmt": fmt, "tokenizer": tokenizer},
                            cache_file_name=str(path), new_fingerprint=key, num_proc=procs if procs > 1 else None,
                            desc=f"tokenizing {label} ({tokenizer.name})")
    return tokenized, key


def tokenize_stream(records: IterableDataset, fmt: RowFormat, tokenizer: Tokenizer) -> IterableDataset:
    """Lazily tokenized rows of a stream (no cache: streams are for data too big to keep)."""
    return records.select_columns(list(fmt.columns)).map(
        tokenize_batch, batched=True, batch_size=256, remove_columns=list(fmt.columns),
        fn_kwargs={"fmt": fmt, "tokenizer": tokenizer})


class _ListColumn:
    """Zero-copy access to the i-th list of an arrow list column, across its chunks."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.offsets = [c.offsets.to_numpy() for c in column.chunks]
        self.values = [c.values.to_numpy(zero_copy_only=False) for c in column.chunks]
        self.starts = np.cumsum([0] + [len(c) for c in column.chunks])

    def __getitem__(self, i: int) -> np.ndarray:
        c = int(np.searchsorted(self.starts, i, side="right")) - 1
        j = i - self.starts[c]
        off = self.offsets[c]
        return self.values[c][off[j]:off[j + 1]]

    def lengths(self) -> np.ndarray:
        return np.concatenate([np.diff(o) for o in self.offsets]) if self.offsets else np.zeros(0, np.int64)


class TokenTable:
    """Random access to tokenized rows, as numpy views on the (memory-mapped) arrow data."""

    def __init__(self, tokenized: Dataset) -> None:
        if tokenized._indices is not None:
            tokenized = tokenized.flatten_indices()
        table = tokenized.data.table
        self._tokens = _ListColumn(table.column("tokens"))
        self._ends = _ListColumn(table.column("sent_ends"))
        self._lines = _ListColumn(table.column("line_ends"))
        self.prompt_lens = table.column("prompt_len").to_numpy().astype(np.int64)
        self.text_lens = self._tokens.lengths().astype(np.int64) - self.prompt_lens

    def __len__(self) -> int:
        return len(self.prompt_lens)

    def row(self, i: int) -> Row:
        return Row(self._tokens[i], int(self.prompt_lens[i]), self._ends[i], self._lines[i])

    def boundaries(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self._ends[i], self._lines[i]


class RowList:
    """In-memory rows with TokenTable's interface (the validation rows taken from a stream)."""

    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.prompt_lens = np.array([r.prompt_len for r in rows], dtype=np.int64)
        self.text_lens = np.array([r.text_len for r in rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def row(self, i: int) -> Row:
        return self.rows[i]

    def boundaries(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.rows[i].sent_ends, self.rows[i].line_ends


def stream_rows(tokenized: IterableDataset) -> Iterator[Row]:
    for r in tokenized:
        yield Row(np.asarray(r["tokens"], dtype=np.int64), int(r["prompt_len"]), np.asarray(r["sent_ends"]),
                  np.asarray(r["line_ends"]))


def holdout(num_rows: int, fraction: float, seed: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): a `fraction` of the rows (at least one) drawn with `seed`."""
    if fraction <= 0:
        return np.arange(num_rows), np.zeros(0, dtype=np.int64)
    count = max(1, round(num_rows * fraction))
    if count >= num_rows:
        raise ConfigError(f"{where} has {num_rows} row(s): too few to hold out "
                          f"validation_fraction={fraction}; use more data, validation_fraction=0 or a validation_path")
    perm = np.random.default_rng([seed % 2**32, HOLDOUT_TAG]).permutation(num_rows)
    return np.sort(perm[count:]), np.sort(perm[:count])


@dataclass
class SizedRows:
    """Rows that can be indexed: `index` lists the rows of `table` that belong here (train or validation)."""

    label: str
    table: TokenTable | RowList
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class StreamedRows:
    """Rows read lazily from a stream, after skipping the `skip` rows held out for validation."""

    label: str
    stream: IterableDataset
    skip: int
    buffer_size: int

    def open(self, seed: int, pass_index: int, start: int) -> Iterator[Row]:
        """The pass `pass_index` of this stream, shuffled through a buffer, from its `start`-th row."""
        ds = self.stream.skip(self.skip).shuffle(seed=seed % 2**32, buffer_size=self.buffer_size)
        ds.set_epoch(pass_index)
        return stream_rows(ds.skip(start) if start else ds)


@dataclass
class PreparedDataset:
    """One dataset of a stage, ready to batch: training rows, validation rows and a content key."""

    label: str
    train: SizedRows | StreamedRows
    validation: SizedRows
    key: str


def prepare_dataset(source: LoadedSource, tokenizer: Tokenizer, cache_dir: Path, validation_fraction: float,
                    validation_seed: int, stream_validation_rows: int, shuffle_buffer: int,
                    procs: int | None, where: str) -> PreparedDataset:
    """Tokenize (or read from cache) a loaded source and split off its validation rows."""
    spec, label = source.spec, source.spec.label
    where = f"{where}: dataset {label!r}"
    fraction = spec.validation_fraction if spec.validation_fraction is not None else validation_fraction
    if isinstance(source.records, IterableDataset):
        stream = tokenize_stream(source.records, source.fmt, tokenizer)
        skip, held_out = 0, []
        if source.validation is not None:
            held_out = list(stream_rows(tokenize_stream(source.validation, source.fmt, tokenizer)
                                        .take(stream_validation_rows)))
        elif fraction > 0:
            held_out = list(stream_rows(stream.take(stream_validation_rows)))
            skip = len(held_out)
        if next(iter(stream.skip(skip).take(1)), None) is None:
            raise ConfigError(f"{where} has no rows with text to train on (after the {skip} held out "
                              f"for validation); check its path, split and columns")
        key = f"stream:{spec.path}:{spec.name}:{spec.split}:{tokenizer.name}:{skip}"
        return PreparedDataset(label, StreamedRows(label, stream, skip, shuffle_buffer),
                               SizedRows(label, RowList(held_out), np.arange(len(held_out))), key)
    tokenized, key = tokenize_records(source.records, source.fmt, tokenizer, source.identity, label, cache_dir, procs)
    table = TokenTable(tokenized)
    if len(table) == 0:
        raise ConfigError(f"{where} has no rows with text to train on; check the file, its split and its columns")
    if source.validation is not None:
        val_tok, val_key = tokenize_records(source.validation, source.fmt, tokenizer, source.validation_identity,
                                            label + "-validation", cache_dir, procs)
        val_table = TokenTable(val_tok)
        return PreparedDataset(label, SizedRows(label, table, np.arange(len(table))),
                               SizedRows(label, val_table, np.arange(len(val_table))), key + val_key)
    train_idx, val_idx = holdout(len(table), fraction, validation_seed, where)
    return PreparedDataset(label, SizedRows(label, table, train_idx), SizedRows(label, table, val_idx),
                           f"{key}:{fraction}:{validation_seed}")
