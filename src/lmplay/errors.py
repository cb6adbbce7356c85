"""Errors that end a run with one clear line instead of a traceback."""


class LmplayError(Exception):
    """A failure the user must act on; the CLI prints its message alone and exits non-zero."""

    exit_code = 1


class ConfigError(LmplayError):
    """A user mistake: the message names the bad value and the fix."""

    exit_code = 2


class DivergedError(LmplayError):
    """The loss became NaN or Inf; the last good checkpoint is untouched."""

    exit_code = 3


class OutputError(LmplayError):
    """A run's output could not be written (disk full, no permission); what was written before is intact."""
