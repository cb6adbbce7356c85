"""Curriculum: stages and overrides, lengths and their estimates, interleaving, validation, and resuming
from a saved position in a fresh process-like Curriculum."""

import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config
from lmplay.data.batch import IGNORE_INDEX
from lmplay.data.curriculum import Curriculum
from lmplay.data.interleave import HeldOutStream
from lmplay.data.tokenizers import get_tokenizer
from lmplay.errors import ConfigError

TOK = get_tokenizer("bytes")
MARK = re.compile(r"([A-Z])(\d{3})s(\d{2})")


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


def marked(prefix: str, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(f"{prefix}{i:03d}s{j:02d} {'xy' * int(rng.integers(1, 8))}." for j in range(int(rng.integers(1, 7))))
            for i in range(n)]


def build(tmp_path, stages, seed=5, context_len=40, **kwargs) -> Curriculum:
    c = Curriculum(stages, cache_dir=str(tmp_path / "cache"), **{"validation_fraction": 0.0, **kwargs})
    c.prepare(TOK, context_len, seed)
    return c


def rows_of(batch) -> list[tuple[str, int]]:
    """(dataset letter, row) of each sample's first counted mark."""
    out = []
    for n in range(len(batch)):
        m = MARK.search(TOK.decode(batch.targets[n][batch.targets[n] != IGNORE_INDEX].tolist()))
        out.append((m.group(1), int(m.group(2))))
    return out


def same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x.inputs, y.inputs) and torch.equal(x.targets, y.targets)
                                    for x, y in zip(a, b))


def take(c: Curriculum, n: int, batch_size: int = 4):
    return [c.next_batch(batch_size, True) for _ in range(n)]


@pytest.fixture
def two_files(tmp_path):
    return write_jsonl(tmp_path / "a.jsonl", marked("A", 30)), write_jsonl(tmp_path / "b.jsonl", marked("B", 12, 1))


def test_stages_switch_at_their_length_and_expose_overrides(tmp_path, two_files):
    a, b = two_files
    c = build(tmp_path, [{"name": "one", "datasets": [{"path": a}], "steps": 3},
                         {"name": "two", "datasets": [{"path": b}], "steps": 2,
                          "overrides": {"lr": 1e-4, "include_prompts": False}}])
    assert [s.name for s in c.stages] == ["one", "two"] and c.stages[0].overrides == {}
    assert c.estimate_stage_steps(4) == 3
    assert all(b is not None for b in take(c, 3)) and c.next_batch(4, True) is None
    assert c.stage_index == 0 and c.advance_stage() and c.stage_index == 1
    assert c.stages[c.stage_index].overrides == {"lr": 1e-4, "include_prompts": False}
    batches = take(c, 2)
    assert {d for b in batches for d, _ in rows_of(b)} == {"B"}
    assert c.next_batch(4, True) is None and not c.advance_stage() and c.stage_index == 1


def test_tokens_length_counts_loss_tokens(tmp_path, two_files):
    c = build(tmp_path, [{"name": "t", "datasets": [{"path": two_files[0]}], "tokens": 1000}])
    estimate = c.estimate_stage_steps(3)
    seen, steps = 0, 0
    while (b := c.next_batch(3, True)) is not None:
        assert seen < 1000  # checked before each batch
        seen, steps = seen + b.num_tokens, steps + 1
    assert seen >= 1000 and steps == estimate


def test_a_weight_that_makes_an_all_exhausted_epoch_endless_is_one_line(tmp_path, two_files):
    """Counting the epoch drew 4,096 rows at a time until the 1e-9 dataset ran out: ~3e10 draws, a silent hang."""
    with pytest.raises(ConfigError, match=r"stage 'mix': interleave=all_exhausted with weights=\[1e-09, 1.0\] would "
                                          r"draw ~30,000,000,030 rows an epoch, until dataset 1 \(30 rows at weight "
                                          r"1e-09\) runs out; raise its weight, or use interleave=first_exhausted"):
        build(tmp_path, [{"name": "mix", "datasets": [{"path": p} for p in two_files], "epochs": 1,
                          "interleave": "all_exhausted", "weights": [1e-9, 1]}], context_len=1000)


@pytest.mark.parametrize("strategy, weights", [("first_exhausted", None), ("all_exhausted", None),
                                               ("first_exhausted", [3, 1]), ("all_exhausted", [1, 2])])
def test_interleaving_and_exact_step_estimates(tmp_path, two_files, strategy, weights, caplog):
    caplog.set_level("INFO", logger="lmplay")
    c = build(tmp_path, [{"name": "mix", "datasets": [{"path": p} for p in two_files], "epochs": 1,
                          "interleave": strategy, "weights": weights}], context_len=1000)
    estimate = c.estimate_stage_steps(4)
    batches = []
    while (b := c.next_batch(4, True)) is not None:
        batches.append(b)
    assert len(batches) == estimate
    drawn = [r for b in batches for r in rows_of(b)]
    counts = Counter(d for d, _ in drawn)
    if weights is None and strategy == "first_exhausted":  # turns, until the smaller dataset ran out
        assert [d for d, _ in drawn] == ["A", "B"] * 12
        assert "an epoch is 24 of their 42 rows (first_exhausted)" in caplog.text  # the stage line says so
    if weights is None and strategy == "all_exhausted":  # turns, the smaller one restarting, until both ran out
        assert [d for d, _ in drawn] == ["A", "B"] * 30
    if strategy == "first_exhausted":
        assert counts["B"] == 12 or counts["A"] == 30
        assert len(set(drawn)) == len(drawn)  # nothing repeated
    else:
        assert {r for d, r in drawn if d == "A"} == set(range(30)) and {r for d, r in drawn if d == "B"} == set(range(12))
        b_rows = [r for d, r in drawn if d == "B"]
        for p in range(0, len(b_rows), 12):  # each pass of B is a permutation: no repeats within a pass
            assert len(set(b_rows[p:p + 12])) == len(b_rows[p:p + 12])


def test_a_packed_stage_too_short_for_a_window_is_said_before_the_stages_before_it_train(tmp_path, two_files):
    """It was said only when the stage began, after the stages before it had trained (hours), and its fix named
    curriculum.batching=rows, which a stage's own `batching: packed` ignores."""
    tiny = write_jsonl(tmp_path / "tiny.jsonl", ["a few words.", "and a few more."])
    stages = [{"name": "first", "datasets": [{"path": two_files[0]}], "steps": 3},
              {"name": "short", "datasets": [{"path": tiny}], "epochs": 1, "batching": "packed"}]
    with pytest.raises(ConfigError, match=r"'short' gives no training batch.*curriculum\.stages\.1\.batching=rows"):
        build(tmp_path, stages, context_len=64)
    build(tmp_path, [stages[0], {**stages[1], "epochs": 3}], context_len=32)  # 3 epochs of 2 rows fill a window
    build(tmp_path, [stages[0], {**stages[1], "epochs": None, "steps": 2}], context_len=64)  # steps read on


def test_a_packed_stage_that_says_packed_itself_in_a_packed_plan_names_its_own_key(tmp_path, two_files):
    """`batching: packed` in the stage and in the plan: the plan's curriculum.batching=rows would change nothing."""
    tiny = write_jsonl(tmp_path / "tiny.jsonl", ["a few words.", "and a few more."])
    stages = [{"name": "short", "datasets": [{"path": tiny}], "epochs": 1, "batching": "packed"}]
    with pytest.raises(ConfigError, match=r"'short' gives no training batch.*curriculum\.stages\.0\.batching=rows"):
        build(tmp_path, stages, context_len=64, batching="packed")


def test_fractional_epochs(tmp_path, two_files):
    c = build(tmp_path, [{"name": "half", "datasets": [{"path": two_files[0]}], "epochs": 0.5}], context_len=1000)
    drawn = [r for b in iter(lambda: c.next_batch(4, True), None) for r in rows_of(b)]
    assert len(drawn) == 15 and len(set(drawn)) == 15


@pytest.mark.parametrize("batching", ["rows", "packed"])
def test_resume_in_a_fresh_curriculum_gives_the_same_batches(tmp_path, two_files, batching):
    stages = [{"name": "mix", "datasets": [{"path": p} for p in two_files], "epochs": 3, "weights": [2, 1]}]
    first = build(tmp_path, stages, batching=batching)
    take(first, 7)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # a checkpoint is loaded with weights_only=True: plain types only
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    expected = take(first, 30)
    resumed = build(tmp_path, stages, batching=batching)
    resumed.load_state_dict(state)
    assert same(take(resumed, 30), expected)


def test_a_checkpoint_of_the_row_format_before_the_last_upgrade_resumes_without_a_data_warning(tmp_path, two_files,
                                                                                             caplog):
    """Format 5 only re-cut record cells holding \\r inside their rows: every resume across the upgrade was told its
    data had changed, and to start over with fresh=true."""
    stages = [{"name": "a", "datasets": [{"path": two_files[0]}], "epochs": 3}]
    first = build(tmp_path, stages, validation_fraction=0.1)
    take(first, 2)
    state = first.state_dict()
    assert first.data_key(same_rows=True) != state["data"]
    state["data"] = first.data_key(same_rows=True)  # as lmplay with format 4 saved it
    resumed = build(tmp_path, stages, validation_fraction=0.1)
    resumed.load_state_dict(state)
    assert "differ from the checkpoint's" not in caplog.text
    assert same(take(resumed, 3), take(first, 3))


def test_a_resume_after_the_data_shrank_goes_on_at_its_next_epoch(tmp_path, two_files, caplog):
    """An epoch position past the smaller data's end was an IndexError inside the stream."""
    stages = [{"name": "a", "datasets": [{"path": two_files[0]}], "epochs": 3}]
    first = build(tmp_path, stages, context_len=1000)
    take(first, 6)  # 24 of the 30 rows of epoch 1
    write_jsonl(Path(two_files[0]), marked("A", 10))
    resumed = build(tmp_path, stages, context_len=1000)
    resumed.load_state_dict(first.state_dict())
    assert "differ from the checkpoint's" in caplog.text  # and that its validation may hold trained rows now
    assert "validation may now measure rows the run trained on (fresh=true starts it over" in caplog.text
    rows = [r for b in iter(lambda: resumed.next_batch(4, True), None) for r in rows_of(b)]
    # the stage's 3 epochs are now 30 rows, of which 24 were trained: 6 more, from a new pass over the 10
    assert len(rows) == len(set(rows)) == 6 and all(d == "A" and i < 10 for d, i in rows)


def test_a_packed_resume_whose_row_got_shorter_goes_on_at_the_next_row(tmp_path, two_files, caplog):
    """The saved offset inside the row the next window starts in was past the new row's end: windows grew past
    context_len + 1 and the model's position embedding raised an IndexError."""
    stages = [{"name": "a", "datasets": [{"path": two_files[0]}], "epochs": 3}]
    first = build(tmp_path, stages, batching="packed", context_len=8)
    take(first, 5)
    state = first.state_dict()
    write_jsonl(Path(two_files[0]), ["ab"] * 30)  # every row now 3 tokens with its eot
    resumed = build(tmp_path, stages, batching="packed", context_len=8)
    resumed.load_state_dict(state)
    assert "differ from the checkpoint's" in caplog.text
    batches = take(resumed, 3)
    assert all(b.inputs.shape == (4, 8) and (b.inputs[:, 1:] == b.targets[:, :-1]).all() for b in batches)


@pytest.mark.parametrize("interleave,weights", [("first_exhausted", None), ("all_exhausted", None),
                                               ("first_exhausted", [1, 3]), ("first_exhausted", [1, 1e-12])])
def test_a_stage_of_several_datasets_validates_on_each_held_out_row_once(tmp_path, two_files, interleave, weights):
    """The held-out set was one epoch of the stage's interleave: first_exhausted stopped at the smallest held-out
    set's end (6 of 30 held-out rows here), all_exhausted repeated the smaller sets."""
    stages = [{"name": "mix", "datasets": [{"path": p} for p in two_files], "epochs": 1, "interleave": interleave,
               "weights": weights}]
    c = build(tmp_path, stages, context_len=1000, validation_fraction=0.5)
    assert c.held_out_rows() == 15 + 6
    validated = [r for b in c.validation_batches(100, 4) for r in rows_of(b)]
    assert len(validated) == len(set(validated)) == 21
    if weights is None:  # turns while both have rows: the same first batches as before
        assert [d for d, _ in validated[:12]] == ["A", "B"] * 6


def test_held_out_draws_of_a_dataset_that_ran_out_spread_over_the_others_by_weight():
    """They all went to the dataset listed after it: two datasets weighted alike were validated ~86/14."""
    class Table:
        def __init__(self, d: int) -> None:
            self.d = d

        def row(self, i: int) -> tuple[int, int]:
            return self.d, i

    class Source:
        def __init__(self, d: int, n: int) -> None:
            self.table, self.index = Table(d), np.arange(n)

        def __len__(self) -> int:
            return len(self.index)

    for weights in (None, [0.8, 0.1, 0.1]):
        stream = HeldOutStream([Source(0, 2), Source(1, 1000), Source(2, 1000)], weights, 0, 0)
        drawn = Counter(stream.next_row()[0] for _ in range(600))
        assert drawn[0] == 2 and abs(drawn[1] - drawn[2]) < 80, (weights, drawn)


def test_different_seeds_shuffle_differently(tmp_path, two_files):
    stages = [{"name": "a", "datasets": [{"path": two_files[0]}], "epochs": 1}]
    one, two = build(tmp_path, stages, seed=1), build(tmp_path, stages, seed=2)
    assert not same(take(one, 3), take(two, 3))
    assert same(take(build(tmp_path, stages, seed=1), 3), take(build(tmp_path, stages, seed=1), 3))


def test_validation_is_held_out_fixed_and_the_same_for_every_seed(tmp_path, two_files):
    stages = [{"name": "a", "datasets": [{"path": two_files[0]}], "epochs": 1}]
    c = build(tmp_path, stages, seed=1, validation_fraction=0.2)
    val = c.validation_batches(3, 2)
    assert len(val) == 3 and same(val, c.validation_batches(3, 2))
    held = {r for b in c.validation_batches(100, 2) for r in rows_of(b)}
    assert len(held) == 6  # 20% of 30 rows
    trained = {r for b in iter(lambda: c.next_batch(4, True), None) for r in rows_of(b)}
    assert len(trained) == 24 and not held & trained
    other_seed = build(tmp_path, stages, seed=2, validation_fraction=0.2)
    assert same(other_seed.validation_batches(3, 2), val)


def test_two_stage_plan_resumes_mid_second_stage(tmp_path):
    """The shipped two_stage plan, composed as the CLI does: embedded corpus, then a local file."""
    text = tmp_path / "notes.txt"
    text.write_text("\n\n".join(f"Paragraph {i}. It has two sentences, this is the second." for i in range(2000)))
    overrides = ["curriculum=two_stage", f"curriculum.path={text}", f"curriculum.cache_dir={tmp_path / 'cache'}",
                 "curriculum.stages.0.epochs=0.02"]

    def fresh() -> Curriculum:
        c = instantiate(compose_config(overrides).curriculum, _convert_="all")
        c.prepare("bytes", 64, 3)
        return c

    c = fresh()
    assert [s.name for s in c.stages] == ["shakespeare", "text_file"]
    assert c.stages[1].overrides == {"lr": 1e-4}
    first_stage = list(iter(lambda: c.next_batch(8, True), None))
    assert len(first_stage) == c.estimate_stage_steps(8) > 0
    assert c.advance_stage()
    assert "Paragraph" in TOK.decode(c.next_batch(8, True).inputs[0].tolist())
    take(c, 2, 8)
    state = c.state_dict()
    expected = take(c, 5, 8)
    assert all(b is not None for b in expected)
    resumed = fresh()
    resumed.load_state_dict(state)
    assert resumed.stage_index == 1 and same(take(resumed, 5, 8), expected)


def test_shipped_plans_parse(tmp_path):
    """Every conf/curriculum plan composes and builds (hub plans are not loaded: no network here)."""
    for name in ["shakespeare", "text_file", "two_stage", "wiki_en_es", "default_hub", "pretrain", "bigpretrain",
                 "instruction_ft", "full"]:
        cfg = compose_config([f"curriculum={name}", "curriculum.path=/data/x.txt"]).curriculum
        c = instantiate(cfg, _convert_="all")
        assert c.stages and all(s.datasets for s in c.stages)
    full = instantiate(compose_config(["curriculum=full"]).curriculum, _convert_="all")
    assert [s.name for s in full.stages] == ["wiki_en_es", "pretrain", "instruction_ft"]
    assert full.stages[2].overrides == {"include_prompts": False}
    assert [d.label for d in full.stages[2].datasets] == ["openorca", "orcamathword200", "smoltalk_all"]


def test_text_file_without_a_path_says_how_to_give_one():
    with pytest.raises(Exception) as e:  # Hydra wraps what the target raises in an InstantiationException
        instantiate(compose_config(["curriculum=text_file"]).curriculum, _convert_="all")
    error = e.value.__cause__
    assert isinstance(error, ConfigError) and "\n" not in str(error)
    assert "stage 'text_file'" in str(error) and "curriculum.path=FILE" in str(error)


@pytest.mark.parametrize("stage, message", [
    ({"name": "x", "datasets": ["shakespeare"]}, r"give exactly one of steps, tokens or epochs \(got none\)"),
    ({"name": "x", "datasets": ["shakespeare"], "steps": 5, "epochs": 1}, (r"\(got steps and epochs\), e.g. epochs: 1; "
     r"on the command line, ~curriculum.stages.0.steps or ~curriculum.stages.0.epochs drops one$")),
    ({"name": "x", "datasets": ["shakespeare"], "steps": 0}, r"steps=0 must be a positive integer"),
    ({"name": "x", "datasets": ["shakespeare"], "epochs": 0}, r"epochs=0 must be a positive number"),
    ({"name": "x", "datasets": ["shakespear"], "epochs": 1}, r"dataset 'shakespear' is unknown; use one of: shakespeare"),
    ({"name": "x", "datasets": [], "epochs": 1}, r"datasets must list at least one dataset"),
    ({"name": "x", "datasets": ["shakespeare"], "epochs": 1, "interleave": "random"}, r"interleave='random' is unknown"),
    ({"name": "x", "datasets": ["shakespeare"], "epoch": 1}, r"unknown key\(s\) epoch"),
    ({"name": "x", "datasets": [{"path": "a.txt", "colums": "t"}], "epochs": 1}, r"unknown dataset key\(s\) colums"),
    ({"name": "x", "datasets": ["shakespeare"], "epochs": 1, "batching": "bucketed"}, r"batching='bucketed' is unknown"),
    *[({"name": "x", "datasets": ["shakespeare"], "epochs": 1, "weights": w}, r"must be a list of 1 positive finite")
      for w in (3, ["a"], [float("inf")], [0], [1, 1])],
])
def test_plan_mistakes_are_one_line_config_errors(stage, message):
    with pytest.raises(ConfigError, match=message) as e:
        Curriculum([stage])
    assert "\n" not in str(e.value) and "'x'" in str(e.value)


@pytest.mark.parametrize("name, plain", [("x/y", "x_y"), ("../../escape", "escape"), ("a\\b", "a_b"), (".hidden", "hidden"),
                                         ("corrupted", "corrupted_stage")])
def test_a_stage_name_that_is_no_plain_file_name_is_refused_before_training(name, plain):
    """It names the stage's checkpoint, model.<name>.lmp: `x/y` trained the whole stage, then could not save it."""
    with pytest.raises(ConfigError, match=rf"name={re.escape(repr(name))} names the stage's checkpoint file .* "
                                          rf"e\.g\. name: {plain}$") as e:
        Curriculum([{"name": name, "datasets": ["shakespeare"], "steps": 1}])
    assert "\n" not in str(e.value)
    Curriculum([{"name": "x y", "datasets": ["shakespeare"], "steps": 1}])  # a run that has one still resumes


def test_unknown_batching_mode_is_a_config_error():
    with pytest.raises(ConfigError, match=r"batching='windows' is unknown; use one of: rows, packed"):
        Curriculum([{"name": "x", "datasets": ["shakespeare"], "epochs": 1}], batching="windows")


@pytest.mark.parametrize("key, value, message", [
    ("tokenize_procs", "abc", r"curriculum.tokenize_procs='abc' should be an integer >= 1"),  # a TypeError, cache empty
    ("tokenize_procs", 0, r"curriculum.tokenize_procs=0 should be an integer >= 1"),
    ("shuffle_buffer", 1.5, r"curriculum.shuffle_buffer=1.5 should be an integer >= 1"),
    ("stream_validation_rows", -1, r"curriculum.stream_validation_rows=-1 should be an integer >= 0"),
])
def test_a_bad_count_in_the_curriculum_settings_is_one_line(key, value, message):
    with pytest.raises(ConfigError, match=message):
        Curriculum([{"name": "x", "datasets": ["shakespeare"], "epochs": 1}], **{key: value})


def test_position_of_another_plan_is_refused(tmp_path, two_files):
    c = build(tmp_path, [{"name": "a", "datasets": [{"path": two_files[0]}], "epochs": 1}])
    state = c.state_dict()
    other = build(tmp_path, [{"name": "b", "datasets": [{"path": two_files[0]}], "epochs": 1}])
    with pytest.raises(ConfigError, match=r"stage 'a'.*stages: b"):
        other.load_state_dict(state)


def test_a_stage_name_too_long_for_its_checkpoint_file_is_refused_before_it_trains():
    """model.<245 characters>.lmp could not be written once the stage had trained: every rerun trained it again."""
    from lmplay.data.curriculum import parse_stage

    with pytest.raises(ConfigError, match=r"is 245 bytes long \(UTF-8\); its checkpoint file, model.<name>.lmp, must "
                                          r"fit the filesystem's 255 bytes: give it a name of at most 237 bytes"):
        parse_stage({"name": "s" * 245, "datasets": ["shakespeare"], "epochs": 1}, 0, "rows")
    with pytest.raises(ConfigError, match=r"is 240 bytes long \(UTF-8\)"):  # 80 characters
        parse_stage({"name": "語" * 80, "datasets": ["shakespeare"], "epochs": 1}, 0, "rows")
    assert parse_stage({"name": "語" * 79, "datasets": ["shakespeare"], "epochs": 1}, 0, "rows").name == "語" * 79


def test_a_stage_name_with_control_characters_is_refused():
    """A plan's stage name (a resumed checkpoint's, from wherever it came) is printed on every progress line: an
    escape sequence in it cleared or retitled the terminal."""
    with pytest.raises(ConfigError, match=r"name='sh\\\\x1b\[2Jx' holds control characters"):
        Curriculum([{"name": "sh\x1b[2Jx", "datasets": ["shakespeare"], "epochs": 1}])
