"""Tokenized datasets: every source is tokenized once into a folder of numpy arrays under the cache dir,
keyed by what it was made from (content identity, row format, tokenizer), and read back memory-mapped.

Each tokenized row stores `tokens` (prompt then text), `prompt_len`, and `sent_ends` and `line_ends` (token
offsets of the sentence and line ends in its text), which is all the batchers need. On disk a list column is
a flat `.npy` of values plus a `.npy` of row start offsets, so reading the cache needs numpy only: HF
`datasets` (and pyarrow) are imported when a source has to be loaded or tokenized, not for cached text files.
A held-out validation set is cut from the rows by a fixed seed, so it is the same for every run, tokenizer
and training seed.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from lmplay.data.hf import hf_datasets
from lmplay.data.rows import Row, RowFormat, line_cuts, render_rows, sentence_cuts
from lmplay.data.tokenizers import Tokenizer
from lmplay.errors import ConfigError, OutputError
from lmplay.files import from_launch_dir

if TYPE_CHECKING:
    from datasets import Dataset, Features, IterableDataset

    from lmplay.data.sources import LoadedSource

log = logging.getLogger(__name__)

FORMAT_VERSION = 5  # the rows: bump when rendering or boundary rules change (new keys: old cache entries are ignored)
SAME_ROWS_SINCE = 4  # format 5 reads record cells' \r\n as \n: the same rows, a record each, re-cut inside them,
# so a checkpoint's data key of format 4 still fits its data (a resume says nothing of changed data)
STORAGE = "npy1"    # the on-disk layout: change it when the files change (a new folder name: old ones are ignored)
HOLDOUT_TAG = 0x68_6F_6C_64  # "hold": keeps the held-out draw independent of other uses of the same seed
PARALLEL_ROWS = 200_000      # sources with more rows are tokenized with several processes
LIST_COLUMNS = ("tokens", "sent_ends", "line_ends")  # each stored as <name>.npy (values) + <name>_starts.npy
CACHE_FILES = (*LIST_COLUMNS, *(f"{c}_starts" for c in LIST_COLUMNS), "prompt_len")


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """Where tokenized data is cached: `cache_dir`, else $LMPLAY_CACHE, else ~/.cache/lmplay."""
    return Path(from_launch_dir(str(cache_dir or os.environ.get("LMPLAY_CACHE") or "~/.cache/lmplay"), to_create=True)
                ).expanduser()


def token_dtype(tokenizer: Tokenizer) -> str:
    return "uint16" if tokenizer.vocab_size <= 1 << 16 else "int32"


def token_features(tokenizer: Tokenizer) -> Features:
    """The columns `tokenize_batch` produces, as HF features (for datasets.map)."""
    ds = hf_datasets()
    return ds.Features({"tokens": ds.List(ds.Value(token_dtype(tokenizer))), "prompt_len": ds.Value("int32"),
                        "sent_ends": ds.List(ds.Value("int32")), "line_ends": ds.List(ds.Value("int32"))})


def row_schema(tokenizer: Tokenizer) -> str:
    """The tokenized rows' columns and dtypes, part of the cache key (and so of a checkpoint's data key).
    Written as HF Features print them, as the key has said since format 2: keys stay valid across versions."""
    return (f"{{'tokens': List(Value('{token_dtype(tokenizer)}')), 'prompt_len': Value('int32'), "
            f"'sent_ends': List(Value('int32')), 'line_ends': List(Value('int32'))}}")


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


def cache_key(identity: str, fmt: RowFormat, tokenizer: Tokenizer, version: int = FORMAT_VERSION) -> str:
    blob = json.dumps({"source": identity, "format": asdict(fmt), "tokenizer": tokenizer.name,
                       "vocab": tokenizer.vocab_size, "layout": row_schema(tokenizer),
                       "version": version}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def tokenize_records(records: Callable[[], Dataset], fmt: RowFormat, tokenizer: Tokenizer, identity: str,
                     label: str, cache_dir: Path, procs: int | None, where: str) -> tuple[TokenTable, str]:
    """The tokenized rows of `records` (called only when they were not tokenized before) and their cache key;
    a damaged cache entry is tokenized again."""
    key = cache_key(identity, fmt, tokenizer)
    safe_label = "".join(c if c.isalnum() or c in "._-" else "_" for c in label)[-60:]
    path = cache_dir / "tokenized" / f"{safe_label}-{tokenizer.name}-{key}.{STORAGE}"
    if not is_complete(path):  # the same rows read through another path (a copy, ./a.txt for a.txt) are one entry
        made = sorted((cache_dir / "tokenized").glob(f"*-{glob.escape(tokenizer.name)}-{key}.{STORAGE}"))
        path = next((p for p in made if is_complete(p)), path)
    if is_complete(path):
        try:
            return TokenTable(path), key
        except (OSError, ValueError) as e:  # truncated or replaced by hand, a disk error: tokenize again
            log.warning("the tokenized cache %s is damaged (%s); tokenizing %s again", path, e, label)
            shutil.rmtree(path, ignore_errors=True)
    log.info("tokenizing %s (%s) into %s: once, later runs read it from there", label, tokenizer.name, path.parent)
    rows = records()  # a big source takes minutes, with no bar where there is no terminal: the line says why
    if len(rows) == 0:
        raise ConfigError(f"{where} has no rows; check the file, its split and its columns")
    try:
        build_cache(rows, fmt, tokenizer, key, label, path, procs)
    except UnicodeDecodeError as e:  # arrow reads a json's strings lazily: bad bytes show up here
        raise ConfigError(f"{where} holds text that is not UTF-8 ({e.reason} at byte {e.start}); save it as "
                          f"UTF-8") from None
    except OSError as e:  # a full disk, a read-only or size-limited cache: the build left nothing behind
        elsewhere = "set curriculum.cache_dir=DIR (or LMPLAY_CACHE=DIR) to a directory with room that you can write"
        fix = {errno.ENOSPC: f"{free_space(cache_dir)}: free some space there, or {elsewhere}",
               errno.EDQUOT: f"over your disk quota: free some space there, or {elsewhere}",
               errno.EFBIG: "a file-size limit of this shell stops it (ulimit -f): lift it, e.g. ulimit -f unlimited",
               errno.EROFS: f"a read-only file system: {elsewhere}"}.get(e.errno, elsewhere)
        raise OutputError(f"could not write the tokenized {label} into the cache {cache_dir} ({e.strerror or e}); "
                          f"{fix}") from None
    return TokenTable(path), key


def free_space(path: Path) -> str:
    try:
        return f"{shutil.disk_usage(path).free / 2**30:.1f} GiB free there"
    except OSError:
        return "its free space unknown"


def is_complete(path: Path) -> bool:
    return all((path / f"{name}.npy").is_file() for name in CACHE_FILES)


def build_cache(records: Dataset, fmt: RowFormat, tokenizer: Tokenizer, key: str, label: str, path: Path,
                procs: int | None) -> None:
    """Tokenize `records` with datasets.map (in parallel for big sources) and write the rows as .npy files
    into the folder `path`, atomically (written aside, then renamed): a folder that exists is complete."""
    if procs is None:
        procs = min(os.cpu_count() or 1, 8) if len(records) > PARALLEL_ROWS else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_builds(path)
    me = f"{socket.gethostname()}-{os.getpid()}"
    tmp = path.with_name(f".{path.name}.tmp-{me}")
    arrow_dir = path.with_name(f".{path.name}.map-{me}")
    for d in (tmp, arrow_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    try:
        if procs > 1:  # a cell the rows refuse, raised in a worker of datasets' pool, could hang it for good
            check_cells(records, fmt)
        note_number_columns(records, fmt, label)
        tokenized = records.map(tokenize_batch, batched=True, batch_size=256, remove_columns=records.column_names,
                                features=token_features(tokenizer), fn_kwargs={"fmt": fmt, "tokenizer": tokenizer},
                                cache_file_name=str(arrow_dir / "tokenized.arrow"), new_fingerprint=key,
                                num_proc=procs if procs > 1 else None, desc=f"tokenizing {label} ({tokenizer.name})")
        if dropped := len(records) - len(tokenized):
            missing = {"chat": f"no assistant turn with text in column {fmt.messages!r}",
                       "pair": f"no text in column {fmt.truth!r}"}.get(fmt.kind, f"no text in column {fmt.text!r}")
            log.warning("%s: %d of its %d records have %s and are left out (a column named wrong, or an export that "
                        "left cells empty?)", label, dropped, len(records), missing)
        write_columns(tokenized.data.table, tmp)
        del tokenized
        if path.exists() and not is_complete(path):
            shutil.rmtree(path)  # left incomplete (by hand, or by a crash of a non-atomic copy)
        try:
            os.rename(tmp, path)
        except OSError:
            if not is_complete(path):
                raise  # else another process (a parallel sweep job) finished it first: the same rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(arrow_dir, ignore_errors=True)


def check_cells(records: Dataset, fmt: RowFormat) -> None:
    """Every record rendered as a row, without tokenizing (a fraction of its cost): a bad cell is a ConfigError in
    this process, not one in a pool worker."""
    for batch in records.select_columns(list(fmt.columns)).iter(batch_size=4096):
        render_rows(batch, fmt)


def note_number_columns(records: Dataset, fmt: RowFormat, label: str) -> None:
    """A text or prompt column of numbers or booleans trains on their text ("0", "1", ...): almost always the wrong
    column named (a truth column of numbers is an answer, and fine)."""
    for column in (fmt.text, *fmt.prompt):
        dtype = getattr(records.features.get(column), "dtype", "")
        if dtype.startswith(("int", "uint", "float", "bool")):
            log.warning("%s: column %r holds %s values, which train as their text (\"1\", \"True\"); name the "
                        "column of text in the dataset's entry (text=COLUMN, or prompt=/truth=)", label, column, dtype)


def remove_dead_builds(path: Path) -> None:
    """What builds of `path` on this host left when they were killed (SIGKILL, a node's preemption), where their
    process is gone: a big dataset's arrow files would otherwise stay in the cache for good. Builds on other
    hosts of a shared cache are left alone (their processes cannot be seen from here)."""
    host = socket.gethostname()
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*-{glob.escape(host)}-*"):
        pid = leftover.name.rsplit("-", 1)[1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_columns(table, out: Path) -> None:
    """An arrow table of tokenized rows -> .npy files: each list column as its flat values and the int64
    offsets where each row starts (num_rows + 1 of them), written chunk by chunk so big sources fit."""
    for name in LIST_COLUMNS:
        chunks = table.column(name).chunks
        offsets = [c.offsets.to_numpy().astype(np.int64) for c in chunks]
        lengths = [np.diff(o) for o in offsets]
        starts = np.zeros(table.num_rows + 1, dtype=np.int64)
        if lengths:
            np.cumsum(np.concatenate(lengths), out=starts[1:])
        dtype = np.dtype(str(table.schema.field(name).type.value_type))  # uint16 / int32
        values = np.lib.format.open_memmap(out / f"{name}.npy", mode="w+", dtype=dtype, shape=(int(starts[-1]),))
        at = 0
        for c, o in zip(chunks, offsets):
            part = c.values.slice(int(o[0]), int(o[-1] - o[0])).to_numpy(zero_copy_only=False)
            values[at:at + len(part)] = part
            at += len(part)
        values.flush()
        del values
        np.save(out / f"{name}_starts.npy", starts)
    np.save(out / "prompt_len.npy", table.column("prompt_len").to_numpy().astype(np.int32))


def tokenize_stream(records: IterableDataset, fmt: RowFormat, tokenizer: Tokenizer) -> IterableDataset:
    """Lazily tokenized rows of a stream (no cache: streams are for data too big to keep)."""
    return records.select_columns(list(fmt.columns)).map(
        tokenize_batch, batched=True, batch_size=256, remove_columns=list(fmt.columns),
        fn_kwargs={"fmt": fmt, "tokenizer": tokenizer})


def _load(path: Path) -> np.ndarray:
    return np.asarray(np.load(path, mmap_mode="r"))  # a plain (read-only) ndarray view of the mapped file


class TokenTable:
    """Random access to tokenized rows, as numpy views on the memory-mapped cache files."""

    def __init__(self, path: Path) -> None:
        self._tokens, self._ends, self._lines = (_load(path / f"{name}.npy") for name in LIST_COLUMNS)
        self._token_starts, self._end_starts, self._line_starts = (_load(path / f"{name}_starts.npy")
                                                                   for name in LIST_COLUMNS)
        self.prompt_lens = _load(path / "prompt_len.npy").astype(np.int64)
        for values, starts in ((self._tokens, self._token_starts), (self._ends, self._end_starts),
                               (self._lines, self._line_starts)):
            if len(starts) != len(self.prompt_lens) + 1 or starts[0] != 0 or starts[-1] != len(values):
                raise ValueError(f"its rows and their offsets disagree ({len(values)} values, "
                                 f"{len(starts)} offsets ending at {starts[-1] if len(starts) else None})")
        self.text_lens = np.diff(self._token_starts) - self.prompt_lens

    def __len__(self) -> int:
        return len(self.prompt_lens)

    def row(self, i: int) -> Row:
        return Row(self._tokens[self._token_starts[i]:self._token_starts[i + 1]], int(self.prompt_lens[i]),
                   *self.boundaries(i))

    def boundaries(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return (self._ends[self._end_starts[i]:self._end_starts[i + 1]],
                self._lines[self._line_starts[i]:self._line_starts[i + 1]])


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
                          f"validation_fraction={fraction}; use more data, curriculum.validation_fraction=0 (or validation_fraction: 0 "
                          f"in the dataset's entry) or a validation_path")
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
        if start:
            ds = ds.skip(start)
        ds.set_epoch(pass_index)  # after skip(), which starts its copy at epoch 0 (a resume read pass 0's order)
        return stream_rows(ds)


@dataclass
class PreparedDataset:
    """One dataset of a stage, ready to batch: training rows, validation rows and a content key; `same_rows_key`,
    the key as SAME_ROWS_SINCE's format made it (a checkpoint's, from before an upgrade that kept the rows)."""

    label: str
    train: SizedRows | StreamedRows
    validation: SizedRows
    key: str
    same_rows_key: str


def prepare_dataset(source: LoadedSource, tokenizer: Tokenizer, cache_dir: Path, validation_fraction: float,
                    validation_seed: int, stream_validation_rows: int, shuffle_buffer: int,
                    procs: int | None, where: str) -> PreparedDataset:
    """Tokenize (or read from cache) a loaded source and split off its validation rows."""
    spec, label = source.spec, source.spec.label
    where = f"{where}: dataset {label!r}"
    fraction = spec.validation_fraction if spec.validation_fraction is not None else validation_fraction
    if source.spec.streaming:
        stream = tokenize_stream(source.records, source.fmt, tokenizer)
        skip, held_out = 0, []
        try:  # a stream reads its file only now: a field= naming no key fails here
            if source.has_validation:
                held_out = list(stream_rows(tokenize_stream(source.validation, source.fmt, tokenizer)
                                            .take(stream_validation_rows)))
            elif fraction > 0:
                held_out = list(stream_rows(stream.take(stream_validation_rows)))
                skip = len(held_out)
            first = next(iter(stream.skip(skip).take(1)), None)
        except (KeyError, ValueError) as e:
            if not spec.field:
                raise
            what = "is no top-level key" if isinstance(e, KeyError) else "holds no list of records"
            raise ConfigError(f"{where}: field={spec.field!r} {what} of {spec.data_files or spec.path}") from e
        if first is None:
            fewer = (f", or hold out fewer with curriculum.stream_validation_rows=N (a streamed dataset without a "
                     f"validation split holds out its first {stream_validation_rows})") if skip else ""
            raise ConfigError(f"{where} has no rows with text to train on (after the {skip} held out "
                              f"for validation); check its path, split and columns{fewer}")
        key = f"stream:{spec.path}:{spec.name}:{spec.split}:{tokenizer.name}:{skip}"
        return PreparedDataset(label, StreamedRows(label, stream, skip, shuffle_buffer),
                               SizedRows(label, RowList(held_out), np.arange(len(held_out))), key, key)
    table, key = tokenize_records(lambda: source.records, source.fmt, tokenizer, source.identity, label, cache_dir,
                                  procs, where)
    if len(table) == 0:
        chats = (f" (a chat row trains on its last turn with role: assistant, and no row of {source.fmt.messages!r} "
                 f"has one with text)") if source.fmt.kind == "chat" else ""
        raise ConfigError(f"{where} has no rows with text to train on{chats}; check the file, its split and its columns")
    earlier = cache_key(source.identity, source.fmt, tokenizer, SAME_ROWS_SINCE)
    if source.has_validation:
        val_table, val_key = tokenize_records(lambda: source.validation, source.fmt, tokenizer,
                                              source.validation_identity, label + "-validation", cache_dir, procs,
                                              f"{where} (its validation rows)")
        earlier += cache_key(source.validation_identity, source.fmt, tokenizer, SAME_ROWS_SINCE)
        return PreparedDataset(label, SizedRows(label, table, np.arange(len(table))),
                               SizedRows(label, val_table, np.arange(len(val_table))), key + val_key, earlier)
    train_idx, val_idx = holdout(len(table), fraction, validation_seed, where)
    held_out = f":{fraction}:{validation_seed}"
    return PreparedDataset(label, SizedRows(label, table, train_idx), SizedRows(label, table, val_idx),
                           key + held_out, earlier + held_out)
