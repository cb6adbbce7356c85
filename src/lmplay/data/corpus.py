"""The embedded default corpus (42 Shakespeare works, see assets/ATTRIBUTION.md) and the paragraph rows
that any plain text file is cut into.

A book is one long document; as a single row it would be cut at the context and mostly dropped by the
`rows` batcher. So plain text becomes rows of consecutive whole paragraphs (a speech, in a play) of up to
`row_chars` characters: rows keep their sentence structure, and a row never spans two works.
"""

import gzip
import hashlib
import re
from importlib import resources
from pathlib import Path

EMBEDDED = {"shakespeare": "shakespeare.txt.gz"}  # name -> file in data/assets
DEFAULT_ROW_CHARS = 3000
WORK_SEPARATOR = re.compile(r"^\f$", re.MULTILINE)  # a line holding only a form feed separates works
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


def paragraph_rows(text: str, row_chars: int = DEFAULT_ROW_CHARS) -> list[str]:
    """Group consecutive paragraphs into rows of at most `row_chars` characters (a longer paragraph is
    a row of its own); works separated by a form-feed line are never joined."""
    rows = []
    for work in WORK_SEPARATOR.split(text):
        current: list[str] = []
        size = 0
        for para in PARAGRAPH_BREAK.split(work.strip()):
            para = para.rstrip()
            if not para:
                continue
            if current and size + 2 + len(para) > row_chars:
                rows.append("\n\n".join(current))
                current, size = [], 0
            size += len(para) + (2 if current else 0)
            current.append(para)
        if current:
            rows.append("\n\n".join(current))
    return rows


def read_text(path: Path) -> str:
    """A text file's content as UTF-8 (gzip-compressed if it ends in .gz); undecodable bytes become U+FFFD."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("lmplay.data") / "assets" / EMBEDDED[name]))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: the identity of local data in cache keys, so an edited file is re-tokenized."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
