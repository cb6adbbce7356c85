"""The tests' CLI runs, each a fork of a Python that has already imported torch and Hydra.

A `python -m lmplay.train` of a few steps spends ~2 s of its ~3 s importing them, and the suite starts ~300
such commands: forked, the suite took 712 s on CI's 2 cores where it had taken 800-900 s. A fork of a process that imported them is
the same command without that cost. Each run is still a process of its own: its module state, signal handlers,
exit status, atexit and interpreter shutdown are a fresh command's; `runpy` runs the module as `python -m` does,
with the working directory first on sys.path, stdin from /dev/null and stdout and stderr into files. Only what a
module read from the environment as it was imported is the server's, so conftest.run_cli forks only runs whose
environment is the one the server started with (but for PYTEST_CURRENT_TEST), and starts a real subprocess for
any other.

Run as a script, this is the server: one JSON request a line on stdin, one JSON reply a line on stdout.
"""

import json
import os
import random
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path

# torch.optim imports torch._dynamo (0.9 s); not datasets: its pyarrow starts threads as it is imported
PRELOADED = ("torch", "torch._dynamo", "numpy", "hydra", "omegaconf")


def without_per_test(env: dict[str, str]) -> dict[str, str]:
    """`env` less what pytest changes from test to test, which nothing reads as it is imported."""
    return {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}


class PreloadedCli:
    """One server process (per test worker), started with `env`; `run` forks a command from it."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.busy = threading.Lock()
        self.server = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=env, cwd=Path(__file__).parent)
        if json.loads(self.server.stdout.readline() or "{}").get("ready") is not True:
            self.close()
            raise RuntimeError("the preloaded CLI server did not start")

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a command with environment `env` is the same command forked from here."""
        return without_per_test(env) == without_per_test(self.env)

    def run(self, module: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float, out_dir: Path
            ) -> subprocess.CompletedProcess:
        """`python -m module args` as subprocess.run(capture_output=True, text=True) returns it."""
        out, err = out_dir / "stdout", out_dir / "stderr"
        request = {"module": module, "args": list(args), "cwd": str(cwd), "env": env, "timeout": timeout,
                   "stdout": str(out), "stderr": str(err)}
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        reply = json.loads(self.server.stdout.readline() or "null")
        if reply is None:
            raise RuntimeError(f"the preloaded CLI server died (exit {self.server.wait()})")
        stdout, stderr = out.read_text(), err.read_text()
        command = [sys.executable, "-m", module, *args]
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, reply["returncode"], stdout, stderr)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait()


def serve() -> None:
    for name in PRELOADED:
        __import__(name)
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    reply({"ready": threads == 1})  # a fork copies only its caller's thread: with others, a lock they hold stays held
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_command(request)  # exits as the command does, through the interpreter's own shutdown
        reply(wait_for(pid, request["timeout"]))


def reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def run_command(request: dict) -> None:
    """In the forked child: become `python -m module args` in `cwd`."""
    os.chdir(request["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m` puts it
    for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT),
                            (2, request["stderr"], os.O_WRONLY | os.O_CREAT)):
        os.dup2(os.open(path, flags, 0o644), fd)
    os.environ.clear()  # the server's, but for the variables pytest sets per test
    os.environ.update(request["env"])
    random.seed()  # a fresh process's seeds: forks would otherwise share the server's
    sys.modules["numpy"].random.seed()
    sys.argv = [request["module"], *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    sys.exit(0)


def wait_for(pid: int, timeout: float) -> dict:
    """The child's exit status as subprocess gives it (-N for a signal N), or timed_out after killing it."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": False}
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return {"returncode": -9, "timed_out": True}
        time.sleep(0.005)


if __name__ == "__main__":
    serve()
