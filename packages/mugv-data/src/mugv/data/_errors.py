"""Exception types of `mugv.data`: every error a user can cause names its input and the fix."""


class DataError(Exception):
    """Base class of every error raised by `mugv.data`."""


class SchemaError(DataError, ValueError):
    """A sample does not satisfy the schema (wrong shape, dtype, dangling id, ...)."""


class VideoError(DataError):
    """A video or image cannot be read or written: missing, empty, truncated, corrupt, not a video.

    The message names the file and the cause; ``source`` holds the file name when known.
    Constructible from the message alone, so it survives DataLoader workers and pickling.
    """

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class ShardError(DataError):
    """A shard, manifest or sample cannot be written or read back."""


class FormatError(DataError, ValueError):
    """A record of a standard-format file (COCO, Visual Genome, MSR-VTT, ...) is malformed.

    The message names the file, the record index and the field.
    """
