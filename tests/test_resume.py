"""Interrupted runs resume exactly; checkpoints are safe to load and survive failed writes."""

import copy
import importlib
import inspect
import io
import itertools
import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from conftest import REPO, make_runner, python_path, run_cli
from omegaconf import OmegaConf

from lmplay.errors import ConfigError, DivergedError, OutputError
from lmplay.files import RECORD_KINDS
from lmplay.runner import checkpoint
from lmplay.runner.component_base import Provenance, same
from lmplay.stats.runs import load_run

# cosine with warmup: the lr curve itself must survive the interruptions
RUN = ["exp=test_runner", "device=cpu", "max_steps=48", "runner.save_interval=16", "runner.validation_interval=40",
       "scheduler=cosine", "scheduler.warmup_steps=5", "scheduler.min_lr=1e-4"]


WALL_CLOCK = ("tokens_per_second", "mfu")


def replayable(stats):
    """Records without wall-clock fields: the part of stats.json a resumed run must reproduce exactly (the
    parameter count too)."""
    return {kind: [{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in records] if kind in RECORD_KINDS
            else records for kind, records in stats.items()}


def weights(run_dir):
    return checkpoint.load(run_dir / "model.lmp")["components"]["model"]["state"]["weights"]


PROBES = REPO / "tests" / "probes"


def popen_train(args, env=None):
    env = {**os.environ, "PYTHONPATH": python_path(PROBES), "TQDM_DISABLE": "1",
           **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lmplay.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def saved_step(run_dir) -> int:
    return checkpoint.load(run_dir / "model.lmp")["components"]["runner"]["state"]["progress"]["step"]


def test_kill_9_between_saves_and_inside_one_then_resume_is_exact(tmp_path):
    """SIGKILL mid-interval, inside a save (its file written, not yet renamed) and again mid-interval: each
    resume starts from the last checkpoint that was whole, and the end equals the uninterrupted run."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    args = [a if not a.startswith("runner.save_interval=") else "runner.save_interval=128" for a in RUN]  # 16 steps
    run_cli("lmplay.train", *args, f"hydra.run.dir={whole}", check=True)
    for kill, saved in (("step:20", 16), ("save:32", 16), ("step:40", 32)):
        proc = popen_train([*args, f"hydra.run.dir={broken}"], env={"LMPLAY_PROBE_KILL": kill})
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, err
        assert saved_step(broken) == saved
        assert (broken / "model.lmp.tmp").exists() == (kill == "save:32")  # killed with the new file unrenamed
    run_cli("lmplay.train", *args, f"hydra.run.dir={broken}", check=True)
    assert replayable(json.loads((broken / "stats.json").read_text())) == \
        replayable(json.loads((whole / "stats.json").read_text()))
    lrs = [r["lr"] for r in json.loads((whole / "stats.json").read_text())["train"]]
    assert lrs[4] < lrs[5] == pytest.approx(3e-3) and lrs[-1] == pytest.approx(1e-4)  # warmed up, decayed to min_lr
    a, b = weights(whole), weights(broken)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_stop_on_a_stages_last_step_or_the_runs_keeps_their_closing_validation(tmp_path):
    """SIGTERM during the last step of a stage, or of the run, saved before the stage's closing validation, and
    no resume recorded it: the final validation loss came from an earlier step, for good."""
    args = ["exp=test_runner", "device=cpu", "max_steps=10", "runner.validation_interval=1000", "scheduler=cosine",
            ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 4},"
             " {name: b, datasets: [shakespeare], epochs: 1, overrides: {lr: 1.0e-3}}]")]  # each record's lr its own
    whole = tmp_path / "whole"
    run_cli("lmplay.train", *args, f"hydra.run.dir={whole}", check=True)
    expected = replayable(json.loads((whole / "stats.json").read_text()))
    assert [(r["stage"], r["step"]) for r in expected["validation"]] == [("a", 0), ("a", 4), ("b", 4), ("b", 10)]
    for stop in ("term:4", "term:10"):
        run = tmp_path / stop.replace(":", "_")
        proc = popen_train([*args, f"hydra.run.dir={run}"], env={"LMPLAY_PROBE_KILL": stop})
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signal.SIGTERM, err
        run_cli("lmplay.train", *args, f"hydra.run.dir={run}", check=True)
        assert replayable(json.loads((run / "stats.json").read_text())) == expected, stop


def test_records_of_several_steps_span_a_stop_or_a_crash_as_in_the_uninterrupted_run(tmp_path):
    """With log_interval=3 a stop at step 17 wrote a record of steps 16-17 and, resumed, one of step 18 alone; a
    kill -9 lost the loss of the steps between the last record and the save. The save keeps the window's sums."""
    args = ["exp=test_runner", "device=cpu", "max_steps=24", "runner.log_interval=3", "runner.save_interval=40",
            "runner.validation_interval=1000"]  # saves every 5 steps, mid-window
    whole = tmp_path / "whole"
    run_cli("lmplay.train", *args, f"hydra.run.dir={whole}", check=True)
    expected = replayable(json.loads((whole / "stats.json").read_text()))
    assert [r["step"] for r in expected["train"]] == list(range(3, 25, 3))
    for stop, code in (("term:17", 128 + signal.SIGTERM), ("step:12", -signal.SIGKILL)):
        run = tmp_path / stop.replace(":", "_")
        proc = popen_train([*args, f"hydra.run.dir={run}"], env={"LMPLAY_PROBE_KILL": stop})
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == code, err
        run_cli("lmplay.train", *args, f"hydra.run.dir={run}", check=True)
        assert replayable(json.loads((run / "stats.json").read_text())) == expected, stop


def test_a_stop_on_the_last_step_inside_a_record_window_keeps_the_records_lr_and_no_zero_speed(tmp_path):
    """The resumed run flushed the open window with the freshly built optimizer's lr (0.003, not the cosine's
    6e-05) and tokens/s 0.0; the closing validation copied that lr."""
    args = ["exp=test_runner", "device=cpu", "max_steps=8", "runner.log_interval=3", "scheduler=cosine",
            "runner.validation_interval=1000"]
    whole, run = tmp_path / "whole", tmp_path / "stopped"
    run_cli("lmplay.train", *args, f"hydra.run.dir={whole}", check=True)
    expected = replayable(json.loads((whole / "stats.json").read_text()))
    proc = popen_train([*args, f"hydra.run.dir={run}"], env={"LMPLAY_PROBE_KILL": "term:8"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    run_cli("lmplay.train", *args, f"hydra.run.dir={run}", check=True)
    stats = json.loads((run / "stats.json").read_text())
    assert replayable(stats) == expected
    assert expected["train"][-1]["lr"] == pytest.approx(6e-05) and "tokens_per_second" not in stats["train"][-1]


def test_a_ctrl_c_the_run_was_started_ignoring_stays_ignored_once_it_trains(tmp_path):
    """A shell script's background job starts with SIGINT ignored: a Ctrl-C meant for the script was ignored during
    set-up, then stopped the training (with a save) once its handlers were in. Ignored throughout, as nohup's
    SIGHUP already was."""
    env = {**os.environ, "PYTHONPATH": python_path(PROBES), "TQDM_DISABLE": "1", "LMPLAY_PROBE_KILL": "int:2"}
    proc = subprocess.run([sys.executable, "-m", "lmplay.train", "exp=test_runner", "device=cpu", "max_steps=4",
                           f"hydra.run.dir={tmp_path}"], cwd=REPO, env=env, capture_output=True, text=True,
                          check=False, timeout=300, stdin=subprocess.DEVNULL, preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                                                   signal.SIG_IGN))
    assert proc.returncode == 0 and "done: step 4" in proc.stdout and "SIGINT" not in proc.stderr, proc.stderr
    stopped = popen_train(["exp=test_runner", "device=cpu", "max_steps=4", f"hydra.run.dir={tmp_path / 'b'}"],
                          env={"LMPLAY_PROBE_KILL": "int:2"})  # the probe's signal does stop a run that handles it
    _, err = stopped.communicate(timeout=300)
    assert stopped.returncode == 130 and "SIGINT: saved" in err, err


def training(run) -> subprocess.Popen:
    """A long run in `run`, once it has recorded 3 steps (and saved none)."""
    proc = popen_train(["exp=test_runner", "device=cpu", "max_steps=100000", "runner.save_interval=100000",
                        f"hydra.run.dir={run}"])
    deadline = time.monotonic() + 120
    while not (run / "stats.json").exists() or len(json.loads((run / "stats.json").read_text())["train"]) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])  # SIGHUP: the terminal closed, an ssh dropped
def test_a_stop_signal_saves_a_checkpoint(tmp_path, signum):
    run = tmp_path / "run"
    proc = training(run)
    proc.send_signal(signum)
    proc.send_signal(signal.SIGTERM)  # as torchrun's agent passes on a Ctrl-C: the first signal is the one reported
    _, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum and f"{name}: saved" in err  # 130 for Ctrl-C, as a shell reports it
    assert f"{name}: will save after this step and stop; {name} again stops at once without saving" in err  # at once
    step = checkpoint.load(run / "model.lmp")["components"]["runner"]["state"]["progress"]["step"]
    assert step == json.loads((run / "stats.json").read_text())["train"][-1]["step"] > 0


def test_a_second_ctrl_c_stops_at_once_and_says_so(tmp_path, capfd, monkeypatch):
    """It killed the run without a word: the user could not tell what was lost. (In-process: two signals sent to
    a process at once may reach it as one.)"""
    runner = make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run")
    before = signal.getsignal(signal.SIGINT)
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: killed.append(signum))
    try:
        runner.stop.on_signal(signal.SIGINT, None)
        assert runner.stop.signum == signal.SIGINT and signal.getsignal(signal.SIGINT) == runner.stop.on_second_signal
        runner.stop.on_second_signal(signal.SIGINT, None)
        assert killed == [signal.SIGINT] and signal.getsignal(signal.SIGINT) == signal.SIG_DFL  # the signal's own end
    finally:
        signal.signal(signal.SIGINT, before)
    err = capfd.readouterr().err
    assert "SIGINT: will save after this step and stop; SIGINT again stops at once without saving" in err
    assert "SIGINT again: stopped without saving; nothing is saved yet, so a rerun starts over" in err  # no save yet
    with pytest.raises(SystemExit):
        runner.train()  # the first signal's save (at step 0): a second signal later would lose the steps after it
    assert runner.stop.without_save() == "the run then resumes from its last checkpoint, of step 0"


def provenance(stdout: str) -> dict[str, set[str]]:
    """The start-of-run block: {"command line": {"optimizer.lr=0.001", ...}, "checkpoint": {...}, ...}."""
    out = {"command line": set(), "chosen group": set(), "checkpoint": set(), "config": set()}
    for line in stdout.splitlines():
        for source in out:
            if line.strip().startswith(source + ":"):
                out[source] |= set(line.split(":", 1)[1].split())
    return out


def test_command_line_lr_wins_on_resume_and_says_so(tmp_path):
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, "max_steps=3", "lr=0.002", check=True)
    kept = run_cli("lmplay.train", *args, "max_steps=5", check=True)
    assert provenance(kept.stdout)["checkpoint"] >= {"optimizer.lr=0.002"}
    # plots and sweeps label the run by .hydra/overrides.yaml: the resume keeps the lr an earlier command typed
    assert load_run(tmp_path / "run").config == ("exp=test_runner", "lr=0.002", "max_steps=5")
    changed = run_cli("lmplay.train", *args, "max_steps=7", "lr=0.001", check=True)
    assert provenance(changed.stdout)["command line"] >= {"optimizer.lr=0.001"}
    assert "optimizer.lr=0.001 (was 0.002)" in changed.stdout
    assert "optimizer.lr=0.002" not in changed.stdout
    assert load_run(tmp_path / "run").config == ("exp=test_runner", "lr=0.001", "max_steps=7")
    lrs = [r["lr"] for r in json.loads((tmp_path / "run" / "stats.json").read_text())["train"]]
    assert lrs == [0.002] * 5 + [0.001] * 2
    run_cli("lmplay.train", *args, "runner.validation_batches=1", check=True)  # no max_steps: trains to the end
    assert load_run(tmp_path / "run").config == ("exp=test_runner", "lr=0.001", "runner.validation_batches=1")


def test_a_long_value_replaced_on_resume_says_where_it_differs():
    """A retyped curriculum=NAME took the file's plan back, shown as `stages=[...] (was [...])`."""
    said = Provenance()
    said.add("curriculum", "stages", [{"name": "a", "epochs": 1, "datasets": ["shakespeare"]}], "chosen group",
             was=[{"name": "a", "steps": 15, "datasets": ["shakespeare"]}])
    assert said.values["chosen group"] == [
        "curriculum.stages=[...] (stages.0.epochs none -> 1, stages.0.steps 15 -> none)"]


def test_a_key_typed_inside_a_plan_is_reported_as_typed_on_a_fresh_run_too(tmp_path):
    """It was credited to the config, as the whole `curriculum.stages=[...]`; a resume said it right."""
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", "curriculum.stages.0.epochs=2"]
    said = provenance(run_cli("lmplay.train", *args, "max_steps=1", check=True).stdout)
    assert "curriculum.stages.0.epochs=2" in said["command line"]
    assert not any(item.startswith("curriculum.stages=") for items in said.values() for item in items)
    resumed = run_cli("lmplay.train", *args[:-1], "max_steps=2", "curriculum=shakespeare",  # the file's plan again
                      "+curriculum.stages.0.batching=packed", check=True).stdout
    assert "curriculum.stages.0.batching=packed" in provenance(resumed)["command line"]
    assert "chosen group: curriculum.stages=[...] (stages.0.batching none -> packed, stages.0.epochs 2 -> 1)" in resumed



def test_optimizer_settings_typed_on_a_resume_are_the_ones_it_trains_with(tmp_path):
    """torch's load_state_dict restores the saved groups' betas, eps and weight decay: the run's must win."""
    args = ["exp=test_runner", "device=cpu", "weight_decay=0.01"]
    make_runner([*args, "max_steps=2"], tmp_path / "run").train()
    typed = ["weight_decay=0.3", "optimizer.betas=[0.5,0.6]", "optimizer.eps=0.001"]
    runner = make_runner([*args, *typed, "max_steps=4"], tmp_path / "run", checkpoint.load(tmp_path / "run" / "model.lmp"),
                         overridden={"weight_decay", "optimizer.betas", "optimizer.eps"})
    decay, no_decay = runner.optimizer_c.optimizer.param_groups
    assert (decay["weight_decay"], decay["betas"], decay["eps"]) == (0.3, (0.5, 0.6), 0.001)
    assert (no_decay["weight_decay"], no_decay["betas"]) == (0.0, (0.5, 0.6))
    assert runner.optimizer_c.optimizer.state  # the moments still come from the checkpoint


def test_running_state_an_optimizer_keeps_in_its_param_groups_survives_a_resume(tmp_path):
    """The run's settings replace the checkpoint's group settings, not the optimizer's running state kept there
    (Prodigy's `d` and `k`, schedule-free AdamW's `weight_sum`): a resume restarted it at 0."""
    args = ["exp=test_runner", "device=cpu", "optimizer._target_=group_state_optim.GroupCounted", "~optimizer.betas",
            "~optimizer.eps", "weight_decay=0.01"]
    make_runner([*args, "max_steps=2"], tmp_path / "run").train()
    runner = make_runner([*args, "max_steps=4"], tmp_path / "run", checkpoint.load(tmp_path / "run" / "model.lmp"))
    decay, no_decay = runner.optimizer_c.optimizer.param_groups
    assert (decay["k"], decay["d"], no_decay["k"]) == (2, 2.25, 2)
    assert (decay["weight_decay"], no_decay["weight_decay"], decay["name"]) == (0.01, 0.0, "decay")


def test_a_resume_keeps_the_optimizer_and_schedule_the_run_was_built_with(tmp_path):
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    first = run_cli("lmplay.train", *args, "max_steps=4", "optimizer=sgd", "optimizer.momentum=0.5", "scheduler=cosine",
                    "lr=1e-3", "fresh=true", check=True)
    said = provenance(first.stdout)  # what was typed, apart from what the chosen groups' files hold
    assert {"optimizer.momentum=0.5", "optimizer.lr=0.001", "fresh=true"} <= said["command line"]
    assert {"optimizer=sgd", "scheduler=cosine"} <= said["command line"]  # the groups typed: left out before
    assert "scheduler.min_lr=6e-05" in said["chosen group"] and not said["chosen group"] & said["command line"]
    other = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", "optimizer=sgd", "runner=default",
                    f"hydra.run.dir={tmp_path / 'other'}", check=True)
    said = provenance(other.stdout)  # sgd.yaml's `lr: ${lr}` takes test_runner's lr: a config value, as with adamw
    assert "optimizer.lr=0.003" in said["config"] and said["chosen group"] == {"optimizer.momentum=0.9"}
    assert "runner.save_interval=160" in said["config"]  # the exp file's, over default.yaml's: was "chosen group"
    resumed = run_cli("lmplay.train", *args, "max_steps=8", check=True)  # neither choice retyped
    assert "optimizer changed" not in resumed.stdout
    assert "optimizer: torch.optim.SGD, as the run was built" in resumed.stdout
    components = checkpoint.load(tmp_path / "run" / "model.lmp")["components"]
    assert components["optimizers"]["state_args"]["_target_"] == "torch.optim.SGD"
    assert components["optimizers"]["state_args"]["momentum"] == 0.5
    assert components["lr_schedulers"]["state_args"]["_target_"] == "lmplay.runner.schedules.Cosine"
    lrs = [r["lr"] for r in json.loads((tmp_path / "run" / "stats.json").read_text())["train"]]
    assert all(a > b for a, b in itertools.pairwise(lrs[4:])), lrs  # still decaying, not the default's constant lr
    chosen = run_cli("lmplay.train", *args, "max_steps=9", "optimizer=adamw", check=True)
    assert ("optimizer changed to torch.optim.AdamW: its state starts fresh; it takes lr=0.003 (was 0.001) from the "
            "config (lr=0.001 keeps the run's)") in chosen.stdout  # the earlier command's lr was SGD's
    assert load_run(tmp_path / "run").config == ("exp=test_runner", "max_steps=9", "optimizer=adamw",
                                                 "scheduler=cosine")  # SGD's momentum is gone from the label, and
    # lr=1e-3 too: adamw.yaml's `lr: ${lr}` is the exp's lr now, as the start report and config.yaml say


def test_a_kept_optimizer_whose_lr_is_its_class_default_says_that_lr_in_the_config_and_the_report(tmp_path):
    """Adam at lr=1e-3 (torch's default for it), resumed without retyping: .hydra/config.yaml and the checkpoint's
    config said the exp's lr=0.003 and an Adam block without lr, and the report named no lr, while it trained at
    1e-3."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=1", "optimizer=adam", "lr=1e-3", check=True)
    resumed = run_cli("lmplay.train", *args, "max_steps=2", check=True)
    assert "optimizer.lr=0.001" in provenance(resumed.stdout)["checkpoint"]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert saved.lr == saved.optimizer.lr == 0.001 and saved.optimizer._target_ == "torch.optim.Adam"
    assert [r["lr"] for r in json.loads((run / "stats.json").read_text())["train"]] == [0.001, 0.001]
    fresh, kept = tmp_path / "fresh", tmp_path / "kept"  # the kept class's keys as a fresh run of its file writes
    run_cli("lmplay.train", *args[:2], f"hydra.run.dir={fresh}", "max_steps=2", "optimizer=sgd", check=True)  # them:
    run_cli("lmplay.train", *args[:2], f"hydra.run.dir={kept}", "max_steps=1", "optimizer=sgd", check=True)  # all
    run_cli("lmplay.train", *args[:2], f"hydra.run.dir={kept}", "max_steps=2", check=True)  # of SGD's read as
    fresh_config, kept_config = (OmegaConf.load(run / ".hydra" / "config.yaml") for run in (fresh, kept))
    assert OmegaConf.to_yaml(fresh_config.optimizer) == OmegaConf.to_yaml(kept_config.optimizer)  # settings differing
    assert repr(fresh_config.weight_decay) == repr(kept_config.weight_decay) == "0.0"  # between two seeds of it; in
    # the file's order and kinds (its weight_decay 0.0 was torch's signature's 0)


def test_a_run_dir_with_only_its_bak_or_a_directory_for_model_lmp_is_refused(tmp_path):
    """Starting over there would rotate the only good checkpoint away, or fail on the directory later."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}", "runner.save_interval=2"]
    run_cli("lmplay.train", *args, "max_steps=4", check=True)
    (run / "model.lmp").unlink()
    bak = (run / "model.lmp.bak").read_bytes()
    proc = run_cli("lmplay.train", *args, "max_steps=6")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "has model.lmp.bak but no model.lmp: rename it to model.lmp to resume from it" in proc.stderr
    assert (run / "model.lmp.bak").read_bytes() == bak and not (run / "model.lmp").exists()
    (run / "model.lmp").mkdir()
    proc = run_cli("lmplay.train", *args, "max_steps=6")
    assert proc.returncode == 2 and f"{run / 'model.lmp'} is a directory, not a checkpoint" in proc.stderr

def test_a_resume_killed_before_its_first_save_leaves_the_runs_label_as_it_was(tmp_path):
    """The label (.hydra/) took the resume's lr=1e-4 at its start: killed before saving, the run then trained on at
    its old lr and was plotted as lr=1e-4."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", "runner.save_interval=100000", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=4", check=True)
    label = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    proc = popen_train([*args, "max_steps=8", "lr=1e-4"], env={"LMPLAY_PROBE_KILL": "step:6"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == label
    run_cli("lmplay.train", *args, "max_steps=8", "lr=1e-4", check=True)  # saved now: the label is the resume's
    assert "lr=1e-4" in load_run(run).config


def test_typed_values_are_reported_even_where_they_equal_the_classs_own_default(tmp_path):
    """AdamW's signature says lr=0.001, weight_decay=0.01; lmplay's config says otherwise, so typing them changes
    the run and the report must show them."""
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", "lr=1e-3", "weight_decay=0.01",
                   f"hydra.run.dir={tmp_path / 'run'}", check=True)
    assert provenance(proc.stdout)["command line"] >= {"optimizer.lr=0.001", "optimizer.weight_decay=0.01"}
    assert same([0.9, 0.999], (0.9, 0.999))  # a YAML list is the tuple default it stands for: no "change" to report


def test_a_finished_run_says_there_is_nothing_to_train(tmp_path):
    args = ["exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, check=True)
    again = run_cli("lmplay.train", *args, check=True)
    assert "max_steps=2: the run is already at step 2, so there is nothing to train" in again.stdout
    assert len(json.loads((tmp_path / "run" / "stats.json").read_text())["train"]) == 2
    saved = (tmp_path / "run" / "model.lmp").read_bytes()
    shorter = run_cli("lmplay.train", *args[:2], "max_steps=1", *args[3:], check=True)
    assert "max_steps=1: the run is already at step 2" in shorter.stdout
    assert "max_steps=2" in (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()  # its label: 2 steps trained
    assert (tmp_path / "run" / "model.lmp").read_bytes() == saved


def test_a_resume_of_a_finished_curriculum_trains_and_relabels_nothing_until_the_plan_grows(tmp_path):
    """A run that trained through its plan, resumed with other settings (lr=...), has nothing to train: it was
    re-saved and relabelled with settings it never trained with."""
    run = tmp_path / "run"
    plan = "curriculum.stages=[{name: a, datasets: [shakespeare], steps: 3}]"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, plan, check=True)
    def files() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in [*run.glob("model*.lmp*"), *(run / ".hydra").iterdir()]}

    saved = files()
    again = run_cli("lmplay.train", *args, plan, "lr=0.002", check=True)
    assert "the run has trained through its curriculum (its last stage, 'a', ended at step 3), so there is nothing " \
           "to train" in again.stdout
    assert files() == saved
    longer = run_cli("lmplay.train", *args, plan.replace("steps: 3", "steps: 5"), check=True)
    assert "nothing to train" not in longer.stdout
    assert [r["step"] for r in json.loads((run / "stats.json").read_text())["train"]] == [1, 2, 3, 4, 5]


def test_a_resume_that_re_spans_the_lr_schedule_says_so(tmp_path):
    args = ["exp=test_runner", "device=cpu", "scheduler=cosine", "scheduler.min_lr=0.0", "lr=0.002",
            f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, "max_steps=4", check=True)
    same = run_cli("lmplay.train", *args, "max_steps=4", check=True)
    assert "schedule now spans" not in same.stdout
    longer = run_cli("lmplay.train", *args, "max_steps=8", check=True)
    # cosine over 4 steps had reached min_lr (0) at its last step; over 8, step 4 (0-based) is at cos(pi * 4 / 7)
    assert "note: this stage's lr schedule now spans 8 steps, not 4 (max_steps or the batch changed): its next " \
           "step trains at lr 0.000777, not 0" in longer.stdout
    lrs = [r["lr"] for r in json.loads((tmp_path / "run" / "stats.json").read_text())["train"]]
    assert lrs[3] == 0.0 and lrs[4] == pytest.approx(0.001 * (1 + math.cos(math.pi * 4 / 7)))
    # max_steps is no trained setting, so the plot compared the run with others as if trained on one schedule
    from lmplay.stats.plot import comparison_table, group_runs
    from lmplay.stats.runs import load_runs

    assert ("was resumed with other settings (at step 4: lr schedule's steps 4/8)"
            in comparison_table(group_runs(load_runs([tmp_path / "run"]))))


def test_a_resumed_change_is_recorded_once_and_in_a_hydra_dir_made_for_it(tmp_path):
    """A resume of the same checkpoint again (after a crash) changes the same: recorded once, also where it changed
    a setting and the schedule both. A run dir whose .hydra/ was deleted stopped the resume with an OutputError."""
    from lmplay.stats.runs import RESUMED_CHANGES, read_yaml, record_resumed_change

    hydra = tmp_path / "run" / ".hydra"
    for _ in range(2):
        record_resumed_change(hydra, 4, {"lr schedule's steps": [4, 8]})
        record_resumed_change(hydra, 4, {"optimizer.lr": ["0.002", "0.003"]})
    assert read_yaml(hydra / RESUMED_CHANGES, list) == [{"step": 4, "changed": {"lr schedule's steps": [4, 8]}},
                                                         {"step": 4, "changed": {"optimizer.lr": ["0.002", "0.003"]}}]


def test_bak_is_the_checkpoint_before_and_a_finished_run_rewrites_nothing(tmp_path):
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", "runner.save_interval=32", "runner.validation_interval=32",
            "curriculum.stages=[{name: s, datasets: [shakespeare], steps: 8}]", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, check=True)  # 8 samples a step: a save and a validation at steps 4 and 8

    def step(path):
        return checkpoint.load(path)["components"]["runner"]["state"]["progress"]["step"]

    assert (step(run / "model.lmp"), step(run / "model.lmp.bak")) == (8, 4)  # the end's save wrote nothing again
    files = {p.name: p.read_bytes() for p in run.glob("model*.lmp*")}
    assert "model.s.lmp" in files
    run_cli("lmplay.train", *args, check=True)  # the curriculum is done: nothing is rewritten or rotated
    assert {p.name: p.read_bytes() for p in run.glob("model*.lmp*")} == files


def test_architecture_cannot_change_on_resume(tmp_path):
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, "max_steps=1", check=True)
    proc = run_cli("lmplay.train", *args, "max_steps=2", "model.num_blocks=3")
    assert proc.returncode == 2 and "num_blocks" in proc.stderr and "fresh=true" in proc.stderr
    # the vocabulary's padding too: it was ignored, while the start report said "vocabulary padded 257 -> 320"
    proc = run_cli("lmplay.train", *args, "max_steps=2", "vocab_multiple=64")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "vocab_multiple=64 cannot change on resume: the checkpoint's model has vocab_size=257" in proc.stderr
    resumed = run_cli("lmplay.train", *args, "max_steps=2", "vocab_multiple=1", check=True)  # the same vocabulary
    assert "vocabulary padded" not in resumed.stdout


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PWNED_PATH']}",))


def test_crafted_checkpoint_executes_nothing(tmp_path, monkeypatch):
    pwned = tmp_path / "PWNED"
    monkeypatch.setenv("PWNED_PATH", str(pwned))
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "model.lmp", "wb") as f:
        pickle.dump({"format_version": 1, "exploit": Exploit()}, f)
    torch.save({"format_version": 1, "exploit": Exploit()}, run / "model2.lmp")
    for name in ("model.lmp", "model2.lmp"):
        with pytest.raises(ConfigError):
            checkpoint.load(run / name)
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", f"hydra.run.dir={run}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not pwned.exists()



def test_targets_inside_a_checkpoints_settings_are_never_called(tmp_path):
    """A checkpoint's curriculum settings (its stages, cache_dir) are data: a `_target_` nested in them, which
    Hydra's instantiate would call, must stay a plain mapping; a stage's scheduler override builds only a Schedule."""
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", f"hydra.run.dir={run}", check=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    ckpt = torch.load(run / "model.lmp", weights_only=True)
    settings = ckpt["components"]["curriculum"]["state_args"]
    settings["cache_dir"] = {"_target_": "pathlib.Path.write_text", "self": str(victim), "data": "pwned"}
    settings["stages"][0]["overrides"] = {"scheduler": {"_target_": "subprocess.Popen",
                                                        "args": ["touch", str(tmp_path / "PWNED")]}}
    torch.save(ckpt, run / "model.lmp")
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={run}")
    assert victim.read_text() == "precious" and not (tmp_path / "PWNED").exists()
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_class_a_checkpoint_names_imports_no_module_outside_torch_and_lmplay(tmp_path, monkeypatch):
    """Importing a module runs it: a checkpoint naming `payload.X` (a payload.py beside the user's cwd, which
    `python -m` puts on sys.path) must not import it, even to find out that it is no optimizer."""
    args = ["exp=test_runner", "device=cpu", "max_steps=1"]
    make_runner(args, tmp_path / "run").train()
    (tmp_path / "payload.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w')\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for component in ("optimizers", "lr_schedulers"):
        ckpt = checkpoint.load(tmp_path / "run" / "model.lmp")
        ckpt["components"][component]["state_args"]["_target_"] = "payload.X"
        with pytest.raises(ConfigError, match=r"trained with the \w+ payload.X, whose module a checkpoint does not "
                                              r"import by itself .*_target_=payload.X"):
            make_runner([*args, "max_steps=2"], tmp_path / "run", ckpt)
    assert "payload" not in sys.modules and not (tmp_path / "PWNED").exists()


def test_a_checkpoint_s_strings_reach_the_terminal_escaped(tmp_path):
    """An experiment name holding escape sequences cleared the screen and retitled the terminal when inspect,
    generate or a resume's error printed it."""
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", f"hydra.run.dir={run}", check=True)
    ckpt = torch.load(run / "model.lmp", weights_only=True)
    ckpt["exp"] = "x\x1b[2J\x1b]0;pwn\x07"
    torch.save(ckpt, run / "model.lmp")
    for proc in (run_cli("lmplay.inspect", str(run)), run_cli("lmplay.generate", f"checkpoint={run}", "prompt=Hi"),
                 run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={run}")):
        assert "\x1b" not in proc.stdout + proc.stderr and "x\\x1b[2J" in proc.stdout + proc.stderr, proc


def test_a_resume_removes_what_a_killed_run_was_writing_aside(tmp_path):
    """A kill during a write left its temp file (.stats.json.<uuid>.tmp, model.lmp.tmp as large as the model) in the
    run dir for good, one more a crash."""
    run = tmp_path / "run"
    train = ["lmplay.train", "exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli(*train, "max_steps=1", check=True)
    aside = [run / f".stats.json.{'ab12' * 8}.tmp", run / ".hydra" / f".config.yaml.{'0f' * 16}.tmp",
             run / "model.lmp.tmp", run / "model.lmp.bak.tmp", run / "model.shakespeare.lmp.tmp"]
    kept = [run / ".notes.tmp", run / "notes.tmp", run / ".stats.json.mine.tmp"]  # not lmplay's
    for path in aside + kept:
        path.write_text("x")
    run_cli(*train, "max_steps=2", check=True)
    assert [p.name for p in aside if p.exists()] == [] and all(p.exists() for p in kept)


def test_damaged_settings_name_a_previous_checkpoint_only_where_one_loads(tmp_path):
    """A damaged part found as the run is built said "the run dir's model.lmp.bak is the previous checkpoint" in a
    run dir that had none (a run that saved once)."""
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", f"hydra.run.dir={run}", check=True)
    good = torch.load(run / "model.lmp", weights_only=True)
    ckpt = copy.deepcopy(good)
    ckpt["components"]["optimizers"]["state_args"]["_target_"] = "subprocess.Popen"
    torch.save(ckpt, run / "model.lmp")
    train = ["lmplay.train", "exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={run}"]
    assert not (run / "model.lmp.bak").exists()
    proc = run_cli(*train)
    assert proc.returncode == 2 and "settings are damaged" in proc.stderr and ".bak" not in proc.stderr, proc.stderr
    torch.save(good, run / "model.lmp.bak")
    proc = run_cli(*train)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"the previous checkpoint is {run / 'model.lmp.bak'} (rename it" in proc.stderr, proc.stderr


def test_damaged_fields_of_a_checkpoint_are_one_line_errors(tmp_path):
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", f"hydra.run.dir={run}", check=True)
    good = torch.load(run / "model.lmp", weights_only=True)
    train = ["lmplay.train", "exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={run}"]
    cases = [(lambda c: c.update(rng={}), "random-number states are damaged", train),
             (lambda c: c["components"]["runner"]["state"]["progress"].update(step="a"),
              "has no progress counters (non-negative integers)", train),
             # each was a traceback (KeyError, AttributeError, ValueError), blamed the settings, or resumed
             # silently with fresh optimizer moments or the data from its first row
             (lambda c: c["components"]["runner"]["state"].pop("progress"), "has no progress counters",
              ["lmplay.inspect", str(run)]),
             (lambda c: c["components"]["curriculum"]["state"].update(position="x"), "has no data position",
              ["lmplay.inspect", str(run)]),
             (lambda c: c["components"]["curriculum"]["state"].pop("position"), "has no data position", train),
             (lambda c: c.update(seed="abc"), "has no integer seed", train),
             (lambda c: c["components"]["optimizers"].update(state={}), "has no optimizer state", train),
             (lambda c: c["components"]["runner"]["state"].update(records_json="not json"),
              "stats records are damaged: not JSON", train),
             (lambda c: c["components"]["runner"]["state_args"].update(batch_size="abc"),
              "settings are damaged: runner.batch_size='abc' should be an integer", train),
             (lambda c: c["components"]["model"]["state"].update(weights={"a": 1}), "it has no model weights",
              ["lmplay.inspect", str(run)]),
             # a weight named by a number was an AttributeError traceback in generate and load_model
             (lambda c: c["components"]["model"]["state"]["weights"].update({123: torch.zeros(1)}),
              "it has no weight names (strings)", ["lmplay.generate", f"checkpoint={run}", "prompt=Hi"]),
             # built whole (minutes, gigabytes) before saying the weights were missing; then, on the meta device,
             # still 19 s and 744 MB for 10,000 blocks' Python modules
             (lambda c: c["components"]["model"]["state_args"].update(num_blocks=100_000),
              "do not fit its arguments (num_blocks=100000, weights of 2 blocks): a damaged checkpoint",
              ["lmplay.generate", f"checkpoint={run}", "prompt=Hi"]),
             (lambda c: (c["components"]["model"]["state_args"].update(num_blocks=10**6),  # one forged weight's
                         c["components"]["model"]["state"]["weights"].update({"blocks.999999.x": torch.zeros(1)})),
              "(num_blocks=1000000, weights of 3 blocks)", ["lmplay.generate", f"checkpoint={run}", "prompt=Hi"]),
             # torch's C++ stack, 14 lines of it, inside the "one line"
             (lambda c: c["components"]["model"]["state_args"].update(vocab_size=2**70),
              "does not fit the installed code of experiment 'test_runner'",
              ["lmplay.generate", f"checkpoint={run}", "prompt=Hi"]),
             # the config's ${oc.env:...} was resolved into the error naming the class
             (lambda c: c.update(exp="mine", config={"model": {"_target_": "${oc.env:HOME}"}}),
              "no registered version has its model class (${oc.env:HOME})",
              ["lmplay.generate", f"checkpoint={run}", "prompt=Hi"]),
             (lambda c: c["components"]["optimizers"]["state_args"].update(_target_="torch.optim.LBFGS"),
              "optimizer torch.optim.LBFGS takes no weight_decay", train),
             # a resume built the model first: 33 s and 2 GB, then a 6.8 MB "line" of torch's missing keys
             (lambda c: c["components"]["model"]["state_args"].update(num_blocks=20_000),
              "do not fit its arguments (num_blocks=20000, weights of 2 blocks): a damaged checkpoint; fresh=true",
              train),
             # trained on, then named model.lmp the last good checkpoint as its first step diverged
             (lambda c: c["components"]["model"]["state"]["weights"]["embed.tok.weight"].fill_(float("nan")),
              "weights hold NaN or inf: training on from them cannot work; or start over with fresh=true", train)]
    for change, needle, command in cases:
        ckpt = copy.deepcopy(good)
        change(ckpt)
        torch.save(ckpt, run / "model.lmp")
        proc = run_cli(*command)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert needle in proc.stderr
    older = copy.deepcopy(good)  # as lmplay wrote them before 2026-11-26: sampling refused them as incomplete
    del older["seed"], older["components"]["runner"]["state"]["records_json"]
    torch.save(older, run / "model.lmp")
    resumed = run_cli(*train)
    assert resumed.returncode == 2 and "has no integer seed, which a resume needs: an older lmplay wrote it" in \
        resumed.stderr and "its model still samples" in resumed.stderr
    sampled = run_cli("lmplay.generate", f"checkpoint={run}", "prompt=Hi", "max_new_tokens=2", check=True)
    assert sampled.stdout.startswith("Hi")


def test_a_checkpoint_s_damaged_positions_and_class_names_are_missing_parts(tmp_path):
    """Each passed the check of a training checkpoint's parts, and the resume ended in a traceback, some after it
    had said "resuming" or trained."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    good = checkpoint.load(make_runner(["exp=test_runner", "device=cpu", "max_steps=2"], tmp_path).save())
    assert checkpoint.missing_training_part(good) is None
    for change in [
        lambda c: c["components"]["optimizers"]["state_args"].update(_target_=5),  # 'int' has no rpartition
        lambda c: c["components"]["curriculum"]["state"]["position"].update(feed=[1, 2]),  # TypeError in the feed
        lambda c: c["components"]["curriculum"]["state"]["position"].pop("data"),  # KeyError
        lambda c: c["components"]["curriculum"]["state"]["position"].update(steps="abc"),  # ValueError
        lambda c: c["components"]["runner"]["state"]["progress"].update(stage_total="x"),  # TypeError, schedule
        lambda c: c["components"]["runner"]["state"]["progress"].update(tokens=2**200),  # TensorBoard failed
    ]:
        ckpt = copy.deepcopy(good)
        change(ckpt)
        assert checkpoint.missing_training_part(ckpt) is not None


def test_an_idea_with_more_block_entries_than_num_blocks_resumes():
    """An idea's extra refining block (blocks holds num_blocks + 1) trained, and every resume of it was refused as
    "a damaged checkpoint" once the resume checked its weights before building the model."""
    from lmplay.runner import checkpoint

    def build() -> torch.nn.Module:
        model = torch.nn.Module()
        model.blocks = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(3))
        return model

    state = {"weights": build().state_dict()}
    checkpoint.check_weights_fit(build, {"num_blocks": 2}, state, "the weights")
    with pytest.raises(ConfigError, match=r"the weights do not fit its arguments \(num_blocks=100000, weights of 3 "
                                          r"blocks\): a damaged checkpoint$"):
        checkpoint.check_weights_fit(build, {"num_blocks": 100_000}, state, "the weights")


def test_a_checkpoint_config_of_nested_yaml_aliases_loads_at_once(tmp_path):
    """OmegaConf copied each alias of a crafted config: 9 levels of 9 aliases ran generate out of memory."""
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", f"hydra.run.dir={run}", check=True)
    ckpt = torch.load(run / "model.lmp", weights_only=True)
    bomb, last = 'a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]\n', "a"
    for name in "bcdefghi":
        bomb += f"{name}: &{name} [{', '.join(['*' + last] * 9)}]\n"
        last = name
    ckpt["config"] = bomb
    torch.save(ckpt, run / "model.lmp")
    proc = run_cli("lmplay.generate", f"checkpoint={run}", "prompt=Hi", "max_new_tokens=2", timeout=60, check=True)
    assert proc.stdout.startswith("Hi")


def test_truncated_and_empty_checkpoints_get_clean_errors(tmp_path):
    run = tmp_path / "run"
    for steps in (1, 2):  # two saves, so there is a .bak to offer
        run_cli("lmplay.train", "exp=test_runner", "device=cpu", f"max_steps={steps}", f"hydra.run.dir={run}", check=True)
    data = (run / "model.lmp").read_bytes()
    for content in (data[: len(data) // 2], b""):
        (run / "model.lmp").write_bytes(content)
        proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=3", f"hydra.run.dir={run}")
        assert proc.returncode == 2
        assert "truncated or corrupt" in proc.stderr and "model.lmp.bak" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    flipped = bytearray(data)  # one bit of the largest tensor: torch.load alone would read it as a wrong weight
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        tensor = max(archive.infolist(), key=lambda record: record.file_size)
    flipped[tensor.header_offset + 30 + len(tensor.filename) + len(tensor.extra) + tensor.file_size // 2] ^= 1
    (run / "model.lmp").write_bytes(flipped)
    for command in (["lmplay.train", "exp=test_runner", "device=cpu", "max_steps=3", f"hydra.run.dir={run}"],
                    ["lmplay.generate", f"checkpoint={run}", "prompt=hi", "max_new_tokens=2"]):
        proc = run_cli(*command)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
        assert "is corrupt: its bytes no longer match the checksums saved with them" in proc.stderr
        assert "model.lmp.bak" in proc.stderr
    assert (run / "model.lmp").read_bytes() == flipped  # nothing rewritten: the user can still recover it


def test_a_damaged_checkpoint_names_the_latest_one_beside_it_that_loads(tmp_path):
    """With its .bak damaged too, the error named the .bak, whose rename gave the next error, and not the intact
    stage-end checkpoint; a diverged run's model.corrupted.lmp or a model saved alone is never offered."""
    from lmplay.generation.loading import load_model, save_model

    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}",
            ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 2},{name: b, datasets: [shakespeare], "
             "steps: 3}]")]
    run_cli("lmplay.train", *args, "max_steps=4", check=True)
    shutil.copy(run / "model.a.lmp", run / "model.corrupted.lmp")
    save_model(*load_model(run / "model.a.lmp"), run / "model.for_hub.lmp")  # a model alone: no run resumes it
    for name in ("model.lmp", "model.lmp.bak"):
        (run / name).write_bytes((run / name).read_bytes()[:100])
    proc = run_cli("lmplay.train", *args, "max_steps=5")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.strip().endswith(f"; the previous checkpoint is {run / 'model.a.lmp'} (copy it to model.lmp "
                                        f"to use it)"), proc.stderr


def plain_checkpoint(value: torch.Tensor) -> dict:
    """The least a checkpoint holds: an experiment name and a model."""
    return {"exp": "x", "components": {"model": {"state_args": {}, "state": {"weights": {"w": value}}}}}


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")])
def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch, failure):
    """A full disk (torch's writer says so with a RuntimeError) is one clear error; the last checkpoint stays."""
    path = tmp_path / "model.lmp"
    checkpoint.save(plain_checkpoint(torch.ones(3)), path)

    def half_write(obj, f):
        f.write(b"PK\x03\x04 partial")
        raise failure

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OutputError, match="could not write checkpoint .*model.lmp.*the previous one is intact") as e:
        checkpoint.save(plain_checkpoint(torch.zeros(3)), path)
    assert ("is the disk full (" in str(e.value)) == isinstance(failure, RuntimeError)  # torch's own words name no cause
    with pytest.raises(OutputError, match="could not write checkpoint .*model.first.lmp.*none was written before it"):
        checkpoint.save(plain_checkpoint(torch.zeros(3)), tmp_path / "model.first.lmp")  # nothing to keep: no claim
    monkeypatch.undo()
    assert torch.equal(weights(tmp_path)["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.lmp"]


def test_a_temp_file_that_cannot_be_made_is_one_error_not_two_chained(tmp_path):
    checkpoint.save(plain_checkpoint(torch.ones(3)), tmp_path / "model.lmp")
    (tmp_path / "model.lmp.tmp").mkdir()  # its name taken: the clean-up's unlink failed too, and chained a traceback
    with pytest.raises(OutputError, match=r"could not write checkpoint .*model.lmp \(Is a directory: .*model.lmp.tmp\); "
                                          r"the previous one is intact"):
        checkpoint.save(plain_checkpoint(torch.zeros(3)), tmp_path / "model.lmp")
    assert torch.equal(weights(tmp_path)["w"], torch.ones(3))
    (tmp_path / "model.lmp.tmp").rmdir()
    (tmp_path / "model.lmp.bak").mkdir()  # the rotation's target taken: named, and its temp link not left behind
    with pytest.raises(OutputError, match=r"\(Is a directory: .*model.lmp.bak\)"):
        checkpoint.save(plain_checkpoint(torch.zeros(3)), tmp_path / "model.lmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.lmp", "model.lmp.bak"]


def test_a_filesystem_without_hard_links_still_keeps_the_previous_checkpoint_as_bak(tmp_path, monkeypatch):
    """gcsfuse, s3fs and some SMB mounts refuse link(): every save after the first stopped the run."""
    def no_link(*_args, **_kwargs):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "model.lmp"
    for value in (1.0, 2.0, 3.0):
        checkpoint.save(plain_checkpoint(torch.full((3,), value)), path)
    assert torch.equal(weights(tmp_path)["w"], torch.full((3,), 3.0))
    bak = torch.load(tmp_path / "model.lmp.bak", weights_only=True)["components"]["model"]["state"]["weights"]["w"]
    assert torch.equal(bak, torch.full((3,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.lmp", "model.lmp.bak"]


def test_an_incomplete_checkpoint_is_one_line_and_touches_nothing(tmp_path):
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={run}", check=True)
    stats = (run / "stats.json").read_text()
    cases = [({"format_version": 1}, "has no experiment name"),
             ({**plain_checkpoint(torch.ones(1)), "format_version": "1"}, "has no integer format_version"),
             ({"format_version": 1, "exp": "test_runner", "components": {}}, "has no model arguments")]
    for ckpt, needle in cases:
        torch.save(ckpt, run / "model.lmp")
        with pytest.raises(ConfigError, match=needle):
            checkpoint.load(run / "model.lmp")
        proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=3", f"hydra.run.dir={run}")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    for command in (["lmplay.inspect", str(run / "model.lmp")],
                    ["lmplay.generate", f"checkpoint={run / 'model.lmp'}", "prompt=a"]):
        proc = run_cli(*command)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert (run / "stats.json").read_text() == stats


def test_another_experiment_cannot_resume_a_run_dir(tmp_path):
    """gpt2 (tied embeddings) once loaded test_runner's weights into itself and trained on, under the old name."""
    run = tmp_path / "run"
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=2", f"hydra.run.dir={run}", check=True)
    before = (run / "model.lmp").read_bytes()
    proc = run_cli("lmplay.train", "exp=gpt2", "optimizer=sgd", "device=cpu", "max_steps=3", f"hydra.run.dir={run}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "experiment 'test_runner', not exp=gpt2" in proc.stderr and "fresh=true" in proc.stderr
    assert (run / "model.lmp").read_bytes() == before


def test_a_crash_early_in_a_later_stage_resumes_at_that_stages_start(tmp_path):
    """model.lmp is saved as each stage ends: a divergence in the next stage, before its first periodic save,
    used to leave only model.<stage>.lmp, so that rerunning the command started over from step 0."""
    stages = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 4},"
              " {name: b, datasets: [shakespeare], steps: 30, overrides: {lr: 1.0e+6}}]")
    runner = make_runner(["exp=test_runner", "device=cpu", "scheduler=constant", stages,
                          "runner.save_interval=100000"], tmp_path / "run")
    with pytest.raises(DivergedError):
        runner.train()
    progress = checkpoint.load(tmp_path / "run" / "model.lmp")["components"]["runner"]["state"]["progress"]
    assert (progress["step"], progress["stage_step"]) == (4, 0)


def test_a_divergence_before_any_save_does_not_point_at_a_checkpoint(tmp_path):
    with pytest.raises(DivergedError, match="no good checkpoint was saved yet, so a rerun starts over"):
        make_runner(["exp=test_runner", "device=cpu", "max_steps=60", "lr=1e4"], tmp_path).train()
    assert (tmp_path / "model.corrupted.lmp").exists() and not (tmp_path / "model.lmp").exists()


def test_resume_keeps_the_runs_seed_and_data_plan_unless_typed(tmp_path):
    """Resuming with a shorter command (no seed=, no curriculum.batching=) continues the same run exactly."""
    plan = ["exp=test_runner", "device=cpu", "seed=2", "curriculum.batching=packed"]
    run_cli("lmplay.train", *plan, "max_steps=12", f"hydra.run.dir={tmp_path / 'whole'}", check=True)
    run_cli("lmplay.train", *plan, "max_steps=6", f"hydra.run.dir={tmp_path / 'split'}", check=True)
    resumed = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=12",
                      f"hydra.run.dir={tmp_path / 'split'}", check=True)
    assert provenance(resumed.stdout)["checkpoint"] >= {"curriculum.batching=packed", "seed=2"}
    assert "packed batching" in resumed.stdout
    whole, split = (replayable(json.loads((tmp_path / d / "stats.json").read_text())) for d in ("whole", "split"))
    assert whole["train"] == split["train"]  # (the split run also validated where its first part stopped)
    assert whole["validation"][-1] == split["validation"][-1]
    chosen = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=14", "curriculum=shakespeare",
                     f"hydra.run.dir={tmp_path / 'split'}", check=True)  # choosing the group's file types its keys
    assert "rows batching" in chosen.stdout and "curriculum.batching=rows" in provenance(chosen.stdout)["chosen group"]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=10", "runner.save_interval=8"], tmp_path)
    real = runner.model.loss_terms
    calls = {"n": 0}

    def poisoned(inputs, targets):
        calls["n"] += runner.model.training  # count training forwards only, not validation
        loss, correct = real(inputs, targets)
        return (loss * float("nan"), correct) if calls["n"] > 8 else (loss, correct)

    runner.model.loss_terms = poisoned
    with pytest.raises(DivergedError, match="nan.*model.lmp is the last good checkpoint"):
        runner.train()
    assert (tmp_path / "model.corrupted.lmp").exists()
    good = checkpoint.load(tmp_path / "model.lmp")
    assert good["components"]["runner"]["state"]["progress"]["step"] == 4
    assert all(torch.isfinite(t).all() for t in good["components"]["model"]["state"]["weights"].values())


def test_preemption_signal_saves_then_hands_over_to_the_jobs_handler(tmp_path):
    """SLURM signals (SIGUSR2 via submitit) before a time limit: the runner saves first, then lets the
    job's own handler requeue it, so the requeued job resumes from that step instead of the last periodic save."""
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=1000", "runner.save_interval=100000"], tmp_path)
    saved_steps = []

    def job_handler(signum, frame):  # what submitit installs: requeue, then exit
        saved_steps.append(checkpoint.load(tmp_path / "model.lmp")["components"]["runner"]["state"]["progress"]["step"])
        raise SystemExit(-1)

    next_batch = runner.curriculum.next_batch

    def preempted_at_step_3(*args):
        if runner.runner_c.progress["step"] == 3:
            os.kill(os.getpid(), signal.SIGUSR2)
        return next_batch(*args)

    runner.curriculum.next_batch = preempted_at_step_3
    previous = signal.signal(signal.SIGUSR2, job_handler)
    try:
        with pytest.raises(SystemExit) as stopped:
            runner.train()
        assert signal.getsignal(signal.SIGUSR2) is job_handler
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stopped.value.code == -1 and saved_steps == [4]  # the step under way when the signal came finished


def test_fresh_sets_the_replaced_runs_checkpoints_aside(tmp_path):
    """Its stage checkpoints sat beside the new run's model.lmp as if it had finished those stages, and the new
    run's second save rotated its old model.lmp out of model.lmp.bak."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "curriculum.stages=[{name: a, datasets: [shakespeare], steps: 2},"
            "{name: b, datasets: [shakespeare], steps: 2}]", check=True)
    old = {p.name: p.read_bytes() for p in run.glob("model*.lmp*")}
    assert {"model.a.lmp", "model.b.lmp", "model.lmp", "model.lmp.bak"} <= set(old)
    old_stats, old_events = (run / "stats.json").read_bytes(), sorted(p.name for p in (run / "tb").iterdir())
    proc = run_cli("lmplay.train", *args, "max_steps=4", "runner.save_interval=8", "fresh=true", check=True)
    [aside] = run.glob("replaced_*")
    assert f"the replaced run's checkpoints, stats and TensorBoard files are kept in {aside}" in proc.stdout
    assert {p.name: p.read_bytes() for p in aside.glob("model*")} == old  # the new run saved twice: nothing rotated
    assert sorted(p.name for p in run.glob("model*")) == ["model.lmp", "model.lmp.bak"]
    # TensorBoard drew the two runs as one curve in tb/; the old stats.json was overwritten
    assert (aside / "stats.json").read_bytes() == old_stats and sorted(p.name for p in (aside / "tb").iterdir()) == old_events
    assert not set(old_events) & {p.name for p in (run / "tb").iterdir()} and (aside / ".hydra" / "config.yaml").is_file()


def test_a_set_aside_cut_short_is_finished_by_the_next_fresh_start_and_stops_a_resume(tmp_path, monkeypatch):
    """kill -9 between two moves left model.lmp in replaced_<time>/ and the rest in the run dir: a resume then took
    the older .bak, and the next fresh=true split the replaced run over two dirs."""
    from lmplay.files import set_aside_old_run
    from lmplay.train import resumed_checkpoint

    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}", "runner.save_interval=8"]
    run_cli("lmplay.train", *args, "max_steps=3", check=True)
    old = {p.name for p in run.iterdir()} - {".lmplay.lock"}
    moves = []

    def killed_after_one_move(self, target):
        if moves:
            raise KeyboardInterrupt  # as if killed here
        moves.append(self)
        return original(self, target)

    original = type(run).replace
    monkeypatch.setattr(type(run), "replace", killed_after_one_move)
    with pytest.raises(KeyboardInterrupt):
        set_aside_old_run(run)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"a fresh=true start was cut short while it moved the old run into "
                                          r".*\.replaced_.*: rerun with fresh=true to finish it"):
        resumed_checkpoint(run, fresh=False)
    proc = run_cli("lmplay.train", *args, "max_steps=2", "fresh=true", check=True)
    [aside] = [p for p in run.iterdir() if "replaced_" in p.name]
    assert not aside.name.startswith(".") and {p.name for p in aside.iterdir()} == old
    assert f"kept in {aside}" in proc.stdout


def test_two_set_asides_within_one_second_keep_both_runs(tmp_path):
    """Both went into the same replaced_<time>/, the second run's files over the first's."""
    from lmplay.files import set_aside_old_run

    for text in ("first", "second"):
        (tmp_path / "stats.json").write_text(text)
        set_aside_old_run(tmp_path)
    kept = sorted((p / "stats.json").read_text() for p in tmp_path.glob("replaced_*"))
    assert kept == ["first", "second"]


def test_a_slurm_requeue_of_a_fresh_command_resumes_and_a_stopped_fresh_run_says_how_to_resume(tmp_path):
    """submitit requeues a preempted job with its command as typed: fresh=true moved the checkpoint aside and
    started from step 0 at every requeue; and 'run the same command to resume' started over too."""
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", "fresh=true"]
    run_cli("lmplay.train", *args, "max_steps=3", env={"SLURM_JOB_ID": "7"}, check=True)
    requeued = run_cli("lmplay.train", *args, "max_steps=5", env={"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "1"},
                       check=True)
    assert "this SLURM job (SLURM_JOB_ID=7) started the run over before it was requeued" in requeued.stdout
    assert "resuming" in requeued.stdout and not list((tmp_path / "run").glob("replaced_*"))
    # a requeue of a job that never got to start over (preempted while tokenizing) still starts over
    other = run_cli("lmplay.train", *args, "max_steps=2", env={"SLURM_JOB_ID": "8", "SLURM_RESTART_COUNT": "1"},
                    check=True)
    assert "resuming" not in other.stdout and len(list((tmp_path / "run").glob("replaced_*"))) == 1
    runner = make_runner(["exp=test_runner", "device=cpu", "fresh=true"], tmp_path / "other")
    assert runner.resume_hint == "run the same command without fresh=true to resume"


def test_a_key_typed_inside_the_checkpoints_data_plan_changes_that_plan(tmp_path):
    """`curriculum.stages.0.epochs=3` on a resume that does not retype `curriculum=NAME`: the run keeps its own
    data (not the default plan's) and trains it for 3 epochs; before, the typed value was dropped in silence."""
    (tmp_path / "small.txt").write_text("\n\n".join(f"Paragraph {i} of a small text." for i in range(200)))
    run = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *run, "curriculum=text_file", f"curriculum.path={tmp_path / 'small.txt'}", "max_steps=2",
            check=True)
    resumed = run_cli("lmplay.train", *run, "max_steps=3", "curriculum.stages.0.epochs=3", check=True)
    assert "small.txt" in resumed.stdout and "3.0 epochs" in resumed.stdout
    assert "curriculum.stages.0.epochs=3 (was 1)" in resumed.stdout.split("command line:")[1].splitlines()[0]


def test_a_resumed_runs_saved_config_is_the_run_it_trains_not_the_commands_defaults(tmp_path):
    """.hydra/config.yaml and the checkpoint's config said AdamW, lr 0.003, batch 8, seed 1337 after a resume of
    an SGD run at lr 0.01, batch 16, seed 5 that the start report rightly called SGD."""
    import yaml

    run = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *run, "max_steps=2", "optimizer=sgd", "lr=1e-2", "scheduler=cosine", "batch_size=16",
            "grad_clip=0.5", "seed=5", check=True)
    run_cli("lmplay.train", *run, "max_steps=3", check=True)
    saved = yaml.safe_load((tmp_path / "run" / ".hydra" / "config.yaml").read_text())
    stored = yaml.safe_load(checkpoint.load(tmp_path / "run" / "model.lmp")["config"])
    for cfg in (saved, stored):
        assert cfg["optimizer"]["_target_"] == "torch.optim.SGD" and cfg["optimizer"]["lr"] == cfg["lr"] == 0.01
        assert cfg["scheduler"]["_target_"] == "lmplay.runner.schedules.Cosine"
        assert cfg["runner"]["batch_size"] == cfg["batch_size"] == 16 and cfg["grad_clip"] == 0.5
        assert cfg["seed"] == 5 and cfg["max_steps"] == 3  # what this command typed is there too


def test_a_top_level_key_the_kept_or_newly_chosen_group_does_not_read_is_said_and_not_kept_as_a_label(tmp_path):
    """warmup_fraction=0.5 on a resume of a Constant-schedule run was 'scheduler: unknown key warmup_fraction' (a key
    nobody typed), where a fresh run gets a note; and after optimizer=adamw on a resume, the label kept the earlier
    command's lr=1e-2 while the run trained at the adamw file's lr."""
    import yaml

    run = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *run, "max_steps=2", "scheduler=constant", "optimizer=sgd", "lr=1e-2", check=True)
    resumed = run_cli("lmplay.train", *run, "max_steps=3", "warmup_fraction=0.5", check=True)
    assert ("note: warmup_fraction=0.5 changes nothing in this run: its scheduler, lmplay.runner.schedules.Constant as "
            "the run was built, takes no warmup_fraction") in resumed.stdout
    assert not any("warmup_fraction" in o for o in yaml.safe_load((tmp_path / "run" / ".hydra" / "overrides.yaml")
                                                                   .read_text()))  # nor labels the run
    run_cli("lmplay.train", *run, "max_steps=4", "optimizer=adamw", check=True)
    labels = yaml.safe_load((tmp_path / "run" / ".hydra" / "overrides.yaml").read_text())
    config = yaml.safe_load((tmp_path / "run" / ".hydra" / "config.yaml").read_text())
    assert "optimizer=adamw" in labels and not any(o.startswith("lr=") for o in labels) and config["lr"] == 0.003


def test_a_damaged_overrides_file_is_said_on_resume_not_read_as_no_overrides(tmp_path):
    """An emptied .hydra/overrides.yaml (a crash mid-write, before it was written atomically) silently dropped
    the run's lr=1e-3 from its label: plots and sweeps then named it the default."""
    args = ["exp=test_runner", "device=cpu", "lr=1e-3", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, "max_steps=2", check=True)
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("")
    proc = run_cli("lmplay.train", *args, "max_steps=3", check=True)
    assert "overrides.yaml is damaged (not a list of overrides)" in proc.stderr
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml.damaged").read_text() == ""  # kept to mend the label from
    assert not list((tmp_path / "run" / ".hydra").glob("*.tmp"))
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- run_name=${oc.env:MY_SECRET}\n- lr=0.001\n")
    run_cli("lmplay.train", *args, "max_steps=4", env={"MY_SECRET": "hunter2"}, check=True)  # edited in by hand: the
    label = (tmp_path / "run" / ".hydra" / "overrides.yaml").read_text()  # secret's value went into the label
    assert "hunter2" not in label and "run_name=${oc.env:MY_SECRET}" in label


def test_a_resume_that_changes_the_held_out_set_says_so(tmp_path):
    """A resume with another batch_size validated on twice the samples from then on, a jump in the curve that the
    start report did not explain."""
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, "max_steps=2", check=True)
    proc = run_cli("lmplay.train", *args, "max_steps=3", "batch_size=16", check=True)
    assert ("note: validation now holds out validation_batches x batch_size = 2 x 16 samples, not 16" in proc.stdout)
    proc = run_cli("lmplay.train", *args, "max_steps=4", "batch_size=16", check=True)
    assert "validation now holds out" not in proc.stdout  # the run's own batch since the last command


def test_a_resume_inside_a_stage_with_its_own_batch_size_does_not_say_the_held_out_set_changed(tmp_path):
    """batch_size=3 typed on a resume inside a stage that sets batch_size: 4 itself: the note said validation now held
    out 2 x 3 samples, not 16, while the stage went on validating 2 x 4 samples, as before (its loss identical)."""
    plans = tmp_path / "plans" / "curriculum"
    plans.mkdir(parents=True)
    (tmp_path / "data.txt").write_text("Some text to train on, in a sentence or two. " * 300)
    (plans / "own_batch.yaml").write_text(
        "defaults: [/curriculum_base@_here_, _self_]\nvalidation_fraction: 0.2\nstages:\n"
        f"  - {{name: own, datasets: [{{path: {tmp_path / 'data.txt'}, row_chars: 200}}], steps: 6, "
        "overrides: {batch_size: 4}}\n")
    args = ["exp=test_runner", "device=cpu", f"hydra.searchpath=[file://{tmp_path / 'plans'}]", "curriculum=own_batch",
            f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"LMPLAY_CACHE": str(tmp_path / "cache")}
    run_cli("lmplay.train", *args, "max_steps=2", env=env, check=True)
    proc = run_cli("lmplay.train", *args, "max_steps=3", "batch_size=3", env=env, check=True)
    assert "sets batch_size=4 itself" in proc.stdout
    assert "validation now holds out" not in proc.stdout
    proc = run_cli("lmplay.train", *args, "max_steps=4", "curriculum.stages.0.overrides.batch_size=2", env=env,
                   check=True)  # the stage's own batch_size changed: its held-out set did (it was the generic note)
    assert "validation now holds out validation_batches x batch_size = 2 x 2 samples, not 8" in proc.stdout


def test_a_sigterm_while_the_data_tokenizes_is_said_and_leaves_no_temp_files(tmp_path):
    """It printed nothing (a SLURM log stayed empty) and left the half-built token cache in $LMPLAY_CACHE."""
    (tmp_path / "data.txt").write_text("Some text to tokenize. " * 200)
    proc = popen_train(["exp=test_runner", "device=cpu", "curriculum=text_file", f"curriculum.path={tmp_path / 'data.txt'}",
                        f"hydra.run.dir={tmp_path / 'run'}"],
                       env={"LMPLAY_PROBE_KILL": "tokenize:0", "LMPLAY_CACHE": str(tmp_path / "cache")})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: stopped before training started; nothing was saved" in err
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.name.startswith(".")]
    assert not (tmp_path / "run").exists()


def test_symlinks_in_a_run_dir_from_elsewhere_never_lead_its_writes_out_of_it(tmp_path):
    """A run dir from a tarball or a shared folder may hold symlinks named as lmplay's own files: a resume wrote the
    damaged overrides' text through one (into ~/.bashrc, say), the checkpoint's bytes through another, fresh=true
    moved the run into the directory a third named, and the lock created a fourth's target."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=2", check=True)
    victim, precious, elsewhere = tmp_path / "victim", tmp_path / "precious", tmp_path / "elsewhere"
    victim.write_text("original")
    precious.write_text("precious")
    (run / ".hydra" / "overrides.yaml").write_text("touch PWNED")
    (run / ".hydra" / "overrides.yaml.damaged").symlink_to(victim)
    (run / "model.lmp.tmp").symlink_to(precious)
    run_cli("lmplay.train", *args, "max_steps=3", check=True)
    assert victim.read_text() == "original" and precious.read_text() == "precious"
    assert (run / ".hydra" / "overrides.yaml.damaged").read_text() == "touch PWNED"  # kept, as a file of the run
    assert not (run / "model.lmp").is_symlink() and saved_step(run) == 3
    (elsewhere / "stats.json").parent.mkdir()
    (elsewhere / "stats.json").write_text("keep")
    (run / ".replaced_20990101-000000").symlink_to(elsewhere)
    run_cli("lmplay.train", *args, "max_steps=3", "fresh=true", check=True)
    assert [p.name for p in elsewhere.iterdir()] == ["stats.json"] and (elsewhere / "stats.json").read_text() == "keep"
    (run / ".lmplay.lock").symlink_to(tmp_path / "created")
    proc = run_cli("lmplay.train", *args, "max_steps=4")
    assert proc.returncode != 0 and "cannot be opened as the run's lock" in proc.stderr, proc.stderr
    assert not (tmp_path / "created").exists()
    (run / ".lmplay.lock").unlink()
    for name in ("tb", ".lmplay.fresh_job", ".hydra"):  # TensorBoard's events, the SLURM mark, Hydra's own labels
        moved = run / f"{name}.real"
        if (run / name).exists():
            (run / name).rename(moved)
        (run / name).symlink_to(elsewhere)
        proc = run_cli("lmplay.train", *args, "max_steps=5")
        said = (f"error: {run / name} is a symlink (to {elsewhere}), and lmplay writes there as the run's own; "
                f"remove it, or train into another run dir")
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [said], proc.stderr
        (run / name).unlink()
        if moved.exists():
            moved.rename(run / name)
    assert [p.name for p in elsewhere.iterdir()] == ["stats.json"]


def test_a_sigterm_in_a_resumes_set_up_says_the_checkpoint_is_still_there(tmp_path):
    """It said "nothing was saved" of a run whose checkpoint stands, as if the run were lost."""
    (tmp_path / "data.txt").write_text("Some text to tokenize. " * 200)
    args = ["exp=test_runner", "device=cpu", "curriculum=text_file", f"curriculum.path={tmp_path / 'data.txt'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    run_cli("lmplay.train", *args, "max_steps=2", env={"LMPLAY_CACHE": str(tmp_path / "cache")}, check=True)
    checkpoint = (tmp_path / "run" / "model.lmp").read_bytes()
    proc = popen_train([*args, "max_steps=4"],  # another cache: the resume tokenizes, and the probe stops it there
                       env={"LMPLAY_PROBE_KILL": "tokenize:0", "LMPLAY_CACHE": str(tmp_path / "cache2")})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert (f"SIGTERM: stopped before training started; nothing new was saved, and the run resumes from its last "
            f"checkpoint ({tmp_path / 'run' / 'model.lmp'})") in err
    assert (tmp_path / "run" / "model.lmp").read_bytes() == checkpoint
    proc = popen_train([*args, "max_steps=4", "fresh=true"],  # fresh=true would start over: it says so
                       env={"LMPLAY_PROBE_KILL": "tokenize:0", "LMPLAY_CACHE": str(tmp_path / "cache3")})
    _, err = proc.communicate(timeout=300)
    assert (f"SIGTERM: stopped before training started; the run is as it was ({tmp_path / 'run' / 'model.lmp'}): "
            f"the same command starts it over, and without fresh=true it resumes") in err, err
    assert (tmp_path / "run" / "model.lmp").read_bytes() == checkpoint


def test_a_held_out_set_that_changed_for_any_reason_is_said_at_the_first_validation(tmp_path, capsys):
    """A stage of several datasets resumed across a change of how held-out rows are drawn validated on other rows
    (304 held-out tokens, then 609), in silence: only a change of validation_batches x batch_size was said."""
    runner = make_runner(["exp=test_runner", "device=cpu"], tmp_path)
    settings = runner.runner_c.settings
    runner.validation_record("shakespeare", 0.001, settings)
    held = runner.stats.records["validation"][-1]["held_out_tokens"]
    runner.stats.records["validation"][-1]["held_out_tokens"] = held - 7  # as a run before the change recorded it
    runner.validation_record("shakespeare", 0.001, settings)
    runner.validation_record("shakespeare", 0.001, settings)
    said = capsys.readouterr().out
    assert said.count("note: stage 'shakespeare' now validates on") == 1
    assert f"now validates on {held:,} held-out tokens, where this run's earlier validations used {held - 7:,}" in said


def test_a_checkpoint_knows_when_its_models_code_changed_since(tmp_path):
    """The registry finds a checkpoint's class by name alone: a resume or a sample on an edited model.py went on
    with the new code unsaid, and the run's curves mixed two models."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=2", check=True)
    code = torch.load(run / "model.lmp", weights_only=True)["components"]["model"]["state"]["code"]
    assert {"experiments.gpt2ish.model", "lmplay.modules.attention", "lmplay.model"} <= set(code)  # the layers too
    same_code = run_cli("lmplay.train", *args, "max_steps=3", check=True)
    assert "changed since" not in same_code.stdout
    ckpt = torch.load(run / "model.lmp", weights_only=True)
    ckpt["components"]["model"]["state"]["code"]["lmplay.modules.attention"] = "0" * 16  # saved before an edit
    torch.save(ckpt, run / "model.lmp")
    resumed = run_cli("lmplay.train", *args, "max_steps=4", check=True)
    assert "lmplay/modules/attention.py changed since this checkpoint was saved: a step trained from here on" in resumed.stdout
    sampled = run_cli("lmplay.generate", f"checkpoint={run / 'model.lmp.bak'}", "prompt=a", "max_new_tokens=1",
                      check=True)
    assert "attention.py changed since" in sampled.stderr


def test_the_code_digests_follow_the_models_files(tmp_path, monkeypatch):
    module = tmp_path / "edited_model.py"
    module.write_text("import torch\n\nclass Model(torch.nn.Module):\n    scale = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_model

    model = edited_model.Model()
    before = checkpoint.code_digests(model)
    assert list(before) == ["edited_model"] and checkpoint.changed_code(model, {"code": before}) == []
    module.write_text("import torch\n\nclass Model(torch.nn.Module):\n    scale = 2\n")
    assert checkpoint.changed_code(model, {"code": before}) == [str(module)]
    moved = {"lmplay.modules.old_home": checkpoint.code_digests(model)["edited_model"]}  # the same file, moved
    assert checkpoint.changed_code(model, {"code": moved}) == []
    digest = checkpoint.code_digests(model)["edited_model"]  # a copy of another file the model uses, then edited:
    copied = {"edited_model": digest, "other_module": digest}  # its old digest is still among the current ones
    module.write_text("import torch\n\nclass Model(torch.nn.Module):\n    scale = 3\n")
    assert checkpoint.changed_code(model, {"code": copied}) == [str(module), "other_module"]
    assert checkpoint.changed_code(model, {}) == []  # a checkpoint from before digests: nothing said


def test_the_code_digests_name_an_experiment_s_helper_modules_that_define_no_class(tmp_path, monkeypatch):
    """Only files defining a class the model used had digests: an edit of an idea's ops.py (a function its forward
    calls) left seeds trained before and after it averaged as one model, and resumes said nothing."""
    from lmplay.new_exp import create

    create("helped", into=tmp_path / "lab")
    package = tmp_path / "lab" / "helped"
    (package / "ops").mkdir()
    (package / "ops" / "__init__.py").write_text("def scale(x):\n    return x\n")
    (package / "scratch.py").write_text("print('a tool beside the model, never imported')\n")
    model_file = package / "model.py"
    model_file.write_text(model_file.read_text() + "\nfrom lab.helped.ops import scale  # noqa: E402,F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        model_class = importlib.import_module("lab.helped.model").Helped
        model = model_class(vocab_size=257, tokenizer="bytes", context_len=8, num_blocks=1, embed_dim=8, num_heads=1)
        digests = checkpoint.code_digests(model)
        assert {"lab.helped", "lab.helped.model", "lab.helped.ops"} <= set(digests)
        assert "lab.helped.versions" not in digests and "lab.helped.scratch" not in digests
        (package / "ops" / "__init__.py").write_text("def scale(x):\n    return 0 * x\n")
        (package / "versions.py").write_text((package / "versions.py").read_text() + "\n# registers, builds nothing\n")
        assert checkpoint.changed_code(model, {"code": digests}) == [str(package / "ops" / "__init__.py")]
        gone = {**digests, "lab.helped.old_helper": "0" * 16}  # saved where a file of the package, since deleted, was
        (package / "ops" / "__init__.py").write_text("def scale(x):\n    return x\n")  # imported: no change
        assert checkpoint.changed_code(model, {"code": gone}) == []
        (package / "lazy.py").write_text("def scale(x):\n    return x\n")  # a forward imports it in a function:
        lazy = {**digests, "lab.helped.lazy": checkpoint.file_digest(package / "lazy.py")}  # saved once it had run,
        (package / "lazy.py").write_text("def scale(x):\n    return 0 * x\n")  # compared before it is imported
        assert checkpoint.changed_code(model, {"code": lazy}) == ["lab.helped.lazy"]  # named: not imported
        assert "lab.helped.lazy" not in sys.modules and checkpoint.changed_code(model, {"code": {
            "lab.helped.x/../../../etc": "0" * 16, "lab.helped.no_such": "0" * 16}}) == []  # read from no file
    finally:
        for module in [m for m in sys.modules if m == "lab" or m.startswith("lab.")]:
            del sys.modules[module]


def test_the_code_digests_name_the_shared_layers_an_idea_s_layers_subclass(tmp_path):
    """attn_temp's attention subclasses lmplay.modules' and runs its forward: an edit of that file was said for
    the baseline's checkpoints and not for the idea's, whose curves then mixed two models in silence."""
    from lmplay.modules import attention

    runner = make_runner(["exp=attn_temp_test", "device=cpu"], tmp_path)
    digests = checkpoint.code_digests(runner.model)
    assert {"experiments.attn_temp.temperature_attention", "lmplay.modules.attention"} <= set(digests)
    edited = {**digests, "lmplay.modules.attention": "0" * 16}
    assert checkpoint.changed_code(runner.model, {"code": edited}) == [inspect.getsourcefile(attention)]
    older = {k: v for k, v in digests.items() if k != "lmplay.modules.attention"}  # saved before bases had digests
    assert checkpoint.changed_code(runner.model, {"code": older}) == []


def test_a_resume_that_changes_the_batch_inside_a_stage_counts_the_rest_of_it_at_the_new_batch(tmp_path):
    """The stage was counted whole at the new batch: a stage that ended at step 43 read [11/52 of the stage], and
    its cosine schedule was cut off before min_lr."""
    text = tmp_path / "text.txt"
    text.write_text("".join(f"Line {i} of a small text, which the model reads. It ends here.\n" for i in range(300)))
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", "curriculum=text_file", f"curriculum.path={text}", "scheduler=cosine",
            "scheduler.min_lr=1e-5", "+curriculum.stages.0.datasets.0.row_chars=200", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=6", check=True)
    resumed = run_cli("lmplay.train", *args, "batch_size=4", "mini_batch_size=4", check=True)
    spans = int(re.search(r"lr schedule now spans (\d+) steps", resumed.stdout)[1])
    now, was = re.search(r"its next step trains at lr (\S+), not (\S+)", resumed.stdout).groups()
    assert now != was  # both were printed to 3 digits: "at lr 0.00299, not 0.00299"
    last = json.loads((run / "stats.json").read_text())["train"][-1]
    assert last["step"] == spans and last["lr"] == pytest.approx(1e-5)  # the schedule ends on the stage's last step


def test_a_resume_after_the_stages_data_grew_counts_the_rest_of_it_anew(tmp_path):
    """The count kept from before the data grew 3x: the resumed stage read [31/72 of the stage], trained 219 steps,
    and its cosine schedule sat at min_lr for the last 148 of them."""
    text = tmp_path / "text.txt"
    lines = "".join(f"Line {i} of a small text, which the model reads. It ends here.\n" for i in range(100))
    text.write_text(lines)
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", "curriculum=text_file", f"curriculum.path={text}", "scheduler=cosine",
            "scheduler.min_lr=1e-5", "+curriculum.stages.0.datasets.0.row_chars=200", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=3", check=True)
    text.write_text(lines * 3)
    run_cli("lmplay.train", *args, check=True)
    train = json.loads((run / "stats.json").read_text())["train"]
    assert train[-1]["step"] > 3 * 8 and train[-1]["lr"] == pytest.approx(1e-5)  # ends on the grown stage's end
    assert train[-2]["lr"] > 1e-5 * 1.0001  # and gets there on its last step, not long before


def test_a_resume_refuses_a_plan_whose_stages_before_the_run_s_position_changed(tmp_path):
    """A stage lengthened, added or dropped before the one the run is in was never trained, without a word (and
    .hydra/ relabelled the run with it); one dropped or added before also re-seeded the current stage's rows."""
    run = tmp_path / "run"

    def plan(*stages: str) -> str:
        return "curriculum.stages=[" + ",".join(f"{{name: {s}, datasets: [shakespeare], steps: {n}}}"
                                                for s, n in (x.split(":") for x in stages)) + "]"

    args = ["exp=test_runner", "device=cpu", "runner.validation_interval=100000", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, plan("a:3", "b:3"), "max_steps=4", check=True)
    labelled = (run / ".hydra" / "overrides.yaml").read_text()
    for changed in (plan("a:5", "b:3"), plan("a:3", "x:2", "b:3"), plan("b:3")):
        proc = run_cli("lmplay.train", *args, changed)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [(
            "error: this curriculum's stages before 'b', where the run is, are not the ones it trained (one "
            "lengthened, shortened, added or dropped): the run goes on from 'b', and would be labelled with a plan it "
            "did not train; resume with its plan's stages before it (its .hydra/overrides.yaml), or train the new "
            "plan in a run of its own (run_name=...) or with fresh=true")], proc.stderr
        assert (run / ".hydra" / "overrides.yaml").read_text() == labelled
    done = run_cli("lmplay.train", *args, plan("a:3", "b:5"), check=True)  # the stage it is in, and after: go on
    assert "done: step 8" in done.stdout


def test_a_model_alone_copied_over_a_run_s_checkpoint_is_not_trained_over_the_run(tmp_path):
    """`resuming ...`, then step 0 with a new optimizer: stats.json rewritten from step 1, tb/ purged, and the .bak of
    the run's last real checkpoint rotated away by the next saves."""
    from lmplay.generation.loading import load_model, save_model

    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    for steps in (2, 3):  # a save over a save: the run's .bak
        run_cli("lmplay.train", *args, f"max_steps={steps}", check=True)
    stats, bak = (run / "stats.json").read_text(), (run / "model.lmp.bak").read_bytes()
    save_model(*load_model(run), tmp_path / "alone.lmp")
    shutil.copy(tmp_path / "alone.lmp", run / "model.lmp")
    proc = run_cli("lmplay.train", *args, "max_steps=5")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [(
        f"error: {run / 'model.lmp'} holds a model alone (saved by save_model, or imported), with no training state, "
        f"in a run dir whose run trained on after it was put there: training it would start at step 0 over that "
        f"run's records; put the run's own checkpoint back to resume it, or train this model in a run dir of its own "
        f"(as its model.lmp, with another run_name)")], proc.stderr
    assert (run / "stats.json").read_text() == stats and (run / "model.lmp.bak").read_bytes() == bak
    once = tmp_path / "once"  # a run that saved once: no .bak, but its stats.json is older than the copy
    run_cli("lmplay.train", "exp=test_runner", "device=cpu", f"hydra.run.dir={once}", "max_steps=2", check=True)
    os.utime(once / "stats.json", (time.time() - 60,) * 2)
    shutil.copy(tmp_path / "alone.lmp", once / "model.lmp")
    copied = run_cli("lmplay.train", "exp=test_runner", "device=cpu", f"hydra.run.dir={once}", "max_steps=3")
    assert copied.returncode == 2 and "whose run trained on after it was put there" in copied.stderr
    tuned = tmp_path / "tuned"  # an import fine-tuned there, whose first attempt failed before its first save
    save_model(*load_model(tmp_path / "alone.lmp"), tuned / "model.lmp")
    save_model(*load_model(tmp_path / "alone.lmp"), tuned / "model.lmp", replace=True)  # a re-import's .bak
    (tuned / "stats.json").write_text(json.dumps({"train": [], "validation": []}))
    retry = run_cli("lmplay.train", "exp=test_runner", "device=cpu", f"hydra.run.dir={tuned}", "max_steps=2")
    assert retry.returncode == 0 and "resuming" in retry.stdout, retry.stderr


def test_a_stop_signal_under_torchrun_says_how_long_torchrun_waits_for_the_save(tmp_path, monkeypatch, capfd):
    """torchrun kills its ranks 30 s after passing a signal on: a step and a save that took longer saved nothing,
    and no line said why."""
    runner = make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    before = signal.getsignal(signal.SIGINT)
    try:
        runner.stop.on_signal(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, before)
    assert ("SIGINT: will save after this step and stop (torchrun kills the ranks 30 s after its signal unless "
            "launched with --shutdown-timeout SECONDS, which torch 2.13's torchrun has)") in capfd.readouterr().err


def test_a_stop_message_that_cannot_be_written_does_not_stop_the_save(tmp_path, monkeypatch):
    """A Ctrl-C that also stopped `| tee`, or a closed terminal (SIGHUP): the handler's message raised
    BrokenPipeError or EIO inside the step, and the run ended without its save."""
    runner = make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run")
    before = signal.getsignal(signal.SIGINT)

    def gone(fd, data):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(os, "write", gone)
    try:
        runner.stop.on_signal(signal.SIGINT, None)
    finally:
        signal.signal(signal.SIGINT, before)
    assert runner.stop.signum == signal.SIGINT


def test_a_run_that_max_steps_stopped_at_its_plans_end_is_not_relabelled_by_a_resume_that_trains_nothing(tmp_path):
    """max_steps ended the run on its plan's last step, before the plan could say it was done: a resume with other
    settings trained nothing, yet wrote its lr into the run's label."""
    run = tmp_path / "run"
    plan = "curriculum.stages=[{name: a, datasets: [shakespeare], steps: 2}, {name: b, datasets: [shakespeare], steps: 2}]"
    args = ["exp=test_runner", "device=cpu", plan, f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=4", check=True)
    label = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    run_cli("lmplay.train", *args, "max_steps=100", "lr=1e-4", check=True)
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == label
    assert [r["step"] for r in json.loads((run / "stats.json").read_text())["train"]] == [1, 2, 3, 4]


def test_the_closing_validation_a_resume_records_has_the_lr_its_step_trained_at(tmp_path):
    """A stop on the last step saved before the closing validation; the resume that recorded it, typed with another
    lr, stamped the record with the lr nothing trained at."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", "max_steps=6", "runner.validation_interval=100000",
            "scheduler=constant", f"hydra.run.dir={run}"]
    proc = popen_train([*args, "lr=1e-3"], env={"LMPLAY_PROBE_KILL": "term:6"})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    run_cli("lmplay.train", *args, "lr=5e-3", check=True)
    stats = json.loads((run / "stats.json").read_text())
    assert stats["train"][-1]["lr"] == stats["validation"][-1]["lr"] == pytest.approx(1e-3)


def test_a_progress_line_to_a_closed_pipe_does_not_stop_the_run():
    """A Ctrl-C that also stopped `| tee`: the step's validation line raised BrokenPipeError before the save."""
    code = "from lmplay.cli import say\nfor i in range(3): say('x' * 100000)\nprint('after', file=__import__('sys').stderr)"
    proc = subprocess.run(f"{sys.executable} -c \"{code}\" | true", shell=True, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": python_path()}, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr.strip() == "after", proc.stderr


def test_names_in_a_checkpoint_import_nothing_and_its_cache_dir_is_not_this_machines(tmp_path, monkeypatch):
    """A checkpoint is data: the code digests' module names were imported to name their files (./evil.py ran), a
    schedule's _target_ could import torch's command-line tools, and its curriculum.cache_dir took the resume's
    tokenized data there, ahead of LMPLAY_CACHE."""
    from lmplay.runner.component_base import subclass_named
    from lmplay.runner.schedules import Schedule

    (tmp_path / "evil_probe.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = torch.nn.Linear(2, 2)
    assert checkpoint.changed_code(model, {"code": {"evil_probe": "0" * 16, "bad": [1]}}) == ["evil_probe"]
    assert subclass_named("torch.utils.model_dump.__main__.X", Schedule) is None
    assert not (tmp_path / "ran").exists() and "torch.utils.model_dump.__main__" not in sys.modules
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    env = {"LMPLAY_CACHE": str(tmp_path / "cache")}
    run_cli("lmplay.train", *args, "max_steps=2", env=env, check=True)
    ckpt = torch.load(run / "model.lmp", weights_only=True)
    ckpt["components"]["curriculum"]["state_args"]["cache_dir"] = str(tmp_path / "elsewhere")
    torch.save(ckpt, run / "model.lmp")
    run_cli("lmplay.train", *args, "max_steps=3", env=env, check=True)
    assert not (tmp_path / "elsewhere").exists()


def test_a_crafted_checkpoint_s_records_window_or_seed_is_one_line_not_a_traceback(tmp_path):
    """records_json nested 100,000 deep (RecursionError), records without tokens (a KeyError in the stats writer), a
    record window that is a list, a seed past torch's range: each was a traceback on resume."""
    run = tmp_path / "run"
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={run}"]
    run_cli("lmplay.train", *args, "max_steps=2", check=True)
    good = torch.load(run / "model.lmp", weights_only=True)
    edits = {"not JSON": lambda c: c["components"]["runner"]["state"].update(records_json="[" * 100000 + "]" * 100000),
             "has a train record that is not lmplay's": lambda c: c["components"]["runner"]["state"].update(
                 records_json='{"train": [{"x": 1}], "validation": []}'),
             "record window numbers": lambda c: c["components"]["runner"]["state"].update(record_window=[1]),
             "integer seed": lambda c: c.update(seed=2**80)}
    for needle, edit in edits.items():
        ckpt = copy.deepcopy(good)
        edit(ckpt)
        torch.save(ckpt, run / "model.lmp")
        proc = run_cli("lmplay.train", *args, "max_steps=3")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, \
            (needle, proc.stderr[-500:])


def test_a_run_with_a_negative_seed_resumes(tmp_path):
    """seed=-5 trained (a typed seed may be any 64-bit integer), then its own resume called the checkpoint
    incomplete: the checkpoint's check took only 0 to 2**63-1."""
    args = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", "seed=-5"]
    run_cli("lmplay.train", *args, "max_steps=2", check=True)
    proc = run_cli("lmplay.train", *args, "max_steps=3", check=True)
    assert "done: step 3" in proc.stdout + proc.stderr


def test_a_run_dir_named_by_the_time_says_how_to_resume_it(tmp_path):
    """`hydra.run.dir=runs/${now:%H-%M-%S}` (lightning-hydra-template's habit): a stopped run said 'run the same
    command to resume', which started a new run from step 0 in a new dir."""
    args = ["exp=test_runner", "device=cpu", "max_steps=6", "runner.validation_interval=1000",
            f"hydra.run.dir={tmp_path}/runs/" + "${now:%H-%M-%S-%f}"]
    proc = popen_train(args, env={"LMPLAY_PROBE_KILL": "term:3"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err
    [run] = (tmp_path / "runs").iterdir()
    assert "run the same command to resume" not in err
    assert f"to resume it, run the same command with hydra.run.dir={run}" in err
    assert "note: the run dir is named by the time" in out
    resumed = run_cli("lmplay.train", *args[:-1], f"hydra.run.dir={run}", check=True)
    assert "resuming" in resumed.stdout and "named by the time" not in resumed.stdout


def test_a_key_deleted_with_a_tilde_on_resume_goes_back_to_its_default_as_for_every_group(tmp_path):
    """`~optimizer.betas` on a resume kept the checkpoint's [0.8, 0.9], reported as `command line:`, while
    `~runner.log_interval` went back to its default: the list saved against the signature's tuple default took
    the branch meant for 0.0 saved against a default of 0."""
    run = ["exp=test_runner", "device=cpu", f"hydra.run.dir={tmp_path / 'run'}", "runner.validation_interval=1000"]
    run_cli("lmplay.train", *run, "max_steps=2", "optimizer.betas=[0.8,0.9]", "runner.log_interval=2", check=True)
    resumed = run_cli("lmplay.train", *run, "max_steps=3", "~optimizer.betas", "~runner.log_interval", check=True)
    typed = resumed.stdout.split("command line:")[1].splitlines()[0]
    assert "runner.log_interval=1 (was 2)" in typed and "optimizer.betas=(0.9, 0.999) (was [0.8, 0.9])" in typed
    state = checkpoint.load(tmp_path / "run" / "model.lmp")["components"]["optimizers"]["state_args"]
    assert list(state["betas"]) == [0.9, 0.999]
