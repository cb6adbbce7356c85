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
