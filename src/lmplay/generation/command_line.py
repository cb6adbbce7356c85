"""generate's command line as Hydra overrides: bare words and every `prompt=` become one `prompt=` override, and
the values that are text (prompts, paths) are quoted as text, so a prompt holding commas, quotes or `=` stays one
string instead of failing in Hydra's parser or becoming a sweep."""

import re
from collections.abc import Sequence

from lmplay.cli import HYDRA_VALUE_FLAGS, fail, quote
from lmplay.config import root_config

TEXT_KEYS = ("prompt", "checkpoint", "prompt_file")  # values that are text (or null), never Hydra syntax
HYDRA_FLAGS_WITH_VALUE = HYDRA_VALUE_FLAGS - {"--info", "-i"}  # whose value is optional: INFO_CHOICES
INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def as_hydra_value(value: str) -> str:
    """A typed value as Hydra should read it: kept when already quoted, a [list] with each unquoted item quoted,
    else quoted as plain text, so `prompt=It's late, Bob` stays one string instead of failing or becoming a sweep."""
    if value.startswith("[") and value.endswith("]"):
        return quoted_items(value)
    if re.fullmatch(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", value):  # one quoted string, as Hydra quotes
        return value  # (`"Hi," she said. "Bye"` is not one: it is text holding quotes)
    return quote(value)


def quoted_items(value: str) -> str:
    """`[1e3, true, 'x,y']` as `['1e3','true','x,y']`: Hydra reads an unquoted item as a number or a bool. Items
    are split at the commas outside quotes; a list Hydra cannot read is left for Hydra to name."""
    items, item, inside, escaped = [], "", None, False
    for char in value[1:-1]:
        if escaped:  # Hydra's `\,` outside quotes: the character itself
            item, escaped = item + char, False
            continue
        if char == "\\":
            escaped = True
            if inside:
                item += char
            continue
        if inside:
            inside = None if char == inside else inside
        elif char in "'\"":
            inside = char
        elif char in "[]":
            return value
        elif char == ",":
            items.append(item)
            item = ""
            continue
        item += char
    items.append(item)
    stripped = [i.strip() for i in items]
    if inside or escaped or not all(stripped):  # `[a, ]`: an empty item is Hydra's to refuse, not an empty prompt
        return value
    return "[" + ",".join(i if i[:1] in ("'", '"') else quote(i, always=True) for i in stripped) + "]"


def takes_value(flag: str, rest: list[str]) -> bool:
    """Whether Hydra reads the next word as this flag's value (`--cfg job`), so it is no prompt."""
    if not rest:
        return False
    return flag in HYDRA_FLAGS_WITH_VALUE or (flag in ("--info", "-i") and rest[0] in INFO_CHOICES)


def is_override(key: str) -> bool:
    """Whether `key=...` on generate's command line is a setting, or a prompt that holds `=` (`x = 1 + 2`): a name
    is a setting, and an unknown one an error (`max_length=20`, `temp=0.5`), never a prompt sampled in silence."""
    return bool(re.fullmatch(r"[A-Za-z_][\w./-]*", key.lstrip("+~")))  # top-k=5: a typo of top_k


def normalize(argv: Sequence[str]) -> list[str]:
    """Hydra overrides from a command line: bare words and every `prompt=` become one `prompt=` override
    (a list when there are several), where the first prompt stood; checkpoint and file paths are quoted as text."""
    prompts, out, args, at = [], [], list(argv), None
    while args:
        arg = args.pop(0)
        key, eq, value = arg.partition("=")
        if takes_value(arg, args):
            out += [arg, args.pop(0)]
        elif eq and key == "prompt":
            prompts.append(as_hydra_value(value))
        elif eq and key in TEXT_KEYS:
            out.append(f"{key}={value if value == 'null' else as_hydra_value(value)}")
        elif re.fullmatch(r"~[A-Za-z_][\w.]*", key):  # Hydra's deletion (`~seed`, `~seed=1`): not a prompt
            what = (f"would delete generate's setting {key[1:]}: leave it out for its default"
                    if key[1:].split(".")[0] in root_config("generate").keys()  # noqa: SIM118 - `in` skips ??? keys
                    else "names no setting of generate")
            fail(f"{arg} {what}, or type prompt='{arg}' to sample the text")
        elif (not eq or not is_override(key)) and not arg.startswith("-"):
            prompts.append(quote(arg))
        elif eq and re.split(r"[./]", key.lstrip("+~"))[0] not in (*root_config("generate"), "hydra"):
            out.append(f"{key}={quote(value)}")  # unknown: an error naming it, not Hydra's parse error on `mc^2`
        else:
            out.append(arg)
        if prompts and at is None:  # before any flag that follows: Hydra takes its overrides in one run of words
            at = len(out)
    if len(prompts) == 1:
        out.insert(at, f"prompt={prompts[0]}")
    elif prompts:
        out.insert(at, "prompt=[" + ",".join(p[1:-1] if p.startswith("[") else p for p in prompts) + "]")
    return out
