"""Dataset sources: named datasets, dataset specs, and loading them through HF `datasets`.

A stage lists its datasets as names from DATASETS (the original lmplay's set plus the embedded corpus),
as a name with changes (`{dataset: wiki_en, path: /my/copy}`), or as a full spec (`{path: FILE}`).
`path` is a hub dataset id, a local file (.txt/.md: paragraph rows; .json/.jsonl/.parquet/.csv: records,
optionally .gz), a local folder (written by `save_to_disk`, or files in hub layout that `load_dataset`
reads), or `embedded:NAME`.

Without network, a hub id is tried once against the local HF cache, then fails at once with a ConfigError
that says how to point at a local copy: nothing waits on connection retries.

HF `datasets` is imported only when records are really read: a plain text file (the embedded corpus
included) is identified by its bytes and its records are built only if its tokenized cache is missing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import os
import re
import socket
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import huggingface_hub.constants

from lmplay.data.corpus import DEFAULT_ROW_CHARS, EMBEDDED, embedded_path, file_digest, paragraph_rows, text_lines
from lmplay.data.hf import hf_datasets
from lmplay.data.rows import RowFormat
from lmplay.errors import ConfigError
from lmplay.files import from_launch_dir

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 3.0
TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
RECORD_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
FILE_BUILDERS = ("json", "parquet", "csv", "text")  # `path: json` with data_files=FILES
HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # a hub repo id, `name` or `owner/name`: fullmatch it


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset comes from and which of its columns make rows (see rows.RowFormat).

    With no column given, a dataset with a `text` column gives text rows (titled if it has `title`, unless its
    entry says `title: null`), one with `prompt` and `truth` gives pairs, and one with `messages` gives chats.
    """

    path: str | None = None
    name: str | None = None                 # the HF config name, e.g. 20231101.en
    split: str = "train"
    data_files: Any = None                  # as for datasets.load_dataset
    field: str | None = None                # a .json file whose records are the list under this key ({"data": [...]})
    streaming: bool = False                 # read the hub lazily instead of downloading (see interleave.py)
    validation_split: str | None = None     # a held-out split the dataset ships with (instead of a fraction)
    validation_path: str | None = None      # a local file/folder of the same kind holding validation rows
    validation_fraction: float | None = None  # this dataset's held-out fraction (default: the curriculum's)
    text: str | None = None
    title: str | None = None                # a column of titles; "" (`title: null` given): none, whatever the columns
    prompt: str | list[str] | None = None
    truth: str | None = None
    messages: str | None = None
    row_chars: int | None = None            # plain text files: characters per paragraph row (DEFAULT_ROW_CHARS)
    label: str = dataclasses.field(default="", compare=False)  # how messages name it: the DATASETS key or the path


# The original lmplay's datasets (wikipedia, TinyStories, OpenOrca, orca-math, smoltalk, cosmopedia)
# and the embedded corpus. TinyStories and smoltalk ship their own held-out split.
DATASETS: dict[str, dict[str, Any]] = {
    "shakespeare": dict(path="embedded:shakespeare"),
    "wiki_en": dict(path="wikimedia/wikipedia", name="20231101.en", title="title", text="text"),
    "wiki_es": dict(path="wikimedia/wikipedia", name="20231101.es", title="title", text="text"),
    "tinystories": dict(path="roneneldan/TinyStories", text="text", validation_split="validation"),
    "openorca": dict(path="Open-Orca/OpenOrca", prompt=["system_prompt", "question"], truth="response"),
    "orcamathword200": dict(path="microsoft/orca-math-word-problems-200k", prompt="question", truth="answer"),
    "smoltalk_all": dict(path="HuggingFaceTB/smoltalk", name="all", messages="messages", validation_split="test"),
    "cosmopedia_v2": dict(path="HuggingFaceTB/smollm-corpus", name="cosmopedia-v2", prompt="prompt", truth="text"),
}
SPEC_KEYS = {f.name for f in dataclasses.fields(DatasetSpec)} - {"label"}


def is_one_file(path: str) -> bool:
    """A local file (or the embedded corpus) is one split of rows; a folder or a hub name may hold several."""
    return path.startswith("embedded:") or Path(path).expanduser().is_file()


def resolve_spec(entry: str | dict, where: str, config_key: str) -> DatasetSpec:
    """A stage's dataset entry as a spec: a DATASETS name, `{dataset: NAME, key: value...}`, or a spec dict.
    `config_key`: the entry's, for a message's override."""
    if isinstance(entry, str):
        entry = {"dataset": entry}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: dataset entry {entry!r} is neither a dataset name nor a mapping")
    entry = dict(entry)
    base_name = entry.pop("dataset", None)
    unknown = set(entry) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown dataset key(s) {', '.join(sorted(unknown))}; "
                          f"valid keys: dataset, {', '.join(sorted(SPEC_KEYS))}")
    base: dict[str, Any] = {}
    if base_name is not None:
        if base_name not in DATASETS:
            raise ConfigError(f"{where}: dataset {base_name!r} is unknown; use one of: {', '.join(DATASETS)}, "
                              f"or give a path (e.g. {{path: /data/file.txt}})")
        base = dict(DATASETS[base_name])
    spec = {**base, **entry}
    if "path" not in entry and base_name is None and entry:  # `+KEY.row_chars=...` replaced a preset's name whole
        given = ", ".join(f"{k}: {v}" for k, v in entry.items())
        raise ConfigError(f"{where}: the dataset entry {{{given}}} names no dataset and no path; an entry that is a "
                          f"preset's name (datasets: [shakespeare]) is replaced whole by a + override of one of its "
                          f"keys: give the name too, '{config_key}={{dataset: NAME, {given}}}' (or path: FILE)")
    if not spec.get("path"):
        raise ConfigError(f"{where}: the dataset has no path; give one (curriculum.path=FILE for the "
                          f"text_file and two_stage curricula)")
    if spec.get("prompt") is not None and isinstance(spec["prompt"], str):
        spec["prompt"] = [spec["prompt"]]
    if spec.get("validation_fraction") is not None:
        check_fraction(spec["validation_fraction"], f"{where}: validation_fraction")
    row_chars = spec.get("row_chars")
    if row_chars is not None and (isinstance(row_chars, bool) or not isinstance(row_chars, int) or row_chars < 1):
        raise ConfigError(f"{where}: row_chars={row_chars!r} must be a positive integer (characters per text row)")
    label = base_name or str(spec["path"])
    for key in ("path", "validation_path"):
        if isinstance(spec.get(key), str):
            spec[key] = from_launch_dir(spec[key])
    if spec["path"] in FILE_BUILDERS:  # `path: json`: its data_files are paths (beside a folder path, inside it)
        spec["data_files"] = launch_dir_files(spec.get("data_files"))  # files always: a missing one named there
    path = str(spec["path"])
    one_file = is_one_file(path)
    if one_file and "validation_split" not in entry:  # a preset's: its local copy in one file holds out a fraction
        spec["validation_split"] = None
    if "title" in entry and entry["title"] is None:  # else a `title` column titles every row
        spec["title"] = ""
    return DatasetSpec(**spec, label=label)


def check_fraction(value: Any, key: str) -> None:
    """A held-out share of rows: a number in [0, 1) (a negative one turned validation off without a word)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} must be a number in [0, 1): the share of rows held out")


Records = Callable[[], "Dataset | IterableDataset"]  # loads a dataset's records when called


@dataclass
class LoadedSource:
    """A dataset's records before tokenization, loaded on first use (`records`, `validation`). `identity`
    names their content for cache keys; `validation` holds the dataset's own held-out records when it has
    them (`has_validation`)."""

    spec: DatasetSpec
    load_records: Records
    fmt: RowFormat
    identity: str
    load_validation: Records | None = None
    validation_identity: str = ""

    @functools.cached_property
    def records(self) -> Dataset | IterableDataset:
        return self.load_records()

    @functools.cached_property
    def validation(self) -> Dataset | IterableDataset | None:
        return None if self.load_validation is None else self.load_validation()

    @property
    def has_validation(self) -> bool:
        return self.load_validation is not None


def launch_dir_files(files: Any) -> Any:
    """data_files (a path, a list of them, or a mapping of splits to either) read from the launch dir, as
    from_launch_dir reads a path."""
    if isinstance(files, str):
        return from_launch_dir(files, to_create=True)
    if isinstance(files, list):
        return [launch_dir_files(f) for f in files]
    if isinstance(files, dict):
        return {split: launch_dir_files(f) for split, f in files.items()}
    return files


def split_files(data_files: Any, base: Path) -> dict[str, list[Path]]:
    """Each split's local files as datasets resolves them (data_files: a pattern, a list or a mapping of splits;
    none: the folder's file names name the splits); none where one is remote or matches nothing (datasets says
    which as it loads)."""
    from datasets.data_files import DataFilesDict, get_data_patterns, sanitize_patterns

    try:
        patterns = get_data_patterns(str(base)) if data_files is None else sanitize_patterns(data_files)
        if any("://" in str(p) for ps in patterns.values() for p in ps):
            return {}
        resolved = DataFilesDict.from_patterns(patterns, base_path=str(base))
    except (FileNotFoundError, ValueError):
        return {}
    return {str(split): sorted(Path(f) for f in files) for split, files in resolved.items()}


def files_digest(files: list[Path]) -> str:
    return ",".join(file_digest(f) for f in files)


def load_source(spec: DatasetSpec, where: str, entry: str) -> LoadedSource:
    """Load a dataset's records (downloading or reading the HF cache for hub ids) and check its columns;
    a plain text file is only identified here (its records are built when they are first used). `entry` is the
    dataset's config key (curriculum.stages.1.datasets.0), for the override a message suggests."""
    one_file = is_one_file(spec.path)
    if spec.field is not None and not reads_json(spec):
        raise ConfigError(f"{where}: field={spec.field!r} reads .json files whose records are the list under that "
                          f"top-level key, and {spec.path} holds none (a .jsonl file has a record a line); drop field=")
    if spec.validation_split is not None and spec.validation_split == spec.split:
        raise ConfigError(f"{where}: split and validation_split both name {spec.split!r}: the run would validate on "
                          f"the rows it trains on; name another split for one of them")
    if one_file and spec.split != "train":  # a file is one split: every other name would read the same rows
        raise ConfigError(f"{where}: {spec.path} is one file, with no split {spec.split!r}; drop split= "
                          f"(it picks a split of a hub dataset or a dataset folder)")
    records, identity, columns = _load_records(spec, spec.path, spec.split, where)
    if spec.row_chars is not None and not identity.startswith("text:"):
        raise ConfigError(f"{where}: row_chars={spec.row_chars} cuts plain text files into rows, and {spec.path} "
                          f"holds records, a row each; drop row_chars (on the command line: ++{entry}.row_chars=null)")
    validation, validation_identity, val_columns = None, "", None
    if spec.validation_path:
        check_validation_path(spec, where)
        validation, validation_identity, val_columns = _load_records(spec, spec.validation_path, spec.split, where)
        if files_read(validation_identity) & files_read(identity):  # a copy of a file it trains on
            raise ConfigError(f"{where}: validation_path={spec.validation_path} holds a file of the same content "
                              f"as one the dataset trains on: the run would validate on rows it trains on; name "
                              f"other files")
    elif spec.validation_split and one_file:
        raise ConfigError(f"{where}: {spec.path} is one file, with no split {spec.validation_split!r}; drop "
                          f"validation_split= (validation_fraction=F holds out a fraction of its rows, validation_path="
                          f"FILE reads another file)")
    elif spec.validation_split and spec.validation_fraction is not None:
        raise ConfigError(f"{where}: validation_fraction={spec.validation_fraction} and validation_split="
                          f"{spec.validation_split!r} both choose the held-out rows, and the split wins: drop one "
                          f"(validation_split: null in the dataset's entry holds out the fraction of its rows)")
    elif spec.validation_split:
        validation, validation_identity, val_columns = _load_records(spec, spec.path, spec.validation_split, where)
    fmt = row_format(spec, columns, where, entry, listed_records(spec, records, columns))
    if validation is not None:
        row_format(spec, val_columns, where + " (validation)", entry)
    return LoadedSource(spec, records, fmt, identity, validation, validation_identity)


def reads_json(spec: DatasetSpec) -> bool:
    """Whether datasets' json builder reads the dataset: `path: json`, a .json file, a folder of them (not a
    save_to_disk folder), or a hub dataset (whose builder only the hub knows)."""
    local = Path(spec.path).expanduser()
    if spec.path == "json" or not (local.exists() or spec.path.startswith("embedded:")):
        return spec.path == "json" or HUB_ID.fullmatch(spec.path) is not None
    if local.is_file():
        return file_kind(local) == ".json"
    saved = (local / "state.json").exists() or (local / "dataset_dict.json").exists()
    return not saved and {file_kind(Path(f)) for f in data_files_of(local) if file_kind(Path(f))} == {".json"}


def listed_records(spec: DatasetSpec, records: Records, columns: list[str] | None) -> str | None:
    """The one column of a .json dataset that holds a list of records ({"data": [{...}, ...]}), which field= reads
    as the records; None for any other (a one-column dataset of text is told text=COLUMN instead)."""
    if columns is None or len(columns) != 1 or "text" in columns or spec.field is not None or not reads_json(spec):
        return None
    loaded = records()  # loaded already: a one-column dataset is no text file, whose rows build late
    feature = loaded.features.get(columns[0]) if loaded.features is not None else None
    element = feature[0] if isinstance(feature, list) and feature else getattr(feature, "feature", None)
    one_row = not hasattr(loaded, "__len__") or len(loaded) == 1  # {"data": [...]} is one record of one list
    return columns[0] if isinstance(element, dict) and one_row else None


def row_format(spec: DatasetSpec, columns: list[str] | None, where: str, entry: str, listed: str | None = None
               ) -> RowFormat:
    """The RowFormat the spec asks for (or that the columns suggest), checked against the columns; `listed`: the
    column that holds the records (listed_records)."""
    if spec.messages:
        fmt = RowFormat("chat", messages=spec.messages)
    elif spec.truth or spec.prompt:
        if not spec.truth:
            raise ConfigError(f"{where}: a prompt needs a truth column too; add truth=COLUMN")
        fmt = RowFormat("pair", prompt=tuple(spec.prompt or ()), truth=spec.truth)
    elif spec.text:
        fmt = RowFormat("text", text=spec.text, title=spec.title or None)
    elif columns is None or "text" in columns:
        titled = spec.title is None and columns and "title" in columns
        fmt = RowFormat("text", text="text", title="title" if titled else spec.title or None)
    elif "prompt" in columns and "truth" in columns:
        fmt = RowFormat("pair", prompt=("prompt",), truth="truth")
    elif "messages" in columns:
        fmt = RowFormat("chat", messages="messages")
    elif listed:
        raise ConfigError(f"{where}: dataset {spec.label!r} has one column, {listed!r}, a list of records, and no "
                          f"'text' column: read the records under that key with +{entry}.field={listed} (or field: "
                          f"{listed} in the dataset's entry)")
    else:
        raise ConfigError(f"{where}: dataset {spec.label!r} has no 'text' column (columns: {', '.join(columns)}); "
                          f"name the column in the dataset's entry, {{path: ..., text: COLUMN}} (or prompt: and "
                          f"truth:), or on the command line: ++{entry}.text=COLUMN")
    if columns is not None:
        for col in fmt.columns:
            if col not in columns:
                raise ConfigError(f"{where}: dataset {spec.label!r} has no column {col!r} (columns: "
                                  f"{', '.join(columns)}); map an existing column instead")
    return fmt


def _column_names(records: Dataset | IterableDataset) -> list[str] | None:
    """Known column names, or None for a stream whose features the hub does not declare."""
    return list(records.column_names) if records.column_names is not None else None


def _loaded(records: Dataset | IterableDataset, identity: str) -> tuple[Records, str, list[str] | None]:
    return (lambda: records), identity, _column_names(records)


def _load_records(spec: DatasetSpec, path: str, split: str, where: str) -> tuple[Records, str, list[str] | None]:
    """(the records' loader, their identity, their column names) of one path and split."""
    if path.startswith("embedded:"):
        name = path.split(":", 1)[1]
        if name not in EMBEDDED:
            raise ConfigError(f"{where}: embedded corpus {name!r} is unknown; use one of: {', '.join(EMBEDDED)}")
        return _text_file_records([embedded_path(name)], spec)
    local = Path(path).expanduser()
    if local.is_file():
        kind = file_kind(local)
        if kind in TEXT_SUFFIXES or kind == "":
            return _text_file_records([local], spec)
        if kind in RECORD_BUILDERS:
            digest = None if spec.streaming else file_digest(local)
            records, identity = _hf_records(spec, RECORD_BUILDERS[kind], None, split="train", where=where,
                                            data_files=str(local), content=digest)
            if identity != "stream":  # its content, as a text file's: datasets' fingerprint changed with its mtime (a
                identity = f"records:{digest}:{spec.field or ''}"  # touch, a checkout: re-tokenized)
            return _loaded(records, identity)
        raise ConfigError(f"{where}: don't know how to read {local} (suffix {kind!r}); use .txt/.md text, "
                          f".json/.jsonl/.parquet/.csv records, or a dataset folder")
    if local.is_dir():
        if (local / "state.json").exists() or (local / "dataset_dict.json").exists():
            return _loaded(*_saved_records(local, spec, split, where))
        files: list[Path] = []
        if spec.data_files is None:
            kind, files = _folder_files(local, split, split_key(spec, split), where,
                                        read={spec.split, spec.validation_split})
            if kind == "text":
                return _text_file_records(files, spec)
        return _local_records(spec, str(local), spec.name, split, where, local, files)
    if spec.data_files is not None and path in FILE_BUILDERS:
        return _local_records(spec, path, None, split, where, Path.cwd(), [])
    check_file_exists(path, where)
    if not HUB_ID.fullmatch(path):
        raise ConfigError(f"{where}: {path!r} is neither an existing file nor a hub dataset id like org/name")
    return _loaded(*_hub_records(spec, path, split, where))


def check_file_exists(path: str, where: str) -> None:
    """A dataset path that names a local file (a path, or a data file's suffix) and is not there: no hub id.
    Checked at a sweep's start too, before any job trains (a missing file of its second job's was said after the
    first had trained for hours)."""
    local = Path(path).expanduser()
    if local.exists() or path.startswith("embedded:"):
        return
    if path.startswith(("/", ".", "~")) or local.suffix.lower() in TEXT_SUFFIXES | set(RECORD_BUILDERS) | {".gz"}:
        raise ConfigError(f"{where}: dataset file {path} does not exist; check the path "
                          f"(curriculum.path=FILE for curriculum=text_file)")


def file_kind(path: Path) -> str:
    """A data file's suffix, lower case, through a .gz: "a.JSONL.gz" -> ".jsonl"; "" for none ("corpus.gz" too)."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [".gz"]:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def is_data_file(path: Path) -> bool:
    """A file with a data suffix, or a suffix-less .gz (text): a LICENSE beside the data is none."""
    return bool(file_kind(path)) or path.suffix.lower() == ".gz"


def data_files_of(folder: Path) -> list[str]:
    """Every file of a folder that `datasets` would consider (not README.md or hidden ones)."""
    hf_datasets()  # its import-time notes quieted first
    from datasets.data_files import DataFilesDict

    return list(DataFilesDict.from_patterns({"all": ["**"]}, base_path=str(folder))["all"])


def split_name(split: str) -> str:
    """The split a sliced split reads (`train[:50%]` -> train), whose files hold its rows."""
    return split.split("[", 1)[0].strip()


def split_key(spec: DatasetSpec, split: str) -> str:
    """The key of the dataset's entry that named `split`, for a message about it."""
    return "validation_split" if split == spec.validation_split and split != spec.split else "split"


def _folder_files(folder: Path, split: str, key: str, where: str, read: set[str | None] = frozenset()
                  ) -> tuple[str, list[Path]]:
    """The kind ("text", or a record suffix) and the files of `split` of a folder, as HF `datasets` finds them
    (train.txt / test.txt name splits; otherwise all are train). datasets' own text builder would make every line
    a document and drop the line breaks, where a text file here is paragraph rows; and it reads one kind of file
    per folder, silently leaving out the others, which is an error here."""
    hf_datasets()  # its import-time notes quieted first
    from datasets.data_files import DataFilesDict, get_data_patterns

    try:
        patterns = get_data_patterns(str(folder))
        files = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    except FileNotFoundError:  # datasets' EmptyDatasetError: no file it would read
        raise ConfigError(f"{where}: folder {folder} holds no data files (.txt/.md text, .json/.jsonl/.parquet/.csv "
                          f"records)") from None
    split = split_name(split)  # the files of `train[:50%]` are train's: datasets takes the slice as it loads
    if split not in files:
        fraction = " (or null: a held-out fraction of the training rows)" * (key == "validation_split")
        raise ConfigError(f"{where}: folder {folder} has no {split!r} files (its files name the splits "
                          f"{', '.join(map(str, files))}); set {key}: NAME in the dataset's entry{fraction}")
    if patterns != {"train": ["**"]}:  # file names name the splits
        _check_split_names(folder, files, where)
    if key == "split" and read - {None} <= set(files):  # not where the validation split is missing: its error is next
        warn_unused_splits([str(name) for name in files if name not in read], folder, where,
                           holds_out=len(read - {None}) > 1)
    # a LICENSE beside the data is no data: datasets reads no suffix-less file beside others
    paths = sorted(Path(f) for f in files[split])
    data = [p for p in paths if is_data_file(p)] or paths
    kind = _one_kind(data, folder, where)
    if kind == "text" and key == "split":
        warn_unread_files(folder, [Path(f) for fs in files.values() for f in fs], where)
    return kind, data


def warn_unread_files(folder: Path, split_files: list[Path], where: str) -> None:
    """The files of a folder of text files that no split reads, by name: a README.md (datasets takes it for the
    dataset card) and a file with no suffix beside the data (a LICENSE) were left out of a folder of notes in
    silence."""
    read = {p.resolve() for p in split_files if is_data_file(p)} or {p.resolve() for p in split_files}
    unread = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.resolve() not in read
                    and not any(part.startswith((".", "__")) for part in p.relative_to(folder).parts))
    if unread:
        log.warning("%s: folder %s: %s %s not read (a README.md is the dataset card to datasets, and a file with no "
                    "suffix beside text files, like a LICENSE, no data); to train on one, rename it (notes.md, "
                    "changes.txt)",
                    where, folder, ", ".join(unread[:5]) + (f" and {len(unread) - 5} more" if len(unread) > 5 else ""),
                    "is" if len(unread) == 1 else "are")


def warn_unused_splits(unused: list[str], path: Path, where: str, holds_out: bool) -> None:
    """Splits a dataset has and the run reads neither for training nor for validation, said once (at the training
    split's load); with no validation_split set, how to hold the first out."""
    if unused:
        hint = "" if holds_out else f"; validation_split: {unused[0]} in the dataset's entry holds it out"
        log.warning("%s: %s also has %s split%s, which %s not read%s", where, path, " and ".join(unused),
                    "s" if len(unused) > 1 else "", "are" if len(unused) > 1 else "is", hint)


def _check_split_names(folder: Path, files: Any, where: str) -> None:
    """A data file whose name names no split is in none of them: datasets would leave it out, silently."""
    named = {f for fs in files.values() for f in fs}
    left = sorted(Path(f).name for f in data_files_of(folder) if f not in named and is_data_file(Path(f)))
    if not left:
        return
    listed = f"{', '.join(left[:3])}{' ...' if len(left) > 3 else ''}"
    record_files = all(file_kind(Path(f)) in RECORD_BUILDERS for fs in files.values() for f in fs)
    if record_files and any(map(names_a_split, left)):
        # a hub download, data/train-00000-of-00001.parquet beside TinyStories-train.txt: data_files chooses
        # (text files chosen so would be read as datasets' text builder reads them, a row a line)
        taken = ", ".join(str(Path(fs[0]).relative_to(folder)) for fs in files.values())
        example = ", ".join(f"{split}: '{files_pattern(fs, folder)}'" for split, fs in files.items())
        raise ConfigError(f"{where}: folder {folder} holds files of more than one layout: datasets reads the splits "
                          f"of the first it knows ({taken}) and would leave out {listed}; choose the files with "
                          f"data_files in the dataset's entry ({{path: {folder}, data_files: {{{example}}}}}), or "
                          f"move the others out")
    raise ConfigError(f"{where}: folder {folder} names splits in some file names ({', '.join(map(str, files))}) "
                      f"but not in {listed}, which would be left out; rename them (train/test/validation in the "
                      f"name), or move them out")


def names_a_split(file_name: str) -> bool:
    """Whether a file's name holds one of datasets' split keywords as a word (`TinyStories-train.txt`; not
    `greatest_poems.txt`)."""
    from datasets.data_files import NON_WORDS_CHARS, SPLIT_KEYWORDS

    words = "|".join(keyword for keywords in SPLIT_KEYWORDS.values() for keyword in keywords)
    return re.search(rf"(^|[{NON_WORDS_CHARS}])({words})([{NON_WORDS_CHARS}]|$)", file_name, re.IGNORECASE) is not None


def files_pattern(files: list[str], folder: Path) -> str:
    """A data_files pattern for `files` of `folder`: the file itself, or their common start and a `*` (`**` from
    their common folder on, where they lie in several: train/en/ and train/es/ share 'train/e', no file's start)."""
    names = [Path(f).relative_to(folder).as_posix() for f in files]
    start = os.path.commonprefix(names)
    if len(names) == 1:
        return names[0]
    if any("/" in name[len(start):] for name in names):
        return start[:start.rfind("/") + 1] + "**"
    return start + "*"


def files_read(identity: str) -> set[str]:
    """The content digests (with how each is read) in a local source's identity: a text source's
    `text:D1,D2:gunzipped:ROW_CHARS`, a record file's `records:D:FIELD`; none for other sources, whose identity is
    datasets' fingerprint."""
    if identity.startswith("records:"):
        return set(identity.split(":")[1].split(","))
    return set(identity.removeprefix("text:").rsplit(":", 1)[0].split(",")) if identity.startswith("text:") else set()


def check_validation_path(spec: DatasetSpec, where: str) -> None:
    """validation_path is a local file or folder with other rows than path's (as validation_split must name another
    split), and it replaces validation_fraction, which would go unread."""
    held = Path(spec.validation_path).expanduser().resolve()
    if not held.exists():  # not a hub id: the message would name path's hints
        raise ConfigError(f"{where}: validation_path={spec.validation_path} does not exist; check it (a local file or "
                          f"folder of the dataset's kind)")
    if spec.path and held == Path(spec.path).expanduser().resolve():
        raise ConfigError(f"{where}: validation_path={spec.validation_path} is the dataset's own path: the run would "
                          f"validate on rows it trains on; name another file, or drop it (validation_fraction=F holds "
                          f"out a fraction of its rows)")
    if spec.validation_fraction is not None:
        raise ConfigError(f"{where}: validation_fraction={spec.validation_fraction} and validation_path both choose "
                          f"the held-out rows, and validation_path's file wins: drop one of them")


def _one_kind(paths: list[Path], folder: Path, where: str) -> str:
    """"text", or the record suffix, of a folder's data files; more than one kind is an error."""
    kinds: dict[str, list[str]] = {}
    for p in paths:
        kind = file_kind(p)
        kinds.setdefault("text" if kind in TEXT_SUFFIXES or not kind else kind, []).append(p.name)
    if len(kinds) > 1:
        found = "; ".join(f"{kind}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                          for kind, names in kinds.items())
        raise ConfigError(f"{where}: folder {folder} holds more than one kind of file ({found}), and a dataset reads "
                          f"one kind; move the others out, or list one kind's files with data_files=[...]")
    return next(iter(kinds))


def _text_file_records(paths: list[Path], spec: DatasetSpec) -> tuple[Records, str, list[str]]:
    """Plain text files as paragraph rows (see corpus.py), one file after another, identified by their content
    hashes. The rows are read and cut when the loader is called; a stream's as it is iterated, a line at a time."""
    row_chars = spec.row_chars or DEFAULT_ROW_CHARS
    read = [file_digest(p) + (":gunzipped" if p.suffix.lower() == ".gz" else "") for p in paths]  # the same bytes
    identity = f"text:{','.join(read)}:{row_chars}"  # named a.txt.gz are other rows, or none
    if spec.streaming:  # a tuple: datasets would shard a list of paths across workers, out of order
        return _loaded(hf_datasets().IterableDataset.from_generator(
            text_file_rows, gen_kwargs={"paths": tuple(map(str, paths)), "row_chars": row_chars}), identity)

    def records() -> Dataset:
        import pyarrow as pa

        rows = [row["text"] for row in text_file_rows(tuple(map(str, paths)), row_chars)]
        # The fingerprint is the files' identity: from_dict would pickle all the rows with dill to make one, which
        # takes seconds for a big folder, and failed on an H200 machine's Python 3.12.3 (pyarrow's MonthDayNano)
        fingerprint = hashlib.sha256(identity.encode()).hexdigest()[:32]
        return hf_datasets().Dataset(pa.table({"text": rows}), fingerprint=fingerprint)

    return records, identity, ["text"]


def text_file_rows(paths: tuple[str, ...], row_chars: int) -> Iterator[dict[str, str]]:
    """The paragraph rows of text files as records, a file's lines read as they are needed. A row of whitespace
    alone (a cut of a wide table's gap) is no record: tokenizing left it out as one with no text in column 'text'."""
    for path in paths:
        for row in paragraph_rows(text_lines(Path(path), row_chars), row_chars):
            if row.strip():
                yield {"text": row}


def _saved_records(path: Path, spec: DatasetSpec, split: str, where: str) -> tuple[Dataset | IterableDataset, str]:
    datasets = hf_datasets()
    loaded = datasets.load_from_disk(str(path))
    if not isinstance(loaded, datasets.DatasetDict) and split != "train":  # a saved Dataset is one split
        raise ConfigError(f"{where}: {path} is a saved Dataset, one split, with no split {split!r}; drop "
                          f"{split_key(spec, split)}= (a DatasetDict saved with save_to_disk names its splits)")
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ConfigError(f"{where}: {path} has no split {split!r} (splits: {', '.join(loaded)}); set "
                              f"{split_key(spec, split)}=NAME")
        if split == spec.split and spec.validation_split in (None, *loaded):  # else: its missing split's error
            warn_unused_splits([name for name in loaded if name not in (spec.split, spec.validation_split)], path,
                               where, holds_out=spec.validation_split is not None)
        loaded = loaded[split]
    return (loaded.to_iterable_dataset() if spec.streaming else loaded), f"disk:{loaded._fingerprint}"


def _local_records(spec: DatasetSpec, path: str, name: str | None, split: str, where: str, base: Path,
                   files: list[Path]) -> tuple[Records, str, list[str] | None]:
    """A folder's records, or data_files' (`path: json`), keyed by content, as a file's are: datasets' Arrow copy by
    every split's files (it builds them all into it), the split's rows by its own `files` (found here from
    data_files where not given)."""
    splits = {} if spec.streaming else split_files(spec.data_files, base)
    every = sorted({f for paths in splits.values() for f in paths})
    records, identity = _hf_records(spec, path, name, split, where, data_files=spec.data_files,
                                    content=files_digest(every) or None)
    own = [] if spec.streaming else files or splits.get(split_name(split), [])
    if own and identity != "stream":
        sliced = f":{split}" if split_name(split) != split else ""  # a slice's rows are other rows
        identity = f"records:{files_digest(own)}:{spec.field or ''}{sliced}"
        if path in FILE_BUILDERS and {RECORD_BUILDERS.get(file_kind(f)) for f in own} != {path}:
            identity += f":{path}"  # `path: text` over a .csv reads its lines, `path: csv` its rows: other records
    return _loaded(records, identity)


def _hf_records(spec: DatasetSpec, path: str, name: str | None, split: str, where: str,
                data_files: Any = None, content: str | None = None) -> tuple[Dataset | IterableDataset, str]:
    """`datasets.load_dataset`, with its usual failures turned into one-line ConfigErrors. `content`: the digests of
    the local files it reads, which key datasets' Arrow copy of them: datasets keys it by their paths and mtimes, so
    a file rewritten with its mtime kept (cp -p, rsync -t, tar, touch -r) was read as its old rows, and those were
    tokenized under the new content's key for good."""
    datasets = hf_datasets()
    arrow_cache = ({"cache_dir": os.path.join(datasets.config.HF_DATASETS_CACHE, "lmplay-local",
                                              hashlib.sha256(content.encode()).hexdigest()[:24])} if content else {})
    try:
        with quiet_logger("datasets"):  # a failure is reported below, in one line: not also in datasets' log
            records = datasets.load_dataset(path, name, split=split, data_files=data_files, streaming=spec.streaming,
                                            **({"field": spec.field} if spec.field else {}), **arrow_cache)
    except ConnectionError as e:
        local_copy = f"{{dataset: {spec.label}, path: DIR}}" if spec.label in DATASETS else "path=DIR"
        raise ConfigError(
            f"{where}: {path!r} is no local file or folder, and as a hub dataset it is unreachable (no network) and "
            f"not in the local HF cache; check the path, or download it "
            f"where there is network (datasets.load_dataset(...).save_to_disk(DIR) or huggingface-cli download "
            f"--repo-type dataset) and use {local_copy}, or data_files=FILES") from e
    except (FileNotFoundError, ValueError, StopIteration, EOFError, zlib.error, gzip.BadGzipFile,  # a damaged .gz
            datasets.exceptions.DatasetGenerationError) as e:
        cause = e.__cause__ if isinstance(e, datasets.exceptions.DatasetGenerationError) and e.__cause__ else e
        reason = " ".join(str(cause).split())[:300] or ("no file matches it, or it holds no records"
                                                       if spec.data_files else "it holds no records")
        if spec.field:
            reason = (f"field={spec.field!r} is no top-level key of it" if isinstance(cause, KeyError) else
                      f"field={spec.field!r} holds no list of records ({reason})")
        elif isinstance(cause, gzip.BadGzipFile):
            reason = f"a file of it ends in .gz but is not gzip-compressed ({reason}); compress it, or drop the .gz"
        elif "JSON parse error" in reason and (line := first_line_not_an_object(data_files or path)):
            reason = line
        files = f" from {data_files}" if data_files is not None else ""
        if name is not None and "BuilderConfig" in reason and Path(path).expanduser().is_dir():
            reason += (f"; a folder of data files has no config names: drop the name with name: null in the dataset's "
                       f"entry ({{dataset: {spec.label}, path: ..., name: null}} for a preset's local copy)")
        raise ConfigError(f"{where}: cannot load dataset {path!r}{files} (name={name!r}, split={split!r}): "
                          f"{reason}") from e
    if isinstance(records, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        raise ConfigError(f"{where}: dataset {path!r} needs a split; set split=NAME")
    identity = "stream" if spec.streaming else f"hf:{records._fingerprint}"
    return records, identity


def first_line_not_an_object(files: Any) -> str | None:
    """Where a local JSON Lines file (of `files`: a path, a folder, or data_files' list or mapping of them) holds a
    line that is no JSON object (`[1, 2]`, `42`): pyarrow's "Column() changed from object to string in row 0" named
    neither the file, the line nor the rule. A .json file whose first line is no object is a JSON document, not
    JSON Lines: its error is pyarrow's. Read only on that error."""
    if isinstance(files, dict):
        files = [f for value in files.values() for f in ([value] if isinstance(value, str) else value)]
    for given in [Path(f).expanduser() for f in ([files] if isinstance(files, str) else files)]:
        json_names = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
        inside = sorted(p for p in given.rglob("*") if p.name.lower().endswith(json_names)) if given.is_dir() else []
        for file in inside or [given]:
            if file.is_file() and (line := not_an_object(file)):
                return line
    return None


def not_an_object(file: Path) -> str | None:
    """The first line of JSON Lines `file` that is no JSON object, said; None for a JSON document (a .json file)."""
    first, gzipped = True, file.suffix.lower() == ".gz"
    suffix = Path(file.stem).suffix.lower() if gzipped else file.suffix.lower()
    with (gzip.open if gzipped else open)(file, "rt", encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value, what = json.loads(line), "no JSON object"
            except ValueError:
                value, what = None, "not valid JSON"
            if not isinstance(value, dict) and first and suffix == ".json":  # a JSON document
                return None
            if not isinstance(value, dict):
                return (f"line {number} of {file.name} is {what} ({line.strip()[:60]}); each line of a JSON Lines "
                        f"file must be one {{...}} record")
            if (half := lone_surrogate(value)) is not None:  # pyarrow's "in row N" counts from its block's start
                return (f"line {number} of {file.name} holds a lone UTF-16 surrogate ({half}, half of a character "
                        f"such as an emoji, cut off), which is no text; remove it, or rewrite the file with "
                        f"json.dumps(record) after text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')")
            first = False
    return None


def lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in a parsed JSON value's strings (a "\\ud83d" escape), as its escape; None if none."""
    if isinstance(value, str):
        half = re.search("[\ud800-\udfff]", value)
        return f"\\u{ord(half[0]):04x}" if half else None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        return next((h for v in value if (h := lone_surrogate(v)) is not None), None)
    return None


def _hub_records(spec: DatasetSpec, path: str, split: str, where: str) -> tuple[Dataset | IterableDataset, str]:
    if hub_reachable():
        return _hf_records(spec, path, spec.name, split, where, data_files=spec.data_files)
    log.info("the HF hub is unreachable; looking for %s in the local HF cache", path)
    with offline_hub():
        return _hf_records(spec, path, spec.name, split, where, data_files=spec.data_files)


@functools.cache
def hub_reachable() -> bool:
    """Whether the HF hub answers a TCP connect within a few seconds (False in offline mode).
    Asked once per process, so an offline machine fails fast instead of retrying for minutes."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(huggingface_hub.constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    """The logger `name` says nothing below CRITICAL inside."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """HF offline mode for the calls inside: load_dataset then reads the local cache and fails at once."""
    datasets = hf_datasets()
    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved

