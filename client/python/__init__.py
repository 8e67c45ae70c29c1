"""exportd's Python SDK: export Arrow data to files through an exportd server.

    from exportd.client import ExportClient

    with ExportClient("127.0.0.1:50051") as client:
        result = client.export(table, "xlsx", output="orders.xlsx", on_progress=print)

Errors are the exceptions of ``exportd.client.errors`` (never grpc's). The SDK does not import
the server.
"""

from ._client import ArtifactInfo, ExportClient, ExportResult, JobInfo, Progress, Warning
from ._options import Column, option_names
from .errors import (
    CancelledError,
    ChecksumMismatchError,
    DataLossError,
    DeadlineExceededError,
    ExportdError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    StatusCode,
    UnauthenticatedError,
    UnavailableError,
)

__all__ = [
    "ArtifactInfo",
    "CancelledError",
    "ChecksumMismatchError",
    "Column",
    "DataLossError",
    "DeadlineExceededError",
    "ExportClient",
    "ExportResult",
    "ExportdError",
    "InvalidArgumentError",
    "JobInfo",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "Progress",
    "ResourceExhaustedError",
    "StatusCode",
    "UnauthenticatedError",
    "UnavailableError",
    "Warning",
    "option_names",
]
