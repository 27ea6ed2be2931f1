"""mugv.vae: the MUG-V two-stage video VAE."""

__version__ = "0.1.0"

__all__ = ["__version__"]
