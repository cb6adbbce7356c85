"""Files: where a checkpoint is, writing a small text file so that no reader ever sees half of it, and
keeping a run dir to one run at a time."""

import contextlib
import fcntl
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from lmplay.errors import ConfigError, OutputError

LOCK_NAME = ".lmplay.lock"
ASIDE_SUFFIX = ".tmp"  # a file written aside, renamed over its name once whole
_held: dict[Path, tuple[TextIO, bool]] = {}  # run dir -> (its open lock file, whether this process made it)

CHECKPOINT = "model.lmp"  # a run dir's files, by the names design.md §7 gives them
CORRUPTED = "model.corrupted.lmp"  # a diverged run's last state, for inspection; never resumed from
STATS = "stats.json"
RECORD_KINDS = ("train", "validation")  # stats.json: {"train": [record, ...], "validation": [...]}
JOB_FILE = "job.json"  # a sweep's job's own record (lmplay.sweep)
FRESH_MARK = ".lmplay.fresh_job"  # the SLURM job that last started the run over (fresh=true)
REPLACED_PREFIX = "replaced_"  # fresh=true sets the replaced run's files aside in replaced_<time>/
SUMMARY_LOCK = ".summary.lock"  # a sweep dir's: its jobs write its summary.md one at a time

def backup_of(path: Path) -> Path:
    """Where a checkpoint's previous version is kept when a save replaces it: `model.lmp.bak` beside it."""
    return path.with_name(path.name + ".bak")


def checkpoint_file(path: Path | str) -> Path:
    """A checkpoint given as its file, or as the run dir it lives in (which stands for its model.lmp); `~` is the
    home dir, as for load_model (zsh leaves a `checkpoint=~/x` unexpanded)."""
    path = home_expanded(path)
    return path / CHECKPOINT if path.is_dir() else path


def home_expanded(path: Path | str) -> Path:
    """`~/x` and `~user/x` as the shell would expand them; as typed where there is no such user."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "Could not determine home directory": the file check that follows says it is missing
        return Path(path)


def no_checkpoint(path: Path | str) -> ConfigError:
    """`checkpoint X does not exist`, and where X is a dir of runs (a sweep's), the runs' checkpoints to pick from."""
    path = Path(path)
    if folder := next((p for p in (home_expanded(path), checkpoint_file(path)) if p.suffix == ".lmp" and p.is_dir()),
                      None):  # `mkdir run/model.lmp` read as "run/model.lmp does not exist"
        return ConfigError(f"checkpoint {folder} is a directory, not a checkpoint file")
    if checkpoint_file(path).exists():  # /dev/null, a pipe: there, but no file to read
        return ConfigError(f"checkpoint {checkpoint_file(path)} is no regular file; give a model.lmp (or its run dir)")
    message = f"checkpoint {checkpoint_file(path)} does not exist"
    bak = backup_of(checkpoint_file(path))
    if bak.is_file():  # what a crash in a save's rename leaves
        return ConfigError(f"{message}, but {bak.name} does: the previous checkpoint (rename it to "
                           f"{checkpoint_file(path).name} to use it)")
    if training_into(checkpoint_file(path).parent):
        return ConfigError(f"{message} yet: the run in {checkpoint_file(path).parent} is still training and has not "
                           f"saved (it saves every runner.save_interval samples, at each stage's end and at its "
                           f"own); sample once it has")
    if path.is_dir() and any((path / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        return ConfigError(f"{message}: {path} holds a Hugging Face model's weights (save_pretrained's), which import "
                           f"into one: python -m experiments.gpt2.import_hf {path} OUT.lmp")
    sweep = next((d for d in (path, path.parent, path.parent.parent) if (d / "multirun.yaml").is_file()), None)
    runs = sorted(sweep.glob("*/model.lmp")) if sweep else []  # sweep/, sweep/model.lmp, sweep/JOB_TYPO/model.lmp
    if runs:
        message += (f"; {sweep} is a sweep's dir, of {len(runs)} run{'s' * (len(runs) > 1)}: give one of their "
                    f"checkpoints, e.g. {runs[0]}")
    return ConfigError(message)


def from_launch_dir(path: str, to_create: bool = False) -> str:
    """A relative path as the user meant it: from the directory the command was typed in. With
    hydra.job.chdir=true the job runs inside its run dir, where `curriculum.path=data.txt` names nothing;
    Hydra's rule (hydra.utils.to_absolute_path) reads it from the launch dir instead. A path that is read
    moves there only where it exists (`org/name` may be a hub id); one `to_create` always does. Elsewhere
    (chdir off, the Python API) the path is returned as given."""
    from hydra.core.hydra_config import HydraConfig

    if Path(path).expanduser().is_absolute() or not HydraConfig.initialized():
        return path
    launched = Path(HydraConfig.get().runtime.cwd)
    found = (launched / path).exists() or (any(c in path for c in "*?[") and next(launched.glob(path), None))
    moved = launched != Path.cwd() and (to_create or found)
    return str(launched / path) if moved else path


def hold_run_dir(run_dir: Path, instead: str = "train into another run dir (run_name=NAME)") -> None:
    """Lock the run dir for this process (the OS drops the lock when it exits, however it exits): a second
    run started into it (another terminal, a requeued job while the first still runs) would write the same
    checkpoint and stats.json, each over the other's."""
    made = not (run_dir / LOCK_NAME).exists()
    try:  # held open until the process exits
        lock = open_lock(run_dir / LOCK_NAME)
    except OSError as e:
        raise ConfigError(f"{run_dir / LOCK_NAME} cannot be opened as the run's lock ({e.strerror or e}: a symlink "
                          f"there?); remove it") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"{run_dir} is in use by another run that is still training; wait for it to end, or "
                          f"{instead}") from None
    except OSError:  # a filesystem without locks (some NFS mounts): train unguarded rather than not at all
        lock.close()
        return
    _held[run_dir] = (lock, made)


def remove_crash_leftovers(run_dir: Path) -> None:
    """The files a killed run was writing aside (write_atomic's, a checkpoint's `.tmp`): each stayed for good, one
    more a crash, a checkpoint's as large as the model. Called with the run dir held: no other run writes them."""
    atomic = [p for d in (run_dir, run_dir / ".hydra") for p in d.glob(f".*{ASIDE_SUFFIX}")
              if re.fullmatch(rf"\..+\.[0-9a-f]{{32}}{re.escape(ASIDE_SUFFIX)}", p.name)]  # not a user's .notes.tmp
    for path in [*atomic, *run_dir.glob(f"model*.lmp{ASIDE_SUFFIX}"), *run_dir.glob(f"model*.lmp.bak{ASIDE_SUFFIX}")]:
        if path.is_file() or path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()


def open_lock(path: Path) -> TextIO:
    """A lock file, made if need be; O_NOFOLLOW: a symlink of its name (a run dir from elsewhere) would make its
    target, wherever it points."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW), "a")


# The names lmplay (and Hydra) write in a run dir as the run's own: a symlink there would take the writes elsewhere.
RUN_FILES = (".hydra", "tb", STATS, JOB_FILE, CHECKPOINT, backup_of(Path(CHECKPOINT)).name, FRESH_MARK, "plots")


def planted_symlink(run_dir: Path) -> Path | None:
    """The first of the run's own names in `run_dir` that is a symlink (a run dir from a tarball or a shared folder):
    lmplay would write its checkpoints, TensorBoard events or labels wherever it points."""
    names = [run_dir / name for name in RUN_FILES] + sorted(run_dir.glob("model.*.lmp*"))
    return next((p for p in names if p.is_symlink()), None)


def symlink_refused(link: Path) -> str:
    return (f"{link} is a symlink (to {os.readlink(link)}), and lmplay writes there as the run's own; remove it, or "
            f"train into another run dir")


def training_into(run_dir: Path) -> bool:
    """Whether a run holds `run_dir`'s lock now (hold_run_dir's)."""
    try:
        with open(run_dir / LOCK_NAME) as lock:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock file, or a filesystem without locks
        return False
    return False


def release_run_dir(run_dir: Path) -> None:
    """Drop the lock, and its file if this process made it (a run that failed on bad input leaves its dir as
    it found it)."""
    lock, made = _held.pop(run_dir, (None, False))
    if lock is not None:
        if made:  # best-effort: a dir turned read-only mid-run must leave its error line, not a second traceback
            with contextlib.suppress(OSError):
                (run_dir / LOCK_NAME).unlink(missing_ok=True)
        lock.close()


def set_aside_old_run(run_dir: Path) -> Path | None:
    """A run started over (fresh=true) moves the replaced run's files into `replaced_<time>/` in the run dir: its
    checkpoints (model.lmp, its .bak, the stage checkpoints, a diverged run's dump), stats.json, TensorBoard's tb/
    and .hydra/. Left in place, the stage checkpoints read as the new run's, the new run's second save rotated the
    old model.lmp out of model.lmp.bak, and TensorBoard drew both runs as one curve. Returns the dir, or None when
    there was nothing to move.

    The files go into a hidden `.replaced_<time>/` first, renamed when all are in: a set-aside cut short (kill -9)
    is finished by the next one (`interrupted_set_aside` stops a resume meanwhile), never split over two dirs."""
    old = sorted(p for p in run_dir.glob("model*.lmp*") if p.is_file() and not p.name.endswith(".tmp"))
    old += [p for p in (run_dir / STATS, run_dir / "tb", run_dir / ".hydra") if p.exists()]
    moving = interrupted_set_aside(run_dir)
    if not old and moving is None:
        return None
    moving = moving or run_dir / time.strftime(f".{REPLACED_PREFIX}%Y%m%d-%H%M%S")
    moving.mkdir(exist_ok=True)
    for path in old:
        path.replace(moving / path.name)
    aside, n = run_dir / moving.name[1:], 1
    while aside.exists():  # two starts over within one second
        n += 1
        aside = run_dir / f"{moving.name[1:]}-{n}"
    moving.rename(aside)
    return aside


def interrupted_set_aside(run_dir: Path) -> Path | None:
    """The hidden dir of a fresh=true set-aside that did not finish, if any."""
    return next(iter(sorted(p for p in run_dir.glob(f".{REPLACED_PREFIX}*") if p.is_dir() and not p.is_symlink())),
                None)  # a symlink of that name (a run dir from elsewhere) would move the run's files out of it


def write_atomic(path: Path, data: str | bytes) -> None:
    """Written aside, then renamed over `path`: a reader (or a crash) sees the old file or the new one.

    The temp name is unique, so writers in other processes or on other nodes (a sweep's jobs refreshing
    its summary) never share one, and it is created as `open` creates files, so the umask sets who may read.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{ASIDE_SUFFIX}")
    try:
        tmp.write_bytes(data) if isinstance(data, bytes) else tmp.write_text(data)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"could not write {path} ({e.strerror or e}); the previous {path.name}, if any, is "
                          f"intact") from None
    finally:
        with contextlib.suppress(OSError):  # a read-only file system refuses even this unlink of nothing (EROFS)
            tmp.unlink(missing_ok=True)


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an OS lock on `lock_path` (made if need be); where none can be taken (a read-only dir, a filesystem
    without locks), go on unlocked."""
    try:
        lock = open_lock(lock_path)
    except OSError:  # a symlink there too (O_NOFOLLOW): unlocked rather than a file made wherever it points
        yield
        return
    with lock:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def started_over_in_this_slurm_job(run_dir: Path) -> bool:
    """A requeued SLURM job runs its command again, fresh=true included: starting over once more would throw away
    what it trained before the requeue. Only a job that did start over is a requeue to resume."""
    job = os.environ.get("SLURM_JOB_ID")
    mark = run_dir / FRESH_MARK
    return bool(job) and int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0 and mark.is_file() and \
        mark.read_text().strip() == job
