"""Exceptions raised by mugv.vae: one base type, narrower ones for configs and checkpoints."""


class VAEError(Exception):
    """Base class for every error raised by mugv.vae."""


class VAEConfigError(VAEError, ValueError):
    """A config field holds a value the model cannot be built with."""


class VAEInputError(VAEError, ValueError):
    """A tensor or clip handed to the VAE has the wrong shape, dtype or range."""


class VAECheckpointError(VAEError):
    """A checkpoint is corrupt, incomplete, or does not match the config it is loaded into."""
