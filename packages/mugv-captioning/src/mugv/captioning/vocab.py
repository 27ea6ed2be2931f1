"""Word and label vocabularies built from token counts with a frequency threshold."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mugv.captioning._errors import VocabularyError

logger = logging.getLogger(__name__)

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocabulary:
    """Token <-> id map. Ids 0..3 are ``<pad> <bos> <eos> <unk>``; unknown tokens map to ``<unk>``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        tokens = list(tokens)
        if tokens[: len(SPECIALS)] != list(SPECIALS):
            raise VocabularyError(
                f"Vocabulary tokens must start with {list(SPECIALS)}; got {tokens[:4]}. "
                "Build it with Vocabulary.build(...)."
            )
        if len(set(tokens)) != len(tokens):
            dupes = sorted(t for t, c in Counter(tokens).items() if c > 1)
            raise VocabularyError(f"Vocabulary holds repeated tokens {dupes[:10]}")
        self.itos = tokens
        self.stoi = {t: i for i, t in enumerate(tokens)}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], *, min_freq: int = 1) -> Vocabulary:
        """Every token seen at least ``min_freq`` times, most frequent first (ties alphabetical)."""
        if min_freq < 1:
            raise VocabularyError(f"min_freq must be >= 1; got {min_freq}")
        counts = Counter(tok for sent in sentences for tok in sent)
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq and t not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        logger.info(
            "vocabulary: %d of %d token types kept (min_freq=%d)", len(kept), len(counts), min_freq
        )
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def id(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self.id(t) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens up to the first ``<eos>``, skipping ``<pad>``/``<bos>``."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"tokens": self.itos}, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text())
            tokens = data["tokens"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise VocabularyError(
                f"cannot read vocabulary {path}: {e}. Expected JSON {{'tokens': [...]}} "
                "as written by Vocabulary.save"
            ) from e
        return cls(tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"
