"""Errors the SDK raises, so callers never import grpc to handle failures.

ExportdError                   any failed call: .code (StatusCode), .message, .reason, .retry_after
├── InvalidArgumentError       bad spec, unknown option, malformed Arrow data
├── NotFoundError              unknown or expired job or handle
├── ResourceExhaustedError     queue full (.retry_after seconds), disk full, quota, limits
├── CancelledError             the export was cancelled
├── DeadlineExceededError      the call's deadline passed, or the server waited too long for data
├── OutOfRangeError            a read offset past the end of a file
├── DataLossError              a stored file failed its checksum
├── UnavailableError           the server is unreachable or shutting down
├── UnauthenticatedError       missing or wrong token
├── PermissionDeniedError      the token may not do this
└── ChecksumMismatchError      a received file does not match the server's sha256 (client side)
"""

from __future__ import annotations

import enum

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class StatusCode(enum.Enum):
    """gRPC status codes, mirrored so callers need not import grpc."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class ExportdError(Exception):
    """A call to exportd failed. ``reason`` is the server's machine-readable ErrorInfo reason."""

    def __init__(
        self,
        code: StatusCode,
        message: str,
        *,
        reason: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


class InvalidArgumentError(ExportdError):
    pass


class NotFoundError(ExportdError):
    pass


class ResourceExhaustedError(ExportdError):
    pass


class CancelledError(ExportdError):
    pass


class DeadlineExceededError(ExportdError):
    pass


class OutOfRangeError(ExportdError):
    pass


class DataLossError(ExportdError):
    pass


class UnavailableError(ExportdError):
    pass


class UnauthenticatedError(ExportdError):
    pass


class PermissionDeniedError(ExportdError):
    pass


class ChecksumMismatchError(ExportdError):
    pass


_BY_CODE: dict[StatusCode, type[ExportdError]] = {
    StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    StatusCode.NOT_FOUND: NotFoundError,
    StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    StatusCode.CANCELLED: CancelledError,
    StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    StatusCode.OUT_OF_RANGE: OutOfRangeError,
    StatusCode.DATA_LOSS: DataLossError,
    StatusCode.UNAVAILABLE: UnavailableError,
    StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    StatusCode.PERMISSION_DENIED: PermissionDeniedError,
}


def error_for(
    code: StatusCode, message: str, *, reason: str = "", retry_after: float | None = None
) -> ExportdError:
    """The named exception for ``code``."""
    cls = _BY_CODE.get(code, ExportdError)
    return cls(code, message, reason=reason, retry_after=retry_after)


def from_rpc_error(exc: grpc.RpcError) -> ExportdError:
    """Translate a grpc failure, reading google.rpc ErrorInfo and RetryInfo when present."""
    call: grpc.Call = exc  # type: ignore[assignment]
    try:
        code = StatusCode(call.code().value[0])
    except (ValueError, AttributeError):
        code = StatusCode.UNKNOWN
    message = call.details() or code.name
    reason = ""
    retry_after: float | None = None
    status = rpc_status.from_call(call)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return error_for(code, message, reason=reason, retry_after=retry_after)
