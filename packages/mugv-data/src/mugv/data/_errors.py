"""Exception types of `mugv.data`: every error a user can cause names its input and the fix."""


class DataError(Exception):
    """Base class of every error raised by `mugv.data`."""


class SchemaError(DataError, ValueError):
    """A sample does not satisfy the schema (wrong shape, dtype, dangling id, ...)."""
