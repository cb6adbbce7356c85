"""Running a Hydra app so that a bad override is one line naming it, an exit code, and no run dir.

Hydra reports a bad override in several lines. `run_hydra_app` holds Hydra's stderr until the run or the
sweep's first job starts (the `HeldStderr` callback, in the config); only when Hydra gave up before that
is the config composed again, with Hydra's compose API, to name the bad value in one line (lmplay.overrides).
Composing only on failure saves ~0.2 s on every good start.
"""

import contextlib
import hashlib
import io
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from lmplay.cli import HYDRA_VALUE_FLAGS, fail, is_sweep, launcher_rank
from lmplay.config import configs_missing
from lmplay.errors import ConfigError
from lmplay.files import SUMMARY_LOCK, planted_symlink, symlink_refused
from lmplay.overrides import (already_a_key, ambiguous_value, config_flags, group_choices, launcher_not_chosen,
                              precheck, reject_bare_words, reject_literal_interpolation_in_run_name,
                              set_before_the_sweep, sweeper_params_typed, typed_overrides, unknown_hydra_key,
                              with_config_dir)

_ctrl_c: list[int] = []  # a Ctrl-C reached this command (note_ctrl_c)
_held: list[tuple[TextIO, io.StringIO]] = []  # (real stderr, what Hydra wrote) while Hydra composes
_sweep_dirs: list[Path] = []  # the sweep dir, once Hydra has named it
_jobs_elsewhere: list[bool] = []  # its launcher runs the jobs in other processes (joblib, submitit)
_existed: dict[Path, Path] = {}  # run or sweep dir -> the nearest of it and its parents that existed before this
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def reject_sweep_under_torchrun() -> None:
    """`torchrun ... -m`: every rank would run the whole sweep, each naming the sweep dir by its own clock and
    joining a new process group per job, where ranks fell out of step (one rank's job 2 against another's job 1)
    or hung. Rank 0 says so (fail)."""
    fail("-m under torchrun: each rank would run the whole sweep on its own; sweep with a launcher that starts the "
         "ranks of each job: -m hydra/launcher=submitit_local hydra.launcher.tasks_per_node=N (hydra/launcher="
         "slurm_ddp on SLURM), or torchrun each job without -m")


PRINT_ONLY_FLAGS = {"-h", "--help", "--hydra-help", "--info", "-i", "--cfg", "-c", "--version"}  # no job runs
COMPLETION_FLAGS = {"--hydra-help", "-sc", "--shell-completion"}
ENTRY_POINTS = {"config": "lmp_trainer", "generate": "lmp_generator"}  # pyproject's [project.scripts]
SC_SUBCOMMANDS = ("install", "uninstall", "query")


def run_hydra_app(main: Callable[[], object], argv: list[str], config_name: str) -> None:
    """Run a @hydra.main app on argv; a bad override exits with one line and touches no run dir."""
    program = sys.argv[0]
    if COMPLETION_FLAGS & set(argv) and program.endswith(".py"):  # `python -m lmplay.train`: Hydra's shell completion
        program = ENTRY_POINTS[config_name]  # named the module's file, which, run as a file, has lmplay/ first on
        # sys.path, where lmplay.inspect hides Python's inspect (an AttributeError); its bash script completes
        # `python FILE.py` and installed commands, not `python -m`: the installed command is the one that works
    if "--hydra-help" in argv:  # Hydra composes its own help's config with the overrides, without the app's:
        argv = hydra_flags_of(argv)  # `exp=test_runner --hydra-help` was its traceback, advising `+exp=`
    sys.argv = [program, *argv]
    if missing := configs_missing():  # Hydra's own line is "Primary config directory not found"
        fail(missing)
    if PRINT_ONLY_FLAGS & set(argv) and hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `--help | head`: Hydra prints it, and would print a
        # BrokenPipeError's traceback too; a command that only prints ends quietly, as Unix tools do
    if is_sweep(argv) and "TORCHELASTIC_RUN_ID" in os.environ:
        reject_sweep_under_torchrun()
    reject_print_flags_without_cfg(argv)
    if {"-sc", "--shell-completion"} & set(argv) and not any(a.split("=")[0] in SC_SUBCOMMANDS for a in argv):
        fail(f"-sc (--shell-completion) takes one of {', '.join(f'{c}=SHELL' for c in SC_SUBCOMMANDS)}: "
             f'eval "$({ENTRY_POINTS[config_name]} -sc install=bash)" completes the command in bash')  # Hydra's
        # ValueError's traceback
    reject_literal_interpolation_in_run_name(argv)
    check_own_exp_files_of_a_sweep(argv, config_name)
    _sweep_dirs.clear()
    _jobs_elsewhere.clear()
    _ctrl_c.clear()
    _held.append((sys.stderr, io.StringIO()))
    sys.stderr = _held[-1][1]
    ctrl_c_before = signal.getsignal(signal.SIGINT)
    if ctrl_c_before is signal.default_int_handler:
        signal.signal(signal.SIGINT, note_ctrl_c)
    try:
        import numpy  # noqa: F401  before torch (a run's, generate's, a sweep job's), whose C code imports it and
        # swallows a Ctrl-C landing there: numpy was left half-imported, and the command went on unstopped
        main()
    except SystemExit as e:
        if _ctrl_c and e.code and not (isinstance(e.code, int) and e.code > 128):  # the error a Ctrl-C made
            if _held:  # (Hydra reports it as the job's and exits 1), not one to show
                release_stderr()
            print(interrupted(), file=sys.stderr)
            raise SystemExit(128 + signal.SIGINT) from None
        if isinstance(e.code, int) and e.code > 128 and _jobs_elsewhere and _jobs_elsewhere[-1]:
            print(interrupted(), file=sys.stderr)  # a job in a launcher's worker stopped on a signal (Ctrl-C)
        if e.code and _held:  # Hydra gave up before the run started
            explain_hydra_failure(argv, config_name, release_stderr())
        raise
    except HydraException:  # `--help exp=test_runer`: Hydra's help composes the config outside its error report
        if not PRINT_ONLY_FLAGS & set(argv):
            raise
        HeldStderr.give_back()
        precheck(typed_overrides(argv), config_name)
        raise
    except ValueError as e:
        if "Only one of --run, --multirun" not in str(e):
            raise
        HeldStderr.give_back()
        fail("-m with --cfg, --info or --shell-completion: these print one job's config, not a sweep's; drop -m "
             "and give each key one value")
    except KeyboardInterrupt:  # a job in this process saves and exits 128 + N itself: this is outside a job's
        HeldStderr.give_back()  # training, or in a launcher's waiting for jobs it runs in other processes
        if launcher_rank() == 0:  # torchrun forwards a Ctrl-C to every rank
            print(interrupted(), file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    finally:
        HeldStderr.give_back()
        if ctrl_c_before is signal.default_int_handler and signal.getsignal(signal.SIGINT) is note_ctrl_c:
            signal.signal(signal.SIGINT, ctrl_c_before)


def hydra_flags_of(argv: list[str]) -> list[str]:
    """The command line's Hydra flags (and their values), without its overrides."""
    kept = []
    for i, word in enumerate(argv):
        if word.startswith("-") or i > 0 and argv[i - 1] in HYDRA_VALUE_FLAGS:
            kept.append(word)
    return kept


def reject_print_flags_without_cfg(argv: list[str]) -> None:
    """`-p optimizer` or `--resolve` without --cfg: Hydra ignores -p and ran the job (a run trained or resumed,
    where the user asked to see a config), and --resolve was its ValueError's traceback."""
    given = {a.partition("=")[0] for a in argv}
    if given & {"--cfg", "-c"}:
        return
    if package := given & {"-p", "--package"}:
        fail(f"{package.pop()} picks the part of the config that --cfg prints (--cfg job -p optimizer); without --cfg "
             f"Hydra ignores it and the command runs: add --cfg job, or drop it")
    if "--resolve" in given and not given & {"-h", "--help"}:
        fail("--resolve resolves the ${...} of what --cfg prints (--cfg job --resolve) or --help shows; add one")


def explain_hydra_failure(argv: list[str], config_name: str, hydra_said: str) -> None:
    """What was wrong with the command, in one line (`fail`), where Hydra gave up before the run started with a
    traceback or several lines of its own (`hydra_said`, its held stderr); else Hydra's own words, as it wrote them."""
    if died := re.search(r"UncompletedJobError: (.*)", hydra_said):  # submitit's: a job left no result
        fail(job_died(died[1]), 1)
    remove_unused_sweep_dir()
    reject_bare_words(argv)
    overrides, flags = typed_overrides(argv), config_flags(argv)
    checked = "path" not in flags  # --config-path moves the primary config dir: Hydra's own message stands
    if checked:  # each job composed, with the keys it sets, or one line said what is wrong
        precheck(with_config_dir(overrides, flags.get("dir")), flags.get("name", config_name))
    ambiguous_value(hydra_said, config_name)
    if unknown := re.search(r"Could not override '(hydra\.[\w.]+)'.*?not in", hydra_said, re.DOTALL):
        fail(unknown_hydra_key(unknown[1], config_name, group_choices(overrides)))
    if basic := re.search(r"BasicLauncher.__init__\(\) got an unexpected keyword argument '(\w+)'", hydra_said):
        fail(launcher_not_chosen(f"hydra.launcher.{basic[1]}", chosen=False))
    if typed := sweeper_params_typed(overrides):
        fail(typed)
    if checked and is_sweep(argv) and (default_lacks := set_before_the_sweep(hydra_said, overrides)):
        fail(default_lacks)
    if there := already_a_key(hydra_said):  # a hydra.* key (the check leaves Hydra's own keys to Hydra)
        fail(there)
    sys.stderr.write(hydra_said)


def note_ctrl_c(signum: int, frame: object) -> None:
    """Python's own Ctrl-C (a KeyboardInterrupt), noted: one landing in OmegaConf's clean-up code while Hydra sets a
    sweep's job up became an AttributeError there, which Hydra reported as the job's error, exiting 1."""
    _ctrl_c.append(signum)
    signal.default_int_handler(signum, frame)


@contextlib.contextmanager
def readable_config() -> Iterator[None]:
    """A config the job cannot read (a key `~key` deleted that others still name, an ${...} naming no key) is a
    ConfigError of one line, not OmegaConf's traceback."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except OmegaConfBaseException as e:
        if ctrl_c_in(e) is not None:  # a Ctrl-C landing inside OmegaConf, which raised its own error handling it
            raise
        what = " ".join(str(e).split("\n")[0].split())
        where = f" (at {e.full_key})" if getattr(e, "full_key", None) else ""
        raise ConfigError(f"the config cannot be read: {what}{where}; a key deleted with ~ that the config still "
                          f"reads, or an ${{...}} that names no key? Put the key back, or fix the interpolation") from None


def ctrl_c_in(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or a stop signal handled as one) that a library turned into an error of its own while handling
    it: OmegaConf, for one, catches a KeyboardInterrupt in the middle of loading a config and raises its own."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def job_died(said: str) -> str:
    """A sweep job that ended without a result (SIGKILL, out of memory, a rank of it lost): the launcher stops
    collecting there, though the jobs it started beside it may still run."""
    sweep_dir = _sweep_dirs[-1].resolve() if _sweep_dirs else None
    where = f"{sweep_dir}/summary.md" if sweep_dir else "the sweep's summary.md"
    rerun = "rerun the sweep in its dir"
    if sweep_dir:
        from lmplay.sweep import rerun_command, write_summary

        rerun = f"rerun the sweep, `{rerun_command(sweep_dir)}`,"
        with contextlib.suppress(Exception):  # the rows as the jobs' files stand now; the line still comes
            write_summary(sweep_dir)
    return (f"a job of the sweep ended without a result ({' '.join(said.split())[:160]}): killed, out of memory, or "
            f"one of its ranks lost; the launcher's other jobs may still be running, and their rows in {where} fill "
            f"in as they end; then {rerun} to resume the unfinished ones")


def interrupted() -> str:
    """What a Ctrl-C outside a job's training stopped, and how to go on."""
    if not (_sweep_dirs and _sweep_dirs[-1].is_dir()):
        return "interrupted before it started; nothing was saved"  # lmplay.train's or lmplay.generate's set-up
    sweep_dir = _sweep_dirs[-1].resolve()
    from lmplay.sweep import rerun_command, write_summary

    resume = f"to resume it: {rerun_command(sweep_dir)}"
    with contextlib.suppress(Exception), ctrl_c_ignored():  # the summary as the jobs' files stand now (a Ctrl-C
        write_summary(sweep_dir)  # inside a job's end left its row 'started' though it had finished); a second
        # Ctrl-C, typed while it is written, would have ended in a traceback before the line below
    if not _jobs_elsewhere[-1]:
        return f"interrupted between jobs, or before training started; {resume}"
    return (f"interrupted: the jobs running in the launcher's workers save when the signal reaches them first, "
            f"but the launcher may stop them before (joblib kills its workers): each resumes from its last "
            f"checkpoint; {resume}")


@contextlib.contextmanager
def ctrl_c_ignored() -> Iterator[None]:
    """Ctrl-C ignored for the ~0.1 s of writing a stopped sweep's summary: the user has stopped it already."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def job_dir_name(overrides: str) -> str:
    """A sweep job's dir, named by its overrides alone: a job number would shift when a rerun of the sweep adds
    a value (seed=1,2 -> seed=1,2,3), so the rerun would train every job again in new dirs. A `/` in a value
    (a path) would nest dirs; a name past the filesystem's 255 bytes is cut and completed by its hash."""
    name = overrides.replace("/", "_") or "defaults"
    if len(name.encode()) <= 200:
        return name
    return name.encode()[:180].decode(errors="ignore") + "_" + hashlib.sha256(name.encode()).hexdigest()[:16]


OmegaConf.register_new_resolver("lmplay_job_dir", job_dir_name, replace=True)


class JobError(CompactHydraException):
    """A sweep job's LmplayError (its __cause__). The sweep's summary records it in the job's row and the other
    jobs run; the sweep ends with its table and one error line, exit code 1, not a traceback (lmplay.sweep)."""


class HeldStderr(Callback):
    """Hydra has composed and checked the config: stderr is the terminal again, with what Hydra wrote before
    (warnings). A run: as it starts. A sweep: as its first job starts, after Hydra has composed every
    job's config (the basic sweeper does before launching any), so a bad value in a sweep is one line too;
    with a launcher that runs jobs in other processes, at the end of the sweep."""

    @staticmethod
    def give_back() -> None:
        if _held:
            hydra_said = release_stderr()  # first: `sys.stderr.write(release_stderr())` would write to the buffer
            sys.stderr.write(hydra_said)

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        self.give_back()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        _sweep_dirs.append(Path(config.hydra.sweep.dir))
        _jobs_elsewhere.append(config.hydra.launcher.get("_target_") != BASIC_LAUNCHER)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        self.give_back()


class WritableOutputDir(Callback):
    """The run dir (a sweep: the sweep dir) can be made and written, checked before Hydra makes it, so that a
    path that is a file or a read-only place is one line, not Hydra's traceback."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        reject_output_subdir(config)
        # the run dir names the experiment through ${hydra:runtime.choices.exp}, which resolves only once
        # HydraConfig holds this config; Hydra sets it a moment later for the job anyway
        HydraConfig.instance().set_config(config)
        try:
            run_dir = config.hydra.run.dir
        except InterpolationResolutionError as e:  # Hydra's own report of it failed in its formatter, as a traceback
            fail(f"the run's dir cannot be named: {str(e).splitlines()[0]} (at hydra.run.dir); fix the ${{...}} in "
                 f"run_name or hydra.run.dir")
        check_writable_dir(Path(run_dir), "hydra.run.dir")

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        reject_output_subdir(config)
        check_writable_dir(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def reject_output_subdir(config: Any) -> None:
    """Hydra would write its .hydra/ before the job starts: a run refused for bad input left it behind, and a resume's
    overrides.yaml was replaced by this command's before lmplay read the run's earlier overrides (its label)."""
    if config.hydra.output_subdir is not None:
        fail(f"hydra.output_subdir={config.hydra.output_subdir}: lmplay writes the run's .hydra/ itself, once the run "
             f"has started cleanly, with the settings it trains with; drop hydra.output_subdir")


class SlurmAvailable(Callback):
    """A SLURM launcher on a machine without SLURM is one line before the sweep, not submitit's traceback."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if "Slurm" in launcher and shutil.which("sbatch") is None:
            choice = config.hydra.runtime.choices.get("hydra/launcher")
            fail(f"hydra/launcher={choice} submits to SLURM, and this machine has no sbatch; run the sweep on a "
                 f"SLURM login node, or here with hydra/launcher=joblib (parallel) or without hydra/launcher")


def check_writable_dir(path: Path, key: str) -> None:
    """Make the directory as Hydra would next (a failed run removes what this made again, if it stays empty)."""
    if path.parts and path.parts[0].startswith("~"):  # Hydra takes `'hydra.run.dir=~/runs/x'` as it is: a dir named
        rest = "/".join(path.parts[1:])  # '~' in the current one, which a later `rm -rf ~...` of it is one slip from
        fail(f"{key}={path}: Hydra does not expand ~, so this would make a directory named '{path.parts[0]}' in "
             f"{Path.cwd()}; type {key}=$HOME/{rest} (unquoted: the shell expands $HOME)")
    where = path.absolute()
    try:
        existed = next(p for p in (where, *where.parents) if p.exists())  # a name too long raises here
        _existed[where] = where.parent if existed == where and made_by_another_rank(where) else existed
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"{key}={path} cannot be made ({e.strerror or e}: {e.filename}); pick another directory")
    if not os.access(path, os.W_OK | os.X_OK):
        why = "its file system is mounted read-only" if read_only(path) else "no permission"
        fail(f"{key}={path} cannot be written ({why}); pick another directory")
    if (link := planted_symlink(path)) is not None:
        fail(symlink_refused(link))


def made_by_another_rank(path: Path) -> bool:
    """Whether an empty dir was made since this process started (Linux's /proc tells when): by another rank of
    this torchrun, a moment before this one looked. The rank that removes a failed start's dir left it behind; a
    dir the user made beforehand stays. Its parents are not judged so: a dir's time changes as entries are made."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or any(path.iterdir()):
        return False
    try:
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22: starttime
    except (OSError, StopIteration, IndexError, ValueError):
        return False
    return path.stat().st_ctime >= boot + ticks / os.sysconf("SC_CLK_TCK")


def read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # AttributeError: no statvfs (Windows)
        return False


SWEEP_OWN_FILES = ("multirun.yaml", SUMMARY_LOCK)  # Hydra's record of the sweep, and the summary's lock


def remove_unused_sweep_dir() -> None:
    """A sweep that failed before any job leaves its dir empty or holding only its own files: remove it."""
    for sweep_dir in _sweep_dirs:
        try:
            unused = sweep_dir.is_dir() and {p.name for p in sweep_dir.iterdir()} <= set(SWEEP_OWN_FILES)
        except OSError:  # a name too long to be a dir: nothing was made
            continue
        if unused:
            for name in SWEEP_OWN_FILES:
                (sweep_dir / name).unlink(missing_ok=True)
            remove_made_dirs(sweep_dir)


def remove_made_dirs(path: Path) -> None:
    """`path` and the parents this command made for it (outputs/, multirun/<date>/), where they stayed empty: a
    failed start leaves nothing behind, and never removes a directory that was there before it."""
    path = path.absolute()
    existed = _existed.get(path, path)  # a dir this command did not make is left alone
    for made in (path, *path.parents):
        if made == existed:
            return
        try:
            made.rmdir()
        except FileNotFoundError:  # another rank of a torchrun removed it first
            continue
        except OSError:  # not empty
            return


def check_own_exp_files_of_a_sweep(argv: list[str], config_name: str) -> None:
    """A sweep over configs of the user's own (--config-dir, hydra.searchpath) is checked whole before it starts, as
    a single run is: Hydra composes each job only as it starts, and an exp file without its `# @package _global_`
    made a sweep dir whose jobs failed one by one."""
    if not is_sweep(argv) or config_name != "config" or PRINT_ONLY_FLAGS & set(argv):
        return
    overrides, flags = typed_overrides(argv), config_flags(argv)
    own = flags.get("dir") or any(o.lstrip("+").startswith("hydra.searchpath") for o in overrides)
    if own and not {"path", "name"} & set(flags):  # a primary config of one's own: the check composes lmplay's
        precheck(with_config_dir(overrides, flags.get("dir")), config_name)


def release_stderr() -> str:
    """Give stderr back; returns what was written to it meanwhile."""
    real, held = _held.pop()
    sys.stderr = real
    return held.getvalue()


