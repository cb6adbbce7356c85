"""lmplay.plot: runs compared at equal tokens, seeds averaged, the baseline first; clear errors for non-run dirs."""

import json
import warnings
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from matplotlib.figure import Figure

from conftest import REPO, python_path, run_cli
import lmplay.stats.plot
from lmplay.errors import ConfigError
from lmplay.stats.plot import comparison_table, curve, group_runs, pick_baseline, plot_all, smoothing_unit
from lmplay.stats.runs import load_runs


def fake_run(path: Path, exp: str, seed: int, final_loss: float, tokens_per_step: int = 100, steps: int = 40,
             extra: tuple[str, ...] = (), held_out_tokens: int = 1000, tokenizer: str = "bytes",
             job: int | None = None) -> Path:
    """A run dir as training leaves it: stats.json and .hydra/ (overrides, the chosen exp; `job`: its number in a
    sweep)."""
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def record(step: int, noise: float) -> dict:
        loss = final_loss + 3.0 * np.exp(-step / 10) + noise * rng.standard_normal()
        return {"stage": "s", "step": step, "samples": 8 * step, "tokens": tokens_per_step * step + seed,
                "loss": float(loss), "accuracy": float(0.5 - loss / 20), "lr": 1e-3}

    stats = {"train": [record(s, 0.1) for s in range(1, steps + 1)],
             "validation": [{**record(s, 0.01), "held_out_tokens": held_out_tokens} for s in range(5, steps + 1, 5)]}
    (path / "stats.json").write_text(json.dumps(stats))
    (path / ".hydra").mkdir()
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"exp={exp}", f"seed={seed}", *extra]))
    hydra = {"runtime": {"choices": {"exp": exp}}}
    hydra |= {"mode": "MULTIRUN", "job": {"num": job}} if job is not None else {"mode": "RUN"}
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": tokenizer}))
    return path


def drawn_axes(monkeypatch) -> dict[str, Any]:
    """Each PNG's axes by file name, as plot_all draws them (no file written)."""
    figures, drawn = [], {}
    monkeypatch.setattr(Figure, "savefig", lambda fig, png, **kw: figures.append(fig))
    monkeypatch.setattr(lmplay.stats.plot, "write_atomic", lambda path, data: drawn.__setitem__(
        Path(path).name, figures[-1].axes[0]))
    return drawn


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep dir: baseline and idea, 3 seeds each, the idea 0.1 lower in loss. Job dirs are named by their
    overrides, and the idea's name sorts before the baseline's: only the job numbers say which came first."""
    job = 0
    for exp, loss in (("gpt2ish_mini", 2.0), ("attn_temp_mini", 1.9)):
        for seed in (1, 2, 3):
            fake_run(tmp_path / "sweep" / f"exp={exp},max_steps=40,seed={seed}", exp, seed, loss,
                     extra=("max_steps=40",), job=job)
            job += 1
    return tmp_path / "sweep"


def test_a_job_trained_on_by_a_single_run_keeps_its_place_in_the_sweep(sweep):
    """README: "to train one job on, name its dir". That run rewrites .hydra/hydra.yaml as a single run's, and the
    baseline's job went last: the idea was labelled the baseline, and the baseline compared against it."""
    for seed in (1, 2, 3):
        job_dir = sweep / f"exp=gpt2ish_mini,max_steps=40,seed={seed}"
        (job_dir / "job.json").write_text(json.dumps({"job": seed - 1, "experiment": "gpt2ish_mini",
                                                      "overrides": [], "status": "completed"}))
        hydra = {"hydra": {"runtime": {"choices": {"exp": "gpt2ish_mini"}}, "mode": "RUN", "job": {"num": "???"}}}
        (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    groups = group_runs(load_runs([sweep]))
    assert [g.label for g in groups] == ["gpt2ish_mini", "attn_temp_mini"]
    assert "gpt2ish_mini (baseline)" in comparison_table(groups)


def test_a_sweeps_seeds_stay_together_and_join_another_sweeps_only_where_none_repeats(tmp_path):
    """Sweep A ran seed 0, sweep B (after a code change) seeds 0 and 1: A's seed 0 was averaged with B's seed 1
    under A's label, and B's seed 0 stood alone."""
    def sweep(name: str, seeds: tuple[int, ...], loss: float) -> None:
        for seed in seeds:
            fake_run(tmp_path / name / f"seed={seed}", "gpt2ish_mini", seed, loss, job=seed)

    sweep("A", (0,), 2.0)
    sweep("B", (0, 1), 1.5)
    assert [[r.path.parent.name for r in g.runs] for g in group_runs(load_runs([tmp_path / "A", tmp_path / "B"]))] \
        == [["A"], ["B", "B"]]
    sweep("C", (2, 3), 1.5)  # more seeds of B's configuration, none of them B's: one group of four
    groups = group_runs(load_runs([tmp_path / "B", tmp_path / "C"]))
    assert [sorted(r.seed for r in g.runs) for g in groups] == [["0", "1", "2", "3"]]


def test_seeds_are_grouped_and_labelled_by_what_differs(sweep):
    groups = group_runs(load_runs([sweep]))
    assert [(g.label, len(g.runs)) for g in groups] == [("gpt2ish_mini", 3), ("attn_temp_mini", 3)]
    c = curve(groups[1], "validation", "loss")
    assert c.num_seeds == 3 and len(c.tokens) == 8  # 8 validation points every seed reached
    assert np.all(c.values.min(0) <= c.mean) and np.all(c.mean <= c.values.max(0))
    assert abs(c.mean[-1] - (1.9 + 3.0 * np.exp(-4))) < 0.03


def test_seeds_of_one_setting_typed_in_different_ways_are_one_configuration(tmp_path):
    """lr=0.001, lr=1e-3 and optimizer.lr=0.001 made three rows of one seed each, never averaged."""
    for seed, typed in ((1, "lr=0.001"), (2, "lr=1e-3"), (3, "optimizer.lr=0.001")):
        run = fake_run(tmp_path / f"run{seed}", "base", seed, 2.0, extra=(typed,))
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": "bytes", "optimizer": {"lr": 0.001}}))
    groups = group_runs(load_runs(sorted(tmp_path.iterdir())))
    assert [len(g.runs) for g in groups] == [3]
    (tmp_path / "run3" / ".hydra" / "config.yaml").unlink()  # a run without its settled config: the typed value
    assert [len(g.runs) for g in group_runs(load_runs(sorted(tmp_path.iterdir())))] == [3]


def test_a_value_typed_at_its_default_or_a_key_of_how_it_ran_does_not_split_a_configuration(tmp_path):
    """lr=3e-3 typed where 0.003 is the default, and runner.mini_batch_size=2 (the same batch, accumulated), made
    three rows of one seed each, their seed noise shown as the settings' effect."""
    settled = {"tokenizer": "bytes", "optimizer": {"lr": 0.003}, "runner": {"mini_batch_size": 8, "batch_size": 8}}
    for seed, typed in ((1, ()), (2, ("lr=3e-3",)), (3, ("runner.mini_batch_size=2",)), (4, ("lr=1e-3",))):
        run = fake_run(tmp_path / f"run{seed}", "base", seed, 2.0, extra=typed)
        own = {**settled, "optimizer": {"lr": 0.001}} if seed == 4 else settled
        own = {**own, "runner": {**own["runner"], "mini_batch_size": 2}} if seed == 3 else own
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(own))
    groups = group_runs(load_runs(sorted(tmp_path.iterdir())))
    assert [sorted(r.path.name for r in g.runs) for g in groups] == [["run1", "run2", "run3"], ["run4"]]
    for seed, choice in ((5, "optimizer=adamw"), (6, "optimizer=sgd")):  # a group's default file, typed; another
        run = fake_run(tmp_path / f"run{seed}", "base", seed, 2.0, extra=(choice,))
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(settled))
    for run in tmp_path.iterdir():
        hydra = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())
        chosen = "sgd" if run.name == "run6" else "adamw"
        hydra["hydra"]["runtime"]["choices"] |= {"optimizer": chosen, "curriculum": "shakespeare"}
        (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    groups = group_runs(load_runs(sorted(tmp_path.iterdir())))
    assert [sorted(r.path.name for r in g.runs) for g in groups] == [["run1", "run2", "run3", "run5"], ["run4"],
                                                                     ["run6"]]


def test_a_seed_resumed_with_another_lr_is_named_in_a_note(tmp_path):
    """Its .hydra/ then said lr=0.001 alone: averaged with seeds that trained at 0.003 throughout, without a note."""
    args = ["exp=test_runner", "device=cpu", "runner.validation_interval=16"]
    run_cli("lmplay.train", *args, "seed=1", "max_steps=6", "lr=1e-3", f"hydra.run.dir={tmp_path / 's1'}", check=True)
    run_cli("lmplay.train", *args, "seed=2", "max_steps=2", f"hydra.run.dir={tmp_path / 's2'}", check=True)
    run_cli("lmplay.train", *args, "seed=2", "max_steps=4", "lr=3e-3", f"hydra.run.dir={tmp_path / 's2'}",
            check=True)  # the same lr typed: no change
    assert not (tmp_path / "s2" / ".hydra" / "resumed_changes.yaml").exists()
    run_cli("lmplay.train", *args, "seed=2", "max_steps=6", "lr=1e-3", f"hydra.run.dir={tmp_path / 's2'}",
            check=True)
    table = comparison_table(group_runs(load_runs([tmp_path / "s1", tmp_path / "s2"])))
    assert ("Note: s2, a run of test_runner, was resumed with other settings (at step 4: optimizer.lr 0.003/0.001): "
            "its curve mixes them, and it is labelled by the last.") in table and "2  " in table.splitlines()[2]
    (tmp_path / "s2" / ".hydra" / "config.yaml").write_text("a: [\n")  # a label damaged by hand: nothing to compare,
    run_cli("lmplay.train", *args, "seed=2", "max_steps=8", "lr=2e-3", f"hydra.run.dir={tmp_path / 's2'}",
            check=True)  # and the run trains on (its first save's label read it, and failed the run)


def test_a_seed_left_at_its_default_and_the_same_seed_typed_are_one_run_not_two_seeds(tmp_path):
    typed = fake_run(tmp_path / "typed", "base", 1337, 2.0)
    default = fake_run(tmp_path / "default", "base", 1337, 2.0)
    (default / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["exp=base"]))
    for run in (typed, default):
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": "bytes", "seed": 1337}))
    assert [len(g.runs) for g in group_runs(load_runs([typed, default]))] == [1, 1]  # a comparison, not 2 seeds


def test_each_seed_is_read_on_its_own_tokens(tmp_path):
    """Seeds validate at the same samples, but with rows batching at different token counts: seeds whose loss
    is the same function of tokens must show no spread, and the last column is one every seed reached."""
    for seed, tokens_per_step in ((1, 100), (2, 120)):
        run = fake_run(tmp_path / f"{seed}_seed={seed}", "test_runner", seed, 2.0, tokens_per_step)
        stats = json.loads((run / "stats.json").read_text())
        for r in stats["validation"]:
            r["loss"] = 5.0 - r["tokens"] / 1000  # linear: interpolation is exact
        (run / "stats.json").write_text(json.dumps(stats))
    [group] = group_runs(load_runs([tmp_path]))
    c = curve(group, "validation", "loss")
    assert c.span == (602.0, 4001.0)  # from the latest first point to the earliest last one
    assert np.allclose(c.values[0], c.values[1]) and c.tokens[-1] == 4001.0
    table = comparison_table([group]).splitlines()
    assert "±0.0000" in table[2] and "loss@4k" in table[0]


def test_comparison_table_is_at_equal_tokens_with_the_baseline_first(sweep):
    table = comparison_table(group_runs(load_runs([sweep])))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["run", "seeds", "loss@503"] and "vs baseline@4k" in lines[0]
    assert lines[2].startswith("gpt2ish_mini (baseline)") and lines[3].startswith("attn_temp_mini")
    delta = float(lines[3].split()[-3])
    assert -0.12 < delta < -0.08  # the idea's 0.1 lower loss, measured at equal tokens
    assert "±" in lines[2]  # the spread over seeds is shown


def test_the_difference_from_the_baseline_has_the_spread_of_one_seeds_difference(sweep, tmp_path):
    """'vs baseline' had no ±, and the plot's band was the idea's own seed spread: a 0.1 gain that every seed
    of the same data order shows looked as uncertain as the seeds' spread. fake_run gives a seed the same noise in
    either experiment, so paired by seed the difference is exact; with the idea on other seeds the two spreads add."""
    def vs_cell(groups: list) -> tuple[float, float]:
        cell = re.search(r"([-+]\d\.\d{4}) ±(\d\.\d{4})", comparison_table(groups).splitlines()[3])
        return float(cell[1]), float(cell[2])

    groups = group_runs(load_runs([sweep]))
    diff, spread = vs_cell(groups)
    assert -0.12 < diff < -0.08 and spread < 1e-4
    idea, base = (curve(g, "validation", "loss") for g in reversed(groups))
    assert idea.pairs_with(base) and np.allclose(idea.minus(base, idea.tokens), -0.1, atol=1e-3)
    for seed in (4, 5, 6):  # the idea on seeds the baseline did not run: nothing to pair
        fake_run(tmp_path / "other" / f"seed={seed}", "attn_temp_mini", seed, 1.9, extra=("max_steps=40",), job=seed)
    groups = group_runs(load_runs([sweep / f"exp=gpt2ish_mini,max_steps=40,seed={s}" for s in (1, 2, 3)]
                                  + [tmp_path / "other"]))
    diff, spread = vs_cell(groups)
    end = curve(groups[0], "validation", "loss").span[1]
    idea, base = (curve(g, "validation", "loss") for g in reversed(groups))
    expected = np.hypot(idea.measured(end).std(ddof=1), base.measured(end).std(ddof=1))
    assert not idea.pairs_with(base) and -0.13 < diff < -0.07 and spread == pytest.approx(expected, abs=1e-4)
    assert spread > 0.005
    for seed in (4, 5):
        fake_run(tmp_path / "more" / f"seed={seed}", "gpt2ish_mini", seed, 2.0, extra=("max_steps=40",), job=seed)
    for base_seeds, idea_seeds, pairs in (((1, 2, 3), (1, 2), 2), ((1, 2, 3), (1,), 1), ((1, 2), (1, 2, 3), 2),
                                          ((1, 2, 3, 4), (1, 2, 5), 2)):  # compared unpaired, against the mean of
        runs = [sweep / f"exp=gpt2ish_mini,max_steps=40,seed={s}" if s < 4 else tmp_path / "more" / f"seed={s}"
                for s in base_seeds]  # seeds the other side never ran (a reviewer's read -1.01 and +0.49 for -0.01)
        runs += [sweep / f"exp=attn_temp_mini,max_steps=40,seed={s}" for s in idea_seeds if s < 4]
        runs += [tmp_path / "other" / f"seed={s}" for s in idea_seeds if s > 3]  # attn_temp_mini on seed 5: none
        table = comparison_table(group_runs(load_runs(runs)))
        cell = re.search(r"([-+]\d\.\d{4})( ±\d\.\d{4})?(?: \((\d) pairs?\))?", table.splitlines()[3])
        marked = pairs if pairs < len(idea_seeds) else None  # "(2 pairs)" where the row ran more
        assert -0.101 < float(cell[1]) < -0.099 and (cell[3] and int(cell[3])) == marked, table


def test_the_difference_plot_names_the_pairs_it_draws(sweep, tmp_path, monkeypatch):
    """An idea on seeds 1-3 against a baseline on 3-5 drew seed 3's difference alone, labelled "mean of 3 seeds"."""
    from matplotlib.axes import Axes

    for seed in (4, 5):
        fake_run(tmp_path / "more" / f"seed={seed}", "gpt2ish_mini", seed, 2.0, extra=("max_steps=40",), job=seed)
    groups = group_runs(load_runs([sweep / "exp=gpt2ish_mini,max_steps=40,seed=3", tmp_path / "more",
                                   *[sweep / f"exp=attn_temp_mini,max_steps=40,seed={s}" for s in (1, 2, 3)]]))
    labels = []
    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, *a, **k: labels.append(k.get("label")) or plot(ax, *a, **k))
    plot_all(groups, tmp_path / "plots", ["validation"], {"validation": 0.0}, False)
    assert "attn_temp_mini, 1 pair" in labels and "attn_temp_mini, mean of 3 seeds" in labels  # vs baseline; own


def test_baseline_can_be_named(sweep):
    groups = pick_baseline(group_runs(load_runs([sweep])), "attn_temp")
    assert groups[0].label == "attn_temp_mini"
    with pytest.raises(ConfigError, match="matches none"):
        pick_baseline(groups, "nope")
    with pytest.raises(ConfigError, match=r"--baseline 'mini' matches runs of more than one experiment: "
                                          r"attn_temp_mini, gpt2ish_mini; give one of these labels$"):
        pick_baseline(groups, "mini")  # was the first of them, unsaid
    assert pick_baseline(groups, "gpt2ish_mini")[0].label == "gpt2ish_mini"


def test_a_sweep_dir_named_after_the_idea_does_not_make_every_run_the_baseline(tmp_path):
    """The pattern was matched against each run's whole path: a sweep dir named after the idea matched them all."""
    for job, (exp, loss) in enumerate((("test_runner", 2.0), ("value_norm_test", 1.9))):
        fake_run(tmp_path / "value_norm_study" / f"exp={exp},max_steps=20", exp, 1, loss, extra=("max_steps=20",),
                 job=job)
    groups = pick_baseline(group_runs(load_runs([tmp_path / "value_norm_study"])), "value_norm")
    assert [g.label for g in groups] == ["value_norm_test", "test_runner"]
    named = str(tmp_path / "value_norm_study" / "exp=test_runner,max_steps=20")  # a run dir, as given to plot
    assert pick_baseline(groups, named)[0].label == "test_runner"


def test_runs_that_differ_only_in_run_name_are_a_comparison_unless_their_seeds_differ(tmp_path):
    fake_run(tmp_path / "g1", "a", 1, 2.0, extra=("run_name=g1",))
    fake_run(tmp_path / "g2", "a", 1, 2.1, extra=("run_name=g2",))  # the same seed: e.g. an edited model.py
    fake_run(tmp_path / "g3", "a", 2, 2.0, extra=("run_name=g3",))
    groups = group_runs(load_runs([tmp_path / "g1", tmp_path / "g2", tmp_path / "g3"]))
    assert [(g.label, [r.path.name for r in g.runs]) for g in groups] == [(f"a ({tmp_path.name}/g1)", ["g1", "g3"]),
                                                                           (f"a ({tmp_path.name}/g2)", ["g2"])]


def test_the_same_command_in_two_sweeps_is_a_comparison_not_more_seeds(tmp_path):
    for sweep in ("before", "after"):
        for seed in (1, 2):
            fake_run(tmp_path / sweep / f"{seed - 1}_exp=a,seed={seed}", "a", seed, 2.0)
    groups = group_runs(load_runs([tmp_path / "before", tmp_path / "after"]))
    root = tmp_path.name  # a line of two seeds is labelled by its sweep, not by one seed's job dir
    assert [(g.label, len(g.runs)) for g in groups] == [(f"a ({root}/before)", 2), (f"a ({root}/after)", 2)]


def test_runs_of_different_lengths_compare_over_the_tokens_both_reached(tmp_path):
    short = fake_run(tmp_path / "short", "a", 1, 2.0, steps=20)
    long = fake_run(tmp_path / "long", "b", 1, 2.0, steps=40, tokens_per_step=50)
    header = comparison_table(group_runs(load_runs([short, long]))).splitlines()[0]
    assert "loss@2k" in header  # min(20 * 100, 40 * 50) tokens: both reached it, neither is extrapolated


def test_identical_runs_stopped_at_different_steps_compare_equal_at_a_point_both_validated_at(tmp_path):
    """The shorter run's last validation (step 12, at its max_steps) fell between the longer run's (steps 10 and
    20): the longer run's value there was a straight line across a bending curve, 0.04 off an identical run."""
    for name, steps in (("a", 30), ("b", 12)):
        run = fake_run(tmp_path / name, name, 1, 2.0, steps=steps)
        stats = json.loads((run / "stats.json").read_text())
        stats["validation"] = [{**r, "loss": 2.0 + 3.0 * np.exp(-r["step"] / 4)} for r in stats["validation"]
                               if r["step"] % 10 == 0] + [{**stats["train"][-1], "loss": 2.0 + 3.0 * np.exp(-steps / 4)}]
        (run / "stats.json").write_text(json.dumps({**stats, "validation": sorted(
            {r["step"]: r for r in stats["validation"]}.values(), key=lambda r: r["step"])}))
    lines = comparison_table(group_runs(load_runs([tmp_path / "a", tmp_path / "b"]))).splitlines()
    assert "vs baseline@1k" in lines[0]  # step 10, where both validated, not step 12
    assert lines[3].split()[-2] == "+0.0000"
    stats = json.loads((tmp_path / "b" / "stats.json").read_text())
    for r in stats["validation"]:
        r["tokens"] = r["tokens"] * 1.37 if r["tokens"] else 0  # packed against rows: no shared point past 0
    (tmp_path / "b" / "stats.json").write_text(json.dumps(stats))
    header = comparison_table(group_runs(load_runs([tmp_path / "a", tmp_path / "b"]))).splitlines()[0]
    assert "vs baseline@1.65k" in header  # the end of the shared span, as before: not a table at 0 tokens
    assert "read off a straight line" in table_note(tmp_path / "a", tmp_path / "b")
    assert "~ marks a value read off a straight line" in table_note(tmp_path / "a", tmp_path / "b")
    table = comparison_table(group_runs(load_runs([tmp_path / "a", tmp_path / "b"]))).split("\n\n")[0]
    assert any(cell.startswith("~") for cell in table.split())  # the cells that are not measured say so
    assert "-" not in table.splitlines()[2].split()[3:7]  # a regular cadence is read between its points


def table_note(*runs: Path) -> str:
    return comparison_table(group_runs(load_runs(list(runs)))).split("\n\n")[1]


def test_a_row_whose_runs_stopped_early_is_named_as_what_ends_the_columns(tmp_path):
    """Two seeds of an idea that crashed at ~31k tokens cut the baseline's 114k columns there, with no word why."""
    runs = [fake_run(tmp_path / f"b{seed}", "base", seed, 2.0, steps=100) for seed in (1, 2)]
    runs += [fake_run(tmp_path / f"i{seed}", "idea", seed, 2.0, steps=30) for seed in (1, 2)]
    note = table_note(*runs)
    assert ("Note: the columns stop where the shortest runs' validations do (idea at 3k; the longest reach 10k "
            "tokens): a run that trains fewer tokens by its settings, or that failed, was stopped or is still "
            "training, compares only as far as it got") in note
    assert "columns stop" not in table_note(*runs[:2], *[fake_run(tmp_path / f"j{s}", "idea", s, 2.0, steps=90)
                                                         for s in (1, 2)])


def test_runs_that_validated_only_at_start_and_end_show_those_two_columns(tmp_path):
    """Columns between the two would be a straight line from the untrained loss to the last, not a loss."""
    for name in ("a", "b"):
        run = fake_run(tmp_path / name, name, 1, 2.0, steps=30)
        stats = json.loads((run / "stats.json").read_text())
        stats["validation"] = [{**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.5},
                               stats["validation"][-1]]
        (run / "stats.json").write_text(json.dumps(stats))
    header = comparison_table(group_runs(load_runs([tmp_path / "a", tmp_path / "b"]))).splitlines()[0]
    assert header.split()[2:4] == ["loss@0", "loss@3k"] and "loss@1" not in header
    assert "where every run validated" in table_note(tmp_path / "a", tmp_path / "b")
    assert "~" not in comparison_table(group_runs(load_runs([tmp_path / "a", tmp_path / "b"])))  # all measured


def test_a_reader_that_stops_early_gets_no_traceback(sweep, tmp_path):
    proc = subprocess.run(f"{sys.executable} -m lmplay.plot {sweep} --out {tmp_path} | true", shell=True,
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": python_path()})
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_cli_writes_plots_and_table(sweep, tmp_path):
    out = tmp_path / "plots"
    proc = run_cli("lmplay.plot", str(sweep / "exp=gpt2ish_mini,max_steps=40,seed=1"), str(sweep), "--train",
                   "--logx", "--out", str(out), check=True)
    names = {p.name for p in out.iterdir()}
    assert {"validation_loss.png", "validation_accuracy.png", "validation_loss_vs_baseline.png",
            "validation_accuracy_vs_baseline.png", "train_loss.png", "train_loss_vs_baseline.png",
            "comparison.txt"} <= names
    assert all((out / n).stat().st_size > 10_000 for n in names if n.endswith(".png"))
    assert "gpt2ish_mini (baseline)" in (out / "comparison.txt").read_text()
    assert "wrote" in proc.stdout


def test_a_seed_far_behind_the_others_is_left_out_of_its_groups_curve(tmp_path):
    """A seed still training (one validation of eight) cut its finished twin's curve back to that one point."""
    for seed, steps in ((1, 40), (2, 5)):
        fake_run(tmp_path / "sweep" / f"seed={seed}", "a", seed, 2.0, steps=steps, job=seed - 1)
    [group] = group_runs(load_runs([tmp_path / "sweep"]))
    c = curve(group, "validation", "loss")
    assert c.num_seeds == 1 and len(c.tokens) == 8
    table = comparison_table([group])
    assert "loss@4k" in table.splitlines()[0]
    assert table.strip().endswith("Note: left out of their rows' means, with under half the validations of their "
                                  "furthest seed (still training, or stopped early): a seed 2.")  # was silent


def test_a_run_validated_only_at_0_and_past_the_others_end_shows_no_value_made_up_between(tmp_path):
    """Two identical runs, one validated every 5 steps to step 30, one only at 0 and at step 45: no count past 0
    is shared, and a line from 0 to step 45 put the second run's loss 0.7 off the first's."""
    dense = fake_run(tmp_path / "dense", "idea", 1, 2.0, steps=45)
    sparse = fake_run(tmp_path / "sparse", "idea", 1, 2.0, steps=45)
    base = fake_run(tmp_path / "base", "base", 1, 2.0, steps=30)
    stats = json.loads((sparse / "stats.json").read_text())
    stats["validation"] = [{**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.0},
                           stats["validation"][-1]]
    (sparse / "stats.json").write_text(json.dumps(stats))
    for run in (dense, base):
        stats = json.loads((run / "stats.json").read_text())
        stats["validation"].insert(0, {**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.0})
        (run / "stats.json").write_text(json.dumps(stats))
    table, note = comparison_table(group_runs(load_runs([base, dense, sparse]))).split("\n\n")[:2]
    _, dense_row, sparse_row = (line.split()[3:] for line in table.splitlines()[2:])
    assert sparse_row == ["5.0000", "-", "-", "-", "-", "-"]  # its own loss@0; nothing made up past it
    assert "-" not in dense_row and not any(cell.startswith("~") for cell in dense_row)  # the others' own points
    assert "where the runs of 2 of the 3 rows validated" in note and "- marks a run whose validation points" in note
    plots = plot_all(group_runs(load_runs([base, dense, sparse])), tmp_path / "plots", ["validation"],
                     {"validation": 0.0}, logx=True)
    assert any(p.name == "validation_loss_vs_baseline.png" for p in plots)


def test_one_sparse_run_leaves_the_others_their_midpoints_and_a_sparse_baseline_draws_no_made_up_difference(
        tmp_path, monkeypatch):
    """Runs of one length: the sparse one's end was shared by all, so every row showed only loss@0 and the end; and
    the difference plot read a dense idea against a straight baseline line from 0 to its end (-0.5 where +0.1)."""
    def sparse(run: Path) -> Path:
        stats = json.loads((run / "stats.json").read_text())
        stats["validation"] = [{**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.0},
                               stats["validation"][-1]]
        (run / "stats.json").write_text(json.dumps(stats))
        return run

    base = fake_run(tmp_path / "base", "base", 1, 2.0, steps=40)
    idea = fake_run(tmp_path / "idea", "idea", 1, 2.0, steps=40)
    other = sparse(fake_run(tmp_path / "other", "other", 1, 2.0, steps=40))
    header = comparison_table(group_runs(load_runs([base, idea, other]))).splitlines()[0]
    assert len([c for c in header.split() if c.startswith("loss@")]) == 4
    drawn, figures = {}, []
    monkeypatch.setattr(Figure, "savefig", lambda fig, png, **kw: figures.append(fig))
    monkeypatch.setattr(lmplay.stats.plot, "write_atomic", lambda path, data: drawn.__setitem__(Path(path).name, (
        [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()],
        [int(np.isfinite(line.get_ydata()).sum()) for line in figures[-1].axes[0].lines])))
    plot_all(group_runs(load_runs([sparse(base), idea])), tmp_path / "plots", ["validation"], {"validation": 0.0},
             logx=True)
    labels, points = drawn["validation_loss_vs_baseline.png"]
    assert "too few points where it and its baseline both validated to draw" in labels[1] and points[1] < 2


def test_a_run_validated_at_0_and_twice_more_is_not_read_across_its_first_gap(tmp_path):
    """Points at 0, T and 2T made a 'regular cadence' of T that let a line from 0 to T through: 0.19 off the same
    run validated at T/2."""
    from lmplay.stats.plot import approx

    run = fake_run(tmp_path / "sparse", "a", 1, 2.0, steps=40)
    stats = json.loads((run / "stats.json").read_text())
    stats["validation"] = [{**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.0},
                           *(r for r in stats["validation"] if r["step"] in (20, 40))]
    (run / "stats.json").write_text(json.dumps(stats))
    [group] = group_runs(load_runs([run]))
    sparse = curve(group, "validation", "loss")
    assert approx(sparse, 1000) is None and approx(sparse, 2001) == "" and approx(sparse, 3000) is None


def test_a_value_a_seed_reads_off_a_line_is_marked(tmp_path):
    """Seeds of rows batching validate a few % apart in tokens: the mean's axis hid that one seed's value at the
    column was a straight line between its points."""
    for seed, tokens_per_step in ((1, 100), (2, 106)):
        fake_run(tmp_path / "sweep" / f"seed={seed}", "a", seed, 2.0, tokens_per_step=tokens_per_step, job=seed - 1)
    [group] = group_runs(load_runs([tmp_path / "sweep"]))
    assert "~" in comparison_table([group]).split("\n\n")[0]


def test_a_table_cell_holds_each_seed_s_own_validation_where_it_validated_there(tmp_path):
    """A seed that validated 1% later was read off a line back to its previous point (the convex curve's chord):
    the table's mean sat above both seeds' measured values, and off the sweep summary's for the same runs."""
    for seed, tokens_per_step in ((1, 100), (2, 101)):
        fake_run(tmp_path / "sweep" / f"seed={seed}", "a", seed, 2.0, tokens_per_step=tokens_per_step, job=seed - 1)
    [group] = group_runs(load_runs([tmp_path / "sweep"]))
    last = [json.loads((tmp_path / "sweep" / f"seed={s}" / "stats.json").read_text())["validation"][-1]["loss"]
            for s in (1, 2)]
    header, _, row = (re.split(r"\s{2,}", line) for line in comparison_table([group]).splitlines()[:3])
    at_end = row[header.index("loss@4k")]
    assert at_end == f"{np.mean(last):.4f} ±{np.std(last, ddof=1):.4f}", (at_end, last)  # no "~": both measured


def test_a_run_logged_every_4_steps_draws_on_the_curve_of_the_same_run_logged_every_step(tmp_path):
    """A record of several steps holds their mean loss: drawn at the window's end it lay a window late, and the
    same run logged every 4 steps looked up to 0.2 worse."""
    for name, every in (("each", 1), ("four", 4)):
        run = fake_run(tmp_path / name, name, 1, 2.0, steps=40)
        stats = json.loads((run / "stats.json").read_text())
        step_loss = {r["step"]: 5.0 - 0.01 * (r["step"] - 0.5) for r in stats["train"]}  # linear in tokens
        stats["train"] = [{**r, "loss": float(np.mean([step_loss[s] for s in range(r["step"] - every + 1,
                                                                                    r["step"] + 1)]))}
                          for r in stats["train"] if r["step"] % every == 0]
        (run / "stats.json").write_text(json.dumps(stats))
    groups = group_runs(load_runs([tmp_path / "each", tmp_path / "four"]))
    each, four = (curve(g, "train", "loss") for g in groups)
    assert np.allclose(four.mean, each.at(four.tokens).mean(0), atol=1e-4)  # (the fake counts start at 1, not 0)
    unit = smoothing_unit(groups, "train")  # smoothed per record, the 4-step run lagged 4x as far and drew +0.35
    each, four = (curve(g, "train", "loss", 0.8, unit) for g in groups)  # above in a reviewer's identical runs
    assert np.allclose(four.mean, each.at(four.tokens).mean(0), atol=1e-4)


def test_what_fresh_true_set_aside_is_no_run(tmp_path):
    """replaced_<time>/ holds the replaced run's stats.json and .hydra/: plot and sweep read it as another run."""
    fake_run(tmp_path / "outputs" / "r", "a", 1, 2.0)
    fake_run(tmp_path / "outputs" / "r" / "replaced_20261126-000000", "a", 1, 2.5)
    assert [run.path.name for run in load_runs([tmp_path / "outputs"])] == ["r"]


def test_default_output_is_beside_the_first_run_dir(tmp_path):
    a, b = fake_run(tmp_path / "a", "x", 1, 2.0), fake_run(tmp_path / "b", "y", 1, 1.9)
    run_cli("lmplay.plot", str(a), check=True)
    own = (a / "plots" / "comparison.txt").read_text()
    run_cli("lmplay.plot", str(a), str(b), check=True)  # beside a's own plots, not over them
    assert (a / "plots_with_b" / "validation_loss_vs_baseline.png").is_file()
    assert (a / "plots" / "comparison.txt").read_text() == own
    (b / "stats.json").unlink()  # b gone from the comparison: its difference plot is not left beside the new ones
    run_cli("lmplay.plot", str(a), "--out", str(a / "plots_with_b"), check=True)
    assert not (a / "plots_with_b" / "validation_loss_vs_baseline.png").exists()
    run_cli("lmplay.plot", str(a), "--train", check=True)
    run_cli("lmplay.plot", str(a), check=True)  # a plot without --train keeps the train curves of one with it
    assert (a / "plots" / "train_loss.png").is_file()
    long = [fake_run(tmp_path / f"{'x' * 90}_seed={seed}", "y", seed, 1.9) for seed in (1, 2)]
    for other in long:  # two names alike in their first 80 characters wrote into one dir, the second over the first
        run_cli("lmplay.plot", str(a), str(other), check=True)
    assert len(list(a.glob("plots_with_*"))) == 3
    for sweep in ("s1", "s2"):  # one command's job dirs in two sweeps: named alike
        job = fake_run(tmp_path / sweep / "seed=1", "y", 1, 1.9)
        run_cli("lmplay.plot", str(a), str(job), check=True)
    assert len(list(a.glob("plots_with_seed=1_*"))) == 2


def test_a_damaged_run_in_a_sweep_is_left_out_with_a_note_and_one_named_itself_is_an_error(sweep, tmp_path):
    damaged = sweep / "exp=attn_temp_mini,max_steps=40,seed=2"
    (damaged / "stats.json").write_text("[]")
    (sweep / "exp=gpt2ish_mini,max_steps=40,seed=3" / ".hydra" / "overrides.yaml").write_text("garbage: [")
    (sweep / "exp=gpt2ish_mini,max_steps=40,seed=3" / ".hydra" / "hydra.yaml").write_text("garbage: [")  # its order
    proc = run_cli("lmplay.plot", str(sweep), "--out", str(tmp_path / "plots"), check=True)
    assert proc.stderr.count("note: left out: ") == 2 and "is not lmplay's stats" in proc.stderr
    assert "overrides.yaml cannot be read" in proc.stderr and "Traceback" not in proc.stderr
    baseline, idea = proc.stdout.splitlines()[2:4]  # each with the 2 seeds that can be read
    assert baseline.split()[:3] == ["gpt2ish_mini", "(baseline)", "2"] and idea.split()[:2] == ["attn_temp_mini", "2"]
    proc = run_cli("lmplay.plot", str(damaged))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is not lmplay's stats" in proc.stderr
    huge = '{"step": 1, "samples": 8, "tokens": 1' + "0" * 400 + ', "loss": 3.0}'  # past a float: OverflowError
    for records, kind in (('{"train": [1, 2], "validation": [3]}', "train"),
                          ('{"train": [], "validation": [{"tokens": 5}]}', "validation"),
                          ('{"train": [], "validation": [' + huge + "]}", "validation")):
        (damaged / "stats.json").write_text(records)  # the right shape, records that are not lmplay's
        proc = run_cli("lmplay.plot", str(sweep), "--out", str(tmp_path / "plots"), check=True)
        assert f"has a {kind} record that is not lmplay's" in proc.stderr
    (damaged / "stats.json").write_text("[" * 100_000 + "]" * 100_000)  # nested past Python's recursion limit
    proc = run_cli("lmplay.plot", str(sweep), "--out", str(tmp_path / "plots"), check=True)
    assert "stats.json cannot be read" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None])
def test_a_dir_without_stats_is_a_one_line_error(make, tmp_path):
    target = tmp_path / "not_a_run"
    make(target)
    proc = run_cli("lmplay.plot", str(target))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and str(target) in proc.stderr


def test_an_out_that_cannot_be_written_is_a_one_line_error(tmp_path):
    """--out naming a file, or a dir holding a dir named comparison.txt, were FileExistsError/IsADirectoryError
    tracebacks."""
    run = fake_run(tmp_path / "a", "x", 1, 2.0)
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "d" / "comparison.txt").mkdir(parents=True)
    for out, why in (("afile", "it is a file, not a directory"), ("d", "could not write")):
        proc = run_cli("lmplay.plot", str(run), "--out", str(tmp_path / out))
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and why in proc.stderr, proc.stderr
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_idea_swept_at_two_lrs_is_compared_with_the_baseline_at_its_own_lr(tmp_path):
    """`exp=base,idea lr=1e-3,3e-3`: the idea at 3e-3 is 0.05 above the baseline at 3e-3, though 1.15 below
    the baseline at 1e-3; the table and the difference plot must say +0.05."""
    losses = {("test_runner", "1e-3"): 3.0, ("test_runner", "3e-3"): 1.8, ("my_idea", "1e-3"): 2.9,
              ("my_idea", "3e-3"): 1.85}
    for job, ((exp, lr), loss) in enumerate(losses.items()):
        fake_run(tmp_path / "sweep" / f"{job}_exp={exp},lr={lr}", exp, 1, loss, extra=(f"lr={lr}",))
    groups = group_runs(load_runs([tmp_path / "sweep"]))
    rows = {line.split("  ")[0].strip(): line for line in comparison_table(groups).splitlines()[2:6]}
    assert "+0.0500 (vs test_runner lr=3e-3)" in rows["my_idea lr=3e-3"]
    assert "-0.1000" in rows["my_idea lr=1e-3"] and "(vs" not in rows["my_idea lr=1e-3"]
    # the baseline at 3e-3 is the idea's baseline there, not a line against the baseline at 1e-3 (its -1.2 dwarfed
    # every idea's difference in the plot): a baseline of its own
    assert rows["test_runner lr=3e-3 (baseline)"].split()[-2] == "-"
    assert "- marks a run" not in comparison_table(groups)  # every cell measured: its "-" explained no gap


def test_a_sweep_job_trained_on_keeps_its_baseline_and_an_idea_with_none_at_its_settings_says_so(tmp_path):
    """One job of an `exp=base,idea lr=...` sweep trained on to max_steps=25 was compared with the first baseline
    (lr=1e-3), silently: +0.0891 where its own lr's said -0.0728."""
    losses = {("test_runner", "1e-3", "20"): 3.0, ("test_runner", "3e-3", "20"): 1.8,
              ("my_idea", "1e-3", "20"): 2.9, ("my_idea", "3e-3", "25"): 1.85, ("my_idea", "5e-3", "20"): 1.7}
    for job, ((exp, lr, steps), loss) in enumerate(losses.items()):
        fake_run(tmp_path / "sweep" / f"{job}_exp={exp},lr={lr}", exp, 1, loss, extra=(f"lr={lr}", f"max_steps={steps}"))
    rows = {line.split("  ")[0].strip(): line for line in comparison_table(group_runs(load_runs([tmp_path / "sweep"])))
            .splitlines()[2:7]}
    assert "+0.0500 (vs test_runner lr=3e-3 max_steps=20)" in rows["my_idea lr=3e-3 max_steps=25"]
    assert "-1.3000 (vs test_runner lr=1e-3 max_steps=20: none at its settings)" in rows["my_idea lr=5e-3 max_steps=20"]


def test_an_idea_at_the_default_lr_or_one_written_otherwise_is_compared_with_the_baseline_at_that_lr(tmp_path):
    """Settings were compared as typed: an idea at the default lr (0.003) was '(vs ... lr=0.001: none at its
    settings)' beside a baseline at lr=0.003, and lr=3e-3 did not match lr=0.003."""
    for job, (exp, lr, loss) in enumerate((("base", "0.001", 3.0), ("base", "0.003", 1.8))):
        fake_run(tmp_path / "sweep" / f"{job}_exp={exp},lr={lr}", exp, 1, loss, extra=(f"lr={lr}",))
    for name, extra in (("default", ()), ("written", ("lr=3e-3",))):
        run = fake_run(tmp_path / name, "idea", 1, 1.85, extra=extra)
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": "bytes", "lr": 0.003}))
    for sweep in (tmp_path / "sweep").iterdir():
        lr = float(sweep.name.rsplit("=", 1)[1])
        (sweep / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": "bytes", "lr": lr}))
    table = comparison_table(group_runs(load_runs([tmp_path / "sweep", tmp_path / "default", tmp_path / "written"])))
    rows = [line for line in table.splitlines()[2:] if line.startswith("idea")]
    assert len(rows) == 2 and all("+0.0500 (vs base lr=0.003)" in row for row in rows), table


def test_an_idea_swept_over_max_steps_keeps_its_own_length_and_optimizer_lr_is_lr(tmp_path):
    """max_steps sets a cosine schedule: ignoring it compared the idea at 40 steps with the baseline at 20. And
    optimizer.lr=0.001 typed for the idea was no match for the baseline's lr=1e-3."""
    for job, (exp, steps, loss) in enumerate((("base", 20, 3.0), ("base", 40, 1.8), ("idea", 40, 1.85))):
        run = fake_run(tmp_path / "sweep" / f"{job}_exp={exp},max_steps={steps}", exp, 1, loss,
                       extra=(f"max_steps={steps}",))
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": "bytes", "max_steps": steps}))
    rows = {line.split("  ")[0].strip(): line for line in
            comparison_table(group_runs(load_runs([tmp_path / "sweep"]))).splitlines()[2:]}
    assert "+0.0500 (vs base max_steps=40)" in rows["idea max_steps=40"]
    only_20 = comparison_table(group_runs(load_runs([tmp_path / "sweep" / "0_exp=base,max_steps=20",
                                                     tmp_path / "sweep" / "2_exp=idea,max_steps=40"])))
    assert "(vs base max_steps=20)" in only_20  # a baseline of another length is named, not passed for the idea's
    for name, exp, typed, loss in (("b", "base", "lr=1e-3", 3.0), ("d", "base", "lr=3e-3", 1.8),
                                   ("i", "idea", "optimizer.lr=0.001", 2.9)):
        run = fake_run(tmp_path / name, exp, 1, loss, extra=(typed,))
        lr = 0.003 if typed == "lr=3e-3" else 0.001
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"tokenizer": "bytes", "lr": 0.003 if name == "i"
                                                                    else lr, "optimizer": {"lr": lr}}))
    table = comparison_table(group_runs(load_runs([tmp_path / n for n in "bdi"])))
    assert "-0.1000" in table and "none at its settings" not in table, table


def test_settings_that_no_label_shows_are_noted_within_a_group_and_against_the_baseline(tmp_path):
    """A sweep extended (seed=1,2 then 1,2,3) after the exp file's lr changed averaged two settings as seeds of one;
    an idea trained after its baseline's defaults changed plotted as the idea's difference. Both said nothing."""
    def run(name: str, exp: str, seed: int, lr: float, extra: tuple[str, ...] = ()) -> Path:
        path = fake_run(tmp_path / name, exp, seed, 2.0, extra=extra)
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"tokenizer": "bytes", "lr": lr, "seed": seed, "run_name": name, "device": "cpu",
             "optimizer": {"lr": lr, "betas": [0.9, 0.95]}, "model": {"num_blocks": 2 if exp == "base" else 3}}))
        return path

    runs = [run("b1", "base", 1, 0.003), run("b2", "base", 2, 0.003), run("i1", "idea", 1, 0.003),
            run("i2", "idea", 2, 0.001)]
    assert table_note(*runs).splitlines()[1:] == [(
        "Note: the runs averaged as idea did not all train with the same settings (optimizer.lr 0.003/0.001): a "
        "command repeated after its settings or the model's code changed counts as another seed of the first: a "
        "run_name does not keep it apart, typing the changed setting does (for changed model code, plot its runs "
        "apart).")]  # seeds, names, the device and the idea's model differ as they
    # should: no note
    for path, digest in ((runs[0], "a" * 16), (runs[1], "b" * 16)):  # base's seed 2 trained after an edit of its code
        code = {"experiments.base.model": digest}
        torch.save({"components": {"model": {"state": {"code": code}}}}, path / "model.lmp")
    assert ("the runs averaged as base did not all train with the same settings (code of experiments.base.model "
            "aaaaaaaaaa/bbbbbbbbbb)") in table_note(runs[0], runs[1])
    assert table_note(runs[0], runs[3]).splitlines()[1:] == [(
        "Note: idea and its baseline base also differ in settings no command typed (optimizer.lr 0.003/0.001, as "
        "base/idea): the difference between them is not the idea's alone.")]
    typed = run("typed", "idea", 2, 0.001, extra=("lr=1e-3",))
    assert "Note" not in table_note(runs[0], typed)  # typed, it is in the label
    base_settings = {"tokenizer": "bytes", "warmup_fraction": 0.1, "curriculum": {"stages": [{"epochs": 1}]},
                     "scheduler": {"_target_": "Warmup", "warmup_fraction": 0.1}}
    for name, typed, settled in (  # typed inside a value; a group chosen whose file reads no warmup_fraction
            ("inside", "curriculum.stages.0.epochs=2", {"curriculum": {"stages": [{"epochs": 2}]}}),
            ("constant", "scheduler=constant", {"scheduler": {"_target_": "Constant"}})):
        path = fake_run(tmp_path / name, "idea", 1, 2.0, extra=(typed,))
        (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**base_settings, **settled}))
        base = fake_run(tmp_path / f"base_{name}" / "b", "base", 1, 2.0)
        (base / ".hydra" / "config.yaml").write_text(yaml.safe_dump(base_settings))
        assert "Note" not in table_note(base, path), name


def test_seeds_of_rows_batching_with_two_validations_are_read_between_them(tmp_path):
    """Seeds validate ~4% apart in tokens; with two validations past 0 each, every seed was '-' away from its own
    points and the table kept only loss@0."""
    for seed, per_step in ((1, 100), (2, 104), (3, 108)):
        run = fake_run(tmp_path / "sweep" / f"seed={seed}", "a", seed, 2.0, tokens_per_step=per_step, steps=10,
                       job=seed - 1)
        stats = json.loads((run / "stats.json").read_text())
        stats["validation"].insert(0, {**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.0})
        (run / "stats.json").write_text(json.dumps(stats))
    table = comparison_table(group_runs(load_runs([tmp_path / "sweep"]))).split("\n\n")[0]
    assert len([c for c in table.splitlines()[0].split() if c.startswith("loss@")]) == 3, table
    assert table.splitlines()[2].count(" - ") == 1, table  # the baseline's own 'vs baseline' alone


def test_a_comparison_of_runs_validated_on_different_held_out_text_says_so(tmp_path):
    """The held-out set is validation_batches batches of batch_size: a batch_size sweep measures each loss on
    other samples, which the table must not pass over in silence."""
    for job, (batch, held) in enumerate(((4, 1200), (16, 4800))):
        fake_run(tmp_path / "sweep" / f"b{batch}", "test_runner", 1, 2.0, extra=(f"batch_size={batch}",),
                 held_out_tokens=held)
    table = comparison_table(group_runs(load_runs([tmp_path / "sweep"])))
    assert ("Note: these runs' validation sets differ (held-out tokens: test_runner batch_size=16 4,800, "
            "test_runner batch_size=4 1,200)") in table
    fake_run(tmp_path / "same" / "a", "test_runner", 1, 2.0, extra=("lr=1e-3",))
    fake_run(tmp_path / "same" / "b", "test_runner", 1, 2.0, extra=("lr=3e-3",))
    assert "Note:" not in comparison_table(group_runs(load_runs([tmp_path / "same"])))


def test_a_comparison_across_tokenizers_or_with_a_run_left_out_says_so(tmp_path, monkeypatch):
    """bytes against gpt2 read '+5.44 vs baseline' per token of different sizes; a run with no validation yet
    dropped out of the table without a word."""
    fake_run(tmp_path / "runs" / "a", "test_runner", 1, 2.0, extra=("tokenizer=bytes",))
    fake_run(tmp_path / "runs" / "b", "test_runner", 1, 5.0, extra=("tokenizer=gpt2",), tokenizer="gpt2")
    empty = fake_run(tmp_path / "runs" / "c", "test_runner", 1, 2.0, extra=("lr=1",))
    (empty / "stats.json").write_text(json.dumps({"train": [], "validation": []}))
    table = comparison_table(group_runs(load_runs([tmp_path / "runs"])))
    assert ("Note: these runs use different tokenizers (test_runner tokenizer=bytes, test_runner tokenizer=gpt2)"
            ) in table  # each value once: the label said it
    assert "Left out, with no validation record yet: test_runner lr=1." in table
    drawn = drawn_axes(monkeypatch)
    plot_all(group_runs(load_runs([tmp_path / "runs"])), tmp_path / "plots", ["validation"], {"validation": 0.0},
             logx=False)
    assert all("these runs use different tokenizers" in " ".join(t.get_text() for t in ax.texts)
               for ax in drawn.values())  # a PNG goes where comparison.txt's notes do not


def test_a_run_validated_at_its_cadence_is_not_read_between_0_and_its_first_validation(tmp_path):
    """The cadence allows a line between two regular points, but not from the untrained model's at 0 to the first:
    two identical runs, one validated 4x as often, read 0.68 apart there."""
    for name, every, steps in (("often", 10, 30), ("rarely", 50, 300)):  # a sweep of 30 steps, one of 300
        run = fake_run(tmp_path / name, name, 1, 2.0, steps=steps)
        stats = json.loads((run / "stats.json").read_text())
        stats["validation"] = [{**stats["validation"][0], "step": s, "samples": 8 * s, "tokens": 100 * s,
                                "loss": 2.0 + 3.0 * np.exp(-s / 10)} for s in range(0, steps + 1, every)]
        (run / "stats.json").write_text(json.dumps(stats))
    table = comparison_table(group_runs(load_runs([tmp_path / "often", tmp_path / "rarely"])))
    header, rarely = table.splitlines()[0].split(), table.splitlines()[3].split()
    assert rarely[0] == "rarely" and header[3:6] == ["loss@1k", "loss@2k", "loss@3k"], table
    assert rarely[3:6] == ["-", "-", "-"], table  # before its first validation, at 5k tokens: read off a line, ~0.7 up


def test_the_approx_marks_by_bisection_equal_a_scan_of_every_point():
    """approx() scanned every point of every seed for each point read (--train of 200k records: 7.5 minutes); the
    bisection must mark exactly as the scan did."""
    from lmplay.stats.plot import GAP, NEAR, SAME, Curve, approx

    def scanned(curve: Curve, tokens: float) -> str | None:
        marks = []
        for seed in curve.seed_tokens:
            below, above = seed[seed <= tokens], seed[seed >= tokens]
            distance = np.abs(seed - tokens).min()
            if distance <= SAME * tokens:
                marks.append("")
                continue
            gap = above.min() - below.max() if len(below) and len(above) else np.inf
            past_0 = seed[seed > 0]
            cadence = np.median(np.diff(past_0)) if len(past_0) >= 3 else 0.0
            regular = 1.5 * cadence if len(below) and below.max() > 0 else 0.0  # not across the start by cadence
            if gap == np.inf or (distance > NEAR * tokens and gap > max(GAP * tokens, regular)):
                return None
            marks.append("~")
        return max(marks)

    rng = np.random.default_rng(0)
    for _ in range(30):
        points = int(rng.integers(2, 12))
        seeds = np.sort(np.concatenate([np.zeros((3, 1)), rng.integers(1, 5000, (3, points - 1))], axis=1), axis=1)
        curve = Curve("c", seeds.astype(float), np.ones_like(seeds, dtype=float))
        for tokens in np.concatenate([seeds.ravel()[seeds.ravel() > 0], rng.uniform(1, 6000, 20)]):
            assert approx(curve, float(tokens)) == scanned(curve, float(tokens))


def test_a_plot_of_validation_curves_keeps_one_train_record_a_run(tmp_path):
    """Every train record of every run was held for validation plots alone: 5 GB for 50 runs of 200k steps."""
    run = fake_run(tmp_path / "r", "a", 1, 2.0, steps=40)
    [whole] = load_runs([run])
    [light] = load_runs([run], train=False)
    assert len(whole.train) == 40 and light.train == whole.train[-1:]
    assert (light.tokens, light.steps, light.validation) == (whole.tokens, whole.steps, whole.validation)


def test_a_run_whose_hydra_files_are_valid_yaml_of_the_wrong_shape_is_left_out_or_read_not_a_traceback(tmp_path):
    """`hydra: [1, 2]` in hydra.yaml or `5` in overrides.yaml was an AttributeError/TypeError that stopped the plot
    of every run in the sweep."""
    good = fake_run(tmp_path / "sweep" / "seed=1", "a", 1, 2.0, job=0)
    odd = fake_run(tmp_path / "sweep" / "seed=2", "a", 2, 2.0, job=1)
    (odd / ".hydra" / "hydra.yaml").write_text("hydra: [1, 2]\n")
    assert [r.path for r in load_runs([tmp_path / "sweep"])] == [good, odd]  # read, without a job number
    (odd / ".hydra" / "overrides.yaml").write_text("5\n")
    skipped = []
    assert [r.path for r in load_runs([tmp_path / "sweep"], skipped)] == [good]
    assert skipped == [f"{odd / '.hydra' / 'overrides.yaml'} cannot be read: it holds a int, not a list"]


def test_an_unrelated_run_beside_an_lr_comparison_leaves_it_alone(tmp_path):
    """`plot a b` compared b (the default lr) with a (lr=1e-3); `plot a b m`, m another experiment at b's settings,
    made b a second "(baseline)" with no difference: m's match took b's comparison away. A compiled run or one with
    a padded vocabulary is still at the same settings."""
    a = fake_run(tmp_path / "a", "test_runner", 1, 2.0, extra=("lr=1e-3",))
    b = fake_run(tmp_path / "b", "test_runner", 1, 1.8)
    m = fake_run(tmp_path / "m", "gpt2ish_mini", 1, 1.7, extra=("compile=true", "vocab_multiple=64"))
    lines = comparison_table(group_runs(load_runs([a, b, m]))).splitlines()
    assert [line.split()[0] for line in lines[2:5]] == ["test_runner", "test_runner", "gpt2ish_mini"]
    assert sum("(baseline)" in line for line in lines) == 1 and -0.22 < float(lines[3].split()[-5]) < -0.18
    assert "(vs test_runner)" in lines[4] and -0.12 < float(lines[4].split()[-4]) < -0.08  # m against b


def test_a_plots_dir_that_is_a_symlink_is_not_written_through(tmp_path):
    """A run dir from elsewhere with plots/ linked out of it: the PNGs and comparison.txt went wherever it pointed."""
    from lmplay.plot import main

    run = fake_run(tmp_path / "run", "a", 1, 2.0)
    (tmp_path / "elsewhere").mkdir()
    (run / "plots").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=r"plots is a symlink \(to .*elsewhere\); remove it, or choose where the "
                                          r"plots go with --out DIR$"):
        main([str(run)])
    assert not list((tmp_path / "elsewhere").iterdir())
    main([str(run), "--out", str(tmp_path / "chosen")])
    assert (tmp_path / "chosen" / "comparison.txt").is_file()


def test_a_config_of_yaml_aliases_is_refused_not_expanded_for_good(tmp_path):
    """772 bytes of nested aliases expanded into 10^8 keys: lmplay.plot and the sweep summary grew to gigabytes."""
    run = fake_run(tmp_path / "run", "a", 1, 2.0)
    lines = ["l0: &l0 {" + ", ".join(f"k{i}: 1" for i in range(10)) + "}"]
    lines += [f"l{n}: &l{n} {{" + ", ".join(f"k{i}: *l{n - 1}" for i in range(10)) + "}" for n in range(1, 8)]
    (run / ".hydra" / "config.yaml").write_text("\n".join(lines))
    skipped = []
    assert load_runs([tmp_path], skipped) == []
    assert skipped == [(f"{run / '.hydra' / 'config.yaml'} cannot be read: it uses YAML aliases (*name), which "
                        f"Hydra never writes")]


def test_a_date_in_a_hand_edited_config_and_a_damaged_held_out_count_are_no_traceback(tmp_path, capsys):
    """A date in .hydra/config.yaml was PyYAML's datetime.date, and the plot ended in "not JSON serializable"; a
    held_out_tokens of "x" in one run's stats.json ended it in a TypeError comparing it with another run's."""
    from lmplay.plot import main

    a, b = fake_run(tmp_path / "a", "a", 1, 2.0), fake_run(tmp_path / "b", "b", 1, 2.1)
    (a / ".hydra" / "config.yaml").write_text("tokenizer: bytes\nwhen: 2020-01-01\nblob: !!binary aGVsbG8=\n")
    main([str(a), str(b), "--out", str(tmp_path / "plots")])
    assert (tmp_path / "plots" / "comparison.txt").is_file()
    crafted = fake_run(tmp_path / "c", "c", 1, 2.2, extra=("lr=a\x1b]0;PWNED\x07\x1b[2J",))  # a label's escapes
    main([str(a), str(crafted), "--out", str(tmp_path / "plots2")])  # reached the terminal as the table printed
    assert "\x1b" not in capsys.readouterr().out
    stats = json.loads((b / "stats.json").read_text())
    stats["validation"][0]["held_out_tokens"] = "x"
    (b / "stats.json").write_text(json.dumps(stats))
    skipped = []
    assert sorted(run.path for run in load_runs([tmp_path], skipped)) == [a, crafted]
    assert "has a validation record that is not lmplay's" in skipped[0]


def test_twenty_lines_keep_a_readable_legend_and_lines_of_their_own(tmp_path, monkeypatch):
    """A sweep of 10 lrs x 2 experiments: the legend covered two thirds of the axes and was cut off (matplotlib's
    "Tight layout not applied"), and colours came back every 10 lines with the same style."""
    from matplotlib.axes import Axes

    for job in range(20):
        exp = "gpt2ish_mini" if job % 2 == 0 else "attn_temp_mini"
        fake_run(tmp_path / "sweep" / f"{job}_lr={job}", exp, 1, 2.0 + job / 100, extra=(f"lr={job}e-4",), job=job)
    drawn = []
    plot_line = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, *a, **kw: drawn.append((kw["color"], kw.get("linestyle", "-")))
                        or plot_line(ax, *a, **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tight-layout warning
        plot_all(group_runs(load_runs([tmp_path / "sweep"])), tmp_path / "plots", ["validation"], {"validation": 0.0},
                 logx=False)
    first_plot = drawn[:20]
    assert len(set(first_plot)) == 20


def test_a_log_axis_draws_no_line_from_the_validation_at_0_tokens(tmp_path, monkeypatch):
    """On --logx the step-0 validation (0 tokens) was clipped far left: the line from it drew a flat plateau at the
    next point's loss from the axis' edge to that point."""
    run = fake_run(tmp_path / "run", "a", 1, 2.0, steps=40)
    stats = json.loads((run / "stats.json").read_text())
    stats["validation"].insert(0, {**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.5})
    (run / "stats.json").write_text(json.dumps(stats))
    xs, figures = {}, []
    monkeypatch.setattr(Figure, "savefig", lambda fig, png, **kw: figures.append(fig))
    monkeypatch.setattr(lmplay.stats.plot, "write_atomic", lambda path, data: xs.__setitem__(
        Path(path).name, [np.asarray(line.get_xdata(), dtype=float) for line in figures[-1].axes[0].lines]))
    plot_all(group_runs(load_runs([run])), tmp_path / "plots", ["validation"], {"validation": 0.0}, logx=True)
    assert all((x > 0).all() for x in xs["validation_loss.png"])
    plot_all(group_runs(load_runs([run])), tmp_path / "plots", ["validation"], {"validation": 0.0}, logx=False)
    assert any((x == 0).any() for x in xs["validation_loss.png"])  # a linear axis keeps the point at 0


def test_human_token_counts_round_into_the_next_unit():
    from lmplay.stats.plot import human
    assert [human(t) for t in (999.6, 999_499, 999_600, 999_999_000, 1_645, 3_760, 500, 0)] == [
        "1k", "999k", "1M", "1G", "1.65k", "3.76k", "500", "0"]


def test_each_curriculum_stage_is_its_own_line_smoothed_alone_and_its_start_is_marked(tmp_path, monkeypatch):
    """A later stage validates on its own held-out rows: one line (and one smoothing) across its start drew the
    change of data as the model's. Each stage's points are a line of their own, and a dotted line names the stage."""
    for exp, loss in (("a", 2.0), ("b", 1.9)):
        run = fake_run(tmp_path / exp, exp, 1, loss, steps=40)
        stats = json.loads((run / "stats.json").read_text())
        for kind in ("train", "validation"):
            later = [{**r, "stage": "t", "loss": r["loss"] + 1.0} for r in stats[kind] if r["step"] >= 20]
            stats[kind] = [r for r in stats[kind] if r["step"] <= 20 - (kind == "train")] + later
        (run / "stats.json").write_text(json.dumps(stats))  # validation at step 20 twice: s's end, t's start
    groups = group_runs(load_runs([tmp_path / "a", tmp_path / "b"]))
    validation = curve(groups[0], "validation", "loss")
    assert [(stage, len(part.tokens)) for stage, part in validation.segments()] == [("s", 4), ("t", 5)]
    train = curve(groups[0], "train", "loss", smooth=0.9)
    start = json.loads((tmp_path / "a" / "stats.json").read_text())["train"][19]
    assert train.segments()[1][1].seed_values[0, 0] == pytest.approx(start["loss"])  # no memory of stage s
    drawn = drawn_axes(monkeypatch)
    plot_all(groups, tmp_path / "plots", ["validation"], {"validation": 0.0}, logx=False)
    for name in ("validation_loss.png", "validation_loss_vs_baseline.png"):
        ax = drawn[name]
        boundary = validation.segments()[1][1].tokens[0]
        lines = [np.asarray(line.get_xdata(), dtype=float) for line in ax.lines if line.get_linestyle() != ":"]
        assert lines and all(x.max() <= boundary or x.min() >= boundary for x in lines), name
        assert [t.get_text() for t in ax.texts if t.get_text().strip() == "t"] == [" t"]
    assert len(drawn["validation_loss.png"].get_legend().get_texts()) == 2  # one entry per run, not per stage


def test_a_run_that_never_validated_past_0_leaves_the_others_their_columns(tmp_path):
    """One lr of a sweep diverged before its first interval: the columns spanned its 0 tokens too, and every row
    read loss@0 alone, the idea +0.0000 against the baseline, with a note blaming batching or cadences."""
    for exp, loss in (("a", 2.0), ("b", 1.9), ("c", 1.8)):
        run = fake_run(tmp_path / exp, exp, 1, loss, steps=40)
        stats = json.loads((run / "stats.json").read_text())
        zero = {**stats["validation"][0], "step": 0, "samples": 0, "tokens": 0, "loss": 5.5}
        stats["validation"] = [zero] if exp == "c" else [zero, *stats["validation"]]
        (run / "stats.json").write_text(json.dumps(stats))
    table = comparison_table(group_runs(load_runs([tmp_path / e for e in "abc"])))
    header, _, _, b, c, _, *notes = table.splitlines()
    assert "loss@4k" in header and c.split()[-4:] == ["-", "-", "-", "-"], table
    assert re.search(r"-0\.1\d{3}", b)  # b against a, at their last shared count
    assert any(n.startswith("Note: c validated only before training") for n in notes), table
    assert not any("different batching" in n for n in notes)


def test_a_run_whose_loss_blew_up_without_a_nan_leaves_the_axis_to_the_others(tmp_path, monkeypatch):
    """An lr of 1e4 'completed' at a loss of 1e10: the axis ran to 1.1e10, every other run a flat line at 0."""
    runs = [fake_run(tmp_path / exp, exp, 1, 2.0, steps=40) for exp in ("a", "b")]
    stats = json.loads((runs[1] / "stats.json").read_text())
    for record in stats["validation"][2:]:
        record["loss"] = 1.2e10
    (runs[1] / "stats.json").write_text(json.dumps(stats))
    drawn = drawn_axes(monkeypatch)
    plot_all(group_runs(load_runs(runs)), tmp_path / "plots", ["validation"], {"validation": 0.0}, logx=False)
    for name in ("validation_loss.png", "validation_loss_vs_baseline.png"):
        low, high = drawn[name].get_ylim()
        assert -3 < low and high < 6, (name, low, high)  # a's losses (and a's difference from itself) fill it
        assert "b (leaves the axis: up to 1.2e+10)" in [t.get_text() for t in drawn[name].get_legend().get_texts()]
    assert drawn["validation_accuracy.png"].get_ylim()[1] < 1  # accuracy is bounded: nothing leaves its axis
    runs.append(fake_run(tmp_path / "c", "c", 1, 1.9, steps=40))  # b the baseline now: c's difference from it
    plot_all(group_runs(load_runs([runs[1], runs[0], runs[2]])), tmp_path / "plots", ["validation"],
             {"validation": 0.0}, logx=False)  # ran to -1.2e10, the healthy idea's line a drop off the axis
    legend = [t.get_text() for t in drawn["validation_loss_vs_baseline.png"].get_legend().get_texts()]
    assert "a (leaves the axis: up to -1.2e+10)" in legend and "c (leaves the axis: up to -1.2e+10)" in legend
    assert -1 < drawn["validation_loss_vs_baseline.png"].get_ylim()[0]


def test_a_comparison_of_models_of_different_sizes_says_so(tmp_path):
    """nnmemory_mini is 22% larger than its baseline: the table compared their losses without a word of it."""
    for exp, size in (("gpt2ish_mini", 891_904), ("nnmemory_mini", 1_090_816), ("attn_temp_mini", 893_968)):
        run = fake_run(tmp_path / exp, exp, 1, 2.0)
        stats = json.loads((run / "stats.json").read_text())
        (run / "stats.json").write_text(json.dumps({**stats, "parameters": size}))
    table = comparison_table(group_runs(load_runs([tmp_path / e for e in ("gpt2ish_mini", "nnmemory_mini")])))
    assert ("Note: these runs' models differ in size (parameters: gpt2ish_mini 891,904, nnmemory_mini 1,090,816): a "
            "lower loss can be the larger model's") in table
    assert "differ in size" not in comparison_table(group_runs(load_runs(
        [tmp_path / e for e in ("gpt2ish_mini", "attn_temp_mini")])))  # an idea's few parameters (0.2%) are no size


def two_stages(run: Path, at: int, stage: str = "t", shift: int = 0) -> None:
    """The run's records from step `at` on are a stage `t` that starts with its own validation at `at` (its loss
    1.0 higher: other held-out rows); `shift` moves the later stage's token counts (rows batching)."""
    stats = json.loads((run / "stats.json").read_text())
    for kind in ("train", "validation"):
        later = [{**r, "stage": stage, "loss": r["loss"] + 1.0, "tokens": r["tokens"] + shift}
                 for r in stats[kind] if r["step"] >= at]
        stats[kind] = [r for r in stats[kind] if r["step"] <= at - (kind == "train")] + later
    (run / "stats.json").write_text(json.dumps(stats))


def test_a_later_stages_start_validation_is_drawn_against_the_baseline_a_few_tokens_apart(tmp_path, monkeypatch):
    """Rows batching: the idea reached stage t 2 tokens before the baseline did; its start validation fell outside
    the baseline's stage-t span and the difference plot dropped it (half of all such pairs)."""
    runs = [fake_run(tmp_path / exp, exp, 1, loss, steps=40) for exp, loss in (("a", 2.0), ("b", 1.9))]
    two_stages(runs[0], 20)
    two_stages(runs[1], 20, shift=-2)
    drawn = drawn_axes(monkeypatch)
    plot_all(group_runs(load_runs(runs)), tmp_path / "plots", ["validation"], {"validation": 0.0}, logx=False)
    start = 100 * 20 + 1 - 2
    xs = [np.asarray(line.get_xdata(), dtype=float) for line in drawn["validation_loss_vs_baseline.png"].lines
          if line.get_linestyle() != ":" and line.get_color() != "black"]
    assert any(x.min() == start for x in xs), xs


def test_an_idea_of_one_stage_against_a_baseline_of_two_breaks_at_the_baselines_stage(tmp_path, monkeypatch):
    """The idea's one stage was drawn against the baseline's whole curve, which holds two values at the baseline's
    stage start (its stage s's last, its stage t's first): the line ran across the baseline's change of data."""
    runs = [fake_run(tmp_path / exp, exp, 1, loss, steps=40) for exp, loss in (("a", 2.0), ("b", 1.9))]
    two_stages(runs[0], 20)
    stats = json.loads((runs[1] / "stats.json").read_text())  # the idea's one stage has a name of its own
    (runs[1] / "stats.json").write_text(json.dumps({k: [{**r, "stage": "main"} for r in v] for k, v in stats.items()}))
    drawn = drawn_axes(monkeypatch)
    plot_all(group_runs(load_runs(runs)), tmp_path / "plots", ["validation"], {"validation": 0.0}, logx=False)
    boundary = 100 * 20 + 1
    lines = [(np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float))
             for line in drawn["validation_loss_vs_baseline.png"].lines
             if line.get_linestyle() != ":" and line.get_color() != "black"]
    assert all(x.max() <= boundary or x.min() >= boundary for x, _ in lines), lines
    after = next(y for x, y in lines if x.min() == boundary)
    assert after[0] == pytest.approx(-1.1, abs=0.05)  # b's loss minus the baseline's first of stage t (1.0 higher)
