"""Training end to end: losses fall, outputs are valid, accumulation equals one big batch, bad input is clear."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.summary.writer.record_writer import RecordWriter

from conftest import REPO, compose_config, make_runner, python_path, run_cli
from lmplay import generate, train
from lmplay.cli import translate_flags
from lmplay.config import CONF_DIR
from lmplay.errors import ConfigError, DivergedError
from lmplay.hydra_app import HeldStderr, run_hydra_app
from lmplay.overrides import ambiguous_value, precheck
from lmplay.runner import checkpoint, progress
from lmplay.runner.components import RunnerSettings
from lmplay.runner.report import start_report, uneven_mini_batch, uneven_mini_batches
from lmplay.stats import speed, tensorboard


def test_tiny_run_learns_and_writes_outputs(tmp_path, tiny_run_args):
    proc = run_cli("lmplay.train", *tiny_run_args, "max_steps=40", "runner.validation_interval=64", check=True,
                   env={"LMPLAY_CACHE": str(tmp_path / "cache")})
    run = tmp_path / "run"
    assert [p.name for p in (tmp_path / "cache" / "tokenized").iterdir()]  # the tokens go where LMPLAY_CACHE says
    assert "parameters" in proc.stdout
    stats = json.loads((run / "stats.json").read_text())
    assert len(stats["train"]) == 40
    for record in stats["train"] + stats["validation"]:
        assert {"stage", "step", "samples", "tokens", "loss", "accuracy", "lr"} <= set(record)
    val = [r["loss"] for r in stats["validation"]]
    assert len(val) >= 4 and val[-1] < val[0] - 0.3, val
    assert f"done: step 40, {stats['train'][-1]['tokens']:,} tokens, validation loss {val[-1]:.4f}; " in proc.stdout
    assert len({r["held_out_tokens"] for r in stats["validation"]}) == 1  # the same held-out text every time
    ckpt = checkpoint.load(run / "model.lmp")
    assert ckpt["exp"] == "test_runner" and ckpt["components"]["runner"]["state"]["progress"]["step"] == 40
    assert stats["parameters"] == ckpt["components"]["model"]["state"]["parameters"] == 43_968  # for comparisons
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    logged = [(e.step, e.value) for e in tb.Scalars("train/loss")]
    assert logged == [(r["tokens"], pytest.approx(r["loss"], rel=1e-6)) for r in stats["train"]]
    assert {"train/accuracy", "train/lr", "train/tokens_per_second", "validation/loss"} <= set(tb.Tags()["scalars"])
    assert (run / ".hydra" / "config.yaml").exists()
    inspect = run_cli("lmplay.inspect", str(run / "model.lmp"), check=True)
    assert "test_runner" in inspect.stdout and "step         40" in inspect.stdout


def test_event_records_are_framed_and_checksummed_as_tensorboards_own_writer_does(tmp_path):
    """lmplay frames its events with a C checksum; a wrong one would make TensorBoard drop the file as corrupt."""
    data = [b"", b"x", bytes(range(256)) * 3]
    with open(tmp_path / "theirs", "wb") as f:
        for d in data:
            RecordWriter(f).write(d)
    assert b"".join(map(tensorboard.record, data)) == (tmp_path / "theirs").read_bytes()
    events = tensorboard.EventFile(tmp_path / "tb")
    events.scalars({"train/loss": 2.5}, step=7)
    events.close()
    (file,) = (tmp_path / "tb").iterdir()
    assert len(list(EventFileLoader(str(file)).Load())) == 2  # its reader checks each CRC: a bad one stops it early
    tb = EventAccumulator(str(tmp_path / "tb"))
    tb.Reload()
    assert [(e.step, e.value) for e in tb.Scalars("train/loss")] == [(7, 2.5)]


def test_each_event_has_its_records_time_not_its_flushs(tmp_path, monkeypatch):
    """Events are written in batches; stamped at the flush, TensorBoard's wall-time axis was a staircase."""
    from lmplay.stats import writer

    now = [1000.0]
    monkeypatch.setattr(writer.time, "time", lambda: now[0])
    stats = writer.StatsWriter(tmp_path, flush_seconds=3600.0)  # the first record at once, the others at close
    for step in (1, 2, 3):
        now[0] = 1000.0 + 7 * step
        stats.add("train", {"stage": "a", "step": step, "samples": step, "tokens": 10 * step, "loss": 2.0,
                            "accuracy": 0.1, "lr": 1e-3})
    now[0] = 5000.0
    stats.close()
    tb = EventAccumulator(str(tmp_path / "tb"))
    tb.Reload()
    assert [(e.step, e.wall_time) for e in tb.Scalars("train/loss")] == [(10, 1007.0), (20, 1014.0), (30, 1021.0)]


def test_each_record_is_serialized_once_so_a_rewrite_costs_no_more_python_work_as_the_run_grows(tmp_path,
                                                                                                 monkeypatch):
    """A validation and a save each re-serialized every record: at step 20k they took 10x their first cost."""
    from lmplay.stats import writer

    earlier = {"train": [{"step": i, "tokens": i, "loss": 1.0 / (i + 1)} for i in range(1000)], "validation": []}
    stats = writer.StatsWriter(tmp_path, earlier)
    calls = []
    real = writer.json.dumps
    monkeypatch.setattr(writer.json, "dumps", lambda obj, *a, **k: calls.append(obj) or real(obj, *a, **k))
    for step in range(1000, 1005):
        stats.add("validation", {"step": step, "tokens": step, "loss": float("nan")})
    stats.flush()
    assert calls == stats.records["validation"]  # each new record once; the 1000 earlier ones not again
    assert json.loads((tmp_path / "stats.json").read_text().replace("NaN", "null"))["train"] == earlier["train"]
    assert stats.as_json() == real(stats.records)  # the same text as dumping the whole


def test_tensorboard_events_that_cannot_be_written_are_a_warning_and_stats_json_goes_on(tmp_path, capsys):
    """A full disk, or tb/ taken by a file, was a double traceback that also stopped the checkpoint's save."""
    from lmplay.stats.writer import StatsWriter

    (tmp_path / "tb").write_text("not a directory")
    stats = StatsWriter(tmp_path, flush_seconds=0.0)
    for step in (1, 2):
        stats.add("train", {"stage": "a", "step": step, "samples": step, "tokens": 10 * step, "loss": 2.0})
    stats.close()
    assert [r["step"] for r in json.loads((tmp_path / "stats.json").read_text())["train"]] == [1, 2]
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: TensorBoard events cannot be written in "
                                                         f"{tmp_path / 'tb'}")


def test_a_run_dir_turned_read_only_mid_run_is_one_error_not_a_traceback(tmp_path, monkeypatch):
    """A failing disk remounted read-only (ext4 errors=remount-ro) refuses even the unlink of a temp file never made
    (EROFS, not ENOENT): that OSError replaced write_atomic's one-line error, and the run's last stats write in
    train()'s `finally` raised once more over it."""
    import errno

    from lmplay.errors import OutputError

    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=30", "runner.validation_interval=10",
                          "runner.save_interval=10"], tmp_path)
    real_write, real_unlink = Path.write_text, Path.unlink
    read_only = [False]

    def refuse(real):
        def call(self, *args, **kwargs):
            if read_only[0] and tmp_path in self.parents:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real(self, *args, **kwargs)
        return call

    monkeypatch.setattr(Path, "write_text", refuse(real_write))
    monkeypatch.setattr(Path, "unlink", refuse(real_unlink))
    real_save = runner.save
    monkeypatch.setattr(runner, "save", lambda *a, **k: (real_save(*a, **k), read_only.__setitem__(0, True))[0])
    with pytest.raises(OutputError, match=r"^could not write .*stats.json \(Read-only file system\); the previous "
                                          r"stats.json, if any, is intact$") as raised:
        runner.train()
    assert raised.value.__suppress_context__  # said as one line, the OSError behind it not shown
    assert torch.load(tmp_path / "model.lmp", weights_only=True)["components"]["runner"]


def test_a_run_dir_on_a_read_only_file_system_is_not_blamed_on_permissions(tmp_path, monkeypatch, capsys):
    from lmplay import hydra_app

    monkeypatch.setattr(hydra_app.os, "access", lambda *a: False)
    monkeypatch.setattr(hydra_app.os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY))
    with pytest.raises(SystemExit):
        hydra_app.check_writable_dir(tmp_path, "hydra.run.dir")
    assert capsys.readouterr().err == (f"error: hydra.run.dir={tmp_path} cannot be written (its file system is mounted "
                                       f"read-only); pick another directory\n")


def test_a_restart_after_a_crash_before_the_first_save_draws_step_0_once(tmp_path, monkeypatch):
    """Without a checkpoint the restart begins again at step 0; the killed run's step-0 point had stayed."""
    from lmplay.stats.writer import StatsWriter

    now = [1000.0]
    monkeypatch.setattr(tensorboard.time, "time", lambda: now[0])
    for loss in (5.5, 4.4):  # the killed run, then its restart: neither saved a checkpoint
        stats = StatsWriter(tmp_path)
        stats.add("validation", {"tokens": 0, "loss": loss})
        stats.flush()
        stats.close()
        now[0] += 1.1  # event files are named by the second they were opened in, and read in that order
    tb = EventAccumulator(str(tmp_path / "tb"))
    tb.Reload()
    assert [(e.step, e.value) for e in tb.Scalars("validation/loss")] == [(0, pytest.approx(4.4))]


def weights_after_one_sgd_step(tmp_path, mini_batch_size: int) -> dict[str, torch.Tensor]:
    runner = make_runner(["exp=test_runner", "device=cpu", "optimizer=sgd", "optimizer.momentum=0.0", "lr=1.0",
                          "batch_size=8", f"mini_batch_size={mini_batch_size}"], tmp_path / str(mini_batch_size))
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    batch = runner.curriculum.next_batch(8, True)
    runner.train_step(batch, runner.runner_c.settings)
    return {k: before[k] - v for k, v in runner.model.state_dict().items()}  # = the gradient, as lr=1


@pytest.mark.parametrize("mini_batch_size", [2, 3])
def test_accumulation_equals_one_big_batch(tmp_path, mini_batch_size):
    """3 leaves a shorter last mini-batch (8 = 3 + 3 + 2): refused before, so the defaults (batch_size=50,
    mini_batch_size=4) and exp=gpt2ish did not train at all."""
    one_batch = weights_after_one_sgd_step(tmp_path, 8)
    accumulated = weights_after_one_sgd_step(tmp_path, mini_batch_size)
    assert any(g.abs().max() > 0 for g in one_batch.values())
    for name, grad in one_batch.items():
        torch.testing.assert_close(accumulated[name], grad, atol=1e-6, rtol=0, msg=name)


def test_the_default_batch_trains(tmp_path):
    """conf/config.yaml's batch_size=50 and mini_batch_size=4, which exp=gpt2ish keeps: 'batch_size=50 is not
    divisible by mini_batch_size=4' stopped the README's first command."""
    cfg = compose_config(["exp=gpt2ish"])
    assert (cfg.runner.batch_size, cfg.runner.mini_batch_size) == (50, 4)
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "batch_size=50", "mini_batch_size=4", "max_steps=1",
            f"hydra.run.dir={tmp_path / 'run'}", check=True)


def test_validation_is_the_same_whatever_the_mini_batch(tmp_path):
    """mini_batch_size is a memory knob: the held-out samples, and so the validation loss, must not move with it."""
    def validation(mini_batch_size: int) -> dict[str, float]:
        runner = make_runner(["exp=test_runner", "device=cpu", "batch_size=8", f"mini_batch_size={mini_batch_size}",
                              "runner.validation_batches=3"], tmp_path / str(mini_batch_size))
        return runner.validate(runner.runner_c.settings)

    whole, split = validation(8), validation(2)
    assert whole["loss"] > 0
    assert split == pytest.approx(whole, rel=1e-5)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("words, bare", [(["fresh"], "fresh"), (["exp", "test_runner"], "exp"), (["-m", "fresh"], "fresh")])
def test_a_bare_word_is_one_line(tmp_path, tiny_run_args, words, bare):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, *words), f"{bare!r} is not an override", "key=value")


@pytest.mark.parametrize("typo", ["lrr=0.1", "+lrr=0.1", "++lrr=0.1"])  # `+` adds a key: Hydra lets it through
def test_misspelled_key(tmp_path, tiny_run_args, typo):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, typo), "unknown key 'lrr'", "did you mean lr")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, message", [
    ("~lr", "the config cannot be read: Interpolation key 'lr' not found (at optimizer.lr)"),
    ("~seed", "the config cannot be read: Key 'seed' is not in struct (at seed)"),
    ("lr=${nosuch}", "the config cannot be read: Interpolation key 'nosuch' not found (at lr)"),
    ("scheduler=null", "scheduler=null: a config group takes the name of one of its files"),
])
def test_a_deleted_key_a_bad_interpolation_or_a_null_group_is_one_line(tmp_path, override, message):
    """Each was OmegaConf's or Hydra's traceback, and left an empty outputs/ behind."""
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", override, cwd=tmp_path)
    assert_one_line_error(proc, message)
    assert list(tmp_path.iterdir()) == []


def test_an_interval_sweep_under_the_basic_sweeper_is_one_line(tmp_path):
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", "lr=interval(1e-4,1e-3)", cwd=tmp_path)
    assert_one_line_error(proc, "interval() is a search space for an optimizing sweeper")
    assert list(tmp_path.iterdir()) == []  # no multirun/<date>/ left either


def test_misspelled_key_while_printing_the_config():
    assert_one_line_error(run_cli("lmplay.train", "--cfg", "job", "lrr=0.1"), "unknown key 'lrr'", "did you mean lr")


@pytest.mark.parametrize("args", [["hydra.run.dirr=x"], ["-m", "hydra.sweep.dirr=x"], ["+hydra.run.dirr=x"]])
def test_a_misspelled_hydra_key_is_one_line(tmp_path, args):
    """Hydra's own seven lines, exit 1, where every other misspelled key is one line; with `+`, not a word."""
    proc = run_cli("lmplay.train", *args, "exp=test_runner", cwd=tmp_path)
    key = args[-1].split("=")[0].lstrip("+")
    assert_one_line_error(proc, f"unknown key '{key}' (did you mean {key[:-1]}?); see `--cfg hydra`")
    assert proc.returncode == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["+hydra.searchpath=[file:///tmp]"], "ignores +hydra.searchpath: drop the +"),  # was ignored without a word
    (["+hydra.run.dir=rd"], "hydra.run.dir is a key already: set it without the +, hydra.run.dir=VALUE"),
    (["+hydra.launcher.n_jobs=2"], "hydra.launcher.n_jobs is a launcher's key: choose the launcher too"),
    (["-m", "hydra.launcher.n_jobs=2", "seed=1,2"], "hydra.launcher.n_jobs is a launcher's key: choose the launcher"),
    (["-m", "+hydra.launcher.n_jobs=2", "seed=1,2"], "hydra.launcher.n_jobs is a launcher's key: choose the launcher"),
    (["--cfg", "job", "-m", "seed=1,2"], "-m with --cfg, --info or --shell-completion: these print one job's config"),
    (["-p", "optimizer"], "-p picks the part of the config that --cfg prints"),  # Hydra ignored it: the run trained
    (["--package=optimizer"], "--package picks the part of the config that --cfg prints"),
    (["--resolve"], "--resolve resolves the ${...} of what --cfg prints"),  # Hydra's ValueError, a traceback
    (["-m", "hydra.sweeper.params={seed: '1,2'}"], ("Hydra cannot set hydra.sweeper.params on the command line; "
                                                    "type the swept values as overrides with -m (seed=1,2")),
    (["-m", "+hydra.sweeper.params.seed='1,2'"], "Hydra cannot set hydra.sweeper.params on the command line"),
    (["-m", "optimizer=sgd,rmsprop", "optimizer.momentum=0.9"], ("optimizer.momentum=0.9: Hydra sets a sweep's single "
     "values on the config of each group's default before it sweeps, and that config has no optimizer.momentum; "
     "every job's has: type it ++optimizer.momentum=0.9")),  # Hydra's seven lines, exit 1
])
def test_hydra_keys_typed_the_wrong_way_are_one_line_that_says_the_right_one(tmp_path, args, message):
    proc = run_cli("lmplay.train", *args, "exp=test_runner", "max_steps=1", cwd=tmp_path)
    assert_one_line_error(proc, message)
    assert proc.returncode == 2 and not (tmp_path / "rd").exists()


def test_a_key_only_the_swept_choices_have_is_set_in_each_job_with_the_plus_plus_the_error_names(tmp_path):
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", "optimizer=sgd,rmsprop", "++optimizer.momentum=0.9",
                   "max_steps=1", "device=cpu", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path, check=True)
    momenta = [OmegaConf.load(job / ".hydra" / "config.yaml")["optimizer"]["momentum"]
               for job in sorted(tmp_path.glob("*optimizer=*"))]
    assert momenta == [0.9, 0.9] and proc.stdout.count("completed") >= 2


def test_a_runs_logged_warnings_are_said_on_stderr_as_warnings_and_its_notes_stay_on_stdout(tmp_path):
    """The data's warnings (a stray byte, a damaged cache) came on stdout without a word saying what they were: a
    run's `> log.txt` hid them from the terminal."""
    text = tmp_path / "stray.txt"
    text.write_bytes(b"A stray \xff byte.\n\n" + b"".join(b"Line %d of the text.\n" % i for i in range(300)))
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", "curriculum=text_file",
                   f"curriculum.path={text}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=True,
                   env={"LMPLAY_CACHE": str(tmp_path / "cache")})
    assert f"warning: {text}: 1 bytes are not UTF-8 and are read as U+FFFD" in proc.stderr.splitlines()
    assert "U+FFFD" not in proc.stdout and f"tokenizing {text} (bytes)" in proc.stdout


def test_a_warning_of_datasets_or_the_hub_is_said_once(tmp_path):
    """Both libraries give their loggers a handler of their own: each warning came twice, bare and as `warning:`."""
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"Row {i} of the records."}) + "\n"
                                                for i in range(60)))
    (folder / "README.md").write_text("# A dataset card without its metadata block\n")
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1",
                   f"curriculum.stages.0.datasets=[{{path: {folder}}}]", f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path, check=True, env={"LMPLAY_CACHE": str(tmp_path / "cache")})
    said = [line for line in (proc.stdout + proc.stderr).splitlines() if "Repo card metadata block" in line]
    assert said == ["warning: Repo card metadata block was not found. Setting CardData to empty."], said


def test_a_typo_in_a_sweep_with_config_path_is_not_told_to_add_plus_plus(tmp_path):
    """--config-path skips the check that composes each job, so no job is known to have the key: the ++ advice
    launched the sweep, and every job failed on the typo."""
    proc = run_cli("lmplay.train", "-m", "--config-path", str(CONF_DIR), "exp=test_runner", "seed=1,2",
                   "optimizer.momentm=0.9", cwd=tmp_path)
    assert proc.returncode != 0 and "momentm" in proc.stderr and "++" not in proc.stderr


def test_help_with_a_misspelled_exp_is_one_line(tmp_path):
    """Hydra's help composes the config outside its own error report: a traceback, exit 1."""
    proc = run_cli("lmplay.train", "--help", "exp=test_runer", cwd=tmp_path)
    assert_one_line_error(proc, "exp=test_runer is unknown (did you mean test_runner?)")
    assert proc.returncode == 2


def test_dropping_a_stage_on_the_command_line_is_one_line(tmp_path):
    """`~curriculum.stages.1`: OmegaConf cannot delete a list item by index; Hydra's TypeError came as three
    chained tracebacks."""
    proc = run_cli("lmplay.train", "exp=test_runner", "curriculum=two_stage", "curriculum.path=x.txt",
                   "~curriculum.stages.1", cwd=tmp_path)
    assert_one_line_error(proc, "~curriculum.stages.1: Hydra cannot drop an item of a list (curriculum.stages)")
    assert "Traceback" not in proc.stderr and "curriculum=my_plan" in proc.stderr
    proc = run_cli("lmplay.train", "exp=test_runner", "~optimizer.betas.1", cwd=tmp_path)  # no plan to copy there
    assert_one_line_error(proc, "~optimizer.betas.1: Hydra cannot drop an item of a list (optimizer.betas) on the "
                                "command line; give the whole list (optimizer.betas=[...])")
    assert "my_plan" not in proc.stderr


def test_a_stage_the_composed_plan_lacks_is_one_line_that_names_the_plan(tmp_path):
    """A resume typing its two-stage plan's stage 1 against the default one-stage plan: 'list index out of range'."""
    proc = run_cli("lmplay.train", "exp=test_runner", "curriculum.stages.1.overrides.lr=2e-4", cwd=tmp_path)
    assert_one_line_error(proc, "curriculum.stages.1.overrides.lr=2e-4: the plan of curriculum=shakespeare (the "
                                "default) has no such stage or dataset", "typed with the keys it started with")
    proc = run_cli("lmplay.train", "exp=test_runner", "optimizer.betas.5=0.9", "curriculum.stages.0.epochs=2",
                   cwd=tmp_path)  # a stage that exists is not blamed for another key's index
    assert proc.returncode != 0 and "curriculum.stages.0.epochs=2:" not in proc.stderr


@pytest.mark.parametrize("overrides, message", [
    (["curriculum.stages.0.stepz=3"], "unknown key 'curriculum.stages.0.stepz' (did you mean steps?)"),
    (["curriculum.stages.0.datasets.0.text=3"], ("curriculum.stages.0.datasets.0.text: this entry of the plan has no "
                                                 "text yet; add it with +curriculum.stages.0.datasets.0.text=VALUE (an "
                                                 "entry that is a preset's name is replaced whole")),
    (["curriculum=text_file", "curriculum.stages.0.datasets.0={dataset: tinystories, path: x.txt}"],
     "replace the stage's list whole: 'curriculum.stages.0.datasets=[{dataset: NAME, path: ...}]'"),  # a mapping typed
])  # for a mapping entry merges: its hint was '{dataset: NAME, dataset: VALUE}'
def test_a_key_a_plans_entry_lacks_is_named_as_typed_with_its_fix(tmp_path, overrides, message):
    """Was `unknown key 'curriculum.stages[0].stepz' (did you mean curriculum.stages?)`."""
    assert_one_line_error(run_cli("lmplay.train", "exp=test_runner", *overrides, cwd=tmp_path), message)


def test_a_new_key_of_one_of_hydras_mappings_is_added_with_a_plus(tmp_path):
    proc = run_cli("lmplay.train", "hydra.job.env_set.LMPLAY_X=1", "exp=test_runner", cwd=tmp_path)
    assert_one_line_error(proc, "hydra.job.env_set.LMPLAY_X is a new key of the mapping hydra.job.env_set: add it "
                                "with +hydra.job.env_set.LMPLAY_X=VALUE")
    run_cli("lmplay.train", "+hydra.job.env_set.LMPLAY_X=1", "exp=test_runner", "max_steps=1", cwd=tmp_path,
            check=True)


def test_relative_data_paths_read_from_where_the_command_was_typed_under_hydra_job_chdir(tmp_path):
    """With hydra.job.chdir=true the job runs in its run dir; `curriculum.path=data.txt` was not found there."""
    (tmp_path / "data.txt").write_text("To be, or not to be, that is the question.\n\n" * 200)
    run_cli("lmplay.train", "exp=test_runner", "max_steps=2", "curriculum=text_file", "curriculum.path=data.txt",
            "curriculum.cache_dir=cache", "hydra.job.chdir=true", cwd=tmp_path, check=True)
    assert (tmp_path / "outputs" / "test_runner" / "model.lmp").is_file()
    assert (tmp_path / "cache").is_dir() and not (tmp_path / "outputs" / "test_runner" / "cache").exists()
    (tmp_path / "recs").mkdir()
    (tmp_path / "recs" / "a.jsonl").write_text("".join(json.dumps({"text": f"Row {i} of the records."}) + "\n"
                                                       for i in range(200)))
    run_cli("lmplay.train", "exp=test_runner", "max_steps=2", "curriculum=text_file", "curriculum.path=json",
            "+curriculum.stages.0.datasets.0.data_files=recs/*.jsonl", "run_name=records", "hydra.job.chdir=true",
            cwd=tmp_path, check=True)  # a builder's data_files, a glob: from the launch dir too


@pytest.mark.parametrize("override, message", [
    ("hydra.run.dir=sw/exp=a,lr=0.003", ("hydra.run.dir=sw/exp=a,lr=0.003: Hydra cannot read this value (mismatched "
                                         "input '=' expecting <EOF>); quote it whole, as in \"hydra.run.dir='sw/exp=a,"
                                         "lr=0.003'\"")),  # a sweep job's dir, to train it on: Hydra's three lines
    ("run_name=a=b", "run_name=a=b: Hydra cannot read this value"),  # named no key
    ("curriculum.path=x,y", ("curriculum.path=x,y: a comma makes a sweep, which needs -m; for one value that holds "
                             "commas, quote it: \"curriculum.path='x,y'\"; for a list, \"curriculum.path=[x,y]\"")),
])
def test_a_value_hydra_cannot_read_is_named_with_its_quoting(tmp_path, override, message):
    assert_one_line_error(run_cli("lmplay.train", "exp=test_runner", override, cwd=tmp_path), message)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "sw").exists()


@pytest.mark.parametrize("app, typed, message", [
    ("config", "lr=1e-3,2e-3", ('error: lr=1e-3,2e-3: a comma makes a sweep, which needs -m; for a list, '
                                '"lr=[1e-3,2e-3]"\n')),  # no quoting advice
    ("generate", "temperature=0.5,1.0", ("error: temperature=0.5,1.0: generate takes one value a setting (a comma "
                                         "lists several): run it once per value; for a list, "
                                         '"temperature=[0.5,1.0]"\n')),  # generate has no -m
])
def test_numbers_listed_without_a_sweep_are_not_told_to_be_quoted(capsys, app, typed, message):
    """"quote it: temperature='0.5,1.0'" is no fix for a number, and generate takes no -m."""
    with pytest.raises(SystemExit):
        ambiguous_value(f"Ambiguous value for argument '{typed}'\n", app)
    assert capsys.readouterr().err == message


@pytest.mark.parametrize("override", ["run_name=bob's run", 'run_name=say "hi"', "run_name=a,${x}", "run_name=`x`=y",
                                      "curriculum.path=it's,b", "run_name=a$b`c\\d!e", "run_name=x\\'y"])
def test_the_quoting_a_refusal_suggests_reads_back_the_value_when_pasted_into_bash(tmp_path, override):
    """The suggestion broke in bash for values holding ', ", $ or `: unbalanced, expanded, or quotes dropped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    message = run_cli("lmplay.train", "exp=test_runner", override, cwd=tmp_path).stderr.strip()
    suggested = re.search(r"(?:as in|quote it:) (.*?)(?: \(a value holding|; for a list)", message)[1]
    pasted = subprocess.run(["bash", "-c", f"printf %s {suggested}"], capture_output=True, text=True, check=True).stdout
    assert OverridesParser.create().parse_overrides([pasted])[0].value() == override.partition("=")[2]


def test_a_key_that_cannot_be_one_and_a_trailing_comma_are_named_and_a_config_dir_with_odd_characters_is_no_override(
        tmp_path):
    assert_one_line_error(run_cli("lmplay.train", "exp=test_runner", "model.num blocks=2", cwd=tmp_path),
                          "'model.num blocks' is no config key")
    assert_one_line_error(run_cli("lmplay.train", "-m", "exp=test_runner", "lr=1e-3,", cwd=tmp_path),
                          "lr=1e-3,: a value cannot end in a comma; drop it")
    for name in ("my conf's,x=y", "ends in \\"):
        odd = tmp_path / name
        odd.mkdir()  # was: "hydra.searchpath=[file://...]: Hydra cannot read this value", an override never typed
        assert_one_line_error(run_cli("lmplay.train", "--config-dir", str(odd), "exp=test_runner", "nosuchkey=1",
                                      cwd=tmp_path), "unknown key 'nosuchkey'")


def test_unknown_experiment(tmp_path, tiny_run_args):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, "exp=nope"), "exp=nope", "gpt2ish")


def test_an_error_only_hydra_finds_is_shown_not_swallowed(tmp_path, tiny_run_args):
    proc = run_cli("lmplay.train", *tiny_run_args, "hydra.job.chdir=maybe")
    assert proc.returncode != 0 and "hydra.job.chdir=maybe" in proc.stderr and "not a valid bool" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_what_hydra_writes_before_the_job_reaches_stderr_in_order(capsys):
    def app():
        print("a hydra warning", file=sys.stderr)
        HeldStderr().on_run_start(config=None)
        print("the job's own output", file=sys.stderr)

    run_hydra_app(app, ["exp=test_runner"], "config")
    assert capsys.readouterr().err == "a hydra warning\nthe job's own output\n"


def test_a_bad_batch_leaves_the_run_dir_untouched(tmp_path, tiny_run_args):
    run_cli("lmplay.train", *tiny_run_args, "max_steps=2", check=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    proc = run_cli("lmplay.train", *tiny_run_args, "mini_batch_size=0", "fresh=true")
    assert_one_line_error(proc, "mini_batch_size=0 must be >= 1")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before


def test_a_new_run_that_fails_on_bad_input_leaves_no_run_dir(tmp_path, tiny_run_args):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, "batch_size=0"), "batch_size=0")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad, needles", [
    (["curriculum=text_file"], ["curriculum.path=FILE"]),  # raised inside Hydra's instantiate of the curriculum
    (["curriculum.batching=foo"], ["curriculum.batching='foo'", "rows, packed"]),
    (["model.num_heads=3"], ["model settings", "embed_dim=32 is not divisible by num_heads=3", "attention.py"]),
    (["model.num_heads=0"], ["model settings", "num_heads=0 must be >= 1", "attention.py"]),  # a ZeroDivisionError
    (["model.embed_dim=2.5"], ["model.embed_dim=2.5 should be an integer"]),  # was torch's TypeError
    (["model.num_blocks=-1"], ["model.num_blocks=-1 must be >= 0"]),  # trained a blockless model in silence
    (["lr=-1"], ["optimizer settings", "Invalid learning rate: -1"]),
    (["grad_clip=-1.0"], ["grad_clip=-1.0 must be > 0 (or null: no clipping)"]),  # would flip every gradient
    (["optimizer.betas=[0.9]"], ["optimizer.betas=[0.9] should be two numbers"]),
    (["curriculum=base"], ["curriculum=base is unknown; available: bigpretrain"]),  # not a plan, and not listed
    (["curriculum.stages=???"], ["curriculum.stages is not set: the plan lists no stages"]),
    (["seed=null"], ["seed=null should be an integer"]),  # said seed=None
    (["optimizer=sgd", "optimizer.dampening=0.1"],  # was "unknown key", where --cfg job lists no torch parameters
     [("optimizer.dampening is a parameter of SGD that optimizer=sgd's file does not set: add it with "
       "+optimizer.dampening=VALUE")]),
    (["amp_dtype=fp8"], ["amp_dtype='fp8' is unknown; use bf16 or fp16"]),  # with amp off: saved with the run
    (["run_name="], ["run_name='' would put the run into outputs/; give it a name"]),
    (["run_name=null"], ["run_name=null would put the run into outputs/None"]),  # trained there
    (["exp=[test_runner]"], ["exp=[...], a list of configs merged, names no one experiment"]),  # an unloadable run
    (["hydra.run.dir="], ["hydra.run.dir='' would train into the current directory"]),  # an unset $VAR: it did
    (["++model.vocab_size=100"], ["model.vocab_size is not the model group's to set: it follows from the tokenizer"]),
    (["+model.context_len=32"], ["model.context_len is not the model group's to set: type context_len=..."]),
    (["model.vocab_size=100"], ["model.vocab_size is not the model group's to set: it follows from the tokenizer"]),
    (["model.embed_dim=0"], ["embed_dim=0 and num_heads=2 must be >= 1"]),  # trained, "accuracy 1.0000"
    (["context_len=-3"], ["context_len=-3 is too small for training; use at least 2"]),  # blamed model.context_len
    (["model.embed_dim=1180591620717411303424"], ["model settings were rejected", "Overflow"]),  # and 40 C++ frames
    (["optimizer.qqq=1"], ["unknown key 'optimizer.qqq'; see"]),  # "did you mean optimizer?"
    (["runner.valid=1"], ["unknown key 'runner.valid' (did you mean runner.validation_interval?)"]),  # grad_clip
    (["runner.max_steps=3"], ["unknown key 'runner.max_steps' (did you mean max_steps?)"]),  # a key of another group
    (["scheduler=constant", "scheduler.warmup_fraction=0.1"],
     ["scheduler.warmup_fraction is a key of scheduler=cosine/warmup/wsd"]),  # was a recursive-interpolation traceback
    (["run_name=a${b"], ["run_name=a${b: a run_name cannot hold a literal '${'"]),  # Hydra's traceback, a stray dir
    (["exp=unified_embed_test", "model.front_mul=0"], ["model settings were rejected: front_mul=0 must be >= 1"]),
    (["hydra.run.dir=r${nosuch}"], ["the run's dir cannot be named: Interpolation key 'nosuch' not found"]),  # as
])  # run_name=${nosuch}: Hydra's formatter failed on it, a traceback
def test_a_value_a_component_refuses_is_one_line(tmp_path, tiny_run_args, bad, needles):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, *bad), *needles)
    assert not (tmp_path / "run").exists()


def test_model_arguments_are_checked_by_their_annotations_optional_and_postponed_ones_too(tmp_path, monkeypatch):
    from lmplay.runner.basic import check_model_args

    (tmp_path / "postponed_idea.py").write_text(
        "from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from torch import Tensor\n\n\nclass Idea:\n    def __init__(self, expand: int = 1, gate: int | None = None,"
        " init: Tensor | None = None, scale: float = 1.0, context_len: int = 8) -> None: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from postponed_idea import Idea

    check_model_args(Idea, {"expand": 2, "gate": None, "init": None, "scale": 1, "context_len": -3})  # the run's key
    for args, message in (({"expand": -1}, "model.expand=-1 must be >= 0"),  # one unresolvable annotation (Tensor)
                          ({"gate": "abc"}, "model.gate='abc' should be an integer (or null)"),  # turned every check off
                          ({"gate": -3}, "model.gate=-3 must be >= 0"), ({"scale": "x"}, "should be a number")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            check_model_args(Idea, args)


@pytest.mark.parametrize("args, message", [({"num_blocks": -1}, "model.num_blocks=-1 must be >= 0"),
                                           ({"context_len": 0}, "context_len=0 must be >= 1"),
                                           ({"context_len": "64"}, "context_len='64' should be an integer")])
def test_build_model_checks_its_arguments_as_the_commands_do(args, message):
    """build_model(num_blocks=-1) built a model of no blocks, context_len=0 one that failed at its first sample,
    both of which then saved and loaded."""
    from lmplay.runner import get_runner

    with pytest.raises(ConfigError, match=re.escape(message)):
        get_runner("test_runner").build_model(**args)


@pytest.mark.parametrize("device, message", [
    ("gpu", "device='gpu' is no device torch knows; use auto, cpu, cuda, cuda:N or mps"),
    ("meta", "device='meta' is not one lmplay runs on"),
    pytest.param("cuda:0", "device=cuda:0 but no CUDA GPU is visible", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="a GPU is visible")),  # cuda:N takes one GPU, as in Python's load_model
])
def test_a_device_that_is_not_there_is_one_line(tmp_path, device, message):
    assert_one_line_error(run_cli("lmplay.train", "exp=test_runner", f"device={device}",
                                  f"hydra.run.dir={tmp_path / 'run'}"), message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("bad, needle", [
    ("fresh=no", "fresh='no' should be true or false"),  # as a string, 'no' would read as true and wipe the run
    ("amp=maybe", "amp='maybe' should be true or false"),
    ("max_steps=ten", "max_steps='ten' should be an integer (or null)"),
    ("batch_size=1.5", "batch_size=1.5 should be an integer"),
    ("grad_clip=abc", "grad_clip='abc' should be a number (or null)"),
    ("max_steps=-5", "max_steps=-5 must be >= 1"),
])
def test_a_top_level_value_of_the_wrong_kind_is_one_line_and_keeps_the_run(tmp_path, tiny_run_args, bad, needle):
    run_cli("lmplay.train", *tiny_run_args, "max_steps=2", check=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, bad), needle)
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before



def test_data_shorter_than_one_packed_window_is_one_line(tmp_path, tiny_run_args):
    """It used to train 0 steps and exit 0, as if done."""
    (tmp_path / "short.txt").write_text("a few words\n\nand a few more\n" * 20)
    proc = run_cli("lmplay.train", *tiny_run_args, "curriculum=text_file", f"curriculum.path={tmp_path / 'short.txt'}",
                   "curriculum.batching=packed", "curriculum.validation_fraction=0", "context_len=4096", "max_steps=3")
    assert_one_line_error(proc, "curriculum stage 'text_file' gives no training batch",
                          "context_len+1 = 4097 tokens", "curriculum.batching=rows")

def test_a_run_dir_that_cannot_be_made_is_one_line(tmp_path, tiny_run_args):
    (tmp_path / "a_file").write_text("not a directory")
    for where in ("hydra.run.dir", "hydra.sweep.dir"):
        proc = run_cli("lmplay.train", *(["-m"] if "sweep" in where else []), *tiny_run_args,
                       f"{where}={tmp_path / 'a_file' / 'run'}")
        assert_one_line_error(proc, f"{where}={tmp_path / 'a_file' / 'run'} cannot be made", "pick another")
    assert (tmp_path / "a_file").read_text() == "not a directory"
    (tmp_path / "outputs").mkdir()  # a name too long is ENAMETOOLONG inside an existing dir (ENOENT outside one)
    proc = run_cli("lmplay.train", "exp=test_runner", f"run_name={'x' * 300}", cwd=tmp_path)  # two tracebacks before
    assert_one_line_error(proc, "cannot be made (File name too long", "pick another")
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", f"hydra.sweep.dir=outputs/{'x' * 300}", cwd=tmp_path)
    assert_one_line_error(proc, "hydra.sweep.dir=outputs/xxx", "cannot be made (File name too long", "pick another")


def test_the_default_run_dir_is_checked_quietly(tmp_path):
    """outputs/<exp> comes from Hydra's runtime choices: the check resolves it with no warning."""
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", cwd=tmp_path, check=True)
    assert "Warning" not in proc.stderr and (tmp_path / "outputs" / "test_runner" / "model.lmp").is_file()
    (tmp_path / "outputs" / "test_runner2").write_text("a file")
    proc = run_cli("lmplay.train", "exp=test_runner", "run_name=test_runner2", "device=cpu", "max_steps=1", cwd=tmp_path)
    assert_one_line_error(proc, "hydra.run.dir=outputs/test_runner2 cannot be made")


def test_without_a_terminal_progress_comes_as_plain_lines(tiny_run_args):
    """A SLURM or nohup log has no progress bar: it gets the first step's line and every validation's."""
    proc = run_cli("lmplay.train", *tiny_run_args, "max_steps=20", "runner.validation_interval=80",
                   env={"TQDM_DISABLE": ""}, check=True)
    lines = proc.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if "validation loss" in line and not line.startswith("done")] == [
        "shakespeare step 0", "shakespeare step 10", "shakespeare step 20"]
    assert any(line.startswith("shakespeare step 1 loss ") and line.endswith("tok/s [1/20 to max_steps]")
               for line in lines)


def test_tqdm_disable_hides_the_bar_on_a_terminal_too(monkeypatch):
    """lmplay passed tqdm `disable=None` (hide where stderr is no terminal), and tqdm reads TQDM_DISABLE only for a
    setting not passed: on a terminal the bar showed anyway."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    shown = {}
    for env in ("", "1"):
        monkeypatch.setenv("TQDM_DISABLE", env)
        display = progress.Progress(shown=True)
        display.stage_started("s", 0, 10)
        shown[env] = not display.bar.disable
        display.stage_ended()
    assert shown == {"": True, "1": False}
    # a terminal of 0 columns (`script` in CI): tqdm drew nothing, and the run showed no progress, validations too
    monkeypatch.setenv("TQDM_DISABLE", "")
    monkeypatch.setattr(Terminal, "fileno", lambda self: 2, raising=False)
    monkeypatch.setattr(progress.os, "get_terminal_size", lambda fd: os.terminal_size((0, 0)))
    display = progress.Progress(shown=True)
    display.stage_started("s", 0, 10)
    assert display.plain and display.bar.disable
    display.stage_ended()


def test_a_plain_lines_eta_leaves_out_the_stages_first_step(tmp_path, monkeypatch, capsys):
    """The first step imports, opens files and warms up: an ETA timed on it was 10-20x too long, and the log's only
    one. On a fake clock the first step takes 100 s and the others 1 s each."""
    clock = [0.0]
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=12"], tmp_path)
    runner.display.plain = True
    real_step = runner.train_step

    def step(*args):
        clock[0] += 100.0 if clock[0] == 0 else 1.0
        return real_step(*args)
    monkeypatch.setattr(runner, "train_step", step)
    runner.train()
    lines = [line for line in capsys.readouterr().out.splitlines() if " loss " in line and "validation" not in line]
    assert [line.split(" loss ")[0] for line in lines] == ["shakespeare step 1", "shakespeare step 6"]
    assert lines[0].endswith("[1/12 to max_steps]") and lines[1].endswith("[6/12 to max_steps, ETA 00:06]")
    whole = progress.Progress(shown=False)  # max_steps caps the stage above ("12/12 of the stage" read as its end)
    whole.stage_started("shakespeare", 3, 225)
    assert whole.eta(3) == " [3/225 of the stage]"



def test_a_later_stage_validates_on_its_own_rows_at_its_start_and_tensorboard_charts_each_stage(tmp_path):
    """Stage b's first point was an interval in, and one curve (one TensorBoard chart) joined it to stage a's end,
    measured on other held-out rows: the change of data read as the model's. Now b validates before it trains,
    and each stage has its chart."""
    (tmp_path / "other.txt").write_text("".join(f"line {i} of another text, unlike the plays.\n" for i in range(400)))
    stages = (f"curriculum.stages=[{{name: a, datasets: [shakespeare], steps: 3}}, {{name: b, datasets: "
              f"[{{path: text, data_files: '{tmp_path / 'other.txt'}'}}], steps: 3}}]")
    runner = make_runner(["exp=test_runner", "device=cpu", stages, "runner.validation_interval=100"], tmp_path / "r")
    runner.train()
    records = [(r["stage"], r["step"], r["held_out_tokens"]) for r in runner.stats.records["validation"]]
    a_rows, b_rows = records[0][2], records[-1][2]
    assert a_rows != b_rows and records == [("a", 0, a_rows), ("a", 3, a_rows), ("b", 3, b_rows), ("b", 6, b_rows)]
    tb = EventAccumulator(str(tmp_path / "r" / "tb"))
    tb.Reload()
    tokens = [r["tokens"] for r in runner.stats.records["validation"]]
    assert [e.step for e in tb.Scalars("validation/a/loss")] == tokens[:2]
    assert [e.step for e in tb.Scalars("validation/b/loss")] == tokens[2:]
    assert "validation/loss" not in tb.Tags()["scalars"]

def test_help_lists_experiments_and_seed_flags_work(tmp_path):
    help_text = run_cli("lmplay.train", "--help", check=True).stdout
    for exp in ("gpt2ish", "gpt2ish_med", "gpt2ish_large", "test_runner"):
        assert exp in help_text
    proc = run_cli("lmplay.train", "--exp", "test_runner", "--device", "cpu", "--batch-size", "4",
                   "--mini-batch-size", "2", "max_steps=2", "context_len=32", f"hydra.run.dir={tmp_path / 'run'}",
                   check=True)
    assert "runner.batch_size=4" in proc.stdout and "runner.mini_batch_size=2" in proc.stdout
    command_line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("command line:"))
    assert "device=cpu" in command_line and "max_steps=2" in command_line  # run keys no component reads, too
    assert " context_len=32" in command_line and "model.context_len" not in proc.stdout  # as the user types it
    assert "model.vocab_size" not in proc.stdout  # it follows from the tokenizer: nothing to type


@pytest.mark.parametrize("module,command", [("lmplay.train", "lmp_trainer"), ("lmplay.generate", "lmp_generator")])
def test_the_shell_completion_hydra_help_names_is_one_that_works(module, command):
    """`python -m lmplay.train --hydra-help` said `eval "$(python .../src/lmplay/train.py -sc install=bash)"`, which
    died of an AttributeError (run as a file, lmplay/inspect.py hid Python's inspect); Hydra's script completes
    installed commands, not `python -m`."""
    help_text = run_cli(module, "--hydra-help", check=True).stdout
    assert f'eval "$({command} -sc install=bash)"' in help_text and ".py -sc" not in help_text
    typed = ["exp=test_runner", "max_steps=2"] if module == "lmplay.train" else ["checkpoint=x", "prompt=x"]
    assert run_cli(module, *typed, "--hydra-help", check=True).stdout == help_text  # a traceback, advising +exp=
    script = run_cli(module, "-sc", "install=bash", check=True).stdout
    assert script.rstrip().endswith(f"-F hydra_bash_completion {command}")
    bare = run_cli(module, "--shell-completion")  # Hydra's ValueError, a traceback
    assert bare.returncode == 2 and bare.stderr.strip() == (
        f"error: -sc (--shell-completion) takes one of install=SHELL, uninstall=SHELL, query=SHELL: "
        f'eval "$({command} -sc install=bash)" completes the command in bash')


def train_records(tmp_path, name: str, defer: bool, poison_after: int | None = None, log_interval: int = 1,
                  validation_interval: int = 40):
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=12", f"runner.validation_interval={validation_interval}",
                          "runner.save_interval=24", f"runner.log_interval={log_interval}"], tmp_path / name)
    runner.defer_reads = defer
    if poison_after is not None:
        real, calls = runner.model.loss_terms, {"n": 0}

        def poisoned(inputs, targets):
            calls["n"] += runner.model.training
            loss, correct = real(inputs, targets)
            return (loss * float("nan"), correct) if calls["n"] > poison_after else (loss, correct)

        runner.model.loss_terms = poisoned
    runner.train()
    strip = lambda records: [{k: v for k, v in r.items() if k not in ("tokens_per_second", "mfu")} for r in records]
    return strip(runner.stats.records["train"]), strip(runner.stats.records["validation"]), runner.model.state_dict()


def test_reading_the_loss_a_step_late_changes_nothing_but_timing(tmp_path):
    """On a GPU each step's loss is read after the next step is queued; records, validations, checkpoints
    and weights must be exactly those of reading it at once (the CPU path)."""
    now, late = train_records(tmp_path, "now", False), train_records(tmp_path, "late", True)
    assert now[0] == late[0] and len(now[0]) == 12
    assert now[1] == late[1]
    for key in now[2]:
        assert torch.equal(now[2][key], late[2][key])
    ckpt = checkpoint.load(tmp_path / "late" / "model.lmp")
    assert json.loads(ckpt["components"]["runner"]["state"]["records_json"])["train"][-1]["step"] == 12


def test_tokens_per_second_leaves_out_validation_saving_and_opening_the_event_file(tmp_path, monkeypatch):
    """A step right after a validation or save reported a rate 30-300x too low, and so did the step after the
    first record, whose flush imports tensorboard and opens the event file. The runner's clock is a fake one
    (no timing in tests): each reading advances it 1 s, and each validation, save or opening takes 1000 s."""
    clock = {"now": 0.0, "pauses": 0}

    def perf_counter() -> float:
        clock["now"] += 1.0
        return clock["now"]

    for module in (progress, speed):
        monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=perf_counter, monotonic=perf_counter))
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=12", "runner.validation_interval=24",
                          "runner.save_interval=40"], tmp_path)
    for name in ("validate", "save"):
        real = getattr(runner, name)

        def paused(*args, real=real):
            clock["now"] += 1000.0
            clock["pauses"] += 1
            return real(*args)
        monkeypatch.setattr(runner, name, paused)
    real_events = runner.stats._events

    def slow_open():
        if not runner.stats.events_open:
            clock["now"] += 1000.0
            clock["pauses"] += 1
        return real_events()
    monkeypatch.setattr(runner.stats, "_events", slow_open)
    runner.train()
    records = runner.stats.records["train"]
    tokens = [r["tokens"] for r in records]
    seconds = [(b - a) / r["tokens_per_second"] for a, b, r in zip([0, *tokens], tokens, records)]
    assert clock["pauses"] >= 6 and len(seconds) == 12  # validations at 0, 3, 6, 9, 12; saves at 5, 10, 12; opening
    assert max(seconds) < 1000, seconds  # no step's window holds a pause


def test_the_bar_shows_the_stages_last_step_and_makes_its_text_only_when_it_can_redraw(tmp_path, monkeypatch):
    """The postfix is made at most once a `bar.mininterval` (making it at each step cost ~10 us of a 7 ms step);
    as the stage ends, it shows the last step whatever the clock. The clock here stands still."""
    shown = []

    class Bar:
        disable, mininterval = False, 0.1

        def __init__(self, **kwargs) -> None:
            pass

        def set_postfix_str(self, text: str, refresh: bool = False) -> None:
            shown.append(text)

        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(progress, "tqdm", Bar)
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: 100.0))
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=12"], tmp_path)
    runner.display.plain = False  # as under a terminal
    runner.train()
    last = runner.stats.records["train"][-1]
    validated = [r for r in runner.stats.records["validation"] if r["step"] < 12][-1]  # the stage's closing one
    assert [text.split(" loss ")[0] for text in shown] == ["step 1", "step 12"]  # comes after the bar closes
    assert shown[-1].startswith(f"step 12 loss {last['loss']:.3f} val {validated['loss']:.3f} ")
    assert shown[-1].endswith(f"tok {last['tokens']:,}, {last['tokens_per_second']:,.0f} tok/s")
    # a resume stopped before its first record (log_interval): no record of its own, so none shown as if current
    shown.clear()
    resumed = make_runner(["exp=test_runner", "device=cpu", "max_steps=20", "runner.log_interval=100"], tmp_path,
                          checkpoint.load(tmp_path / "model.lmp"), overridden={"runner.log_interval", "max_steps"})
    resumed.display.plain = False
    step = resumed.train_step

    def stopped_at_15(*args):
        if resumed.runner_c.progress["step"] == 14:
            resumed.stop.signum = signal.SIGINT
        return step(*args)
    monkeypatch.setattr(resumed, "train_step", stopped_at_15)
    with pytest.raises(SystemExit):
        resumed.train()
    assert resumed.runner_c.progress["step"] == 15 and shown == []


def test_a_late_read_nan_still_stops_before_any_save_of_bad_weights(tmp_path):
    with pytest.raises(DivergedError, match="at step 5"):
        train_records(tmp_path, "nan", True, poison_after=8)  # 2 mini-batches a step: step 5 is the first bad one
    good = checkpoint.load(tmp_path / "nan" / "model.lmp")
    assert good["components"]["runner"]["state"]["progress"]["step"] == 3  # saves every 3 steps (24 samples)
    assert all(torch.isfinite(t).all() for t in good["components"]["model"]["state"]["weights"].values())


def test_a_nan_before_any_step_blames_the_models_forward_not_the_lr(tmp_path):
    """A model whose code makes NaN (here a hook) failed the step-0 validation with 'try a lower lr'."""
    for held_out, first in (("0.01", "validation loss became nan at step 0"), ("0", "loss became nan at step 1")):
        runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=2",
                              f"curriculum.validation_fraction={held_out}"], tmp_path / held_out)
        runner.model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        with pytest.raises(DivergedError, match=rf"{first} .*no optimizer step had changed the weights yet, so the "
                                                rf"model's forward makes it"):
            runner.train()


def test_a_nan_between_loss_reads_is_caught_by_the_next_save_which_writes_nothing_bad(tmp_path):
    """With log_interval=4 the loss is read at steps 4 and 8; the weights went NaN at step 5 and the save at step 6
    wrote them as model.lmp (and rotated the good one to .bak), and the error then called it the good one. Now
    the validation at step 5 stops the run, and without it the save at step 6 does."""
    with pytest.raises(DivergedError, match=r"validation loss became nan at step 5 .*model.lmp is the last good"):
        train_records(tmp_path, "nan", False, poison_after=8, log_interval=4)
    with pytest.raises(DivergedError, match=r"the weights are NaN or inf at step 6 .*model.lmp is the last good"):
        train_records(tmp_path, "nan_no_val", False, poison_after=8, log_interval=4, validation_interval=1000)
    good = checkpoint.load(tmp_path / "nan" / "model.lmp")
    assert good["components"]["runner"]["state"]["progress"]["step"] == 3
    assert all(torch.isfinite(t).all() for t in good["components"]["model"]["state"]["weights"].values())


def test_a_record_of_several_steps_holds_their_mean_and_the_last_steps_get_one(tmp_path):
    """log_interval=5 recorded step 5's and step 10's own loss as if it were the five steps', and nothing of
    steps 11-12."""
    each = train_records(tmp_path, "each", False)[0]
    five = train_records(tmp_path, "five", False, log_interval=5)[0]
    assert [r["step"] for r in five] == [5, 10, 12]
    for record, steps in zip(five, (each[0:5], each[5:10], each[10:12])):
        tokens = [b["tokens"] - a["tokens"] for a, b in zip([{"tokens": 0}, *each], each)][steps[0]["step"] - 1:
                                                                                          steps[-1]["step"]]
        assert record["loss"] == pytest.approx(sum(r["loss"] * t for r, t in zip(steps, tokens)) / sum(tokens))
        assert record["accuracy"] == pytest.approx(sum(r["accuracy"] * t for r, t in zip(steps, tokens)) / sum(tokens))


def test_a_last_record_after_a_validation_keeps_its_steps_speed(tmp_path):
    """With log_interval=3 and a validation at step 10, the record of steps 10 (after the loop) read 0 tokens/s:
    the validation had restarted the speed window at that step's tokens."""
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=10", "runner.log_interval=3"], tmp_path)
    runner.train()
    records = runner.stats.records["train"]
    assert [r["step"] for r in records] == [3, 6, 9, 10] and all(r["tokens_per_second"] > 0 for r in records)


def test_a_stages_batch_sizes_hold_in_that_stage_and_a_resume_inside_it_equals_the_whole_run(tmp_path):
    """design.md's own example of a stage override: another batch (and mini-batch) size in one stage."""
    from lmplay.runner import checkpoint

    stages = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 3, overrides: {batch_size: 4, "
              "mini_batch_size: 2}}, {name: b, datasets: [shakespeare], steps: 3}]")
    args = ["exp=test_runner", "device=cpu", "batch_size=8", "mini_batch_size=4", "scheduler=constant", stages,
            "runner.validation_interval=100000", "runner.save_interval=100000"]
    whole = make_runner(args, tmp_path / "whole")
    mini_batches, loss_terms = [], whole.model.loss_terms
    def counted(inputs, targets):
        if torch.is_grad_enabled():  # a training mini-batch, not a validation batch
            mini_batches.append(len(inputs))
        return loss_terms(inputs, targets)

    whole.model.loss_terms = counted
    whole.train()
    records = whole.stats.records["train"]
    assert [r["samples"] for r in records] == [4, 8, 12, 20, 28, 36]
    assert mini_batches == [2] * 6 + [4] * 6
    broken = make_runner([*args, "max_steps=2"], tmp_path / "broken")
    broken.train()
    resumed = make_runner(args, tmp_path / "broken", checkpoint.load(tmp_path / "broken" / "model.lmp"))
    resumed.train()
    drop = ("tokens_per_second", "mfu")
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed.stats.records["train"]] == \
        [{k: v for k, v in r.items() if k not in drop} for r in records]
    assert all(torch.equal(a, b) for a, b in zip(whole.model.state_dict().values(),
                                                  resumed.model.state_dict().values(), strict=True))


def test_a_stages_overrides_hold_in_that_stage_only_and_shadowing_a_typed_value_is_said(tmp_path, capsys):
    stages = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 3, overrides: {lr: 1e-4, weight_decay: 0.5}},"
              " {name: b, datasets: [shakespeare], steps: 3}]")
    runner = make_runner(["exp=test_runner", "device=cpu", "lr=1e-3", "weight_decay=0.1", "scheduler=constant", stages,
                          "runner.validation_interval=100000", "runner.save_interval=100000"], tmp_path / "run",
                         overridden={"lr"})
    optimizer = runner.optimizer_c.optimizer
    seen, step = [], optimizer.step
    optimizer.step = lambda *a, **k: (seen.append((optimizer.param_groups[0]["lr"],
                                                   optimizer.param_groups[0]["weight_decay"])), step(*a, **k))[1]
    runner.train()
    assert seen == [(1e-4, 0.5)] * 3 + [(1e-3, 0.1)] * 3
    out = capsys.readouterr().out
    assert "note: curriculum stage 'a' sets lr=0.0001 itself; what you typed for it applies to the stages" in out
    assert "stage 'b' sets" not in out


def test_a_stage_shadowing_a_typed_switch_writes_it_as_typed(tmp_path, capsys):
    stages = "curriculum.stages=[{name: a, datasets: [shakespeare], steps: 3, overrides: {include_prompts: false}}]"
    runner = make_runner(["exp=test_runner", "device=cpu", "include_prompts=true", stages], tmp_path / "run",
                         overridden={"include_prompts"})
    runner.note_stage_wins(runner.curriculum.stages[0])
    assert "sets include_prompts=false itself" in capsys.readouterr().out  # was Python's False


@pytest.mark.parametrize("value, shown", [("1e-3x", "lr='1e-3x'"), ("-1", "lr=-1"), ("1e400", "lr=inf"),
                                          ("true", "lr=True")])
def test_a_stages_bad_lr_is_refused_before_any_stage_trains(tmp_path, value, shown):
    """It used to be a TypeError, or training at a negative lr, when that stage began, after the others."""
    stages = f"curriculum.stages=[{{name: a, datasets: [shakespeare], steps: 2}}, {{name: b, datasets: [shakespeare], " \
             f"steps: 2, overrides: {{lr: {value}}}}}]"
    with pytest.raises(ConfigError, match=rf"curriculum stage 'b' overrides {re.escape(shown)}; it should be a number >= 0"):
        make_runner(["exp=test_runner", "device=cpu", stages], tmp_path / "run")


@pytest.mark.parametrize("value, shown", [("{include_prompts: 'false'}", "include_prompts='false' should be true or false"),
                                          ("{batch_size: '8'}", "batch_size='8' should be an integer"),
                                          ("{grad_clip: '1'}", "grad_clip='1' should be a number (or null)")])
def test_a_stages_setting_of_the_wrong_kind_is_refused_before_any_stage_trains(tmp_path, value, shown):
    """A quoted 'false' in a plan file trained on the prompts (a string is true); a quoted '8' was a TypeError."""
    stages = f"curriculum.stages=[{{name: a, datasets: [shakespeare], steps: 2}}, {{name: b, datasets: [shakespeare], " \
             f"steps: 2, overrides: {value}}}]"
    with pytest.raises(ConfigError, match=re.escape(f"curriculum stage 'b' overrides: {shown}")):
        make_runner(["exp=test_runner", "device=cpu", stages], tmp_path / "run")


@pytest.mark.parametrize("argv, message", [
    (["--max-stepz", "3", "exp=test_runner"], ("unknown flag --max-stepz; settings are key=value overrides, did you "
                                                "mean max_steps=3?")),  # was: like max_stepz=3, itself refused
    (["--max-stepz=3"], "unknown flag --max-stepz; settings are key=value overrides, did you mean max_steps=3?"),
    (["--warmup", "lr=1"], ("unknown flag --warmup; settings are key=value overrides, did you mean "
                            "warmup_fraction=VALUE?")),
    (["--amp-dtype", "fp16"], "unknown flag --amp-dtype; settings are key=value overrides, like amp_dtype=fp16"),
    (["--model", "m.lmp", "--temp", "0.5"], ("unknown flag --temp; settings are key=value overrides, did you mean "
                                             "temperature=0.5?")),
    (["--zzz"], "unknown flag --zzz; settings are key=value overrides, and zzz is none of them (--help lists them)"),
    (["--block-size", "256"], "did you mean context_len=256?"),  # nanoGPT's name; was batch_size=256, accepted
    (["--model", "m.lmp", "--block-size", "256"],  # generation's: was batch_size=256, accepted
     "and block_size is none of them: the model's context_len is the checkpoint's"),
    (["--model", "m.lmp", "--n-layer", "4"], "the model's model.num_blocks is the checkpoint's"),
    (["--model", "m.lmp", "--start", "Hi"], "did you mean prompt=Hi?"),  # nanoGPT's sample.py names
    (["--model", "m.lmp", "--start", "Once upon a time"],  # as it pastes back: was 4 prompts
     "did you mean \"prompt='Once upon a time'\"?"),
    (["--run-nam", "a,b"], "did you mean \"run_name='a,b'\"?"),  # was run_name=a,b: a sweep
    (["--out-dir", "run", "--model", "m.lmp"], "did you mean checkpoint=run?"),
    (["--model", "m.lmp", "--dtype", "bfloat16"],
     "nanoGPT's bfloat16 or float16 is amp=true amp_dtype=bf16 or fp16 here"),
    (["--dtype", "float32"], "its float32 amp=false"),  # both were amp_dtype=bfloat16, itself refused
    (["--embed-dim", "64"], "did you mean model.embed_dim=64?"),  # was: none of them
    (["--batching", "packed"], "did you mean curriculum.batching=packed?"),  # was batch_size=packed
    (["--exp-name", "x"], "did you mean exp=x?"),  # exp_name is a label, not a setting
    (["--model", "m.lmp", "--compile"], "and compile is none of them"),  # was prompt_file=VALUE
    (["-5"], "unknown flag -5; --help lists the settings"),  # was: like 5=VALUE
    (["--model", "m.lmp", "-5", "--max-len", "3"], "unknown flag -5; a prompt that starts with '-' is typed --prompt=-5"),
    (["--model", "m.lmp", "- hi"], "unknown flag - hi; a prompt that starts with '-' is typed \"--prompt=- hi\""),
    (["--", "-5"], "unknown flag --; --help lists the settings"),  # training takes no prompt
])
def test_an_unknown_flag_is_one_line_naming_it(capsys, argv, message):
    """Hydra's answer was its usage block, or "'3' is not an override", which never named the flag."""
    app = generate if "--model" in argv else train
    with pytest.raises(SystemExit) as stop:
        translate_flags(argv, app.SEED_FLAGS, app.SEED_SWITCHES, "generate" if app is generate else "config")
    said = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and said.startswith("error: unknown flag ") and message in said, said
    assert translate_flags(["--model", "m", "--", "-5", "a b", "null"], generate.SEED_FLAGS,
                           generate.SEED_SWITCHES, "generate") == [
        "checkpoint=m", "prompt='-5'", "prompt='a b'", "prompt='null'"]  # after --, every word is a prompt, as text
    assert translate_flags(["-m", "--cfg", "job", "--lr", "1e-3", "--amp"], train.SEED_FLAGS, train.SEED_SWITCHES,
                           "config") == \
        ["-m", "--cfg", "job", "lr=1e-3", "amp=true"]
    # the original lmp_trainer's other common flags, which were refused with hints naming no real key
    assert translate_flags(["--num-blocks", "8", "--validation-interval", "100", "--training-plan", "pretrain",
                            "--grad-clip", "1.0", "--compile-model", "--max-steps", "3"], train.SEED_FLAGS,
                           train.SEED_SWITCHES, "config") == ["model.num_blocks=8", "runner.validation_interval=100",
                                                    "curriculum=pretrain", "grad_clip=1.0", "compile=true", "max_steps=3"]


def test_a_switch_flag_typed_with_a_value_takes_it(capsys):
    """`--fresh=false` started the run over, `--amp=false` trained in bf16, `--greedy=false` decoded greedily: the
    value after = was dropped."""
    assert translate_flags(["--fresh=false", "--amp=False", "--compile=true"], train.SEED_FLAGS, train.SEED_SWITCHES,
                           "config") == ["fresh=false", "amp=false", "compile=true"]
    assert translate_flags(["--model", "m", "--greedy=false", "--sample=false"], generate.SEED_FLAGS,
                           generate.SEED_SWITCHES, "generate") == ["checkpoint=m", "do_sample=true", "do_sample=false"]
    with pytest.raises(SystemExit) as stop:
        translate_flags(["--amp=maybe"], train.SEED_FLAGS, train.SEED_SWITCHES, "config")
    assert stop.value.code == 2 and capsys.readouterr().err.strip() == (
        "error: --amp=maybe: a switch is true or false (--amp alone is amp=true)")


def test_a_run_dir_another_run_is_training_in_is_refused(tmp_path, tiny_run_args):
    """Two runs into one dir (a second terminal, a requeued job while the first still runs) wrote each over
    the other's checkpoint, stats.json and .hydra. The holder stands in for a training run."""
    run = tmp_path / "run"
    run_cli("lmplay.train", *tiny_run_args, "max_steps=2", check=True)
    assert not (run / ".lmplay.lock").exists()  # released when the run ends: a sweep's next job may use the dir
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    hold = f"from lmplay.files import hold_run_dir; from pathlib import Path; hold_run_dir(Path({str(run)!r})); " \
           f"print('held', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", hold],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": python_path()})
    try:
        assert holder.stdout.readline() == "held\n"
        proc = run_cli("lmplay.train", *tiny_run_args, "max_steps=4", "seed=2")
        assert_one_line_error(proc, f"{run} is in use by another run that is still training", "run_name=NAME")
        assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lmplay.lock"} == before
    finally:
        holder.communicate("\n")
    assert run_cli("lmplay.train", *tiny_run_args, "max_steps=4").returncode == 0  # the lock went with its process


def test_windows_with_no_answer_token_are_skipped_and_the_stage_still_trains_its_length(tmp_path, capsys):
    """Prompts longer than the window leave no target with include_prompts=false: the train records said loss 0.0
    (the best run of a sweep) while the optimizer stepped on weight decay alone; then such batches were skipped but
    counted as the stage's steps, so a stage of 147 estimated steps trained 58 and its cosine stopped at a third."""
    data = tmp_path / "long_prompts.jsonl"
    rows = [{"prompt": "why? " * 40 + str(i), "truth": f"ok {i}."} for i in range(30)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["exp=test_runner", "device=cpu", "curriculum=text_file", f"curriculum.path={data}", "scheduler=cosine",
            "include_prompts=false", "curriculum.batching=packed", "batch_size=2", "mini_batch_size=2"]
    runner = make_runner(args, tmp_path / "run")
    estimate = runner.curriculum.estimate_stage_steps(2, include_prompts=False)
    runner.train()
    assert "note: stage 'text_file' skipped" in capsys.readouterr().out
    train = runner.stats.records["train"]
    assert all(r["tokens"] > 0 and r["loss"] > 0 for r in train)
    assert train[-1]["step"] == estimate and train[-1]["lr"] == pytest.approx(runner.cfg.scheduler.min_lr)
    runner = make_runner([*args, "+curriculum.stages.0.steps=12", "~curriculum.stages.0.epochs"], tmp_path / "run2")
    runner.train()
    assert runner.stats.records["train"][-1]["step"] == 12  # a steps: stage trains its steps, each on some answer
    (tmp_path / "one.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows[:2]))  # one row trains
    runner = make_runner([*args, f"curriculum.path={tmp_path / 'one.jsonl'}"], tmp_path / "run3")
    with pytest.raises(ConfigError, match=r"stage 'text_file' gives no batch with a target token: .*context_len=64"):
        runner.train()


@pytest.mark.parametrize("overrides, message", [
    (["optimizer=sgd", "optimizer.betas=[0.9,0.9]"],  # the defaults' adamw has betas: it said "did you mean betas?"
     "unknown key 'optimizer.betas'; see `--cfg job` for every key (optimizer.betas is a key of optimizer=adam/adamw)"),
    (["scheduler=wsd", "scheduler.decay_fractio=0.3"],
     "unknown key 'scheduler.decay_fractio' (did you mean scheduler.decay_fraction?)"),
    (["scheduler.decay_fraction=0.3"], "(scheduler.decay_fraction is a key of scheduler=wsd)"),
    (["exp=nnmemory_test", "model.num_cell=8"], "unknown key 'model.num_cell' (did you mean model.num_cells?)"),
    (["exp=test_runner,nnmemory_test", "model.num_cells=8"],
     "(model.num_cells is a key of exp=nnmemory/nnmemory_mini/nnmemory_test) (in the sweep's job exp=test_runner)"),
    (["+lr=1e-3"], "error: lr is a key already: set it without the +, lr=VALUE"),  # Hydra's "Could not append"
    (["exp="], "error: exp= is unknown; available: attn_temp, "),  # "Could not find 'exp/'", no choices
])
def test_an_unknown_keys_hint_comes_from_the_groups_chosen(capsys, overrides, message):
    with pytest.raises(SystemExit):
        precheck(overrides, "config")
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_an_unknown_exp_behind_a_searchpath_that_cannot_be_imported_says_which(capsys, tmp_path):
    """Hydra skips a pkg:// search path it cannot import without a word: the user hunted a typo in exp=."""
    with pytest.raises(SystemExit):
        precheck(["hydra.searchpath=[pkg://no_such_lab.conf]", "exp=my_idea_test"], "config")
    err = capsys.readouterr().err
    assert "exp=my_idea_test is unknown" in err and "(hydra.searchpath pkg://no_such_lab.conf: no_such_lab is not " \
        "importable; pip install -e its project, or put the directory that holds it on PYTHONPATH)" in err
    with pytest.raises(SystemExit):  # a folder: Hydra skips one that is not there the same way
        precheck([f"hydra.searchpath=[file://{tmp_path / 'no_such_conf'}]", "exp=my_idea_test"], "config")
    assert f"(hydra.searchpath file://{tmp_path / 'no_such_conf'}: no such directory)" in capsys.readouterr().err


USER_CONFIGS = {  # a researcher's own group files, reached through hydra.searchpath
    "curriculum/broken.yaml": "_target_: lmplay.data.curriculum.Curriculum\nstages:\n  - name: one\n    datasets: [shakespeare\n",
    "curriculum/notarget.yaml": "stages:\n  - {name: one, datasets: [shakespeare], steps: 3}\n",
    "curriculum/badtarget.yaml": "_target_: lmplay.data.curriculum.Curriculumm\nstages:\n  - {name: one, datasets: [shakespeare], steps: 3}\n",
    "optimizer/badopt.yaml": "_target_: torch.optim.AdamWW\nlr: ${lr}\n",
    "exp/brokenexp.yaml": "# @package _global_\ndefaults:\n  - test_runner\nmodel:\n  num_blocks: [2\n",
}


@pytest.mark.parametrize("choice, message", [
    ("curriculum=broken", "curriculum/broken.yaml, line 5 is not valid YAML (expected ',' or ']', but got '<stream end>')"),
    ("exp=brokenexp", "exp/brokenexp.yaml, line 6 is not valid YAML"),
    ("curriculum=notarget", ("the curriculum config names no class: its file needs a _target_ line, like "
                             "_target_: lmplay.data.curriculum.Curriculum")),
    ("curriculum=badtarget", ("curriculum._target_='lmplay.data.curriculum.Curriculumm' cannot be imported "
                              "(AttributeError: module 'lmplay.data.curriculum' has no attribute 'Curriculumm')")),
    ("optimizer=badopt", "optimizer._target_='torch.optim.AdamWW' cannot be imported"),
])
def test_a_mistake_in_a_users_own_config_file_is_one_line(tmp_path, choice, message):
    """They were Hydra's or Python's tracebacks, exit code 1."""
    for name, text in USER_CONFIGS.items():
        (tmp_path / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "conf" / name).write_text(text)
    proc = run_cli("lmplay.train", "exp=test_runner", choice, "max_steps=2", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
                   f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("plan,entry", [("text_file", "curriculum.stages.0.datasets.0"),
                                        ("two_stage", "curriculum.stages.1.datasets.0")])
def test_the_text_column_override_the_error_names_works(tmp_path, tiny_run_args, plan, entry):
    """The error said `text=COLUMN`, which is no key, then always stage 0's key without a `+`: two_stage's file is
    stage 1's, whose entry has no `text:`."""
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"body": f"row {i} " + "words " * 30}) + "\n" for i in range(200)))
    args = [*tiny_run_args, f"curriculum={plan}", f"curriculum.path={data}", "max_steps=2"]
    proc = run_cli("lmplay.train", *args)
    assert proc.returncode == 2 and f"or on the command line: ++{entry}.text=COLUMN" in proc.stderr
    run_cli("lmplay.train", *args, f"++{entry}.text=body", check=True)


def test_a_ctrl_c_that_another_library_turned_into_its_own_error_still_reads_as_an_interruption():
    """OmegaConf caught a Ctrl-C in the middle of loading a config and raised ConfigKeyError instead: a traceback
    and exit code 1, where an interruption before training is one line and 130. Read by readable_config, it was said
    as the user's broken config ("put the key back"); a SIGTERM found this way was said as SIGINT, exit 130."""
    from omegaconf.errors import ConfigKeyError

    from lmplay.hydra_app import ctrl_c_in, readable_config
    from lmplay.runner.stopping import StoppedBeforeTraining

    def omegaconf_like(stop: KeyboardInterrupt):
        try:
            raise stop
        except KeyboardInterrupt:
            raise ConfigKeyError("'NoneType' object has no attribute '_invalidate_flags_cache'")

    with pytest.raises(ConfigKeyError) as e, readable_config():
        omegaconf_like(StoppedBeforeTraining(signal.SIGTERM))
    assert ctrl_c_in(e.value).signum == signal.SIGTERM
    assert ctrl_c_in(KeyboardInterrupt()) is not None and ctrl_c_in(ValueError("a bug")) is None
    with pytest.raises(ConfigError, match="the config cannot be read"), readable_config():  # the config's own
        raise ConfigKeyError("no such key")


def test_a_batch_size_mistake_is_said_before_the_data_is_tokenized(tmp_path, tiny_run_args):
    """Tokenizing a big dataset takes minutes; the error waited for it."""
    cache = tmp_path / "cache"
    proc = run_cli("lmplay.train", *tiny_run_args, "mini_batch_size=0", env={"LMPLAY_CACHE": str(cache)})
    assert proc.returncode == 2 and "mini_batch_size=0 must be >= 1" in proc.stderr
    assert "stage 'shakespeare'" not in proc.stdout and not any(cache.rglob("*"))


def test_held_out_rows_that_make_no_validation_batch_are_said_once(tmp_path, tiny_run_args):
    """One held-out row of ~24 tokens fills no packed window of 65: the run went on with `val -` and no word why."""
    data = tmp_path / "short.txt"
    data.write_text("\n\n".join(f"Line number {i} here." for i in range(60)))
    proc = run_cli("lmplay.train", *tiny_run_args, "curriculum=text_file", f"curriculum.path={data}",
                   "curriculum.batching=packed", "+curriculum.stages.0.datasets.0.row_chars=30", "max_steps=3",
                   check=True)
    assert proc.stdout.count("note: stage 'text_file' holds 1 rows out for validation, but they make no validation "
                             "batch (packed batching, context_len=64") == 1
    assert not json.loads((tmp_path / "run" / "stats.json").read_text())["validation"]


def test_a_typed_key_no_chosen_group_reads_is_said(tmp_path, tiny_run_args):
    """scheduler=constant warmup_fraction=0.25 trained at a constant lr, said nothing, and was labelled a warmup run."""
    proc = run_cli("lmplay.train", *tiny_run_args, "max_steps=2", "scheduler=constant", "warmup_fraction=0.25",
                   "curriculum=text_file", f"curriculum.path={REPO / 'README.md'}", check=True)
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note:") and "changes nothing" in line]
    assert "warmup_fraction=0.25" not in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()  # no label
    assert notes == [("note: warmup_fraction=0.25 changes nothing in this run: no config group it uses reads it (it "
                      "is read by scheduler=cosine, scheduler=warmup, scheduler=wsd)")]
    both = run_cli("lmplay.train", *tiny_run_args, "max_steps=2", "lr=1e-3", "optimizer.lr=2e-3", "fresh=true",
                   "amp_dtype=fp16", check=True)  # said that no group reads lr, naming optimizer=adamw, the group in
    assert ("note: lr=0.001 changes nothing in this run: optimizer.lr=0.002 replaces the ${lr} of its file (typed, or "
            "set by the exp file)") in both.stdout  # use, among them; amp_dtype=fp16 beside amp=false ran in fp32
    assert ("note: amp_dtype=fp16 changes nothing: amp=false runs in full precision (fp32); add amp=true for "
            "fp16") in both.stdout


def test_a_ctrl_c_outside_any_job_is_one_line_and_exit_130(capsys):
    """Between a sweep's jobs (Hydra composing the next one) or while torch loads at a sweep's start, a Ctrl-C
    printed a 60-line traceback ending in KeyboardInterrupt."""
    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run_hydra_app(interrupted, [], "config")
    assert e.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted before it started; nothing was saved"]


def test_a_ctrl_c_that_an_error_replaced_inside_hydra_is_still_the_stop(capsys):
    """A Ctrl-C landing in OmegaConf's clean-up while Hydra set a sweep's job up became an AttributeError, which
    Hydra reported as the job's error: "'NoneType' object has no attribute '_invalidate_flags_cache'", exit 1."""
    def replaced():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            print("'NoneType' object has no attribute '_invalidate_flags_cache'", file=sys.stderr)
            sys.exit(1)  # Hydra's run_and_report, after printing the exception

    with pytest.raises(SystemExit) as e:
        run_hydra_app(replaced, [], "config")
    assert e.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted before it started; nothing was saved"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_in_a_sweep_whose_jobs_run_elsewhere_says_they_may_not_have_saved(capsys, tmp_path):
    """joblib kills its workers on a Ctrl-C: the line said no job was training, and the summary kept their
    start (0 tokens)."""
    job = tmp_path / "seed=1"
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"job": 0, "overrides": ["seed=1"], "status": "started"}))

    def interrupted():
        launcher = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
        HeldStderr().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)},
                                                                   "launcher": {"_target_": launcher}}}))
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run_hydra_app(interrupted, [], "config")
    assert e.value.code == 130
    assert capsys.readouterr().err.strip().splitlines() == [(
        "interrupted: the jobs running in the launcher's workers save when the signal reaches them first, but the "
        "launcher may stop them before (joblib kills its workers): each resumes from its last checkpoint; to resume "
        f"it: python -m lmplay.train -m hydra.sweep.dir={tmp_path.resolve()}")]  # (its multirun.yaml adds overrides)
    assert "seed=1" in (tmp_path / "summary.md").read_text()  # rebuilt from the jobs' stats as they stand


def test_a_mistake_beside_a_config_dir_of_ones_own_is_named_not_blamed_on_its_exp(tmp_path):
    """The check composed lmplay's conf/ alone: `--config-dir u exp=my_tiny lrr=1` said exp=my_tiny is unknown."""
    (tmp_path / "u" / "exp").mkdir(parents=True)
    (tmp_path / "u" / "exp" / "my_tiny.yaml").write_text("# @package _global_\ndefaults:\n  - test_runner\n")
    for flags in (["--config-dir", str(tmp_path / "u")], [f"--config-dir={tmp_path / 'u'}"]):
        proc = run_cli("lmplay.train", *flags, "exp=my_tiny", "lrr=1", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip() == (
            "error: unknown key 'lrr' (did you mean lr?); see `--cfg job` for every key"), proc.stderr
    (tmp_path / "u2" / "curriculum").mkdir(parents=True)  # and beside a searchpath typed too: both are searched
    (tmp_path / "u2" / "curriculum" / "mine.yaml").write_text((REPO / "conf" / "curriculum" / "shakespeare.yaml").read_text())
    proc = run_cli("lmplay.train", "-cd", str(tmp_path / "u"), f"hydra.searchpath=[file://{tmp_path / 'u2'}]",
                   "exp=my_tiny", "curriculum=mine", "lrr=1", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown key 'lrr'" in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists()
    (tmp_path / "u2" / "curriculum" / "old.yaml").write_text("defaults: [base, _self_]\nstages: []\n")  # as copied
    proc = run_cli("lmplay.train", f"hydra.searchpath=[file://{tmp_path / 'u2'}]", "curriculum=old", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(  # before base.yaml left the plans' group
        "start its defaults with /curriculum_base@_here_: `defaults: [/curriculum_base@_here_, _self_]`"), proc.stderr


def test_an_exp_file_without_its_global_header_is_an_error_not_the_baseline_under_its_name(tmp_path):
    """Without `# @package _global_` Hydra put the file's keys under `exp:`: the run trained its defaults' model."""
    (tmp_path / "u" / "exp").mkdir(parents=True)
    (tmp_path / "u" / "exp" / "wide.yaml").write_text("defaults:\n  - test_runner\nmodel:\n  embed_dim: 48\n")
    proc = run_cli("lmplay.train", "--config-dir", str(tmp_path / "u"), "exp=wide", "max_steps=1", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: exp=wide: its file sets model.embed_dim under `exp:`, where nothing reads them; make "
        "`# @package _global_` its first line, as in lmplay's conf/exp/*.yaml"), proc.stderr
    assert not (tmp_path / "outputs" / "wide" / "model.lmp").exists()
    sweep = run_cli("lmplay.train", "--config-dir", str(tmp_path / "u"), "-m", "exp=test_runner,wide", "max_steps=1",
                    cwd=tmp_path)  # before the sweep starts: its jobs failed one by one in a new sweep dir
    assert sweep.returncode == 2 and sweep.stderr.strip().startswith("error: exp=wide: its file sets model.embed_dim")
    globbed = run_cli("lmplay.train", "--config-dir", str(tmp_path / "u"), "-m", "exp=glob(wid*)", "max_steps=1",
                      cwd=tmp_path)  # a glob over one's own files too: Hydra lists its values only as it sweeps
    assert globbed.returncode == 2 and globbed.stderr.strip().startswith("error: exp=wide: its file sets")
    assert not (tmp_path / "multirun").exists()
    (tmp_path / "u" / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nmax_steps: 1\n")  # a primary
    proc = run_cli("lmplay.train", "--config-dir", str(tmp_path / "u"), "-cn", "mine", "-m", "exp=test_runner",
                   "seed=1,2", cwd=tmp_path)  # config of one's own: the sweep's check cannot compose it; Hydra does
    assert proc.returncode == 0 and "Cannot find primary config" not in proc.stderr, proc.stderr
    (tmp_path / "u" / "exp" / "same.yaml").write_text("defaults:\n  - test_runner\n")  # defaults alone: fine
    assert run_cli("lmplay.train", "--config-dir", str(tmp_path / "u"), "exp=same", "max_steps=1",
                   cwd=tmp_path).returncode == 0


def test_a_data_path_typed_without_a_plan_that_reads_it_is_a_note(tmp_path, tiny_run_args):
    """curriculum.path=FILE without curriculum=text_file trained on Shakespeare, and the start report listed the
    path as applied."""
    proc = run_cli("lmplay.train", *tiny_run_args, "max_steps=1", f"curriculum.path={REPO / 'README.md'}", check=True)
    assert (f"note: curriculum.path={REPO / 'README.md'} changes nothing in this run: no config group it uses reads "
            f"it (it is read by curriculum=text_file, curriculum=two_stage)") in proc.stdout
    assert "curriculum.path" not in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", "curriculum=text_file",
                   f"curriculum.path={REPO / 'README.md'}", f"hydra.run.dir={tmp_path / 'b'}", check=True)
    assert "changes nothing" not in proc.stdout


def test_a_failed_start_removes_only_the_dirs_it_made(tmp_path):
    """The clean-up of a failed start removed empty dirs the user had made: outputs/, or the hydra.run.dir named."""
    (tmp_path / "outputs").mkdir()
    (tmp_path / "mine").mkdir()
    for run_dir in ("outputs/r2", "mine", "new/nested/run"):
        proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "runner.log_interval=0",
                       f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert_one_line_error(proc, "log_interval=0 must be >= 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "outputs"]
    assert not list((tmp_path / "outputs").iterdir())


def test_a_cache_that_cannot_be_written_is_one_line_and_leaves_no_run_dir(tmp_path):
    """A cache dir that exists but cannot take the tokens (read-only, full, a size limit; here its tokenized/ is a
    file) was a PermissionError/OSError traceback, and left an empty run dir behind."""
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "tokenized").write_text("")
    run = tmp_path / "run"
    proc = run_cli("lmplay.train", "exp=test_runner", "max_steps=2", f"hydra.run.dir={run}",
                   env={"LMPLAY_CACHE": str(tmp_path / "cache")})
    assert_one_line_error(proc, "could not write the tokenized", "(File exists)", "LMPLAY_CACHE=DIR")
    assert proc.returncode == 1 and not run.exists()


def test_a_run_dir_turned_read_only_keeps_its_one_line_error(tmp_path, monkeypatch):
    """The save's clear error was followed by a PermissionError traceback from removing the run dir's lock file."""
    from lmplay.files import LOCK_NAME, hold_run_dir, release_run_dir

    run = tmp_path / "run"
    run.mkdir()
    hold_run_dir(run)
    unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda p, *a, **k: (_ for _ in ()).throw(PermissionError(13, "read-only"))
                        if p.name == LOCK_NAME else unlink(p, *a, **k))
    release_run_dir(run)
    monkeypatch.undo()
    hold_run_dir(run)  # released all the same: the dir can be trained into again
    release_run_dir(run)


def test_a_ctrl_c_as_torch_loads_numpy_stops_the_run(tmp_path):
    """torch's C code imports numpy and swallowed a Ctrl-C landing there (a moment after launch, 4 runs in 12): the
    run went on as if nothing was pressed, or failed at its first step on a half-imported numpy."""
    env = {"LMPLAY_PROBE_CTRL_C_IN": "numpy",
           "PYTHONPATH": python_path(Path(__file__).parent / "probes")}
    commands = {"lmplay.train": ["exp=test_runner", "max_steps=3", f"hydra.run.dir={tmp_path / 'run'}"],
                "lmplay.generate": ["checkpoint=nosuch", "prompt=Hi"],  # its torch loads before the checkpoint's read
                "lmplay.train -m": ["-m", "exp=test_runner", "max_steps=3", "seed=1,2",  # a job's torch._dynamo
                                    f"hydra.sweep.dir={tmp_path / 'sweep'}"]}
    for command, args in commands.items():
        proc = run_cli(command.split()[0], *args, env=env)
        said = proc.stderr.strip().splitlines()
        assert proc.returncode == 130 and said == ["interrupted before it started; nothing was saved"], (command, said)
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_a_mini_batch_that_does_not_divide_a_rank_s_share_is_noted_for_compile(tmp_path):
    """Each step then ends with a shorter mini-batch, a second shape that compile=true compiles again: said at the
    start with a mini_batch_size that divides it."""
    def note(batch_size: int, mini_batch_size: int, ranks: int = 1) -> str | None:
        return uneven_mini_batch(RunnerSettings(batch_size=batch_size, mini_batch_size=mini_batch_size), ranks)

    uneven = note(10, 4)
    assert "ends with a mini-batch of 2" in uneven and "mini_batch_size=2 divides it" in uneven
    assert note(8, 4) is None and note(16, 4, ranks=2) is None
    assert note(7, 3).endswith("batch_size=6 or 9 divides by it")  # not 7 mini-batches of 1
    assert "the 5 samples a rank takes a step" in note(10, 4, ranks=2)
    assert "ends with a mini-batch of 2" in start_report(make_runner(
        ["exp=test_runner", "device=cpu", "compile=true", "batch_size=10", "mini_batch_size=4"], tmp_path))


def test_a_validation_of_part_of_the_held_out_rows_says_so_once(tmp_path):
    """The start said "37 held out", then each validation measured 727 tokens: the first windows of two of them."""
    proc = run_cli("lmplay.train", "exp=test_runner", "max_steps=12", "runner.validation_interval=40",
                   f"hydra.run.dir={tmp_path / 'a'}", check=True)
    notes = [line for line in proc.stdout.splitlines() if "rows it holds out" in line]
    assert notes == [("note: validation of stage 'shakespeare' measures 727 tokens (runner.validation_batches=2 "
                      "batches of 8) of the 37 rows it holds out, which make more; a larger runner.validation_batches "
                      "measures more of them (each validation then takes longer)")]
    whole = run_cli("lmplay.train", "exp=test_runner", "max_steps=2", "runner.validation_batches=1000",
                    f"hydra.run.dir={tmp_path / 'b'}", "curriculum.batching=packed", check=True)
    assert "which make more" not in whole.stdout
    dropped = [line for line in proc.stdout.splitlines() if "of the tokens of the rows it reads" in line]
    assert dropped == [("note: stage 'shakespeare' trains 14% of the tokens of the rows it reads: in rows batching, "
                        "what of a row does not fit in its batch (batch_size=8) is dropped; batching: packed trains "
                        "all of them (curriculum.batching=packed)")]  # README: "~13%" of the embedded corpus
    assert "of the tokens of the rows it reads" not in whole.stdout


def test_printed_data_keeps_text_and_escapes_only_control_characters(tmp_path):
    """A checkpoint's experiment name may hold escape sequences; an ordinary prompt, run name or label holds emoji,
    Persian with its zero-width joiners, or a no-break space, which must reach the terminal (and a pasted hint) as
    they are: escaping every non-printable character changed a suggested command's value."""
    from lmplay.cli import printable
    from lmplay.files import exclusive

    text = "café\u00a0x 👨\u200d👩\u200d👧 می\u200cخواهم 日本\u3000語\ttab\nline"
    assert printable(text) == text
    assert printable("x\x1b[2J\x1b]0;pwn\x07") == "x\\x1b[2J\\x1b]0;pwn\\x07"
    (tmp_path / ".summary.lock").symlink_to(tmp_path / "created")  # a sweep dir from elsewhere
    with exclusive(tmp_path / ".summary.lock"):
        pass
    assert not (tmp_path / "created").exists()


def test_a_stage_s_own_uneven_mini_batch_is_noted_for_compile_too(tmp_path):
    """The note read the run's batch_size alone: a stage of batch_size 7 under mini_batch_size 2 said nothing."""
    stages = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 2}, {name: b, datasets: [shakespeare], "
              "steps: 2, overrides: {batch_size: 7}}]")
    runner = make_runner(["exp=test_runner", "device=cpu", "compile=true", "batch_size=8", "mini_batch_size=2", stages],
                         tmp_path)
    notes = uneven_mini_batches(runner)
    assert len(notes) == 1 and notes[0].startswith("note: stage 'b': mini_batch_size=2 does not divide the 7 samples")
    assert notes[0] in start_report(runner)


def test_an_auxiliary_loss_returned_third_trains_but_the_recorded_loss_stays_the_cross_entropy(tmp_path):
    """An aux term (a z-loss) could only be added into loss_terms' summed loss, and stats.json, validation and the
    plots then compared that sum with the baseline's cross-entropy (0.31 "worse" at step 0 for a z-loss of 0.01)."""
    def run(name, shape):
        runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=3", "runner.validation_interval=16"],
                             tmp_path / name)
        real = runner.model.loss_terms

        def terms(inputs, targets):
            loss, correct = real(inputs, targets)
            return {"plain": (loss, correct), "third": (loss, correct, 0.5 * loss),
                    "folded": (1.5 * loss, correct)}[shape]

        runner.model.loss_terms = terms
        runner.train()
        return runner.stats.records, runner.model.state_dict()

    (plain, _), (third, weights), (folded, folded_weights) = run("plain", "plain"), run("third", "third"), \
        run("folded", "folded")
    assert third["validation"][0]["loss"] == plain["validation"][0]["loss"]  # step 0: the same model, the same CE
    assert folded["validation"][0]["loss"] == pytest.approx(1.5 * plain["validation"][0]["loss"])
    assert all(torch.equal(weights[k], folded_weights[k]) for k in weights)  # it trains on the sum all the same
    assert third["train"][0]["loss"] == plain["train"][0]["loss"]


def test_loss_terms_of_the_wrong_shape_says_what_it_must_return(tmp_path):
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=1"], tmp_path)
    runner.model.loss_terms = lambda inputs, targets: (inputs.float().sum(), inputs.sum(), 0.0)
    with pytest.raises(TypeError, match=r"^GPT2ish.loss_terms returned \(Tensor, Tensor, float\); it must return"):
        runner.train()
    runner.model.loss_terms = lambda inputs, targets: (inputs.float().sum(), inputs.sum(), inputs.float())
    with pytest.raises(TypeError, match=r"^GPT2ish.loss_terms returned an auxiliary loss of shape \[\d+, \d+\]; return "
                                        r"it summed to one number"):
        runner.train()
    runner.model.loss_terms = lambda inputs, targets: {"loss": inputs.float().sum(), "correct": inputs.sum()}
    with pytest.raises(TypeError, match=r"^GPT2ish.loss_terms returned a dict of 2; it must return tensors \(summed "
                                        r"cross-entropy, correct count\), or \(summed cross-entropy, correct count, "
                                        r"summed auxiliary loss\)"):
        runner.train()


def test_a_nan_auxiliary_loss_stops_the_run_as_diverged(tmp_path):
    """A NaN aux term trained NaN into the weights while the recorded cross-entropy stayed finite, unsaid."""
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=3"], tmp_path)
    real = runner.model.loss_terms
    runner.model.loss_terms = lambda inputs, targets: (*real(inputs, targets), torch.tensor(float("nan")))
    with pytest.raises(DivergedError, match=r"loss became nan at step 1"):
        runner.train()


def test_a_stop_signal_during_a_stages_end_save_stops_before_the_next_stage_validates(tmp_path, monkeypatch):
    """The next stage's start validation ran first, which a scheduler's grace time (or torchrun's 30 s) may not
    leave it: its resume records it."""
    stages = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 2}, "
              "{name: b, datasets: [shakespeare], steps: 2}]")
    runner = make_runner(["exp=test_runner", "device=cpu", stages], tmp_path / "r")
    real_save = runner.save

    def save(name="model.lmp"):
        if name == "model.a.lmp":
            runner.stop.signum = signal.SIGTERM  # as the signal's handler sets it
        return real_save(name)
    monkeypatch.setattr(runner, "save", save)
    with pytest.raises(SystemExit):
        runner.train()
    assert [(r["stage"], r["step"]) for r in runner.stats.records["validation"]] == [("a", 0), ("a", 2)]


@pytest.mark.parametrize("args", [["hydra.run.dir='~/runs/x'"], ["hydra.run.dir=~/runs/x"],
                                  ["-m", "hydra.sweep.dir='~/sw'", "seed=1"]])
def test_a_run_or_sweep_dir_under_a_tilde_is_refused_not_made_as_a_dir_named_tilde(tmp_path, args):
    """Hydra does not expand ~: `'hydra.run.dir=~/runs/x'` (the quoting the error for the unquoted form suggested)
    trained into ./~/runs/x, a directory named '~' in the current one."""
    proc = run_cli("lmplay.train", *args, "exp=test_runner", "max_steps=1", "device=cpu", cwd=tmp_path)
    key = args[-1 if args[0] != "-m" else 1].split("=")[0]
    assert_one_line_error(proc, f"{key}=~/")
    assert proc.returncode == 2 and "Hydra does not expand ~" in proc.stderr and "$HOME/" in proc.stderr
    assert list(tmp_path.iterdir()) == []
