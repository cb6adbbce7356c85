"""What only a CUDA GPU exercises: bf16 and fp16 autocast, the GradScaler, fused AdamW, pinned non-blocking
copies, reading each step's loss after the next is queued, compile on a GPU, and (with two GPUs) DDP over NCCL.

Skipped where no GPU is visible (CI has none); on a GPU machine: `pytest tests/test_gpu.py`.
"""

import json
import math
import statistics

import pytest
import torch

from conftest import make_runner, run_cli, torchrun
from lmplay.runner import checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

TINY = ["exp=test_runner", "device=cuda", "runner.validation_interval=80", "runner.save_interval=96"]


def trained(run_dir, *overrides: str, ckpt: dict | None = None):
    runner = make_runner([*TINY, *overrides], run_dir, ckpt)
    runner.train()
    return runner


def losses(runner) -> list[float]:
    return [r["loss"] for r in runner.stats.records["train"]]


@pytest.mark.parametrize("amp_dtype", ["bf16", "fp16"])
def test_amp_run_learns_with_fused_adamw_and_late_reads(tmp_path, amp_dtype):
    runner = trained(tmp_path, "max_steps=40", "amp=true", f"amp_dtype={amp_dtype}")
    assert runner.defer_reads and runner.optimizer_c.optimizer.defaults["fused"] is True
    assert runner.scaler.is_enabled() == (amp_dtype == "fp16")
    train = losses(runner)
    assert len(train) == 40 and all(math.isfinite(x) for x in train)
    assert statistics.mean(train[-5:]) < statistics.mean(train[:5]) - 0.5, train
    assert [r["step"] for r in runner.stats.records["train"]] == list(range(1, 41))
    weights = checkpoint.load(tmp_path / "model.lmp")["components"]["model"]["state"]["weights"]
    assert all(t.device.type == "cpu" and torch.isfinite(t).all() for t in weights.values())


def test_compiled_and_eager_give_the_same_losses_in_bf16(tmp_path, capsys):
    eager = losses(trained(tmp_path / "eager", "max_steps=8", "amp=true"))
    compiled = losses(trained(tmp_path / "compiled", "max_steps=8", "amp=true", "compile=true"))
    assert "compile=true failed" not in capsys.readouterr().err  # the eager fallback would match trivially
    assert compiled == pytest.approx(eager, rel=2e-2)


def test_resume_on_the_gpu_continues_the_uninterrupted_run(tmp_path):
    whole = losses(trained(tmp_path / "whole", "max_steps=24", "amp=true"))
    trained(tmp_path / "broken", "max_steps=12", "amp=true")
    resumed = trained(tmp_path / "broken", "max_steps=24", "amp=true",
                      ckpt=checkpoint.load(tmp_path / "broken" / "model.lmp"))
    # GPU kernels may add in another order from run to run (atomics), so equal up to rounding, not bitwise
    assert losses(resumed) == pytest.approx(whole, rel=1e-3)


def test_a_gpu_checkpoint_samples_on_a_cpu(tmp_path):
    model = trained(tmp_path, "max_steps=4", "amp=true").model.cpu()
    proc = run_cli("lmplay.generate", f"checkpoint={tmp_path / 'model.lmp'}", "device=cpu", "prompt=ROMEO:",
                   "do_sample=false", "max_new_tokens=20", check=True)
    assert proc.stdout == "ROMEO:" + model.generate_prompts(["ROMEO:"], max_new_tokens=20)[0] + "\n"


def test_the_loop_waits_for_the_gpu_only_when_it_reads_a_step(tmp_path, monkeypatch):
    """No device sync in the hot loop: a step's loss reaches the host through a copy and an event, where
    `.item()` would also wait for the next step's kernels (the GPU then idles while the host prepares)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):  # the mode does catch a read like the one the loop used to do
            torch.ones(1, device="cuda").sum().item()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    runner = make_runner([*TINY, "max_steps=12", "amp=true", "runner.validation_interval=1000000",
                          "runner.save_interval=1000000"], tmp_path)
    train_step, run_steps, calls = runner.train_step, runner._run_steps, []

    def checked_step(*args):
        calls.append(args)
        if len(calls) == 3:  # past the first steps' one-time set-up (optimizer state, cuBLAS handles)
            torch.cuda.set_sync_debug_mode("error")
        return train_step(*args)

    def checked_run(*args):
        try:
            return run_steps(*args)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(runner, "train_step", checked_step)
    monkeypatch.setattr(runner, "_run_steps", checked_run)
    runner.train()
    assert len(calls) == 12 and len(losses(runner)) == 12 and all(math.isfinite(x) for x in losses(runner))


def test_on_the_gpu_the_masked_padding_gives_the_loss_of_the_real_columns(tmp_path):
    """A GPU masks a padded vocabulary's columns (a CPU slices them): the loss and accuracy of the real ones."""
    import torch.nn.functional as F

    from lmplay.data.batch import IGNORE_INDEX

    runner = make_runner([*TINY, "vocab_multiple=64"], tmp_path)
    model, vocab = runner.model, runner.tokenizer.vocab_size
    assert model.lm_head.out_features > vocab
    with torch.no_grad():
        model.lm_head.weight[vocab:] = 1.0  # padding columns that would count if they were not masked
    batch = runner.curriculum.next_batch(8, True)
    inputs, targets = batch.inputs.cuda(), batch.targets.cuda().reshape(-1)
    with torch.no_grad():
        loss_sum, correct = model.loss_terms(inputs, targets.view_as(inputs))
        real = model(inputs)[..., :vocab].reshape(-1, vocab).float()
    expected = F.cross_entropy(real, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    assert float(loss_sum) == pytest.approx(float(expected), rel=1e-4)
    assert int(correct) == int((real.argmax(-1) == targets).sum())


@pytest.mark.parametrize("amp, compiled", [("true", False), ("false", False), ("true", True)])
def test_the_triton_loss_gives_pytorchs_loss_accuracy_and_gradients(tmp_path, amp, compiled):
    """On a GPU loss_terms runs lmplay's Triton kernels (fused_loss=true; compiled, the gradient is written over the
    logits); fused_loss=false, PyTorch's loss. The output layer is scaled up: a wrong gradient shows where the model
    is sure (trained), hardly at initialisation, where the softmax is near uniform (the first steps' bug)."""
    from lmplay.loss import triton_loss_runs_on

    runner = make_runner([*TINY, "vocab_multiple=64", f"amp={amp}"], tmp_path)
    model = runner.model
    assert triton_loss_runs_on(runner.device)  # else both sides below run PyTorch's loss
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    batch = runner.curriculum.next_batch(8, True)
    inputs, targets = batch.inputs.cuda(), batch.targets.cuda()
    targets[0, :5] = -100  # ignored targets count nothing
    results = []
    for fused in (True, False):
        model.fused_loss = fused
        model.zero_grad()
        loss_terms = torch.compile(model.loss_terms) if compiled and fused else model.loss_terms
        with runner.autocast():
            loss_sum, correct = loss_terms(inputs, targets)
        loss_sum.backward()
        results.append((loss_sum.item(), int(correct), [p.grad.clone() for p in model.parameters()]))
    (fused_loss, fused_correct, fused_grads), (loss, correct, grads) = results
    assert fused_loss == pytest.approx(loss, rel=1e-4) and fused_correct == correct
    for got, want in zip(fused_grads, grads):  # TF32 matmuls carry the loss's last-bit differences into each weight
        assert float((got - want).norm() / want.norm()) < (1e-2 if amp == "true" else 1e-3)


def test_a_compiled_run_learns_the_same_with_either_loss(tmp_path, capsys):
    from lmplay.loss import triton_loss_runs_on

    assert triton_loss_runs_on(torch.device("cuda"))
    triton = losses(trained(tmp_path / "triton", "max_steps=8", "amp=true", "compile=true", "vocab_multiple=64"))
    pytorch = losses(trained(tmp_path / "pytorch", "max_steps=8", "amp=true", "compile=true", "vocab_multiple=64",
                             "fused_loss=false"))
    assert "compile=true failed" not in capsys.readouterr().err
    assert triton == pytest.approx(pytorch, rel=1e-2)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_over_nccl_equal_one_gpu(tmp_path):
    """DDP on CUDA all-reduces through NCCL (CI's distributed tests run gloo on CPUs)."""
    base = ["exp=test_runner", "device=cuda", "batch_size=8", "mini_batch_size=2", "runner.validation_interval=16",
            "max_steps=8"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run_cli("lmplay.train", *base, f"hydra.run.dir={single}", check=True)
    proc = torchrun(2, *base, f"hydra.run.dir={ddp}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (json.loads((run / "stats.json").read_text()) for run in (single, ddp))
    assert len(two["train"]) == 8
    assert [r["loss"] for r in two["train"]] == pytest.approx([r["loss"] for r in one["train"]], rel=1e-4)
    assert [r["loss"] for r in two["validation"]] == pytest.approx([r["loss"] for r in one["validation"]], rel=1e-4)
