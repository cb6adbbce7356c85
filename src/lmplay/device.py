"""Which device runs, and in which autocast precision: one set of rules for training and generation alike.

torch is imported inside the functions: `lmplay.generate` checks its settings before it pays for torch's
import, so a typo is reported at once.
"""

from collections.abc import Collection
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING

from lmplay.errors import ConfigError

if TYPE_CHECKING:
    import torch

AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # amp_dtype= -> torch's dtype name


def pick_device(name: "str | torch.device | None") -> "torch.device":
    """`device=` as typed (or as a Python caller names it): auto (or None) takes cuda, then mps, then cpu; cuda:N
    picks one GPU; a device that is not there is an error."""
    import torch

    device = device_named(name)
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=cpu or device=auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name} but MPS is not available; use device=cpu or device=auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def device_named(name: "str | torch.device | None") -> "torch.device | None":
    """The device `device=` names, whether or not this machine has it (a sweep's launcher is not its jobs' node);
    None for auto. A name torch does not know, or a device lmplay does not run on, is an error."""
    import torch

    if name is None or name == "auto":
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={name!r} is no device torch knows; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name!r} is not one lmplay runs on; use auto, cpu, cuda, cuda:N or mps")
    return device


def check_amp_dtype(name: str) -> None:
    """Checked with amp off too: the name is saved with a run, and a later amp=true would meet it."""
    if name not in AMP_DTYPES:
        raise ConfigError(f"amp_dtype={name!r} is unknown; use bf16 or fp16")


def amp_dtype(name: str, amp: bool) -> "torch.dtype | None":
    """The autocast dtype of `amp=`/`amp_dtype=`, or None for full precision."""
    check_amp_dtype(name)
    if not amp:
        return None
    import torch

    return getattr(torch, AMP_DTYPES[name])


def unused_amp_dtype(typed: Collection[str], name: str, amp: bool) -> str | None:
    """The note for an amp_dtype typed beside amp=false: the run is in full precision, not the dtype asked for,
    and nothing else would say so."""
    if "amp_dtype" in typed and not amp:
        return f"amp_dtype={name} changes nothing: amp=false runs in full precision (fp32); add amp=true for {name}"
    return None


def autocast(device: "torch.device", dtype: "torch.dtype | None") -> AbstractContextManager:
    import torch

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def synchronize(device: "torch.device") -> None:
    """Wait for the work queued on an accelerator; a CPU computes as it goes."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
