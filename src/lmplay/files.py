"""Files: where a checkpoint is, and writing a small text file so that no reader ever sees half of it."""

import os
import uuid
from pathlib import Path

from lmplay.errors import OutputError


def checkpoint_file(path: Path | str) -> Path:
    """A checkpoint given as its file, or as the run dir it lives in (which stands for its model.lmp)."""
    path = Path(path)
    return path / "model.lmp" if path.is_dir() else path


def write_text_atomic(path: Path, text: str) -> None:
    """Written aside, then renamed over `path`: a reader (or a crash) sees the old file or the new one.

    The temp name is unique, so writers in other processes or on other nodes (a sweep's jobs refreshing
    its summary) never share one, and it is created as `open` creates files, so the umask sets who may read.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"could not write {path} ({e.strerror or e}); the previous {path.name}, if any, is "
                          f"intact") from None
    finally:
        tmp.unlink(missing_ok=True)
