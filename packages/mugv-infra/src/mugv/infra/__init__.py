"""mugv.infra: the distributed training runtime on Megatron-Core."""

__version__ = "0.1.0"

__all__ = ["__version__"]
