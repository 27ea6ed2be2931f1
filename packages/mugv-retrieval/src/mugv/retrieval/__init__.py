"""mugv.retrieval: TW-BERT, trajectory-word alignment for retrieval and QA."""

__version__ = "0.1.0"

__all__ = ["__version__"]
