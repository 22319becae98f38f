"""Errors that the CLI reports as one clear line and a non-zero exit (no traceback)."""


class OptimaError(Exception):
    """Base class: bad input that the user can fix (the message names the culprit)."""


class ConfigError(OptimaError):
    """A config file has an unknown key, a wrong type or an inconsistent value."""


class DataError(OptimaError):
    """A data file is missing, unreadable or malformed, or references something that does not exist."""


class CheckpointError(OptimaError):
    """A checkpoint or run directory is missing, corrupt, or does not fit the model or config."""


class TrainingError(OptimaError):
    """Training diverged (NaN/inf loss) or cannot continue."""


class OutputError(OptimaError):
    """An output cannot be written: the disk is full, the folder is not writable (the message names the file)."""


class RunBusyError(OptimaError):
    """Another optima process is writing the same run directory (it holds the directory's lock file)."""
