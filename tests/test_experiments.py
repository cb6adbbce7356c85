"""The ports of the original's ideas: each special layer does what its README says, and each experiment trains."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import compose_config, run_cli
from torch import nn

from experiments.attn_temp.temperature_attention import LearnedTemperatureAttention
from experiments.lradd.lradd import LRAdd
from experiments.nnmemory.nn_memory import NNMemory, NNMemoryRead
from experiments.unified_embed.unified_embedding import UnifiedEmbedding
from experiments.value_norm.value_norm_attention import ValueNormAttention
from lmplay.config import CONF_DIR
from lmplay.errors import ConfigError
from lmplay.generation.loading import load_model
from lmplay.modules import KVCache, MultiHeadAttention
from lmplay.runner import registered
from lmplay.runner.components import config_class
from lmplay.runner.optimizers import no_decay_names

PORTS = ["value_norm", "attn_temp", "lradd", "unified_embed", "nnmemory"]
VERSIONS = [f"{p}{suffix}" for p in PORTS for suffix in ("", "_mini", "_test")]


def tiny(exp: str) -> nn.Module:
    torch.manual_seed(0)
    return registered()[exp].factory().build_model(vocab_size=257, tokenizer="bytes", context_len=32)


def reference_attention(q, k, v, scale, causal=True):
    scores = q @ k.transpose(-2, -1) * scale
    if causal:
        scores = scores.masked_fill(~torch.ones(q.shape[2], k.shape[2], dtype=torch.bool).tril(), float("-inf"))
    return F.softmax(scores, -1) @ v


# -- every port -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("port", PORTS)
def test_port_keeps_the_baselines_settings(port):
    """A fair comparison: only the model class (and its own arguments) differ from the baseline's version."""
    for suffix, baseline in (("", "gpt2ish"), ("_mini", "gpt2ish_mini"), ("_test", "test_runner")):
        cfg, base = compose_config([f"exp={port}{suffix}"]), compose_config([f"exp={baseline}"])
        for key in ("optimizer", "scheduler", "runner", "curriculum", "lr", "batch_size", "context_len", "tokenizer"):
            assert cfg[key] == base[key], (port, suffix, key)
        for key in ("num_blocks", "embed_dim", "num_heads", "dropout"):
            assert cfg.model[key] == base.model[key], (port, suffix, key)


@pytest.mark.parametrize("port", PORTS)
def test_every_weight_an_idea_shares_with_the_baseline_starts_as_the_baseline_s(port):
    """A run of one seed differs from the baseline's by the idea alone: nnmemory's memory, built before the blocks,
    and unified_embed's wide table moved every later weight along the random stream, so their same-seed runs
    also differed by the baseline's own seed-to-seed noise."""
    base, idea = (tiny(name).state_dict() for name in ("test_runner", f"{port}_test"))
    shared = [k for k in base if k in idea and base[k].shape == idea[k].shape]
    assert len(shared) >= len(base) - 1  # unified_embed replaces the token table
    assert [k for k in shared if not torch.equal(base[k], idea[k])] == []
    assert not torch.equal(base["blocks.0.attn.qkv.weight"], tiny_seed("test_runner", 1)["blocks.0.attn.qkv.weight"])


def tiny_seed(exp: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return registered()[exp].factory().build_model(vocab_size=257, tokenizer="bytes", context_len=32).state_dict()


@pytest.mark.parametrize("exp", VERSIONS)
def test_port_config_only_overrides_its_baseline(exp):
    """A port's file restates none of its baseline's model keys, so resizing the baseline resizes the port
    with it instead of leaving it behind at the old shape."""
    own = yaml.safe_load((Path(CONF_DIR) / "exp" / f"{exp}.yaml").read_text())
    base = compose_config([f"exp={own['defaults'][0]}"]).model
    restated = [k for k, v in own["model"].items() if k != "_target_" and base.get(k) == v]
    assert not restated, f"{exp}.yaml restates {restated} from {own['defaults'][0]}"


@pytest.mark.parametrize("exp", [f"{p}_test" for p in PORTS])
def test_cached_decoding_matches_a_full_forward(exp):
    model = tiny(exp).eval()
    x = torch.randint(0, 257, (2, 12))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2)
        logits, cache = model(x[:, :7], cache=cache)
        steps = [logits]
        for t in range(7, 12):
            logits, cache = model(x[:, t:t + 1], cache=cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_every_port_trains_through_the_cli(tmp_path):
    sweep = tmp_path / "ports"
    exps = ",".join(f"{p}_test" for p in PORTS)
    run_cli("lmplay.train", "-m", f"exp={exps}", "max_steps=4", "device=cpu", f"hydra.sweep.dir={sweep}", check=True)
    summary = json.loads((sweep / "summary.json").read_text())
    assert [job["experiment"] for job in summary["jobs"]] == [f"{p}_test" for p in PORTS]
    for job in summary["jobs"]:
        assert job["status"] == "completed" and job["steps"] == 4, job
        stats = json.loads((sweep / job["dir"] / "stats.json").read_text())
        losses = [r["loss"] for r in stats["train"]]
        assert losses[-1] < losses[0], (job["experiment"], losses)
        assert stats["validation"], job["experiment"]

    # a trained unified_embed checkpoint exports to one with a plain table and the same logits
    trained = sweep / summary["jobs"][PORTS.index("unified_embed")]["dir"] / "model.lmp"
    run_cli("experiments.unified_embed.export", str(trained), str(tmp_path / "plain.lmp"), check=True)
    # neither over an existing file (a training checkpoint) unasked, nor again (only the optimizer state would go)
    again = run_cli("experiments.unified_embed.export", str(trained), str(tmp_path / "plain.lmp"))
    assert again.returncode == 2 and "plain.lmp exists" in again.stderr and "--replace" in again.stderr
    again = run_cli("experiments.unified_embed.export", str(tmp_path / "plain.lmp"), str(tmp_path / "twice.lmp"))
    assert again.returncode == 2 and "collapsed already" in again.stderr and not (tmp_path / "twice.lmp").exists()
    (model, exp), (plain, plain_exp) = load_model(trained), load_model(tmp_path / "plain.lmp")
    assert exp == plain_exp == "unified_embed_test" and type(plain.embed.tok) is nn.Embedding
    x = torch.randint(0, 257, (2, 40))
    torch.testing.assert_close(plain(x), model(x), atol=1e-6, rtol=0)


# -- value_norm -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("exp, bad, needle", [
    ("unified_embed_test", "model.front_mul=0", "front_mul=0 must be >= 1"),  # trained to a NaN blamed on the forward
    ("unified_embed_test", "model.front_mul=1.5", "model.front_mul=1.5 should be an integer"),  # a TypeError
    ("nnmemory_test", "model.num_cells=-5", "model.num_cells=-5 must be >= 0"),  # torch's negative-dimension error
    ("unified_embed_test", "model.collapsed=true", ("model.collapsed is a parameter of UnifiedEmbedGPT that "
                                                    "exp=unified_embed_test's file does not set: add it with "
                                                    "+model.collapsed=VALUE")),  # was "unknown key"
])
def test_an_ideas_own_bad_setting_is_one_line(tmp_path, exp, bad, needle):
    proc = run_cli("lmplay.train", f"exp={exp}", bad, "device=cpu", "max_steps=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert needle in proc.stderr and not (tmp_path / "run").exists()


def test_value_norm_normalises_each_heads_values():
    torch.manual_seed(0)
    attn = ValueNormAttention(embed_dim=32, num_heads=4)
    x = torch.randn(2, 10, 32) * 5
    cache = KVCache(2, 4, 10, 8, "cpu", torch.float32)
    attn(x, cache=cache)
    values = cache.values[:, :, :10]  # what attention mixes: [B, H, T, head_dim]
    torch.testing.assert_close(values.mean(-1), torch.zeros(2, 4, 10), atol=1e-5, rtol=0)
    torch.testing.assert_close(values.var(-1, unbiased=False), torch.ones(2, 4, 10), atol=1e-3, rtol=0)
    # ... and the output is the baseline's attention over those values
    q, k, v = attn.split_heads(attn.qkv(x))
    expected = reference_attention(q, k, F.layer_norm(v, (8,)), 8 ** -0.5)
    torch.testing.assert_close(attn(x), attn.proj(expected.transpose(1, 2).reshape(2, 10, 32)), atol=1e-5, rtol=1e-5)


# -- attn_temp --------------------------------------------------------------------------------------------------

def test_learned_temperature_starts_as_the_baseline_and_scales_scores():
    torch.manual_seed(0)
    attn = LearnedTemperatureAttention(embed_dim=32, num_heads=4)
    base = MultiHeadAttention(embed_dim=32, num_heads=4)
    base.load_state_dict(attn.state_dict(), strict=False)
    x = torch.randn(2, 10, 32)
    assert torch.equal(attn.temperature(x), torch.ones(2, 4, 10, 1))
    torch.testing.assert_close(attn(x), base(x), atol=1e-6, rtol=0)

    with torch.no_grad():
        attn.temperature_bias.copy_(torch.tensor([-2.0, 0.0, 1.0, 5.0]))
        attn.temperature_weight.normal_(0, 0.1)  # it depends on the token too
    t = attn.temperature(x)
    assert ((t > 0) & (t < 2)).all() and t.std() > 0
    q, k, v = attn.split_heads(attn.qkv(x))
    expected = reference_attention(q / t, k, v, 8 ** -0.5)  # scores q.k / (sqrt(head_dim) * t)
    torch.testing.assert_close(attn(x), attn.proj(expected.transpose(1, 2).reshape(2, 10, 32)), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(attn(x), base(x), atol=1e-3)


# -- lradd ------------------------------------------------------------------------------------------------------

def test_lradd_is_a_plain_add_at_init_and_learns_per_channel_gains():
    add = LRAdd(6)
    x, y = torch.randn(3, 5, 6), torch.randn(3, 5, 6)
    assert torch.equal(add(x, y), x + y)
    with torch.no_grad():
        add.weight.copy_(torch.linspace(-3, 3, 12).view(2, 6))
    alpha, beta = 2 * torch.sigmoid(torch.linspace(-3, 3, 12).view(2, 6))
    torch.testing.assert_close(add(x, y), alpha * x + beta * y)
    assert alpha.unique().numel() == 6 and ((alpha > 0) & (alpha < 2)).all()
    add(x, y).sum().backward()
    assert add.weight.grad.abs().min() > 0


def test_lradd_per_add_is_the_original_lmplay_s_two_gains_per_add(tmp_path):
    """The port learned per channel and said it was the original's; the original's LRAdd has one alpha and one beta."""
    add = LRAdd(16, per_channel=False)
    assert add.weight.shape == (2, 1)
    with torch.no_grad():
        add.weight[:] = torch.tensor([[0.5], [-0.5]])
    x, y = torch.randn(3, 16), torch.randn(3, 16)
    alpha, beta = 2 * torch.sigmoid(torch.tensor(0.5)), 2 * torch.sigmoid(torch.tensor(-0.5))
    torch.testing.assert_close(add(x, y), alpha * x + beta * y)
    run_cli("lmplay.train", "exp=lradd_test", "model.per_channel=false", "max_steps=2", "device=cpu",
            f"hydra.run.dir={tmp_path / 'run'}", check=True)
    model, _ = load_model(tmp_path / "run")
    assert sum(p.numel() for n, p in model.named_parameters() if "_add." in n) == 4 * len(model.blocks)


def test_lradd_model_starts_as_the_baseline_and_keeps_gains_out_of_weight_decay():
    model = tiny("lradd_test")
    assert all(g == (1.0, 1.0) for g in model.residual_gains().values()) and len(model.residual_gains()) == 4
    skipped = no_decay_names(model)
    assert {n for n, _ in model.named_parameters() if n.endswith("_add.weight")} <= skipped
    baseline = tiny("test_runner")
    baseline.load_state_dict({k: v for k, v in model.state_dict().items() if "_add." not in k})
    x = torch.randint(0, 257, (2, 12))
    torch.testing.assert_close(model(x), baseline(x), atol=1e-6, rtol=0)


# -- unified_embed ----------------------------------------------------------------------------------------------

def test_unified_embedding_collapses_to_a_plain_table():
    torch.manual_seed(0)
    emb = UnifiedEmbedding(50, 16, front_mul=4)
    ids = torch.randint(0, 50, (3, 7))
    assert abs(emb.rows(torch.arange(50)).std().item() - 0.02) < 1e-3  # the scale of a plain table under GPT-2 init
    table = emb.collapse(chunk=16)
    assert type(table) is nn.Embedding and table.weight.shape == (50, 16)
    torch.testing.assert_close(table(ids), emb(ids), atol=1e-7, rtol=0)


def test_unified_embed_export_gives_identical_logits_and_the_baselines_size():
    model = tiny("unified_embed_test")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):  # trained weights, not just the init
        loss, _ = model.train_prompts(["To be, or not to be, that is the question", "Friends, Romans"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    state = torch.get_rng_state()
    exported = model.export()
    assert torch.equal(torch.get_rng_state(), state)  # a seeded notebook's later draws do not depend on an export
    assert type(exported.embed.tok) is nn.Embedding and exported.construction_args["collapsed"]
    assert exported.parameter_count() == tiny("test_runner").parameter_count() < model.parameter_count()
    model.eval(), exported.eval()
    x = torch.randint(0, 257, (2, 20))
    torch.testing.assert_close(exported(x), model(x), atol=1e-6, rtol=0)
    assert exported.generate_prompts(["ROMEO:"], 12) == model.generate_prompts(["ROMEO:"], 12)
    rebuilt = type(model)(**exported.construction_args)  # what a checkpoint of the exported model rebuilds
    rebuilt.load_state_dict(exported.state_dict())


def test_a_model_saved_from_python_exports_into_a_new_folder(tmp_path):
    """save_model's checkpoint has no optimizer part: the export raised KeyError 'optimizers'."""
    from experiments.unified_embed.export import export
    from lmplay.generation.loading import save_model

    model = tiny("unified_embed_test")
    export(save_model(model, "unified_embed_test", tmp_path / "model.lmp"), tmp_path / "new" / "plain.lmp")
    plain, _ = load_model(tmp_path / "new" / "plain.lmp")
    assert plain.construction_args["collapsed"]
    assert plain.generate_prompts(["ROMEO:"], 6) == model.eval().generate_prompts(["ROMEO:"], 6)


def test_an_export_over_another_run_sets_it_aside_and_one_in_place_keeps_its_run(tmp_path):
    """Over another run's model.lmp, that run's stats went on with the export's steps and its checkpoint was
    rotated away; in place, the run itself goes on from the export with its history."""
    from experiments.unified_embed.export import export
    from lmplay.generation.loading import save_model

    a, b = tmp_path / "a", tmp_path / "b"
    for run, exp in ((a, "unified_embed_test"), (b, "test_runner")):
        save_model(tiny(exp), exp, run / "model.lmp")
        (run / "stats.json").write_text("{}")
    b_checkpoint = (b / "model.lmp").read_bytes()
    export(a / "model.lmp", b / "model.lmp", replace=True)
    [aside] = b.glob("replaced_*")
    assert (aside / "model.lmp").read_bytes() == b_checkpoint and (aside / "stats.json").is_file()
    with pytest.raises(ConfigError, match=r"exists; write another path, or pass --replace to write over it in place "
                                          r"\(its run goes on from it, and the old file is kept as model.lmp.bak\)"):
        export(a, a / "model.lmp")
    export(a, a / "model.lmp", replace=True)
    assert not list(a.glob("replaced_*")) and (a / "stats.json").is_file() and (a / "model.lmp.bak").is_file()


# -- nnmemory ---------------------------------------------------------------------------------------------------

def test_nnmemory_read_attends_over_the_cells_per_token():
    torch.manual_seed(0)
    memory, read = NNMemory(num_cells=10, embed_dim=16, num_heads=2), NNMemoryRead(16, 2)
    x = torch.randn(2, 6, 16)
    keys, values = memory.keys_values()
    assert keys.shape == values.shape == (1, 2, 10, 8)
    y = read(x, keys, values)
    q = read.query(x).view(2, 6, 2, 8).transpose(1, 2)
    expected = reference_attention(q, keys, values, 8 ** -0.5, causal=False)  # every cell, no mask
    torch.testing.assert_close(y, read.proj(expected.transpose(1, 2).reshape(2, 6, 16)), atol=1e-5, rtol=1e-5)

    other = x.clone()
    other[:, 3:] = torch.randn(2, 3, 16)  # other tokens change: a token's read does not
    torch.testing.assert_close(read(other, keys, values)[:, :3], y[:, :3])
    y.sum().backward()
    assert memory.cells.grad.abs().sum() > 0 and memory.cells.skip_weight_decay


def test_nnmemory_model_shares_one_memory_across_blocks():
    model = tiny("nnmemory_test")
    assert sum(isinstance(m, NNMemory) for m in model.modules()) == 1
    assert sum(isinstance(m, NNMemoryRead) for m in model.modules()) == len(model.blocks)
    assert len(model.new_cache(1)) == len(model.blocks)  # the memory needs no KV cache


def test_nnmemory_computes_its_cells_keys_and_values_once_a_generation_and_never_keeps_stale_ones():
    """Decoding runs a forward per token, and each recomputed the memory's keys and values: sampling was ~10x
    slower than the baseline's. Kept longer (until a weight's version changed), they went stale under fused AdamW,
    whose step leaves no version mark: every validation after the first read the step-0 memory."""
    model = tiny("nnmemory_test").eval()
    calls = []
    real = model.memory.keys_values
    model.memory.keys_values = lambda: calls.append(1) or real()
    with torch.no_grad():
        model.generate_prompts(["ROMEO:"], 20, stop_at_eot=False)
        assert len(calls) == 1
        x = torch.randint(0, 257, (2, 12))
        before = model(x)
        model.memory.cells.add_(0.5)  # as a fused optimizer step changes it: in place
        after = model(x)
        assert not torch.allclose(before, after) and len(calls) == 3  # a forward without a cache: computed anew
        model.generate_prompts(["ROMEO:"], 20, stop_at_eot=False)
        model.generate_prompts(["ROMEO:"], 20, stop_at_eot=False)
        assert len(calls) == 5  # each generation computes them once, from the weights as they are then


def test_unified_embed_exports_in_the_models_own_dtype():
    model = tiny("unified_embed_test").to(torch.float64).eval()
    exported = model.export()
    assert next(exported.parameters()).dtype == torch.float64
    x = torch.randint(0, 257, (2, 20))
    torch.testing.assert_close(exported(x), model(x), atol=1e-12, rtol=0)


def test_code_copied_before_a_layer_moved_is_told_where_it_went(tmp_path, monkeypatch):
    """Copies made by new_exp before the ports' layers moved into their packages import lmplay.modules.lradd."""
    (tmp_path / "old_copy.py").write_text("from lmplay.modules.lradd import LRAdd\n\nclass OldCopy(LRAdd):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config(["exp=test_runner", "model._target_=old_copy.OldCopy"])
    with pytest.raises(ConfigError, match=r"No module named 'lmplay.modules.lradd'\); lmplay.modules.lradd moved to "
                                          r"experiments.lradd.lradd .*: import LRAdd from there"):
        config_class(cfg, "model")


def test_expose_runner_refuses_a_bare_use_and_a_name_another_module_registered():
    """`@expose_runner` without its name registered nothing, silently; `@expose_runner("test_runner")` in a notebook
    replaced the built-in version, and every test_runner checkpoint then loaded as the notebook's class."""
    from experiments.gpt2ish.model import GPT2ish
    from lmplay.errors import ConfigError
    from lmplay.runner import BasicModelRunner, expose_runner, get_runner

    def factory(overrides=None):
        return BasicModelRunner(GPT2ish, {"tokenizer": "bytes"})

    with pytest.raises(TypeError, match="takes the version's name first"):
        expose_runner(factory)
    get_runner("test_runner")  # the registry discovered
    with pytest.raises(ConfigError, match="'test_runner' is registered already, by experiments.gpt2ish.versions"):
        expose_runner("test_runner")(factory)
    assert get_runner("test_runner").model_class is GPT2ish


def test_a_registered_experiment_trained_as_another_class_is_refused_before_it_trains(tmp_path):
    """Its checkpoint named test_runner, which loaded as GPT2ish: a 'damaged checkpoint' error for an idea with more
    weights, the baseline's code running on the idea's weights, silently, for one without."""
    proc = run_cli("lmplay.train", "exp=test_runner", "model._target_=experiments.value_norm.model.ValueNormGPT",
                   "device=cpu", "max_steps=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [(
        "error: model._target_=experiments.value_norm.model.ValueNormGPT is not the class experiment 'test_runner' is "
        "registered with (experiments.gpt2ish.model.GPT2ish), as which its checkpoints would load: train it as a "
        "version of its own, exp=value_norm or value_norm_mini or value_norm_test, or make the exp file's _target_ "
        "and its versions.py agree")]
    assert not (tmp_path / "run" / "model.lmp").exists()


def test_a_checkpoint_trained_as_another_class_than_its_experiments_loads_as_the_class_it_trained(tmp_path,
                                                                                                   monkeypatch):
    """One saved before training refused it loaded by its name alone: as GPT2ish. With a registered version of its
    class it loads as that class; with none, it is refused."""
    from conftest import make_runner

    from experiments.value_norm.model import ValueNormGPT

    def saved(target: str, name: str) -> Path:
        runner = make_runner(["exp=test_runner", f"model._target_={target}", "device=cpu"], tmp_path / name)
        return runner.save()

    path = saved("experiments.value_norm.model.ValueNormGPT", "vn")
    assert type(load_model(path)[0]) is ValueNormGPT
    run_cli("lmplay.train", "exp=test_runner", "model._target_=experiments.value_norm.model.ValueNormGPT",
            "device=cpu", "max_steps=1", f"hydra.run.dir={path.parent}", cwd=tmp_path, check=True)  # and resumes
    assert type(load_model(path)[0]) is ValueNormGPT
    (tmp_path / "own_class.py").write_text("from experiments.gpt2ish.model import GPT2ish\n\n"
                                           "class Sharper(GPT2ish):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = saved("own_class.Sharper", "own")
    with pytest.raises(ConfigError, match=r"this checkpoint of experiment 'test_runner' was trained as "
                                          r"own_class.Sharper, not as the class 'test_runner' is registered with "
                                          r"\(experiments.gpt2ish.model.GPT2ish\), and no registered version has"):
        load_model(path)


@pytest.mark.parametrize("trained_as, loads", [
    ("experiments.gpt2ish.model.GPT2ishBefore", True),  # the class renamed in its model.py
    ("experiments.gpt2ish_before.model.GPT2ish", True),  # the experiment's package renamed
    ("experiments.gpt2ish.model.LMBase", False),  # a class that model.py has (imports): another model
    ("experiments.gone.model.OtherIdea", False),  # another class, whose package is gone
])
def test_a_checkpoint_of_a_class_or_package_since_renamed_loads_as_the_registered_class_with_a_note(
        trained_as, loads, tmp_path, capfd):
    """A class renamed in its experiment's model.py, or the experiment's package renamed: a resume trained on (an edit
    of the code like any other), but generate refused the checkpoint, with no way out but renaming it back. A class
    the module still has, or one of another name, is another model, refused as before."""
    from conftest import make_runner

    from experiments.gpt2ish.model import GPT2ish
    from lmplay.runner import checkpoint

    path = make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run").save()
    ckpt = checkpoint.load(path)
    ckpt["config"] = ckpt["config"].replace("experiments.gpt2ish.model.GPT2ish", trained_as)
    checkpoint.write_out(ckpt, renamed := tmp_path / "renamed.lmp")
    if loads:
        assert type(load_model(renamed)[0]) is GPT2ish
        assert (f"note: this checkpoint of experiment 'test_runner' was trained as {trained_as}, which is no longer "
                f"there (renamed): it loads as experiments.gpt2ish.model.GPT2ish") in capfd.readouterr().err
    else:
        with pytest.raises(ConfigError, match=f"was trained as {trained_as}, not as the class"):
            load_model(renamed)


def test_a_checkpoint_of_an_experiment_renamed_whole_loads_as_the_experiment_named_by_exp(tmp_path, capfd):
    """Package, versions and class all renamed since the checkpoint was saved: nothing in it names the code now,
    and generate refused it with no way out but renaming them back. load_as names the registered code to load it as."""
    from conftest import make_runner, run_cli

    from experiments.gpt2ish.model import GPT2ish
    from lmplay.runner import checkpoint

    ckpt = checkpoint.load(make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run").save())
    ckpt["exp"] = "my_idea_test"
    ckpt["config"] = ckpt["config"].replace("experiments.gpt2ish.model.GPT2ish", "experiments.my_idea.model.MyIdea")
    checkpoint.write_out(ckpt, old := tmp_path / "old.lmp")
    with pytest.raises(ConfigError, match="an experiment renamed since samples with generate's load_as=NEW_NAME"):
        load_model(old)
    model, exp = load_model(old, load_as="test_runner")
    assert type(model) is GPT2ish and exp == "test_runner"
    assert ("is a checkpoint of experiment 'my_idea_test': its weights load as experiment 'test_runner' "
            "(experiments.gpt2ish.model.GPT2ish), as load_as asks") in capfd.readouterr().err
    with pytest.raises(ConfigError, match=r"the weights of experiment 'my_idea_test' do not fit the model of "
                                          r"experiment 'attn_temp_test' \(load_as\), another than they trained "
                                          r"\(missing blocks.0.attn"):  # blamed gpt2ish/model.py as changed
        load_model(old, load_as="attn_temp_test")
    with pytest.raises(ConfigError, match=r"load_as='test_runer' is not a registered experiment: did you mean "
                                          r"'test_runner'\?"):
        load_model(old, load_as="test_runer")
    proc = run_cli("lmplay.generate", f"checkpoint={old}", "load_as=test_runner", "prompt=Hi", "max_new_tokens=3",
                   "do_sample=false", check=True)
    assert proc.stdout.startswith("Hi") and "as load_as asks" in proc.stderr


def test_a_config_of_one_s_own_over_a_class_since_renamed_loads_it_and_an_idea_s_layer_since_taken_out_is_said(
        tmp_path, capfd):
    from conftest import make_runner

    from experiments.gpt2ish.model import GPT2ish
    from lmplay.runner import checkpoint

    ckpt = checkpoint.load(make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run").save())
    ckpt["exp"] = "my_own"  # a config of one's own (--config-dir) over the class since renamed: its resume trains on
    ckpt["config"] = ckpt["config"].replace("experiments.gpt2ish.model.GPT2ish", "experiments.gpt2ish.model.GPT2ishOld")
    checkpoint.write_out(ckpt, own := tmp_path / "own.lmp")
    assert type(load_model(own)[0]) is GPT2ish
    assert "loads as experiments.gpt2ish.model.GPT2ish" in capfd.readouterr().err
    ckpt["components"]["model"]["state"]["weights"]["blocks.0.extra.weight"] = torch.zeros(2)  # an idea's layer
    ckpt["components"]["model"]["state"]["code"]["experiments.gpt2ish.model"] = "0" * 16  # since taken out
    checkpoint.write_out(ckpt, edited := tmp_path / "edited.lmp")
    with pytest.raises(ConfigError, match=r"do not fit the installed code \(unexpected blocks.0.extra.weight\): "
                                          r".*gpt2ish/model.py changed since it was saved$"):
        load_model(edited)  # not "a damaged checkpoint": the file is whole, the code changed


def test_a_class_named_through_its_packages_re_export_finds_its_versions(monkeypatch):
    """A config of one's own naming `my_lab.idea.Idea` (re-exported by the package) trained, but generate said no
    registered version has its model class: the names were compared as text."""
    import experiments.value_norm
    from experiments.value_norm.model import ValueNormGPT
    from lmplay.runner.registry import versions_of

    monkeypatch.setattr(experiments.value_norm, "ReExported", ValueNormGPT, raising=False)
    assert versions_of("experiments.value_norm.ReExported", registered()) == \
        versions_of("experiments.value_norm.model.ValueNormGPT", registered()) == \
        ["value_norm", "value_norm_mini", "value_norm_test"]


def test_nnmemory_reads_the_current_memory_through_a_cache_reset_after_a_weight_change():
    """A cache reused (reset()) after the weights changed read the memory's keys and values of before the change."""
    model = tiny("nnmemory_test").eval()
    x = torch.randint(0, 257, (1, 10))
    cache = model.new_cache(1)
    with torch.no_grad():
        model(x, cache=cache)
        model.memory.cells.mul_(3.0)  # an optimizer step, in place
        for layer in cache:
            layer.reset()
        reused, _ = model(x, cache=cache)
        torch.testing.assert_close(reused, model(x))


@pytest.mark.parametrize("exp", ["test_runner", *(f"{p}_test" for p in PORTS), "gpt2"])
def test_a_model_fed_past_its_context_says_so_as_the_baseline_does(exp):
    """The ports are copies of the baseline that had lost its check: more tokens than the context was the position
    embedding's bare 'IndexError: index out of range in self'."""
    model = tiny(exp)
    with pytest.raises(ValueError, match=r"^33 tokens after 0 cached reach past context_len=32: feed at most 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    cache = model.new_cache(1)
    model(torch.zeros(1, 30, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"^3 tokens after 30 cached reach past context_len=32: feed at most 2"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


def test_load_as_does_not_call_the_renamed_experiments_own_modules_changed(tmp_path, capfd):
    """load_as runs the weights with another experiment's code: the old package's modules (not installed, or never
    this code's) were said to have "changed since it was saved", as if someone had edited them."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    ckpt = checkpoint.load(make_runner(["exp=test_runner", "device=cpu"], tmp_path / "run").save())
    ckpt["exp"] = "my_idea_test"
    ckpt["config"] = ckpt["config"].replace("experiments.gpt2ish.model.GPT2ish", "experiments.my_idea.model.MyIdea")
    code = ckpt["components"]["model"]["state"]["code"]
    code["experiments.my_idea.model"] = code.pop("experiments.gpt2ish.model")[::-1]  # its own file, edited as copied
    checkpoint.write_out(ckpt, old := tmp_path / "old.lmp")
    load_model(old, load_as="test_runner")
    err = capfd.readouterr().err
    assert "as load_as asks" in err and "changed since" not in err



def test_an_idea_with_weights_of_its_own_trains_with_its_baselines_dropout_masks(tmp_path):
    """Its extra weights' init drew from the global generator, which left it elsewhere than the baseline's: at the
    same seed, with dropout on, the idea's masks were not its baseline's (a paired comparison's noise, not its
    bias)."""
    from conftest import make_runner

    states = []
    for exp in ("test_runner", "nnmemory_test", "unified_embed_test"):
        make_runner([f"exp={exp}", "device=cpu", "model.dropout=0.1"], tmp_path / exp)
        states.append(torch.get_rng_state())
    assert all(torch.equal(states[0], s) for s in states[1:])
