"""What a sweep checks before its first job, so that nothing a job would find wrong costs the jobs before it.

A job resumes whatever its dir holds, so jobs whose dirs would be one (a swept key left out of the dirs' names) are
refused, and so is a job whose dir holds an earlier sweep's other job; a bad value of the sweep (`batch_size=8,abc`,
`optimizer.lr=1e-3,${nope}`) is one line, as a single run's is, not a failure once the jobs before it have trained.
Hydra's own start composes every job's config once already: these checks compose only each combination of the
sweep's group choices, and set each swept value into it.
"""

import copy
import inspect
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, read_write

from lmplay.cli import fail
from lmplay.config import check_kind, top_level_aliases
from lmplay.errors import ConfigError
from lmplay.files import CHECKPOINT
from lmplay.hydra_app import readable_config
from lmplay.overrides import single_runs
from lmplay.sweep import expanded_jobs, read_job, shown_overrides, swept_overrides


class SweepStart(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not str(config.hydra.sweep.dir).strip():  # an unset $VAR: the sweep took the current dir, and every run
            fail("hydra.sweep.dir='' would sweep into the current directory (and summarize every run below it); give "
                 "the sweep a dir of its own, like hydra.sweep.dir=outputs/sweep1")  # below it as its jobs
        sweep_dir = Path(config.hydra.sweep.dir)
        if (sweep_dir / CHECKPOINT).exists() and not (sweep_dir / "multirun.yaml").exists():
            fail(f"hydra.sweep.dir={sweep_dir} holds a run (model.lmp), not a sweep: its jobs' dirs inside it would "
                 f"keep that run from being resumed; give the sweep a dir of its own")
        if clash := shared_job_dir(config):
            fail(clash)
        check_swept_values(config)


RESUME_MAY_CHANGE = ("max_steps", "fresh", "device")  # what a rerun of a sweep may change for a job it resumes


def shared_job_dir(config: DictConfig) -> str | None:
    """Why two of the sweep's jobs, or a job and an earlier sweep's, would share a dir, if they would. A job resumes
    what its dir holds: a swept key left out of the dirs' names (`exclude_keys=[seed]`, `subdir=${hydra.job.num}`)
    trained the second job on from the first's checkpoint, labelled as itself. Jobs only the sweeper knows (another
    sweeper's, a glob()'s), and dirs named by more than the job's overrides and number, are not checked."""
    sweep_dir, taken = Path(config.hydra.sweep.dir), {}
    for num, job in enumerate(expanded_jobs(OmegaConf.to_container(config.hydra, resolve=False))):
        values, subdir = typed_values(job), job_subdir(config, job, num)
        if values is None or subdir is None:
            return None
        job_dir = sweep_dir / subdir
        other, other_values = taken.get(job_dir, (num, values))
        keys = differing_keys(values, other_values, ("fresh",))  # fresh=false,true: one run, then started over
        if keys and all(str(values.get(k)).replace("/", "_") == str(other_values.get(k)).replace("/", "_")
                        for k in keys):  # a/b.txt and a_b.txt
            return (f"jobs {other} and {num} of this sweep would share the dir {job_dir}: their {', '.join(keys)} "
                    f"differ only where a job's dir name reads '/' as '_' (a path's folders are not nested in it); "
                    f"rename one of the files, or name the jobs' dirs by number in a sweep dir of its own "
                    f"(hydra.sweep.subdir=${{hydra.job.num}})")
        if keys:
            return (f"jobs {other} and {num} of this sweep would share the dir {job_dir} (they differ in "
                    f"{', '.join(keys)}), and job {num} would train on from job {other}'s checkpoint as if it were its "
                    f"own: name each job's dir by every key the sweep varies (keep them out of "
                    f"hydra.job.config.override_dirname.exclude_keys; hydra.sweep.subdir is named by them by default)")
        taken[job_dir] = num, values
        recorded = read_job(job_dir).get("overrides")
        earlier = typed_values(recorded) if recorded is not None else values
        if earlier is not None and differing_keys(values, earlier, RESUME_MAY_CHANGE):
            return (f"job {num} ({shown_overrides(job)}) would resume {job_dir}, which holds the run of another job "
                    f"({shown_overrides(recorded)}): give this sweep a hydra.sweep.dir of its own, or name each job's dir "
                    f"by its overrides (hydra.sweep.subdir's default)")
    return None


def job_subdir(config: DictConfig, job: list[str], num: int) -> str | None:
    """The dir in the sweep's that Hydra will give its job `num`, from its overrides and number alone (None for a
    subdir that names more): composing each job's config, as Hydra's launcher will, took 0.06 s a job."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    naming = config.hydra.job.config.override_dirname
    try:
        parsed = OverridesParser.create().parse_overrides(job)
        runtime = {"override_dirname": get_overrides_dirname(parsed, list(naming.exclude_keys), naming.item_sep,
                                                             naming.kv_sep), "num": num, "id": num}
        typed = {o.key_or_group: o.value() for o in parsed if "." not in o.key_or_group}  # ${seed} in a subdir
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"]
        return str(OmegaConf.create({**typed, "hydra": {"job": runtime}, "subdir": subdir}).subdir)
    except Exception:  # noqa: BLE001 - a subdir naming more (${hydra:runtime...}): told as the job runs
        return None


def check_swept_values(config: DictConfig) -> None:
    """A bad value in a sweep (batch_size=8,abc; optimizer.lr=1e-3,abc; lr=${nope}) is one line before any job
    trains, as a single run's is: found as its job started, it came after the jobs before it had trained, and left a
    job dir named by it. Each value of the sweep is checked once, set into the config of its job's group choices
    (composed by Hydra once a combination of them): against the kind of the value it replaces, and by the run's own
    checks of its settings."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lmplay.train import check_run_settings

    if (typed := swept_overrides(OmegaConf.to_container(config.hydra, resolve=False))) is None:  # ${...} as typed
        return
    swept = {o.key_or_group for o in OverridesParser.create().parse_overrides(typed) if o.is_sweep_override()}
    groups = set(config.hydra.runtime.choices)  # exp, optimizer, ...: choosing one composes other keys
    bases: dict[tuple[str, ...], DictConfig] = {}
    built: set[str] = set()  # the settings check_buildable built already
    read: set[str] = set()  # the swept top-level aliases some job reads
    job = copy.deepcopy(config)
    files_here = "slurm" not in str(config.hydra.launcher.get("_target_", "")).lower()  # else on its nodes' disks
    for num, run in enumerate(single_runs(typed)):
        parsed = OverridesParser.create().parse_overrides(run)
        chosen = tuple(o.input_line for o in parsed if o.key_or_group in groups or o.key_or_group not in swept)
        if chosen not in bases:  # the job's config but for its swept values: Hydra's, as the launcher composes it
            try:
                composed = GlobalHydra.instance().config_loader().load_sweep_config(config, list(chosen))
            except HydraException:  # a group choice that is not there (an exp file's params): Hydra's start says
                return
            bases[chosen] = OmegaConf.masked_copy(composed, [key for key in composed if key != "hydra"])
        cfg = copy.deepcopy(bases[chosen])
        with read_write(job.hydra):
            job.hydra.overrides.task = run  # as the launcher sets it for each job: what its command typed
        HydraConfig.instance().set_config(job)
        try:
            with readable_config():
                values = [o for o in parsed if o.key_or_group in swept and o.key_or_group not in groups
                          and not o.is_sweep_override() and "oc.env" not in str(o.value())]  # not a glob(), a
                # group's choice, or an environment variable, which may be the job's own (env_set, a SLURM node's)
                for o in values:
                    set_like(cfg, o.key_or_group, o.value(), OmegaConf.select(cfg, o.key_or_group, default=ABSENT))
                check_run_settings(cfg)
                check_runner_settings(cfg)
                read |= aliases_read(cfg, swept)
                check_buildable(cfg, built)
                if files_here and not resumes(config, run, num):
                    check_plan_files(cfg)
                for o in values:  # each ${...} names a key
                    OmegaConf.select(cfg, o.key_or_group)
        except ConfigError as e:
            fail(f"{e} (in the sweep's job with {' '.join(run)})")
    if unread := sorted(swept & top_level_aliases() - read):  # `warmup_fraction=0.1,0.5` beside scheduler=constant,
        key = unread[0]  # `lr=...` beside an `optimizer.lr` that replaces `${lr}`: jobs alike, but for a note in each
        fail(f"{key} is swept, but no job of the sweep reads it (its group's file takes no {key}, or a key set beside "
             f"it replaces ${{{key}}}): the jobs would train alike; sweep a key the jobs read (--cfg job shows them)")


def aliases_read(cfg: DictConfig, swept: set[str]) -> set[str]:
    """The swept top-level aliases (lr, warmup_fraction) that a group of this job's config reads as `${key}`."""
    from lmplay.runner.base import GROUPS

    return {key for key in swept & top_level_aliases()
            if any("${" + key + "}" in OmegaConf.to_yaml(cfg[g], resolve=False) for g in GROUPS if g in cfg)}


def check_runner_settings(cfg: DictConfig) -> None:
    """The job's runner settings and tokenizer, as its run checks them once it starts: `batch_size=8,0` or
    `tokenizer=bytes,gpt3` failed job 1 after job 0 had trained."""
    from lmplay.data.tokenizers import get_tokenizer
    from lmplay.runner.components import RunnerSettings

    runner = OmegaConf.to_container(cfg.runner, resolve=True)
    RunnerSettings(**{k: v for k, v in runner.items() if k in RunnerSettings.__dataclass_fields__}).check("")
    get_tokenizer(cfg.tokenizer)


def resumes(config: DictConfig, run: list[str], num: int) -> bool:
    """The job's dir holds a checkpoint: a rerun resumes it, or finds it done (its data moved since need not stop
    the sweep's unfinished jobs: its own start says what it lacks)."""
    subdir = job_subdir(config, run, num)
    return subdir is None or (Path(config.hydra.sweep.dir) / subdir / CHECKPOINT).exists()


def check_plan_files(cfg: DictConfig) -> None:
    """The job's data files are there, none of them read: a missing one of its second job's was said after the
    first had trained (hours, in a real sweep)."""
    from lmplay.runner.component_base import without_target
    from lmplay.runner.components import config_class

    try:
        plan = config_class(cfg, "curriculum")(**without_target(OmegaConf.to_container(cfg.curriculum, resolve=True)))
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - a plan the job's own build refuses (a key its class takes not): it says so
        return
    plan.check_files()


def check_buildable(cfg: DictConfig, built: set[str]) -> None:
    """The job's model, optimizer and schedule, built as its run builds them, but on the meta device (no memory, no
    time, no data): a value only they refuse (model.num_heads=2,5 where 5 does not divide embed_dim; lr=3e-3,-1;
    scheduler.warmup_fraction=0,2) failed its job after the jobs before it had trained. Settings `built` already
    (seeds of one configuration) are not built again; what only the real build finds is left to the job."""
    import contextlib
    import io

    import torch

    from lmplay.device import device_named
    from lmplay.runner.base import LMRunnerBase
    from lmplay.runner.components import config_class

    settings = OmegaConf.to_yaml(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in ("seed", "run_name")]))
    if settings in built:
        return
    built.add(settings)
    device_named(cfg.device)  # its name; whether there is one is the job's node's to say (a SLURM sweep's GPUs are
    job = copy.deepcopy(cfg)  # not the login node's)
    job.device = "cpu"
    runner = LMRunnerBase(job, Path("."), config_class(cfg, "model"))
    runner.device = torch.device("meta")
    full_error = os.environ.pop("HYDRA_FULL_ERROR", None)  # which would pass a refusal on raw, as the job shows it
    try:
        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # its notes are the job's to say
            runner.settle_architecture(None, {})
            runner.build_components({}, data=False)
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001 - what the meta device cannot build (fused=true there): the job's to say
        return
    finally:
        if full_error is not None:
            os.environ["HYDRA_FULL_ERROR"] = full_error


ABSENT = object()  # OmegaConf.select's default for a key the config does not have


def set_like(cfg: DictConfig, key: str, value: Any, was: Any) -> None:
    """Set `key` to `value`, which must be of the kind of the value `was` it replaces (a number for a number, a list
    for a list; an integer or not is the run's checks' to say: `epochs: 1` takes 0.5); null, an interpolation (read
    as the job reads it, by the run's checks) and a key the job adds (+key, `was` ABSENT) are not judged here."""
    if value is not None and not (isinstance(value, str) and "${" in value):
        if isinstance(was, ListConfig) and not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} should be a list, like {key}=[{value},...]")
        if isinstance(was, (bool, int, float)) and "." in key:  # a top-level key: the run's checks say more
            check_kind(key, value, kind_of(key, was))
    if was is not ABSENT:
        OmegaConf.update(cfg, key, value, merge=False)


def kind_of(key: str, was: float) -> type:
    """The kind a value must have where `was` stood: an integer where lmplay's runner or curriculum declares one
    (runner.validation_interval=5e3, curriculum.validation_seed=2.5 are refused), else any number: a model's kind is
    its class's, which the job checks (an idea's `dropout: 0` takes 0.1), a torch optimizer's `momentum=0` takes 0.9
    and a stage's `epochs: 1` takes 0.5."""
    if isinstance(was, bool):
        return bool
    group, _, name = key.partition(".")
    declared = None
    if group == "runner":
        from lmplay.runner.components import RunnerSettings

        declared = getattr(RunnerSettings(), name, None)
    elif group == "curriculum":
        from lmplay.data.curriculum import Curriculum

        parameter = inspect.signature(Curriculum).parameters.get(name)
        declared = parameter.default if parameter else None
    return int if isinstance(declared, int) and not isinstance(declared, bool) else float


def differing_keys(values: dict[str, Any], others: dict[str, Any], but: tuple[str, ...]) -> list[str]:
    """The keys two jobs' overrides set apart, `but` those."""
    return sorted(k for k in values.keys() | others.keys() if values.get(k) != others.get(k) and k not in but)


def typed_values(overrides: list[str]) -> dict[str, Any] | None:
    """key -> value of a job's overrides, as Hydra reads them (lr=1e-3 and lr=0.001 are one value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)}
    except (HydraException, ValueError):
        return None
