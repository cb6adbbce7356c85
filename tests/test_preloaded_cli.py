"""The suite's forked CLI runs (tests/preloaded_cli.py) are what a fresh `python -m` gives: the same exit status,
output and messages, output a child process writes after the command exited included."""

import os
import subprocess
import sys

import pytest
from conftest import python_path
from preloaded_cli import PreloadedCli, ServerGone

COMMANDS = {
    "says_and_fails": "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)\n",
    "raises": "def f():\n    raise ValueError('boom')\n\nf()\n",
    "interrupted": "raise KeyboardInterrupt\n",
    "late_child": ("import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
                   "'import time; time.sleep(1); print(\"late\")'])\nprint('first')\n"),
    "argv_and_path": "import os, sys\nprint(sys.argv[1:], sys.path[0] == os.getcwd(), __name__)\n",
}


@pytest.mark.skipif(sys.platform != "linux", reason="the server forks: run_cli starts real subprocesses elsewhere")
def test_a_forked_command_is_what_a_fresh_python_m_gives(tmp_path):
    for name, code in COMMANDS.items():
        (tmp_path / f"{name}.py").write_text(code)
    env = {**os.environ, "PYTHONPATH": python_path(), "TQDM_DISABLE": "1"}
    server = PreloadedCli(env)
    try:
        said = {}
        for module in [*COMMANDS, "no_such_module"]:
            forked = server.run(module, ["a", "b=1"], tmp_path, env, timeout=60)
            fresh = subprocess.run([sys.executable, "-m", module, "a", "b=1"], cwd=tmp_path, capture_output=True,
                                   text=True, env=env, stdin=subprocess.DEVNULL, timeout=60, check=False)
            said[module] = (forked.returncode, forked.stdout, forked.stderr)
            assert said[module] == (fresh.returncode, fresh.stdout, fresh.stderr), module
        assert said["says_and_fails"] == (3, "out\n", "err\n") and said["interrupted"][0] == -2
        assert "ValueError: boom" in said["raises"][2] and "preloaded_cli" not in said["raises"][2]
        assert said["late_child"][1] == "first\nlate\n"  # written after the command exited
        assert said["argv_and_path"][1] == "['a', 'b=1'] True __main__\n"
        with pytest.raises(subprocess.TimeoutExpired):
            server.run("late_child", [], tmp_path, env, timeout=0.2)
        server.server.kill()
        server.server.wait()
        with pytest.raises(ServerGone):  # run_cli then starts real subprocesses
            server.run("raises", [], tmp_path, env, 60)
    finally:
        server.close()
