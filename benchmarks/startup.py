"""Seconds from command to the first optimizer step, for test_runner on the CPU (target <= 4 s).

Runs `python -m lmplay.train exp=test_runner max_steps=1` a few times and reads the moment the first
train record lands in stats.json, so the figure is what a user waits for, imports included.

The first run on a fresh cache ($LMPLAY_CACHE, else ~/.cache/lmplay) also tokenizes the embedded corpus
and counts the stage's steps (a few seconds more); both are kept in that cache, so the median is a warm
start. Most of that is `import torch` (printed for scale) and the torch._dynamo import that constructing
the optimizer pulls in.

    python benchmarks/startup.py
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def first_step_seconds(run_dir: Path) -> float:
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "lmplay.train", "exp=test_runner", "device=cpu", "max_steps=100000",
                             f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    stats = run_dir / "stats.json"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"training exited early:\n{proc.stderr.read()[-2000:]}")
            if stats.exists():
                try:
                    if json.loads(stats.read_text())["train"]:
                        return time.perf_counter() - start
                except (json.JSONDecodeError, KeyError):
                    pass
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    times = []
    for _ in range(3):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(first_step_seconds(Path(tmp) / "run"))
    import_start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_import = time.perf_counter() - import_start
    print(f"command -> first optimizer step: median {statistics.median(times):.2f} s over {len(times)} runs "
          f"({', '.join(f'{t:.2f}' for t in times)}); target <= 4 s")
    print(f"for scale: `python -c 'import torch'` alone takes {torch_import:.2f} s here")


if __name__ == "__main__":
    main()
