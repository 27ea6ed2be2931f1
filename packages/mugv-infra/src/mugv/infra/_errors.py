"""Exception types of mugv.infra: every error says what was wrong and what to do."""

from __future__ import annotations


class InfraError(RuntimeError):
    """Base class of every error mugv.infra raises."""


class ConfigError(InfraError, ValueError):
    """A configuration field is invalid; the message names the field and the fix."""


class DistributedError(InfraError):
    """The process group or the parallel layout could not be set up."""


class CheckpointError(InfraError):
    """A checkpoint is missing, incomplete or does not match the model."""


class RankError(InfraError):
    """A rank spawned by `mugv.infra.spawn.run_ranks` failed; carries its traceback text."""
