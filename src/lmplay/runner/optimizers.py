"""Parameter groups for the optimizer: no weight decay for biases, norms, embeddings and any parameter
marked `param.skip_weight_decay = True`; frozen parameters by name pattern.

A norm is known by its shape as nanoGPT knows it: any parameter of fewer than two dimensions (a hand-written
RMSNorm's scale, a learned gain) takes no decay, as torch's norm classes' do; decayed, an idea's own norm shrank
its gains toward 0 while the baseline's stayed, and the comparison charged that to the idea."""

import fnmatch
from collections.abc import Sequence

from torch import nn

from lmplay.errors import ConfigError

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def no_decay_names(model: nn.Module, by_shape: bool = True) -> set[str]:
    """`by_shape=False`: the rule before 2026-11-28, which decayed a hand-written norm's scale (regrouped_state)."""
    names = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if (isinstance(module, (nn.Embedding, *NORMS)) or param_name == "bias" or by_shape and param.dim() < 2
                    or getattr(param, "skip_weight_decay", False)):
                names.add(full)
    return names


def grouped_names(model: nn.Module, by_shape: bool = True) -> list[list[str]]:
    """The trained parameters' names in param_groups' order: decayed, then not."""
    skip = no_decay_names(model, by_shape)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return [[n for n in names if n not in skip], [n for n in names if n in skip]]


def regrouped_state(saved: dict, model: nn.Module) -> dict | None:
    """A checkpoint's optimizer state, grouped by the earlier rule (by_shape=False), moved into today's groups: each
    parameter's moments go with it. None where the earlier rule does not give the saved groups either."""
    old, new = grouped_names(model, by_shape=False), grouped_names(model)
    if [len(g["params"]) for g in saved["param_groups"]] != [len(g) for g in old] or old == new:
        return None
    saved_id = dict(zip((n for g in old for n in g), (i for g in saved["param_groups"] for i in g["params"])))
    order = [n for g in new for n in g]
    state = {i: saved["state"][saved_id[n]] for i, n in enumerate(order) if saved_id[n] in saved["state"]}
    starts = [0, len(new[0])]
    groups = [{**group, "params": list(range(start, start + len(names)))}
              for group, start, names in zip(saved["param_groups"], starts, new)]
    return {"state": state, "param_groups": groups}


def freeze(model: nn.Module, patterns: Sequence[str]) -> list[str]:
    """requires_grad=False for parameters whose name matches any fnmatch pattern; returns their names. A
    pattern that matches nothing is a typo that would train what it meant to freeze: an error."""
    names = [n for n, _ in model.named_parameters()]
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"optimizer.freeze={list(patterns) if not isinstance(patterns, str) else patterns!r} should "
                          f"be a list of fnmatch patterns (strings), like ['embed.*'] (a resumed run's comes from its "
                          f"checkpoint: optimizer.freeze=[] freezes nothing)")
    for pat in patterns:
        if not any(fnmatch.fnmatch(n, pat) for n in names):
            raise ConfigError(f"optimizer.freeze pattern {pat!r} matches no parameter; the names are like "
                              f"{', '.join(names[:3])}, and patterns are fnmatch globs such as 'embed.*'")
    frozen = [n for n in names if any(fnmatch.fnmatch(n, pat) for pat in patterns)]
    if not any(param.requires_grad for name, param in model.named_parameters() if name not in frozen):
        raise ConfigError(f"optimizer.freeze={list(patterns)} freezes every parameter of the model: nothing would "
                          f"train; freeze fewer (the names are like {', '.join(names[:3])})")
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
    return frozen


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    params = dict(model.named_parameters())
    decay, no_decay = grouped_names(model)
    return [
        {"params": [params[n] for n in decay], "weight_decay": weight_decay, "name": "decay"},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0, "name": "no_decay"},
    ]
