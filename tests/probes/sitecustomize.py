"""Put on PYTHONPATH by tests that watch a CLI run from inside, switched on by environment variables.

LMPLAY_PROBE_DDP_AT_EXIT=1: at exit, say how many DDP wrappers are still alive. One alive at interpreter exit
holds gloo's process group, whose worker threads can then abort a rank that finished (SIGABRT): an intermittent
failure, so the test checks its cause rather than waiting for it.

LMPLAY_PROBE_KILL=step:N | save:N | term:N | int:N | tokenize:0: SIGKILL the process right after the N-th
optimizer step, or inside the save of the checkpoint at step N, its new file written and not yet renamed over
model.lmp; or send it SIGTERM (a scheduler's stop) or SIGINT right after step N, or SIGTERM as it starts tokenizing
its data: crashes and stops at known moments, where a kill after a sleep lands wherever the machine's speed puts
it. With LMPLAY_PROBE_RANK=R, only torchrun's rank R is hit (a signal that reaches one rank of a data-parallel run).

LMPLAY_PROBE_DROPOUT=1: print which elements each step's first dropout zeroed (a hash), with the rank and step:
whether ranks draw masks of their own.

LMPLAY_PROBE_SLOW=R:S: torchrun's rank R sleeps S seconds as it starts, as on a loaded machine where the ranks
reach the same point seconds apart.

LMPLAY_PROBE_CTRL_C_IN=numpy: a Ctrl-C (SIGINT) as that module is first imported, where a Ctrl-C a moment after
launch lands (torch's C code imports numpy and swallowed it, leaving numpy half-imported).
"""

import atexit
import os
import signal
import sys


def _report_ddp() -> None:
    if "torch" in sys.modules:  # the ranks, and torchrun's own agent
        import gc

        alive = sum(type(o).__name__ == "DistributedDataParallel" for o in gc.get_objects())
        sys.stderr.write(f"DDP wrappers alive at exit: {alive}\n")


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(where: str, step: int) -> None:
    from lmplay.data import tokenized
    from lmplay.runner import base, checkpoint

    if where == "tokenize":
        tokenize_batch = tokenized.tokenize_batch

        def stopping_tokenize_batch(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            return tokenize_batch(*args, **kwargs)

        tokenized.tokenize_batch = stopping_tokenize_batch
        return

    if where in ("step", "term", "int"):
        train_step = base.LMRunnerBase.train_step

        def killing_train_step(self, *args, **kwargs):
            result = train_step(self, *args, **kwargs)
            if self.runner_c.progress["step"] + 1 == step:  # the counter moves on after the step
                signum = {"term": signal.SIGTERM, "int": signal.SIGINT}.get(where)
                _kill() if signum is None else os.kill(os.getpid(), signum)
            return result

        base.LMRunnerBase.train_step = killing_train_step
        return
    save = checkpoint.save

    def killing_save(state, path):
        if str(path).endswith("model.lmp") and state["components"]["runner"]["state"]["progress"]["step"] == step:
            replace = checkpoint.os.replace
            checkpoint.os.replace = lambda src, dst: _kill() if str(dst).endswith("model.lmp") else replace(src, dst)
        save(state, path)

    checkpoint.save = killing_save


if os.environ.get("LMPLAY_PROBE_DDP_AT_EXIT"):
    atexit.register(_report_ddp)
if os.environ.get("LMPLAY_PROBE_KILL") and os.environ.get("LMPLAY_PROBE_RANK", os.environ.get("RANK")) == \
        os.environ.get("RANK"):
    _where, _step = os.environ["LMPLAY_PROBE_KILL"].split(":")
    _install_kill(_where, int(_step))


def _install_dropout_probe() -> None:
    import hashlib

    from torch.nn import functional

    from lmplay.runner import base

    train_step, dropout, seen = base.LMRunnerBase.train_step, functional.dropout, {}

    def noted_train_step(self, *args, **kwargs):
        seen["step"], seen["said"] = self.runner_c.progress["step"], False
        return train_step(self, *args, **kwargs)

    def noted_dropout(x, p=0.5, training=True, inplace=False):
        out = dropout(x, p, training, inplace)
        if training and p > 0 and not seen.get("said", True):
            seen["said"] = True
            zeroed = hashlib.sha256((out == 0).numpy().tobytes()).hexdigest()[:12]
            sys.stderr.write(f"dropout mask: rank {os.environ.get('RANK', '0')} step {seen['step']} {zeroed}\n")
        return out

    base.LMRunnerBase.train_step, functional.dropout = noted_train_step, noted_dropout


if os.environ.get("LMPLAY_PROBE_DROPOUT"):
    _install_dropout_probe()


class _CtrlCOnImport:
    """A meta path finder that finds nothing: it only sends the SIGINT, once, as the module's import begins."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname, path=None, target=None) -> None:
        if fullname == self.name:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)


if os.environ.get("LMPLAY_PROBE_CTRL_C_IN"):
    sys.meta_path.insert(0, _CtrlCOnImport(os.environ["LMPLAY_PROBE_CTRL_C_IN"]))


if os.environ.get("LMPLAY_PROBE_SLOW", ":").split(":")[0] == os.environ.get("RANK"):
    import time

    time.sleep(float(os.environ["LMPLAY_PROBE_SLOW"].split(":")[1]))
