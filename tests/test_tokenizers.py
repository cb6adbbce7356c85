"""Tokenizers: GPT-2 ids offline, round trips, bytes on non-ASCII text, one-line errors."""

import numpy as np
import pytest

from lmplay.data.tokenizers import ENDOFTEXT, get_tokenizer
from lmplay.errors import ConfigError

TEXTS = ["Hello world", "  leading spaces and trailing  ", "Zürich, 東京 and emoji 🙂!", "line\n\nbreaks\tand tabs",
         "It's 2024; can't won't they'll", ""]


def test_gpt2_ids_match_openai():
    tok = get_tokenizer("gpt2")
    assert tok.encode("Hello world") == [15496, 995]
    assert (tok.name, tok.vocab_size, tok.eot_id) == ("gpt2", 50257, 50256)
    assert tok.decode([tok.eot_id]) == ENDOFTEXT


@pytest.mark.parametrize("name", ["gpt2", "bytes"])
def test_round_trip(name):
    tok = get_tokenizer(name)
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size and i != tok.eot_id for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]


@pytest.mark.parametrize("name", ["gpt2", "bytes"])
def test_special_token_text_is_not_special(name):
    """A literal "<|endoftext|>" in a document is text: only the framing places eot."""
    tok = get_tokenizer(name)
    ids = tok.encode(f"a{ENDOFTEXT}b")
    assert tok.eot_id not in ids and tok.decode(ids) == f"a{ENDOFTEXT}b"


def test_bytes_non_ascii():
    tok = get_tokenizer("bytes")
    assert (tok.vocab_size, tok.eot_id) == (257, 256)
    text = "naïve café 東京"
    ids = tok.encode(text)
    assert ids == list(text.encode("utf-8")) and len(ids) > len(text)
    assert tok.decode(ids[:-1]) == "naïve café 東\ufffd"  # a character cut in half decodes with a replacement
    assert tok.decode([104, 105, 256, 33]) == f"hi{ENDOFTEXT}!"
    # a prompt typed with bytes that are not UTF-8 reaches Python with them as surrogates: a UnicodeEncodeError
    assert tok.encode(b"ab\xff\xfecd".decode("utf-8", errors="surrogateescape")) == list(b"ab\xff\xfecd")
    assert tok.encode("a\ud800b") == list(b"a?b")  # a lone surrogate from a JSON escape


@pytest.mark.parametrize("name", ["gpt2", "bytes"])
def test_token_bytes_measure_the_text(name):
    """token_bytes is how sentence ends are mapped to token offsets: it must add up to the UTF-8 length."""
    tok = get_tokenizer(name)
    for text in TEXTS:
        assert int(np.sum(tok.token_bytes[tok.encode(text)])) == len(text.encode("utf-8"))
    assert tok.token_bytes[tok.eot_id] == 0


def test_instances_are_cached():
    assert get_tokenizer("gpt2") is get_tokenizer("gpt2")


def test_unknown_tokenizer_is_a_config_error():
    with pytest.raises(ConfigError, match=r"tokenizer='gpt3' is unknown; use one of: gpt2, bytes") as e:
        get_tokenizer("gpt3")
    assert "\n" not in str(e.value)
