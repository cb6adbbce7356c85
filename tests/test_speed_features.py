"""What the speed features touch stays correct: compile, MFU accounting."""

import pytest
import torch

from conftest import make_runner, run_cli
from experiments.gpt2ish.model import GPT2ish
from lmplay.runner.report import start_report
from lmplay.stats.mfu import flops_per_token, matmul_params, mfu, peak_flops
from lmplay.stats.speed import SpeedMeter


def test_mfu_formula_for_gpt2ish_by_hand():
    with torch.device("meta"):
        model = GPT2ish(vocab_size=50257, context_len=1024, num_blocks=6, embed_dim=768, num_heads=12)
    d, L, V, T = 768, 6, 50257, 1024
    attention = (3 * d * d + 3 * d) + (d * d + d)                  # qkv and output projection, with biases
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)                     # fc and projection, with biases
    per_block = attention + mlp + 2 * 2 * d                         # + two LayerNorms
    n = L * per_block + 2 * d + V * d                                     # blocks, final LN, untied lm_head
    assert matmul_params(model) == n
    assert flops_per_token(n, L, T, d) == 6 * n + 12 * L * T * d
    assert model.flops_per_token(T) == 6 * n + 12 * L * T * d  # what the runner's MFU counts
    assert mfu(1000.0 * 6e9, 989e12) == pytest.approx(1000 * 6e9 / 989e12)
    assert mfu(1000.0 * 6e9, None) is None


def test_experiments_that_use_parameters_otherwise_count_their_own_flops():
    """Every non-embedding parameter was counted as 6 FLOPs a token: nnmemory's cells and key/value layers run once
    a forward pass, and its reads over the cells (12 x cells x width a token in each block) were not counted; a
    unified embedding's MLP runs once per distinct token."""
    from experiments.nnmemory.model import NNMemoryGPT
    from experiments.unified_embed.model import UnifiedEmbedGPT

    d, L, M, T = 768, 6, 4096, 1024
    with torch.device("meta"):
        base = GPT2ish(vocab_size=50257, context_len=T, num_blocks=L, embed_dim=d, num_heads=12)
        memory = NNMemoryGPT(vocab_size=50257, context_len=T, num_blocks=L, embed_dim=d, num_heads=12, num_cells=M)
        unified = UnifiedEmbedGPT(vocab_size=50257, context_len=T, num_blocks=L, embed_dim=d, num_heads=12,
                                  front_mul=4)
    read = (d * d + d) * 2 + 2 * d  # each block's query and output projections, and its LayerNorm
    assert memory.flops_per_token(T) == base.flops_per_token(T) + 6 * L * read + 12 * L * M * d
    assert unified.flops_per_token(T) == base.flops_per_token(T)  # its table and MLP are out, as the baseline's table


def test_mfu_under_ddp_is_per_device():
    meter = SpeedMeter(lambda width: 1.0, device=torch.device("cpu"), world_size=1)
    meter.peak = 1e12  # a CPU has no entry in the peak table
    assert meter.rates(1000.0, 4e11)["mfu"] == pytest.approx(0.4)
    meter.world_size = 4  # the global batch's FLOPs are shared by 4 devices
    assert meter.rates(1000.0, 4e11) == {"tokens_per_second": 1000.0, "mfu": pytest.approx(0.1)}


def test_mfu_counts_attention_over_each_row_not_the_batch_width_or_the_context(tmp_path):
    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=6"], tmp_path)
    runner.speed.peak = 1e12  # a CPU has no entry in the peak table
    steps, train_step = [], runner.train_step
    runner.train_step = lambda batch, settings: steps.append(batch) or train_step(batch, settings)
    runner.train()
    records = runner.stats.records["train"]
    widths = [batch.inputs.size(1) for batch in steps]
    assert len(records) == len(steps) == 6 and min(widths) < runner.context_len  # rows batches are narrower
    # FLOPs are counted on every input the model computes on: a long row's continuation windows show again
    # context they do not train on (tokens/s counts the loss's tokens alone)
    assert any(batch.num_positions > batch.num_tokens for batch in steps)
    assert any(len(set(batch.row_lengths)) > 1 for batch in steps)  # rows of other lengths, padded to the longest
    for record, batch in zip(records, steps):  # PaLM's per-sequence count: the padding's attention is no model FLOP
        flops = sum(n * (6 * runner.model.matmul_params + 12 * 2 * n * 32) for n in batch.row_lengths)
        expected = record["tokens_per_second"] * flops / batch.num_tokens / 1e12  # test_runner: 2 blocks, width 32
        assert record["mfu"] == pytest.approx(expected, rel=1e-9)


def first_losses(tmp_path, compiled: bool, steps: int = 3) -> tuple[list[float], list[str]]:
    runner = make_runner(["exp=test_runner", "device=cpu", f"compile={str(compiled).lower()}"], tmp_path / str(compiled))
    settings = runner.runner_c.settings
    losses = [runner.train_step(runner.curriculum.next_batch(settings.batch_size, True), settings)[0].item()
              for _ in range(steps)]
    return losses, list(runner.model.state_dict())


def test_compiled_and_eager_give_the_same_losses(tmp_path, capsys):
    (eager, eager_keys), (compiled, compiled_keys) = first_losses(tmp_path, False), first_losses(tmp_path, True)
    # compiled for real: a failed compile falls back to eager, whose losses would match trivially
    assert "compile=true failed" not in capsys.readouterr().err
    assert compiled == pytest.approx(eager, rel=1e-4, abs=1e-5)
    assert compiled_keys == eager_keys  # checkpoints of compiled runs load anywhere


def test_compile_failure_falls_back_to_eager_with_one_warning(tmp_path, monkeypatch, capsys):
    def no_backend(graph, example_inputs):
        raise RuntimeError("no C++ compiler found")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=no_backend))
    fallback, _ = first_losses(tmp_path / "fallback", True)
    eager, _ = first_losses(tmp_path / "eager", False)
    assert fallback == pytest.approx(eager, rel=1e-6)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "compile=true failed" in line]
    assert len(warnings) == 1 and "no C++ compiler found" in warnings[0] and "compile=false" in warnings[0]


def test_a_model_that_reads_its_logits_after_the_triton_loss_is_told_why_compiling_failed(tmp_path, monkeypatch,
                                                                                            capsys):
    """Compiled, the Triton loss writes its gradient over the logits: a loss_terms that reads them after it (a
    z-loss, the loss taken twice) fails to compile. The warning said "on this machine", and nothing of the way out."""
    from lmplay.runner import base

    def in_place_conflict(graph, example_inputs):
        raise RuntimeError("one of the variables needed for gradient computation has been modified by an inplace "
                           "operation: [torch.FloatTensor [64, 300]], which is output 0 of Mm")

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=in_place_conflict))
    monkeypatch.setattr(base, "triton_loss_runs_on", lambda device: True)  # as on a GPU
    first_losses(tmp_path, True, steps=1)
    warning = capsys.readouterr().err
    assert ("compile=true failed for this model: its loss_terms reads the logits after the Triton loss, which, "
            "compiled, writes its gradient over them (fused_loss=false compiles it with PyTorch's loss)") in warning


def test_compile_options_reach_inductor_and_keep_the_losses(tmp_path, monkeypatch):
    real_compile, passed = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: passed.append(kw["options"]) or real_compile(fn, **kw))
    runner = make_runner(["exp=test_runner", "device=cpu", "compile=true", "compile_options={coordinate_descent_tuning: "
                          "true, triton.cudagraphs: false}", "+compile_options.cpp.simdlen=null"], tmp_path / "runner")
    assert passed == [{"coordinate_descent_tuning": True, "triton.cudagraphs": False, "cpp.simdlen": None}] * 2  # the
    # training loss's and validation's
    assert ("torch.compile with coordinate_descent_tuning=True, triton.cudagraphs=False, cpp.simdlen=None (the first "
            "steps") in start_report(runner)
    settings = runner.runner_c.settings
    tuned = [runner.train_step(runner.curriculum.next_batch(settings.batch_size, True), settings)[0].item()
             for _ in range(3)]
    assert tuned == pytest.approx(first_losses(tmp_path / "eager", False)[0], rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("args, message", [
    (["compile=true", "compile_options={no_such_option: 1}"],
     "compile_options.no_such_option is not an inductor option of torch"),
    (["compile=true", "compile_options=max-autotune"],  # torch.compile's mode, typed for the options: a traceback
     "compile_options=max-autotune should be a mapping of inductor options, e.g. compile_options={max_autotune: true}"),
    (["compile=true", "compile_options={max_autotune: maybe}"],  # was torch's RuntimeError traceback
     "compile_options: Unexpected type of attr max_autotune, got str should be bool"),
    (["compile_options={coordinate_descent_tuning: true}"],
     "compile_options={'coordinate_descent_tuning': True} need compile=true; add compile=true or drop them"),
    (["amp=true", "amp_dtype=fp8"], "amp_dtype='fp8' is unknown; use bf16 or fp16"),
    (["amp=true", "amp_dtype=fp16"], "amp_dtype=fp16 needs device=cuda; use amp_dtype=bf16 on this device"),
])
def test_bad_speed_settings_get_one_clear_line_before_anything_is_written(tmp_path, args, message):
    proc = run_cli("lmplay.train", "exp=test_runner", "device=cpu", "max_steps=1", *args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "stats.json").exists() and not (tmp_path / "model.lmp").exists()


def test_padded_vocabulary_never_predicts_a_padding_id(tmp_path):
    runner = make_runner(["exp=test_runner", "device=cpu", "vocab_multiple=64"], tmp_path)
    model, vocab = runner.model, runner.tokenizer.vocab_size
    assert model.lm_head.out_features == 320 > vocab == 257
    with torch.no_grad():
        model.lm_head.weight[vocab:] = 100.0  # make the padding columns win if they were ever considered
    batch = runner.curriculum.next_batch(8, True)
    loss_sum, correct = model.loss_terms(batch.inputs, batch.targets)
    assert torch.isfinite(loss_sum) and loss_sum / batch.num_tokens < 20
    assert int(model.token_logits(model(batch.inputs)).argmax(-1).max()) < vocab
    # the start report's size: the padding rows (63 in the table and the output layer, 32 wide) said apart
    assert model.size_text() == f"{model.parameter_count():,} parameters (4,032 of them vocabulary padding)"
    assert model.parameter_count() - 4032 == make_runner(["exp=test_runner", "device=cpu"], tmp_path / "plain"
                                                         ).model.parameter_count()
    # a model as wide as the padded vocabulary (bytes padded to 384, nanoGPT's shakespeare-char width): its norms
    # and projections are no padding
    wide = GPT2ish(vocab_size=384, context_len=16, num_blocks=1, embed_dim=384, num_heads=4, tokenizer="bytes")
    assert wide.size_text().endswith(f"({2 * 127 * 384:,} of them vocabulary padding)")


def test_masked_padding_gives_the_loss_gradient_and_accuracy_of_the_sliced_real_columns():
    """The GPU leaves a padded vocabulary's columns out by masking them, a CPU by slicing: the same numbers."""
    import torch.nn.functional as F

    from lmplay.data.batch import IGNORE_INDEX
    from lmplay.loss import mask_padding, top1_correct

    vocab, padded = 257, 320
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(512, padded, generator=generator) * 3).requires_grad_()
    with torch.no_grad():
        logits[:, vocab:] += 10.0  # the padding would win every max and most of the softmax if it counted
    targets = torch.randint(0, vocab, (512,), generator=generator)
    targets[::5] = IGNORE_INDEX
    results = []
    for leave_out in (lambda x: x[:, :vocab], lambda x: mask_padding(x, vocab)):
        logits.grad = None
        real = leave_out(logits)
        loss = F.cross_entropy(real, targets, ignore_index=IGNORE_INDEX, reduction="sum")
        loss.backward()
        results.append((float(loss), logits.grad.clone(), int(top1_correct(real.detach(), targets))))
    (sliced_loss, sliced_grad, sliced_hits), (masked_loss, masked_grad, masked_hits) = results
    assert masked_loss == pytest.approx(sliced_loss, rel=1e-6) and masked_hits == sliced_hits > 0
    assert torch.allclose(masked_grad, sliced_grad, atol=1e-6) and not masked_grad[:, vocab:].any()


def test_accuracy_without_argmax_counts_the_same_hits_and_skips_ignored_targets():
    from lmplay.data.batch import IGNORE_INDEX
    from lmplay.loss import top1_correct

    logits = torch.randn(1000, 300, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 300, (1000,), generator=torch.Generator().manual_seed(1))
    targets[::3] = logits[::3].argmax(-1)  # a third are hits
    targets[::7] = IGNORE_INDEX
    expected = int((logits.argmax(-1) == targets).sum())
    assert expected > 250 and int(top1_correct(logits, targets)) == expected


def test_the_loss_counts_the_hits_top1_correct_counts_and_gives_cross_entropy_s_loss_and_gradient():
    """The count comes from the loss's own per-target losses (three or four ops, not seven: ~80 us a step of
    test_runner's on a CPU); a NaN row at an ignored target took one off the count."""
    import torch.nn.functional as F

    from lmplay.data.batch import IGNORE_INDEX
    from lmplay.loss import next_token_loss, top1_correct

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 64, 50, generator=generator) * 3
    targets = torch.randint(0, 50, (4, 64), generator=generator)
    targets[:, ::3] = logits[:, ::3].argmax(-1)
    targets[0, :5] = IGNORE_INDEX
    logits[0, 0] = float("nan")  # at an ignored target: the loss and count leave it out
    logits[1, 1, targets[1, 1]] = logits[1, 1].max()  # a tie at the max counts as a hit
    logits.requires_grad_(True)
    loss, hits = next_token_loss(logits, targets, 50)
    kept = targets != IGNORE_INDEX
    assert int(hits) == int(top1_correct(logits.detach()[kept], targets[kept])) > 60
    expected = F.cross_entropy(logits[kept], targets[kept], reduction="sum")
    assert torch.allclose(loss, expected)
    assert torch.allclose(*(torch.autograd.grad(value, logits)[0][kept] for value in (loss, expected)))


def test_accuracy_of_bf16_logits_counts_a_tie_as_argmax_does(tmp_path):
    """Under amp=true the logits are bf16, which tie often: `target >= max` counted a target tied with an earlier
    token as a hit (~1% more accuracy than the same model in fp32)."""
    from lmplay.data.batch import IGNORE_INDEX
    from lmplay.loss import top1_correct

    logits = torch.tensor([[1.0, 3.0, 3.0], [3.0, 1.0, 3.0], [0.0, 2.0, 1.0]])
    targets = torch.tensor([2, 0, 1])  # tied and second, tied and first, alone
    assert int(top1_correct(logits, targets, ties=True)) == int((logits.argmax(-1) == targets).sum()) == 2
    assert int(top1_correct(logits, targets)) == 3  # fp32 logits: ties are left to chance, for speed
    runner = make_runner(["exp=test_runner", "device=cpu"], tmp_path)
    batch = runner.curriculum.next_batch(4, True)
    with torch.no_grad():
        runner.model.lm_head.weight.zero_()  # every logit ties: argmax says token 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, correct = runner.model.loss_terms(batch.inputs, batch.targets)
    assert int(correct) == int((batch.targets == 0).sum()) < int((batch.targets != IGNORE_INDEX).sum())


def test_the_start_report_names_the_speed_features_on_and_adamw_is_fused_on_a_cpu(tmp_path):
    runner = make_runner(["exp=test_runner", "device=cpu", "compile=true", "amp=true", "vocab_multiple=64"], tmp_path)
    assert "speed: bf16 autocast, torch.compile (the first steps compile" in start_report(runner)
    assert ", fused AdamW, vocabulary padded 257 -> 320" in start_report(runner)
    plain = make_runner(["exp=test_runner", "device=cpu"], tmp_path / "plain")
    assert plain.optimizer_c.optimizer.defaults["fused"] and "speed: fused AdamW\n" in start_report(plain)
    unfused = make_runner(["exp=test_runner", "device=cpu", "optimizer.fused=false"], tmp_path / "unfused")
    assert not unfused.optimizer_c.optimizer.defaults["fused"] and "speed:" not in start_report(unfused)


@pytest.mark.parametrize("name, tflops", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                          ("NVIDIA L40", 181.0), ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0),
                                          ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA GeForce RTX 4090", 165.0),
                                          ("NVIDIA GH200 480GB", 989.0), ("NVIDIA H100 SXM5 80GB", 989.0),
                                          ("NVIDIA H200", 989.0), ("NVIDIA H200 NVL", 835.0),  # was the SXM's peak
                                          ("NVIDIA GeForce GTX 1080", None)])
def test_the_peak_table_matches_whole_device_names(monkeypatch, name, tflops):
    """An L40 was measured against the L4's peak ("L4" is inside "L40"): its MFU read 1.5x too high."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    peak = peak_flops(torch.device("cuda"))
    assert peak == (None if tflops is None else tflops * 1e12)


def test_validation_runs_compiled_and_measures_what_eager_does(tmp_path, capsys):
    """Validation ran eagerly: on a GPU its fp32 copies of the logits took ~5x a compiled training mini-batch's
    memory for them, so a mini-batch that trained ran out of memory at the first validation."""
    from torch._dynamo.utils import counters

    eager = make_runner(["exp=test_runner", "device=cpu"], tmp_path / "eager")
    compiled = make_runner(["exp=test_runner", "device=cpu", "compile=true"], tmp_path / "compiled")
    settings = compiled.runner_c.settings
    graphs = counters["stats"]["unique_graphs"]
    held_out = compiled.validate(settings)
    assert counters["stats"]["unique_graphs"] > graphs and "compile=true failed" not in capsys.readouterr().err
    assert held_out == pytest.approx(eager.validate(settings), rel=1e-5)
    step = [runner.train_step(runner.curriculum.next_batch(settings.batch_size, True), settings)[0].item()
            for runner in (eager, compiled)]  # training after it: its own graph, as before
    assert step[1] == pytest.approx(step[0], rel=1e-4)
    assert compiled.validate(settings)["loss"] == pytest.approx(eager.validate(settings)["loss"], rel=1e-5)


def test_every_mini_batch_keeps_the_compiled_loss_to_one_shape_and_its_losses(tmp_path):
    """A shorter mini-batch recompiled the loss for dynamic shapes, and that graph, the newest, ran every later
    step: packed batching's last batch of an epoch, each step's tail where mini_batch_size does not divide
    batch_size, and a held-out set's last mini-batch (validated before the first step: the training graph was
    then compiled dynamic from the start)."""
    from torch._dynamo.utils import counters

    text = tmp_path / "data.txt"
    text.write_text("".join(f"Line {i} of a text, long enough to pack.\n\n" for i in range(150)))
    plan = ["curriculum=text_file", f"curriculum.path={text}", "curriculum.batching=packed", "batch_size=10",
            "mini_batch_size=4", "runner.validation_batches=1"]
    torch._dynamo.reset()
    runs = {}
    for compiled in (False, True):
        runner = make_runner(["exp=test_runner", "device=cpu", f"compile={str(compiled).lower()}", *plan],
                             tmp_path / str(compiled))
        graphs, rows = counters["stats"]["unique_graphs"], []
        losses = [runner.validate(runner.runner_c.settings)["loss"]]
        while (batch := runner.curriculum.next_batch(10, True)) is not None:
            losses.append(runner.train_step(batch, runner.runner_c.settings)[0].item())
            rows.append(len(batch))
        losses.append(runner.validate(runner.runner_c.settings)["loss"])
        runs[compiled] = losses, rows, counters["stats"]["unique_graphs"] - graphs
    assert runs[True][1][-1] < 10 == runs[True][1][0]  # the stage ended on a shorter batch
    assert runs[True][2] == 2  # one graph to train, one to validate
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-4, abs=1e-5)


def test_a_batch_smaller_than_the_mini_batch_is_not_filled_up_to_it(tmp_path):
    """batch_size=2 under mini_batch_size=32 (a stage's small batches under a pretraining mini-batch) computed 32
    rows a step for 2: 9x slower."""
    runner = make_runner(["exp=test_runner", "device=cpu", "compile=true", "batch_size=2", "mini_batch_size=32"],
                         tmp_path)
    settings = runner.runner_c.settings
    batch = runner.curriculum.next_batch(2, True)
    assert len(runner.one_shape(batch, settings, settings.batch_size)) == 2
    assert len(runner.one_shape(batch.split(1)[0], settings, settings.batch_size)) == 2  # a stage's last: to 2


def test_a_shard_is_contiguous_and_an_empty_one_is_filled_up_too(tmp_path):
    """Under DDP a full shard was a strided view and a filled-up one contiguous: compile=true guards on strides, and
    a stage's last batch recompiled the loss on every rank; an empty shard (fewer samples than ranks) kept 0 rows."""
    runner = make_runner(["exp=test_runner", "device=cpu", "compile=true", "batch_size=8", "mini_batch_size=4"],
                         tmp_path)
    batch = runner.curriculum.next_batch(8, True)
    assert batch.shard(1, 2).inputs.is_contiguous() and batch.shard(1, 2).targets.is_contiguous()
    empty = batch.shard(1, 2).split(4)[0].shard(5, 8)
    assert len(empty) == 0 and len(runner.one_shape(empty, runner.runner_c.settings, 4)) == 4


def test_stats_json_keeps_the_size_without_the_vocabulary_padding(tmp_path):
    """vocab_multiple=64 is the same model as without it (its padding rows never train): the sweep summary and
    lmplay.plot said 'the models differ in size (43,968 to 48,000 parameters)' of a baseline beside itself."""
    import json

    sizes = []
    for name, extra in (("plain", []), ("padded", ["vocab_multiple=64"])):
        make_runner(["exp=test_runner", "device=cpu", *extra], tmp_path / name)
        sizes.append(json.loads((tmp_path / name / "stats.json").read_text())["parameters"])
    assert sizes[0] == sizes[1]
