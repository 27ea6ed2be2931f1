"""mugv.dit: MUGDiT, the MUG-V diffusion transformer."""

__version__ = "0.1.0"

__all__ = ["__version__"]
