"""The summary of a sweep: one row per job (experiment, overrides, final validation loss, tokens, wall time).

`SweepSummary` is a Hydra callback (conf/config.yaml, `hydra.callbacks`). It runs wherever the
launcher runs a job (this process, a joblib worker, a SLURM node) and reads only what jobs leave in
their directories, so it works the same with every launcher:

- each job keeps `job.json` in its run dir: "started" while it runs (or if it was killed), then
  "completed", "failed" (with the error) or "interrupted" (a stop signal, after its save), with its wall
  time; a job the launcher has not reached is "not started". At a job's start and end the sweep's
  summary is refreshed, so a sweep that dies half-way still has one that lists the job it died in;
- at the end of the sweep it writes `summary.json` and `summary.md` in the sweep dir and prints the
  table, with means over seeds when a configuration was repeated with several seeds.

`python -m lmplay.sweep SWEEP_DIR` rebuilds the summary by hand (e.g. while SLURM jobs still run).
"""

import argparse
import contextlib
import io
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lmplay.cli import fail, launcher_rank, printable, quote, run_main, shell_word
from lmplay.config import override_key, override_value
from lmplay.errors import ConfigError
from lmplay.files import (
    CHECKPOINT,
    JOB_FILE,
    STATS,
    SUMMARY_LOCK,
    exclusive,
    started_over_in_this_slurm_job,
    training_into,
    write_atomic,
)
from lmplay.hydra_app import JobError, remove_unused_sweep_dir
from lmplay.stats.runs import (
    HELD_OUT_CAUSE,
    SIZE_CAUSE,
    code_settings,
    configuration,
    differing_settings,
    dig,
    dirs_below,
    is_finite_number,
    job_number,
    load_run,
    read_yaml,
    settings_text,
    settled_config,
    sizes_differ,
    trained_code,
    trained_settings,
)

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
MOST_JOBS = 100_000  # a sweep the summary lists the jobs of; past it (no sweep Hydra launches), the dirs alone


class SweepSummary(Callback):
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        job_dir = Path(config.hydra.runtime.output_dir)
        # a job's other tasks are its other ranks; a job another run is training is refused (hold_run_dir)
        if config.hydra.mode == RunMode.MULTIRUN and launcher_rank() == 0 and not training_into(job_dir):
            # before the clock: a process's first job would also time the imports of torch and torch._dynamo (its
            # optimizer's), ~4 s on a CPU, that its later jobs find done (the basic launcher runs every job in one
            # process, joblib's each worker a few): the first jobs, the baseline's, read as 4-7x slower
            import torch._dynamo  # noqa: F401

            # Replaces what an earlier attempt of this job left: until it ends, the job reads as started. The
            # wall time of earlier attempts that ended (a rerun sweep resumes its jobs) is carried over.
            # the run it replaces is set aside, with its time and steps; not a requeue's, which resumes
            fresh = bool(config.get("fresh")) and not started_over_in_this_slurm_job(job_dir)
            earlier = 0.0 if fresh else earlier_wall_time(job_dir)
            write_job(config.hydra, {"status": "started", "started_at": time.time(), "earlier_wall_time_s": earlier,
                                     "steps_at_start": 0 if fresh else steps_done(job_dir)})
            write_summary(sweep_dir_of(config.hydra))  # a sweep killed during this job still lists it

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or launcher_rank() != 0:  # rank 1 would overwrite rank 0's row
            return
        if training_into(Path(config.hydra.runtime.output_dir)):  # its job.json and wall time are the other run's;
            job_return.status, job_return.return_value = JobStatus.COMPLETED, None  # the sweep's end says so
            return
        error = None
        if job_return.status == JobStatus.FAILED:
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # Hydra's "Error executing job" line
                    _ = job_return.return_value  # re-raises what the job raised
            except Exception as e:  # noqa: BLE001 - whatever the job raised is what the summary reports
                cause = e.__cause__ if isinstance(e, JobError) and e.__cause__ else e
                error = f"{type(cause).__name__}: {cause}"
                if not isinstance(e, JobError):  # a bug (in an idea's code, say): its traceback, to mend it by
                    print_traceback(e)
            # the sweep goes on, and its end says so under its table (Hydra's ending would stop it before that)
            job_return.status, job_return.return_value = JobStatus.COMPLETED, None
        end_job(config.hydra, "failed" if error else "completed", error)
        sweep_dir = sweep_dir_of(config.hydra)
        if error:
            print(f"job {config.hydra.job.num} failed ({one_line(error)}); the sweep's summary: "
                  f"{sweep_dir / 'summary.md'}", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = sweep_dir_of(config.hydra)
        if not sweep_dir.is_dir():
            return
        if not job_dirs(sweep_dir):  # `exp=glob(*_tes)`: Hydra launched 0 jobs
            remove_unused_sweep_dir()
            globs = [o for o in config.hydra.overrides.task if "glob(" in o]
            fail(f"{' '.join(globs) or 'the sweep'} matches no choice, so the sweep has no jobs; --help lists the "
                 f"choices")
        summary = write_summary(sweep_dir)
        print(printable(summary["markdown"]))  # job.json's strings are data
        print(f"summary: {sweep_dir / 'summary.md'} and summary.json")
        # read from the job dirs, not kept by on_job_end: a launcher's workers (joblib, submitit) call their own copy
        left_alone = [f"the job in {sweep_dir / r['dir']}" for r in summary["jobs"]
                      if r.get("dir") and training_into(sweep_dir / r["dir"])]
        if left_alone:
            was, it = ("was", "it") if len(left_alone) == 1 else ("were", "them")
            print(f"error: {', '.join(left_alone)} {was} in use by another run that is still training, so this "
                  f"sweep left {it} alone; rerun the sweep once that run ends", file=sys.stderr)
        failed = [r for r in summary["jobs"] if r["status"] == "failed"]
        if failed:  # Hydra's own ending would be three lines after the table: "Error executing job", the error, a hint
            first = failed[0]
            print(f"error: {len(failed)} of {len(summary['jobs'])} jobs failed; job {first['job']}: "
                  f"{printable(one_line(str(first['error'])))} "
                  f"(each failed job's error is in its row of {sweep_dir / 'summary.md'})", file=sys.stderr)
            raise SystemExit(1)
        if left_alone:
            raise SystemExit(1)


def print_traceback(error: BaseException) -> None:
    """A job's traceback from its task function on, as Hydra shows one: the frames that ran the job and re-raised
    its error here (Hydra's, this module's) left out."""
    hydra_dir = str(Path(hydra.__file__).parent)
    tb = error.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(hydra_dir)
                              or tb.tb_frame.f_code.co_filename == __file__):
        tb = tb.tb_next
    traceback.print_exception(type(error), error, tb, file=sys.stderr)


def read_job(job_dir: Path) -> dict[str, Any]:
    """What the job's job.json says so far ({} before its first attempt, or for a job no callback ran)."""
    job_file = job_dir / JOB_FILE
    if not job_file.is_file():
        return {}
    try:
        job = json.loads(job_file.read_text())
    except (OSError, ValueError, RecursionError) as e:  # written atomically: damaged by hand or by a disk
        return {"status": "unknown", "error": f"{JOB_FILE} is unreadable ({e}); the job's rerun rewrites it"}
    if not isinstance(job, dict):
        return {"status": "unknown", "error": f"{JOB_FILE} is not a JSON object; the job's rerun rewrites it"}
    bad = [key for key, value in job.items() if key in JOB_KEYS and not JOB_KEYS[key](value)]
    if bad:  # a row reads what stands; `"overrides": 5` stopped the summary of every job
        return {**{k: v for k, v in job.items() if k in JOB_KEYS and k not in bad}, "status": "unknown",
                "error": f"{JOB_FILE} holds a {', '.join(bad)} that is not lmplay's; the job's rerun rewrites it"}
    return job


# What each key of job.json may hold (None: not known yet).
JOB_KEYS: dict[str, Callable[[Any], bool]] = {
    "job": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "experiment": lambda v: v is None or isinstance(v, str),
    "overrides": lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v),
    "status": lambda v: isinstance(v, str),
    "error": lambda v: v is None or isinstance(v, str),
    "started_at": lambda v: v is None or is_finite_number(v),
    "earlier_wall_time_s": is_finite_number,
    "wall_time_s": lambda v: v is None or is_finite_number(v),
    "steps_at_start": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
}


def earlier_wall_time(job_dir: Path) -> float:
    """The seconds the job's earlier attempts ran. One killed outright (SIGKILL: the OOM killer, a lost node) ended
    without its wall time: it ran at least until its run last wrote stats.json or model.lmp."""
    job = read_job(job_dir)
    if job.get("wall_time_s") is not None or not job.get("started_at"):
        return job.get("wall_time_s") or 0.0
    written = [st.st_mtime for name in (STATS, CHECKPOINT) if (st := stat_or_none(job_dir / name))]
    return job.get("earlier_wall_time_s", 0.0) + max(0.0, max(written, default=job["started_at"]) - job["started_at"])


def continued_job(job_dir: Path, earlier: float, seconds: float, status: str) -> None:
    """A sweep's job trained on by a run of its own (`hydra.run.dir=` its dir, as the README shows): its record
    counts that run too, its time (after the `earlier` attempts', taken before it wrote its files) and how it ended
    (the summary read the sweep's attempts alone: 20 steps at the 10 steps' time, completed when stopped)."""
    job = read_job(job_dir)
    if job and job.get("status") != "unknown":
        write_atomic(job_dir / JOB_FILE, json.dumps({**job, "status": status, "error": None,
                                                     "wall_time_s": round(earlier + seconds, 3)}, indent=1))


def write_job(hydra: DictConfig, status: dict[str, Any]) -> None:
    """The job's own record, job.json in its run dir: which job, what it ran, how it went."""
    record = {"job": hydra.job.num, "experiment": hydra.runtime.choices.get("exp"),
              "overrides": list(hydra.overrides.task), **status}
    write_atomic(Path(hydra.runtime.output_dir) / JOB_FILE, json.dumps(record, indent=1))


def sweep_dir_of(hydra: DictConfig) -> Path:
    """The sweep dir, from where the command ran: a job that hydra.job.chdir=true moved into its own dir read a
    relative one (multirun/..., the default) from there, and its summary was not refreshed."""
    return Path(OmegaConf.select(hydra, "runtime.cwd", default=None) or ".") / hydra.sweep.dir


def end_job(hydra: DictConfig, status: str, error: str | None = None) -> None:
    """Close the job's record with its wall time (this attempt's and the earlier ones'), and refresh the summary."""
    job_dir = Path(hydra.runtime.output_dir)
    job = read_job(job_dir)
    started = job.get("started_at")
    wall = job.get("earlier_wall_time_s", 0.0) + time.time() - started if started else None
    if started and job.get("steps_at_start") is not None and steps_done(job_dir) == job["steps_at_start"] > 0:
        wall = job.get("earlier_wall_time_s") or None  # a rerun of a finished job: it trained nothing
    write_job(hydra, {"status": status, "error": error, "started_at": started,
                      "wall_time_s": round(wall, 3) if wall is not None else None})
    write_summary(sweep_dir_of(hydra))


def steps_done(job_dir: Path) -> int | None:
    """The optimizer steps the job's run has recorded (None: unreadable)."""
    try:
        return run_summary(job_dir).steps if (job_dir / STATS).is_file() else 0
    except ConfigError:
        return None


def job_interrupted(hydra: DictConfig) -> None:
    """A job a signal stopped (it saved, and exits 128 + N): Hydra's on_job_end never runs for it, so its row
    would keep what it showed at its start, and its time would be lost to the rerun's."""
    end_job(hydra, "interrupted")


@dataclass(frozen=True)
class RunSummary:
    """What a summary row reads of a run."""

    overrides: list[str]
    exp: str | None
    final_validation: dict[str, Any] | None
    tokenizer: str | None
    tokens: int
    steps: int
    seed: str | None  # the seed it trained with, typed or not
    parameters: int | None


_summaries: dict[Path, tuple[tuple, RunSummary]] = {}


def run_summary(job_dir: Path) -> RunSummary:
    """load_run's part a row needs, kept while the run's files stand as they were: the summary is refreshed at
    every job's start and end, and read each finished job's whole stats.json again (80 s for 50 jobs of 200k
    records, twice a job)."""
    files = [job_dir / STATS, *(job_dir / ".hydra" / name for name in ("overrides.yaml", "hydra.yaml", "config.yaml"))]
    key = tuple((st.st_mtime_ns, st.st_size, st.st_ino) if (st := stat_or_none(f)) else None for f in files)
    held = _summaries.get(job_dir)
    if held is None or held[0] != key:
        run = load_run(job_dir, train=False)
        held = key, RunSummary(run.overrides, run.exp, run.final_validation, run.tokenizer, run.tokens, run.steps,
                               run.trained_seed, run.parameters)
        _summaries[job_dir] = held
    return held[1]


def stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


def job_row(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    """One row of the summary; stats.json is the truth for losses and tokens, job.json for status and time."""
    job = read_job(job_dir)
    try:
        run = run_summary(job_dir) if (job_dir / STATS).is_file() else None
    except ConfigError as e:  # damaged by hand or by a full disk: its row says so, and the other rows stand
        run, job = None, {**job, "error": f"{job.get('error') or ''} {e}".strip()}
    launched = job.get("overrides") or (run.overrides if run else [])  # which of the sweep's jobs it is
    overrides = (run.overrides if run else None) or launched  # the run's own: a job trained on by hand
    # (hydra.run.dir=JOB_DIR max_steps=25) is labelled by what it trained with, as the plots label it
    final = run.final_validation if run else None
    name = str(job_dir.relative_to(sweep_dir))
    number = re.match(r"(\d+)_", name)
    return {
        "job": job.get("job", int(number.group(1)) if number else None),
        "dir": name,
        "experiment": job.get("experiment") or (run.exp if run else None),
        "overrides": overrides,
        "launched_with": launched,
        "final_validation_loss": final["loss"] if final else None,
        "final_validation_accuracy": final["accuracy"] if final else None,
        "held_out_tokens": final.get("held_out_tokens") if final else None,
        "final_validation_tokens": final["tokens"] if final else None,
        "tokenizer": run.tokenizer if run else None,
        "parameters": run.parameters if run else None,
        "tokens": run.tokens if run else 0,
        "steps": run.steps if run else 0,
        "seed": run.seed if run and run.seed is not None else override_value(overrides, "seed"),  # no .hydra/: typed
        "wall_time_s": job.get("wall_time_s"),
        # "started": running, or killed before it could finish; no job.json at all: not run by this callback.
        "status": job.get("status", "unknown"),
        "error": job.get("error"),
    }


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The sweep's job dirs, at any depth: not those of a sweep inside it (its own multirun.yaml) nor a single run
    trained into it, which a sweep into their parent (hydra.sweep.dir=outputs) summarized and averaged as its own."""
    def other_sweeps(job_dir: Path) -> bool:
        parts = job_dir.relative_to(sweep_dir).parts
        return any((sweep_dir.joinpath(*parts[:n]) / "multirun.yaml").is_file() for n in range(1, len(parts) + 1))

    def single_run(job_dir: Path) -> bool:  # a job trained on alone (README: its hydra.run.dir) keeps its job.json
        return job_number(job_dir) is None and not (job_dir / JOB_FILE).is_file()

    return [d for d in dirs_below(sweep_dir, (JOB_FILE, STATS, ".hydra")) if not other_sweeps(d) and not single_run(d)]


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir} does not exist or is not a directory")
    dirs = job_dirs(sweep_dir)
    if not dirs:
        raise ConfigError(f"{sweep_dir} holds no job directories: it is not a sweep dir (multirun/<date>/<time>)")
    rows = [job_row(sweep_dir, d) for d in dirs]
    planned = planned_jobs(sweep_dir)
    plan = {tuple(sorted(overrides)): number for number, overrides in enumerate(planned)}
    started = {tuple(sorted(r["launched_with"])) for r in rows}
    rows += [not_started_row(number, overrides) for number, overrides in enumerate(planned)
             if tuple(sorted(overrides)) not in started]
    if plan:  # numbered by the sweep as last typed: an earlier call's `seed=1,2` and a rerun's `seed=3,2` both had a 0
        earlier = sorted((r for r in rows if tuple(sorted(r["launched_with"])) not in plan),
                         key=lambda r: (r["job"] is None, r["job"] or 0, r["dir"] or ""))
        for r in rows:
            r["job"] = plan.get(tuple(sorted(r["launched_with"])), r["job"])
        for number, r in enumerate(earlier, start=len(plan)):  # values the last call no longer has: after it
            r["job"] = number
    return sorted(rows, key=lambda r: (r["job"] is None, r["job"] or 0, r["dir"] or ""))  # the sweep's order


def planned_jobs(sweep_dir: Path) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands the sweep that multirun.yaml records ([] for
    other sweepers, or what cannot be expanded without Hydra's config loader, such as glob())."""
    try:
        hydra = (read_yaml(sweep_dir / "multirun.yaml") or {}).get("hydra") or {}
    except ConfigError:  # damaged: the jobs' own dirs still make the summary
        return []
    return expanded_jobs(hydra)


def expanded_jobs(hydra: dict[str, Any]) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands a sweep's `hydra` config node (see planned_jobs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if (typed := swept_overrides(hydra)) is None:
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(typed)
        if math.prod(len(list(itertools.islice(o.sweep_string_iterator(), MOST_JOBS + 1))) if o.is_sweep_override()
                     else 1 for o in parsed) > MOST_JOBS:  # an edited seed=range(0,1000000000) took 12 GB listing them
            return []
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except (HydraException, ValueError):
        return []


def swept_overrides(hydra: dict[str, Any]) -> list[str] | None:
    """What Hydra's basic sweeper expands into jobs: an exp file's hydra.sweeper.params, then the command's overrides
    (None for another sweeper)."""
    sweeper, overrides = dig(hydra, "sweeper"), dig(hydra, "overrides") or {}
    if not isinstance(sweeper, dict) or sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    params, task = sweeper.get("params") or {}, overrides.get("task") or [] if isinstance(overrides, dict) else None
    if not isinstance(params, dict) or not isinstance(task, list):  # multirun.yaml edited by hand
        return None
    return [*(f"{key}={value}" for key, value in params.items()), *map(str, task)]


def not_started_row(number: int, overrides: list[str]) -> dict[str, Any]:
    """A job of the sweep that no attempt has reached yet (the sweep was stopped before it)."""
    experiment = override_value(overrides, "exp")
    return {"job": number, "dir": None, "experiment": experiment, "overrides": overrides, "launched_with": overrides,
            "final_validation_loss": None, "final_validation_accuracy": None, "held_out_tokens": None,
            "final_validation_tokens": None, "tokenizer": None, "parameters": None, "tokens": 0,
            "steps": 0, "seed": override_value(overrides, "seed"), "wall_time_s": None, "status": "not started",
            "error": None}


def finished(row: dict[str, Any]) -> bool:
    """A completed job with a final loss: what a mean over seeds and the lowest loss compare. An interrupted
    job's loss is from fewer tokens."""
    return row["status"] == "completed" and row["final_validation_loss"] is not None


def repeated_configs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread of the final validation loss over the finished seeds of each configuration run more than
    once."""
    def seed_of(row: dict[str, Any]) -> tuple:  # the seed trained with: 1337 typed and left at its default are one
        return configuration(row["overrides"]), row.get("seed", override_value(row["overrides"], "seed"))

    best: dict[tuple, dict] = {}  # one row a seed: a job trained on by hand can repeat another's configuration
    for row in rows:  # and seed; the finished one with the most tokens stands for it
        held = best.get(seed_of(row))
        if held is None or (finished(row), row["tokens"]) > (finished(held), held["tokens"]):
            best[seed_of(row)] = row
    groups: dict[tuple, list[dict]] = {}
    for row in (r for r in rows if best[seed_of(r)] is r):
        groups.setdefault(seed_of(row)[0], []).append(row)
    def launched_as(row: dict[str, Any]) -> tuple:
        return configuration(row.get("launched_with") or row["overrides"])

    launched: dict[tuple, int] = {}  # seeds the sweep ran of each configuration: one of them trained on by hand
    for row in rows:  # (max_steps=60) makes a configuration of its own, and neither it nor the rest may go unsaid
        launched[launched_as(row)] = launched.get(launched_as(row), 0) + 1
    out = []
    for config, members in groups.items():
        if len(members) < 2 and launched.get(launched_as(members[0]), 0) < 2:
            continue
        losses = [r["final_validation_loss"] for r in members if finished(r)]
        out.append({"overrides": list(config), "jobs": [r["job"] for r in members], "runs_with_loss": len(losses),
                    "jobs_with_loss": [r["job"] for r in members if finished(r)],
                    "mean_final_validation_loss": statistics.fmean(losses) if losses else None,
                    "std_final_validation_loss": statistics.stdev(losses) if len(losses) > 1 else None})
    return out


def differing_settings_of(sweep_dir: Path, rows: list[dict[str, Any]], jobs: list[int]) -> dict[str, list[str]]:
    """What the jobs' settled configs differ in: a sweep rerun with more seeds after its exp file changed trains the
    new seeds with other settings than the first, under the same overrides."""
    settings, codes = [], []
    for row in rows:
        if row["job"] in jobs and row["dir"]:
            with contextlib.suppress(ConfigError):  # a damaged config: its row says what it can
                if trained := trained_settings(settled_config(sweep_dir / row["dir"])):
                    settings.append(trained)
                    codes.append(trained_code(sweep_dir / row["dir"]))
    return differing_settings([{**s, **code} for s, code in zip(settings, code_settings(codes))])


def one_line(text: str) -> str:
    """An error of several lines (a bug's own message) as one: a table row, and the sweep's one closing line."""
    return " ".join(text.split())


def fmt_loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def shown_overrides(overrides: list[str]) -> str:
    return " ".join(o for o in overrides if override_key(o) != "exp") or "-"


def loss_cell(row: dict[str, Any]) -> str:
    """The final validation loss, and where it was measured when that is not where the job's training stopped (an
    interrupted job's last validation, perhaps the untrained model's at 0 tokens)."""
    at = row["final_validation_tokens"]
    return fmt_loss(row["final_validation_loss"]) + (f" (at {at:,} tokens)" if at not in (None, row["tokens"]) else "")


def tokens_over_seeds(rows: list[dict[str, Any]]) -> list[float]:
    """The mean token count of each configuration's final validations, over its seeds."""
    counts: dict[tuple, list[int]] = {}
    for row in rows:
        if row["final_validation_tokens"] is not None:
            counts.setdefault(configuration(row["overrides"]), []).append(row["final_validation_tokens"])
    return [statistics.fmean(tokens) for tokens in counts.values()]


FAILS_AGAIN = (" (a job that failed at its values, or diverged, does so again: fix what its error names first, or "
               "leave its value out of a new sweep)")


def lowest_mean(groups: list[dict[str, Any]]) -> list[str]:
    """The configuration of the lowest mean over its seeds: the lowest single job can be a lucky seed's, which
    the seeds were run to see past (the seed-to-seed spread is often wider than an lr's effect)."""
    means = [g for g in groups if g["runs_with_loss"] > 1]
    if len(means) < 2:  # a sweep of seeds alone: one configuration, ranked against none
        return []
    g = min(means, key=lambda g: g["mean_final_validation_loss"])
    std = g["std_final_validation_loss"]
    spread = f", std {fmt_loss(std)}" if std is not None else ""
    return ["", (f"Lowest mean final validation loss over seeds: {' '.join(g['overrides']) or 'the sweep'} (jobs "
                 f"{', '.join(map(str, g['jobs_with_loss']))}): {fmt_loss(g['mean_final_validation_loss'])}{spread}; "
                 f"a single job's lowest can be a lucky seed's.")]


def markdown(sweep_dir: Path, rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> str:
    lines = [f"# Sweep {sweep_dir}", "",
             "| job | experiment | overrides | final val loss | tokens | wall time | status |",
             "|---:|---|---|---:|---:|---:|---|"]
    for r in rows:
        status = r["status"] + (f": {r['error']}" if r["error"] else "")
        lines.append(f"| {r['job'] if r['job'] is not None else '-'} | {r['experiment'] or '-'} | "
                     f"{shown_overrides(r['overrides'])} | {loss_cell(r)} | "
                     f"{r['tokens']:,} | {fmt_time(r['wall_time_s'])} | {one_line(status).replace('|', '/')} |")
    scored = [r for r in rows if finished(r)]
    if scored:
        best = min(scored, key=lambda r: r["final_validation_loss"])
        lines += ["", (f"Lowest final validation loss of the completed jobs: job {best['job']} ({best['experiment']}, "
                       f"{shown_overrides(best['overrides'])}): {fmt_loss(best['final_validation_loss'])}.")]
        lines += lowest_mean(groups)
        at = sorted({r["final_validation_tokens"] for r in scored} - {None})
        lengths = sorted(tokens_over_seeds(scored))
        if lengths and lengths[-1] > 1.05 * lengths[0]:  # each configuration's mean over its seeds: seeds' rows differ
            # in length (~7% on a short run: the note fired where the lowest loss was the shortest run's)
            lines += ["", (f"Note: the completed jobs' final validations are at different token counts ({at[0]:,} to "
                           f"{at[-1]:,}): a lower loss can be a longer run's; `python -m lmplay.plot {sweep_dir}` "
                           f"compares them at equal tokens.")]
        tokenizers = sorted({r["tokenizer"] for r in scored} - {None})
        if len(tokenizers) > 1:
            lines += ["", (f"Note: the jobs use different tokenizers ({', '.join(tokenizers)}): a loss per token does not "
                           f"compare across tokenizers (a byte against a GPT-2 token of ~4 bytes), so neither does the "
                           f"lowest loss above; compare jobs of one tokenizer.")]
        if sizes_differ(sizes := [r["parameters"] for r in scored]):
            known = sorted(c for c in sizes if c)
            lines += ["", (f"Note: the jobs' models differ in size ({known[0]:,} to {known[-1]:,} parameters): "
                           f"{SIZE_CAUSE}.")]
        held = sorted({r["held_out_tokens"] for r in rows if r["final_validation_loss"] is not None} - {None})
        if len(held) > 1:
            lines += ["", (f"Note: the jobs validated on different held-out text ({held[0]:,} to {held[-1]:,} tokens): "
                           f"{HELD_OUT_CAUSE}.")]
    if groups:
        lines += ["", "## Over seeds", "", "The completed jobs with a final loss; an interrupted one's is from fewer tokens.",
                  "", "| overrides | jobs | mean final val loss | std |", "|---|---|---:|---:|"]
        for g in groups:
            jobs = ", ".join(map(str, g["jobs_with_loss"])) or "none"
            if len(g["jobs_with_loss"]) < len(g["jobs"]):
                jobs += f" (left out: {', '.join(str(j) for j in g['jobs'] if j not in g['jobs_with_loss'])})"
            lines.append(f"| {' '.join(g['overrides']) or '-'} | {jobs} | "
                         f"{fmt_loss(g['mean_final_validation_loss'])} | {fmt_loss(g['std_final_validation_loss'])} |")
        for g in (g for g in groups if g.get("differing_settings")):
            lines += ["", (f"Note: the jobs of {' '.join(g['overrides']) or 'the sweep'} did not all train with the "
                           f"same settings ({settings_text(g['differing_settings'])}): jobs added after the settings "
                           f"or the model's code changed are averaged with the first as more seeds of them; a sweep "
                           f"dir of their own keeps them apart.")]
    failed = sum(r["status"] == "failed" for r in rows)
    unfinished = sum(r["status"] not in ("completed", "failed") for r in rows)
    if failed or unfinished:
        counts = [f"{failed} failed (the error is in its row)"] * bool(failed) + [
            (f"{unfinished} did not finish ('started': running, or killed; 'interrupted': stopped by a signal, "
             f"after saving what it had trained; 'not started': not reached yet)")] * bool(unfinished)
        fresh = any((override_value(r["overrides"], "fresh") or "").lower() == "true" for r in rows)  # starts over
        lines += ["", (f"Of {len(rows)} jobs, {' and '.join(counts)}. Rerunning the sweep with the same "
                       f"hydra.sweep.dir{' and without fresh=true' if fresh else ''} resumes each job from its own "
                       f"checkpoint{FAILS_AGAIN if failed else ''}: `{rerun_command(sweep_dir)}`")]
    return "\n".join(lines) + "\n"


def rerun_command(sweep_dir: Path) -> str:
    """The command that resumes the sweep: its own overrides (from Hydra's multirun.yaml) and its dir, without
    fresh=true; the same command alone would start a new sweep dir, named by the time. The words a shell would split
    or expand are quoted."""
    try:
        recorded = dig(read_yaml(sweep_dir / "multirun.yaml"), "hydra") or {}
    except ConfigError:
        recorded = {}
    overrides = recorded.get("overrides") or {}
    hydra = [o for o in overrides.get("hydra") or [] if isinstance(o, str) and override_key(o) not in
             ("hydra.sweep.dir", "hydra.mode")]
    task = [o for o in overrides.get("task") or [] if isinstance(o, str) and override_key(o) != "fresh"]
    flags = [w for source in dig(recorded, "runtime", "config_sources") or [] if isinstance(source, dict)
             and source.get("provider") == "command-line" and source.get("schema") == "file"
             for w in ("--config-dir", str(source.get("path")))]  # a sweep of configs of one's own
    if (name := dig(recorded, "job", "config_name")) not in (None, "config"):
        flags += ["--config-name", str(name)]
    words = [*flags, *hydra, *task, f"hydra.sweep.dir={quote(str(sweep_dir.resolve()))}"]  # for Hydra, then bash
    return "python -m lmplay.train -m " + " ".join(map(shell_word, words))


def write_summary(sweep_dir: Path) -> dict[str, Any]:
    """Write summary.json and summary.md in the sweep dir; returns {"jobs", "over_seeds", "markdown"}. Parallel
    jobs (joblib, SLURM) each write it as they end: one at a time, each reading the job files after its own
    update, so the last summary written is never one that read another job's file before that job updated it."""
    with exclusive(sweep_dir / SUMMARY_LOCK):
        rows = summarize(sweep_dir)
        groups = repeated_configs(rows)
        for group in groups:
            group["differing_settings"] = differing_settings_of(sweep_dir, rows, group["jobs"])
        write_atomic(sweep_dir / "summary.json", json.dumps({"sweep_dir": str(sweep_dir), "jobs": rows,
                                                        "over_seeds": groups}, indent=1))
        text = markdown(sweep_dir, rows, groups)
        write_atomic(sweep_dir / "summary.md", text)
    return {"jobs": rows, "over_seeds": groups, "markdown": text}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m lmplay.sweep", description="Rebuild a sweep's summary: "
                                     "writes SWEEP_DIR/summary.json and summary.md and prints the table.")
    parser.add_argument("sweep_dir", type=Path, help="a sweep dir, multirun/<date>/<time>")
    sweep_dir = parser.parse_args(argv).sweep_dir
    if sweep_dir.is_dir() and not (sweep_dir / "multirun.yaml").is_file():  # writing there would mislead
        raise ConfigError(f"{sweep_dir} is not a sweep dir: it has no multirun.yaml, which Hydra writes when a sweep "
                          f"starts (multirun/<date>/<time>); `python -m lmplay.plot DIR...` compares plain runs")
    print(printable(write_summary(sweep_dir)["markdown"]))


def cli() -> None:
    run_main(main)


if __name__ == "__main__":
    cli()
