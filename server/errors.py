"""The domain errors of exportd, one class per outcome a client must tell apart.

Domain code raises these; only the servicer turns them into gRPC statuses (with google.rpc
ErrorInfo carrying ``reason``), so exporters, the governor and the stores stay free of grpc.

    ExportdError                 base: code name, machine reason, human message
    ├── InvalidArgument          bad spec, unknown option, malformed Arrow, limit of a format
    ├── NotFound                 unknown or expired job or handle
    ├── ResourceExhausted        queue full (retry_after set), disk full, quota
    ├── Cancelled                cancelled by a client or by shutdown
    ├── DeadlineExceeded         the client's deadline or a limit on waiting passed
    ├── OutOfRange               a read offset past the end of a file
    ├── FailedPrecondition       the request cannot apply to the current state
    ├── DataLoss                 a stored file no longer matches its checksum
    ├── Internal                 a bug: logged with its traceback, the job marked
    └── Unavailable              the server is shutting down
"""

from __future__ import annotations


class ExportdError(Exception):
    """An error with a gRPC code name, a stable machine reason and a sentence for a person."""

    code: str = "INTERNAL"
    default_reason: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason


class InvalidArgument(ExportdError):
    code = "INVALID_ARGUMENT"
    default_reason = "INVALID_ARGUMENT"


class NotFound(ExportdError):
    code = "NOT_FOUND"
    default_reason = "NOT_FOUND"


class ResourceExhausted(ExportdError):
    code = "RESOURCE_EXHAUSTED"
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class Cancelled(ExportdError):
    code = "CANCELLED"
    default_reason = "CANCELLED"


class DeadlineExceeded(ExportdError):
    code = "DEADLINE_EXCEEDED"
    default_reason = "DEADLINE_EXCEEDED"


class OutOfRange(ExportdError):
    code = "OUT_OF_RANGE"
    default_reason = "OUT_OF_RANGE"


class FailedPrecondition(ExportdError):
    code = "FAILED_PRECONDITION"
    default_reason = "FAILED_PRECONDITION"


class DataLoss(ExportdError):
    code = "DATA_LOSS"
    default_reason = "DATA_LOSS"


class Internal(ExportdError):
    code = "INTERNAL"
    default_reason = "INTERNAL"


class Unavailable(ExportdError):
    code = "UNAVAILABLE"
    default_reason = "UNAVAILABLE"
