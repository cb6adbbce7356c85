"""Row rendering, sentence boundaries in token space, and framing long rows into continuation samples."""

import numpy as np
import pytest

from lmplay.data.corpus import paragraph_rows
from lmplay.data.rows import RowFormat, Row, frame_row, plan_cuts, render_rows, sentence_cuts
from lmplay.data.tokenized import boundary_token_ends
from lmplay.data.tokenizers import get_tokenizer

TEXT = ('First sentence here. Second one is a bit longer, isn\'t it? "Quoted end." (Bracketed!) Short.\n\n'
        "A new paragraph without a final stop\n\nAnother  one…  With unicode: café 東京. And the end.")


def row_of(text: str, tok, prompt: str = "") -> Row:
    p, t = tok.encode(prompt), np.array(tok.encode(text), dtype=np.int64)
    return Row(np.concatenate((np.array(p, dtype=np.int64), t)), len(p), *boundary_token_ends(text, t, tok.token_bytes))


def test_sentence_cuts_are_before_the_whitespace():
    cuts = sentence_cuts(TEXT)
    pieces = [TEXT[a:b] for a, b in zip([0, *cuts], cuts)]
    assert "".join(pieces) == TEXT and cuts[-1] == len(TEXT)
    assert pieces[:5] == ["First sentence here.", " Second one is a bit longer, isn't it?", ' "Quoted end."',
                          " (Bracketed!)", " Short."]
    assert "\n\nA new paragraph without a final stop" in pieces  # a paragraph end is a sentence end
    for cut in cuts[:-1]:
        assert not TEXT[cut - 1].isspace() and TEXT[cut].isspace()


@pytest.mark.parametrize("name", ["gpt2", "bytes"])
def test_sentence_ends_are_exact_token_boundaries(name):
    """Tokenizing sentence by sentence gives the same tokens as tokenizing the whole text, and the
    sentence ends found from byte lengths are exactly where each sentence's tokens end."""
    tok = get_tokenizer(name)
    cuts = sentence_cuts(TEXT)
    pieces = [TEXT[a:b] for a, b in zip([0, *cuts], cuts)]
    whole = tok.encode(TEXT)
    assert sum((tok.encode(p) for p in pieces), []) == whole
    ends, _ = boundary_token_ends(TEXT, np.array(whole), tok.token_bytes)
    assert ends.tolist() == np.cumsum([len(tok.encode(p)) for p in pieces]).tolist()


CJK = "これはテストです。「次の文です！」と言った。3つ目？ 最後の文。English after."


@pytest.mark.parametrize("name", ["gpt2", "bytes"])
def test_full_width_sentence_ends_need_no_space_and_are_exact_token_boundaries(name):
    """CJK text has no space after 。！？: its long rows were cut hard mid-sentence, with no sentence of overlap."""
    cuts = sentence_cuts(CJK)
    pieces = [CJK[a:b] for a, b in zip([0, *cuts], cuts)]
    assert pieces == ["これはテストです。「次の文です！」", "と言った。", "3つ目？", " 最後の文。", "English after."]  # 。「 is
    # one gpt2 token: no cut between
    tok = get_tokenizer(name)
    assert [t for p in pieces for t in tok.encode(p)] == tok.encode(CJK)
    assert sentence_cuts("U.S.A is 3.14 wide. Ok") == [19, 22]  # a period before a letter or digit ends none


def test_render_text_title_pair_and_chat():
    batch = {"title": ["Cats", None], "text": ["Cats purr.", "No title."]}
    assert render_rows(batch, RowFormat("text", text="text", title="title")) == (
        ["Title: Cats\n", ""], ["Cats purr.", "No title."])
    batch = {"system_prompt": ["Be brief.", ""], "question": ["2+2?", "Capital of France?"], "response": ["4", "Paris"]}
    fmt = RowFormat("pair", prompt=("system_prompt", "question"), truth="response")
    assert render_rows(batch, fmt) == (["Be brief.\n2+2?\n", "Capital of France?\n"], ["4", "Paris"])
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": " Goodbye. "}]
    prompts, truths = render_rows({"messages": [chat]}, RowFormat("chat", messages="messages"))
    assert prompts == ["System: Be kind.\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant: "]
    assert truths == ["Goodbye."]


def test_paragraph_rows_group_whole_paragraphs_and_never_join_works():
    paras = [f"SPEAKER {i}.\nLine {i} of verse." for i in range(10)]
    text = "\n\n".join(paras[:6]) + "\n\f\n" + "\n\n".join(paras[6:])
    rows = list(paragraph_rows(text.split("\n"), row_chars=70))
    assert all(len(r) <= 70 for r in rows)
    assert "\n\n".join(rows) == "\n\n".join(paras)  # nothing lost, order kept, paragraphs whole
    assert not any(paras[5] in r and paras[6] in r for r in rows)  # the work boundary is a row boundary


def test_paragraphs_keep_their_first_lines_indentation():
    """The blank-line split ate the next paragraph's leading spaces: an indented code block or verse lost its layout
    in its first line only."""
    text = "    Indented first.\n\nIntro:\n \n    def f():\n        return 1\n\n\n       SONG.\n   \n"
    assert list(paragraph_rows(text.split("\n"))) == [
        "    Indented first.\n\nIntro:\n\n    def f():\n        return 1\n\n       SONG."]


def test_a_paragraph_longer_than_a_row_is_cut_at_line_ends():
    """A file with no blank lines was one row as long as the file: an epoch of one step."""
    lines = [f"Line {i} of a file that has no blank lines at all." for i in range(200)] + ["x" * 250]
    rows = list(paragraph_rows(lines, row_chars=100))
    assert all(len(r) <= 100 for r in rows) and len(rows) > 100
    assert "\n".join(rows) == "\n".join(lines[:-1] + ["x" * 100, "x" * 100, "x" * 50])  # the long line cut at 100


def test_record_text_with_windows_line_ends_is_cut_as_with_unix_ones():
    """A CSV or JSON cell's \\r\\n had no line end or paragraph break to cut at: long rows were cut mid-word."""
    text = "Heading one\n\nline a of verse\nline b of verse\n"
    batch = {"text": [text.replace("\n", "\r\n"), text.replace("\n", "\r")]}
    assert render_rows(batch, RowFormat("text", text="text"))[1] == [text, text]


@pytest.mark.parametrize("context_len", [64, 100, 160])
def test_continuations_overlap_one_sentence_and_count_each_token_once(context_len):
    tok = get_tokenizer("bytes")
    text = " ".join(f"Sentence number {i} is here." for i in range(12))
    row = row_of(text, tok)
    samples = frame_row(row, context_len, tok.eot_id, include_prompts=True)
    assert len(samples) > 2
    ends = set(row.sent_ends.tolist())
    covered = []
    for k, (tokens, counted) in enumerate(samples):
        assert len(tokens) <= context_len + 1 and tokens[0] == tok.eot_id and not counted[0]
        body = tok.decode(tokens[1:].tolist())
        if k > 0:
            prev = tok.decode(samples[k - 1][0][1:].tolist())
            overlap = body[: len(body) - len(body.lstrip())] + body.lstrip().split(".")[0] + "."
            assert body.startswith(" Sentence number") and prev.endswith(overlap)  # last sentence repeated
            assert not counted[1:1 + len(tok.encode(overlap))].any()  # ...as context only
            assert counted[1 + len(tok.encode(overlap))]  # new text counts from right after it
        covered += tokens[counted].tolist()
    assert covered == row.tokens.tolist() + [tok.eot_id]  # every token (and the final eot) counted exactly once
    # every sample but the last ends at a sentence end; each starts its new text where the previous ended
    consumed = 0
    for cut in plan_cuts(row.prompt_len, row.sent_ends, row.line_ends, context_len)[:-1]:
        assert cut.end in ends and cut.new == consumed
        consumed = cut.end


def test_no_overlap_when_the_overlap_would_leave_no_room():
    """Sentences of ~27 tokens in a 40-token context: repeating one would leave no room for the next,
    so each continuation starts right at the sentence boundary, repeating nothing."""
    tok = get_tokenizer("bytes")
    row = row_of(" ".join(f"Sentence number {i} is here." for i in range(5)), tok)
    samples = frame_row(row, 40, tok.eot_id, include_prompts=True)
    assert [tok.decode(t[1:].tolist()) for t, _ in samples] == [
        "Sentence number 0 is here."] + [f" Sentence number {i} is here." for i in range(1, 4)] + [
        " Sentence number 4 is here.<|endoftext|>"]
    assert all(c[1:].all() for _, c in samples)


def test_prompt_is_repeated_as_context_and_counted_only_when_asked():
    tok = get_tokenizer("bytes")
    prompt = "Title: Counting\n"
    row = row_of(" ".join(f"Fact {i} holds." for i in range(8)), tok, prompt)
    p = row.prompt_len
    for include in (True, False):
        samples = frame_row(row, 48, tok.eot_id, include_prompts=include)
        assert len(samples) > 1
        for k, (tokens, counted) in enumerate(samples):
            assert tok.decode(tokens[1:1 + p].tolist()) == prompt
            assert counted[1:1 + p].all() == (include and k == 0) and (counted[1:1 + p].any() == (include and k == 0))


def test_sentence_longer_than_the_context_is_cut_hard_and_nothing_is_lost():
    tok = get_tokenizer("bytes")
    text = "Short. " + "x" * 100 + " end. Tail."
    row = row_of(text, tok)
    samples = frame_row(row, 32, tok.eot_id, include_prompts=True)
    assert all(len(t) <= 33 for t, _ in samples)
    assert len(samples[0][0]) == 33  # the long sentence is cut anyway: the first sample is filled, not ended early
    assert sum((t[c].tolist() for t, c in samples), []) == row.tokens.tolist() + [tok.eot_id]


def test_a_sentence_too_long_for_a_sample_is_cut_at_line_ends():
    """Verse: one sentence over many lines. Samples end at line ends and continuations start with a line."""
    tok = get_tokenizer("bytes")
    lines = [f"Line {i} of a very long speech," for i in range(12)]
    text = "KING.\n" + "\n".join(lines) + "\nand so it ends."
    row = row_of(text, tok)
    samples = frame_row(row, 100, tok.eot_id, include_prompts=True)
    bodies = [tok.decode(t[1:].tolist()) for t, _ in samples]
    assert len(bodies) > 2 and all(len(t) <= 101 for t, _ in samples)
    for body in bodies[:-1]:
        assert body.endswith(",")  # a whole line, cut before its newline
    for body in bodies[1:]:
        assert body.startswith(("\nLine", "\nand"))  # no overlap after a line cut: new text from the line start
    assert "".join(bodies) == text + "<|endoftext|>"


def test_a_row_that_fits_is_one_sample_with_closing_eot():
    tok = get_tokenizer("bytes")
    row = row_of("One. Two.", tok, "Q\n")
    (tokens, counted), = frame_row(row, 64, tok.eot_id, include_prompts=False)
    assert tok.decode(tokens.tolist()) == "<|endoftext|>Q\nOne. Two.<|endoftext|>"
    assert counted.tolist() == [False, False, False] + [True] * (len("One. Two.") + 1)


def test_max_samples_truncates_the_framing():
    tok = get_tokenizer("bytes")
    row = row_of(" ".join(f"Sentence {i}." for i in range(30)), tok)
    full = frame_row(row, 32, tok.eot_id, True)
    part = frame_row(row, 32, tok.eot_id, True, max_samples=2)
    assert len(full) > 2 and len(part) == 2
    assert all((a[0] == b[0]).all() and (a[1] == b[1]).all() for a, b in zip(full, part))


@pytest.mark.parametrize("name", ["bytes", "gpt2"])
def test_the_cache_keys_row_schema_is_the_columns_tokenizing_makes(name):
    """The cache key (and every checkpoint's data key) spells the columns out, to stay the same across HF versions;
    a column changed in token_features alone would keep old caches valid for rows of another layout."""
    from lmplay.data.tokenized import row_schema, token_features

    tokenizer = get_tokenizer(name)
    assert str(token_features(tokenizer)) == row_schema(tokenizer)
