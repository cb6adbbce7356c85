"""Sources: local files and folders, the hub code path against local hub-layout data (no network),
failing fast without network, streaming, the embedded corpus, the tokenized cache, one-line errors."""

import errno
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import python_path
from datasets import Dataset, DatasetDict

from lmplay.data import corpus, sources, tokenized
from lmplay.data.batch import IGNORE_INDEX
from lmplay.data.corpus import embedded_path, text_lines
from lmplay.data.curriculum import Curriculum
from lmplay.data.hf import hf_datasets
from lmplay.data.rows import RowFormat
from lmplay.data.sources import text_file_rows
from lmplay.data.tokenizers import get_tokenizer
from lmplay.errors import ConfigError, OutputError

TOK = get_tokenizer("bytes")


def build(tmp_path, datasets, context_len=256, seed=0, **kwargs) -> Curriculum:
    stage = {"name": "s", "datasets": datasets, **({"steps": kwargs.pop("steps")} if "steps" in kwargs else {"epochs": 1})}
    c = Curriculum([stage], cache_dir=str(tmp_path / "cache"), **{"validation_fraction": 0.0, **kwargs})
    c.prepare(TOK, context_len, seed)
    return c


def all_text(c: Curriculum, batch_size=8, include_prompts=True, counted=False) -> list[str]:
    """Each sample's counted targets, or its inputs without the padding."""
    out = []
    while (b := c.next_batch(batch_size, include_prompts)) is not None:
        for n in range(len(b)):
            ids = b.targets[n][b.targets[n] != IGNORE_INDEX] if counted else b.inputs[n]
            text = TOK.decode(ids.tolist())
            out.append(text if counted else text[:13] + text[13:].split("<|endoftext|>")[0])
    return out


@pytest.fixture
def no_hub(monkeypatch):
    """Local data must never touch the network: fail the test if the hub is probed."""
    def probe():
        raise AssertionError("the hub was probed for local data")
    monkeypatch.setattr(sources, "hub_reachable", probe)


def test_text_file_becomes_paragraph_rows(tmp_path, no_hub):
    paras = [f"Para {i}. Its second sentence." for i in range(50)]
    (tmp_path / "book.txt").write_text("\n\n".join(paras))
    with gzip.open(tmp_path / "book.txt.gz", "wt") as f:
        f.write("\n\n".join(paras))
    for name in ("book.txt", "book.txt.gz"):
        c = build(tmp_path, [{"path": str(tmp_path / name), "row_chars": 200}])
        texts = all_text(c)
        assert all(t.startswith("<|endoftext|>Para") for t in texts)
        rows = [t.split("<|endoftext|>")[1] for t in texts]
        assert sorted(p for r in rows for p in r.split("\n\n")) == sorted(paras)
        assert all(len(r) <= 200 for r in rows) and len(rows) < 50


def test_text_rows_are_named_by_their_files_not_by_pickling_them(tmp_path, no_hub, monkeypatch):
    """On the H200 machine (Python 3.12.3) datasets could not pickle an in-memory table with dill to fingerprint
    it, and every text-file run failed; the files' content hashes name the rows instead."""
    import datasets.arrow_dataset

    def unpicklable(dataset):
        raise TypeError("Can't pickle <class 'MonthDayNano'>")
    monkeypatch.setattr(datasets.arrow_dataset, "generate_fingerprint", unpicklable)
    book = tmp_path / "book.txt"
    book.write_text("First paragraph.\n\nSecond one.")
    def rows():
        return sources._text_file_records([book], sources.DatasetSpec(path=str(book)))[0]()
    named = [rows(), rows()]
    assert list(named[0]["text"]) == ["First paragraph.\n\nSecond one."]
    book.write_text("Changed.")
    changed = rows()
    assert named[0]._fingerprint == named[1]._fingerprint != changed._fingerprint


def test_a_folder_of_text_files_reads_as_its_files_do_and_keeps_its_splits(tmp_path, no_hub, caplog):
    """datasets' text builder would make each line a document and drop every line break."""
    (tmp_path / "books").mkdir()
    for name, first in (("a.txt", 0), ("b.md", 25)):
        (tmp_path / "books" / name).write_text("\n\n".join(f"Para {i}.\nIts second line." for i in range(first, first + 25)))
    texts = all_text(build(tmp_path, [{"path": str(tmp_path / "books"), "row_chars": 200}]))
    rows = [t.split("<|endoftext|>")[1] for t in texts]
    assert sorted(p for r in rows for p in r.split("\n\n")) == sorted(f"Para {i}.\nIts second line." for i in range(50))
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "train.txt").write_text("Trained on.")
    (tmp_path / "split" / "test.txt").write_text("Held out.")
    with caplog.at_level("WARNING", logger="lmplay"):
        assert all_text(build(tmp_path, [{"path": str(tmp_path / "split")}])) == ["<|endoftext|>Trained on."]
    assert "also has test split, which is not read; validation_split: test in the dataset's entry holds" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmplay"), \
            pytest.raises(ConfigError, match=r"has no 'valid' files \(its files name the splits train, test\); set "
                                          r"validation_split: NAME in the dataset's entry \(or null: a held-out "
                                          r"fraction of the training rows\)$"):
        build(tmp_path, [{"path": str(tmp_path / "split"), "validation_split": "valid"}])
    assert "which is not read" not in caplog.text
    (tmp_path / "split" / "LICENSE").write_text("MIT")  # no data file: neither read nor refused
    assert all_text(build(tmp_path, [{"path": str(tmp_path / "split")}])) == ["<|endoftext|>Trained on."]
    (tmp_path / "split" / "hamlet.txt").write_text("Names no split.")  # datasets would leave it out, silently
    with pytest.raises(ConfigError, match=r"names splits in some file names \(train, test\) but not in hamlet.txt"):
        build(tmp_path, [{"path": str(tmp_path / "split")}])
    (tmp_path / "only_test").mkdir()
    (tmp_path / "only_test" / "test.txt").write_text("Held out.")
    with pytest.raises(ConfigError, match=r"has no 'train' files \(its files name the splits test\)"):  # a TypeError
        build(tmp_path, [{"path": str(tmp_path / "only_test")}])


def test_a_folder_of_notes_says_which_files_it_leaves_out(tmp_path, no_hub, caplog):
    """README.md (datasets' dataset card) and a suffix-less file beside the notes were left out in silence."""
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    for name in ("README.md", "one.md", "sub/README.md", "sub/two.text", "CHANGES", ".hidden.txt"):
        (notes / name).write_text(f"The text of {name}.")
    with caplog.at_level("WARNING", logger="lmplay"):
        texts = all_text(build(tmp_path, [{"path": str(notes)}]))
    assert sorted(texts) == ["<|endoftext|>The text of one.md.", "<|endoftext|>The text of sub/two.text."]
    assert caplog.text.count("not read") == 1 and (f"folder {notes}: CHANGES, README.md, sub/README.md are not read (a "
                                                  f"README.md is the dataset card to datasets") in caplog.text


def test_a_hub_download_with_files_of_two_layouts_names_data_files_to_choose_them(tmp_path, no_hub):
    """A TinyStories download (data/train-00000-of-00001.parquet and TinyStories-train.txt) was refused as if
    TinyStories-train.txt named no split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "ts"
    (folder / "data").mkdir(parents=True)
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": [f"A {split} story {i}." for i in range(20)]}),
                       folder / "data" / f"{split}-00000-of-00001.parquet")
    (folder / "TinyStories-train.txt").write_text("A story.")
    with pytest.raises(ConfigError) as refused:
        build(tmp_path, [{"path": str(folder), "validation_split": "validation"}])
    assert ("holds files of more than one layout: datasets reads the splits of the first it knows "
            "(data/train-00000-of-00001.parquet, data/validation-00000-of-00001.parquet) and would leave out "
            "TinyStories-train.txt; choose the files with data_files in the dataset's entry") in str(refused.value)
    chosen = {"train": "data/train-00000-of-00001.parquet", "validation": "data/validation-00000-of-00001.parquet"}
    assert f"data_files: {{train: '{chosen['train']}', validation: '{chosen['validation']}'}}" in str(refused.value)
    texts = all_text(build(tmp_path, [{"path": str(folder), "validation_split": "validation", "data_files": chosen}]))
    assert len(texts) == 20 and all("train story" in t for t in texts)
    for language in ("en", "es"):  # a split's files in folders of their own: their common start, 'train/e', is no
        (folder / "train" / language).mkdir(parents=True)  # file's; the pattern takes the folder they share
        pq.write_table(pa.table({"text": [f"A {language} story {i}." for i in range(10)]}),
                       folder / "train" / language / "part-0.parquet")
    shutil.rmtree(folder / "data")
    with pytest.raises(ConfigError, match=r"data_files: \{train: 'train/\*\*'\}\}"):
        build(tmp_path, [{"path": str(folder)}])
    assert len(all_text(build(tmp_path, [{"path": str(folder), "data_files": {"train": "train/**"}}]))) == 20
    poems = tmp_path / "poems"  # text files: a word inside a name is no split's, and data_files is no way out there
    poems.mkdir()
    for name in ("train.txt", "test.txt", "greatest_poems.txt"):
        (poems / name).write_text("A poem.")
    with pytest.raises(ConfigError, match=r"names splits in some file names \(train, test\) but not in "
                                          r"greatest_poems.txt, which would be left out; rename"):
        build(tmp_path, [{"path": str(poems)}])


def test_a_folder_of_two_kinds_of_file_is_refused_and_a_binary_column_is_decoded(tmp_path, no_hub):
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.jsonl").write_text(json.dumps({"text": "From json."}) + "\n")
    Dataset.from_dict({"text": ["From parquet."]}).to_parquet(str(tmp_path / "mixed" / "b.parquet"))
    with pytest.raises(ConfigError, match=r"holds more than one kind of file \(\.jsonl: a\.jsonl; \.parquet: "
                                          r"b\.parquet\), and a dataset reads one kind"):
        build(tmp_path, [{"path": str(tmp_path / "mixed")}])
    (tmp_path / "mixed" / "b.parquet").unlink()
    (tmp_path / "mixed" / "LICENSE").write_text("MIT")  # beside downloaded data: no kind of data file
    assert all_text(build(tmp_path, [{"path": str(tmp_path / "mixed")}])) == ["<|endoftext|>From json."]
    Dataset.from_dict({"text": [b"Hello.\nWorld."]}).to_parquet(str(tmp_path / "bytes.parquet"))
    assert all_text(build(tmp_path, [{"path": str(tmp_path / "bytes.parquet")}])) == ["<|endoftext|>Hello.\nWorld."]
    Dataset.from_dict({"text": [b"caf\xe9"]}).to_parquet(str(tmp_path / "latin1.parquet"))
    with pytest.raises(ConfigError, match=r"column 'text' holds bytes that are not UTF-8 text \(b'caf\\xe9'\)"):
        build(tmp_path, [{"path": str(tmp_path / "latin1.parquet")}])


def test_a_validation_file_beside_the_training_split_in_its_folder_is_read(tmp_path, no_hub):
    """sp/train.txt trained on, sp/valid.txt held out: refused as 'inside the dataset's folder' by the first fix."""
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "train.txt").write_text("Training text. " * 40)
    (tmp_path / "sp" / "valid.txt").write_text("Held-out text. " * 40)
    c = build(tmp_path, [{"path": str(tmp_path / "sp"), "validation_path": str(tmp_path / "sp" / "valid.txt")}])
    assert c.held_out_rows() == 1


def test_a_folder_of_a_text_file_and_a_suffix_less_gz_reads_both(tmp_path, no_hub):
    """corpus.gz beside book.txt was left out as if a LICENSE (once suffix-less .gz read as text)."""
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "book.txt").write_text("Para one. Its end.")
    with gzip.open(folder / "more.gz", "wt") as f:
        f.write("Para two. Its end.")
    texts = all_text(build(tmp_path, [{"path": str(folder), "row_chars": 40}]))
    assert sorted(t.split("<|endoftext|>")[1] for t in texts) == ["Para one. Its end.", "Para two. Its end."]


def test_windows_line_ends_an_upper_case_gz_and_no_suffix_read_as_text(tmp_path, no_hub):
    paras = [f"Para {i}.\nIts second line." for i in range(20)]
    text = "\n\n".join(paras)
    (tmp_path / "unix.txt").write_text(text)
    (tmp_path / "dos.txt").write_bytes(text.replace("\n", "\r\n").encode())
    (tmp_path / "NOTES").write_text(text)
    with gzip.open(tmp_path / "BOOK.TXT.GZ", "wt") as f:
        f.write(text)
    with gzip.open(tmp_path / "corpus.gz", "wt") as f:  # no suffix, then .gz (README): it was refused
        f.write(text)
    expected = all_text(build(tmp_path, [{"path": str(tmp_path / "unix.txt"), "row_chars": 100}]))
    for name in ("dos.txt", "NOTES", "BOOK.TXT.GZ", "corpus.gz"):
        assert all_text(build(tmp_path, [{"path": str(tmp_path / name), "row_chars": 100}])) == expected, name


def test_a_wide_gap_in_a_long_line_is_no_record_without_text(tmp_path, no_hub, caplog):
    """A fixed-width table's gap cut into rows of spaces alone, which tokenizing left out with a warning of records
    that have no text in column 'text' (a text file has no columns)."""
    (tmp_path / "ws.txt").write_text("Intro paragraph here.\n\n" + ("col1" + " " * 500 + "col2 value.\n") * 3)
    texts = all_text(build(tmp_path, [{"path": str(tmp_path / "ws.txt"), "row_chars": 200}]))
    assert "no text in column" not in caplog.text and len(texts) == 7  # the intro, and each line's two ends
    assert sum("col2 value." in t for t in texts) == 3


def test_a_damaged_cache_entry_is_tokenized_again(tmp_path, no_hub):
    path = tmp_path / "t.txt"
    path.write_text("One. Two.\n\nThree.\n\nFour and five.")
    first = all_text(build(tmp_path, [{"path": str(path)}]))
    [entry] = (tmp_path / "cache" / "tokenized").iterdir()
    tokens = np.load(entry / "tokens.npy")
    np.save(entry / "tokens.npy", tokens[:3])  # a valid array, but not the rows' (silently trained on before)
    assert all_text(build(tmp_path, [{"path": str(path)}])) == first
    (entry / "tokens.npy").write_bytes((entry / "tokens.npy").read_bytes()[:100])  # truncated
    assert all_text(build(tmp_path, [{"path": str(path)}])) == first


def test_record_files_with_column_mapping(tmp_path, no_hub):
    records = [{"body": f"Body {i}.", "q": f"Q{i}?", "a": f"A{i}."} for i in range(6)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "r.json").write_text(json.dumps(records))
    Dataset.from_list(records).to_parquet(str(tmp_path / "r.parquet"))
    Dataset.from_list(records).to_csv(str(tmp_path / "r.csv"), index=False)
    for name in ("r.jsonl", "r.json", "r.parquet", "r.csv"):
        texts = all_text(build(tmp_path, [{"path": str(tmp_path / name), "text": "body"}]))
        assert sorted(texts) == sorted(f"<|endoftext|>Body {i}." for i in range(6))
        answers = all_text(build(tmp_path, [{"path": str(tmp_path / name), "prompt": "q", "truth": "a"}]),
                           include_prompts=False, counted=True)
        assert sorted(answers) == sorted(f"A{i}.<|endoftext|>" for i in range(6))
    builder = build(tmp_path, [{"path": "json", "data_files": str(tmp_path / "r.jsonl"), "text": "body"}])
    assert sorted(all_text(builder)) == sorted(f"<|endoftext|>Body {i}." for i in range(6))


@pytest.mark.parametrize("bad, before, where", [("[1, 2, 3]", 200, "r.jsonl"), ("42", 200, "r.jsonl"),
                                                ('"just text"', 0, "r.jsonl"), ("[1, 2]", 3, "folder"),
                                                ("[1, 2]", 30, "r.jsonl.gz")])
def test_a_json_lines_line_that_is_no_object_is_named(tmp_path, no_hub, bad, before, where):
    """pyarrow's 'Column() changed from object to string in row 0' named neither the line (201) nor the rule; nor on
    a first line, in a folder of .jsonl files, or in a gzipped one."""
    rows = "".join(json.dumps({"text": f"Row {i}."}) + "\n" for i in range(before))
    (tmp_path / "folder").mkdir()
    name = "part.jsonl" if where == "folder" else where
    text = f"{rows}\n{bad}\n{rows}".encode()
    (tmp_path / ("folder" if where == "folder" else "") / name).write_bytes(
        gzip.compress(text) if name.endswith(".gz") else text)
    with pytest.raises(ConfigError, match=rf"line {before + 2} of {name} is no JSON object \({re.escape(bad)}\); each "
                                          r"line of a JSON Lines file must be one \{...\} record$"):
        build(tmp_path, [{"path": str(tmp_path / where)}])


@pytest.mark.parametrize("folder", [False, True])
def test_a_record_file_is_known_by_its_content_not_its_modification_time(tmp_path, no_hub, folder):
    """A touch (a git checkout, an rsync without -t) changed datasets' fingerprint of an unchanged .jsonl, or of a
    folder of them: it was tokenized again, and a resume warned that its data differed."""
    (tmp_path / "data").mkdir()
    data = tmp_path / "data" / "r.jsonl"
    data.write_text("".join(json.dumps({"text": f"Row {i}."}) + "\n" for i in range(20)))
    path = str(data.parent if folder else data)
    first = build(tmp_path, [{"path": path}])
    os.utime(data, (1e9, 1e9))
    again = build(tmp_path, [{"path": path}])
    assert again.data_key() == first.data_key() and len(list((tmp_path / "cache" / "tokenized").iterdir())) == 1
    data.write_text(data.read_text() + json.dumps({"text": "One more."}) + "\n")
    assert build(tmp_path, [{"path": path}]).data_key() != first.data_key()


def test_chat_rows_train_on_the_last_assistant_turn(tmp_path, no_hub):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a color"}, {"role": "assistant", "content": "Blue."}]
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": chat}) + "\n")
    c = build(tmp_path, [{"path": str(tmp_path / "chat.jsonl")}])  # a `messages` column is found by itself
    batch = c.next_batch(1, False)
    assert TOK.decode(batch.inputs[0].tolist()) == \
        "<|endoftext|>User: Hi\nAssistant: Hello.\nUser: Name a color\nAssistant: Blue."
    assert TOK.decode(batch.targets[0][batch.targets[0] != IGNORE_INDEX].tolist()) == "Blue.<|endoftext|>"
    (tmp_path / "asked.jsonl").write_text(json.dumps({"messages": chat[:1]}) + "\n")  # no answer: said why
    with pytest.raises(ConfigError, match=r"no rows with text to train on \(a chat row trains on its last turn with "
                                          r"role: assistant, and no row of 'messages' has one with text\)"):
        build(tmp_path, [{"path": str(tmp_path / "asked.jsonl")}])


def write_hub_layout(root, config, splits: dict[str, list[dict]]):
    """A folder as a hub dataset repo is laid out: README.md with `configs:` and parquet shards."""
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
        (root / config).mkdir(parents=True, exist_ok=True)
        Dataset.from_list(rows).to_parquet(str(root / config / f"{split}-00000-of-00001.parquet"))
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (root / "README.md").write_text("\n".join(lines + ["---", "A test dataset in hub layout."]))


def test_named_hub_dataset_from_a_local_copy(tmp_path, no_hub):
    """`{dataset: wiki_en, path: DIR}`: the hub code path (load_dataset with the config name
    20231101.en and wiki_en's title+text mapping) on a folder in hub layout."""
    articles = [{"id": str(i), "url": "u", "title": f"Topic {i}", "text": f"Topic {i} is a thing. It matters."}
                for i in range(10)]
    write_hub_layout(tmp_path / "wiki", "20231101.en", {"train": articles})
    c = build(tmp_path, [{"dataset": "wiki_en", "path": str(tmp_path / "wiki")}], validation_fraction=0.2)
    texts = all_text(c, include_prompts=False)
    assert len(texts) == 8
    for t in texts:
        i = t.split("Title: Topic ")[1].split("\n")[0]
        assert t == f"<|endoftext|>Title: Topic {i}\nTopic {i} is a thing. It matters."
    held = [TOK.decode(b.inputs[0].tolist()) for b in c.validation_batches(10, 1)]
    assert len(held) == 2 and not set(held) & set(texts)


def test_a_folder_s_split_can_be_sliced_as_datasets_slices_it(tmp_path, no_hub):
    """`split: "train[:50%]"` on a folder was "has no 'train[:50%]' files"; data_files took it. A slice's rows are
    keyed apart from the whole split's."""
    write_hub_layout(tmp_path / "ts", "default", {"train": [{"text": f"Train story {i}."} for i in range(12)],
                                                  "validation": [{"text": f"Held story {i}."} for i in range(3)]})
    entry = {"path": str(tmp_path / "ts"), "validation_split": "validation"}
    half = all_text(build(tmp_path, [{**entry, "split": "train[:50%]"}]))
    assert sorted(half) == sorted(f"<|endoftext|>Train story {i}." for i in range(6))
    assert len(all_text(build(tmp_path, [entry]))) == 12  # not the half's cached rows


def test_a_dataset_validation_split_is_used_instead_of_a_fraction(tmp_path, no_hub):
    write_hub_layout(tmp_path / "ts", "default", {
        "train": [{"text": f"Train story {i}."} for i in range(12)],
        "validation": [{"text": f"Held story {i}."} for i in range(3)]})
    c = build(tmp_path, [{"dataset": "tinystories", "path": str(tmp_path / "ts")}], validation_fraction=0.5)
    assert len(all_text(c)) == 12  # all training rows: the fraction is not taken from them
    held = sorted(TOK.decode(b.inputs[0].tolist()) for b in c.validation_batches(10, 1))
    assert held == [f"<|endoftext|>Held story {i}." for i in range(3)]
    entry = {"dataset": "tinystories", "path": str(tmp_path / "ts"), "validation_fraction": 0.5}
    with pytest.raises(ConfigError, match=re.escape("validation_fraction=0.5 and validation_split='validation' both "
                                                    "choose the held-out rows, and the split wins: drop one")):
        build(tmp_path, [entry])  # the entry's own fraction held out the split's 3 rows, not 6 of the 12, unsaid
    c = build(tmp_path, [{**entry, "validation_split": None}])
    assert len(all_text(c)) == 6 and len(c.validation_batches(10, 1)) == 6


def test_a_preset_pointed_at_one_local_file_holds_out_a_fraction_not_its_own_rows(tmp_path, no_hub):
    """tinystories names a validation split; a single file has none, and reading "its validation split" gave
    the training rows back, so validation measured training data."""
    (tmp_path / "ts.jsonl").write_text("".join(json.dumps({"text": f"Story {i}."}) + "\n" for i in range(20)))
    c = build(tmp_path, [{"dataset": "tinystories", "path": str(tmp_path / "ts.jsonl")}], validation_fraction=0.2)
    texts = all_text(c)
    held = [TOK.decode(b.inputs[0].tolist()) for b in c.validation_batches(10, 1)]
    assert len(texts) == 16 and len(held) == 4 and not set(held) & set(texts)
    with pytest.raises(ConfigError, match=r"ts.jsonl is one file, with no split 'test'; drop validation_split="):
        build(tmp_path, [{"path": str(tmp_path / "ts.jsonl"), "validation_split": "test"}])  # typed: was ignored


def test_a_presets_plain_folder_copy_is_told_to_drop_the_presets_name_and_split(tmp_path, no_hub):
    """{dataset: wiki_en, path: DIR} on a folder of data files: BuilderConfig '20231101.en' not found, and nothing said
    that name: null reads it; tinystories' validation split likewise."""
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "train.jsonl").write_text("".join(json.dumps({"title": "T", "text": f"Row {i}."}) + "\n"
                                                           for i in range(20)))
    with pytest.raises(ConfigError, match=r"a folder of data files has no config names: drop the name with name: null"):
        build(tmp_path, [{"dataset": "wiki_en", "path": str(tmp_path / "copy")}])
    assert len(all_text(build(tmp_path, [{"dataset": "wiki_en", "path": str(tmp_path / "copy"), "name": None}]))) > 0
    with pytest.raises(ConfigError, match=r"in the dataset's entry \(or null: a held-out fraction of the training rows\)$"):
        build(tmp_path, [{"dataset": "tinystories", "path": str(tmp_path / "copy")}])


def test_validation_file(tmp_path, no_hub):
    (tmp_path / "train.txt").write_text("\n\n".join(f"Train para {i}." for i in range(4)))
    (tmp_path / "val.txt").write_text("Held para.")
    c = build(tmp_path, [{"path": str(tmp_path / "train.txt"), "validation_path": str(tmp_path / "val.txt"),
                          "row_chars": 20}], validation_fraction=0.5)
    assert sorted(all_text(c)) == [f"<|endoftext|>Train para {i}." for i in range(4)]
    assert TOK.decode(c.validation_batches(5, 1)[0].inputs[0].tolist()) == "<|endoftext|>Held para."
    assert len(c.validation_batches(5, 1)) == 1


def test_row_chars_on_records_is_refused_and_on_text_cuts_the_rows(tmp_path, no_hub):
    """row_chars on a record file (one row a record) trained with no word that it did nothing."""
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({"text": "Some text. " * 40}) + "\n" for _ in range(4)))
    with pytest.raises(ConfigError, match=r"row_chars=100 cuts plain text files into rows, and .*r.jsonl holds "
                                          r"records, a row each; drop row_chars \(on the command line: "
                                          r"\+\+curriculum.stages.0.datasets.0.row_chars=null\)$"):
        build(tmp_path, [{"path": str(tmp_path / "r.jsonl"), "row_chars": 100}])
    (tmp_path / "t.txt").write_text("\n\n".join(f"Paragraph number {i}." for i in range(40)))
    short, default = (all_text(build(tmp_path, [{"path": str(tmp_path / "t.txt"), **extra}]))
                      for extra in ({"row_chars": 50}, {}))
    assert max(map(len, short)) <= len("<|endoftext|>") + 50 < max(map(len, default))


def test_a_json_files_records_under_a_key_are_read_with_field(tmp_path, no_hub):
    """SQuAD-style files ({"version": ..., "data": [records]}) had no way in: text=data said the column holds a list."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"version": 1, "data": [{"text": f"Row {i}."} for i in range(3)]}))
    with pytest.raises(ConfigError, match=r"column 'data' holds a list .* field=KEY$"):
        build(tmp_path, [{"path": str(path), "text": "data"}])
    assert sorted(all_text(build(tmp_path, [{"path": str(path), "field": "data"}]))) == [
        f"<|endoftext|>Row {i}." for i in range(3)]
    (tmp_path / "only.json").write_text(json.dumps({"data": [{"text": "Row."}]}))  # the hint was text=COLUMN
    with pytest.raises(ConfigError, match=r"has one column, 'data', a list of records, and no 'text' column: read the "
                                          r"records under that key with \+curriculum.stages.0.datasets.0.field=data"):
        build(tmp_path, [{"path": str(tmp_path / "only.json")}])
    (tmp_path / "body.json").write_text(json.dumps([{"body": "Row."}]))  # one column of text: text=COLUMN, not field=
    with pytest.raises(ConfigError, match=r"has no 'text' column \(columns: body\); name the column"):
        build(tmp_path, [{"path": str(tmp_path / "body.json")}])
    (tmp_path / "toks.json").write_text("".join(json.dumps({"toks": ["a", "b"]}) + "\n" for _ in range(3)))
    with pytest.raises(ConfigError, match=r"has no 'text' column \(columns: toks\); name the column"):
        build(tmp_path, [{"path": str(tmp_path / "toks.json")}])  # lists of words, in rows: no records under a key
    with pytest.raises(ConfigError, match=r"field='rows' is no top-level key of it$"):
        build(tmp_path, [{"path": str(path), "field": "rows"}])
    with pytest.raises(ConfigError, match=r"field='version' holds no list of records"):
        build(tmp_path, [{"path": str(path), "field": "version"}])
    with pytest.raises(ConfigError, match=r"field='rows' is no top-level key of .*s.json$"):  # a stream reads late
        build(tmp_path, [{"path": str(path), "field": "rows", "streaming": True}], steps=2, validation_fraction=0.5)
    (tmp_path / "scalar.json").write_text(json.dumps({"data": 5}))
    with pytest.raises(ConfigError, match=r"field='data' holds no list of records of .*scalar.json$"):
        build(tmp_path, [{"path": str(tmp_path / "scalar.json"), "field": "data", "streaming": True}], steps=2)
    (tmp_path / "squad").mkdir()  # a folder of such files, splits named by their files (SQuAD's layout)
    for split, rows in (("train", 4), ("validation", 2)):
        (tmp_path / "squad" / f"{split}.json").write_text(json.dumps({"data": [{"text": f"{split} {i}."}
                                                                                for i in range(rows)]}))
    c = build(tmp_path, [{"path": str(tmp_path / "squad"), "field": "data", "validation_split": "validation"}])
    assert sorted(all_text(c)) == [f"<|endoftext|>train {i}." for i in range(4)] and c.held_out_rows() == 2
    (tmp_path / "s.jsonl").write_text(json.dumps({"text": "Row."}) + "\n")  # datasets: "Trailing data", or ignored
    with pytest.raises(ConfigError, match=r"field='data' reads .json files .* and .*s.jsonl holds none .* drop field=$"):
        build(tmp_path, [{"path": str(tmp_path / "s.jsonl"), "field": "data"}])
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("Some text.")
    with pytest.raises(ConfigError, match=r"field='data' reads .json files .* and .*texts holds none"):  # was ignored
        build(tmp_path, [{"path": str(tmp_path / "texts"), "field": "data"}])


def test_save_to_disk_folder_with_splits(tmp_path, no_hub, caplog):
    DatasetDict({"train": Dataset.from_dict({"text": [f"Row {i}." for i in range(5)]}),
                 "test": Dataset.from_dict({"text": ["Held row."]})}).save_to_disk(str(tmp_path / "saved"))
    c = build(tmp_path, [{"path": str(tmp_path / "saved"), "validation_split": "test"}])
    assert len(all_text(c)) == 5
    assert TOK.decode(c.validation_batches(1, 1)[0].inputs[0].tolist()) == "<|endoftext|>Held row."
    with caplog.at_level("WARNING", logger="lmplay"):  # its own held-out rows, unread unless named
        build(tmp_path, [{"path": str(tmp_path / "saved")}])
    assert "also has test split, which is not read; validation_split: test in the dataset's entry" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmplay"), \
            pytest.raises(ConfigError, match=r"has no split 'valid' \(splits: train, test\); set validation_split=NAME$"):
        build(tmp_path, [{"path": str(tmp_path / "saved"), "validation_split": "valid"}])
    assert "which is not read" not in caplog.text  # noise before the error that says what to do
    Dataset.from_dict({"text": ["One row."]}).save_to_disk(str(tmp_path / "one_split"))
    with pytest.raises(ConfigError, match=r"is a saved Dataset, one split, with no split 'validation'; drop split="):
        build(tmp_path, [{"path": str(tmp_path / "one_split"), "split": "validation"}])  # trained on all its rows
    with pytest.raises(ConfigError, match=r"split and validation_split both name 'test': the run would validate on the "
                                          r"rows it trains on"):
        build(tmp_path, [{"path": str(tmp_path / "saved"), "split": "test", "validation_split": "test"}])
    DatasetDict({name: Dataset.from_dict({"text": [f"{name} {i}." for i in range(5)]})
                 for name in ("train", "validation", "test")}).save_to_disk(str(tmp_path / "three"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmplay"):  # said once, not at each split's load, and no advice to
        build(tmp_path, [{"path": str(tmp_path / "three"), "validation_split": "validation"}])  # replace the choice
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        f"{tmp_path / 'three'} also has test split, which is not read"]


def test_unreachable_hub_fails_at_once_with_the_fix(monkeypatch):
    """Where the hub does not answer, datasets is asked in offline mode: online, it retries for minutes."""
    def refused(*args, **kwargs):
        raise OSError("connection refused")

    datasets = hf_datasets()
    load_dataset, offline_at_load = datasets.load_dataset, []

    def recording_load_dataset(*args, **kwargs):
        offline_at_load.append(datasets.config.HF_HUB_OFFLINE)
        return load_dataset(*args, **kwargs)

    monkeypatch.setattr(sources.socket, "create_connection", refused)
    monkeypatch.setattr(datasets, "load_dataset", recording_load_dataset)
    sources.hub_reachable.cache_clear()
    try:
        assert not sources.hub_reachable()
        c = Curriculum([{"name": "s", "datasets": [{"dataset": "tinystories", "path": "lmplay-tests/no-such-data"}],
                         "epochs": 1}])
        with pytest.raises(ConfigError) as e:
            c.prepare(TOK, 64, 0)
    finally:
        sources.hub_reachable.cache_clear()
    assert offline_at_load == [True]
    message = str(e.value)
    assert "\n" not in message and "'lmplay-tests/no-such-data' is no local file or folder, and as a hub dataset it is unreachable" in message
    assert "{dataset: tinystories, path: DIR}" in message


@pytest.mark.parametrize("kind", ["jsonl", "txt"])
def test_streaming_dataset_resumes_and_holds_out_its_head(tmp_path, no_hub, kind):
    if kind == "jsonl":
        (tmp_path / "s.jsonl").write_text("".join(json.dumps({"text": f"Streamed row {i}."}) + "\n" for i in range(40)))
        spec = [{"path": str(tmp_path / "s.jsonl"), "streaming": True}]
    else:  # a paragraph a row, read a line at a time
        (tmp_path / "s.txt").write_text("\n\n".join(f"Streamed row {i}." for i in range(40)))
        spec = [{"path": str(tmp_path / "s.txt"), "streaming": True, "row_chars": 16}]
    c = build(tmp_path, spec, steps=12, validation_fraction=0.1, stream_validation_rows=5, shuffle_buffer=8)
    held = {TOK.decode(b.inputs[0].tolist()) for b in c.validation_batches(10, 1)}
    assert held == {f"<|endoftext|>Streamed row {i}." for i in range(5)}  # the head of the stream
    first = [c.next_batch(4, True) for _ in range(3)]
    state = c.state_dict()
    rest = [c.next_batch(4, True) for _ in range(9)]
    assert c.next_batch(4, True) is None  # 12 steps
    trained = [TOK.decode(r.tolist()).split("<|endoftext|>")[1] for b in first + rest for r in b.inputs]
    assert {f"<|endoftext|>{t}" for t in trained} == {f"<|endoftext|>Streamed row {i}." for i in range(5, 40)}
    assert len(set(trained[:35])) == 35  # the first pass has every training row once
    resumed = build(tmp_path, spec, steps=12, validation_fraction=0.1, stream_validation_rows=5, shuffle_buffer=8)
    resumed.load_state_dict(state)
    again = [resumed.next_batch(4, True) for _ in range(9)]
    assert all(a.inputs.equal(b.inputs) for a, b in zip(again, rest))


def test_a_stream_resumed_in_its_second_pass_reads_that_pass_s_order(tmp_path, no_hub):
    """A resume after the first pass read the first pass's shuffle order from its position: rows twice, others never."""
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"text": f"Row {i}."}) + "\n" for i in range(30)))
    spec = [{"path": str(tmp_path / "s.jsonl"), "streaming": True}]
    c = build(tmp_path, spec, steps=16, validation_fraction=0.1, stream_validation_rows=2, shuffle_buffer=8)
    [c.next_batch(4, True) for _ in range(10)]  # 40 rows: 28 of the first pass, 12 of the second
    state = c.state_dict()
    rest = [c.next_batch(4, True) for _ in range(6)]
    resumed = build(tmp_path, spec, steps=16, validation_fraction=0.1, stream_validation_rows=2, shuffle_buffer=8)
    resumed.load_state_dict(state)
    again = [resumed.next_batch(4, True) for _ in range(6)]
    assert [b.inputs.tolist() for b in again] == [b.inputs.tolist() for b in rest]


def test_a_stream_beside_a_small_dataset_reads_on_across_its_epochs(tmp_path, no_hub):
    """Each epoch of the small dataset (first_exhausted) restarted the stream at its head: 632 streamed rows trained
    were 100 distinct ones of 2,990."""
    (tmp_path / "web.jsonl").write_text("".join(json.dumps({"text": f"Web {i}."}) + "\n" for i in range(300)))
    (tmp_path / "small.jsonl").write_text("".join(json.dumps({"text": f"Small {i}."}) + "\n" for i in range(4)))
    spec = [{"path": str(tmp_path / "web.jsonl"), "streaming": True}, {"path": str(tmp_path / "small.jsonl")}]
    c = build(tmp_path, spec, steps=40, stream_validation_rows=2, shuffle_buffer=8)
    texts = [TOK.decode(c.next_batch(4, True).inputs.flatten().tolist()) for _ in range(40)]
    web = [t for text in texts for t in text.split("<|endoftext|>") if t.startswith("Web")]
    assert len(web) > 60 and len(set(web)) == len(web)  # many epochs of the small one, no streamed row twice


def test_a_packed_stream_without_prompts_estimates_its_steps_from_the_tokens_that_count(tmp_path, no_hub):
    """The estimate took every packed token as counted: 6 steps for an 83-step stage, the schedule spent at step 6."""
    rows = [{"prompt": f"Question {i}: what is the sum of {i} and {i}, explained?", "truth": f"{2 * i}."}
            for i in range(300)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stage = {"name": "qa", "datasets": [{"path": str(tmp_path / "qa.jsonl"), "streaming": True}], "tokens": 2000,
             "batching": "packed"}
    c = Curriculum([stage], cache_dir=str(tmp_path / "cache"), stream_validation_rows=20)
    c.prepare(TOK, 64, 0)
    estimate = c.estimate_stage_steps(4, include_prompts=False)
    steps = 0
    while c.next_batch(4, False) is not None:
        steps += 1
    assert 0.8 < estimate / steps < 1.25, (estimate, steps)


def test_a_streamed_dataset_all_held_out_names_the_key_that_holds_out_fewer(tmp_path, no_hub, caplog):
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"text": f"Streamed row {i}."}) + "\n" for i in range(4)))
    spec = [{"path": str(tmp_path / "s.jsonl"), "streaming": True}]
    with pytest.raises(ConfigError, match=r"after the 4 held out for validation\); .* hold out fewer with "
                                          r"curriculum.stream_validation_rows=N .* holds out its first 1000\)$"):
        build(tmp_path, spec, steps=3, validation_fraction=0.01)
    caplog.set_level("INFO", logger="lmplay")
    build(tmp_path, spec, steps=3, validation_fraction=0.01, stream_validation_rows=2)
    assert "s.jsonl (streamed, 2 held out)" in caplog.text


def test_tokenized_data_is_cached(tmp_path, monkeypatch, no_hub):
    path = tmp_path / "t.txt"
    path.write_text("One. Two.\n\nThree.")
    first = all_text(build(tmp_path, [{"path": str(path)}]))

    def refuse(*args, **kwargs):
        raise AssertionError("re-tokenized")
    monkeypatch.setattr(tokenized, "tokenize_batch", refuse)
    assert all_text(build(tmp_path, [{"path": str(path)}])) == first
    copy = tmp_path / "copy of t.txt"  # the same rows through another path: tokenized once, not once a spelling
    copy.write_text(path.read_text())
    assert all_text(build(tmp_path, [{"path": str(copy)}])) == first
    (tmp_path / "t.txt.gz").write_text(path.read_text())  # the same bytes read through gzip: not these rows
    with pytest.raises(ConfigError, match="ends in .gz but is not a whole gzip file"):
        build(tmp_path, [{"path": str(tmp_path / "t.txt.gz")}])
    path.write_text("Changed text.")
    with pytest.raises(AssertionError, match="re-tokenized"):  # new content, new cache key
        build(tmp_path, [{"path": str(path)}])


@pytest.mark.parametrize("name,entry", [("r.jsonl", {"path": "DIR/r.jsonl"}),
                                        ("folder/part.jsonl", {"path": "DIR/folder"}),
                                        ("r.jsonl", {"path": "json", "data_files": "DIR/r.jsonl"}),
                                        ("folder/p.jsonl", {"path": "DIR/folder", "data_files": {"train": "*.jsonl"}})])
def test_a_record_file_rewritten_with_its_mtime_kept_is_read_anew(tmp_path, no_hub, name, entry):
    """datasets keys its Arrow copy of a local file by path and mtime: a file rewritten with its mtime kept (cp -p,
    rsync -t, tar, touch -r) was read as its old rows, tokenized under the new content's key, and trained on for
    good."""
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    spec = [json.loads(json.dumps(entry).replace("DIR", str(tmp_path)))]
    path.write_text("".join(json.dumps({"text": f"Old record {i}."}) + "\n" for i in range(5)))
    stamp = path.stat().st_mtime_ns
    assert all("Old record" in t for t in all_text(build(tmp_path, spec)))
    path.write_text("".join(json.dumps({"text": f"New text {i}!"}) + "\n" for i in range(5)))
    os.utime(path, ns=(stamp, stamp))
    assert all("New text" in t for t in all_text(build(tmp_path, spec)))
    path.touch()  # a later touch finds the cache entry of the new content: it holds the new rows
    assert all("New text" in t for t in all_text(build(tmp_path, spec)))


@pytest.mark.parametrize("path", ["json", "DIR"])
def test_data_files_that_map_files_to_splits_key_each_split_by_its_own_files(tmp_path, no_hub, path):
    """Every split's files joined keyed a split's rows: {train: a, test: b} read the cached rows of {train: b, test: a}
    (or of a glob of both, training on the held-out file)."""
    for name in "ab":
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": f"File {name} row {i}."}) + "\n"
                                                        for i in range(4)))
    where = {"path": str(tmp_path) if path == "DIR" else "json"}
    name = (lambda n: f"{n}.jsonl") if path == "DIR" else (lambda n: str(tmp_path / f"{n}.jsonl"))
    everything = all_text(build(tmp_path, [{**where, "data_files": [name("a"), name("b")], "validation_fraction": 0}]))
    assert len(everything) == 8
    for train, held in ("ab", "ba"):
        c = build(tmp_path, [{**where, "data_files": {"train": name(train), "test": name(held)},
                              "validation_split": "test"}])
        assert sorted(all_text(c)) == [f"<|endoftext|>File {train} row {i}." for i in range(4)], (train, held)
        assert sorted(TOK.decode(b.inputs[0].tolist()) for b in c.validation_batches(10, 1)) == [
            f"<|endoftext|>File {held} row {i}." for i in range(4)]


def test_a_folder_of_split_files_is_copied_once_by_datasets(tmp_path, no_hub):
    """Keyed by the split's own files, the train load and the validation load each built datasets' Arrow copy of
    both splits, in a cache dir of its own: twice the disk and the loading."""
    import datasets

    (tmp_path / "f").mkdir()
    for split in ("train", "test"):
        (tmp_path / "f" / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"{split} {i}."}) + "\n"
                                                               for i in range(6)))
    c = build(tmp_path, [{"path": str(tmp_path / "f"), "validation_split": "test"}])
    assert len(all_text(c)) == 6 and len(c.validation_batches(10, 1)) == 6
    local = Path(datasets.config.HF_DATASETS_CACHE) / "lmplay-local"
    copies = {p.relative_to(local).parts[0] for p in local.rglob("f-train.arrow")}
    assert len(copies) == 1 and {p.name for p in (local / copies.pop()).rglob("*.arrow")} == {"f-train.arrow",
                                                                                              "f-test.arrow"}


def test_records_without_text_are_counted_when_left_out(tmp_path, no_hub, caplog):
    """A fifth of the records had their text under another key: 480 rows trained, and nothing said the rest went."""
    records = [{"body": "misnamed"} if i % 5 == 0 else {"text": f"Record {i}."} for i in range(50)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    caplog.set_level("INFO", logger="lmplay")
    build(tmp_path, [{"path": str(tmp_path / "r.jsonl")}])
    assert "r.jsonl: 10 of its 50 records have no text in column 'text' and are left out" in caplog.text
    (tmp_path / "pairs.jsonl").write_text("".join(  # the prompt has text, the answer not: it named both columns
        json.dumps({"prompt": f"Q{i}?", "truth": "A." if i % 4 else ""}) + "\n" for i in range(20)))
    build(tmp_path, [{"path": str(tmp_path / "pairs.jsonl")}])
    assert "pairs.jsonl: 5 of its 20 records have no text in column 'truth' and are left out" in caplog.text


def test_a_text_column_of_numbers_is_noted(tmp_path, no_hub, caplog):
    """An id column named as the text trained on "0", "1", ... without a word."""
    Dataset.from_dict({"text": list(range(40)), "body": ["Words."] * 40}).to_parquet(tmp_path / "ids.parquet")
    caplog.set_level("INFO", logger="lmplay")
    build(tmp_path, [{"path": str(tmp_path / "ids.parquet")}])
    assert "ids.parquet: column 'text' holds int64 values, which train as their text" in caplog.text
    Dataset.from_dict({"text": [True, False] * 20}).to_parquet(tmp_path / "flags.parquet")  # "True"/"False"
    build(tmp_path, [{"path": str(tmp_path / "flags.parquet")}])
    assert "flags.parquet: column 'text' holds bool values" in caplog.text


def test_a_bad_cell_in_a_parallel_tokenizing_is_one_line_not_a_hung_pool(tmp_path, no_hub):
    """A ConfigError raised in a worker of datasets' pool hung the run, now and then, for good."""
    Dataset.from_dict({"text": [["a", "b"]] * 20}).to_parquet(tmp_path / "lists.parquet")
    c = Curriculum([{"name": "s", "datasets": [{"path": str(tmp_path / "lists.parquet")}], "epochs": 1}],
                   cache_dir=str(tmp_path / "cache"), validation_fraction=0.0, tokenize_procs=2)
    calls = []
    monkeypatch_map = Dataset.map

    def map_after_the_check(self, *args, **kwargs):
        calls.append(kwargs.get("num_proc"))
        return monkeypatch_map(self, *args, **kwargs)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Dataset, "map", map_after_the_check)
        with pytest.raises(ConfigError, match="column 'text' holds a list"):
            c.prepare(TOK, 64, 0)
    assert calls == []  # refused before the pool started


def test_a_text_file_that_is_not_utf8_is_refused_and_a_stray_byte_is_a_warning(tmp_path, caplog):
    """Both trained silently on U+FFFD, where prompt_file refuses the same file."""
    (tmp_path / "latin1.txt").write_bytes("café au lait. ".encode("latin-1") * 200)
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 40)
    for name in ("latin1.txt", "binary.txt"):
        with pytest.raises(ConfigError, match=rf"{name} is not UTF-8 text \(.* of its .* bytes are not UTF-8\): a "
                                              rf"binary file, or another encoding; convert it, e\.g\. iconv"):
            list(text_lines(tmp_path / name))
    (tmp_path / "stray.txt").write_bytes("ok \ufffd ".encode() * 2000 + b"\xff")  # a real U+FFFD is no stray byte
    assert "\n".join(text_lines(tmp_path / "stray.txt")).count("\ufffd") == 2001
    assert "stray.txt: 1 bytes are not UTF-8 and are read as U+FFFD" in caplog.text


def test_text_files_are_read_a_block_at_a_time_with_line_ends_and_a_byte_order_mark_as_a_reader_expects(
        tmp_path, monkeypatch):
    """A streamed 10 GB text file was read whole into memory (five times its size) before its first row; Notepad's
    byte-order mark trained as text."""
    monkeypatch.setattr(corpus, "READ_BYTES", 7)  # a \r\n split across two blocks is one line end, not two
    text = "First line.\r\nSecond\r\n\r\nThird \u00e9t\u00e9.\rlast"
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert list(text_lines(tmp_path / "a.txt")) == ["First line.", "Second", "", "Third \u00e9t\u00e9.", "last"]
    monkeypatch.setattr(corpus, "READ_BYTES", 64)
    good = b"One paragraph.\n\nAnother.\n\n" + b"More text here.\n\n" * 8
    (tmp_path / "big.txt").write_bytes(good + bytes(range(128, 256)) * 100)
    rows = text_file_rows((str(tmp_path / "big.txt"),), 20)
    assert next(rows) == {"text": "One paragraph."}  # read before the file's end, where it is not text
    with pytest.raises(ConfigError, match="big.txt is not UTF-8 text"):
        list(rows)
    (tmp_path / "lines.txt").write_bytes(b"A line of its own.\n" * 20 + bytes(range(128, 256)) * 100)
    rows = text_file_rows((str(tmp_path / "lines.txt"),), 40)  # no blank lines: one paragraph, held whole until
    assert next(rows) == {"text": "A line of its own.\nA line of its own."}  # its end, read the whole file first
    for blanks in (0, 20):  # one line (text8) was held whole; so was one with a row of blanks in it
        (tmp_path / "one.txt").write_bytes(b"word " * 4 + b" " * blanks + b"word " * 60 + bytes(range(128, 256)) * 100)
        assert next(text_file_rows((str(tmp_path / "one.txt"),), 20)) == {"text": "word " * 4}


@pytest.mark.parametrize("text", ["\u3000b  \r\u3000aaa\tword. b", "x\nabxyz \x0c\r\n  word. \nend", "ab  \t  cd" * 5,
                                  "ab" + " " * 7 + "cd" * 9,
                                  "one line, no end " * 9, "a\n\nlong line here\x0c\n\x0c\nb" * 3])
def test_a_long_line_cut_as_it_is_read_gives_the_rows_of_the_whole_line(tmp_path, monkeypatch, text):
    """Pieces of a line that read as a blank line or a work separator (spaces, a lone form feed) would end its
    paragraph: they stay with the line (cases a fuzz of the block reader found)."""
    (tmp_path / "t.txt").write_bytes(text.encode())
    for block in (1, 2, 3, 7):
        monkeypatch.setattr(corpus, "READ_BYTES", block)
        for row_chars in (1, 2, 3, 5):
            assert list(corpus.paragraph_rows(text_lines(tmp_path / "t.txt", row_chars), row_chars)) == \
                list(corpus.paragraph_rows(text_lines(tmp_path / "t.txt"), row_chars))


def test_embedded_corpus(tmp_path_factory, monkeypatch):
    """Rows of ~3 KB whole speeches: with a small context, a batch is a row and its continuations,
    each a contiguous piece of the corpus."""
    corpus = "\n".join(text_lines(embedded_path("shakespeare")))
    cache = str(tmp_path_factory.mktemp("embedded"))
    for name in ("bytes", "gpt2"):
        tok = get_tokenizer(name)
        c = Curriculum([{"name": "s", "datasets": ["shakespeare"], "epochs": 1}], cache_dir=cache)
        c.prepare(name, 128, 0)
        batch = c.next_batch(8, True)
        assert len(batch) == 8 and batch.num_tokens > 8 * 64
        for n in range(8):
            body = tok.decode(batch.inputs[n].tolist()).split("<|endoftext|>")[1]
            assert len(body) > 64 and body in corpus
        assert len(c.validation_batches(2, 4)) == 2 and c.estimate_stage_steps(8) > 100
    def refuse(*args, **kwargs):
        raise AssertionError("re-tokenized")
    monkeypatch.setattr(tokenized, "tokenize_batch", refuse)  # cached: a second run reads the tokens back
    Curriculum([{"name": "s", "datasets": ["shakespeare"], "epochs": 1}], cache_dir=cache).prepare("bytes", 128, 0)


@pytest.mark.parametrize("spec, message", [
    ({"path": "/no/such/file.txt"}, r"dataset file /no/such/file.txt does not exist"),
    ({"path": "DATA/empty.jsonl"}, r"has no rows with text to train on"),
    ({"path": "DATA/rows.jsonl", "text": "body"}, r"has no column 'body' \(columns: content, id\)"),
    ({"path": "DATA/rows.jsonl"}, r"has no 'text' column \(columns: content, id\); name the column in the dataset's entry"),
    ({"path": "DATA/rows.jsonl", "prompt": "content"}, r"a prompt needs a truth column too"),
    ({"path": "DATA/data.xml"}, r"don't know how to read .*data.xml"),
    ({"path": "embedded:homer"}, r"embedded corpus 'homer' is unknown; use one of: shakespeare"),
    ({"path": "DATA/nothing.txt"}, r"dataset '.*nothing.txt' has no rows"),
    ({"path": "DATA/nothing.jsonl"}, r"cannot load dataset 'json' from .*nothing.jsonl .*: it holds no records"),
    ({"path": "DATA/broken.jsonl"}, (r"cannot load dataset 'json' from .*broken.jsonl .*line 1 of broken.jsonl is "
                                     r"not valid JSON \(\{\"text\": \"a\"\); each line of a JSON Lines file")),
    ({"path": "DATA/two_schemas"}, r"cannot load dataset .*two_schemas.*: Couldn't cast .* because column names don't match"),
    ({"path": "json", "data_files": "DATA/nomatch*.jsonl"}, r"nomatch\*.jsonl .*: no file matches it, or it holds no records"),
    ({"path": "DATA/latin1.jsonl"}, r"latin1.jsonl' holds text that is not UTF-8 .*; save it as UTF-8"),
    ({"path": "DATA/rows.jsonl", "row_chars": 0}, r"row_chars=0 must be a positive integer"),
    ({"path": "DATA/rows.jsonl", "split": "test"}, r"rows.jsonl is one file, with no split 'test'; drop split="),
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_fraction": "abc"},
     r"validation_fraction='abc' must be a number in \[0, 1\)"),
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_fraction": -0.5},  # turned validation off silently
     r"validation_fraction=-0.5 must be a number in \[0, 1\)"),
    ({"path": "DATA/fake.txt.gz"}, r"fake.txt.gz ends in .gz but is not a whole gzip file"),
    ({"path": "DATA/fake.jsonl.gz"},  # was gzip's BadGzipFile traceback
     r"from .*fake.jsonl.gz .*: a file of it ends in .gz but is not gzip-compressed \(Not a gzipped file"),
    ({"path": "DATA/lists.jsonl"}, r"column 'text' holds a list \(\['a', 'b'\]\), not text"),  # trained as "['a', 'b']"
    ({"path": "DATA/chat.jsonl", "messages": "messages"}, r"column 'messages' holds 'hello', not a list of chat turns"),
    ({"path": "DATA/damaged.txt.gz"}, r"damaged.txt.gz ends in .gz but is not a whole gzip file"),  # zlib's traceback
    ({"path": "DATA/damaged.jsonl.gz"}, r"cannot load dataset 'json' from .*damaged.jsonl.gz"),
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_path": "DATA/rows.jsonl"},  # validated on its training
     r"validation_path=.*rows.jsonl is the dataset's own path: the run would validate on rows it trains on"),
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_path": "DATA/empty.jsonl", "validation_fraction": 0.3},
     r"validation_fraction=0.3 and validation_path both choose the held-out rows"),  # the fraction went unread
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_path": "DATA/nope.txt"},
     r"validation_path=.*nope.txt does not exist; check it"),  # it named curriculum.path
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_path": "va"},  # hub advice for path=
     r"validation_path=.*va does not exist; check it \(a local file or folder of the dataset's kind\)$"),
    ({"path": "DATA/texts", "validation_path": "DATA/texts/b.txt"},  # a file the folder trains on
     r"validation_path=.*b.txt holds a file of the same content as one the dataset trains on"),
    ({"path": "DATA/texts/a.txt", "validation_path": "DATA/a copy.txt"},
     r"validation_path=.*a copy.txt holds a file of the same content as one the dataset trains on"),
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_path": "DATA/rows copy.jsonl"},  # a record file's
     r"validation_path=.*rows copy.jsonl holds a file of the same content as one the dataset trains on"),  # copy too
    ({"path": "DATA/rows.jsonl", "text": "content", "validation_path": "DATA/rows_folder"},  # a folder holding
     r"validation_path=.*rows_folder holds a file of the same content as one the dataset trains on"),  # a copy
    ({"path": "DATA/texts/a.txt", "validation_path": "DATA/texts"},  # a folder holding the file it trains on
     r"validation_path=.*texts holds a file of the same content as one the dataset trains on"),
    ({"path": "DATA/gzipped"}, r"gzipped holds gzip-compressed data; name it gzipped.gz, or decompress it"),
    ({"path": "DATA/split_named"},
     r"names splits in some file names \(train\) but not in more.gz, which would be left"),
])
def test_source_mistakes_are_one_line_config_errors(tmp_path, no_hub, spec, message, capfd):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": "   "}) + "\n")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    (tmp_path / "rows copy.jsonl").write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    (tmp_path / "rows_folder").mkdir()
    (tmp_path / "rows_folder" / "rows.jsonl").write_text(json.dumps({"content": "x", "id": 1}) + "\n")
    (tmp_path / "data.xml").write_text("<a/>")
    (tmp_path / "nothing.txt").write_text(" \n\n ")
    (tmp_path / "nothing.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"text": "a"\n')
    (tmp_path / "two_schemas").mkdir()
    (tmp_path / "two_schemas" / "a.jsonl").write_text(json.dumps({"text": "x"}) + "\n")
    (tmp_path / "two_schemas" / "b.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"text": "caf\xe9 au lait"}\n')
    (tmp_path / "fake.txt.gz").write_text("not gzip at all\n")
    (tmp_path / "fake.jsonl.gz").write_text(json.dumps({"text": "not gzipped"}) + "\n")
    (tmp_path / "lists.jsonl").write_text(json.dumps({"text": ["a", "b"]}) + "\n")
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": "hello"}) + "\n")
    (tmp_path / "texts").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "texts" / name).write_text(f"The text of {name}.")
    (tmp_path / "a copy.txt").write_text("The text of a.txt.")
    (tmp_path / "gzipped").write_bytes(gzip.compress(b"Text, compressed, in a file named without .gz."))
    (tmp_path / "split_named").mkdir()
    (tmp_path / "split_named" / "train.txt").write_text("Training text.")
    (tmp_path / "split_named" / "more.gz").write_bytes(gzip.compress(b"More text, in no split."))
    for name in ("damaged.txt.gz", "damaged.jsonl.gz"):  # a gzip header, then data zlib cannot inflate
        (tmp_path / name).write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    spec = {k: v.replace("DATA", str(tmp_path)) if isinstance(v, str) else v for k, v in spec.items()}
    with pytest.raises(ConfigError, match=message) as e:
        build(tmp_path, [spec])
    assert "\n" not in str(e.value) and "stage 's'" in str(e.value)
    assert "Failed to load" not in capfd.readouterr().err  # datasets' own log of the failure stays quiet


def test_a_cache_dir_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    c = Curriculum([{"name": "s", "datasets": ["shakespeare"], "epochs": 1}], cache_dir=str(tmp_path / "a_file"))
    with pytest.raises(ConfigError, match=r"the tokenized-data cache .*a_file cannot be made \(File exists\); set "
                                          r"curriculum.cache_dir=DIR"):
        c.prepare(TOK, 64, 0)


@pytest.mark.parametrize("code, says", [(28, "GiB free there: free some space there"), (27, "ulimit -f unlimited"),
                                        (30, "read-only"), (13, "a directory with room that you can write")])
def test_a_cache_write_failure_names_its_cause(tmp_path, monkeypatch, code, says):
    """A file-size limit (EFBIG) was told to 'free some space' with 62 GiB free."""
    assert code in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES)
    failing = OSError(code, os.strerror(code))
    monkeypatch.setattr(tokenized, "build_cache", lambda *a, **k: (_ for _ in ()).throw(failing))
    rows = Dataset.from_dict({"text": ["some text"]})
    with pytest.raises(OutputError, match=says):
        tokenized.tokenize_records(lambda: rows, RowFormat("text", text="text"), TOK, "x", "label", tmp_path, 1,
                                   "where")


def test_what_a_killed_tokenizing_left_is_removed_by_the_next_build_on_its_host(tmp_path):
    """A SIGKILL while a dataset tokenized left its arrow files in the cache for good (gigabytes for a big one)."""
    import os
    import socket

    path = tmp_path / "data-bytes-123"
    host = socket.gethostname()
    dead = [tmp_path / f".{path.name}.{kind}-{host}-999999999" for kind in ("tmp", "map")]
    live = tmp_path / f".{path.name}.map-{host}-{os.getpid()}"  # a build going on in this very process
    elsewhere = tmp_path / f".{path.name}.map-another-node-999999999"  # a shared cache: not ours to judge
    for d in (*dead, live, elsewhere):
        d.mkdir()
    tokenized.remove_dead_builds(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name])


def test_datasets_import_notes_stay_out_of_a_runs_log(tmp_path):
    """With JAX installed, every run that tokenized printed "JAX version 0.11.2 available." (datasets logs it at
    INFO while importing, through the root logger that Hydra sets to INFO)."""
    fake = tmp_path / "site"
    for package in ("jax", "jaxlib"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").touch()
    (fake / "jax-0.11.2.dist-info").mkdir()
    (fake / "jax-0.11.2.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: jax\nVersion: 0.11.2\n")
    first_use = {"hf_datasets": "from lmplay.data.hf import hf_datasets; hf_datasets()",  # datasets lists a
                 "a folder": f"from lmplay.data.sources import data_files_of; data_files_of({str(tmp_path)!r})"}
    for how, use in first_use.items():  # folder's files before its records are read
        code = f"import logging, sys; logging.basicConfig(level=logging.INFO)\n{use}\n" \
               "print(sys.modules['datasets'].config.JAX_AVAILABLE)"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONPATH": python_path(fake)}, check=True)
        assert proc.stdout.strip() == "True" and "JAX version" not in proc.stderr, (how, proc.stderr)


def test_a_plus_override_that_replaced_a_preset_name_says_so():
    """`+curriculum.stages.0.datasets.0.row_chars=2000` on `datasets: [shakespeare]`: Hydra replaces the name with
    {row_chars: 2000}, and the error pointed at curriculum.path=FILE."""
    with pytest.raises(ConfigError, match=re.escape(
            "the dataset entry {row_chars: 2000} names no dataset and no path; an entry that is a preset's name")) as e:
        Curriculum([{"name": "s", "datasets": [{"row_chars": 2000}], "epochs": 1}])
    assert "'curriculum.stages.0.datasets.0={dataset: NAME, row_chars: 2000}'" in str(e.value)
    with pytest.raises(ConfigError, match="the dataset has no path; give one"):  # an entry with nothing in it
        Curriculum([{"name": "s", "datasets": [{}], "epochs": 1}])


def test_title_null_turns_a_title_column_off(tmp_path, no_hub):
    """A dataset with a `title` column has "Title: ..." prompts; `title: null` in its entry was ignored (the column
    titled every row still), and nothing else turned them off."""
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"title": f"Doc {i}", "text": f"Body {i}."}) + "\n"
                                              for i in range(5)))
    titled = all_text(build(tmp_path, [{"path": str(tmp_path / "t.jsonl")}]))
    assert all(t.startswith("<|endoftext|>Title: Doc ") for t in titled)
    plain = all_text(build(tmp_path, [{"path": str(tmp_path / "t.jsonl"), "title": None}]))
    assert sorted(plain) == [f"<|endoftext|>Body {i}." for i in range(5)]
    both = all_text(build(tmp_path, [{"path": str(tmp_path / "t.jsonl")}, {"path": str(tmp_path / "t.jsonl"),
                                                                          "title": None}]))
    assert sorted(both) == sorted(titled + plain)  # one file, two entries: not one entry's rows twice


def test_a_named_title_column_wins_over_a_title_column(tmp_path, no_hub):
    """`title: headline` on records that also have a `title` column titled the rows with `title`."""
    (tmp_path / "h.jsonl").write_text("".join(json.dumps({"title": "t", "headline": f"H{i}", "text": f"Body {i}."})
                                              + "\n" for i in range(3)))
    rows = all_text(build(tmp_path, [{"path": str(tmp_path / "h.jsonl"), "title": "headline"}]))
    assert sorted(rows) == [f"<|endoftext|>Title: H{i}\nBody {i}." for i in range(3)]


def test_a_lone_surrogate_in_json_lines_names_its_line(tmp_path, no_hub):
    """pyarrow refuses a "\\ud83d" escape (half an emoji) with "in row N", counted from the start of its block: a 22 MB
    file's line 250001 was "row 110567", and the line it names holds nothing wrong."""
    line = json.dumps({"text": "Plain text. " * 25})  # 11 MB in all: the bad line in datasets' second 10 MB chunk
    lines = [line] * 38_000
    lines[37_000] = '{"text": "Nice \\ud83d day."}'
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=re.escape(r"line 37001 of s.jsonl holds a lone UTF-16 surrogate (\ud83d")):
        build(tmp_path, [{"path": str(tmp_path / "s.jsonl")}])


def test_one_file_read_by_two_builders_is_two_sets_of_rows(tmp_path, no_hub):
    """The key of data_files' rows left out the builder: `path: text` over a .csv read `path: csv`'s cached rows
    (the text column, no header), and the other way round."""
    (tmp_path / "t.csv").write_text("text,other\n" + "".join(f"row number {i},x{i}\n" for i in range(6)))
    as_csv = sorted(all_text(build(tmp_path, [{"path": "csv", "data_files": str(tmp_path / "t.csv")}])))
    as_text = sorted(all_text(build(tmp_path, [{"path": "text", "data_files": str(tmp_path / "t.csv")}])))
    assert as_csv == [f"<|endoftext|>row number {i}" for i in range(6)]
    assert len(as_text) == 7 and "<|endoftext|>row number 0,x0" in as_text
