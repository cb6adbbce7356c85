"""The embedded default corpus (42 Shakespeare works, see assets/ATTRIBUTION.md) and the paragraph rows
that any plain text file is cut into.

A book is one long document; as a single row it would be cut at the context and mostly dropped by the
`rows` batcher. So plain text becomes rows of consecutive whole paragraphs (a speech, in a play) of up to
`row_chars` characters: rows keep their sentence structure, and a row never spans two works.
"""

import codecs
import gzip
import hashlib
import itertools
import logging
import zlib
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path

from lmplay.data.rows import unix_line_ends
from lmplay.errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED = {"shakespeare": "shakespeare.txt.gz"}  # name -> file in data/assets
DEFAULT_ROW_CHARS = 3000
WORK_SEPARATOR = "\f"  # a line holding only a form feed separates works
READ_BYTES = 1 << 24  # a text file is read, decoded and cut into rows this many bytes at a time


def paragraph_rows(lines: Iterable[str], row_chars: int = DEFAULT_ROW_CHARS) -> Iterator[str]:
    """Group consecutive paragraphs into rows of at most `row_chars` characters; works separated by a
    form-feed line are never joined. A longer paragraph (or a file with no blank lines at all) is cut at
    line ends, and a longer line at `row_chars`. Lazy: a file streams through a line at a time."""
    for _, work in itertools.groupby(pieces(lines, row_chars), key=lambda numbered: numbered[0]):
        yield from packed((piece for _, piece in work), "\n\n", row_chars)


def pieces(lines: Iterable[str], row_chars: int) -> Iterator[tuple[int, str]]:
    """(work number, piece) of text lines: each paragraph, or the rows of one longer than a row. A paragraph ends
    at a line of only spaces and tabs, keeping its first line's indentation (verse, an indented code block) and
    losing its trailing whitespace."""
    work = 0
    for ends, group in itertools.groupby(lines, key=is_break):
        if ends:
            work += sum(line == WORK_SEPARATOR for line in group)
        else:
            yield from ((work, piece) for piece in paragraph_pieces(group, row_chars))


def is_break(line: str) -> bool:
    """A line that ends a paragraph: only spaces and tabs, or a work separator."""
    return line == WORK_SEPARATOR or not line.strip(" \t")


def paragraph_pieces(lines: Iterator[str], row_chars: int) -> Iterator[str]:
    """A paragraph's lines as the paragraph, or, once it is longer than a row, as rows of its lines cut as they are
    read: a file without blank lines is one paragraph, which held whole was read whole."""
    lines, head, size = rstripped(lines), [], -1
    for line in lines:
        head.append(line)
        size += len(line) + 1
        if size > row_chars:
            yield from line_rows(itertools.chain(head, lines), row_chars)
            return
    if head:
        yield "\n".join(head)


def rstripped(lines: Iterable[str]) -> Iterator[str]:
    """The lines of `"\\n".join(lines).rstrip()`, read one at a time: a line with text is held until another
    follows."""
    held: list[str] = []
    for line in lines:
        if line.strip():
            yield from held
            held = [line]
        else:
            held.append(line)
    if held and held[0].strip():
        yield held[0].rstrip()


def line_rows(lines: Iterable[str], row_chars: int) -> Iterator[str]:
    """A paragraph longer than a row as rows of consecutive lines, a line longer than a row cut at `row_chars`."""
    return packed((line[i:i + row_chars] for line in lines for i in range(0, len(line) or 1, row_chars)), "\n",
                  row_chars)


def packed(parts: Iterable[str], separator: str, limit: int) -> Iterator[str]:
    """Consecutive parts joined by `separator` into strings of at most `limit` characters (a longer part alone)."""
    current, size = [], 0
    for part in parts:
        if current and size + len(separator) + len(part) > limit:
            yield separator.join(current)
            current, size = [], 0
        size += len(part) + (len(separator) if current else 0)
        current.append(part)
    if current:
        yield separator.join(current)


MAX_NOT_UTF8 = 0.001  # a share of a file's bytes: a few stray bytes are read as U+FFFD, more is another encoding


def text_lines(path: Path, longest: int | None = None) -> Iterator[str]:
    """A text file's lines (without their ends: \\n, \\r\\n or \\r), read as UTF-8 a block at a time (gzip-compressed
    if it ends in .gz, any case; a byte-order mark dropped). A few undecodable bytes become U+FFFD, with a warning; a
    file with more is another encoding or not text, and an error (it trained on U+FFFD).

    A line longer than `longest` (paragraph_rows' row_chars) comes in pieces of `longest` characters as it is read,
    which paragraph_rows cuts into the rows it would cut the whole line into: a one-line file (text8) was held whole
    (no piece of only spaces, which would read as a blank line, is cut off)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
    read = replaced = 0
    tail = ""  # the unfinished last line of the blocks so far
    try:
        with opener(path, "rb") as f:
            while block := f.read(READ_BYTES):
                if not read and block.startswith(b"\x1f\x8b") and opener is open:  # gzip's magic: read by name only
                    raise ConfigError(f"{path} holds gzip-compressed data; name it {path.name}.gz, or decompress it")
                text = decoder.decode(block)
                read, replaced = read + len(block), replaced + text.count("\ufffd") - block.count("\ufffd".encode())
                if replaced > MAX_NOT_UTF8 * read:
                    raise ConfigError(f"{path} is not UTF-8 text ({replaced:,} of its first {read:,} bytes are not "
                                      f"UTF-8): a binary file, or another encoding; convert it, e.g. iconv -f latin1 "
                                      f"-t utf-8 FILE > FILE.utf8")
                lines = unix_line_ends(tail + text).split("\n")
                if text.endswith("\r"):  # its \n may start the next block
                    lines[-2:] = [lines[-2] + "\r"]
                tail = lines.pop()
                yield from lines
                if longest:
                    yield from (cut := line_pieces(tail, longest))
                    tail = tail[sum(map(len, cut)):]
            tail += decoder.decode(b"", final=True)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # zlib.error: a gzip header over damaged data
        raise ConfigError(f"{path} ends in .gz but is not a whole gzip file ({e}); compress it with gzip, or "
                          f"rename it without .gz") from None
    if replaced:
        log.warning("%s: %d bytes are not UTF-8 and are read as U+FFFD", path, replaced)
    yield from unix_line_ends(tail).split("\n")


def line_pieces(tail: str, longest: int) -> list[str]:
    """Pieces of `k x longest` characters that can be cut off the front of an unfinished line: none that reads as a
    blank line (a run of blanks goes with the text after it), and none that leaves a rest that could (a line end must
    find text after the last cut, or the rest of a long line would end its paragraph)."""
    text_ends = len(tail.rstrip(" \t\r\f"))  # tail[i:] is no blank or separator line iff i < text_ends ("\r": a
    # line end to come; "\f": a rest of only a form feed would read as a work separator)
    pieces: list[str] = []
    start = 0
    for end in range(longest, min(len(tail) - 1, text_ends), longest):
        if not is_break(piece := tail[start:end]):
            pieces.append(piece)
            start = end
    return pieces


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("lmplay.data") / "assets" / EMBEDDED[name]))


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes: the identity of local data in cache keys, so an edited file is re-tokenized."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
