"""Writing shards: size limits, atomic renames, one JSONL manifest part per writer."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Any

from mugv.data._errors import ShardError
from mugv.data._schema import CaptionedClip
from mugv.data.shards._sample import (
    ClipFormat,
    ShardInfo,
    ShardSample,
    TensorFormat,
    _encode_sample,
)
from mugv.data.video import PixFmt

logger = logging.getLogger(__name__)

_MANIFEST_SUFFIX = ".manifest.jsonl"
_BLOCK = tarfile.BLOCKSIZE  # 512


def _member_bytes(size: int) -> int:
    return _BLOCK + -(-size // _BLOCK) * _BLOCK  # header + data padded to whole blocks


def _archive_bytes(members: int) -> int:
    """File size of a tar whose members take `members` bytes: two zero blocks end it, and
    `tarfile` pads the whole to a multiple of its 10 KiB record."""
    return -(-(members + 2 * _BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


class ShardWriter:
    """Writes samples into ``<prefix>-000000.tar``, ``<prefix>-000001.tar``, ... in `directory`.

    A shard is closed once it holds `max_count` samples or the next sample would make the
    file larger than `max_bytes` (tar headers and padding counted; a sample larger on its own
    gets a shard of its own). Writers that share a directory need distinct prefixes, e.g.
    ``f"r{rank}-w{worker}"``. ``pix_fmt="yuv444p"`` keeps full colour resolution, so hard
    colour edges survive (RGB PSNR ~44 dB vs ~33 dB on the synthetic world at crf 18), for
    clips that no hardware decoder or browser has to play.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        prefix: str = "shard",
        max_count: int = 1000,
        max_bytes: int = 1 << 30,
        clip_format: ClipFormat = "mp4",
        crf: int = 18,
        pix_fmt: PixFmt = "yuv420p",
        tensor_format: TensorFormat = "safetensors",
    ) -> None:
        if max_count < 1 or max_bytes < 1:
            raise ValueError(
                f"ShardWriter: max_count and max_bytes must be >= 1; got {max_count}, {max_bytes}"
            )
        if clip_format not in ("mp4", "png", "jpg"):
            raise ValueError(
                f"ShardWriter: clip_format must be mp4, png or jpg; got {clip_format!r}"
            )
        if tensor_format not in ("safetensors", "npy"):
            raise ValueError(
                f"ShardWriter: tensor_format must be safetensors or npy; got {tensor_format!r}"
            )
        if not re.match(r"^[A-Za-z0-9_\-]+$", prefix):
            raise ValueError(
                f"ShardWriter: prefix must be letters, digits, '_' or '-'; got {prefix!r}"
            )
        self.directory = Path(directory)
        self.prefix = prefix
        self.max_count, self.max_bytes = max_count, max_bytes
        self.clip_format, self.crf, self.pix_fmt = clip_format, crf, pix_fmt
        self.tensor_format = tensor_format
        self.manifest_path = self.directory / f"{prefix}{_MANIFEST_SUFFIX}"
        if self.manifest_path.exists():
            raise ShardError(
                f"{self.manifest_path} exists: another writer used prefix {prefix!r} here; "
                "choose another prefix or directory"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.shards: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._keys: list[str] = []
        self._bytes = 0
        self._seen: set[str] = set()

    def write(self, sample: ShardSample | CaptionedClip, **tensors: Any) -> None:
        """Stores one sample; keyword arguments add named tensors (latents, embeddings)."""
        if isinstance(sample, CaptionedClip):
            sample = ShardSample.from_captioned(sample, tensors)
        elif tensors:
            sample = ShardSample(**{**sample.__dict__, "tensors": {**sample.tensors, **tensors}})
        if sample.key in self._seen:
            raise ShardError(f"ShardWriter {self.prefix!r}: key {sample.key!r} written twice")
        members = _encode_sample(
            sample, self.clip_format, self.crf, self.pix_fmt, self.tensor_format
        )
        size = sum(_member_bytes(len(data)) for data in members.values())
        if self._tar is not None and (
            len(self._keys) >= self.max_count or _archive_bytes(self._bytes + size) > self.max_bytes
        ):
            self._finish_shard()
        if _archive_bytes(size) > self.max_bytes:
            logger.warning(
                "sample %s takes %d bytes, over max_bytes=%d: it gets a shard of its own",
                sample.key,
                size,
                self.max_bytes,
            )
        if self._tar is None:
            name = f"{self.prefix}-{len(self.shards):06d}.tar"
            self._tmp = self.directory / f".{name}.tmp"
            self._tar = tarfile.open(self._tmp, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (spans many writes)
        for ext, data in members.items():
            info = tarfile.TarInfo(f"{sample.key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self._keys.append(sample.key)
        self._seen.add(sample.key)
        self._bytes += size

    def _finish_shard(self) -> None:
        assert self._tar is not None and self._tmp is not None
        self._tar.close()
        with open(self._tmp, "rb+") as f:
            os.fsync(f.fileno())
        name = f"{self.prefix}-{len(self.shards):06d}.tar"
        os.replace(self._tmp, self.directory / name)
        info = ShardInfo(
            name, len(self._keys), (self.directory / name).stat().st_size, tuple(self._keys)
        )
        with open(self.manifest_path, "a", encoding="utf-8") as f:
            f.write(
                json.dumps(
                    {
                        "shard": name,
                        "count": info.count,
                        "bytes": info.bytes,
                        "keys": list(info.keys),
                    }
                )
                + "\n"
            )
            f.flush()
            os.fsync(f.fileno())
        self.shards.append(info)
        logger.debug("wrote %s: %d samples, %d bytes", name, info.count, info.bytes)
        self._tar, self._tmp, self._keys, self._bytes = None, None, [], 0

    def close(self) -> list[ShardInfo]:
        """Finishes the open shard; returns every shard this writer wrote."""
        if self._tar is not None:
            self._finish_shard()
        if not self.manifest_path.exists():  # an empty writer still leaves its (empty) part
            self.manifest_path.touch()
        return self.shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._tar is not None:  # leave no half-written shard behind
            self._tar.close()
            self._tmp.unlink(missing_ok=True)


def read_manifest(directory: str | os.PathLike[str]) -> list[ShardInfo]:
    """Every shard listed by the ``*.manifest.jsonl`` parts in `directory`, sorted by name."""
    directory = Path(directory)
    parts = sorted(directory.glob(f"*{_MANIFEST_SUFFIX}"))
    if not parts:
        raise ShardError(f"{directory}: no *{_MANIFEST_SUFFIX} manifest; write it with ShardWriter")
    shards: list[ShardInfo] = []
    for part in parts:
        for n, line in enumerate(part.read_text(encoding="utf-8").splitlines()):
            try:
                d = json.loads(line)
                info = ShardInfo(d["shard"], int(d["count"]), int(d["bytes"]), tuple(d["keys"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ShardError(f"{part}: line {n + 1} is not a manifest record: {exc}") from exc
            if not (directory / info.shard).is_file():
                raise ShardError(f"{part}: line {n + 1} lists {info.shard}, missing in {directory}")
            shards.append(info)
    return sorted(shards, key=lambda s: s.shard)
