"""Data-parallel training with torchrun + DDP on CPU (gloo): same results as one process, checkpoints interchangeable."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from conftest import REPO, python_path, run_cli, torchrun

BASE = ["exp=test_runner", "device=cpu", "batch_size=8", "mini_batch_size=2", "runner.validation_interval=16"]


def said(proc) -> list[str]:
    """The error lines the ranks printed (torchrun's closing report repeats each rank's, indented)."""
    return [line for line in proc.stderr.splitlines() if line.startswith("error: ")]


def torchrun_script(script: Path, *args: str) -> subprocess.CompletedProcess:
    """A script of the test's own (lmplay patched, then its CLI) on two local ranks, with BASE and `args`."""
    env = {**os.environ, "PYTHONPATH": python_path(), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), *BASE, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, check=False)


def losses(run_dir):
    stats = json.loads((run_dir / "stats.json").read_text())
    return [r["loss"] for r in stats["train"]], [r["loss"] for r in stats["validation"]]


def test_two_ranks_equal_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli("lmplay.train", *BASE, "max_steps=8", f"hydra.run.dir={single}", check=True)
    proc = torchrun(2, *BASE, "max_steps=8", f"hydra.run.dir={ddp}", path=(Path(__file__).parent / "probes",),
                    env={"LMPLAY_PROBE_DDP_AT_EXIT": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "device cpu, 2 ranks (DDP over gloo)" in proc.stdout  # the logs of 2 ranks read as one process's
    # a DDP wrapper alive at exit made a finished rank abort now and then (gloo, SIGABRT): the runner frees it
    alive = re.findall(r"DDP wrappers alive at exit: (\d+)", proc.stderr)
    assert len(alive) >= 2 and set(alive) == {"0"}, proc.stderr[-3000:]
    (train_1, val_1), (train_2, val_2) = losses(single), losses(ddp)
    assert len(train_1) == len(train_2) == 8
    assert train_2 == pytest.approx(train_1, abs=1e-5)
    assert val_2 == pytest.approx(val_1, abs=1e-5)
    held = [json.loads((d / "stats.json").read_text())["validation"][-1]["held_out_tokens"] for d in (single, ddp)]
    assert held[0] == held[1] and type(held[1]) is int  # summed across ranks as floats: it read 727.0
    assert (proc.stdout + proc.stderr).count("stage 'shakespeare':") == 1  # rank 1's info lines said it twice


def test_resume_two_rank_run_on_one_rank(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    for run in (two, one):
        proc = torchrun(2, *BASE, "max_steps=4", f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun(2, *BASE, "max_steps=8", f"hydra.run.dir={two}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_cli("lmplay.train", *BASE, "max_steps=8", f"hydra.run.dir={one}", check=True)
    assert losses(one)[0] == pytest.approx(losses(two)[0], abs=1e-5)
    w1 = torch.load(one / "model.lmp", weights_only=True)["components"]["model"]["state"]["weights"]
    w2 = torch.load(two / "model.lmp", weights_only=True)["components"]["model"]["state"]["weights"]
    for name in w1:
        torch.testing.assert_close(w1[name], w2[name], atol=1e-5, rtol=1e-4)


def test_a_stop_signal_to_one_rank_stops_every_rank_after_the_same_step_and_the_run_resumes(tmp_path):
    """README: a SIGTERM reaching one rank (a scheduler's stop) is every rank's: they save at the same step."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    assert torchrun(2, *BASE, "max_steps=8", f"hydra.run.dir={whole}").returncode == 0
    proc = torchrun(2, *BASE, "max_steps=8", f"hydra.run.dir={stopped}", path=(Path(__file__).parent / "probes",),
                    env={"LMPLAY_PROBE_KILL": "term:5", "LMPLAY_PROBE_RANK": "1"})
    assert proc.returncode != 0 and "SIGTERM: saved" in proc.stderr, proc.stderr[-3000:]
    saved = torch.load(stopped / "model.lmp", weights_only=True)["components"]["runner"]["state"]["progress"]
    assert saved["step"] == 5
    assert torchrun(2, *BASE, "max_steps=8", f"hydra.run.dir={stopped}").returncode == 0
    assert losses(stopped)[0] == pytest.approx(losses(whole)[0], abs=1e-6)
    assert losses(stopped)[1] == pytest.approx(losses(whole)[1], abs=1e-6)


def test_ranks_draw_dropout_masks_of_their_own_and_a_resume_draws_the_uninterrupted_runs(tmp_path):
    """Every rank was seeded alike: rank 1's samples got rank 0's masks (half the masks of one process's batch)."""
    args, probes = [*BASE, "model.dropout=0.1"], (Path(__file__).parent / "probes",)
    env = {"LMPLAY_PROBE_DROPOUT": "1"}
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    runs = [torchrun(2, *args, "max_steps=4", f"hydra.run.dir={whole}", path=probes, env=env),
            torchrun(2, *args, "max_steps=2", f"hydra.run.dir={resumed}", path=probes, env=env),
            torchrun(2, *args, "max_steps=4", f"hydra.run.dir={resumed}", path=probes, env=env)]
    assert all(proc.returncode == 0 for proc in runs), runs[-1].stderr[-3000:]
    masks = [dict(re.findall(r"dropout mask: (rank \d step \d) (\w+)", proc.stderr)) for proc in runs]
    assert masks[0]["rank 0 step 0"] != masks[0]["rank 1 step 0"]
    assert masks[0]["rank 1 step 3"] == masks[2]["rank 1 step 3"] and masks[0] == {**masks[1], **masks[2]}
    assert losses(resumed)[0] == pytest.approx(losses(whole)[0], abs=1e-6)


def test_bad_world_size_for_batch(tmp_path):
    proc = torchrun(2, "exp=test_runner", "device=cpu", "batch_size=7", "mini_batch_size=2",
                    f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0
    assert [line.count("batch_size=7 is not divisible by 2 ranks") for line in said(proc)] == [1]


def test_an_error_only_rank_0_meets_is_said_once_and_the_others_exit_quietly(tmp_path):
    """Rank 0 reads the data first; where it failed, rank 1 printed a traceback of gloo's "connection closed"."""
    missing = tmp_path / "missing.txt"
    (tmp_path / "a").mkdir()  # the user's own, empty: it stays
    proc = torchrun(2, *BASE, "curriculum=text_file", f"curriculum.path={missing}", f"hydra.run.dir={tmp_path / 'a'}")
    assert proc.returncode != 0
    assert len(said(proc)) == 1 and "does not exist" in said(proc)[0], proc.stderr[-3000:]
    assert (tmp_path / "a").is_dir()
    assert "SIGABRT" not in proc.stderr  # rank 1's exit, once rank 0 was gone
    assert "Connection closed" not in proc.stderr and "Error executing job" not in proc.stderr
    proc = torchrun(2, *BASE, "lr=1e6", "max_steps=30", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode != 0
    assert len(said(proc)) == 1 and "error: loss became" in said(proc)[0], proc.stderr[-3000:]  # was once per rank


def test_a_run_dir_in_use_is_said_once_and_the_other_rank_claims_no_signal(tmp_path):
    """Rank 0 alone holds the run dir; torchrun stopped rank 1 with a SIGTERM, which it reported as the user's."""
    from lmplay.files import hold_run_dir, release_run_dir

    run = tmp_path / "run"
    run.mkdir()
    hold_run_dir(run)  # another run, still training
    try:
        proc = torchrun(2, *BASE, "max_steps=2", f"hydra.run.dir={run}")
    finally:
        release_run_dir(run)
    assert proc.returncode != 0 and len(said(proc)) == 1 and "is in use by another run" in said(proc)[0]
    assert "stopped before training started" not in proc.stderr


def test_rank_0_failing_mid_run_is_said_by_rank_0_alone(tmp_path):
    """Rank 0's save failed (here: its temp file's name taken by a dir); rank 1 added gloo's "Connection closed by
    peer" traceback below the real error."""
    run = tmp_path / "run"
    (run / "model.lmp.tmp").mkdir(parents=True)
    proc = torchrun(2, *BASE, "max_steps=4", "runner.save_interval=16", f"hydra.run.dir={run}")
    assert proc.returncode != 0 and len(said(proc)) == 1 and "error: could not write checkpoint" in said(proc)[0]
    assert "by peer" not in proc.stderr, proc.stderr[-3000:]


def test_a_sweep_under_torchrun_is_refused_in_one_line_before_any_job(tmp_path):
    """Each rank ran the whole sweep: from job 1 on, gloo failed to connect, hung, or paired ranks of different jobs."""
    proc = torchrun(2, "-m", *BASE, "max_steps=1", "seed=1,2", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                    path=(Path(__file__).parent / "probes",), env={"LMPLAY_PROBE_SLOW": "0:4"})  # rank 1 first
    assert proc.returncode != 0
    assert len(said(proc)) == 1
    assert "error: -m under torchrun: each rank would run the whole sweep on its own" in said(proc)[0]
    assert "hydra.launcher.tasks_per_node=N" in proc.stderr and not (tmp_path / "sweep").exists()


def test_submitit_job_with_two_tasks_trains_data_parallel(tmp_path):
    """The SLURM path (one task per GPU) via submitit_local: lmplay sets up the process group from the job."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    single = tmp_path / "single"
    run_cli("lmplay.train", *BASE, "max_steps=4", f"hydra.run.dir={single}", check=True)
    proc = run_cli("lmplay.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                   "hydra.launcher.timeout_min=10", *BASE, "max_steps=4", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   env={"RANK": "0"})  # a job script's `export RANK=$SLURM_PROCID`: submitit refused to export its own
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = [p for p in (tmp_path / "sweep").iterdir() if (p / "stats.json").exists()]
    assert losses(job)[0] == pytest.approx(losses(single)[0], abs=1e-5)
    # a job that fails: its row holds rank 0's error (rank 1 wrote its own over it: gloo's "connection closed");
    # an empty file, which only the job reads (a missing one is said before any job)
    (tmp_path / "empty.txt").write_text("")
    proc = run_cli("lmplay.train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2",
                   "hydra.launcher.timeout_min=10", *BASE, "curriculum=text_file",
                   f"curriculum.path={tmp_path / 'empty.txt'}", f"hydra.sweep.dir={tmp_path / 'failed'}")
    assert proc.returncode != 0
    (row,) = json.loads((tmp_path / "failed" / "summary.json").read_text())["jobs"]
    assert row["status"] == "failed" and "has no rows" in row["error"], row


@pytest.mark.parametrize("raised, passes", [(KeyboardInterrupt(), True), (RuntimeError("[gloo] Connection closed by "
                                            "peer [127.0.0.1]:29500"), True), (RuntimeError("a real failure"), False)])
def test_leaving_the_process_group_after_the_run_is_saved_is_no_failure(raised, passes):
    """A Ctrl-C in the barrier after `done:` gave rank 0 gloo's "closed by peer" traceback."""
    from lmplay.train import leave_world

    class Runner:
        def close(self):
            raise raised

    if passes:
        leave_world(Runner())
    else:
        with pytest.raises(RuntimeError, match="a real failure"):
            leave_world(Runner())


def test_an_error_of_one_rank_alone_reaches_torchrun_s_report_and_config_errors_are_said_once(tmp_path):
    """A model that failed on rank 1 alone (an out-of-memory GPU) was never said: rank 1 was quiet, and rank 0
    reported torchrun's SIGTERM as a stop before training; a rank killed mid-run left rank 0 with gloo's traceback;
    and an unknown key was printed once per rank."""
    (tmp_path / "rank_model.py").write_text(
        "import os\nfrom experiments.gpt2ish.model import GPT2ish\n\n\nclass OnRank1(GPT2ish):\n"
        "    def __init__(self, vocab_size: int, context_len: int = 1024, num_blocks: int = 6, embed_dim: int = 768,\n"
        "                 num_heads: int = 12, dropout: float = 0.0, tokenizer: str = 'gpt2') -> None:\n"
        "        if os.environ['RANK'] == '1':\n            raise RuntimeError('out of memory on rank 1')\n"
        "        super().__init__(vocab_size, context_len, num_blocks, embed_dim, num_heads, dropout, tokenizer)\n")
    (tmp_path / "conf" / "exp").mkdir(parents=True)
    (tmp_path / "conf" / "exp" / "on_rank1.yaml").write_text(
        "# @package _global_\ndefaults:\n  - test_runner\nmodel:\n  _target_: rank_model.OnRank1\n")
    proc = torchrun(2, "--config-dir", str(tmp_path / "conf"), *BASE, "exp=on_rank1", "max_steps=2",
                    f"hydra.run.dir={tmp_path / 'a'}", path=(tmp_path,))
    assert proc.returncode != 0 and "RuntimeError: out of memory on rank 1" in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "a").exists()  # rank 0 left it, empty, as it found the lost peer
    # rank 0 hears of it by torchrun's SIGTERM or, where it was already waiting in a collective, by the lost peer
    stop_line = "(torchrun stops every rank when one fails, its report naming it, or when it is stopped itself)"
    lost = any(line.startswith("error: another rank stopped") for line in said(proc))
    assert stop_line in proc.stderr or lost, proc.stderr[-3000:]
    proc = torchrun(2, *BASE, "max_steps=8", f"hydra.run.dir={tmp_path / 'b'}",
                    path=(Path(__file__).parent / "probes",),
                    env={"LMPLAY_PROBE_KILL": "step:3", "LMPLAY_PROBE_RANK": "1"})
    lines = said(proc)  # rank 0 finds the lost peer, or (seen once in CI, under load) torchrun's SIGTERM stops it;
    lost_peer = lines[:1] and lines[0].startswith("error: another rank stopped")  # or (twice in CI, under load)
    stopped = not lines and "SIGTERM: will save after this step" in proc.stderr  # the SIGTERM lands as rank 0
    killed = not lines and re.search(r"Root Cause[^=]*rank\s*: 1 .*\n\s*exitcode\s*: -9", proc.stderr)
    assert proc.returncode != 0 and (lost_peer or stopped or killed), proc.stderr[-3000:]  # leaves training, before
    # its line: then torchrun's report, which names rank 1's kill as the root cause, is what says it
    assert not lines or lines == [lines[0]] and lines[0].endswith(  # saves every 16 steps
        "nothing was saved yet, so the same command starts over"), proc.stderr[-3000:]
    assert "Error executing job" not in proc.stderr and "by peer" not in proc.stderr, proc.stderr[-3000:]
    proc = torchrun(2, *BASE, "lrr=3", f"hydra.run.dir={tmp_path / 'c'}", path=(Path(__file__).parent / "probes",),
                    env={"LMPLAY_PROBE_SLOW": "0:4"})  # rank 1 meets the key first (CI failed on it once)
    assert proc.returncode != 0 and len(said(proc)) == 1 and "unknown key 'lrr'" in said(proc)[0], proc.stderr[-3000:]
    proc = torchrun(2, *BASE, "max_steps=0", f"hydra.run.dir={tmp_path / 'd'}",
                    path=(Path(__file__).parent / "probes",), env={"LMPLAY_PROBE_SLOW": "0:4"})
    assert proc.returncode != 0 and len(said(proc)) == 1 and "max_steps=0 must be >= 1" in said(proc)[0], \
        proc.stderr[-3000:]
    assert not (tmp_path / "d").exists()  # rank 1 made it, and rank 0, which removes it, found it there


def test_an_error_of_another_rank_alone_before_the_process_group_leaves_no_empty_run_dir(tmp_path):
    """Rank 0 waited in the process group's join for the failed rank, and torchrun's SIGTERM killed it there, before
    it could remove the run dir it had made. Rank 1's wait is cut to 5 s: long enough for a loaded rank 0 to have
    made the dir before rank 1 removes it."""
    script = tmp_path / "rank1_fails.py"
    script.write_text(
        "import os\nimport lmplay.cli as cli\nimport lmplay.train as train\nfrom lmplay.errors import ConfigError\n"
        "cli.RANK_0_FIRST_S = 5\ncheck = train.check_run_settings\n\n\ndef rank1_fails(cfg):\n"
        "    if os.environ['RANK'] == '1':\n        raise ConfigError('rank 1 alone is broken')\n    check(cfg)\n\n\n"
        "train.check_run_settings = rank1_fails\ntrain.cli()\n")
    proc = torchrun_script(script, "max_steps=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode != 0 and "error: rank 1 alone is broken" in proc.stderr, proc.stderr[-3000:]  # the report
    assert not said(proc) and not (tmp_path / "run").exists(), proc.stderr[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_in_another_rank_s_wait_for_rank_0_ends_it_quietly(monkeypatch, capsys, signum):
    """A Ctrl-C in the wait (15 s of silence invites one) made rank 1 say "interrupted" beside rank 0's line."""
    from lmplay import cli

    for name, value in (("TORCHELASTIC_RUN_ID", "x"), ("WORLD_SIZE", "2"), ("RANK", "1")):
        monkeypatch.setenv(name, value)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threading.Timer(0.5, os.kill, (os.getpid(), signum)).start()
    try:
        with pytest.raises(SystemExit) as stop:
            cli.fail("a bad key")
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    assert stop.value.code == 128 + signum and capsys.readouterr().err == ""


def test_the_other_ranks_wait_for_rank_0_s_data_past_the_process_group_s_timeout(tmp_path):
    """They waited in a collective bounded by gloo's default timeout (30 minutes): a first tokenization of a large
    corpus under torchrun ended in 'Timed out waiting'. Here the default is cut to 3 s and rank 0 takes 8 s."""
    script = tmp_path / "slow_data.py"
    script.write_text(
        "import datetime, os, time\nimport torch.distributed.distributed_c10d as c10d\n"
        "c10d._get_default_timeout = lambda backend: datetime.timedelta(seconds=3)\n"
        "import lmplay.data.curriculum as curriculum\nprepare = curriculum.Curriculum.prepare\n\n\n"
        "def slow_prepare(self, *args, **kwargs):\n    if os.environ['RANK'] == '0':\n        time.sleep(8)\n"
        "    return prepare(self, *args, **kwargs)\n\n\ncurriculum.Curriculum.prepare = slow_prepare\n"
        "from lmplay.train import cli\ncli()\n")
    proc = torchrun_script(script, "max_steps=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0 and "Timed out" not in proc.stderr, proc.stderr[-3000:]


def test_a_rank_alone_in_the_environment_launches_nothing(tmp_path):
    """`export RANK=$SLURM_PROCID` in a job script (or a Kubeflow pod's RANK) made every command's error silent:
    only rank 0 spoke, though no process group was launched."""
    for rank in ("1", "x"):
        proc = run_cli("lmplay.generate", "checkpoint=nosuch", "prompt=x", env={"RANK": rank})
        assert proc.returncode == 2 and said(proc) == ["error: checkpoint nosuch does not exist"], proc.stderr
