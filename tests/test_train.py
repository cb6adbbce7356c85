"""Training end to end: losses fall, outputs are valid, accumulation equals one big batch, bad input is clear."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import make_runner, run_cli
from lmplay.runner import checkpoint


def test_tiny_run_learns_and_writes_outputs(tmp_path, tiny_run_args):
    proc = run_cli("lmplay.train", *tiny_run_args, "max_steps=40", "runner.validation_interval=64", check=True)
    run = tmp_path / "run"
    assert "parameters" in proc.stdout
    stats = json.loads((run / "stats.json").read_text())
    assert len(stats["train"]) == 40
    for record in stats["train"] + stats["validation"]:
        assert {"stage", "step", "samples", "tokens", "loss", "accuracy", "lr"} <= set(record)
    val = [r["loss"] for r in stats["validation"]]
    assert len(val) >= 4 and val[-1] < val[0] - 0.3, val
    ckpt = checkpoint.load(run / "model.lmp")
    assert ckpt["exp"] == "test_runner" and ckpt["components"]["runner"]["state"]["progress"]["step"] == 40
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    logged = [(e.step, e.value) for e in tb.Scalars("train/loss")]
    assert logged == [(r["tokens"], pytest.approx(r["loss"], rel=1e-6)) for r in stats["train"]]
    assert {"train/accuracy", "train/lr", "train/tokens_per_second", "validation/loss"} <= set(tb.Tags()["scalars"])
    assert (run / ".hydra" / "config.yaml").exists()
    inspect = run_cli("lmplay.inspect", str(run / "model.lmp"), check=True)
    assert "test_runner" in inspect.stdout and "step         40" in inspect.stdout


def weights_after_one_sgd_step(tmp_path, mini_batch_size: int) -> dict[str, torch.Tensor]:
    runner = make_runner(["exp=test_runner", "device=cpu", "optimizer=sgd", "optimizer.momentum=0.0", "lr=1.0",
                          "batch_size=8", f"mini_batch_size={mini_batch_size}"], tmp_path / str(mini_batch_size))
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    batch = runner.curriculum.next_batch(8, True)
    runner.train_step(batch, runner.runner_c.settings)
    return {k: before[k] - v for k, v in runner.model.state_dict().items()}  # = the gradient, as lr=1


def test_accumulation_equals_one_big_batch(tmp_path):
    one_batch = weights_after_one_sgd_step(tmp_path, 8)
    accumulated = weights_after_one_sgd_step(tmp_path, 2)
    assert any(g.abs().max() > 0 for g in one_batch.values())
    for name, grad in one_batch.items():
        torch.testing.assert_close(accumulated[name], grad, atol=1e-6, rtol=0, msg=name)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_misspelled_key(tmp_path, tiny_run_args):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, "lrr=0.1"), "lrr", "did you mean lr")


def test_unknown_experiment(tmp_path, tiny_run_args):
    assert_one_line_error(run_cli("lmplay.train", *tiny_run_args, "exp=nope"), "exp=nope", "gpt2ish")


def test_batch_not_divisible_and_run_dir_untouched(tmp_path, tiny_run_args):
    run_cli("lmplay.train", *tiny_run_args, "max_steps=2", check=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    proc = run_cli("lmplay.train", *tiny_run_args, "batch_size=10", "mini_batch_size=4", "fresh=true")
    assert_one_line_error(proc, "batch_size=10", "mini_batch_size=4")
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before


def test_help_lists_experiments_and_seed_flags_work(tmp_path):
    help_text = run_cli("lmplay.train", "--help", check=True).stdout
    for exp in ("gpt2ish", "gpt2ish_med", "gpt2ish_large", "test_runner"):
        assert exp in help_text
    proc = run_cli("lmplay.train", "--exp", "test_runner", "--device", "cpu", "--batch-size", "4",
                   "--mini-batch-size", "2", "max_steps=2", f"hydra.run.dir={tmp_path / 'run'}", check=True)
    assert "runner.batch_size=4" in proc.stdout and "runner.mini_batch_size=2" in proc.stdout
