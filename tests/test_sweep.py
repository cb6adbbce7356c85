"""Sweeps: each job in its own run dir, a summary at the end; the basic, joblib and submitit launchers."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from conftest import REPO, compose_config, python_path, run_cli
from lmplay.config import CONF_DIR
from lmplay.errors import ConfigError
from lmplay.hydra_app import WritableOutputDir, job_dir_name
from lmplay.overrides import single_runs
from lmplay.sweep import BASIC_SWEEPER, SweepSummary, earlier_wall_time, repeated_configs, summarize, write_summary
from lmplay.sweep_start import SweepStart, check_swept_values, shared_job_dir

TINY = ["max_steps=2", "device=cpu"]


ONE_SWEEP = pytest.mark.xdist_group("sweep_2x2")  # the tests of one sweep, on one worker: it is made once


@pytest.fixture(scope="module")
def sweep_2x2(tmp_path_factory) -> tuple[Path, object]:
    sweep = tmp_path_factory.mktemp("sweep") / "2x2"
    proc = run_cli("lmplay.train", "-m", "exp=test_runner,value_norm_test", "seed=1,2", *TINY,
                   f"hydra.sweep.dir={sweep}", check=True)
    return sweep, proc


@ONE_SWEEP
def test_2x2_sweep_gives_4_run_dirs_and_a_4_row_summary(sweep_2x2):
    sweep, proc = sweep_2x2
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(jobs) == 4
    assert jobs == ["exp=test_runner,max_steps=2,seed=1", "exp=test_runner,max_steps=2,seed=2",
                    "exp=value_norm_test,max_steps=2,seed=1", "exp=value_norm_test,max_steps=2,seed=2"]
    for job in jobs:
        run = sweep / job
        assert (run / "stats.json").is_file() and (run / "model.lmp").is_file() and (run / ".hydra").is_dir()
        assert json.loads((run / "job.json").read_text())["status"] == "completed"
    summary = json.loads((sweep / "summary.json").read_text())
    rows = summary["jobs"]
    assert [r["job"] for r in rows] == [0, 1, 2, 3]
    assert [(r["experiment"], [o for o in r["overrides"] if o.startswith("seed")]) for r in rows] == [
        ("test_runner", ["seed=1"]), ("test_runner", ["seed=2"]),
        ("value_norm_test", ["seed=1"]), ("value_norm_test", ["seed=2"])]
    for r in rows:
        assert r["status"] == "completed" and r["steps"] == 2 and r["tokens"] > 0
        assert r["final_validation_loss"] > 0 and r["wall_time_s"] > 0
    # the seeds of each experiment are summarised together
    assert [g["jobs"] for g in summary["over_seeds"]] == [[0, 1], [2, 3]]
    table = (sweep / "summary.md").read_text()
    assert table.count("| completed |") == 4 and "## Over seeds" in table
    assert "| job | experiment | overrides | final val loss | tokens | wall time | status |" in proc.stdout


@ONE_SWEEP
def test_jobs_never_share_a_checkpoint(sweep_2x2):
    """Each job trained from scratch in its own dir: different seeds, different data order, different losses."""
    sweep, proc = sweep_2x2
    assert "resuming" not in proc.stdout
    first = {p.name: json.loads((p / "stats.json").read_text())["train"][0]["loss"] for p in sweep.glob("exp=*")}
    for exp in ("test_runner", "value_norm_test"):  # the seed reached each job: its data order and init differ
        assert first[f"exp={exp},max_steps=2,seed=1"] != first[f"exp={exp},max_steps=2,seed=2"]


@ONE_SWEEP
def test_sweep_summary_can_be_rebuilt_by_hand(sweep_2x2, tmp_path):
    sweep, _ = sweep_2x2
    (sweep / "summary.json").unlink()
    proc = run_cli("lmplay.sweep", str(sweep), check=True)
    assert proc.stdout.count("| completed |") == 4
    assert len(json.loads((sweep / "summary.json").read_text())["jobs"]) == 4
    proc = run_cli("lmplay.sweep", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a sweep dir" in proc.stderr
    runs = tmp_path / "outputs"  # plain run dirs: the summary would call every run a sweep job "not finished"
    shutil.copytree(next(sweep.glob("exp=*")), runs / "a_run")
    proc = run_cli("lmplay.sweep", str(runs))
    assert proc.returncode == 2 and "is not a sweep dir: it has no multirun.yaml" in proc.stderr
    assert sorted(p.name for p in runs.iterdir()) == ["a_run"]


@ONE_SWEEP
def test_the_summary_is_readable_by_whoever_the_umask_allows(sweep_2x2, tmp_path):
    """A shared cluster's colleagues can read the summary (mkstemp's 0600 kept them out), and no temp file stays."""
    sweep, _ = sweep_2x2
    old = os.umask(0o022)
    try:
        write_summary(sweep)
    finally:
        os.umask(old)
    assert stat.S_IMODE((sweep / "summary.json").stat().st_mode) == 0o644
    assert not [p.name for p in sweep.iterdir() if p.name.endswith(".tmp")]


@ONE_SWEEP
def test_plotting_a_sweep(sweep_2x2, tmp_path):
    sweep, _ = sweep_2x2
    proc = run_cli("lmplay.plot", str(sweep), "--train", "--out", str(tmp_path / "plots"), check=True)
    pngs = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert "validation_loss.png" in pngs and "validation_loss_vs_baseline.png" in pngs and "train_loss.png" in pngs
    assert all((tmp_path / "plots" / p).stat().st_size > 10_000 for p in pngs)
    assert "test_runner (baseline)" in proc.stdout and "value_norm_test" in proc.stdout


def test_a_ctrl_c_between_jobs_leaves_the_summary_as_the_jobs_stand(tmp_path, monkeypatch):
    """A Ctrl-C inside a job's last summary refresh left its row 'started' (0 tokens) though its job.json said
    completed: the basic launcher's interrupted line wrote no summary."""
    from lmplay import hydra_app

    job = tmp_path / "exp=a,seed=1"
    job.mkdir()
    (job / "job.json").write_text(json.dumps({"job": 0, "experiment": "a", "overrides": ["exp=a", "seed=1"],
                                              "status": "completed", "wall_time_s": 1.0}))
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["exp=a", "seed=1"]}}}))
    (tmp_path / "summary.md").write_text("| 0 | a | seed=1 | - | 0 | - | started |\n")
    monkeypatch.setattr(hydra_app, "_sweep_dirs", [tmp_path])
    monkeypatch.setattr(hydra_app, "_jobs_elsewhere", [False])
    assert hydra_app.interrupted().startswith("interrupted between jobs, or before training started; to resume it")
    assert "| completed |" in (tmp_path / "summary.md").read_text()


def test_a_second_ctrl_c_while_the_stopped_sweeps_summary_is_written_leaves_no_traceback(tmp_path, monkeypatch):
    """It raised KeyboardInterrupt out of the first one's handling: a traceback, and no line saying how to resume."""
    from lmplay import hydra_app, sweep

    def write_summary(sweep_dir: Path) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal is handled here, if it is not ignored
        (sweep_dir / "summary.md").write_text("written")

    monkeypatch.setattr(sweep, "write_summary", write_summary)
    monkeypatch.setattr(hydra_app, "_sweep_dirs", [tmp_path])
    monkeypatch.setattr(hydra_app, "_jobs_elsewhere", [False])
    handler = signal.getsignal(signal.SIGINT)
    try:
        line = hydra_app.interrupted()
    except KeyboardInterrupt:
        pytest.fail("the second Ctrl-C ended the first one's handling")
    assert line.startswith("interrupted between jobs") and (tmp_path / "summary.md").read_text() == "written"
    assert signal.getsignal(signal.SIGINT) is handler


def test_summary_reads_whatever_jobs_left_behind(tmp_path):
    """Finished, failed, killed and nested job dirs; launcher logs are not jobs."""
    def job(name: str, record: dict | None, val_loss: float | None = None) -> None:
        (tmp_path / name).mkdir(parents=True)
        if record is not None:
            (tmp_path / name / "job.json").write_text(json.dumps(record))
        if val_loss is not None:
            trained = 900 if "seed=2" in name else 700  # seed=2 was stopped before validating again
            stats = {"train": [{"step": 3, "samples": 24, "tokens": trained, "loss": 3.0}],
                     "validation": [{"step": 3, "samples": 24, "tokens": 700, "loss": val_loss, "accuracy": 0.2,
                                     "held_out_tokens": 1000 if "seed=1" in name else 4000}]}
            (tmp_path / name / "stats.json").write_text(json.dumps(stats))

    job("0_exp=a,seed=1", {"job": 0, "experiment": "a", "overrides": ["exp=a", "seed=1"], "status": "completed",
                           "wall_time_s": 12.0}, 2.5)
    job("1_exp=a,seed=2", {"job": 1, "experiment": "a", "overrides": ["exp=a", "seed=2"], "status": "started"}, 2.7)
    job("2_curriculum.path=/data/x.txt,exp=b", {"job": 2, "experiment": "b", "status": "failed",
                                           "overrides": ["exp=b"], "error": "ConfigError: no"})
    job(".submitit/123", None, 1.0)
    job("3_exp=c", None, 2.9)
    (tmp_path / "3_exp=c" / "job.json").write_text('{"job": 3, "stat')  # damaged by hand: a row, not a traceback
    job("4_exp=a,seed=3", {"job": 4, "experiment": "a", "overrides": ["exp=a", "seed=3"], "status": "completed"}, 2.6)
    (tmp_path / "4_exp=a,seed=3" / "stats.json").write_text('{"train": [')  # so is this one's stats.json
    rows = summarize(tmp_path)
    assert [(r["job"], r["status"], r["final_validation_loss"]) for r in rows] == [
        (0, "completed", 2.5), (1, "started", 2.7), (2, "failed", None), (3, "unknown", 2.9), (4, "completed", None)]
    assert "job.json is unreadable" in rows[3]["error"] and "stats.json cannot be read" in rows[4]["error"]
    for damage, what in (('{"job": "x", "overrides": 5, "status": [1], "wall_time_s": 12.0}', "job, overrides, status"),
                         ('{"a": ' * 100_000 + "1" + "}" * 100_000, "unreadable")):  # "overrides": 5 was a TypeError
        (tmp_path / "3_exp=c" / "job.json").write_text(damage)
        row = summarize(tmp_path)[3]
        assert (row["status"], row["final_validation_loss"]) == ("unknown", 2.9) and what in row["error"]
    assert row["wall_time_s"] is None and write_summary(tmp_path)
    (tmp_path / "3_exp=c" / "job.json").write_text('{"job": 3, "overrides": 5, "wall_time_s": 12.0}')
    assert summarize(tmp_path)[3]["wall_time_s"] == 12.0  # what stands is read
    shutil.rmtree(tmp_path / "3_exp=c")
    text = write_summary(tmp_path)["markdown"]
    assert "| exp=a | 0 (left out: 1, 4) | 2.5000 | - |" in text  # over the completed seeds with a loss
    assert "Lowest final validation loss of the completed jobs: job 0 (a, seed=1): 2.5000." in text
    shutil.rmtree(tmp_path / "4_exp=a,seed=3")
    text = write_summary(tmp_path)["markdown"]
    assert "| 0:00:12 |" in text and "failed: ConfigError: no" in text
    assert "| 2.7000 (at 700 tokens) | 900 |" in text and "| 2.5000 | 700 |" in text  # where each loss was measured
    assert "Note: the jobs validated on different held-out text (1,000 to 4,000 tokens)" in text
    assert ("Of 3 jobs, 1 failed (the error is in its row) and 1 did not finish ('started': running, or killed; "
            "'interrupted': stopped by a signal, after saving what it had trained; 'not started': not reached yet).") \
        in text
    assert "resumes each job from its own checkpoint (a job that failed at its values, or diverged, does so" in text
    assert json.loads((tmp_path / "summary.json").read_text())["over_seeds"][0]["jobs"] == [0, 1]


def test_seeds_added_after_the_settings_changed_are_noted_in_the_mean_over_seeds(tmp_path):
    """`seed=1,2` then `seed=1,2,3` after the exp file's lr changed: the third seed trained at another lr, and the
    summary averaged the three as one configuration without a word."""
    for job, lr in ((0, 0.003), (1, 0.003), (2, 0.001)):
        run = tmp_path / f"exp=a,seed={job + 1}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["exp=a", f"seed={job + 1}"]))
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(
            {"seed": job + 1, "run_name": run.name, "lr": lr, "optimizer": {"lr": lr}, "runner": {"log_interval": job}}))
        (run / "job.json").write_text(json.dumps({"job": job, "experiment": "a", "status": "completed",
                                                  "overrides": ["exp=a", f"seed={job + 1}"]}))
        record = {"step": 2, "samples": 16, "tokens": 2000, "loss": 3.0 + job, "accuracy": 0.2}
        (run / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))
    summary = write_summary(tmp_path)
    assert summary["over_seeds"][0]["differing_settings"] == {"optimizer.lr": ["0.003", "0.001"]}
    assert ("Note: the jobs of exp=a did not all train with the same settings (optimizer.lr 0.003/0.001): jobs added "
            "after the settings or the model's code changed are averaged with the first as more seeds of them; a "
            "sweep dir of their own keeps them apart.") in summary["markdown"]
    shutil.rmtree(tmp_path / "exp=a,seed=3")
    assert "Note: the jobs of" not in write_summary(tmp_path)["markdown"]  # seeds and log cadence differ as they may
    for job, digest in ((1, "a" * 16), (2, "b" * 16)):  # seed 2 trained after the idea's block.py was edited
        code = {"experiments.a.model": "c" * 16, "experiments.a.block": digest}
        torch.save({"components": {"model": {"state": {"code": code}}}}, tmp_path / f"exp=a,seed={job}" / "model.lmp")
    assert ("did not all train with the same settings (code of experiments.a.block aaaaaaaaaa/bbbbbbbbbb): jobs "
            "added after the settings or the model's code changed") in write_summary(tmp_path)["markdown"]
    code = {"experiments.a.model": "c" * 16, "lmplay.modules.block": "d" * 16}  # a base class's file, which a
    torch.save({"components": {"model": {"state": {"code": code}}}}, tmp_path / "exp=a,seed=2" / "model.lmp")
    code = {"experiments.a.model": "c" * 16}  # checkpoint saved before base classes had digests does not name
    torch.save({"components": {"model": {"state": {"code": code}}}}, tmp_path / "exp=a,seed=1" / "model.lmp")
    assert "Note: the jobs of" not in write_summary(tmp_path)["markdown"]


def test_a_sweep_s_summary_leaves_out_a_sweep_and_a_run_inside_its_dir(tmp_path):
    """hydra.sweep.dir=nest over nest/lr (a sweep of its own) averaged that sweep's seeds as its own; a sweep into
    outputs/ summarized every run there as its unfinished jobs."""
    def job(path: Path, seed: int, mode: str = "MULTIRUN") -> None:
        (path / ".hydra").mkdir(parents=True)
        (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["exp=a", f"seed={seed}"]))
        (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"mode": mode}}))
        if mode == "MULTIRUN":
            (path / "job.json").write_text(json.dumps({"job": 0, "experiment": "a", "status": "completed",
                                                       "overrides": ["exp=a", f"seed={seed}"]}))
        record = {"step": 2, "samples": 16, "tokens": 2000, "loss": 3.0 + seed, "accuracy": 0.2}
        (path / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))

    job(tmp_path / "exp=a,seed=3", 3)
    job(tmp_path / "lr" / "exp=a,seed=1", 1)
    job(tmp_path / "lr" / "exp=a,seed=2", 2)
    (tmp_path / "lr" / "multirun.yaml").write_text("hydra: {}\n")
    job(tmp_path / "single", 4, mode="RUN")
    summary = write_summary(tmp_path)
    assert [row["dir"] for row in summary["jobs"]] == ["exp=a,seed=3"], summary["jobs"]


def test_an_error_of_several_lines_is_one_line_in_the_sweep_s_table(tmp_path):
    """A bug's own message of several lines (now that such a sweep reaches its table) broke the table's row."""
    run = tmp_path / "exp=a"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["exp=a"]))
    (run / "job.json").write_text(json.dumps({"job": 0, "experiment": "a", "status": "failed", "overrides": ["exp=a"],
                                              "error": "RuntimeError: shapes do not fit\n  while doing it\n| x |"}))
    rows = [line for line in write_summary(tmp_path)["markdown"].splitlines() if line.startswith("| 0 |")]
    assert rows == ["| 0 | a | - | - | 0 | - | failed: RuntimeError: shapes do not fit while doing it / x / |"]


def test_a_job_trained_on_by_hand_is_labelled_by_its_run_and_unequal_lengths_are_noted(tmp_path):
    """Job 1 was launched with max_steps=20, then trained on to 25 (hydra.run.dir=its dir): the summary said
    max_steps=20 and named it lowest, at more tokens than the others, without a word."""
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": ["exp=a", "seed=1,2", "max_steps=20"]}}}))
    for job, steps, loss in ((0, 20, 3.3), (1, 25, 3.1)):
        run = tmp_path / f"exp=a,max_steps=20,seed={job + 1}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["exp=a", f"seed={job + 1}", f"max_steps={steps}"]))
        (run / "job.json").write_text(json.dumps({"job": job, "experiment": "a", "status": "completed",
                                                  "overrides": ["exp=a", f"seed={job + 1}", "max_steps=20"]}))
        record = {"step": steps, "samples": 8 * steps, "tokens": 1000 * steps, "loss": loss, "accuracy": 0.2}
        (run / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))
    text = write_summary(tmp_path)["markdown"]
    assert "| 1 | a | seed=2 max_steps=25 | 3.1000 |" in text
    assert "not started" not in text and "| 2 |" not in text  # still the sweep's job 1, not a new job beside it
    again = tmp_path / "exp=a,max_steps=25,seed=2"  # the same seed at 25 steps again, in a job of its own
    shutil.copytree(tmp_path / "exp=a,max_steps=20,seed=2", again)
    (again / "job.json").write_text(json.dumps({"job": 2, "experiment": "a", "status": "completed",
                                                "overrides": ["exp=a", "seed=2", "max_steps=25"]}))
    # the sweep ran seeds 1 and 2 of max_steps=20; one trained on to 25 leaves each length one seed: both stay in
    # "Over seeds" (they went unsaid), each a row of its own with no spread
    assert [(g["overrides"], g["jobs"]) for g in summarize_groups(tmp_path)] == [
        (["exp=a", "max_steps=20"], [0]), (["exp=a", "max_steps=25"], [1])]
    assert "| exp=a max_steps=25 | 1 | 3.1000 | - |" in write_summary(tmp_path)["markdown"]
    assert (f"Note: the completed jobs' final validations are at different token counts (20,000 to 25,000): a lower "
            f"loss can be a longer run's; `python -m lmplay.plot {tmp_path}` compares them at equal tokens.") in text
    # the same length, and seeds whose rows differ by 7%: no note (it fired where the lowest loss was the shorter's);
    # the same number of samples of twice the context (twice the tokens): a note
    cases = ((["max_steps=20"], 21_500, False), (["max_steps=20", "context_len=64"], 43_000, True))
    for overrides, tokens, note in cases:
        for job in (0, 1):
            run = next(tmp_path.glob(f"exp=a,max_steps=20,seed={job + 1}"))
            record = {"step": 20, "samples": 160, "tokens": tokens if job == 0 else 20_000, "loss": 3.3 - job * 0.2,
                      "accuracy": 0.2}
            typed = ["exp=a", f"seed={job + 1}", *(overrides if job == 0 else ["max_steps=20"])]
            (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(typed))
            (run / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))
        shutil.rmtree(again, ignore_errors=True)
        assert ("different token counts" in write_summary(tmp_path)["markdown"]) == note, overrides



def test_the_summary_names_the_configuration_of_the_lowest_mean_over_seeds(tmp_path):
    """Its one ranking line named the luckiest seed's configuration (a's seed 1), where b's mean is lower."""
    for job, (exp, seed, loss) in enumerate((("a", 1, 3.0), ("a", 2, 3.4), ("b", 1, 3.1), ("b", 2, 3.2))):
        run = tmp_path / f"exp={exp},seed={seed}"
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"exp={exp}", f"seed={seed}"]))
        (run / "job.json").write_text(json.dumps({"job": job, "experiment": exp, "status": "completed",
                                                  "overrides": [f"exp={exp}", f"seed={seed}"]}))
        record = {"step": 20, "samples": 160, "tokens": 20_000, "loss": loss, "accuracy": 0.2}
        (run / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))
    text = write_summary(tmp_path)["markdown"]
    assert "Lowest final validation loss of the completed jobs: job 0 (a, seed=1): 3.0000." in text
    assert ("Lowest mean final validation loss over seeds: exp=b (jobs 2, 3): 3.1500, std 0.0707; a single job's "
            "lowest can be a lucky seed's.") in text
    assert "differ in size" not in text  # runs from before stats.json kept the count
    for exp, size in (("a", 891_904), ("b", 1_090_816)):
        for seed in (1, 2):
            stats = tmp_path / f"exp={exp},seed={seed}" / "stats.json"
            stats.write_text(json.dumps({**json.loads(stats.read_text()), "parameters": size}))
    assert ("Note: the jobs' models differ in size (891,904 to 1,090,816 parameters): a lower loss can be the larger "
            "model's") in write_summary(tmp_path)["markdown"]


def summarize_groups(sweep: Path) -> list[dict]:
    return repeated_configs(summarize(sweep))


def test_a_sweep_is_checked_one_value_at_a_time():
    runs = single_runs(["exp=a,b", "seed=range(1,3)", "lr=1e-3", "x=glob(*)"])
    assert runs == [["exp=a", "seed=1", "lr=1e-3"], ["exp=b", "seed=1", "lr=1e-3"], ["exp=a", "seed=2", "lr=1e-3"]]
    assert single_runs(["lr=1e-3", "+y=2"]) == [["lr=1e-3", "+y=2"]]


@pytest.mark.parametrize("sweep, message", [
    (["exp=test_runner,nope"], "exp=nope is unknown; available: "),
    (["exp=test_runner", "optimizer.lrr=1e-3,2e-3"], "unknown key 'optimizer.lrr' (did you mean optimizer.lr?)"),
    (["exp=test_runner", "hydra.job.config.override_dirname.exclude_keys=[seed,fresh,device]"],
     "jobs 0 and 1 of this sweep would share the dir "),  # job 1 resumed job 0's run as its own, exit 0
    (["exp=glob(*_tes)"], "exp=glob(*_tes) matches no choice, so the sweep has no jobs"),  # exit 0, its dir left
    (["exp=test_runner", "batch_size=8,abc"],  # found after jobs 0 and 1 trained; its dir left behind
     ("batch_size='abc' should be an integer (in the sweep's job with exp=test_runner batch_size=abc seed=1 "
      "max_steps=2 device=cpu)")),  # the job's exp too: a sweep over experiments said which one only by leaving it out
    (["exp=test_runner", "lr=1e-3,${nope}"], "the config cannot be read: Interpolation key 'nope' not found"),
    (["exp=test_runner", "curriculum=text_file", "curriculum.path=README.md,/no/such/file.txt"],  # job 1's, said
     "curriculum stage 'text_file': dataset file /no/such/file.txt does not exist"),  # after job 0 trained
])
def test_a_bad_value_in_a_sweep_is_one_line_before_any_job_runs(tmp_path, sweep, message):
    proc = run_cli("lmplay.train", "-m", *sweep, "seed=1,2", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "sweep").exists()


def sweep_check(tmp_path: Path, typed: list[str], hydra: list[str] = ()) -> str | None:
    """What the sweep's start says of its jobs' dirs, given the config its callbacks get: composed without its swept
    values, which it lists."""
    cfg = compose_config(["exp=test_runner", f"hydra.sweep.dir={tmp_path}", *hydra])
    cfg.hydra.overrides.task = ["exp=test_runner", *typed]
    return shared_job_dir(cfg)


def test_jobs_whose_dirs_would_be_one_or_another_sweep_s_are_refused_before_any_job(tmp_path, capsys):
    """A job resumes what its dir holds: with seed left out of the dirs' names, or dirs numbered by job, a job trained
    on from another's checkpoint, labelled as itself, and the sweep exited 0."""
    excluded = ["hydra.job.config.override_dirname.exclude_keys=[seed,fresh,device]"]
    said = sweep_check(tmp_path, ["lr=1e-3", "seed=1,2"], excluded)
    assert said.startswith(f"jobs 0 and 1 of this sweep would share the dir {tmp_path}/exp=test_runner,lr=0.001 "
                           f"(they differ in seed), and job 1 would train on from job 0's checkpoint"), said
    assert sweep_check(tmp_path, ["lr=1e-3", "seed=1,2"]) is None  # named by every override
    assert sweep_check(tmp_path, ["fresh=false,true"]) is None  # one run, trained on and then started over
    said = sweep_check(tmp_path, ["device=cpu,auto"])  # a key left out of the names by default: one dir, job 0 never
    assert said.startswith("jobs 0 and 1 of this sweep would share the dir ") and "(they differ in device)" in said
    assert sweep_check(tmp_path, ["seed=1,2"], ["hydra.sweep.subdir=s${seed}"]) is None  # named by a swept value
    numbered = ["hydra.sweep.subdir=${hydra.job.num}"]
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "job.json").write_text(json.dumps({"overrides": ["exp=test_runner", "max_steps=2", "lr=0.002"]}))
    said = sweep_check(tmp_path, ["max_steps=3", "lr=1e-3,2e-3"], numbered)
    assert said is None  # job 1 is the earlier lr=0.002 job, trained on for longer (max_steps may change)
    said = sweep_check(tmp_path, ["max_steps=3", "lr=2e-3,1e-3"], numbered)
    assert said == (f"job 1 (max_steps=3 lr=0.001) would resume {tmp_path}/1, which holds the run of another job "
                    f"(max_steps=2 lr=0.002): give this sweep a hydra.sweep.dir of its own, or name each job's dir by "
                    f"its overrides (hydra.sweep.subdir's default)")
    (tmp_path / "model.lmp").write_bytes(b"a run's checkpoint")
    with pytest.raises(SystemExit) as e:
        SweepStart().on_multirun_start(compose_config(["exp=test_runner", f"hydra.sweep.dir={tmp_path}"]))
    assert e.value.code == 2 and f"hydra.sweep.dir={tmp_path} holds a run (model.lmp), not a sweep" in \
        capsys.readouterr().err  # whose resume was refused from then on: "a sweep's dir, not a run's"
    with pytest.raises(SystemExit) as e:  # an unset $VAR: the sweep took the current dir and every run below it
        SweepStart().on_multirun_start(compose_config(["exp=test_runner", "hydra.sweep.dir="]))
    assert e.value.code == 2 and "hydra.sweep.dir='' would sweep into the current directory" in capsys.readouterr().err


@pytest.mark.parametrize("typed, params, message", [
    (["optimizer.lr=1e-3,abc"], {},
     "optimizer.lr='abc' should be a number (in the sweep's job with exp=test_runner optimizer.lr=abc"),
    (["optimizer.betas=0.9,0.95"], {}, "optimizer.betas=0.9 should be a list, like optimizer.betas=[0.9,...]"),
    (["lr=1e-3,${nope}"], {}, "Interpolation key 'nope' not found (at lr)"),
    (["batch_size=8,0"], {},  # after job 0 trained
     "batch_size=0 must be >= 1 (in the sweep's job with exp=test_runner batch_size=0"),
    (["tokenizer=bytes,gpt3"], {}, "tokenizer='gpt3' is unknown; use one of: gpt2, bytes (in the sweep's job"),
    ([], {"batch_size": "8,abc"}, "batch_size='abc' should be an integer"),  # an exp file's hydra.sweeper.params
    (["batch_size=8"], {"batch_size": "8,abc"}, None),  # the command's value replaces the exp file's sweep
    (["optimizer=sgd,rmsprop", "optimizer.momentum=0.5,abc"], {},  # a key the default optimizer has not
     ("optimizer.momentum='abc' should be a number (in the sweep's job with exp=test_runner optimizer=sgd "
      "optimizer.momentum=abc")),
    (["optimizer=adamw,sgd", "seed=range(1,3)", "run_name=r${seed}", "+x.y=1,2", "optimizer.lr=1e-3,2"], {}, None),
    (["curriculum.stages.0.epochs=0.5,1", "weight_decay=0,0.1"], {}, None),  # `epochs: 1` in the file takes 0.5
    (["runner.validation_interval=16,5e3"], {}, "runner.validation_interval=5000.0 should be an integer"),
    (["curriculum.cache_dir=${oc.env:LMPLAY_UNSET_IN_TESTS}/c,/tmp/c"], {}, None),  # the job's variable (env_set)
    (["optimizer.lr='${oc.decode:${oc.env:LMPLAY_UNSET_IN_TESTS}}',0.002"], {}, None),  # quoted, as numbers need
    (["curriculum.validation_seed=1,2.5"], {}, "curriculum.validation_seed=2.5 should be an integer"),
    ([], {"optimizer": "sgd,nope"}, None),  # a choice that is not there: Hydra's own start says so, in its words
    # values only the components refuse, as the model, optimizer and schedule are built (on the meta device)
    (["model.num_heads=2,5"], {}, "embed_dim=32 is not divisible by num_heads=5"),
    (["optimizer.lr=3e-3,-1"], {}, "Invalid learning rate: -1"),
    (["scheduler.warmup_fraction=0,2"], {}, "scheduler.warmup_fraction=2 must be in [0, 1) (in the sweep's job"),
    (["optimizer=sgd,adamw", "++optimizer.momentum=0.9"], {}, "optimizer: unknown key 'momentum'"),
    (["optimizer.fused=true,false", "model.num_blocks=1,3"], {}, None),  # fused=true, which the meta device refuses
    (["seed=1,2", "device=cuda"], {}, None),  # a SLURM sweep's GPUs are not its login node's
    (["seed=1,2", "device=cdua"], {}, "device='cdua' is no device torch knows"),  # but its name is checked
    # a swept alias that no job reads: the jobs trained alike, told apart by a note in each job's log
    (["scheduler=constant", "warmup_fraction=0.1,0.5"], {}, "warmup_fraction is swept, but no job of the sweep reads"),
    (["lr=1e-3,2e-3", "optimizer.lr=5e-3"], {}, "lr is swept, but no job of the sweep reads it"),
    (["scheduler=constant,cosine", "warmup_fraction=0.1,0.5"], {}, None),  # the cosine jobs read it
])
def test_each_value_of_a_sweep_is_checked_before_any_job(capsys, typed, params, message):
    """Found as their jobs started, after the jobs before them had trained, each leaving a dir named by the value."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):  # Hydra's loader composes group choices
        cfg = compose("config", ["exp=test_runner"], return_hydra_config=True)
        cfg.hydra.overrides.task = ["exp=test_runner", *typed]
        cfg.hydra.sweeper.params = params
        if message is None:
            check_swept_values(cfg)
            return
        with pytest.raises(SystemExit):
            check_swept_values(cfg)
    assert message in capsys.readouterr().err


def test_hydra_s_own_config_subdir_is_refused_before_hydra_writes_it(tmp_path, capsys):
    """hydra.output_subdir=.hydra: Hydra wrote .hydra/ before the run, left it behind a run refused for bad input, and
    replaced a resumed run's overrides.yaml (its label) before lmplay read the earlier commands' overrides."""
    with pytest.raises(SystemExit) as e:
        WritableOutputDir().on_run_start(compose_config(["exp=test_runner", "hydra.output_subdir=.hydra",
                                                         f"hydra.run.dir={tmp_path / 'run'}"]))
    assert e.value.code == 2 and "hydra.output_subdir=.hydra: lmplay writes the run's .hydra/ itself" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_job_that_fails_at_its_start_lets_the_others_run_and_ends_the_sweep_with_one_line(tmp_path):
    """An empty data file passes the sweep's checks (so the sweep starts: its data is read by its job, and a
    missing file is said before any job) and fails as its job starts: no traceback, exit 1, and the sweep ends with
    its table and one error line (Hydra's own ending repeated the error between two lines of its own: "Error
    executing job with overrides", and the HYDRA_FULL_ERROR hint)."""
    (tmp_path / "ok.txt").write_text("A paragraph of text to train on.\n\n" * 200)
    (tmp_path / "empty.txt").write_text("")
    sweep = tmp_path / "sweep"
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", "curriculum=text_file",
                   f"curriculum.path={tmp_path / 'empty.txt'},{tmp_path / 'ok.txt'}", *TINY, f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 2 jobs failed; job 0: ConfigError: ")
    assert "empty.txt' has no rows" in proc.stderr.strip().splitlines()[-1]
    assert "Error executing job" not in proc.stderr and "Set the environment variable HYDRA_FULL" not in proc.stderr
    assert "| 1 | test_runner | curriculum=text_file curriculum.path=" in proc.stdout  # the table, as it ends
    rows = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [(r["job"], r["status"], r["steps"]) for r in rows] == [(0, "failed", 0), (1, "completed", 2)]
    assert "empty.txt' has no rows" in rows[0]["error"]


def test_a_bug_in_a_job_s_code_shows_its_traceback_and_the_sweep_still_ends_with_its_table(tmp_path):
    """An idea's model.py with a bug: Hydra's ending stopped the sweep with the traceback and no table; the
    README promises the table and one error line. The traceback stays: it is what the user mends the bug by."""
    (tmp_path / "buggy").mkdir()
    (tmp_path / "buggy" / "__init__.py").write_text("")
    (tmp_path / "buggy" / "model.py").write_text(
        "from experiments.gpt2ish.model import GPT2ish\n\n\nclass Buggy(GPT2ish):\n"
        "    def forward(self, x, *args, **kwargs):\n        return undefined_name(x)\n")
    (tmp_path / "conf" / "exp").mkdir(parents=True)
    (tmp_path / "conf" / "exp" / "buggy.yaml").write_text(
        "# @package _global_\ndefaults: [test_runner]\nmodel:\n  _target_: buggy.model.Buggy\n")
    sweep = tmp_path / "sweep"
    proc = run_cli("lmplay.train", "-m", "--config-dir", str(tmp_path / "conf"), "exp=buggy,test_runner", *TINY,
                   f"hydra.sweep.dir={sweep}", env={"PYTHONPATH": python_path(tmp_path)})
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and 'File "' in err[1] and "lmplay/train.py" in err[1]
    assert "NameError: name 'undefined_name' is not defined" in err and "Error executing job" not in proc.stderr
    assert err[-1].startswith("error: 1 of 2 jobs failed; job 0: NameError: name 'undefined_name' is not defined")
    assert "| 1 | test_runner | max_steps=2 device=cpu |" in proc.stdout  # the table, as a sweep ends
    rows = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [(r["status"], r["steps"]) for r in rows] == [("failed", 0), ("completed", 2)]


def test_a_failed_job_releases_its_run_dir_for_the_next_job_in_it(tmp_path):
    """fresh is left out of job dir names, so fresh=false,true share one dir: the failed job 0 held its lock, and
    job 1 was refused as if job 0 were still training."""
    job_dir = tmp_path / "exp=test_runner,max_steps=2"
    job_dir.mkdir(parents=True)
    (job_dir / "model.lmp.bak").write_bytes(b"only a .bak: job 0 refuses to start over it")
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", "fresh=false,true", "max_steps=2", "device=cpu",
                   f"hydra.sweep.dir={tmp_path}")
    assert "has model.lmp.bak but no model.lmp" in proc.stderr and "in use" not in proc.stderr
    rows = json.loads((tmp_path / "summary.json").read_text())["jobs"]  # one dir: job 1's job.json replaced job 0's
    assert rows[-1]["status"] == "completed", proc.stderr
    assert "with the same hydra.sweep.dir and without fresh=true resumes" in (tmp_path / "summary.md").read_text()


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]])
def test_a_job_another_run_is_training_is_left_alone_record_and_all(tmp_path, launcher):
    """A sweep rerun while the first still trains (a closed terminal under nohup, a SLURM requeue while the old task
    lives on): the refused attempt wrote 'failed' into the running job's job.json, and its start time, from which
    the real run's end then counted its wall time. Under joblib the sweep's end said nothing of it (exit 0)."""
    if launcher:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    job_dir = tmp_path / "exp=test_runner,max_steps=2,seed=2"
    job_dir.mkdir(parents=True)
    record = json.dumps({"job": 1, "experiment": "test_runner", "overrides": ["exp=test_runner", "seed=2"],
                         "status": "started", "started_at": 1.0})
    (job_dir / "job.json").write_text(record)
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(job_dir / ".lmplay.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        proc = run_cli("lmplay.train", "-m", *launcher, "exp=test_runner", "seed=1,2", "max_steps=2", "device=cpu",
                       f"hydra.sweep.dir={tmp_path}")
    finally:
        holder.kill()
        holder.wait()
    assert (job_dir / "job.json").read_text() == record
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == (
        f"error: the job in {job_dir} was in use by another run that is still training, so this sweep left it alone; "
        f"rerun the sweep once that run ends"), proc.stderr
    assert json.loads((tmp_path / "exp=test_runner,max_steps=2,seed=1" / "job.json").read_text())["status"] == \
        "completed"


def test_the_resume_command_keeps_the_config_dir_and_name_and_quotes_for_the_shell(tmp_path):
    """A sweep of one's own configs (--config-dir) printed a command without it: pasted, exp=mine was unknown."""
    from lmplay.sweep import rerun_command

    hydra = {"overrides": {"hydra": ["hydra.sweep.dir=x", "hydra.mode=MULTIRUN", "hydra/launcher=joblib"],
                           "task": ["exp=mine", "lr=3e-3,-1", "fresh=true", "run_name='a b'"]},
             "runtime": {"config_sources": [{"path": "/work/main/conf", "schema": "file", "provider": "main"},
                                            {"path": "/my cfg", "schema": "file", "provider": "command-line"}]},
             "job": {"config_name": "mine_primary"}}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    assert rerun_command(tmp_path) == ('python -m lmplay.train -m --config-dir "/my cfg" --config-name mine_primary '
                                       f"hydra/launcher=joblib exp=mine lr=3e-3,-1 \"run_name='a b'\" "
                                       f"hydra.sweep.dir={tmp_path.resolve()}")
    odd = tmp_path / "sw a,b"  # a comma and a space: one value for Hydra (else a sweep over it), one word for bash
    odd.mkdir()
    (odd / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    assert rerun_command(odd).endswith(f" \"hydra.sweep.dir='{odd.resolve()}'\"")


@pytest.mark.parametrize("hydra", [[1], {"sweeper": [1]}, {"sweeper": {"_target_": BASIC_SWEEPER, "params": [1]}},
                                   {"sweeper": {"_target_": BASIC_SWEEPER}, "overrides": [1]},
                                   {"sweeper": {"_target_": BASIC_SWEEPER},  # 12 GB and counting, listing them
                                    "overrides": {"task": ["seed=range(0,1000000000)"]}}])
def test_a_hand_edited_multirun_yaml_lists_no_jobs_and_raises_nothing(tmp_path, hydra):
    """Each was an AttributeError traceback in `lmplay.sweep DIR`, or held it for good: the summary lists the
    jobs' own dirs alone then."""
    from lmplay.sweep import planned_jobs

    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    assert planned_jobs(tmp_path) == []


def test_rerunning_a_sweep_with_a_value_added_trains_only_the_new_job(tmp_path):
    """Job dirs began with the job's number, which the added value shifted: the rerun trained every job
    again in new dirs, and the summary counted each configuration twice."""
    said = []

    def sweep(seeds: str) -> list[dict]:
        said.append(run_cli("lmplay.train", "-m", "exp=test_runner", f"seed={seeds}", *TINY,
                            f"hydra.sweep.dir={tmp_path}", check=True).stdout)
        return json.loads((tmp_path / "summary.json").read_text())["jobs"]

    [first] = sweep("1")
    checkpoint = (tmp_path / first["dir"] / "model.lmp").read_bytes()
    rows = sweep("1,2")
    finished = [line for line in said[-1].splitlines() if "nothing to train" in line]  # a few words, not advice
    assert finished == ["finished before: at step 2 of max_steps=2; nothing to train"], said[-1]
    assert [(r["job"], r["dir"]) for r in rows] == [(0, first["dir"]), (1, first["dir"].replace("seed=1", "seed=2"))]
    assert (tmp_path / first["dir"] / "model.lmp").read_bytes() == checkpoint  # resumed: nothing left to train
    assert rows[0]["wall_time_s"] == first["wall_time_s"] > 0  # an attempt that trains nothing adds no time
    rows = sweep("3,2")  # reordered, seed=1 dropped: numbered by this call's plan, the earlier job after it
    assert [(r["job"], r["dir"].rsplit("seed=", 1)[1]) for r in rows] == [(0, "3"), (1, "2"), (2, "1")]
    into_sweep = run_cli("lmplay.train", "exp=test_runner", *TINY, f"hydra.run.dir={tmp_path}")  # its plots lost the
    assert into_sweep.returncode != 0 and "is a sweep's dir (it holds multirun.yaml), not a run's" in into_sweep.stderr
    assert not (tmp_path / "model.lmp").exists()  # jobs behind a run trained into the sweep's own dir


def test_a_job_dir_is_its_overrides_with_paths_flattened_and_long_names_hashed():
    assert job_dir_name("exp=a,seed=1") == "exp=a,seed=1"
    assert job_dir_name("curriculum.path=/data/x.txt") == "curriculum.path=_data_x.txt"  # not a nested dir
    long = "curriculum.stages=" + "x" * 300
    assert len(job_dir_name(long).encode()) == 197 and job_dir_name(long) != job_dir_name(long + "y")


def test_joblib_runs_two_jobs_in_parallel_and_reports_a_failed_one(tmp_path):
    """One job fails by design (its data file is empty, which only its job reads): the other still runs, and
    the summary says which."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    (tmp_path / "ok.txt").write_text("A paragraph of text to train on.\n\n" * 200)
    (tmp_path / "empty.txt").write_text("")
    sweep = tmp_path / "sweep"
    proc = run_cli("lmplay.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "exp=test_runner",
                   "curriculum=text_file", f"curriculum.path={tmp_path / 'empty.txt'},{tmp_path / 'ok.txt'}", *TINY,
                   f"hydra.sweep.dir={sweep}")
    assert proc.returncode != 0 and "job 0 failed" in proc.stderr
    rows = json.loads((sweep / "summary.json").read_text())["jobs"]
    assert [(r["job"], r["status"]) for r in rows] == [(0, "failed"), (1, "completed")]
    assert rows[0]["error"].startswith("ConfigError: curriculum stage 'text_file': dataset ") and "no rows" in \
        rows[0]["error"]
    assert "Traceback" not in proc.stderr
    assert rows[1]["steps"] == 2 and (sweep / rows[1]["dir"] / "model.lmp").is_file()


def test_submitit_local_runs_two_jobs(tmp_path):
    """submitit_local: the stand-in for SLURM (same launcher code, jobs as local processes)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    run_cli("lmplay.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "exp=test_runner",
            "seed=1,2", *TINY, f"hydra.sweep.dir={tmp_path}", check=True)
    rows = json.loads((tmp_path / "summary.json").read_text())["jobs"]
    assert [(r["job"], r["status"], r["steps"]) for r in rows] == [(0, "completed", 2), (1, "completed", 2)]
    for r in rows:
        assert (tmp_path / r["dir"] / "model.lmp").is_file()
    assert list((tmp_path / ".submitit").iterdir()), "submitit's job folders"


@pytest.mark.parametrize("preset,expected", [
    ("slurm_gpu", ["--partition=gpu", "--gpus-per-node=1", "--time=1440", "--cpus-per-task=8", "module load cuda"]),
    ("slurm_cpu", ["--partition=gpu", "--time=720", "--cpus-per-task=16", "module load cuda"]),
    ("slurm_ddp", ["--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=1", "--cpus-per-task=8",
                   "--time=1440", "module load cuda"]),  # one rank per GPU
])
def test_slurm_presets_make_valid_sbatch_scripts(preset, expected, tmp_path, monkeypatch):
    """What the submitit_slurm launcher would submit with a preset (submitit wants `srun` on PATH; a stub does)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    srun = tmp_path / "srun"
    srun.write_text("#!/bin/sh\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    cfg = compose_config([f"hydra/launcher={preset}", "hydra.launcher.partition=gpu",
                          "hydra.launcher.setup=[module load cuda]", f"hydra.sweep.dir={tmp_path}"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert params.pop("_target_").endswith("SlurmLauncher")
    # the launcher's own translation of its config into submitit parameters
    executor = submitit.AutoExecutor(cluster="slurm", folder=tmp_path / "logs",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("submitit_folder")
    params["name"] = "lmplay"
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m lmplay.train", "uid")
    for line in expected:
        assert line in script, (line, script)


def test_a_job_is_in_the_summary_from_its_start(tmp_path):
    """A sweep killed during a job (Ctrl-C, a node lost) never reaches that job's end: the summary lists it."""
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(tmp_path)},
                                         "runtime": {"output_dir": str(tmp_path / "0_exp=a"), "choices": {"exp": "a"}},
                                         "job": {"num": 0}, "overrides": {"task": ["exp=a"]}}})
    (tmp_path / "0_exp=a").mkdir()
    SweepSummary().on_job_start(config)
    assert "| 0 | a | - | - | 0 | - | started |" in (tmp_path / "summary.md").read_text()


def test_a_slurm_launcher_without_slurm_is_one_line(tmp_path):
    env = {"PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "sbatch").exists())}
    proc = run_cli("lmplay.train", "-m", "hydra/launcher=slurm_gpu", "exp=test_runner", "device=cpu",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", env=env)
    expected = ("error: hydra/launcher=slurm_gpu submits to SLURM, and this machine has no sbatch; run the sweep on a "
                "SLURM login node, or here with hydra/launcher=joblib (parallel) or without hydra/launcher")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [expected], proc.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_job_a_signal_stops_is_in_the_summary_as_interrupted_with_its_steps_and_time(tmp_path):
    """Hydra's on_job_end never runs for a job that exits on a signal: its row kept what it showed at its
    start (0 tokens, no loss, 'started'), and the rerun's wall time lost the attempt."""
    env = {**os.environ, "PYTHONPATH": python_path(), "TQDM_DISABLE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmplay.train", "-m", "exp=test_runner", "device=cpu",
                             "runner.save_interval=100000", "curriculum.stages.0.epochs=100", f"hydra.sweep.dir={tmp_path}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    stats = tmp_path / "curriculum.stages.0.epochs=100,exp=test_runner,runner.save_interval=100000" / "stats.json"
    deadline = time.monotonic() + 120
    while not stats.exists() or len(json.loads(stats.read_text())["train"]) < 3:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(proc.communicate())
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT
    # the same command would start a new sweep in a dir named by the time: the line is the command that resumes it
    assert (f"to resume the sweep (each job from its own checkpoint): python -m lmplay.train -m exp=test_runner "
            f"device=cpu runner.save_interval=100000 curriculum.stages.0.epochs=100 "
            f"hydra.sweep.dir={tmp_path.resolve()}") in stderr, stderr
    [row] = json.loads((tmp_path / "summary.json").read_text())["jobs"]
    assert row["status"] == "interrupted" and row["steps"] >= 3 and row["tokens"] > 0 and row["wall_time_s"] > 0


def test_jobs_a_stopped_sweep_never_reached_are_rows_too(tmp_path):
    """Its summary listed only the jobs that had started: 'Of 1 jobs' for a sweep of 4."""
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
        "overrides": {"task": ["exp=a,b", "seed=1,2", "max_steps=5"]}}}))
    (tmp_path / "exp=a,max_steps=5,seed=2").mkdir()
    (tmp_path / "exp=a,max_steps=5,seed=2" / "job.json").write_text(json.dumps(
        {"job": 1, "experiment": "a", "overrides": ["exp=a", "seed=2", "max_steps=5"], "status": "interrupted"}))
    rows = summarize(tmp_path)
    assert [(r["job"], r["experiment"], r["status"]) for r in rows] == [
        (0, "a", "not started"), (1, "a", "interrupted"), (2, "b", "not started"), (3, "b", "not started")]
    assert rows[2]["overrides"] == ["exp=b", "seed=1", "max_steps=5"]
    text = write_summary(tmp_path)["markdown"]
    assert "| 3 | b | seed=2 max_steps=5 | - | 0 | - | not started |" in text and "Of 4 jobs, 4 did not finish" in text


def test_a_summary_of_jobs_with_different_tokenizers_says_their_losses_do_not_compare(tmp_path):
    """The lowest loss was picked across bytes and gpt2 jobs (4.4 against 9.9) with no word; plot says so."""
    for job, tokenizer in enumerate(("bytes", "gpt2")):
        job_dir = tmp_path / f"tokenizer={tokenizer}"
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "config.yaml").write_text(f"tokenizer: {tokenizer}\n")
        (job_dir / "job.json").write_text(json.dumps({"job": job, "experiment": "a", "status": "completed",
                                                      "overrides": ["exp=a", f"tokenizer={tokenizer}"]}))
        record = {"step": 3, "samples": 24, "tokens": 700, "loss": 4.4 + 5.5 * job, "accuracy": 0.2}
        (job_dir / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))
    text = write_summary(tmp_path)["markdown"]
    assert "Note: the jobs use different tokenizers (bytes, gpt2): a loss per token does not compare" in text


def test_over_seeds_a_seed_run_twice_counts_once_by_its_finished_run():
    """A job trained on by hand and a rerun's job of the same seed: counted twice; then the first (interrupted)
    stood for the seed and the completed one was dropped."""
    def row(job: int, seed: int, status: str, loss: float | None, tokens: int) -> dict:
        return {"job": job, "overrides": ["exp=a", f"seed={seed}", "max_steps=60"], "status": status,
                "final_validation_loss": loss, "tokens": tokens}

    [group] = repeated_configs([row(0, 1, "interrupted", 3.9, 10), row(1, 2, "completed", 3.2, 20),
                                row(2, 1, "completed", 3.0, 20)])
    assert group["jobs"] == [1, 2] and group["mean_final_validation_loss"] == pytest.approx(3.1)


def test_a_job_s_clock_starts_after_the_imports_its_process_does_once(tmp_path):
    """Under joblib each worker's first job timed the ~4 s imports of torch._dynamo: the baseline, first in the
    sweep, read as 4-7x slower than the idea in the summary's wall times."""
    probe = f"""
import sys, time
from hydra.types import RunMode
from omegaconf import OmegaConf
from lmplay import sweep
seen = []
real = time.time
sweep.time.time = lambda: seen.append("torch._dynamo" in sys.modules) or real()
hydra = {{"mode": RunMode.MULTIRUN, "job": {{"num": 0}}, "runtime": {{"choices": {{"exp": "a"}}, "output_dir": "{tmp_path / 'job'}"}},
          "overrides": {{"task": ["exp=a"]}}, "sweep": {{"dir": "{tmp_path}"}}}}
(sweep.Path("{tmp_path / 'job'}")).mkdir()
sweep.SweepSummary().on_job_start(OmegaConf.create({{"hydra": hydra}}))
print(seen[0])
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": python_path()}, check=False)
    assert out.stdout.split()[:1] == ["True"], out.stderr


def test_a_summary_refresh_reads_only_the_runs_whose_files_changed(tmp_path, monkeypatch):
    """Each job's start and end re-read every finished job's whole stats.json: 80 s for 50 jobs of 200k records."""
    from lmplay import sweep

    job = tmp_path / "exp=a,seed=1"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- exp=a\n- seed=1\n")
    record = {"stage": "s", "step": 1, "samples": 8, "tokens": 100, "loss": 2.0, "accuracy": 0.1, "lr": 1e-3}
    (job / "stats.json").write_text(json.dumps({"train": [record], "validation": [record]}))
    loads = []
    real = sweep.load_run
    monkeypatch.setattr(sweep, "load_run", lambda path, **kw: loads.append(path) or real(path, **kw))
    assert sweep.run_summary(job).steps == 1 and sweep.run_summary(job).tokens == 100
    assert len(loads) == 1
    (job / "stats.json").write_text(json.dumps({"train": [record, {**record, "step": 2, "tokens": 200}],
                                                "validation": [record]}))
    assert sweep.run_summary(job).steps == 2 and len(loads) == 2  # rewritten: read again


def test_a_job_killed_outright_keeps_the_time_it_ran_until_its_last_write(tmp_path):
    """A SIGKILL (the OOM killer, a lost node) leaves job.json at 'started', without the attempt's wall time: the
    rerun's row counted only the resumed part (3 s of a 10 s job)."""
    now = time.time()
    (tmp_path / "job.json").write_text(json.dumps({"status": "started", "started_at": now - 100,
                                                   "earlier_wall_time_s": 5.0}))
    assert earlier_wall_time(tmp_path) == 5.0  # killed before it wrote anything
    (tmp_path / "stats.json").write_text("{}")
    os.utime(tmp_path / "stats.json", (now - 40, now - 40))
    assert earlier_wall_time(tmp_path) == pytest.approx(65.0)
    (tmp_path / "job.json").write_text(json.dumps({"status": "interrupted", "started_at": now - 100,
                                                   "wall_time_s": 80.0}))
    assert earlier_wall_time(tmp_path) == 80.0  # an attempt that ended says its own


def test_a_submitit_job_killed_outright_is_one_line_and_the_rerun_resumes_it(tmp_path):
    """A job that died without a result (SIGKILL here; the OOM killer, a lost rank) ended the sweep in submitit's
    UncompletedJobError traceback, with no word of the summary or of resuming."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    args = ["-m", "hydra/launcher=submitit_local", "exp=test_runner", "device=cpu", "max_steps=5", "seed=1",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    probes = Path(__file__).parent / "probes"
    proc = run_cli("lmplay.train", *args, env={"LMPLAY_PROBE_KILL": "step:2",
                                                "PYTHONPATH": python_path(probes)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and "a job of the sweep ended without a result" in said[0] and "summary.md" in said[0]
    assert (f"rerun the sweep, `python -m lmplay.train -m hydra/launcher=submitit_local exp=test_runner device=cpu "
            f"max_steps=5 seed=1 hydra.sweep.dir={(tmp_path / 'sweep').resolve()}`,") in said[0]  # a new default dir
    # would start every job over
    run_cli("lmplay.train", *args, check=True)
    assert [r["status"] for r in summarize(tmp_path / "sweep")] == ["completed"]


def test_a_job_trained_on_by_a_run_of_its_own_counts_that_runs_wall_time(tmp_path):
    """The README's way to train one job on (`hydra.run.dir=` its dir): the summary then read 20 steps at the first
    10 steps' wall time."""
    run_cli("lmplay.train", "-m", "exp=test_runner", "device=cpu", "max_steps=2", "seed=1",
            f"hydra.sweep.dir={tmp_path}", check=True)
    (job,) = [d for d in tmp_path.iterdir() if (d / "job.json").is_file()]
    before = json.loads((job / "job.json").read_text())["wall_time_s"]
    run_cli("lmplay.train", f"hydra.run.dir='{job}'", "exp=test_runner", "device=cpu", "max_steps=30", "seed=1",
            check=True)
    record = json.loads((job / "job.json").read_text())
    assert record["wall_time_s"] > before and record["status"] == "completed"
    proc = run_cli("lmplay.train", f"hydra.run.dir='{job}'", "exp=test_runner", "device=cpu", "max_steps=100000",
                   "seed=1", "runner.save_interval=1000000",
                   env={"LMPLAY_PROBE_KILL": "term:40", "PYTHONPATH": python_path(REPO / "tests" / "probes")})
    assert proc.returncode == 143  # stopped: not read as completed
    assert json.loads((job / "job.json").read_text())["status"] == "interrupted"


def test_over_seeds_the_default_seed_typed_and_left_out_is_one_seed():
    """seed=1337 typed and a job of the default seed: the same run, counted twice in the mean and its spread."""
    def row(job: int, typed: list[str], seed: str, loss: float) -> dict:
        return {"job": job, "overrides": ["exp=a", *typed], "seed": seed, "status": "completed",
                "final_validation_loss": loss, "tokens": 20}

    [group] = repeated_configs([row(0, [], "1337", 3.0), row(1, ["seed=1337"], "1337", 3.0),
                                row(2, ["seed=1"], "1", 3.2)])
    assert group["runs_with_loss"] == 2 and group["mean_final_validation_loss"] == pytest.approx(3.1)


def test_a_sweep_rerun_with_its_baseline_first_plots_that_baseline_and_a_fresh_rerun_times_itself(tmp_path):
    """The rerun `exp=test_runner,attn_temp_test` after `exp=attn_temp_test`: the earlier job kept Hydra's number 0
    in its .hydra/hydra.yaml, the plot took attn_temp_test for the baseline, and every difference read reversed.
    A fresh=true rerun's row added the time of the run it set aside."""
    from lmplay.stats.runs import find_run_dirs

    run_cli("lmplay.train", "-m", "exp=attn_temp_test", *TINY, f"hydra.sweep.dir={tmp_path}", check=True)
    run_cli("lmplay.train", "-m", "exp=test_runner,attn_temp_test", *TINY, f"hydra.sweep.dir={tmp_path}", check=True)
    assert [d.name.split("exp=")[1].split(",")[0] for d in find_run_dirs(tmp_path)] == ["test_runner", "attn_temp_test"]
    job = next(tmp_path.glob("exp=test_runner*")) / "job.json"
    job.write_text(json.dumps({**json.loads(job.read_text()), "wall_time_s": 1000.0}))  # a long first run
    rerun = run_cli("lmplay.train", "-m", "exp=test_runner", "fresh=true", *TINY, f"hydra.sweep.dir={tmp_path}",
                    check=True)
    assert "nothing to train" not in rerun.stdout and json.loads(job.read_text())["wall_time_s"] < 1000


def test_jobs_whose_paths_name_one_dir_are_told_why(tmp_path):
    """a/b.txt and a_b.txt name one job dir ('/' reads '_'): the advice was to keep keys out of exclude_keys."""
    (tmp_path / "a").mkdir()
    for path in (tmp_path / "a" / "b.txt", tmp_path / "a_b.txt"):
        path.write_text("A paragraph.\n\nAnother one.\n")
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", "curriculum=text_file",
                   f"curriculum.path={tmp_path / 'a' / 'b.txt'},{tmp_path / 'a_b.txt'}", *TINY,
                   f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 2 and "their curriculum.path differ only where a job's dir name reads '/' as '_'" in \
        proc.stderr and "rename one of the files" in proc.stderr


def test_the_sweep_s_build_check_leaves_a_model_that_computes_at_init_to_its_job(tmp_path, monkeypatch, capsys):
    """An idea whose __init__ converts a tensor to numpy (or formats one) trains, but on the meta device it raised
    TypeError, which refused the whole sweep; and HYDRA_FULL_ERROR=1 turned the check off altogether."""
    from lmplay.sweep_start import check_buildable

    (tmp_path / "computes.py").write_text(
        "import numpy as np\nimport torch\nfrom experiments.gpt2ish.model import GPT2ish\n\n\n"
        "class Computes(GPT2ish):\n    def __init__(self, vocab_size, context_len=1024, num_blocks=6, embed_dim=768, "
        "num_heads=12, dropout=0.0, tokenizer='gpt2'):\n        super().__init__(vocab_size, context_len, num_blocks, "
        "embed_dim, num_heads, dropout, tokenizer)\n"
        "        self.register_buffer('scale', torch.from_numpy(np.log1p(torch.arange(4.0).numpy())))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    def job(*overrides: str):
        cfg = compose_config(["exp=test_runner", *overrides])
        return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])

    check_buildable(job("model._target_=computes.Computes"), set())
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="embed_dim=32 is not divisible by num_heads=5"):
        check_buildable(job("model.num_heads=5"), set())


def test_a_sweep_whose_jobs_change_into_their_dirs_keeps_its_summary_current(tmp_path):
    """hydra.job.chdir=true: the jobs read the (relative) sweep dir from their own dirs, and the summary's refresh
    at each job's start and end warned 'does not exist' and was skipped."""
    proc = run_cli("lmplay.train", "-m", "exp=test_runner", "seed=1,2", *TINY, "hydra.job.chdir=true",
                   "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert proc.returncode == 0 and "Callback SweepSummary" not in proc.stderr, proc.stderr[-2000:]
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text())["jobs"][1]["status"] == "completed"


def test_a_rerun_sweep_is_not_stopped_by_a_finished_jobs_moved_data(tmp_path):
    """The file check before any job refused the whole rerun for job 0's data, moved after job 0 had finished:
    job 1, killed before, never trained again. A SLURM sweep's files are its nodes' to check."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("A paragraph of text to train on.\n\n" * 200)
    files = f"curriculum.path={tmp_path / 'a.txt'},{tmp_path / 'b.txt'}"
    sweep = ["-m", "exp=test_runner", "curriculum=text_file", files, *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    run_cli("lmplay.train", *sweep, check=True)
    (tmp_path / "a.txt").rename(tmp_path / "moved.txt")
    job_1 = next((tmp_path / "sweep").glob("*b.txt*"))
    shutil.rmtree(job_1)
    proc = run_cli("lmplay.train", *sweep)
    assert (job_1 / "model.lmp").is_file(), proc.stderr
