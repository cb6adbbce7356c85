"""lmplay's config tree: where it lives, its root file, and reading what a command line typed into it."""

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from lmplay.errors import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig

# The repo's conf/ is linked from src/lmplay/conf so that a wheel (`pip install .`, `pip install git+URL`) ships it
# inside the package; where git checked the link out as a plain file (Windows without symlinks), the checkout's
# conf/ is read directly.
_IN_PACKAGE = Path(__file__).parent / "conf"
CONF_DIR = str(_IN_PACKAGE.resolve() if _IN_PACKAGE.is_dir() else Path(__file__).resolve().parents[2] / "conf")


@functools.cache
def top_level_aliases() -> frozenset[str]:
    """The top-level keys that lmplay's group files read as `${key}` (lr, batch_size, warmup_fraction, ...): each
    is a key of the group that reads it, typed under a shorter name."""
    return frozenset(name for path in Path(CONF_DIR).glob("*/*.yaml") if path.parent.name != "hydra"
                     for name in re.findall(r"\$\{(\w+)\}", path.read_text()))


@functools.cache
def group_file_keys(group: str, target: str) -> tuple[str, ...] | None:
    """The keys of lmplay's conf/<group>/ file of class `target` (sgd.yaml's for torch.optim.SGD), in its order, or
    None where no file names that class."""
    for path in sorted(Path(CONF_DIR, group).glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        if isinstance(config, dict) and config.get("_target_") == target:
            return tuple(config)
    return None


class NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases (`*name`), which Hydra and OmegaConf never write: a crafted .hydra/config.yaml of 772
    bytes expanded through them into 10^8 keys and held lmplay.plot and the sweep summary for good, and a checkpoint's
    config ran generate out of memory."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("it uses YAML aliases (*name), which Hydra never writes")
        return super().compose_node(parent, index)

    def as_written(self, node: yaml.ScalarNode) -> str:
        """A date (`when: 2020-01-01`) or !!binary as the text it is: PyYAML's date and bytes were no JSON, and
        the plots and the sweep summary ended in a TypeError."""
        return self.construct_scalar(node)

    def refused(self, node: yaml.Node) -> None:
        raise yaml.YAMLError(f"it holds a YAML {node.tag.rpartition(':')[2]} (line {node.start_mark.line + 1}), "
                             f"which Hydra never writes")


for _tag in ("timestamp", "binary"):
    NoAliasLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", NoAliasLoader.as_written)
for _tag in ("set", "omap", "pairs"):
    NoAliasLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", NoAliasLoader.refused)


def configs_missing() -> str | None:
    """Why lmplay's conf/ is not there, or None: a copy built where git stored the src/lmplay/conf link as a file."""
    if Path(CONF_DIR).is_dir():
        return None
    return (f"lmplay's configs are missing ({CONF_DIR}): this copy was built from a clone whose src/lmplay/conf link "
            f"git stored as a plain file (Windows without symlinks); reinstall from a clone made with "
            f"`git clone -c core.symlinks=true`, or run from the clone with pip install -e")


@functools.cache
def root_config(name: str = "config") -> "DictConfig":
    """conf/<name>.yaml as written (its own keys and defaults, before any group or override); read once."""
    from omegaconf import OmegaConf

    return OmegaConf.load(Path(CONF_DIR) / f"{name}.yaml")


def override_key(override: str) -> str:
    """`+optimizer.lr=1e-3` -> `optimizer.lr`."""
    return override.split("=", 1)[0].lstrip("+~")


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The text typed for `key` (the last one, as Hydra takes it), or None."""
    return next((o.split("=", 1)[1] for o in reversed(overrides) if override_key(o) == key and "=" in o), None)


RUN_SET_MODEL_KEYS = ("tokenizer", "context_len", "vocab_size")  # model arguments the run passes, not model.*


def not_the_models_to_set(key: str) -> str:
    """Why `model.KEY` (one of RUN_SET_MODEL_KEYS) cannot be typed, and what sets it."""
    fix = ("it follows from the tokenizer (vocab_multiple=64 pads it)" if key == "vocab_size"
           else f"type {key}=... (a top-level key) instead")
    return f"model.{key} is not the model group's to set: {fix}"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one of dotted keys: {"triton": {"cudagraphs": True}} -> {"triton.cudagraphs": True}; an
    empty mapping is a value of its own."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_value_types(cfg: "DictConfig", name: str, nullable: dict[str, type] | None = None) -> None:
    """Each top-level true/false, integer or number key of conf/<name>.yaml holds a value of that kind (keys in
    `nullable`, which default to null or accept it, hold the kind given or null). Hydra reads `fresh=no` as
    the string 'no', which Python takes as true: for `fresh` that would wipe the run it meant to keep."""
    from omegaconf import OmegaConf

    nullable = nullable or {}
    defaults = OmegaConf.to_container(root_config(name), resolve=False)
    for key, default in defaults.items():
        kind = nullable.get(key, type(default))
        if kind not in (bool, int, float) or key not in cfg:
            continue
        value = cfg[key]
        check_kind(key, value, kind, key in nullable)
        if key == "seed":
            check_seed(value)


def check_kind(key: str, value: object, kind: type, nullable: bool = False) -> None:
    """`value` is a true/false (kind bool), an integer or a number (float), or null where `nullable`: a quoted
    'false' is a string, which Python takes as true."""
    if value is None and nullable:
        return
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
        what = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        shown = "null" if value is None else repr(value)  # as typed: seed=null said seed=None
        raise ConfigError(f"{key}={shown} should be {what}" + (" (or null)" if nullable else "")
                          + number_as_text_hint(key, value))


def number_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number_as_text_hint(key: str, value: object) -> str:
    """What to add to "should be a number" for a number given as text: `lr=${oc.env:LR}` reads the variable as text."""
    if not isinstance(value, str) or not (number_text(value) or value.strip().lower() in ("true", "false")):
        return ""
    return (f": it is text, as quotes or ${{oc.env:...}} make it; '{key}=\"${{oc.decode:${{oc.env:VAR}}}}\"' reads an "
            f"environment variable as the value it spells")


def seed_in_range(seed: object) -> bool:
    """An integer torch.manual_seed takes: the one rule for a typed seed and a checkpoint's."""
    return isinstance(seed, int) and not isinstance(seed, bool) and -2**63 <= seed < 2**64


def check_seed(seed: object) -> None:
    """A seed torch's generators take: an integer of 64 bits (or None, for a fresh draw)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed={seed!r} should be an integer (or null)")
    if seed is not None and not seed_in_range(seed):
        raise ConfigError(f"seed={seed} is out of torch's range, -2**63 to 2**64-1; use a smaller one, e.g. seed=1")
