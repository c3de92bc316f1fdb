"""Errors the command line reports as a one-line message instead of a traceback."""


class RouteclfError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class DataError(RouteclfError):
    """The data cannot be used as given (missing column, unknown label, too few rows...)."""


class LeakageError(RouteclfError):
    """The same text, or the same id, sits in two splits."""


class TrainingError(RouteclfError):
    """Training cannot go on (non-finite loss, unknown architecture...)."""
