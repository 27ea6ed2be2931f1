"""mugv.apps: the `mugv` command, a thin composition of the MUG-V packages."""

__version__ = "0.1.0"

__all__ = ["__version__"]
