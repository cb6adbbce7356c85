"""The embedded default corpus (42 Shakespeare works, see assets/ATTRIBUTION.md) and the paragraph rows
that any plain text file is cut into.

A book is one long document; as a single row it would be cut at the context and mostly dropped by the
`rows` batcher. So plain text becomes rows of consecutive whole paragraphs (a speech, in a play) of up to
`row_chars` characters: rows keep their sentence structure, and a row never spans two works.
"""

import gzip
import hashlib
import logging
import re
import zlib
from importlib import resources
from pathlib import Path

from lmplay.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED = {"shakespeare": "shakespeare.txt.gz"}  # name -> file in data/assets
DEFAULT_ROW_CHARS = 3000
WORK_SEPARATOR = re.compile(r"^\f$", re.MULTILINE)  # a line holding only a form feed separates works
BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")  # one or more blank lines between paragraphs


def paragraph_rows(text: str, row_chars: int = DEFAULT_ROW_CHARS) -> list[str]:
    """Group consecutive paragraphs into rows of at most `row_chars` characters; works separated by a
    form-feed line are never joined. A longer paragraph (or a file with no blank lines at all) is cut at
    line ends, and a longer line at `row_chars`."""
    rows = []
    for work in WORK_SEPARATOR.split(text):
        paragraphs = [p.rstrip() for p in BLANK_LINES.split(work.strip())]
        pieces = [piece for p in paragraphs if p for piece in (line_rows(p, row_chars) if len(p) > row_chars else [p])]
        rows += packed(pieces, "\n\n", row_chars)
    return rows


def line_rows(paragraph: str, row_chars: int) -> list[str]:
    """A paragraph longer than a row as rows of consecutive lines."""
    lines = [line[i:i + row_chars] for line in paragraph.split("\n") for i in range(0, len(line) or 1, row_chars)]
    return packed(lines, "\n", row_chars)


def packed(parts: list[str], separator: str, limit: int) -> list[str]:
    """Consecutive parts joined by `separator` into strings of at most `limit` characters (a longer part alone)."""
    out, current, size = [], [], 0
    for part in parts:
        if current and size + len(separator) + len(part) > limit:
            out.append(separator.join(current))
            current, size = [], 0
        size += len(part) + (len(separator) if current else 0)
        current.append(part)
    if current:
        out.append(separator.join(current))
    return out


MAX_NOT_UTF8 = 0.001  # a share of a file's bytes: a few stray bytes are read as U+FFFD, more is another encoding


def read_text(path: Path) -> str:
    """A text file's content as UTF-8 with Unix line ends (gzip-compressed if it ends in .gz, any case). A few
    undecodable bytes become U+FFFD, with a warning; a file with more is another encoding or not text, and an
    error (it trained on U+FFFD)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # zlib.error: a gzip header over damaged data
        raise ConfigError(f"{path} ends in .gz but is not a whole gzip file ({e}); compress it with gzip, or "
                          f"rename it without .gz") from None
    if data.startswith(b"\x1f\x8b") and opener is open:  # gzip's magic bytes: read through gzip by name only
        raise ConfigError(f"{path} holds gzip-compressed data; name it {path.name}.gz, or decompress it")
    text = data.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - data.count("\ufffd".encode())
    if replaced > MAX_NOT_UTF8 * len(data):
        raise ConfigError(f"{path} is not UTF-8 text ({replaced:,} of its {len(data):,} bytes are not UTF-8): a binary "
                          f"file, or another encoding; convert it, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8")
    if replaced:
        log.warning("%s: %d bytes are not UTF-8 and are read as U+FFFD", path, replaced)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("lmplay.data") / "assets" / EMBEDDED[name]))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: the identity of local data in cache keys, so an edited file is re-tokenized."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
