"""Seconds from command to the first optimizer step, for test_runner on the CPU (target <= 4 s).

Runs `python -m lmplay.train exp=test_runner` a few times and times the moment its first optimizer step
returns (a global step hook, registered by a two-line wrapper, writes to a pipe), imports included. It
also reads when the first train record lands in stats.json, within milliseconds of the step (stats.json is
written first; TensorBoard's writer is imported and its file opened just after, untimed here).

A first run on a fresh cache ($LMPLAY_CACHE, else ~/.cache/lmplay) also tokenizes the embedded corpus
and counts the stage's steps; both are kept in that cache, so the median is a warm start, and one cold
start (an empty cache: what a user waits for after installing, or after changing data) is timed first. Most of that is `import torch` and the torch._dynamo import that constructing any torch optimizer
pulls in, so the same moment is timed for a bare script (BARE below: read the text, build test_runner's
model and AdamW, one step), taking turns with lmplay; the difference is what lmplay itself adds (Hydra,
the curriculum, the run dir, stats).

    python benchmarks/startup.py
"""

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_loop import at_least

REPO = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The repo on the path, and bytecode cached as a user's Python does (some CI images turn it off, which
    makes every start compile lmplay's modules again)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", **extra}


# What a researcher's own script does before its first step, on a model of the same shape (test_runner's: a
# nanoGPT-style GPT of plain torch), the same data and the same optimizer. It imports nothing of lmplay's: lmplay's
# model and data modules took ~35 ms that counted against the bare script.
BARE = """
import gzip, os, torch
from torch import nn
from torch.nn import functional as F
class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.ln1, self.ln2 = h, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))
class GPT(nn.Module):
    def __init__(self, vocab=257, context=64, layers=2, d=32, h=2):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.ModuleList(Block(d, h) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.size(1)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))
text = gzip.open(os.environ["BARE_DATA"], "rb").read()
data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
model = GPT()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0, fused=True)
starts = torch.randint(len(data) - 65, (8,))
batch = torch.stack([data[i:i + 65] for i in starts])
F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten()).backward()
optimizer.step()
print("stepped", flush=True)
"""


def bare_first_step_seconds() -> float:
    from lmplay.data.corpus import embedded_path

    env = child_env(BARE_DATA=str(embedded_path("shakespeare")))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", BARE], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    proc.wait()
    if line.strip() != "stepped":
        raise SystemExit(f"the bare script failed:\n{proc.stderr.read()[-2000:]}")
    return elapsed


# lmplay's own entry point, with a hook that says when the first optimizer step has returned. It imports
# torch.optim first, which lmplay would import a second later anyway (after composing the config).
HOOKED = """
import os, runpy, sys
from torch.optim.optimizer import register_optimizer_step_post_hook
def stepped(*args):
    os.write(int(os.environ["STARTUP_FD"]), b"stepped\\n")
    handle.remove()
handle = register_optimizer_step_post_hook(stepped)
sys.argv[0] = "lmplay.train"
runpy.run_module("lmplay.train", run_name="__main__", alter_sys=True)
"""


def first_step_seconds(run_dir: Path, cache: Path | None = None) -> tuple[float, float]:
    """(first optimizer step, first train record in stats.json), in seconds from the command; `cache`: the
    tokenized data's ($LMPLAY_CACHE), else the user's own."""
    read_end, write_end = os.pipe()
    env = child_env(TQDM_DISABLE="1", STARTUP_FD=str(write_end), **({"LMPLAY_CACHE": str(cache)} if cache else {}))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", HOOKED, "exp=test_runner", "device=cpu", "max_steps=100000",
                             f"hydra.run.dir={run_dir}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, pass_fds=(write_end,))
    os.close(write_end)
    stats, step = run_dir / "stats.json", None
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"training exited early:\n{proc.stderr.read()[-2000:]}")
            if step is None and select.select([read_end], [], [], 0.005)[0]:
                step = time.perf_counter() - start
            if step is not None and stats.exists():
                try:
                    if json.loads(stats.read_text())["train"]:
                        return step, time.perf_counter() - start
                except (json.JSONDecodeError, KeyError):
                    pass
            time.sleep(0.005)
    finally:
        os.close(read_end)
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=at_least(1), default=5, help="starts of each, taking turns (default: 5)")
    turns = parser.parse_args().turns
    with tempfile.TemporaryDirectory() as tmp:
        cold, _ = first_step_seconds(Path(tmp) / "run", cache=Path(tmp) / "cache")
    lmplay, record, bare = [], [], []
    for _ in range(turns):
        with tempfile.TemporaryDirectory() as tmp:
            step, first_record = first_step_seconds(Path(tmp) / "run")
        lmplay.append(step)
        record.append(first_record)
        bare.append(bare_first_step_seconds())
    show = lambda times: (f"median {statistics.median(times):.2f} s, best {min(times):.2f} s "
                          f"({', '.join(f'{t:.2f}' for t in times)})")
    print(f"command -> first optimizer step, warm cache: lmplay {show(lmplay)}; target <= 4 s")
    print(f"the same for a bare PyTorch script (a plain-torch model of the same shape, the same data and AdamW): "
          f"{show(bare)}; lmplay adds {statistics.median(a - b for a, b in zip(lmplay, bare)):.2f} s (median of the "
          f"turns' differences; {min(lmplay) - min(bare):.2f} s between the bests, which a busy machine can only "
          f"make longer)")
    print(f"command -> first train record in stats.json (after the step): lmplay {show(record)}")
    print(f"a cold start (an empty tokenized-data cache: after installing, or a change of data): {cold:.2f} s to the "
          f"first step (target <= 4 s)")


if __name__ == "__main__":
    main()
