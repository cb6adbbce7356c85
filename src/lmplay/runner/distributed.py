"""Data parallelism on PyTorch's own engine: torchrun sets the environment, DDP averages gradients.

Every rank builds the same global batch from the curriculum and trains on its share of the
samples, so the data order, the checkpoint and the results do not depend on the number of ranks.
"""

import contextlib
import datetime
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    cpu_group: Any = None  # gloo group for the loop's small sums (None: the default group, gloo already)
    patient_group: Any = None  # gloo group whose wait outlasts rank 0's first tokenization (main_first)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def sum(self, *values: float) -> list[float]:
        """Sum numbers over ranks (identity on one process). On CPU through gloo, even when the gradients
        go through NCCL: a CUDA tensor here would make the host wait for the GPU at every step."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self.cpu_group)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any: how ranks agree to stop at the same step."""
        return self.sum(float(flag))[0] > 0

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. filling a cache), then the others: no two write the same file.
        Where rank 0's block fails (a missing data file), it says why and the others exit quietly (code 1),
        not with gloo's "connection closed by peer" traceback once rank 0 is gone."""
        if not self.distributed:
            yield
        elif self.is_main:
            try:
                yield
            except BaseException:
                self.agree(1.0)
                with contextlib.suppress(Exception):  # never in place of what failed: a rank a Ctrl-C stopped
                    self.close()  # skips it. With the others: gloo's threads, left to rank 0's exit, could abort
                raise  # it (SIGABRT in torchrun's report, seen in CI under load)
            self.agree(0.0)
        else:
            if self.agree(0.0):  # rank 0 failed: leave together, then exit at once (an orderly exit ran the
                self.close()  # destructors of gloo's threads, which could abort, SIGABRT, 1 run in 4)
                sys.stderr.flush()
                os._exit(1)
            yield

    def agree(self, failed: float) -> float:
        """main_first's sum: the other ranks wait in it while rank 0 tokenizes, which for a large corpus takes
        longer than a process group's default 30 minutes (gloo's timeout ended the run)."""
        t = torch.tensor([failed])
        dist.all_reduce(t, group=self.patient_group)
        return t.item()

    def close(self) -> None:
        """Leave the process group together: a rank that exits while another still holds its connections
        can make that one abort (gloo) at shutdown, failing a run that finished."""
        if self.distributed and dist.is_initialized():
            dist.barrier(group=self.cpu_group)
            dist.destroy_process_group()


def lost_a_peer(error: BaseException) -> bool:
    """Whether a collective failed because another rank is gone (it failed, and says why itself): gloo's
    "Connection closed by peer" / "reset by peer", NCCL's DistBackendError."""
    text = str(error)
    return isinstance(error, dist.DistBackendError) or (
        isinstance(error, RuntimeError) and ("closed by peer" in text or "reset by peer" in text))


def export_submitit_env() -> None:
    """In a submitit job with several tasks (SLURM or local), set the variables torchrun would set, over any a job
    script exported (`export RANK=$SLURM_PROCID` was submitit's "Cannot export ... RANK is already set")."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun's are set
        return
    from submitit.helpers import TorchDistributedEnvironment

    env = TorchDistributedEnvironment()
    if env.world_size > 1:
        env.export(set_cuda_visible_devices=False, overwrite=True)


PATIENCE = datetime.timedelta(days=2)  # how long ranks wait for rank 0 to prepare the data


def init_world(device_type: str) -> World:
    """Join the process group torchrun (or a multi-task submitit job) describes: gloo on CPU, nccl on CUDA."""
    export_submitit_env()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    cpu_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
    patient_group = dist.new_group(backend="gloo", timeout=PATIENCE)
    world = World(dist.get_rank(), size, int(os.environ.get("LOCAL_RANK", "0")), cpu_group, patient_group)
    if not world.is_main:  # one voice: rank 0 reports its info lines and warnings (every rank reads the same data)
        sys.stdout = open(os.devnull, "w")
        logging.getLogger("lmplay").setLevel(logging.ERROR)
    return world


def rank_step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one rank's step under DDP: one run seed gave every rank the same dropout masks (half the
    masks of one process's batch on 2 ranks), and a function of the step, not a generator's state, lets a resume
    draw the masks of the uninterrupted run on any rank."""
    return int(np.random.SeedSequence([seed % 2**64, step, rank]).generate_state(1, np.uint64)[0])


class LossModule(nn.Module):
    """Wraps a model so DDP's forward is the model's own `loss_terms` (an experiment may override it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.loss_terms(inputs, targets)
