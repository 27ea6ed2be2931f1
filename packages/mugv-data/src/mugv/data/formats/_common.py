"""Records the standard-format loaders return, and strict field access with located errors."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mugv.data._errors import FormatError
from mugv.data._schema import CaptionedClip, QAPair, VideoClip
from mugv.data.video import read_image, read_video

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class CaptionRecord:
    """An image or video of a caption dataset: its key, file (relative to the data root)."""

    key: str
    source: str
    captions: list[str] = field(default_factory=list)
    split: str = ""

    def load(self, root: str | os.PathLike[str], **video_options: Any) -> CaptionedClip:
        """Reads the media under `root` into a `CaptionedClip` (an image is a 1-frame clip).

        `video_options` go to `read_video` (sampling, size); images take none.
        """
        path = Path(root) / self.source
        if path.suffix.lower() in _IMAGE_SUFFIXES:
            clip = VideoClip(frames=read_image(path)[None], fps=1.0, source=str(path))
        else:
            clip = read_video(path, **video_options)
        return CaptionedClip(key=self.key, clip=clip, captions=list(self.captions))


@dataclass
class QARecord:
    """A question about a video (MSR-VTT QA), with the answer."""

    question_id: str
    video: str  # video id, "" when the file does not say
    qa: QAPair


class Records:
    """Strict, located access to the records of one file: errors name file, record, field."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def fail(self, where: str, problem: str) -> FormatError:
        return FormatError(f"{self.path}: {where}: {problem}")

    def read_text(self) -> str:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise FormatError(f"{self.path}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise FormatError(f"{self.path}: cannot read it as UTF-8 text: {exc}") from exc
        if not text.strip():
            raise FormatError(f"{self.path}: the file is empty")
        return text

    def load_json(self) -> Any:
        try:
            return json.loads(self.read_text())
        except json.JSONDecodeError as exc:
            raise FormatError(
                f"{self.path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
            ) from exc

    def load_jsonl(self) -> list[Any]:
        out = []
        for n, line in enumerate(self.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FormatError(
                    f"{self.path}: line {n + 1} is not valid JSON: {exc.msg}"
                ) from exc
        return out

    def items(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return value

    def get(
        self, record: Any, name: str, kind: type | tuple[type, ...], where: str, default: Any = ...
    ) -> Any:
        """``record[name]``, checked to be a `kind` (bool is never taken for a number)."""
        if not isinstance(record, Mapping):
            raise self.fail(where, f"expected an object, got {type(record).__name__}")
        if name not in record:
            if default is not ...:
                return default
            raise self.fail(where, f"missing field {name!r}")
        value = record[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(
                f"{where}.{name}", f"expected {names}, got {type(value).__name__} {value!r:.60}"
            )
        return value

    def key(self, record: Any, name: str, where: str) -> str:
        """An id field (int or str) as a string key."""
        return str(self.get(record, name, (int, str), where))
