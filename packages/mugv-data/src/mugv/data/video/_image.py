"""Single images: PNG (lossless) and JPEG, to and from files or bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mugv.data._errors import SchemaError, VideoError
from mugv.data.video._open import _raising

_IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def _image_format(name: str, format: str | None) -> str:
    key = (format or Path(name).suffix).lower()
    key = key if key.startswith(".") else f".{key}"
    if key not in _IMAGE_FORMATS:
        raise VideoError(
            f"{name}: unknown image format {key!r}; use one of {sorted(_IMAGE_FORMATS)}",
            source=name,
        )
    return _IMAGE_FORMATS[key]


def encode_image(frame: np.ndarray, format: str = "png", *, quality: int = 95) -> bytes:
    """PNG (lossless) or JPEG bytes of one uint8 ``(H, W, 3)`` frame."""
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise SchemaError(f"an image must be uint8 (H, W, 3); got {frame.dtype} {frame.shape}")
    kind = _image_format(f"<{format} image>", format)
    buffer = io.BytesIO()
    Image.fromarray(frame, "RGB").save(
        buffer, format=kind, **({"quality": quality} if kind == "JPEG" else {})
    )
    return buffer.getvalue()


def write_image(path: str | os.PathLike[str], frame: np.ndarray, *, quality: int = 95) -> Path:
    """Writes one frame as PNG or JPEG (from the suffix), atomically."""
    path = Path(path)
    data = encode_image(frame, _image_format(str(path), None), quality=quality)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _raising(str(path), "write the image"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def decode_image(data: bytes, *, name: str = "<image in memory>") -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of encoded image bytes (PNG, JPEG, ...)."""
    if not data:
        raise VideoError(f"{name}: the image is empty (0 bytes)", source=name)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise VideoError(f"{name}: cannot decode the image: {exc}", source=name) from exc


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` of an image file."""
    with _raising(str(path), "read the image"):
        data = Path(path).read_bytes()
    return decode_image(data, name=str(path))
