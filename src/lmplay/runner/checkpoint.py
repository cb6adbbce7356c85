"""The `.lmp` checkpoint: one file, written atomically, loaded without unpickling arbitrary objects.

Layout (FORMAT_VERSION 1): {"format_version", "exp", "seed", "config" (resolved YAML text),
"components": {name: {"state_args", "state"}}, "rng", "scaler" (fp16's GradScaler; empty when off)}; the model's
state holds its "weights" and the digests of its "code" (model_part). Everything in it is tensors, numbers, strings,
lists and dicts, so `torch.load(weights_only=True)` reads it.
"""

import contextlib
import inspect
import os
import pickle
import random
import re
import shutil
import sys
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lmplay.cli import printable
from lmplay.config import NoAliasLoader, seed_in_range
from lmplay.data.corpus import file_digest as data_file_digest
from lmplay.errors import ConfigError, OutputError
from lmplay.files import (
    ASIDE_SUFFIX,
    CHECKPOINT,
    CORRUPTED,
    STATS,
    backup_of,
    checkpoint_file,
    hold_run_dir,
    no_checkpoint,
    release_run_dir,
    set_aside_old_run,
)

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    _, py_state, py_gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": list(py_state), "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)), "numpy_pos": int(np_pos),
        "numpy_gauss": [int(np_has_gauss), float(np_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


class DamagedCheckpoint(ConfigError):
    """A checkpoint that loaded, but whose parts cannot be what lmplay saved (found as the run is built from it):
    the caller, which knows the file, adds the previous checkpoint that loads (`previous_good`), where there is one."""


def damaged(part: str, detail: str) -> DamagedCheckpoint:
    """The error for a checkpoint whose `part` (its settings, progress, ...) cannot be what lmplay saved."""
    return DamagedCheckpoint(f"the checkpoint's {part} are damaged: {detail}; fresh=true starts over")


def set_rng_state(state: dict[str, Any]) -> None:
    try:
        random.setstate((3, tuple(state["python"]), state["python_gauss"]))
        has_gauss, gauss = state["numpy_gauss"]
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], has_gauss,
                             gauss))
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise damaged("random-number states", f"{type(e).__name__}: {e}") from None


PLAIN_LEAVES = (str, bytes, int, float, complex, bool, type(None), torch.dtype, torch.device)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """What load() reads back (torch.load with weights_only=True): dicts, lists, tuples, sets, strings, bytes,
    numbers, None, tensors, dtypes and devices. Anything else (a numpy scalar, a Path, an OmegaConf node) would
    save, then be refused at every load."""
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            check_plain(key, f"{where} key")
            check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple, set, torch.Size):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
    elif type(value) not in PLAIN_LEAVES and not isinstance(value, torch.Tensor):
        raise TypeError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which a checkpoint "
                        f"cannot hold (load refuses all but dicts, lists, tuples, sets, strings, bytes, numbers, "
                        f"None, tensors, dtypes and devices); convert it, e.g. float(x) or str(path)")


def save(checkpoint: dict[str, Any], path: Path, set_run_aside: bool = False) -> Path | None:
    """Temp file + fsync + rename; the file being replaced survives as `<name>.bak`, or, with `set_run_aside`,
    with the whole run in replaced_<time>/ (returned): moved only once the new file is written in full.

    A crash or a failed write at any moment leaves `path` as the old or the new checkpoint, never a torn one.
    """
    check_plain(checkpoint)
    path = Path(path)
    bak = backup_of(path)
    tmp, bak_tmp = path.with_name(path.name + ASIDE_SUFFIX), bak.with_name(bak.name + ASIDE_SUFFIX)
    aside = None
    try:
        tmp.unlink(missing_ok=True)  # a crash's leftover, or a symlink of that name in a run dir from elsewhere:
        with open(tmp, "xb") as f:  # created anew, never written through
            torch.save({"format_version": FORMAT_VERSION, **checkpoint}, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists() and set_run_aside:
            aside = set_aside_old_run(path.parent)
        if path.exists():
            bak_tmp.unlink(missing_ok=True)
            try:
                os.link(path, bak_tmp)
            except OSError:  # a filesystem without hard links (gcsfuse, s3fs, some SMB mounts): a copy instead
                shutil.copyfile(path, bak_tmp)
            os.replace(bak_tmp, bak)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return aside
    except (OSError, RuntimeError) as e:  # torch's writer reports a full disk as a RuntimeError
        for made in (tmp, bak_tmp):
            with contextlib.suppress(OSError):  # what failed may be one of them (its name taken by a dir)
                made.unlink(missing_ok=True)
        reason = getattr(e, "strerror", None) or " ".join(str(e).split())[:200]
        failed = getattr(e, "filename2", None) or getattr(e, "filename", None)  # a rename's target, where it failed
        if failed and Path(failed) != path:  # the temp file, or the .bak
            reason += f": {failed}"
        if not getattr(e, "strerror", None):  # torch's writer names no cause: the usual ones are these
            free = shutil.disk_usage(path.parent).free / 2**20
            reason += f"; is the disk full ({free:,.0f} MiB free there), or a file-size limit (ulimit -f) in the way?"
        kept = f"the replaced run is in {aside}" if aside else "the previous one is intact" if path.is_file() else \
            "none was written before it"
        raise OutputError(f"could not write checkpoint {path} ({reason}); {kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_out(out: Path, replace: bool, asked_by: str = "--replace", in_place: bool = False,
              rotate: bool = False) -> None:
    """OUT of a tool that writes a checkpoint (an import, an export, save_model) is replaced only when asked
    (`asked_by`: --replace, or replace=True in Python): the README's flow imports into outputs/gpt2/model.lmp and
    fine-tunes there, so a second import wrote over the fine-tuned run. `in_place`: OUT is the checkpoint the
    tool read (an export of a run's own model.lmp), which the run goes on from. `rotate`: a second replace keeps
    the file it replaces as `.bak` in place of the older one (save_model, called once an epoch), where a tool's
    is refused (its `.bak` is the file from before the tool)."""
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; name the checkpoint file to write, e.g. {out / 'model.lmp'}")
    if out.exists() and not replace and in_place:
        raise ConfigError(f"{out} exists; write another path, or pass {asked_by} to write over it in place (its run "
                          f"goes on from it, and the old file is kept as {out.name}.bak)")
    if out.exists() and not replace:
        kept = "a run there is set aside in replaced_<time>/" if run_checkpoint(out) else \
            f"the old file is kept as {out.name}.bak"
        raise ConfigError(f"{out} exists (a run fine-tuned there would be lost); write another path, or pass "
                          f"{asked_by} ({kept})")
    bak = backup_of(out)
    if out.exists() and bak.exists() and not run_checkpoint(out) and not rotate:  # a second replace: the kept file
        raise ConfigError(f"{bak} exists, and replacing {out} would write over it; move it away first")


def run_checkpoint(out: Path) -> bool:
    """A run's model.lmp: training wrote its stats, TensorBoard files or settled config beside it."""
    return out.name == CHECKPOINT and any((out.parent / name).exists() for name in (STATS, "tb", ".hydra"))


def write_out(ckpt: dict[str, Any], out: Path, in_place: bool = False) -> Path | None:
    """Write a tool's checkpoint (after `check_out`). A run's checkpoint it replaces is set aside with the run's
    stats, TensorBoard files and its `.bak`, as fresh=true does: kept as `.bak` only, the next training save
    rotated it away, and the replaced run's stats and curves read as the new one's. Returns where they went.
    Written `in_place` (over the checkpoint it was made from: an export of the run's own model), the run goes on
    from it, and only the file is replaced."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot make the directory {out.parent} ({e.strerror}); give another path") from None
    hold_run_dir(out.parent, instead="write another path")  # a run training there would save over this file
    try:
        return save(ckpt, out, set_run_aside=run_checkpoint(out) and not in_place)
    finally:
        release_run_dir(out.parent)


def load(path: Path | str, map_location: str | torch.device = "cpu", model_only: bool = False) -> dict[str, Any]:
    """Read a checkpoint safely: a file torch cannot read as plain data, whose bytes no longer match their
    checksums, or without an experiment name and a model, is a one-line ConfigError that names the previous
    checkpoint that loads. `model_only` (sampling) leaves the training part unchecked: a checkpoint an older
    lmplay wrote without parts a resume needs (its seed, its records) still samples."""
    typed, path = path, checkpoint_file(path)
    if not path.is_file():
        raise no_checkpoint(typed)
    try:
        return read_checked(path, map_location, model_only)
    except ConfigError as e:
        raise ConfigError(f"{e}{previous_good(path)}") from None


def previous_good(path: Path) -> str:
    """Where to go on from when `path` does not load: of its `.bak` and, for a run's model.lmp, the run's stage-end
    checkpoints, the one of the furthest step that loads (a `.bak` damaged too was named, the intact stage's not)."""
    bak = backup_of(path)
    others = [p for p in path.parent.glob("model.*.lmp") if p.name != CORRUPTED] if path.name == CHECKPOINT else []
    found = {p: step for p in others if (step := trained_step(p)) is not None}  # a model saved alone: no run's
    if bak.is_file():
        found[bak] = step if (step := trained_step(bak)) is not None else -1  # a model alone's .bak: its previous
    for candidate in sorted(found, key=found.get, reverse=True):
        try:
            read_checked(candidate)
        except (ConfigError, OSError):
            continue
        how = "rename" if candidate == bak else "copy"
        return f"; the previous checkpoint is {candidate} ({how} it to {path.name} to use it)"
    return ""


def trained_step(path: Path) -> int | None:
    """The step a training checkpoint was saved at, read without its weights (memory-mapped); None for a model
    alone or a file that is no checkpoint."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        step = ckpt["components"]["runner"]["state"]["progress"]["step"]
    except Exception:  # noqa: BLE001 - a damaged file can fail in any layer of torch's reader
        return None
    return step if type(step) is int else None


def read_checked(path: Path, map_location: str | torch.device = "cpu", model_only: bool = False) -> dict[str, Any]:
    if damaged := damaged_record(path):
        raise ConfigError(f"checkpoint {path} is corrupt: its bytes no longer match the checksums saved with them "
                          f"(in {damaged})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols before refusing them
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged file can fail in any layer of torch's reader
        found = isinstance(e, pickle.UnpicklingError) and re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ConfigError(f"checkpoint {path} holds code or objects that are not plain data ({found[1]}); "
                              f"refusing to load it") from None
        raise ConfigError(f"checkpoint {path} is truncated or corrupt, or not a checkpoint at all "
                          f"({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt:
        raise ConfigError(f"{path} is not an lmplay checkpoint{import_hint(path, ckpt)}")
    if missing := missing_part(ckpt):
        raise ConfigError(f"checkpoint {path} is incomplete: it has no {missing}")
    if not model_only and "runner" in ckpt["components"] and (missing := missing_training_part(ckpt)):
        raise ConfigError(f"checkpoint {path} has no {missing}, which a resume needs: an older lmplay wrote it, or it "
                          f"is damaged; its model still samples (lmplay.generate, load_model)")
    return check_format_version(ckpt, path)


def import_hint(path: Path, ckpt: Any) -> str:
    """What to do with a Hugging Face GPT-2's weights (a .safetensors file, or a state dict of tensors) given as a
    checkpoint: import them first."""
    gpt2 = isinstance(ckpt, dict) and any(isinstance(k, str) and k.endswith("wte.weight") for k in ckpt)
    if Path(path).suffix != ".safetensors" and not gpt2:
        return ""
    return (f" but weights alone (Hugging Face's GPT-2?), which import into one: "
            f"python -m experiments.gpt2.import_hf {path} OUT.lmp")


def damaged_record(path: Path) -> str | None:
    """The first record of torch's zip file whose bytes fail their CRC-32, or None. torch writes the checksums
    but `torch.load` never checks them, so a flipped bit (a bad disk, a partial copy) would load as a wrong
    weight. A file that is not a zip is left to torch.load, which says what it is."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return None
    with archive:
        for record in archive.infolist():
            if record.CRC == 0 and record.file_size:  # saved with torch's checksums off: nothing to check
                continue
            try:
                with archive.open(record) as data:
                    while data.read(1 << 24):
                        pass
            except (zipfile.BadZipFile, OSError, EOFError):
                return record.filename
    return None


def model_class(ckpt: dict[str, Any]) -> str | None:
    """The dotted model class the checkpoint's config names (`model._target_`), read as text: what the registry
    is searched for when the experiment's name is one of the user's own configs. Never imported from here. Read
    as plain YAML: never resolved (a crafted `${oc.env:SECRET}` would print the secret in the error naming the
    class), and without aliases (OmegaConf copied a crafted chain of 9 aliases of 9 until memory ran out)."""
    try:
        config = ckpt.get("config")
        config = yaml.load(config, Loader=NoAliasLoader) if isinstance(config, str) else config
        model = config.get("model") if isinstance(config, dict) else None
        target = model.get("_target_") if isinstance(model, dict) else None
    except Exception:  # noqa: BLE001 - a damaged config names no class; the caller's error says the name
        return None
    return target if isinstance(target, str) else None


def code_digests(model: torch.nn.Module) -> dict[str, str]:
    """A digest of each source file the model's code comes from, by module (experiments.lradd.model, and the layers
    it builds from, like experiments.lradd.lradd): the registry finds a checkpoint's class by name alone, so a
    checkpoint keeps these to tell when the code changed under it. Each layer's base classes count too: an idea's
    attention subclassing lmplay.modules' runs that file's forward. torch's own classes are left out."""
    classes = {cls for m in model.modules() for cls in type(m).__mro__}
    digests = {}
    for cls in classes:
        if cls.__module__.split(".")[0] in ("torch", "builtins"):
            continue
        try:
            digests[cls.__module__] = file_digest(Path(inspect.getsourcefile(cls) or ""))
        except (OSError, TypeError):  # a class made at run time (a notebook's), or its file gone
            continue
    return dict(sorted((package_digests(type(model)) | digests).items()))


def package_digests(model_class: type) -> dict[str, str]:
    """A digest of each module of the model's experiment package (the one with a versions.py) that is imported, but
    versions.py, which registers versions and builds nothing: a helper module of an idea's that defines no class
    (an `apply_rotary` in rope.py) changes the model too, and seeds trained before and after an edit of it were
    averaged as one model. Imported ones only: a tool beside the model (gpt2's import_hf.py) or a scratch file is
    no part of it."""
    package = experiment_package(model_class)
    if package is None:
        return {}
    digests = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if (name == package or name.startswith(f"{package}.")) and name != f"{package}.versions" \
                and isinstance(file, str) and file.endswith(".py"):
            with contextlib.suppress(OSError):  # its file gone since it was imported
                digests[name] = file_digest(Path(file))
    return digests


def package_file(package: str, module: str) -> Path | None:
    """The source file of `module`, a module of the imported `package`, found without importing it (a name read
    from a checkpoint is never imported); None where there is none."""
    parts = module.split(".")[package.count(".") + 1:]
    if not all(part.isidentifier() for part in parts):
        return None
    root = Path(sys.modules[package].__file__).parent
    candidates = [root.joinpath(*parts).with_suffix(".py")] if parts else []
    return next((f for f in (*candidates, root.joinpath(*parts, "__init__.py")) if f.is_file()), None)


def file_digest(file: Path) -> str:
    """A source file's digest, as checkpoints keep it: the one data files are keyed by, shortened."""
    return data_file_digest(file)[:16]


def experiment_package(model_class: type) -> str | None:
    """The experiment package (a dir with a versions.py) the model class's module lies in, if any."""
    parts = model_class.__module__.split(".")
    for end in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:end]))
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and (Path(file).parent / "versions.py").is_file():
            return ".".join(parts[:end])
    return None


def model_part(model: torch.nn.Module) -> dict[str, Any]:
    """A checkpoint's model component: construction arguments, weights, and the digests of its code."""
    # the parameter count: the weights also hold persistent buffers (a causal mask, a rotary table), which
    # lmplay.inspect would otherwise count as parameters
    return {"state_args": dict(model.construction_args),
            "state": {"weights": model.state_dict(), "code": code_digests(model),
                      "parameters": sum(p.numel() for p in model.parameters())}}


def saved_digests(state: dict[str, Any]) -> dict[str, str]:
    """The code digests of a checkpoint's model state, by module: {} for one saved before digests, and only text
    (a checkpoint is data)."""
    saved = state.get("code")
    return {m: d for m, d in saved.items() if isinstance(m, str) and isinstance(d, str)} if isinstance(saved, dict) \
        else {}


def changed_code(model: torch.nn.Module, state: dict[str, Any], other_code: bool = False) -> list[str]:
    """The source files (or modules, where gone) of the model's code that changed since the checkpoint's model state
    was saved; none for a checkpoint that holds no digests. A file the model uses now and did not then is no change
    of its own: the saved file that now builds from it changed (and a checkpoint saved before base classes had
    digests names none of them)."""
    saved, now, package = saved_digests(state), code_digests(model), experiment_package(type(model))
    in_package = {m for m in saved.keys() - now.keys() if package and (m == package or m.startswith(f"{package}."))}
    for module in in_package:  # one a forward imports inside a function, not imported yet: read from its file
        if (file := package_file(package, module)) is not None:
            now[module] = file_digest(file)
    gone = saved.keys() - now.keys()
    # a file that only moved (lmplay.modules.lradd is experiments.lradd.lradd now) is unchanged, and a file of the
    # experiment's package deleted since (or not installed here) is no change of what the model runs
    # (`other_code`: the weights load as another experiment, load_as, whose code never held the saved modules)
    same = {m for m in gone if other_code or saved[m] in now.values() or m in in_package}
    # a checkpoint's module names are its text: an escape sequence among them reached the terminal in the note
    return [printable(where(m)) for m in sorted(m for m in saved if m not in same and saved[m] != now.get(m))]


def where(module: str) -> str:
    """A module's source file, for a message, where it is imported already; else its name. A name read from a
    checkpoint is never imported: importing runs a module's code (a checkpoint naming `evil` ran ./evil.py)."""
    try:
        return inspect.getsourcefile(sys.modules[module]) or module
    except Exception:  # noqa: BLE001 - not imported, or a module without a source file: its name says enough
        return module


def check_weights_fit(build: Callable[[], torch.nn.Module], state_args: dict[str, Any], state: dict[str, Any],
                      what: str, fix: str = "", other_model: str | None = None) -> None:
    """Whether a checkpoint's weights (`state`, its model's) fit the model its arguments build, before that model
    takes memory: a crafted num_blocks=100000 built modules for minutes and an embed_dim asked for gigabytes, in
    generate and on resume alike. First its num_blocks against the blocks its weights hold; then the model built on
    the meta device, which takes none (the caller's random state is kept), against the weights' shapes. One line
    naming `what` where they do not fit, and which code changed since, where some did, then `fix`; or, where the
    model is `other_model` (load_as: another experiment's), that they do not fit it."""
    weights = state["weights"]
    saved = len({m[1] for name in weights if (m := re.match(r"blocks\.(\d+)\.", name))})  # not the top index:
    if isinstance(n := state_args.get("num_blocks"), int) and n > max(256, 16 * saved):  # forgeable. Fewer than
        raise ConfigError(f"{what} do not fit its arguments (num_blocks={n}, weights of {saved} blocks): a damaged "
                          f"checkpoint{fix}")  # saved is an idea's extra block; more, one that shares its blocks'
        # weights (16x: ALBERT's 12 layers of one)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        planned = build()
    shapes = {name: t.shape for name, t in planned.state_dict().items()}
    wrong = [f"{name} {list(w.shape)} for {list(shapes[name])}" for name, w in weights.items()
             if name in shapes and w.shape != shapes[name]]
    wrong += [f"missing {name}" for name in shapes if name not in weights][:2]
    wrong += [f"unexpected {name}" for name in weights if name not in shapes][:2]
    if wrong and other_model:
        raise ConfigError(f"{what} do not fit {other_model} ({'; '.join(wrong[:2])}){fix}")
    if wrong and (changed := changed_code(planned, state)):
        raise ConfigError(f"{what} do not fit the installed code ({'; '.join(wrong[:2])}): {', '.join(changed)} "
                          f"changed since it was saved{fix}")
    if wrong:
        raise ConfigError(f"{what} do not fit its arguments ({'; '.join(wrong[:2])}): a damaged checkpoint{fix}")


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], what: str, fix: str = "") -> None:
    """`model.load_state_dict(weights)`; weights that do not fit are one line: `what` names them, then torch's
    first two complaints (missing, unexpected or mis-shaped tensors, each cut short: a crafted checkpoint's list of
    missing keys was 6.8 MB on one line), then `fix`."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        detail = " ".join(line.strip()[:300] for line in str(e).splitlines()[1:3])
        raise ConfigError(f"{what} do not fit {type(model).__name__} ({detail}){fix}") from None


def missing_part(ckpt: dict[str, Any]) -> str | None:
    """The first part of its model every checkpoint must hold (an imported model has no optimizer or progress yet)
    that this one lacks or holds in the wrong shape; None when all are there."""
    components = ckpt.get("components")
    model = components.get("model") if isinstance(components, dict) else None
    state = model.get("state") if isinstance(model, dict) else None
    needed = {"integer format_version": isinstance(ckpt["format_version"], int),
              "experiment name (exp)": isinstance(ckpt.get("exp"), str),
              "components": isinstance(components, dict),
              "model arguments": isinstance(model, dict) and isinstance(model.get("state_args"), dict),
              "model weights": isinstance(state, dict) and isinstance(state.get("weights"), dict)
              and all(isinstance(w, torch.Tensor) for w in state["weights"].values()),
              "weight names (strings)": isinstance(state, dict) and isinstance(state.get("weights"), dict)
              and all(isinstance(k, str) for k in state["weights"])}
    return next((part for part, present in needed.items() if not present), None)


COUNTERS = ("step", "samples", "tokens", "stage_step")


def missing_training_part(ckpt: dict[str, Any]) -> str | None:
    """What a checkpoint of a training run (one with a runner part) must hold besides the model: checked here, so
    that a damaged one is one line wherever it is read (a resume, inspect), not a KeyError, and never resumed
    with fresh optimizer moments or the data from its first row in silence."""
    def state(name: str) -> dict[str, Any]:
        part = ckpt["components"].get(name)
        return part["state"] if isinstance(part, dict) and isinstance(part.get("state"), dict) else {}

    def count(value: Any) -> bool:  # 2**200 tokens trained on, then failed in TensorBoard's writer
        return type(value) is int and 0 <= value < 2**62

    def classes_named(name: str) -> bool:
        part = ckpt["components"].get(name)
        args = part.get("state_args") if isinstance(part, dict) else None
        return not isinstance(args, dict) or isinstance(args.get("_target_", ""), str)

    def counters(progress: Any) -> bool:
        if not isinstance(progress, dict) or not all(count(progress.get(k)) for k in COUNTERS):
            return False
        stage_count, stage_total = progress.get("stage_count"), progress.get("stage_total")
        return ((stage_count is None or isinstance(stage_count, dict) and count(stage_count.get("steps")))
                and (stage_total is None or count(stage_total)))

    progress, optimizer = state("runner").get("progress"), state("optimizers").get("optimizer")
    position = state("curriculum").get("position")
    needed = {"integer seed": seed_in_range(ckpt.get("seed")),
              "progress counters (non-negative integers)": counters(progress),
              "stats records": isinstance(state("runner").get("records_json"), str),
              "data position": isinstance(position, dict) and isinstance(position.get("feed"), dict)
              and isinstance(position.get("batcher"), dict) and isinstance(position.get("data"), str)
              and isinstance(position.get("stage_name"), str) and count(position.get("steps"))
              and count(position.get("tokens")),
              "optimizer state": optimizer is None and "optimizer" in state("optimizers")  # left out on purpose
              or isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
              and isinstance(optimizer.get("param_groups"), list),
              "optimizer and lr schedule classes (dotted names)": classes_named("optimizers")
              and classes_named("lr_schedulers")}
    return next((part for part, present in needed.items() if not present), None)


def check_format_version(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """A checkpoint this lmplay can read. Where a later format changes the layout, older ones are brought up
    to it here."""
    if ckpt["format_version"] > FORMAT_VERSION:
        raise ConfigError(f"checkpoint {path} has format {ckpt['format_version']}, newer than this lmplay "
                          f"({FORMAT_VERSION}); upgrade lmplay")
    return ckpt
