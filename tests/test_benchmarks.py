"""The benchmark scripts' command lines: a mistake is one line before anything is measured."""

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize("script, args, message", [
    ("train_loop.py", ["--steps", "0"], "argument --steps: 0 is below 1"),  # was a ZeroDivisionError after minutes
    ("train_loop.py", ["--chunk", "0"], "argument --chunk: 0 is below 1"),  # was silently the default
    ("profile_step.py", ["--chunk", "3"], "unrecognized arguments: --chunk"),  # it runs one loop, without turns
    ("startup.py", ["--turns", "0"], "argument --turns: 0 is below 1"),
    ("optimizer_step.py", ["optimizer=rmsprop"], "RMSprop has no fused kernel to compare; use optimizer=adamw"),
    ("loss_kernels.py", ["--backward-configs", "3000x4"], "'3000x4' is no BLOCKxWARPS with a power-of-two block"),
    ("data_pipeline.py", ["--tokenizers", "foo"], "tokenizer='foo' is unknown"),  # was a traceback
    ("generate.py", ["--device", "nosuch", "--prefill-only"],
     "argument --device: --device 'nosuch' is no device torch knows"),
    ("data_pipeline.py", ["--device", "nosuch"], "argument --device: --device 'nosuch' is no device torch knows"),
    ("loss_kernels.py", ["--device", "meta"], "argument --device: --device 'meta' is not one lmplay runs on"),
    ("loss_kernels.py", ["--option", "nosuch=1"], "--option nosuch is no inductor option"),  # was 20,000 characters
    ("loss_kernels.py", ["--padded", "50000"], "--padded 50000 is below --vocab 50257"),
])
def test_a_bad_argument_is_one_line_before_any_measurement(script, args, message):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_the_bare_loop_trains_each_stage_with_the_stage_s_own_batch_settings(tmp_path, monkeypatch):
    """The bare loop took the run's batch_size and mini_batch_size for every stage, and crashed where the first
    stage ended: a plan with stage overrides compared different work (a reviewer's read 0.496)."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import train_loop

    plan = ("curriculum.stages=[{name: a, datasets: [shakespeare], steps: 2, overrides: {batch_size: 4, "
            "mini_batch_size: 1, include_prompts: false}}, {name: b, datasets: [shakespeare], steps: 5}]")
    bare = train_loop.BareLoop(train_loop.parser().parse_args(["--exp", "test_runner", plan]), tmp_path)
    drawn = []
    next_batch = bare.curriculum.next_batch
    monkeypatch.setattr(bare.curriculum, "next_batch", lambda *a: drawn.append(a) or next_batch(*a))
    assert all(bare.step() > 0 for _ in range(4))
    assert drawn == [(4, False), (4, False), (4, False), (8, True), (8, True)]  # the 3rd: stage a's end
    assert bare.settings.mini_batch_size == 4 and bare.curriculum.stage_index == 1
