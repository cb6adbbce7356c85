"""Rows: what a dataset record becomes before batching, and how a row is framed into samples.

A row is a prompt (possibly empty) and a text. Plain text rows have an empty prompt, or "Title: ...\\n" when
the dataset has titles; instruction rows have a prompt and a truth (the text). Whether prompt tokens count
in the loss is decided at batching time (`include_prompts`), so one tokenized cache serves both.

Every sample is `eot + prompt + text...` and the last sample of a row ends with eot, as in the original
lmplay: eot is BOS, EOS and padding. A row longer than the context is continued in further samples; each
continuation starts at a sentence boundary and repeats the last full sentence of the sample before (one
sentence of overlap) after the row's prompt, so it reads as a continuation rather than a fresh start. The
repeated prompt and sentence are context only: every text token of a row counts in the loss exactly once.
A sentence longer than a whole sample (long verse sentences, run-on text) is cut at a line end if it has
one, else where the room ends.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lmplay.errors import ConfigError

# A sentence ends after terminal punctuation (and any closing quotes/brackets) followed by whitespace, after a
# full-width one (CJK text has no spaces between sentences) followed by whitespace, a letter or a digit, or at the
# end of a paragraph. For byte-level BPE (gpt2) and bytes a token never spans a space/non-space transition, nor
# the end of a run of punctuation before a letter or digit, so cuts are token boundaries and a text tokenized whole
# has exactly the same tokens as one tokenized sentence by sentence. "U.S.A" and "3.14" end no sentence.
CLOSERS = "\"'”’)\\]」』）】》"
SENTENCE_END = re.compile(rf"""[.!?…]+[{CLOSERS}]*(?=\s)|[。！？][.!?…。！？]*[{CLOSERS}]*(?=\s|[^\W_])""")
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

@dataclass(frozen=True)
class RowFormat:
    """Which columns of a dataset make a row. `kind` is "text" (text, optional title), "pair"
    (prompt columns joined with newlines, truth) or "chat" (a list of {role, content} messages)."""

    kind: str
    text: str | None = None
    title: str | None = None
    prompt: tuple[str, ...] = ()
    truth: str | None = None
    messages: str | None = None

    @property
    def columns(self) -> tuple[str, ...]:
        cols = (self.text, self.title, *self.prompt, self.truth, self.messages)
        return tuple(c for c in cols if c)


def _as_text(value, column: str) -> str:
    """A cell as text: a string, UTF-8 bytes (a binary column), a number, or nothing. A list or a mapping would
    train as its Python repr, and so would bytes through str(): "b'Hello\\n'". Its line ends are \\n, as a text
    file's are: a \\r\\n cell (a CSV saved on Windows) had no line or paragraph to cut at, and its rows were cut
    mid-word."""
    return unix_line_ends(_cell_text(value, column))


def unix_line_ends(text: str) -> str:
    """\\r\\n (Windows) and a lone \\r (old Macs) as \\n: the one line end row cuts look for."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _cell_text(value, column: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"column {column!r} holds bytes that are not UTF-8 text ({value[:40]!r}); convert the "
                              f"column to UTF-8 text") from None
    if isinstance(value, (list, dict, tuple)):
        raise ConfigError(f"column {column!r} holds a {type(value).__name__} ({str(value)[:60]}), not text; name "
                          f"a column of text (text=, prompt=, truth=), messages= for a list of chat turns, or for a "
                          f".json file whose records are the list under a key, field=KEY")
    return "" if value is None else str(value)


def render_chat(messages: list[dict], column: str = "messages") -> tuple[str, str]:
    """A conversation as (prompt, truth): every turn before the last assistant turn is rendered as
    "Role: content" lines into the prompt, which ends with "Assistant: "; that last turn's content is the truth."""
    if not isinstance(messages, list | None) or not all(isinstance(m, dict) for m in messages or []):
        raise ConfigError(f"column {column!r} holds {str(messages)[:60]!r}, not a list of chat turns like "
                          f"[{{role: user, content: ...}}, {{role: assistant, content: ...}}]")
    last = max((i for i, m in enumerate(messages or []) if m.get("role") == "assistant"), default=None)
    if last is None:
        return "", ""
    turns = [f"{m.get('role', 'user').capitalize()}: {_as_text(m.get('content'), column).strip()}\n"
             for m in messages[:last]]
    return "".join(turns) + "Assistant: ", _as_text(messages[last].get("content"), column).strip()


def render_rows(batch: dict[str, list], fmt: RowFormat) -> tuple[list[str], list[str]]:
    """The (prompt, text) of each record of a column batch. A non-empty prompt ends with a newline
    (or "Assistant: " for chats) so that it reads as a separate line from the text it precedes."""
    n = len(batch[fmt.columns[0]])
    if fmt.kind == "chat":
        pairs = [render_chat(batch[fmt.messages][i], fmt.messages) for i in range(n)]
        return [p for p, _ in pairs], [t for _, t in pairs]
    if fmt.kind == "pair":
        prompts = []
        for i in range(n):
            prompt = "\n".join(p for c in fmt.prompt if (p := _as_text(batch[c][i], c).strip()))
            prompts.append(prompt + "\n" if prompt else "")
        return prompts, [_as_text(t, fmt.truth) for t in batch[fmt.truth]]
    titles = [_as_text(t, fmt.title).strip() for t in batch[fmt.title]] if fmt.title else [""] * n
    return [f"Title: {t}\n" if t else "" for t in titles], [_as_text(t, fmt.text) for t in batch[fmt.text]]


def sentence_cuts(text: str) -> list[int]:
    """Character offsets where sentences end (exclusive), ending with len(text)."""
    cuts = {m.end() for m in SENTENCE_END.finditer(text)}
    for m in PARAGRAPH_BREAK.finditer(text):
        i = m.start()
        while i and text[i - 1] in " \t":
            i -= 1
        if i and not text[i - 1].isspace():
            cuts.add(i)
    cuts = sorted(cuts)
    if not cuts or cuts[-1] != len(text):
        cuts.append(len(text))
    return cuts


def line_cuts(text: str) -> list[int]:
    """Character offsets where lines end (before the newline, after a non-space): the fallback cut
    points inside a sentence too long for a sample, such as a speech in verse."""
    return [i for i in range(1, len(text)) if text[i] == "\n" and not text[i - 1].isspace()] \
        if "\n" in text else []

@dataclass
class Row:
    """A tokenized row: `tokens` = prompt tokens then text tokens; `sent_ends` are the token offsets within
    the text part where sentences end, the last being the text's length; `line_ends` where lines end."""

    tokens: np.ndarray
    prompt_len: int
    sent_ends: np.ndarray
    line_ends: np.ndarray

    @property
    def text_len(self) -> int:
        return len(self.tokens) - self.prompt_len


@dataclass(frozen=True)
class Cut:
    """One sample of a row, in coordinates of the row's text followed by its closing eot: the sample shows
    text[shown:end] (after eot + prompt) and only text[new:end] counts in the loss (shown < new: overlap)."""

    shown: int
    new: int
    end: int


def kept_prompt_len(prompt_len: int, text_len: int, context_len: int) -> int:
    """How many prompt tokens a sample repeats: all of them if the whole row fits, else at most half the
    context (the prompt's tail, the part next to the text), so that a continuation always has room for text."""
    if 1 + prompt_len + text_len + 1 <= context_len + 1:
        return prompt_len
    return min(prompt_len, context_len // 2)


def plan_cuts(prompt_len: int, sent_ends: np.ndarray, line_ends: np.ndarray, context_len: int,
              max_cuts: int | None = None) -> list[Cut]:
    """The samples a row is framed into, each of at most context_len + 1 tokens (inputs and shifted targets).
    Cuts are planned left to right, so `max_cuts` stops early with the first ones (a long row feeding
    the end of a batch need not be planned whole).

    A sample ends at the last sentence end that fits, unless the sentence after it is longer than a whole
    sample (or no sentence end fits): that sentence must be cut anyway, so the sample is filled up to its
    last line end, or where the room ends. After a sentence end, the next sample starts with the last full
    sentence of this one, unless that sentence plus the next one would not fit: then it starts right at
    the boundary, without overlap (as it does after a line end or a hard cut).
    """
    ends = np.asarray(sent_ends, dtype=np.int64).copy()
    ends[-1] += 1  # the closing eot belongs to the last sentence
    lines = np.asarray(line_ends, dtype=np.int64)
    total = int(ends[-1])
    room = context_len - kept_prompt_len(prompt_len, total - 1, context_len)  # context_len+1 minus eot minus prompt
    cuts, shown, new = [], 0, 0
    while True:
        limit = shown + room
        if total <= limit:
            cuts.append(Cut(shown, new, total))
            return cuts
        j = int(np.searchsorted(ends, limit, side="right")) - 1  # last sentence end that fits
        sentence_end = int(ends[j]) if j >= 0 and ends[j] > new else None
        if sentence_end is not None and ends[j + 1] - sentence_end <= room:
            end = sentence_end
        else:  # the sentence running past the limit gets cut: at its last line end that fits, else at the limit
            k = int(np.searchsorted(lines, limit, side="right")) - 1
            end = int(lines[k]) if k >= 0 and lines[k] > (sentence_end or new) else limit
        cuts.append(Cut(shown, new, end))
        if len(cuts) == max_cuts:
            return cuts
        overlap = end
        if end == sentence_end:
            start_of_last = int(ends[j - 1]) if j > 0 else 0
            next_end = int(ends[j + 1])
            if start_of_last >= shown and next_end - start_of_last <= room:
                overlap = start_of_last
        shown, new = overlap, end


def frame_row(row: Row, context_len: int, eot_id: int, include_prompts: bool,
              max_samples: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The samples of a row as (tokens, counted) pairs; `counted[i]` says whether tokens[i] is a target
    that counts in the loss (tokens[0], the leading eot, never is). At most `max_samples` are built."""
    cuts = plan_cuts(row.prompt_len, row.sent_ends, row.line_ends, context_len, max_samples)
    keep = kept_prompt_len(row.prompt_len, row.text_len, context_len)
    prompt = row.tokens[row.prompt_len - keep: row.prompt_len]
    text = np.append(row.tokens[row.prompt_len:], eot_id).astype(np.int64)
    samples = []
    for k, cut in enumerate(cuts):
        tokens = np.concatenate(([eot_id], prompt, text[cut.shown:cut.end])).astype(np.int64)
        counted = np.zeros(len(tokens), dtype=bool)
        counted[1:1 + keep] = include_prompts and k == 0
        counted[1 + keep + cut.new - cut.shown:] = True
        samples.append((tokens, counted))
    return samples


def row_samples(prompt_lens: np.ndarray, text_lens: np.ndarray,
                boundaries_of: Callable[[int], tuple[np.ndarray, np.ndarray]], context_len: int) -> np.ndarray:
    """Samples per row (for exact step estimates). `boundaries_of(i)` gives row i's (sent_ends, line_ends);
    it is only called for the rows that do not fit in one sample."""
    counts = np.ones(len(text_lens), dtype=np.int64)
    long_rows = np.flatnonzero(prompt_lens + text_lens + 1 > context_len)
    for i in long_rows:
        counts[i] = len(plan_cuts(int(prompt_lens[i]), *boundaries_of(i), context_len))
    return counts
