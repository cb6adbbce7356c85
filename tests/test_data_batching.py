"""Batching through the Curriculum: `rows` (continuations within a batch, every row once per epoch,
padding never counted) and `packed` (full windows covering the row stream in order)."""

import json
import re
from collections import Counter, defaultdict

import numpy as np

from lmplay.data.batch import IGNORE_INDEX
from lmplay.data.curriculum import Curriculum
from lmplay.data.tokenizers import get_tokenizer

TOK = get_tokenizer("bytes")
MARK = re.compile(r"R(\d{3})s(\d{2})")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def marked_rows(n: int, seed: int = 0) -> list[str]:
    """Row i has a random number of sentences "Ri..sj.. words." (1 to 9): every sentence says where it is from."""
    rng = np.random.default_rng(seed)
    return [" ".join(f"R{i:03d}s{j:02d} {'ab' * int(rng.integers(1, 6))}." for j in range(int(rng.integers(1, 10))))
            for i in range(n)]


def curriculum(tmp_path, records, context_len=64, seed=7, **stage) -> Curriculum:
    stage = {"name": "s", "datasets": [{"path": write_jsonl(tmp_path / "data.jsonl", records)}], "epochs": 1, **stage}
    batching = stage.pop("batching", "rows")
    c = Curriculum([stage], batching=batching, validation_fraction=0.0, cache_dir=str(tmp_path / "cache"))
    c.prepare(TOK, context_len, seed)
    return c


def drain(c: Curriculum, batch_size: int, include_prompts: bool = True):
    batches = []
    while (b := c.next_batch(batch_size, include_prompts)) is not None:
        batches.append(b)
    return batches


def counted_marks(batch, n: int) -> list[tuple[int, int]]:
    """(row, sentence) marks in the counted text of sample n (each mark is counted whole or not at all)."""
    keep = batch.targets[n] != IGNORE_INDEX
    return [(int(r), int(s)) for r, s in MARK.findall(TOK.decode(batch.targets[n][keep].tolist()))]


def test_rows_every_row_once_and_never_across_batches(tmp_path):
    texts = marked_rows(60)
    sentences = {i: len(MARK.findall(t)) for i, t in enumerate(texts)}
    c = curriculum(tmp_path, [{"text": t} for t in texts], context_len=48)
    batches = drain(c, 6)
    assert all(len(b) == 6 for b in batches[:-1]) and 1 <= len(batches[-1]) <= 6
    assert c.next_batch(6, True) is None  # the stage is over and stays over
    seen_in: dict[int, int] = {}
    truncated = 0
    for k, batch in enumerate(batches):
        marks = defaultdict(list)
        for n in range(len(batch)):
            for r, s in counted_marks(batch, n):
                marks[r].append(s)
        for r, ss in marks.items():
            assert r not in seen_in, f"row {r} in batch {seen_in.get(r)} and again in batch {k}"
            seen_in[r] = k
            assert ss == list(range(len(ss)))  # a prefix of the row, in order, each sentence counted once
            truncated += len(ss) < sentences[r]
    assert sorted(seen_in) == list(range(60))  # no row lost
    assert truncated > 0  # some rows did not fit their batch: their rest was dropped, not carried over
    assert c.estimate_stage_steps(6) == len(batches)


def test_the_share_of_tokens_rows_batching_trains_is_counted_exactly(tmp_path):
    """An epoch of rows batching drops what of a long row does not fit in its batch; the run says how much it
    trains (3.8% of a file of long documents, while it said "1.0 epochs"). It is what the batches hold of the rows'
    tokens, which a batch that fits every row trains whole; a second run reads it with the kept step count."""
    records = [{"text": t} for t in marked_rows(60)]
    everything = sum(b.num_tokens for b in drain(curriculum(tmp_path, records, context_len=16), 10_000))
    for stage in ({}, {"epochs": None, "tokens": everything // 3}, {"epochs": None, "steps": 4}):
        c = curriculum(tmp_path, records, context_len=16, **stage)
        c.estimate_stage_steps(6)
        share = c.trained_share
        batches = drain(c, 6)
        taken = {r for b in batches for n in range(len(b)) for r, _ in counted_marks(b, n)}
        whole = sum(b.num_tokens for b in drain(curriculum(tmp_path, [records[r] for r in sorted(taken)],
                                                           context_len=16), 10_000))
        assert share == sum(b.num_tokens for b in batches) / whole < 0.9, stage
        again = curriculum(tmp_path, records, context_len=16, **stage)
        again.estimate_stage_steps(6)
        assert again.trained_share == share
    for context_len, batching, share in ((16, "rows", 1.0), (48, "packed", None)):  # rows that fit; every window
        c = curriculum(tmp_path, records, context_len=context_len, batching=batching)
        c.estimate_stage_steps(10_000 if batching == "rows" else 6)
        assert c.trained_share == share


def test_padding_never_counts(tmp_path):
    c = curriculum(tmp_path, [{"text": t} for t in ["Hi.", "A much longer row of text here.", "Mid size row."]],
                   context_len=64)
    batch = c.next_batch(3, True)
    assert batch.inputs.shape == (3, max(len(t) for t in ["Hi.", "A much longer row of text here."]) + 1)
    for n in range(3):
        real = TOK.decode(batch.inputs[n].tolist()).split("<|endoftext|>")[1]
        width = len(real) + 1  # eot + text; the sample's last input is its last text token
        assert (batch.inputs[n, width:] == TOK.eot_id).all()
        assert (batch.targets[n, width:] == IGNORE_INDEX).all()
        assert (batch.targets[n, :width] != IGNORE_INDEX).all()
        assert batch.targets[n, width - 1] == TOK.eot_id  # the closing eot is learned
    assert batch.num_tokens == sum(len(t) + 1 for t in ["Hi.", "A much longer row of text here.", "Mid size row."])
    assert batch.num_positions == batch.num_tokens < batch.inputs.numel()  # MFU's count: no padding either


def test_short_final_batch_is_emitted_once(tmp_path):
    c = curriculum(tmp_path, [{"text": f"R{i:03d}s00 x."} for i in range(10)])
    batches = drain(c, 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    rows = Counter(r for b in batches for n in range(len(b)) for r, _ in counted_marks(b, n))
    assert rows == Counter(range(10))


def test_second_epoch_reshuffles_and_flows_across_the_boundary(tmp_path):
    c = curriculum(tmp_path, [{"text": f"R{i:03d}s00 x."} for i in range(10)], epochs=2)
    batches = drain(c, 4)
    assert [len(b) for b in batches] == [4, 4, 4, 4, 4]  # no short batch at the epoch boundary
    order = [r for b in batches for n in range(len(b)) for r, _ in counted_marks(b, n)]
    assert sorted(order[:10]) == sorted(order[10:]) == list(range(10))
    assert order[:10] != order[10:]


def test_prompts_count_only_with_include_prompts(tmp_path):
    """In the loss, that is: the model computes on the prompts either way, and MFU counts them (it read 7x too low
    on a stage of short answers to long prompts)."""
    records = [{"prompt": f"Question {i}?", "truth": f"Answer {i}."} for i in range(4)]
    positions = set()
    for include in (True, False):
        c = curriculum(tmp_path, records)
        batch = c.next_batch(4, include)
        positions.add(batch.num_positions)
        assert (batch.num_tokens == batch.num_positions) == include
        for n in range(4):
            text = TOK.decode(batch.inputs[n].tolist())
            counted = TOK.decode(batch.targets[n][batch.targets[n] != IGNORE_INDEX].tolist())
            i = re.search(r"Question (\d)", text).group(1)
            expected = f"Question {i}?\nAnswer {i}.<|endoftext|>" if include else f"Answer {i}.<|endoftext|>"
            assert counted == expected
    assert positions == {sum(len(f"Question {i}?\nAnswer {i}.") + 1 for i in range(4))}  # eot, text: the inputs


def test_packed_windows_are_full_and_cover_the_stream_in_order(tmp_path):
    texts = marked_rows(40, seed=3)
    records = [{"text": t} for t in texts]
    packed = curriculum(tmp_path, records, context_len=32, batching="packed")
    batches = drain(packed, 5)
    windows = [w for b in batches for w in b.inputs]
    assert all(b.inputs.shape == (5, 32) for b in batches[:-1]) and batches[-1].inputs.shape[1] == 32
    for b in batches:
        assert (b.targets != IGNORE_INDEX).all()  # no padding, every target counts
        assert (b.targets[:, :-1] == b.inputs[:, 1:]).all()
    flat = [w for b in batches for w in zip(b.inputs, b.targets)]
    for (_, t0), (i1, _) in zip(flat, flat[1:]):
        assert t0[-1] == i1[0]  # each window starts on the last token of the one before
    stream = np.concatenate([windows[0][:1].numpy()] + [t.numpy() for _, t in flat])  # stride T: no gaps
    docs = TOK.decode(stream.tolist()).split("<|endoftext|>")[1:]
    # same seed: packed documents come in the order the rows batcher takes rows
    rows = curriculum(tmp_path, records, context_len=10_000)
    order = [int(MARK.search(TOK.decode(r.tolist())).group(1)) for b in drain(rows, 4) for r in b.inputs]
    assert docs[:-1] == [texts[i] for i in order][:len(docs) - 1]
    assert texts[order[len(docs) - 1]].startswith(docs[-1])  # the stream ends inside the last document
    total = sum(len(t) + 1 for t in texts)
    assert len(windows) == (total - 1) // 32  # only the last, partial window is dropped
    assert packed.estimate_stage_steps(5) == len(batches)


def test_packed_without_prompts_skips_windows_inside_a_prompt_and_counts_its_steps_exactly(tmp_path):
    """A window inside one long prompt has no target: skipped, and left out of the stage's step count."""
    rng = np.random.default_rng(5)
    records = [{"prompt": "Q" * int(rng.integers(1, 120)) + "?", "truth": f"A{i}."} for i in range(40)]
    in_tokens = [(16, 3, {"tokens": 900}), (32, 2, {"tokens": 3000}), (64, 4, {"tokens": 150})]
    for context_len, batch_size, length in [(16, 3, {}), (32, 2, {}), (7, 5, {}), *in_tokens]:
        length = {**length, "epochs": None} if length else {}
        c = curriculum(tmp_path, records, context_len=context_len, batching="packed", **length)
        estimate = c.estimate_stage_steps(batch_size, include_prompts=False)
        batches = drain(c, batch_size, include_prompts=False)  # a stage in tokens runs into a second epoch
        assert all(((b.targets != IGNORE_INDEX).sum(1) > 0).all() for b in batches)
        assert c.skipped_windows > 0 and estimate == len(batches), (context_len, length)


def test_packed_masks_prompts_when_asked(tmp_path):
    records = [{"prompt": f"Q{i}?", "truth": f"A{i}."} for i in range(20)]
    c = curriculum(tmp_path, records, context_len=16, batching="packed")
    batch = c.next_batch(4, False)
    counted = TOK.decode(batch.targets[batch.targets != IGNORE_INDEX].tolist())
    shown = TOK.decode(batch.inputs.flatten().tolist())
    assert "Q" in shown and "Q" not in counted and "A" in counted
