"""The errors a user can cause, and that the CLI reports as one line (exit 2) instead of a traceback.

They live at the bottom of the package so that the CLI can catch them without importing
the modules that raise them (torch, for one, is not imported by `evaluate` or `report`).
"""


class ParamsError(ValueError):
    """A params file that must not start a run; the message names key and value."""


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file, row or column."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the message names the run and the epoch."""
