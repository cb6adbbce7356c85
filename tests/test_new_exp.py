"""The experiment workflow: new_exp copies an experiment that trains at once; an outside package holds experiments."""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO, compose_config, python_path, run_cli
from hydra.utils import get_class
from omegaconf import OmegaConf

from lmplay.errors import ConfigError
from lmplay.new_exp import create
from lmplay.runner import checkpoint


def pythonpath(*paths: Path) -> dict[str, str]:
    return {"PYTHONPATH": python_path(*paths)}  # before the checkout's own dirs, which they shadow


def checkout_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the checkout and the PYTHONPATH that runs it: what new_exp writes (or would write, if a refusal
    broke) never lands in the shared experiments/ and conf/."""
    repo = tmp_path / "repo"
    for part in ("src", "conf", "experiments"):  # src/lmplay/conf stays a link to the copy's conf/
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"), symlinks=True)
    shutil.copy(REPO / "pyproject.toml", repo)
    return repo, pythonpath(repo / "src", repo)


def test_a_copy_built_without_its_configs_says_why(monkeypatch, capsys):
    """Where git stores src/lmplay/conf as a plain file (Windows without symlinks) a wheel has no configs: Hydra's
    own line was 'Primary config directory not found'."""
    import lmplay.config
    import lmplay.hydra_app
    import lmplay.new_exp

    monkeypatch.setattr(lmplay.config, "CONF_DIR", "/nonexistent/lmplay/conf")
    with pytest.raises(SystemExit) as e:
        lmplay.hydra_app.run_hydra_app(lambda: None, [], "config")
    assert e.value.code == 2 and "core.symlinks=true" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="core.symlinks=true"):  # new_exp --into, what a plain install uses
        lmplay.new_exp.main(["foo", "--into", "/nonexistent/lab"])


def test_a_wheel_install_trains_and_new_exp_asks_for_a_package_of_one_s_own(tmp_path):
    """`pip install .` or `pip install git+URL` (not -e) shipped no conf/: every command was Hydra's "Primary
    config directory not found"."""
    repo, _ = checkout_copy(tmp_path)
    shutil.copy(REPO / "README.md", repo)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(repo)], check=True, capture_output=True, timeout=300)
    assert (site / "lmplay" / "conf" / "exp" / "gpt2ish.yaml").is_file()
    work = tmp_path / "work"
    work.mkdir()
    env = pythonpath(site)
    run_cli("lmplay.train", "exp=test_runner", "max_steps=2", "device=cpu", cwd=work, env=env, check=True)
    assert (work / "outputs" / "test_runner" / "model.lmp").is_file()
    proc = run_cli("lmplay.new_exp", "my_idea", cwd=work, env=env)
    assert proc.returncode == 2 and "installed from a wheel" in proc.stderr and "--into" in proc.stderr
    run_cli("lmplay.new_exp", "my_idea", "--into", str(work / "my_lab"), cwd=work, env=env, check=True)


def test_new_exp_copies_the_baseline_and_trains(tmp_path):
    repo, env = checkout_copy(tmp_path)
    proc = run_cli("lmplay.new_exp", "my_idea", cwd=repo, env=env, check=True)
    assert "exp=gpt2ish_mini,my_idea_mini" in proc.stdout
    model_py = (repo / "experiments" / "my_idea" / "model.py").read_text()
    assert "class MyIdea(LMBase)" in model_py and "GPT2ish" not in model_py
    versions_py = (repo / "experiments" / "my_idea" / "versions.py").read_text()
    assert "from experiments.my_idea.model import MyIdea" in versions_py
    for version in ("my_idea", "my_idea_med", "my_idea_large", "my_idea_mini", "my_idea_test"):
        assert f'@expose_runner("{version}"' in versions_py
        assert (repo / "conf" / "exp" / f"{version}.yaml").is_file()
    assert "_target_: experiments.my_idea.model.MyIdea" in (repo / "conf" / "exp" / "my_idea.yaml").read_text()
    # override-only, as the ports: the copy trains with test_runner's settings, also after a change to them
    test_yaml = (repo / "conf" / "exp" / "my_idea_test.yaml").read_text()
    assert "defaults:\n  - test_runner\nmodel:\n  _target_: experiments.my_idea.model.MyIdea\n" in test_yaml
    assert "lr:" not in test_yaml and "batch_size" not in test_yaml

    run = tmp_path / "run"
    trained = run_cli("lmplay.train", "exp=my_idea_test", "max_steps=2", "device=cpu", f"hydra.run.dir={run}",
                      cwd=repo, env=env, check=True)
    assert len(json.loads((run / "stats.json").read_text())["train"]) == 2 and "versions.py" not in trained.stdout
    # registered: the checkpoint's experiment name leads back to the copied class
    load = ("from lmplay.generation.loading import load_model; "
            f"model, exp = load_model({str(run / 'model.lmp')!r}); print(type(model).__name__, exp)")
    out = subprocess.run([sys.executable, "-c", load], cwd=repo, env={**os.environ, **env}, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.stdout.split() == ["MyIdea", "my_idea_test"], out.stderr

    again = run_cli("lmplay.new_exp", "my_idea", cwd=repo, env=env)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    versions = repo / "experiments" / "my_idea" / "versions.py"  # its shape edited there alone: Python's model
    text = versions.read_text()  # and the trained one part, and training said nothing
    start = text.index('@expose_runner("my_idea_test"')
    versions.write_text(text[:start] + text[start:].replace('"num_blocks": 2', '"num_blocks": 3', 1))
    edited = run_cli("lmplay.train", "exp=my_idea_test", "max_steps=1", "device=cpu", f"hydra.run.dir={run}_2",
                     cwd=repo, env=env, check=True)
    assert ("note: experiments.my_idea.versions builds 'my_idea_test' with num_blocks=3 (trained: 2): get_runner("
            "'my_idea_test').build_model() gives another model than its exp file (my_idea_test.yaml) trains; make the "
            "two agree") in edited.stdout
    typed = run_cli("lmplay.train", "exp=my_idea_test", "max_steps=1", "device=cpu", "model.num_blocks=4",
                    f"hydra.run.dir={run}_3", cwd=repo, env=env, check=True)
    assert "versions.py" not in typed.stdout  # a shape typed is the user's choice
    assert "registers" not in trained.stdout + edited.stdout + typed.stdout
    versions.unlink()  # registered nowhere: it trained without a word, and generate then refused its checkpoints
    unregistered = run_cli("lmplay.train", "exp=my_idea_test", "max_steps=1", "device=cpu", f"hydra.run.dir={run}_4",
                           cwd=repo, env=env, check=True)
    assert ("note: no experiment registers experiments.my_idea.model.MyIdea (a versions.py with "
            "@expose_runner('my_idea_test')): this run trains, but lmplay.generate") in unregistered.stdout


def test_new_exp_from_a_port_keeps_its_idea(tmp_path, monkeypatch):
    written = create("vn2", "value_norm", into=tmp_path / "ideas")
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert {"ideas/vn2/model.py", "ideas/vn2/value_norm_attention.py", "ideas/vn2/versions.py", "ideas/vn2/README.md",
            "ideas/conf/exp/vn2.yaml",
            "ideas/conf/exp/vn2_mini.yaml", "ideas/conf/exp/vn2_test.yaml", "ideas/conf/__init__.py"} <= names
    test_yaml = (tmp_path / "ideas" / "conf" / "exp" / "vn2_test.yaml").read_text()
    assert "- value_norm_test\n" in test_yaml and "_target_: ideas.vn2.model.Vn2" in test_yaml
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config([f"hydra.searchpath=[file://{tmp_path / 'ideas' / 'conf'}]", "exp=vn2_test"])
    args = OmegaConf.to_container(cfg.model, resolve=True)
    try:
        model = get_class(args.pop("_target_"))(vocab_size=257, tokenizer="bytes", context_len=32, **args)
    finally:
        for module in [m for m in sys.modules if m == "ideas" or m.startswith("ideas.")]:
            del sys.modules[module]
    attention = {type(m).__module__ + "." + type(m).__name__ for m in model.modules() if "Attention" in type(m).__name__}
    assert type(model).__name__ == "Vn2" and attention == {"ideas.vn2.value_norm_attention.ValueNormAttention"}


def test_a_bug_in_a_copy_s_model_names_its_own_line_and_hydra_full_error_shows_the_traceback(tmp_path):
    """A bug in the copy's __init__ was 'rejected settings (raised at linear.py:109)': torch's file alone."""
    create("buggy", into=tmp_path / "my_lab")
    model = tmp_path / "my_lab" / "buggy" / "model.py"
    text = model.read_text()
    anchor = next(line for line in text.splitlines() if "self.blocks = " in line)
    model.write_text(text.replace(anchor, anchor + "\n        self.bad = nn.Linear(embed_dim * 1.5, 2)", 1))
    line = model.read_text().splitlines().index("        self.bad = nn.Linear(embed_dim * 1.5, 2)") + 1
    args = ["hydra.searchpath=[pkg://my_lab.conf]", "exp=buggy_test", "max_steps=1", "device=cpu",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli("lmplay.train", *args, env=pythonpath(REPO / "src", REPO, tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f", from {model}:{line}); see `--cfg job`" in proc.stderr and "HYDRA_FULL_ERROR=1" in proc.stderr
    proc = run_cli("lmplay.train", *args, env={**pythonpath(REPO / "src", REPO, tmp_path), "HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and f'"{model}", line {line}' in proc.stderr
    model.write_text(model.read_text().replace("nn.Linear(embed_dim * 1.5, 2)", "nn.Linear(embed_dim, 2, wide=1)"))
    proc = run_cli("lmplay.train", *args, env=pythonpath(REPO / "src", REPO, tmp_path))  # raised by its own line:
    assert proc.stderr.strip() == (  # no setting to look up
        f"error: the model's code failed: TypeError: Linear.__init__() got an unexpected keyword argument 'wide' "
        f"(raised at {model}:{line}); HYDRA_FULL_ERROR=1 shows the traceback"), proc.stderr
    model.write_text(model.read_text().replace("nn.Linear(embed_dim, 2, wide=1)", "undefined_thing"))
    proc = run_cli("lmplay.train", *args, env=pythonpath(REPO / "src", REPO, tmp_path))  # was a 20-line traceback
    assert proc.stderr.strip() == (f"error: the model's code failed: NameError: name 'undefined_thing' is not "
                                   f"defined (raised at {model}:{line}); HYDRA_FULL_ERROR=1 shows the traceback")


def test_an_argument_an_idea_adds_but_does_not_pass_on_to_its_base_is_refused_before_training(tmp_path):
    """A copy's __init__ that took `gated_act` and did not pass it on to super().__init__ trained, and its checkpoint
    left it out: generate and a resume rebuilt the model with the default, silently (a GEGLU run sampled as SwiGLU)."""
    create("geglu", into=tmp_path / "my_lab")
    model = tmp_path / "my_lab" / "geglu" / "model.py"
    text = model.read_text()
    model.write_text(text.replace('tokenizer: str = "gpt2") -> None:',
                                  'tokenizer: str = "gpt2", gated_act: str = "silu") -> None:', 1))
    args = ["hydra.searchpath=[pkg://my_lab.conf]", "exp=geglu_test", "max_steps=1", "device=cpu",
            f"hydra.run.dir={tmp_path / 'run'}"]
    proc = run_cli("lmplay.train", *args, env=pythonpath(REPO / "src", REPO, tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "error: Geglu.__init__ takes gated_act but does not pass it on to super().__init__(...), which keeps a model's "
        "arguments in its checkpoints (generate and a resume rebuild it from them); add gated_act=gated_act to that "
        "call"), proc.stderr
    assert not (tmp_path / "run" / "model.lmp").exists()
    model.write_text(model.read_text().replace("dropout=dropout)", "dropout=dropout, gated_act=gated_act)", 1))
    assert run_cli("lmplay.train", *args, "+model.gated_act=gelu", env=pythonpath(REPO / "src", REPO, tmp_path)
                   ).returncode == 0
    saved = checkpoint.load(tmp_path / "run" / "model.lmp")
    assert saved["components"]["model"]["state_args"]["gated_act"] == "gelu"


def test_an_exp_of_a_package_on_the_path_but_not_the_search_path_or_misspelled_gets_a_hint(tmp_path):
    """With the package on PYTHONPATH (the README's no-install way) and no hydra.searchpath, or a typo in exp=,
    the error listed 29 names and no way on."""
    create("lab_idea", into=tmp_path / "my_lab")
    env = pythonpath(REPO / "src", REPO, tmp_path)
    proc = run_cli("lmplay.train", "exp=lab_idea_test", "max_steps=1", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().endswith(
        "(the package my_lab on the path has it: add 'hydra.searchpath=[pkg://my_lab.conf]')"), proc.stderr
    proc = run_cli("lmplay.train", "hydra.searchpath=[pkg://my_lab.conf]", "exp=lab_idea_tst", "max_steps=1",
                   cwd=tmp_path, env=env)
    assert proc.stderr.startswith("error: exp=lab_idea_tst is unknown (did you mean lab_idea_test?); available: ")


def test_an_external_package_trains_through_the_search_path(tmp_path):
    """Experiments in a package of the user's own: code by import, configs by hydra.searchpath=[pkg://...]."""
    create("outside", into=tmp_path / "my_lab")
    run = tmp_path / "run"
    proc = run_cli("lmplay.train", "hydra.searchpath=[pkg://my_lab.conf]", "exp=outside_test", "max_steps=2",
                   "device=cpu", f"hydra.run.dir={run}", env=pythonpath(REPO / "src", REPO, tmp_path), check=True)
    assert "experiment outside_test" in proc.stdout
    assert len(json.loads((run / "stats.json").read_text())["train"]) == 2
    assert "'hydra.searchpath=[pkg://my_lab.conf]' exp=gpt2ish_mini,outside_mini" in \
        (tmp_path / "my_lab" / "outside" / "README.md").read_text()
    # the pyproject.toml new_exp wrote registers the experiment; what `pip install -e` would make of it:
    entry_points = tomllib.loads((tmp_path / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points == {"lmplay.experiments": {"outside": "my_lab.outside.versions"}}
    installed = tmp_path / "my_lab-0.1.0.dist-info"
    installed.mkdir()
    (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: my_lab\nVersion: 0.1.0\n")
    (installed / "entry_points.txt").write_text("[lmplay.experiments]\noutside = my_lab.outside.versions\n")
    sample = run_cli("lmplay.generate", f"checkpoint={run}", "prompt=hi", "max_new_tokens=2",
                     env=pythonpath(REPO / "src", REPO, tmp_path), check=True)
    assert sample.stdout.startswith("hi")
    unsearched = "(outside_test is registered by the installed package my_lab: add 'hydra.searchpath=[pkg://my_lab.conf]')"
    misspelt = "(hydra.searchpath pkg://my_lab.confs: my_lab has no confs; new_exp --into writes pkg://my_lab.conf)"
    for searchpath, hint in ((), unsearched), (("hydra.searchpath=[pkg://my_lab.confs]",), misspelt):
        unknown = run_cli("lmplay.train", *searchpath, "exp=outside_test", "max_steps=1", "device=cpu",
                          f"hydra.run.dir={tmp_path / 'unknown'}", cwd=tmp_path,
                          env=pythonpath(REPO / "src", REPO, tmp_path))
        assert unknown.returncode == 2 and "exp=outside_test is unknown" in unknown.stderr and hint in unknown.stderr, \
            unknown.stderr
    second = run_cli("lmplay.new_exp", "another", "--into", str(tmp_path / "my_lab"),
                     env=pythonpath(REPO / "src", REPO, tmp_path), check=True)
    assert 'another = "my_lab.another.versions"' in second.stdout  # the pyproject.toml is the user's now: not rewritten
    assert "add this line under [project.entry-points" in second.stdout  # not the table header: a second one breaks it
    assert '\n  [project.entry-points' not in second.stdout
    assert tomllib.loads((tmp_path / "pyproject.toml").read_text())["project"]["entry-points"] == entry_points
    copy = run_cli("lmplay.new_exp", "third", "--from", "outside", "--into", str(tmp_path / "my_lab"),
                   env=pythonpath(REPO / "src", REPO, tmp_path))  # the installed experiment, by its registered name
    assert copy.returncode == 0, copy.stderr  # was: no experiment package experiments.outside is importable
    assert "my_lab.third" in (tmp_path / "my_lab" / "third" / "versions.py").read_text()
    elsewhere = run_cli("lmplay.new_exp", "fourth", "--from", "outside", "--into", str(tmp_path / "other_lab"),
                        env=pythonpath(REPO / "src", REPO, tmp_path), check=True)
    assert "'hydra.searchpath=[pkg://other_lab.conf,pkg://my_lab.conf]' exp=outside_mini,fourth_mini" in elsewhere.stdout


def test_bad_names_are_one_line_errors(tmp_path):
    repo, env = checkout_copy(tmp_path)
    for args, needle in ((["My-Idea"], "not a valid experiment name"), (["x", "--from", "nope"], "experiments.nope"),
                         (["x", "--from", "no_lab.my_idea"], "no experiment package no_lab.my_idea is importable"),
                         (["x", "--from", ".outside"], "no experiment package .outside is importable"),  # a traceback
                         (["x", "--into", str(tmp_path / "Not-A-Package")], "importable package"),
                         (["class", "--into", str(tmp_path / "lab")], "not a valid experiment name"),
                         (["value_norm", "--into", str(tmp_path / "lab")], "experiment 'value_norm' already exists")):
        proc = run_cli("lmplay.new_exp", *args, cwd=repo, env=env)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "lab").exists()  # nothing half-written
    def packages(root: Path) -> set[str]:
        return {p.name for p in (root / "experiments").iterdir()} - {"__pycache__"}

    assert packages(repo) == packages(REPO)  # nothing written by a name it refused


@pytest.mark.parametrize("name, into, message", [
    ("null", "lab", "'null' is not a valid experiment name"),  # exp=null composes as None: a Hydra traceback
    ("true", "lab", "'true' is not a valid experiment name"),  # class True(LMBase): a SyntaxError, half written
    ("block", "lab", "'block' would name the copy's Block, which the code of experiments.gpt2ish already uses"),
    ("expose_runner", "lab", "would name the copy's expose_runner, which the code"),  # rebinds the decorator
    ("idea", "experiments", "a package named 'experiments' would hide lmplay's own"),
])
def test_names_that_would_make_a_broken_copy_are_refused_before_anything_is_written(tmp_path, name, into, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        create(name, into=tmp_path / into)
    assert not (tmp_path / into).exists()


def test_a_copy_takes_the_source_s_subpackages_and_data_files(tmp_path, monkeypatch):
    """Only the top level's .py files were copied: an idea with a layers/ subpackage made a copy whose import of
    it failed at its first run, and new_exp said it had written the copy."""
    create("idea", into=tmp_path / "lab")
    source = tmp_path / "lab" / "idea"
    (source / "layers").mkdir()
    (source / "layers" / "__init__.py").write_text("")
    (source / "layers" / "pos.py").write_text("from lab.idea.model import Idea\n\nSCALE = 0.5\n")
    (source / "table.bin").write_bytes(bytes(range(256)))
    model = source / "model.py"
    model.write_text(model.read_text() + "\nfrom lab.idea.layers import pos  # noqa: E402\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        create("idea2", "lab.idea", into=tmp_path / "lab")
        copy = tmp_path / "lab" / "idea2"
        assert (copy / "layers" / "pos.py").read_text() == "from lab.idea2.model import Idea2\n\nSCALE = 0.5\n"
        assert (copy / "table.bin").read_bytes() == bytes(range(256))
        assert importlib.import_module("lab.idea2.model").pos.SCALE == 0.5
        (source / "scripts").mkdir()
        (source / "scripts" / "old.py").write_text('print "hi"\n')  # a traceback, not a line
        with pytest.raises(ConfigError, match=r"old.py is not valid Python .*: fix it, or move it out of the package"):
            create("idea3", "lab.idea", into=tmp_path / "lab")
        (source / "scripts" / "old.py").unlink()
        (source / "shared").symlink_to(source / "layers")  # rglob leaves a linked dir out: the copy cannot import it
        with pytest.raises(ConfigError, match=r"shared is a link to a directory, which new_exp does not copy"):
            create("idea3", "lab.idea", into=tmp_path / "lab")
    finally:
        for module in [m for m in sys.modules if m == "lab" or m.startswith("lab.")]:
            del sys.modules[module]


def test_a_copy_renames_versions_only_where_they_name_versions(tmp_path):
    """`lradd` is also the module of its layer (lradd.py) and `gpt2` the tokenizer: renaming every whole word made
    copies of both fail at their first run."""
    create("c_lradd", "lradd", into=tmp_path / "lab")
    model = (tmp_path / "lab" / "c_lradd" / "model.py").read_text()
    assert "from lab.c_lradd.lradd import LRAdd" in model and "class CLradd(" in model
    assert (tmp_path / "lab" / "c_lradd" / "lradd.py").exists()
    versions = (tmp_path / "lab" / "c_lradd" / "versions.py").read_text()
    assert '@expose_runner("c_lradd_mini"' in versions and "def c_lradd_mini(" in versions
    create("c_gpt2", "gpt2", into=tmp_path / "lab")
    config = (tmp_path / "lab" / "conf" / "exp" / "c_gpt2.yaml").read_text()
    assert "  - gpt2\n" in config and "_target_: lab.c_gpt2.model.CGpt2" in config
    medium = (tmp_path / "lab" / "conf" / "exp" / "c_gpt2_medium.yaml").read_text()
    assert "  - gpt2_medium\n" in medium and "_target_: lab.c_gpt2.model.CGpt2" in medium
    model = (tmp_path / "lab" / "c_gpt2" / "model.py").read_text()
    assert 'tokenizer: str = "gpt2"' in model and "class CGpt2(" in model


def test_a_copy_of_gpt2_names_its_own_versions_in_what_it_imports_and_compares_with_gpt2(tmp_path, monkeypatch):
    """Its importer stamped `gpt2` into every checkpoint (sampling then ran the original's code), and the sweep
    it suggested pitted the byte-level gpt2ish_mini against 124M GPT-2."""
    create("c3_gpt2", "gpt2", into=tmp_path / "lab3")
    assert '"gpt2' not in (tmp_path / "lab3" / "c3_gpt2" / "versions.py").read_text()
    monkeypatch.syspath_prepend(str(tmp_path))
    import_hf = importlib.import_module("lab3.c3_gpt2.import_hf")
    assert import_hf.version_name({"num_blocks": 24, "embed_dim": 1024, "num_heads": 16, "vocab_size": 50257}) \
        == "c3_gpt2_medium"
    assert import_hf.version_name({"num_blocks": 2, "embed_dim": 32, "num_heads": 4}) == "c3_gpt2"
    assert "exp=gpt2,c3_gpt2 seed=1,2,3" in (tmp_path / "lab3" / "c3_gpt2" / "README.md").read_text()
    assert "exp=value_norm_mini,c4_vn_mini" in new_exp_output("c4_vn", "value_norm", tmp_path / "lab4")


def new_exp_output(name: str, source: str, into: Path) -> str:
    return run_cli("lmplay.new_exp", name, "--from", source, "--into", str(into), check=True).stdout


def test_a_hand_copy_that_kept_the_baseline_s_version_names_never_takes_them(tmp_path):
    """A copy sorting before gpt2ish (experiments/aaa_copy) registered 'test_runner' first, and every test_runner
    checkpoint then loaded as the copy's class; the warning told the baseline to rename."""
    repo, env = checkout_copy(tmp_path)
    copy = repo / "experiments" / "aaa_copy"
    shutil.copytree(repo / "experiments" / "gpt2ish", copy, ignore=shutil.ignore_patterns("__pycache__"))
    for py in copy.glob("*.py"):
        py.write_text(py.read_text().replace("experiments.gpt2ish", "experiments.aaa_copy"))
    probe = "from lmplay.runner import get_runner; print(get_runner('test_runner').model_class.__module__)"
    proc = subprocess.run([sys.executable, "-c", probe], cwd=repo, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "experiments.gpt2ish.model"
    assert "experiments.aaa_copy.versions cannot be imported" in proc.stderr
    assert "give experiments.aaa_copy" in proc.stderr


def test_build_model_refuses_an_argument_the_model_does_not_keep():
    """get_runner(v).build_model(gated_act=...) then save_model wrote a checkpoint without the argument."""
    from experiments.gpt2ish.model import GPT2ish
    from lmplay.runner.basic import BasicModelRunner

    class Gated(GPT2ish):
        def __init__(self, *args, gated_act: str = "silu", **kwargs) -> None:
            super().__init__(*args, **kwargs)

    runner = BasicModelRunner(Gated, {"num_blocks": 1, "embed_dim": 8, "num_heads": 2, "tokenizer": "bytes"})
    with pytest.raises(ConfigError, match=r"^Gated.__init__ takes gated_act but does not pass it on to super"):
        runner.build_model(gated_act="gelu", context_len=8)
    assert runner.build_model(context_len=8).construction_args["num_blocks"] == 1


def test_a_copy_that_cannot_be_written_whole_leaves_nothing_and_is_one_line(tmp_path, monkeypatch):
    """--into a path under a file was a NotADirectoryError traceback, and a disk that filled up halfway left a package
    without its configs, whose name the retry refused as taken."""
    from lmplay.errors import OutputError

    (tmp_path / "afile").write_text("")
    with pytest.raises(OutputError, match=r"^cannot write .*afile/my_lab.* \(Not a directory\): nothing of 'my_idea' "
                                          r"was left behind; choose a writable --into DIR, or free space$"):
        create("my_idea", into=tmp_path / "afile" / "my_lab")
    real_write = Path.write_text

    def full_disk(path, text, *args, **kwargs):
        if path.suffix == ".yaml":
            raise OSError(28, "No space left on device", str(path))
        return real_write(path, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OutputError, match="No space left on device"):
        create("my_idea", into=tmp_path / "lab" / "my_lab")
    assert list(tmp_path.iterdir()) == [tmp_path / "afile"]  # not even the dirs made for it
    monkeypatch.undo()
    assert any(p.name == "model.py" for p in create("my_idea", into=tmp_path / "lab" / "my_lab"))  # the retry
