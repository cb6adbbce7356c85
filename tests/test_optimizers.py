"""Weight-decay groups and freezing follow the rule: no decay for biases, norms, embeddings, marked params."""

import pytest
import torch

from experiments.gpt2ish.model import GPT2ish
from lmplay.errors import ConfigError
from lmplay.runner.optimizers import (
    freeze,
    grouped_names,
    no_decay_names,
    param_groups,
    regrouped_state,
)


def tiny():
    return GPT2ish(vocab_size=257, context_len=16, num_blocks=2, embed_dim=16, num_heads=2, tokenizer="bytes")


def test_gpt2ish_weight_decay_groups():
    model = tiny()
    skip = no_decay_names(model)
    for name, param in model.named_parameters():
        expect_skip = name.endswith("bias") or ".ln" in name or name.startswith("ln_f") or name.startswith("embed.")
        assert (name in skip) == expect_skip, name
    decay = {n for n, _ in model.named_parameters()} - skip
    assert decay == {n for n, p in model.named_parameters() if p.ndim == 2 and not n.startswith("embed.")}


def test_a_hand_written_norm_or_gain_takes_no_weight_decay():
    """An idea's own RMSNorm (a 1-D scale, no torch norm class) was decayed while the baseline's LayerNorm was not."""
    class RMSNorm(torch.nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(dim))

    model = tiny()
    model.ln_f = RMSNorm(16)
    model.gain = torch.nn.Parameter(torch.ones(()))
    skip = no_decay_names(model)
    assert {"ln_f.weight", "gain"} <= skip
    assert "lm_head.weight" not in skip and "blocks.0.mlp.fc.weight" not in skip


def test_optimizer_state_grouped_by_the_earlier_rule_resumes_with_each_parameter_s_moments():
    """A run of an idea with a 1-D gain, trained while such a parameter was decayed, could not resume: its saved
    groups no longer fit ('does not match the size of optimizer's group'), blamed on freeze or the model's code."""
    model = tiny()
    model.gain = torch.nn.Parameter(torch.ones(16))
    params = dict(model.named_parameters())
    before = torch.optim.AdamW([{"params": [params[n] for n in names], "weight_decay": decay}
                                for names, decay in zip(grouped_names(model, by_shape=False), (0.1, 0.0))])
    (model(torch.randint(0, 257, (2, 16))).sum() + model.gain.sum()).backward()
    before.step()
    saved = before.state_dict()
    after = torch.optim.AdamW(param_groups(model, 0.1))
    with pytest.raises(ValueError, match="doesn't match the size"):
        after.load_state_dict(saved)
    after.load_state_dict(regrouped_state(saved, model))
    assert [len(g["params"]) for g in after.param_groups] == [9, 21]
    assert any(p is model.gain for p in after.param_groups[1]["params"])
    assert all(torch.equal(after.state[p]["exp_avg"], before.state[p]["exp_avg"]) for p in model.parameters())
    assert regrouped_state(after.state_dict(), model) is None  # grouped by today's rule: nothing to move


def test_a_resume_that_freezes_other_parameters_is_one_line_not_a_crash(tmp_path):
    """Another freeze on resume keeps the groups' sizes and loads one tensor's moments into another's place: the fused
    step crashed (SIGSEGV, no message), the unfused one was torch's RuntimeError."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    args = ["exp=test_runner", "device=cpu", "runner.save_interval=100000", "runner.validation_interval=100000"]
    make_runner([*args, "optimizer.freeze=[lm_head.weight]", "max_steps=2"], tmp_path).train()
    ckpt = checkpoint.load(tmp_path / "model.lmp")
    with pytest.raises(ConfigError, match=r"^the checkpoint's optimizer state does not fit the model's parameters "
                                          r"\(a state of shape \[.*\] for a parameter of \[.*\]\); optimizer.freeze"):
        make_runner([*args, "optimizer.freeze=[blocks.0.mlp.fc.weight]", "max_steps=4"], tmp_path, ckpt,
                    overridden={"optimizer.freeze"})


def test_skip_weight_decay_marker():
    model = tiny()
    model.lm_head.weight.skip_weight_decay = True
    assert "lm_head.weight" in no_decay_names(model)


def test_freeze_by_pattern_removes_params_from_groups():
    model = tiny()
    frozen = freeze(model, ["embed.*"])
    assert frozen == ["embed.tok.weight", "embed.pos.weight"]
    groups = param_groups(model, 0.1)
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert id(model.embed.tok.weight) not in in_groups
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    opt = torch.optim.AdamW(groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(in_groups)


def test_a_freeze_pattern_that_matches_nothing_is_an_error():
    model = tiny()
    with pytest.raises(ConfigError, match="optimizer.freeze pattern 'embedd' matches no parameter"):
        freeze(model, ["embed.*", "embedd"])
    assert all(p.requires_grad for p in model.parameters())  # nothing frozen by the half that matched


def test_freeze_patterns_that_are_not_strings_are_one_line():
    """optimizer.freeze=[1] was fnmatch's TypeError traceback."""
    with pytest.raises(ConfigError, match=r"^optimizer.freeze=\[1\] should be a list of fnmatch patterns"):
        freeze(tiny(), [1])


def test_freezing_every_parameter_is_an_error_before_training():
    """optimizer.freeze=[*] started the run, then failed at the first backward with torch's traceback."""
    model = tiny()
    with pytest.raises(ConfigError, match=r"^optimizer.freeze=\['\*'\] freezes every parameter of the model: nothing "
                                          r"would train"):
        freeze(model, ["*"])
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("override, message", [
    ("optimizer.fused=no", r"^optimizer\.fused='no' should be true, false or null$"),  # torch read 'no' as true
    ("optimizer.betas=[a,b]", r"^optimizer\.betas=\['a', 'b'\] should be two numbers, like \[0\.9, 0\.95\]$"),
    ("optimizer.freeze=[*]", r"^optimizer\.freeze=\['\*'\] freezes every parameter"),
    ("lr=inf", r"^optimizer\.lr=inf: the lr schedule .* need a finite number there"),  # trained a step, then diverged
    ("weight_decay=nan", r"^optimizer\.weight_decay=nan: the lr schedule .* need a finite number there"),
])
def test_optimizer_values_torch_would_misread_or_fail_on_are_one_line(tmp_path, override, message):
    from conftest import make_runner

    with pytest.raises(ConfigError, match=message):
        make_runner(["exp=test_runner", "device=cpu", override], tmp_path)


def test_optimizer_freeze_keeps_those_weights_through_training_and_a_resume(tmp_path):
    """The runner's path, not freeze() alone: frozen tensors stay bit-equal while the rest trains, on resume too."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    args = ["exp=test_runner", "device=cpu", "optimizer.freeze=[embed.*]", "weight_decay=0.1",
            "runner.save_interval=100000", "runner.validation_interval=100000"]
    runner = make_runner([*args, "max_steps=3"], tmp_path)
    start = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    ckpt = checkpoint.load(tmp_path / "model.lmp")
    resumed = make_runner([*args, "max_steps=5"], tmp_path, ckpt)
    resumed.train()
    end = resumed.model.state_dict()
    assert all(torch.equal(start[k], end[k]) for k in ("embed.tok.weight", "embed.pos.weight"))
    assert not torch.equal(start["lm_head.weight"], end["lm_head.weight"])
    assert resumed.runner_c.progress["step"] == 5


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_foreach_asked_for_is_not_also_fused_by_default(tmp_path, optimizer):
    """With optimizer.fused=null fused on a CPU too, +optimizer.foreach=true was torch's "`fused` and `foreach`
    cannot be `True` together" (a run trained so before could not resume)."""
    from conftest import make_runner

    runner = make_runner(["exp=test_runner", "device=cpu", f"optimizer={optimizer}", "+optimizer.foreach=true",
                          "max_steps=2"], tmp_path)
    runner.train()
    assert runner.optimizer_c.optimizer.defaults["foreach"] and not runner.optimizer_c.optimizer.defaults["fused"]


def test_a_checkpoint_of_a_value_an_older_lmplay_took_unchecked_resumes_once_the_key_is_typed(tmp_path):
    """optimizer.fused='no' trained before keys of a None default were checked: its resume was refused as a damaged
    checkpoint, even with optimizer.fused=true typed to replace it."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=1"], tmp_path)
    runner.train()
    ckpt = checkpoint.load(tmp_path / "model.lmp")
    ckpt["components"]["optimizers"]["state_args"]["fused"] = "no"
    with pytest.raises(ConfigError, match=r"^the checkpoint's optimizer.fused='no' should be true, false or null: an "
                                          r"older lmplay trained with it unchecked; type the key with a good value"):
        make_runner(["exp=test_runner", "device=cpu", "max_steps=2"], tmp_path, ckpt)
    resumed = make_runner(["exp=test_runner", "device=cpu", "max_steps=2", "optimizer.fused=true"], tmp_path, ckpt,
                          overridden={"optimizer.fused"})  # as typed on the command line
    assert resumed.optimizer_c.optimizer.defaults["fused"] is True


OWN_OPTIMIZERS = '''import torch


class Clip(torch.optim.SGD):
    def __init__(self, params, lr=1e-3, weight_decay=0.0, update_clip: float | None = 0.01):
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.update_clip = update_clip


class Needs(torch.optim.SGD):
    def __init__(self, params, lr, weight_decay, momentum):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum)


class NoneTaken(torch.optim.SGD):
    def __init__(self, params, lr, weight_decay, momentum: "float | None", clip: "float | None" = 0.5):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum or 0.0)  # string annotations
        self.clip = clip


class PassesOn(torch.optim.AdamW):
    def __init__(self, params, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8):  # no annotations
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps)


class FirstNamedOtherwise(torch.optim.SGD):
    def __init__(self, parameters, lr=1e-3, weight_decay=0.0, momentum=0.0):
        super().__init__(parameters, lr=lr, weight_decay=weight_decay, momentum=momentum)


class NoOptimizer:
    def __init__(self, params, lr=1e-3, weight_decay=0.0):
        self.params = list(params)


class LearningRate(torch.optim.SGD):
    def __init__(self, params, learning_rate=1e-3, weight_decay=0.0):
        super().__init__(params, lr=learning_rate, weight_decay=weight_decay)


class NoDecay(torch.optim.SGD):
    def __init__(self, params, lr=1e-3):
        super().__init__(params, lr=lr)


class Kwargs(torch.optim.SGD):
    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
'''


@pytest.mark.parametrize("target, typed, message", [  # were an AttributeError at the start report, a KeyError 'lr',
    ("NoOptimizer", [], r"^optimizer._target_=own_optimizers.NoOptimizer is no torch.optim.Optimizer subclass"),
    ("LearningRate", ["~optimizer.lr"], r"^optimizer own_optimizers.LearningRate takes no lr, which lmplay's lr "),
    ("Kwargs", [], r"^optimizer own_optimizers.Kwargs takes \*\*kwargs, whose keys lmplay cannot read"),
    ("NoDecay", [], r"^optimizer own_optimizers.NoDecay takes no weight_decay, which"),  # and `unknown key
])  # 'weight_decay'`, which invited ~optimizer.weight_decay before saying what lmplay needs
def test_an_optimizer_of_one_s_own_is_told_what_lmplay_needs_of_it(tmp_path, monkeypatch, target, typed, message):
    from conftest import make_runner

    (tmp_path / "own_optimizers.py").write_text(OWN_OPTIMIZERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=message):
        make_runner(["exp=test_runner", "device=cpu", f"optimizer._target_=own_optimizers.{target}", "~optimizer.betas",
                     "~optimizer.eps", *typed], tmp_path)


def test_an_optimizer_of_one_s_own_gets_a_typed_null_and_says_what_it_needs(tmp_path, monkeypatch):
    """update_clip=null was dropped for the class's 0.01 while the report and the checkpoint said null; a required
    argument left out of its conf file was the constructor's TypeError traceback."""
    from conftest import make_runner

    (tmp_path / "own_optimizers.py").write_text(OWN_OPTIMIZERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    own = ["exp=test_runner", "device=cpu", "optimizer._target_=own_optimizers.Clip", "~optimizer.betas",
           "~optimizer.eps"]
    runner = make_runner([*own, "+optimizer.update_clip=null"], tmp_path / "clip")
    assert runner.optimizer_c.optimizer.update_clip is None
    with pytest.raises(ConfigError, match=r"^own_optimizers.Needs needs optimizer.momentum, which its optimizer "
                                          r"config leaves unset \(or null\): add it to the conf file, or type "
                                          r"\+optimizer.momentum=VALUE$"):
        make_runner([*own[:2], "optimizer._target_=own_optimizers.Needs", *own[3:]], tmp_path / "needs")
    with pytest.raises(ConfigError, match=r"^optimizer.fused=true: torch.optim.RMSprop has no fused kernel"):
        make_runner(["exp=test_runner", "device=cpu", "optimizer=rmsprop", "+optimizer.fused=true"], tmp_path / "rms")
    # what a null or a fused=false did before, still: the class's default for a key that takes no None, unfused
    make_runner(["exp=test_runner", "device=cpu", "optimizer=rmsprop", "+optimizer.fused=false"], tmp_path / "rms")
    adam = make_runner(["exp=test_runner", "device=cpu", "optimizer.eps=null", "optimizer.betas=null"], tmp_path / "a")
    assert adam.optimizer_c.optimizer.defaults["eps"] == 1e-8 and adam.optimizer_c.optimizer.defaults["betas"] == \
        (0.9, 0.999)
    make_runner([*own[:2], "optimizer._target_=own_optimizers.FirstNamedOtherwise", *own[3:]], tmp_path / "first")
    taken = make_runner([*own[:2], "optimizer._target_=own_optimizers.NoneTaken", *own[3:], "+optimizer.momentum=null",
                         "+optimizer.clip=null"], tmp_path / "none")  # a required key that takes None, and another
    assert taken.optimizer_c.optimizer.clip is None
    passes = make_runner([*own[:2], "optimizer._target_=own_optimizers.PassesOn", "optimizer.betas=null",
                          "optimizer.eps=null"], tmp_path / "passes")  # unannotated, passed on to torch's: defaults
    assert passes.optimizer_c.optimizer.defaults["betas"] == (0.9, 0.999)
    for key in ("lr", "weight_decay"):  # which lmplay reads itself: a TypeError at the first step, or at set-up
        with pytest.raises(ConfigError, match=rf"^optimizer.{key}=null: the lr schedule and the weight-decay groups"):
            make_runner(["exp=test_runner", "device=cpu", f"optimizer.{key}=null"], tmp_path / key)


def test_a_resume_switches_optimizer_by_a_typed_target_and_names_how_to_choose_one_s_own_again(tmp_path,
                                                                                               monkeypatch):
    """optimizer._target_=torch.optim.NAdam on a resume: 'unknown key _target_'; a run of an optimizer of one's own,
    resumed without retyping it, was 'the checkpoint's settings are damaged'."""
    from conftest import make_runner

    from lmplay.runner import checkpoint

    runner = make_runner(["exp=test_runner", "device=cpu", "max_steps=1"], tmp_path)
    runner.train()
    ckpt = checkpoint.load(tmp_path / "model.lmp")
    switched = make_runner(["exp=test_runner", "device=cpu", "optimizer._target_=torch.optim.NAdam"], tmp_path, ckpt,
                           overridden={"optimizer._target_"})
    assert type(switched.optimizer_c.optimizer) is torch.optim.NAdam
    ckpt["components"]["optimizers"]["state_args"]["_target_"] = "own_optimizers_not_imported.Clip"
    ckpt["components"]["optimizers"]["state_args"]["momentum"] = 0.5  # a key of its own, typed when the run began:
    # left out of the list, retyping the list moved it to its file's value (NesterovSGD's momentum 0.5 -> 0.9)
    with pytest.raises(ConfigError, match=r"^this run trained with the optimizer own_optimizers_not_imported.Clip, "
                                          r"whose module a checkpoint does not import by itself .* with the run's own "
                                          r"settings typed too \(lr=0.003 weight_decay=0.0 optimizer.amsgrad=false "
                                          r"optimizer.betas=\[0.9,0.95\] .*optimizer.foreach=null "
                                          r"optimizer.freeze=\[\] optimizer.fused=null optimizer.maximize=false "
                                          r"optimizer.momentum=0.5\): a group chosen anew"):
        make_runner(["exp=test_runner", "device=cpu"], tmp_path, ckpt)


def test_a_target_typed_alone_names_the_keys_its_composed_file_brings_that_the_class_does_not_take(tmp_path):
    """optimizer._target_=torch.optim.SGD on a fresh run was `optimizer: unknown key 'betas'`: a key nobody typed,
    from adamw.yaml, with no word of where it came from or how to drop it."""
    from conftest import make_runner

    with pytest.raises(ConfigError, match=r"^optimizer._target_=torch.optim.SGD takes no betas, eps, which the "
                                          r"optimizer file the run composed \(adamw.yaml\) sets: .* type "
                                          r"~optimizer.betas ~optimizer.eps to drop them"):
        make_runner(["exp=test_runner", "device=cpu", "optimizer._target_=torch.optim.SGD"], tmp_path / "a",
                    overridden={"optimizer._target_"})
    with pytest.raises(ConfigError, match=r"^optimizer: unknown key 'betas'"):  # typed: the user's own key
        make_runner(["exp=test_runner", "device=cpu", "optimizer._target_=torch.optim.SGD", "~optimizer.eps",
                     "optimizer.betas=[0.1,0.2]"], tmp_path / "b", overridden={"optimizer._target_", "optimizer.betas"})
    runner = make_runner(["exp=test_runner", "device=cpu", "optimizer._target_=torch.optim.SGD", "~optimizer.betas",
                          "~optimizer.eps"], tmp_path / "c", overridden={"optimizer._target_"})
    assert type(runner.optimizer_c.optimizer) is torch.optim.SGD


def test_an_optimizer_of_one_s_own_with_three_betas_takes_three(tmp_path):
    """Adan's betas are three: 'optimizer.betas=[0.98, 0.92, 0.99] should be two numbers', even for its own default."""
    from conftest import make_runner

    args = ["exp=test_runner", "device=cpu", "optimizer._target_=three_betas_optim.Adan", "~optimizer.eps"]
    runner = make_runner([*args, "optimizer.betas=[0.9,0.9,0.99]"], tmp_path / "a",
                         overridden={"optimizer._target_", "optimizer.betas"})
    assert runner.optimizer_c.optimizer.defaults["betas"] == (0.9, 0.9, 0.99)
    with pytest.raises(ConfigError, match=r"^optimizer.betas=\[0.9, 0.95\] should be three numbers, like "
                                          r"\[0.98, 0.92, 0.99\]"):
        make_runner(args, tmp_path / "b", overridden={"optimizer._target_"})  # adamw.yaml's two
    with pytest.raises(ConfigError, match=r"^optimizer.betas=\[0.9\] should be two numbers, like \[0.9, 0.95\]"):
        make_runner(["exp=test_runner", "device=cpu", "optimizer.betas=[0.9]"], tmp_path / "c")
