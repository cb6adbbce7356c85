"""`python -m lmplay.new_exp NAME [--from gpt2ish] [--into DIR]`: start a new experiment as a copy of another.

Copies the source experiment's package (model.py, versions.py, its subpackages and data files) under the new
name, renaming the package, the model class and the registered versions, and gives each version a conf/exp
config that is the source version's with the copy's model class (`defaults: [gpt2ish_mini]`, `model._target_`):
the two differ in the code alone, also after a change to the source's settings. `python -m lmplay.train exp=NAME`
trains the copy at once; then change one thing in its model.py.

Versions are renamed by prefix: gpt2ish -> NAME, gpt2ish_mini -> NAME_mini, and the baseline's tiny
test_runner -> NAME_test. Without --into the copy goes into this checkout's experiments/ and conf/exp/,
where lmplay finds it on its own. With --into DIR it goes into an importable package of your own
(DIR/NAME/ and DIR/conf/exp/), which lmplay reads through `hydra.searchpath=[pkg://<DIR's name>.conf]`.
"""

import argparse
import ast
import contextlib
import importlib.util
import keyword
import re
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path

from lmplay.cli import run_main
from lmplay.config import CONF_DIR, configs_missing
from lmplay.errors import ConfigError, OutputError

CHECKOUT = Path(CONF_DIR).parent  # a clone of lmplay (conf/ beside experiments/), unless installed from a wheel
REPO_EXPERIMENTS = CHECKOUT / "experiments"
RENAMED_VERSIONS = {"test_runner": "test"}  # the baseline's tiny version; its copies end in _test like the ports'
NAME_RE = re.compile(r"[a-z][a-z0-9_]*")
YAML_WORDS = {"null", "none", "true", "false", "yes", "no", "on", "off", "nan", "inf"}  # `exp=null` is not a name
SHADOWED_PACKAGES = {"experiments", "lmplay"}  # an --into package of either name hides lmplay's own
ENTRY_POINTS_TABLE = '[project.entry-points."lmplay.experiments"]'


@dataclass
class Source:
    name: str
    module: str  # the package's import name, e.g. experiments.gpt2ish
    path: Path
    versions: list[str]
    configs: dict[str, Path]  # version -> its conf/exp yaml
    classes: list[str]  # the model classes the configs name


def camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def registered_versions(versions_py: Path) -> list[str]:
    """The names in `@expose_runner("name", ...)` decorators, read without importing the code."""
    versions = []
    for node in ast.walk(ast.parse(versions_py.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for dec in node.decorator_list:
                func = getattr(dec, "func", None)
                if (getattr(func, "id", getattr(func, "attr", None)) == "expose_runner" and dec.args
                        and isinstance(dec.args[0], ast.Constant)):
                    versions.append(dec.args[0].value)
    return versions


def installed_package(name: str) -> str | None:
    """The package of an installed experiment outside lmplay named `name`, from its `lmplay.experiments` entry
    point (`my_lab.relu_idea.versions` -> my_lab.relu_idea), or None."""
    from importlib.metadata import entry_points

    from lmplay.runner.registry import ENTRY_POINT_GROUP

    packages = [ep.value.removesuffix(".versions") for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return next((p for p in packages if p.rsplit(".", 1)[-1] == name), None)


def find_spec(module: str) -> ModuleSpec | None:
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):  # its parent package (`my_lab` of my_lab.my_idea) is not importable, or
        return None  # the name is no module's (`.outside`, `a..b`)


def find_source(name: str, conf_dir: Path) -> Source:
    module = name if "." in name else f"experiments.{name}"
    spec = find_spec(module)
    if (spec is None or not spec.submodule_search_locations) and "." not in name and installed_package(name):
        module = installed_package(name)
        spec = find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = "" if "." in name else f" (one in a package of your own: --from PACKAGE.{name})"
        raise ConfigError(f"--from {name}: no experiment package {module} is importable{hint}")
    path = Path(next(iter(spec.submodule_search_locations)))
    if not (path / "versions.py").is_file():
        raise ConfigError(f"--from {name}: {path} has no versions.py, so it registers no versions to copy")
    versions = registered_versions(path / "versions.py")
    # An external package (made with --into) keeps its configs beside its experiments, in <package>/conf/exp.
    conf_dirs = [path.parent / "conf" / "exp", conf_dir / "exp"]
    configs = {v: next((d / f"{v}.yaml" for d in conf_dirs if (d / f"{v}.yaml").is_file()), None) for v in versions}
    missing = [v for v, p in configs.items() if p is None]
    if not versions or missing:
        raise ConfigError(f"--from {name}: versions without a config in {' or '.join(map(str, conf_dirs))}: "
                          f"{', '.join(missing) or '(none registered)'}")
    classes = sorted({m[1] for p in configs.values()
                      for m in re.finditer(rf"_target_:\s*{re.escape(module)}\.\w+\.(\w+)", p.read_text())})
    return Source(name.rsplit(".", 1)[-1], module, path, versions, configs, classes)


def model_target(src: Source, version: str) -> str:
    """The model class a source version trains (`experiments.gpt2ish.model.GPT2ish`): its config's `_target_`, or
    that of the source version its config builds on (gpt2ish_mini's is gpt2ish's)."""
    text = src.configs[version].read_text()
    if found := re.search(rf"_target_:\s*({re.escape(src.module)}\.[\w.]+)", text):
        return found[1]
    for base in re.findall(r"(?m)^\s*-\s*(\w+)\s*$", text):
        if base in src.configs and base != version:
            return model_target(src, base)
    raise ConfigError(f"--from {src.name}: {src.configs[version]} names no model class of {src.module} "
                      f"(model._target_)")


def rename_map(src: Source, name: str, module: str) -> dict[str, str]:
    """Every identifier to rename: the package's import path, its model classes, its versions."""
    mapping = {src.module: module}
    for cls in src.classes:
        mapping[cls] = camel(name) if len(src.classes) == 1 else camel(name) + cls
    for v in src.versions:
        if v.startswith(src.name):
            mapping[v] = name + v[len(src.name):]
        else:
            mapping[v] = f"{name}_{RENAMED_VERSIONS.get(v, v)}"
    return mapping


def rename(text: str, mapping: dict[str, str], versions: list[str]) -> str:
    """The package path and model classes wherever they stand as whole names; a version's name only where it
    names a version (`@expose_runner("v"`, `def v(`, a config's `- v` default): elsewhere the same word is
    something else, a tokenizer ("gpt2", "gpt2-medium") or a module of the package (experiments.lradd.lradd).
    Longest names first: gpt2ish_mini is never read as gpt2ish + _mini."""
    def alternatives(names) -> str:
        return "|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))

    names = [k for k in mapping if k not in versions]
    text = re.sub(rf"(?<!\w)({alternatives(names)})(?!\w)", lambda m: mapping[m[1]], text)
    for context in (r'(@expose_runner\(\s*")({v})(")', r"(\bdef\s+)({v})(\s*\()", r"(?m)(^\s*-\s*)({v})(\s*$)"):
        text = re.sub(context.format(v=alternatives(versions)), lambda m: m[1] + mapping[m[2]] + m[3], text)
    return text


def replace_docstring(text: str, docstring: str) -> str:
    """Swap a module's opening docstring (the source's description is not the copy's)."""
    tree = ast.parse(text)
    first = tree.body[0] if tree.body else None
    if first and isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str):
        lines = text.splitlines(keepends=True)
        return f'"""{docstring}"""\n' + "".join(lines[first.end_lineno:])
    return f'"""{docstring}"""\n\n' + text


def copied_versions(name: str, source: str) -> dict[str, str]:
    """The copy's versions -> the source's versions they were copied from."""
    src = find_source(source, Path(CONF_DIR))
    mapping = rename_map(src, name, src.module)
    return {mapping[v]: v for v in src.versions}


def sweep_command(copied: dict[str, str], into: Path | None, source_module: str) -> str:
    """The sweep that compares a version of the copy (the laptop-sized one where there is one) with the version
    it was copied from: the same size and tokenizer, one change apart. Configs outside this checkout need Hydra's
    search path: the copy's package's, and the source's where it is a package of its own (my_lab.my_idea)."""
    copy = next((v for v in copied if v.endswith("_mini")), next(iter(copied)))
    packages = [into.name] if into is not None else []
    if not source_module.startswith("experiments.") and source_module.split(".")[0] not in packages:
        packages.append(source_module.split(".")[0])
    entries = ",".join(f"pkg://{p}.conf" for p in packages)
    searchpath = f"'hydra.searchpath=[{entries}]' " if packages else ""
    return f"python -m lmplay.train -m {searchpath}exp={copied[copy]},{copy} seed=1,2,3"


def pyproject(into: Path, name: str) -> str:
    """A minimal pyproject.toml for a package made by --into: `pip install -e` on it registers the experiment,
    so lmplay.generate finds its checkpoints by name (the registry never imports what a checkpoint names)."""
    pkg = into.name
    return (f'[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{pkg}"\nversion = "0.1.0"\n\n'
            f'{ENTRY_POINTS_TABLE}\n{name} = "{pkg}.{name}.versions"\n\n'
            f'[tool.setuptools.packages.find]\ninclude = ["{pkg}*"]\n\n'
            f'[tool.setuptools.package-data]\n"*" = ["*.yaml", "*.md"]\n')


def readme(name: str, src: Source, copied: dict[str, str], into: Path | None) -> str:
    versions = list(copied)
    return (f"# {name}\n\nCopied from `{src.module}` by `python -m lmplay.new_exp`.\n\n"
            "**Idea.** What you change and why it might help.\n\n"
            f"**The change.** Which lines of model.py differ from {src.name}'s.\n\n"
            f"**Run it against {src.name}.**\n\n"
            f"    {sweep_command(copied, into, src.module)}\n"
            "    python -m lmplay.plot multirun/<date>/<time>\n\n"
            "**What to look for.** The loss difference from the baseline at equal tokens, against the spread over "
            "seeds.\n\n" f"Versions: {', '.join(f'`{v}`' for v in versions)}.\n")


def defined_names(files: list[Path]) -> set[str]:
    """The names code defines, imports or uses (a copy's new class or version must not rebind one)."""
    names = set()
    for file in files:
        try:
            tree = ast.parse(file.read_text())
        except (SyntaxError, ValueError) as e:  # a Python 2 script in the package's scripts/
            raise ConfigError(f"{file} is not valid Python ({getattr(e, 'msg', e)}): fix it, or move it out of the "
                              f"package, before copying the package") from None
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.Name):
                names.add(node.id)
    return names


def check_name(name: str, src: Source, mapping: dict[str, str]) -> None:
    """A name that parses as something else in YAML or Python, or whose class or version would rebind a name the
    copied code uses (`block` -> class Block shadows lmplay.modules.Block: a recursion at the first step)."""
    if not NAME_RE.fullmatch(name) or keyword.iskeyword(name) or keyword.iskeyword(camel(name)) or name in YAML_WORDS:
        raise ConfigError(f"'{name}' is not a valid experiment name: use lowercase letters, digits and _, starting "
                          f"with a letter, and no word that Python or YAML reads as something else (true, null, ...)")
    code = [f for f in package_files(src.path) if f.suffix == ".py"]
    classes = {mapping[k] for k in src.classes} & defined_names(code)
    versions = {mapping[k] for k in src.versions} & defined_names([src.path / "versions.py"])  # its defs live there
    clash = sorted((classes | versions) - set(mapping))
    if clash:
        raise ConfigError(f"'{name}' would name the copy's {', '.join(clash)}, which the code of {src.module} already "
                          f"uses for something else; pick another name")


def create(name: str, source: str = "gpt2ish", into: Path | None = None) -> list[Path]:
    """Copy `source` to a new experiment `name`; returns the files written. Everything is made, and the code
    checked, before anything is written."""
    src = find_source(source, Path(CONF_DIR))
    pkg_dir, conf_dir, module = destination(name, into)
    mapping = rename_map(src, name, module)
    check_name(name, src, mapping)
    check_free(name, pkg_dir, conf_dir, [mapping[v] for v in src.versions], into)
    original = {mapping[v]: v for v in src.versions}  # each copied version's source version
    files = copied_code(name, src, mapping, original, pkg_dir)
    files[pkg_dir / "README.md"] = readme(name, src, original, into)
    files |= exp_configs(src, mapping, conf_dir)
    if into is not None:
        for init in (into / "__init__.py", conf_dir / "__init__.py"):  # pkg://<into>.conf needs importable packages
            if not init.exists():
                files[init] = ""
        if not (into.parent / "pyproject.toml").exists():
            files[into.parent / "pyproject.toml"] = pyproject(into, name)
    write_all(files, name)
    return list(files)


def write_all(files: dict[Path, str | bytes], name: str) -> None:
    """Write the copy's files, or none: a copy half written (a full disk, --into a file) left a package whose
    name the retry refused as taken."""
    made: list[Path] = []  # files and dirs this call created, in order
    try:
        for path, text in files.items():
            missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
            path.parent.mkdir(parents=True, exist_ok=True)
            made += reversed(missing)
            path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
            made.append(path)
    except OSError as e:
        made.append(path)  # a file opened before the disk filled up
        for left in reversed(made):
            with contextlib.suppress(OSError):
                left.rmdir() if left.is_dir() else left.unlink()
        raise OutputError(f"cannot write {e.filename or path} ({e.strerror or e}): nothing of '{name}' was left "
                          f"behind; choose a writable --into DIR, or free space") from None


def destination(name: str, into: Path | None) -> tuple[Path, Path, str]:
    """Where the copy goes: its package dir, the conf dir its exp files go in, and its module path."""
    if into is None:
        if not (CHECKOUT / "pyproject.toml").is_file():
            raise ConfigError(f"lmplay is installed from a wheel, not a clone, so '{name}' has no experiments/ to go "
                              f"into: make it a package of your own with --into DIR (e.g. --into ./my_lab)")
        return REPO_EXPERIMENTS / name, Path(CONF_DIR), f"experiments.{name}"
    into = Path(into)
    if not NAME_RE.fullmatch(into.name) or keyword.iskeyword(into.name):
        raise ConfigError(f"--into {into}: the directory's name '{into.name}' must be an importable package "
                          f"name (lowercase letters, digits and _)")
    if into.name in SHADOWED_PACKAGES:
        raise ConfigError(f"--into {into}: a package named '{into.name}' would hide lmplay's own; name the "
                          f"directory after your lab, like my_lab")
    return into / name, into / "conf", f"{into.name}.{name}"


def check_free(name: str, pkg_dir: Path, conf_dir: Path, versions: list[str], into: Path | None) -> None:
    """No file of the copy exists yet, here or (for a copy elsewhere) in this checkout, whose configs come first
    in Hydra's search path: a copy of the name there would win."""
    targets = [pkg_dir, *(conf_dir / "exp" / f"{v}.yaml" for v in versions)]
    if into is not None:
        targets += [REPO_EXPERIMENTS / name, *(Path(CONF_DIR) / "exp" / f"{v}.yaml" for v in versions)]
    taken = [str(p) for p in targets if p.exists()]
    if taken:
        raise ConfigError(f"experiment '{name}' already exists: {', '.join(taken)}; pick another name")


def copied_code(name: str, src: Source, mapping: dict[str, str], original: dict[str, str],
                pkg_dir: Path) -> dict[Path, str | bytes]:
    """The source package's files, subpackages and data included: its .py files renamed for the copy, each
    checked to be valid Python, the others as they are (its README.md is the copy's own, written apart)."""
    docstrings = {"__init__.py": f"{name}: copied from {src.module} by lmplay.new_exp; say here what idea it tries.",
                  "model.py": f"{name}'s model: a copy of {src.module}'s; change one thing and say here what and why.",
                  "versions.py": f"The registered versions of {name}; each has a conf/exp/<name>.yaml."}
    files: dict[Path, str | bytes] = {}
    for file in package_files(src.path):
        relative = file.relative_to(src.path)
        if file.suffix != ".py":
            if relative != Path("README.md"):
                files[pkg_dir / relative] = file.read_bytes()
            continue
        text = rename(file.read_text(), mapping, src.versions)
        text = re.sub(r'(@expose_runner\("(\w+)",\s*description=")',
                      lambda m: f"{m[1]}copied from {original.get(m[2], m[2])}: ", text)
        if str(relative) in docstrings:
            text = replace_docstring(text, docstrings[str(relative)])
        try:
            compile(text, str(pkg_dir / relative), "exec")
        except SyntaxError as e:
            raise ConfigError(f"'{name}' makes {relative} invalid Python ({e.msg}, line {e.lineno}); pick "
                              f"another name") from None
        files[pkg_dir / relative] = text
    return files


def package_files(path: Path) -> list[Path]:
    """Every file of the package at `path`, in its subpackages too; not Python's caches or hidden files: a copy
    of the top level alone left an idea's `layers/` behind, and the copy could not import it. A linked dir is
    refused: its files would be left out (or, copied, be another copy's)."""
    found = [f for f in path.rglob("*")
             if not any(part == "__pycache__" or part.startswith(".") for part in f.relative_to(path).parts)]
    if linked := [f for f in found if f.is_symlink() and f.is_dir()]:
        raise ConfigError(f"--from {path.name}: {linked[0]} is a link to a directory, which new_exp does not copy; "
                          f"make it a directory of the package's own, or copy the package by hand")
    return sorted(f for f in found if f.is_file())


def exp_configs(src: Source, mapping: dict[str, str], conf_dir: Path) -> dict[Path, str]:
    """An exp file for each of the source's versions: its settings (as a default), with the copy's model class."""
    files = {}
    for version in src.configs:
        target = rename(model_target(src, version), mapping, src.versions)
        files[conf_dir / "exp" / f"{mapping[version]}.yaml"] = (
            f"# @package _global_\n"
            f"# {mapping[version]}: {version}'s settings with its copy's model class (lmplay.new_exp):\n"
            f"# the two differ in the code alone, also after a change to {version}.yaml; compare with exp={version}.\n"
            f"defaults:\n  - {version}\nmodel:\n  _target_: {target}\n")
    return files


def main(argv: list[str]) -> None:
    if missing := configs_missing():
        raise ConfigError(missing)
    parser = argparse.ArgumentParser(prog="python -m lmplay.new_exp", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the new experiment's name (its package, and the prefix of its versions)")
    parser.add_argument("--from", dest="source", default="gpt2ish",
                        help="the experiment to copy: a package under experiments/ or an importable package "
                             "(default: gpt2ish, the baseline)")
    parser.add_argument("--into", type=Path, metavar="DIR",
                        help="an importable package directory of your own to hold the experiment and its configs")
    args = parser.parse_args(argv)
    written = create(args.name, args.source, args.into)
    print("\n".join(f"wrote {path}" for path in written))
    model_py = next(p for p in written if p.name == "model.py")
    copied = copied_versions(args.name, args.source)
    source_module = find_source(args.source, Path(CONF_DIR)).module
    if args.into is None:
        print(f"\nnext: change one thing in {model_py}, then compare it with the baseline:\n"
              f"  {sweep_command(copied, None, source_module)}")
        return
    lab, pkg = args.into.resolve().parent, args.into.name
    print(f"\nnext: change one thing in {model_py}; with {lab} on PYTHONPATH (or your package installed):\n"
          f"  {sweep_command(copied, args.into, source_module)}")
    if lab / "pyproject.toml" in [p.resolve() for p in written]:
        print(f"For lmplay.generate to find its checkpoints by name, install the package once: pip install -e {lab}")
    elif ENTRY_POINTS_TABLE in (lab / "pyproject.toml").read_text():  # a second table of the name breaks the file
        print(f"For lmplay.generate to find its checkpoints by name, add this line under {ENTRY_POINTS_TABLE} in "
              f"{lab / 'pyproject.toml'} and reinstall it:\n  {args.name} = \"{pkg}.{args.name}.versions\"")
    else:
        print(f"For lmplay.generate to find its checkpoints by name, register its versions in {lab / 'pyproject.toml'} "
              f"and reinstall it:\n"
              f'  {ENTRY_POINTS_TABLE}\n  {args.name} = "{pkg}.{args.name}.versions"')


def cli() -> None:
    run_main(main)


if __name__ == "__main__":
    cli()
