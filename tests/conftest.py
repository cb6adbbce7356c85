"""Shared helpers: compose the config like the CLI does, and run the CLIs in subprocesses."""

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from preloaded_cli import PreloadedCli, ServerGone

from lmplay.overrides import composed

REPO = Path(__file__).resolve().parents[1]

# A suite started in the background (`bash .ci/run &`, nohup) inherits SIGINT and SIGHUP ignored, and so does every
# command it starts, which then ignores them as it should (lmplay keeps a signal it was started ignoring): the tests
# that send a Ctrl-C or a closed terminal's SIGHUP to a run need them as a terminal leaves them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def compose_config(overrides: list[str] = (), config_name: str = "config"):
    return composed(config_name, overrides, with_hydra=True)


def python_path(*first: Path) -> str:
    """The checkout's dirs on PYTHONPATH, after `first` and before the caller's own entries (where an environment
    keeps its packages on PYTHONPATH, as the GPU machine's wheels did, a subprocess needs them too)."""
    return os.pathsep.join([*map(str, [*first, REPO / "src", REPO]), *filter(None, [os.environ.get("PYTHONPATH")])])


def run_cli(module: str, *args: str, cwd: Path | None = None, timeout: float = 300, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m module args...` as a user would; never inherits a TTY. Forked from a Python that has
    imported torch (tests/preloaded_cli.py) where the environment is the one it started with."""
    full_env = {**os.environ, "PYTHONPATH": python_path(), "TQDM_DISABLE": "1", **(env or {})}
    server = None if env else preloaded_cli(module, full_env)  # a run's own variables may be read as it imports
    proc = None
    if server is not None and server.busy.acquire(blocking=False):
        try:
            proc = server.run(module, list(args), cwd or REPO, full_env, timeout)
        except ServerGone:
            _preloaded[0] = None
        finally:
            server.busy.release()
    if proc is None:
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, capture_output=True, text=True,
                              timeout=timeout, env=full_env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


_preloaded: list = []  # this worker's server, started by its first run_cli


def preloaded_cli(module: str, env: dict[str, str]) -> "PreloadedCli | None":
    """The worker's PreloadedCli where it runs `python -m module` with environment `env` as a fresh interpreter
    would (the first call starts it), else None. LMPLAY_TESTS_SUBPROCESS=1 runs every command as a real
    subprocess, as the suite did before."""
    if os.environ.get("LMPLAY_TESTS_SUBPROCESS") == "1" or sys.platform != "linux":
        return None
    if not _preloaded:
        try:
            _preloaded.append(PreloadedCli(env))
        except ServerGone:
            _preloaded.append(None)
    server = _preloaded[0]
    return server if server is not None and server.serves(module, env) else None


def torchrun(nproc: int, *args: str, path: tuple[Path, ...] = (), env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m lmplay.train args...` on `nproc` local ranks, as `torchrun --standalone` starts them;
    `path`: more dirs for PYTHONPATH, first (tests/probes)."""
    env = {**os.environ, "PYTHONPATH": python_path(*path), "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "lmplay.train", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


LAUNCH_ENV = re.compile(r"(SLURM|SUBMITIT|TORCHELASTIC)_.*|WORLD_SIZE|RANK|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_(ADDR|PORT)"
                        r"|HYDRA_FULL_ERROR|HF_(HUB|DATASETS)_OFFLINE")


def pytest_configure(config):
    """The tests and the CLI runs they start see neither the developer's launcher or Hydra settings (with
    HYDRA_FULL_ERROR=1 a bad override is Hydra's traceback, not lmplay's one line) nor their HF cache: set before
    any test module imports datasets, which reads HF_DATASETS_CACHE once."""
    for name in [n for n in os.environ if LAUNCH_ENV.fullmatch(n)]:
        del os.environ[name]
    config._hf_cache = tempfile.TemporaryDirectory(prefix="lmplay-tests-hf-")
    os.environ["HF_DATASETS_CACHE"] = config._hf_cache.name


def pytest_unconfigure(config):
    for server in filter(None, _preloaded):
        server.close()
    config._hf_cache.cleanup()


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """One tokenized-data cache for the whole session, away from the user's ~/.cache/lmplay."""
    os.environ["LMPLAY_CACHE"] = str(tmp_path_factory.mktemp("lmplay_cache"))


@pytest.fixture(scope="session", autouse=True)
def one_thread_per_cli_run():
    """The CLI runs the tests start get one thread each: pytest-xdist already runs one test per core."""
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run many small ops: one thread is much faster than two fighting a busy CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_hydra_config_left():
    """make_runner sets Hydra's global config as a run does: cleared after each test, so that no later test on the
    worker reads the run's launch dir (files.from_launch_dir) or mode from a test before it."""
    yield
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None


@pytest.fixture
def tiny_run_args(tmp_path):
    """Overrides for a fast test_runner run in its own directory."""
    return ["exp=test_runner", f"hydra.run.dir={tmp_path / 'run'}", "device=cpu"]


def make_runner(overrides: list[str], run_dir: Path, ckpt: dict | None = None, overridden: set[str] = frozenset()):
    """A set-up LMRunnerBase built in-process exactly as `python -m lmplay.train` builds it."""
    from lmplay.runner.build import runner_from_overrides

    runner = runner_from_overrides(overrides, run_dir, set(overridden))
    runner.setup(ckpt)
    return runner
