"""Exception types of `mugv.retrieval`: every error a user can cause names its input and the fix."""


class RetrievalError(Exception):
    """Base class of every error raised by `mugv.retrieval`."""


class ConfigError(RetrievalError, ValueError):
    """A config field holds a value the model cannot be built with."""


class InputError(RetrievalError, ValueError):
    """A clip or a text cannot be fed to the model (empty caption, unreadable video, ...)."""
