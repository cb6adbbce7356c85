"""Put on PYTHONPATH by a test: at exit, each process says how many DDP wrappers are still alive.

One alive at interpreter exit holds gloo's process group, whose worker threads can then abort a rank that
finished (SIGABRT): an intermittent failure, so the test checks its cause rather than waiting for it.
"""

import atexit
import sys


def _report() -> None:
    if "torch" in sys.modules:  # the ranks, and torchrun's own agent
        import gc

        alive = sum(type(o).__name__ == "DistributedDataParallel" for o in gc.get_objects())
        sys.stderr.write(f"DDP wrappers alive at exit: {alive}\n")


atexit.register(_report)
