"""What the Hydra apps share: the config dir, the seed's flag forms, and one-line errors for bad overrides."""

import difflib
import io
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from lmplay.errors import ConfigError, LmplayError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def translate_flags(argv: Sequence[str], flags: dict[str, str], switches: dict[str, str]) -> list[str]:
    """Turn the original's `--batch-size 50` / `--amp` forms into Hydra overrides (`batch_size=50`, `amp=true`)."""
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        name, _, inline = arg.partition("=")
        if name in switches:
            out.append(f"{switches[name]}=true")
        elif name in flags:
            if not inline and not args:
                fail(f"{name} needs a value")
            value = inline or args.pop(0)
            out.append(f"{flags[name]}={quote(value)}")
        else:
            out.append(arg)
    return out


def quote(value: str) -> str:
    """Quote a value for Hydra's override grammar when it holds spaces or special characters."""
    if value and all(c.isalnum() or c in "._-/:" for c in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


# Flags whose work Hydra does itself (help, sweeps, printing the config): their output is not held back.
HYDRA_ONLY = ("-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "-i")
_held: list[tuple[TextIO, io.StringIO]] = []  # (real stderr, what Hydra wrote) while Hydra composes


def run_hydra_app(main: Callable[[], object], argv: list[str], config_name: str) -> None:
    """Run a @hydra.main app on argv; a bad override exits with one line and touches no run dir.

    Hydra reports a bad override in several lines; so its stderr is held until the job starts (the app
    calls `job_started`) and, only when Hydra gave up before that, the config is composed again here to
    name the bad value in one line. Composing on failure only keeps ~0.2 s off every good start.
    """
    sys.argv = [sys.argv[0], *argv]
    if any(a in HYDRA_ONLY or a.startswith(("--cfg", "-c")) for a in argv):
        main()
        return
    _held.append((sys.stderr, io.StringIO()))
    sys.stderr = _held[-1][1]
    try:
        main()
    except SystemExit as e:
        if e.code and _held:  # Hydra gave up before the job started
            hydra_said = release_stderr()
            precheck([a for a in argv if not a.startswith("-")], config_name)  # exits when it finds the cause
            sys.stderr.write(hydra_said)
        raise
    finally:
        job_started()


def job_started() -> None:
    """The job has begun: stderr is the terminal again, with what Hydra wrote before (warnings)."""
    if _held:
        hydra_said = release_stderr()  # first: `sys.stderr.write(release_stderr())` would write to the buffer
        sys.stderr.write(hydra_said)


def release_stderr() -> str:
    """Give stderr back; returns what was written to it meanwhile."""
    real, held = _held.pop()
    sys.stderr = real
    return held.getvalue()


def precheck(overrides: list[str], config_name: str) -> None:
    """Compose the config with Hydra's compose API and exit with one line naming what is wrong, if anything."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    # hydra.searchpath stays: it decides which configs exist (an external package's exp=...).
    plain = [o for o in overrides if not o.startswith("hydra") or o.startswith("hydra.searchpath")]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            compose(config_name=config_name, overrides=plain)
    except MissingConfigException as e:
        missing = re.search(r"Could not find '(.+)/([^/']+)'", str(e))
        if missing and e.options:
            fail(f"{missing[1]}={missing[2]} is unknown; available: {', '.join(sorted(e.options))}")
        fail(str(e).splitlines()[0])
    except (ConfigCompositionException, HydraException, OmegaConfBaseException) as e:
        fail(one_line(e, plain, config_name))


def one_line(e: Exception, overrides: list[str], config_name: str = "config") -> str:
    cause = e.__cause__ or e
    text = " ".join(str(cause).split("\n")[0].split())
    key = getattr(cause, "full_key", None) or getattr(cause, "key", None)
    if key and "not in struct" in str(cause):
        return unknown_key(str(key), every_key(config_name))
    return f"{text} (overrides: {' '.join(overrides)})"


def unknown_key(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f"unknown key '{key}'{f' (did you mean {close[0]}?)' if close else ''}; see `--cfg job` for every key"


def every_key(config_name: str) -> list[str]:
    """Every dotted key of the default config (composed before any Hydra app runs)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = OmegaConf.to_container(compose(config_name=config_name), resolve=False)
    keys, stack = [], [("", cfg)]
    while stack:
        prefix, node = stack.pop()
        for k, v in node.items():
            keys.append(prefix + k)
            if isinstance(v, dict):
                stack.append((f"{prefix}{k}.", v))
    return keys


def reject_added_keys(cfg: Any, config_name: str, set_by_groups: Iterable[str] = ()) -> None:
    """A misspelled key added with `+key=value` (or `++`) at the top level, which Hydra's struct check lets
    through and nothing would read, is a ConfigError like any other misspelled key. Known: the root config
    file's keys, the config groups, and `set_by_groups` (keys such as `model` that a group's file sets)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    known = set(OmegaConf.load(Path(CONF_DIR) / f"{config_name}.yaml")) - {"defaults", "hydra"}
    known |= set(HydraConfig.get().runtime.choices) | set(set_by_groups)
    for key in cfg:
        if key not in known:
            raise ConfigError(unknown_key(key, sorted(known)))


def report(error: LmplayError) -> None:
    fail(str(error), error.exit_code)


def run_main(main: Callable[[list[str]], object]) -> None:
    """Run a plain (argparse) CLI's `main(argv)`; an LmplayError becomes one line and its exit code."""
    try:
        main(sys.argv[1:])
    except LmplayError as e:
        report(e)
