"""HF `datasets`, imported on first use: it costs about a second at start-up, and a run on cached text data
(the embedded corpus included) never needs it. Data code gets the module from `hf_datasets()`.

`quiet_progress_bars()` turns HF's progress bars off (as `datasets.disable_progress_bars()`) without
importing it: the setting is applied when the module is first handed out, or at once if already imported.
"""

import logging
import sys
from types import ModuleType

_quiet = False


def quiet_progress_bars() -> None:
    """No HF progress bars ("Map", downloads) in this process: for logs and runs without a TTY."""
    global _quiet
    _quiet = True
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


def hf_datasets() -> ModuleType:
    """The `datasets` module, with the progress-bar setting applied, and in a run whose logging is set up (lmplay's
    Hydra job logging), datasets' and huggingface_hub's own stderr handlers removed."""
    hf_log = logging.getLogger("datasets")
    if hf_log.level == logging.NOTSET:  # its import logs at INFO, through a run's log, which of JAX/TensorFlow it
        hf_log.setLevel(logging.WARNING)  # found, before it sets its own level (from DATASETS_VERBOSITY) after
    import datasets

    if _quiet:
        datasets.disable_progress_bars()
    if logging.getLogger().handlers:  # a run's logging (conf/hydra/job_logging) says their warnings already, as
        for name in ("datasets", "huggingface_hub"):  # "warning: ..."; their own handlers said each a second time
            library = logging.getLogger(name)
            for handler in [h for h in library.handlers if type(h) is logging.StreamHandler]:
                library.removeHandler(handler)
    return datasets
