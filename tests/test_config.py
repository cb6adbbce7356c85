"""Every experiment config composes and builds its model; parameter counts match the design."""

import re

import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from conftest import REPO, compose_config, make_runner
from lmplay.data.tokenizers import get_tokenizer
from lmplay.errors import ConfigError
from lmplay.runner import registered

EXPS = sorted(p.stem for p in (REPO / "conf" / "exp").glob("*.yaml"))


def build(exp: str, device: str = "meta"):
    cfg = compose_config([f"exp={exp}"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    cls = get_class(model_cfg.pop("_target_"))
    with torch.device(device):
        return cfg, cls(vocab_size=get_tokenizer(cfg.tokenizer).vocab_size, tokenizer=cfg.tokenizer,
                        context_len=cfg.context_len, **model_cfg)


@pytest.mark.parametrize("exp", EXPS)
def test_every_experiment_composes_and_instantiates(exp):
    cfg, model = build(exp)
    assert model.parameter_count() > 0
    assert cfg.optimizer.lr == cfg.lr


@pytest.mark.parametrize("exp,params", [("gpt2ish", 120e6), ("gpt2ish_med", 405e6), ("gpt2ish_large", 838e6)])
def test_baseline_parameter_counts(exp, params):
    _, model = build(exp)
    assert abs(model.parameter_count() - params) / params < 0.03


@pytest.mark.parametrize("exp", EXPS)
def test_a_registered_versions_model_is_the_one_its_config_trains(exp):
    """What Python users get from get_runner(NAME).build_model(): test_runner's was built with the gpt2 tokenizer
    and a context of 1024 (the class's defaults), where its config trains a byte-level model at 64."""
    _, trained = build(exp)
    runner = registered()[exp].factory()
    with torch.device("meta"):
        built = runner.build_model()
    assert type(built) is type(trained) and built.construction_args == trained.construction_args


def test_seed_defaults():
    cfg = compose_config(["exp=gpt2ish"])
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.mini_batch_size, cfg.context_len) == (6e-4, 0.0, 50, 4, 1024)
    assert cfg.optimizer._target_ == "torch.optim.AdamW"


def test_vocab_size_comes_from_the_tokenizer():
    _, model = build("test_runner", device="cpu")
    assert model.embed.tok.num_embeddings == get_tokenizer("bytes").vocab_size


@pytest.mark.parametrize("override,message", [
    ("lr=abc", "optimizer.lr='abc' should be a number"),
    ("batch_size=''", "runner.batch_size='' should be an integer"),
    ("runner.validation_batches=abc", "runner.validation_batches='abc' should be an integer"),  # not "a number"
    ("lr='3e-4'", ("optimizer.lr='3e-4' should be a number: it is text, as quotes or ${oc.env:...} make it; "
                   "'optimizer.lr=\"${oc.decode:${oc.env:VAR}}\"' reads an environment variable as the value it "
                   "spells")),
])
def test_ill_typed_value_names_the_key_and_the_type(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_runner(["exp=test_runner", "device=cpu", override], tmp_path)


def test_an_experiment_package_that_cannot_be_imported_hides_no_other(tmp_path, monkeypatch, capsys):
    """A half-written idea sorting first (aaa_...) stopped discovery: generate then found no test_runner, and
    the error named everything but the broken package."""
    import sys

    import experiments
    from lmplay.runner import registry

    (tmp_path / "aaa_idea").mkdir()
    (tmp_path / "aaa_idea" / "__init__.py").write_text("")
    (tmp_path / "aaa_idea" / "versions.py").write_text("import no_such_module_xyz\n")
    monkeypatch.setattr(experiments, "__path__", [str(tmp_path), *experiments.__path__])
    monkeypatch.setattr(registry, "_REGISTRY", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    for name in [m for m in sys.modules if m.startswith("experiments.") and m.endswith(".versions")]:
        monkeypatch.delitem(sys.modules, name)
    assert {"test_runner", "gpt2ish", "value_norm"} <= set(registry.registered())
    assert ("warning: experiments.aaa_idea.versions cannot be imported (ModuleNotFoundError: No module named "
            "'no_such_module_xyz'); its experiments are not registered") in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"experiments.aaa_idea.versions cannot be imported"):
        registry.get_runner("no_such_experiment")
    # its own checkpoint: the import error first, not "no versions.py ... pip install -e" (which would not help)
    with pytest.raises(ConfigError, match=r"^experiment 'aaa_idea_test' \(experiments.aaa_idea.model.IdeaGPT\) "
                                          r"cannot be loaded: experiments.aaa_idea.versions cannot be imported "
                                          r"\(ModuleNotFoundError: No module named 'no_such_module_xyz'\); fix that "
                                          r"import$"):
        registry.get_runner("aaa_idea_test", model_class="experiments.aaa_idea.model.IdeaGPT")
