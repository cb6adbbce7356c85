"""The tests' CLI runs, each a fork of a Python that has already imported torch and Hydra.

A `python -m lmplay.train` of a few steps spends ~2 s of its ~3 s importing them, and the suite starts ~300
such commands: forked, the suite took 657-730 s on CI's 2 cores where it had taken 800-900 s. A fork of a process
that imported them is the same command without that cost. Each run is still a process of its own: its module
state, signal handlers, exit status, atexit and interpreter shutdown are a fresh command's; `runpy` runs the
module as `python -m` does, with the working directory first on sys.path and stdin from /dev/null, and its
output is read from pipes until every process holding them (a joblib worker's late traceback) has closed them,
as subprocess.run reads it. Only what a module read from the environment as it was imported is the server's, so
conftest.run_cli forks only runs whose environment is the one the server started with (but for
PYTEST_CURRENT_TEST and what torch's import sets), and starts a real subprocess for any other, and for commands
that never import torch (plot, new_exp, sweep). Left different: a fork keeps the server's hash seed, so runs
compared with each other iterate sets alike.

Started with `python -c "import preloaded_cli; preloaded_cli.serve()"`: the command's module runs in that
`__main__` as `python -m` runs it (runpy._run_module_as_main), one JSON request a line on stdin, one JSON reply a
line on stdout.
"""

import contextlib
import json
import locale
import os
import random
import runpy
import selectors
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

# torch.optim imports torch._dynamo (0.9 s); not datasets: its pyarrow starts threads as it is imported
PRELOADED = ("torch", "torch._dynamo", "numpy", "hydra", "omegaconf")
FORKED = {"lmplay.train", "lmplay.generate", "lmplay.inspect"}  # the commands that import torch themselves
PER_TEST = {"PYTEST_CURRENT_TEST"}


class ServerGone(RuntimeError):
    """The server died (the OOM killer, a stray kill): the worker's later commands start real subprocesses."""


class PreloadedCli:
    """One server process (per test worker), started with `env`; `run` forks a command from it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.busy = threading.Lock()
        self.server = subprocess.Popen([sys.executable, "-c", "import preloaded_cli; preloaded_cli.serve()"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                       cwd=Path(__file__).parent)
        ready = json.loads(self.server.stdout.readline() or "{}")
        if ready.get("ready") is not True:
            self.close()
            raise ServerGone("the preloaded CLI server did not start")
        self.set_by_imports = set(ready["set_by_imports"])  # TORCHINDUCTOR_CACHE_DIR: a worker that imports
        # torch._dynamo itself has it too

    def serves(self, module: str, env: dict[str, str]) -> bool:
        """Whether `python -m module` with environment `env` is the same command forked from here."""
        ignored = PER_TEST | self.set_by_imports
        return module in FORKED and ({k: v for k, v in env.items() if k not in ignored}
                                     == {k: v for k, v in self.env.items() if k not in ignored})

    def run(self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
            ) -> subprocess.CompletedProcess:
        """`python -m module args` as subprocess.run(capture_output=True, text=True) returns it."""
        request = {"module": module, "args": list(args), "cwd": str(cwd), "env": env, "timeout": timeout}
        try:
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
            reply = json.loads(self.server.stdout.readline() or "null")
        except OSError:
            reply = None
        if reply is None:
            raise ServerGone(f"the preloaded CLI server died (exit {self.server.poll()})")
        stdout, stderr = (reply[name].encode("latin-1") for name in ("stdout", "stderr"))
        command = [sys.executable, "-m", module, *args]
        if reply["timed_out"]:  # bytes, as subprocess.run's TimeoutExpired carries them
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, reply["returncode"], as_text(stdout), as_text(stderr))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a server that died has no pipe to close
            self.server.stdin.close()
        self.server.wait()


def as_text(data: bytes) -> str:
    """What text=True makes of a pipe's bytes: the locale's encoding, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def serve() -> None:
    before = dict(os.environ)
    for name in PRELOADED:
        __import__(name)
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    set_by_imports = [k for k, v in os.environ.items() if before.get(k) != v]
    # a fork copies only its caller's thread: with others, a lock they hold stays held
    reply({"ready": threads == 1, "set_by_imports": set_by_imports})
    for line in sys.stdin:
        request = json.loads(line)
        out, err = os.pipe(), os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(out[0])
            os.close(err[0])
            run_command(request, out[1], err[1], {k: os.environ[k] for k in set_by_imports})  # exits as the command
        os.close(out[1])  # does, through the interpreter's own shutdown
        os.close(err[1])
        reply(collect(pid, out[0], err[0], request["timeout"]))


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_command(request: dict, stdout: int, stderr: int, imported_env: dict[str, str]) -> None:
    """In the forked child: become `python -m module args` in `cwd`."""
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m` puts it
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.close(stdout)
    os.close(stderr)
    os.environ.clear()  # the run's, with what the server's imports set, as the run's own imports would
    os.environ.update({**imported_env, **request["env"]})
    random.seed()  # a fresh process's seeds: forks would otherwise share the server's
    sys.modules["numpy"].random.seed()
    sys.excepthook = without_server_frames
    sys.argv = [request["module"], *request["args"]]
    runpy._run_module_as_main(request["module"], alter_argv=True)  # what `python -m` calls
    sys.exit(0)


def without_server_frames(kind: type, error: BaseException, tb) -> None:
    """An uncaught error's traceback as `python -m` prints it: from runpy's frames on, not the server's."""
    while tb is not None and tb.tb_frame.f_code.co_filename in (serve.__code__.co_filename, "<string>"):
        tb = tb.tb_next
    traceback.print_exception(kind, error, tb)


def collect(pid: int, stdout: int, stderr: int, timeout: float) -> dict:
    """The command's output, read until every process holding its pipes closed them, and its exit status as
    subprocess gives it (-N for a signal N); or timed_out, having killed it."""
    output = {stdout: bytearray(), stderr: bytearray()}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for fd in output:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(max(deadline - time.monotonic(), 0)):
                data = os.read(key.fd, 65536)
                output[key.fd] += data
                if not data:
                    selector.unregister(key.fd)
                    os.close(key.fd)
        timed_out = bool(selector.get_map())
        for key in list(selector.get_map().values()):
            os.close(key.fd)
    if timed_out:
        os.kill(pid, 9)
    _, status = os.waitpid(pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
            "stdout": output[stdout].decode("latin-1"), "stderr": output[stderr].decode("latin-1")}
