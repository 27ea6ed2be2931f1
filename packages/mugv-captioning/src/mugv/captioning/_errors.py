"""Typed errors of mugv.captioning: each names the input, what is wrong and the fix."""

from __future__ import annotations


class CaptioningError(Exception):
    """Base class of every error raised by mugv.captioning."""


class ConfigError(CaptioningError, ValueError):
    """A config field holds a value the model cannot be built with."""


class GraphError(CaptioningError, ValueError):
    """A scene graph cannot be encoded (dangling relation ids, missing region features, ...)."""


class VocabularyError(CaptioningError, ValueError):
    """A vocabulary file or token list is malformed."""


class MetricError(CaptioningError, RuntimeError):
    """A caption metric cannot run (missing Java or METEOR jar, mismatched inputs)."""
