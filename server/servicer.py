"""gRPC servicers: thin translations between the contract and the domain.

Each RPC converts its request, makes one call into domain code, and converts the answer back.
Every ExportdError becomes a status here and nowhere else, carrying google.rpc.ErrorInfo (the
machine reason) and, for a full queue, google.rpc.RetryInfo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import grpc
from exportd.v1 import artifact_service_pb2 as apb
from exportd.v1 import artifact_service_pb2_grpc as apb_grpc
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from . import _mapping as m
from .artifacts import ArtifactStore
from .errors import ExportdError, Internal, InvalidArgument, ResourceExhausted
from .exports import CancelRequest, DataPiece, EndOfData, Exports, Input
from .jobs import JobRegistry

log = logging.getLogger("exportd.servicer")

DOMAIN = "exportd.v1"

TenantOf = Callable[[grpc.ServicerContext], str]


def _no_tenant(context: grpc.ServicerContext) -> str:
    return ""


def abort(context: grpc.ServicerContext, error: ExportdError) -> NoReturn:
    """End the RPC with ``error``'s status, reason and (for a full queue) retry delay."""
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))
    details.append(info)
    if isinstance(error, ResourceExhausted) and error.retry_after is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    status = status_pb2.Status(
        code=getattr(code_pb2, error.code, code_pb2.UNKNOWN),
        message=error.message,
        details=details,
    )
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """A protobuf varint at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def parse_export_request(raw: bytes) -> epb.ExportRequest | DataPiece:
    """Deserialize an ExportRequest, with a fast path for the bulk message.

    A message that is exactly ``data { arrow_ipc: … }`` (field 2 holding only field 1) becomes a
    DataPiece viewing the received bytes, skipping the two copies protobuf would make of each
    data message; anything else is parsed by protobuf as usual.
    """
    try:
        if raw[:1] == b"\x12":
            outer, pos = _varint(raw, 1)
            if pos + outer == len(raw):
                if outer == 0:
                    return DataPiece(b"")
                if raw[pos] == 0x0A:
                    inner, start = _varint(raw, pos + 1)
                    if start + inner == len(raw):
                        return DataPiece(memoryview(raw)[start:])
    except (IndexError, ValueError):
        pass
    return epb.ExportRequest.FromString(raw)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_chunk(offset: int, data: bytes) -> bytes:
    """ReadArtifactResponse{offset, data} encoded by hand: one copy of the file bytes, where
    building and serializing the message would make two."""
    head = b"\x08" + _encode_varint(offset) if offset else b""
    if not data:  # proto3 leaves empty fields out
        return head
    return b"".join([head, b"\x12", _encode_varint(len(data)), data])


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


class _HandlerOverrides:
    """Stands in for a grpc.Server while generated code registers a service, replacing the
    (de)serializers of the bulk-byte methods; every other method is registered as generated."""

    def __init__(self, server: grpc.Server, overrides: dict[str, dict[str, Any]]) -> None:
        self._server = server
        self._overrides = overrides

    def add_generic_rpc_handlers(
        self, handlers: Iterable[grpc.GenericRpcHandler[Any, Any]]
    ) -> None:
        pass  # the registered handlers below serve every method of the service

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        replaced = {
            name: handler._replace(**self._overrides.get(name, {}))  # type: ignore[attr-defined]
            for name, handler in handlers.items()
        }
        self._server.add_registered_method_handlers(service, replaced)  # type: ignore[attr-defined]


def add_export_service(servicer: ExportServicer, server: grpc.Server) -> None:
    """Register ExportService on ``server`` with the fast data-message deserializer."""
    overrides = {
        "Export": {"request_deserializer": parse_export_request, "response_serializer": _serialize}
    }
    epb_grpc.add_ExportServiceServicer_to_server(servicer, _HandlerOverrides(server, overrides))  # type: ignore[arg-type]


def add_artifact_service(servicer: ArtifactServicer, server: grpc.Server) -> None:
    """Register ArtifactService on ``server``; ReadArtifact sends chunks encoded by encode_chunk."""
    overrides = {"ReadArtifact": {"response_serializer": _serialize}}
    apb_grpc.add_ArtifactServiceServicer_to_server(servicer, _HandlerOverrides(server, overrides))  # type: ignore[arg-type]


def _inputs(requests: Iterator[epb.ExportRequest | DataPiece]) -> Iterator[Input]:
    for request in requests:
        if isinstance(request, DataPiece):
            yield request
            continue
        kind = request.WhichOneof("kind")
        if kind == "data":
            yield DataPiece(request.data.arrow_ipc)
        elif kind == "end":
            yield EndOfData()
        elif kind == "cancel":
            yield CancelRequest(request.cancel.reason)
        else:
            raise InvalidArgument(
                f"unexpected {kind or 'empty'} message after the spec", reason="PROTOCOL"
            )


class ExportServicer(epb_grpc.ExportServiceServicer):
    """ExportService: Export and the job RPCs."""

    def __init__(
        self,
        exports: Exports,
        jobs: JobRegistry,
        *,
        default_ttl: float,
        tenant_of: TenantOf = _no_tenant,
    ) -> None:
        self._exports = exports
        self._jobs = jobs
        self._default_ttl = default_ttl
        self._tenant_of = tenant_of

    def Export(  # type: ignore[override]  # chunks are pre-encoded messages
        self,
        request_iterator: Iterator[epb.ExportRequest | DataPiece],
        context: grpc.ServicerContext,
    ) -> Iterator[epb.ExportResponse | bytes]:
        try:
            first = next(request_iterator, None)
            if not isinstance(first, epb.ExportRequest) or first.WhichOneof("kind") != "spec":
                raise InvalidArgument(
                    "the first message of an Export must be its spec", reason="PROTOCOL"
                )
            spec = m.spec_from_proto(first.spec, default_ttl=self._default_ttl)
            events = self._exports.run(
                spec,
                _inputs(request_iterator),
                tenant=self._tenant_of(context),
                is_active=context.is_active,
            )
            for event in events:
                yield _event_to_proto(event)
        except ExportdError as exc:
            abort(context, exc)
        except Exception as exc:  # a bug: the job is marked and logged; tell the client plainly
            log.exception("export failed unexpectedly")
            abort(context, Internal(f"internal error: {exc}; the server log has details"))

    def GetJob(
        self, request: epb.GetJobRequest, context: grpc.ServicerContext
    ) -> epb.GetJobResponse:
        try:
            job = self._jobs.get(request.job_id, self._tenant_of(context))
        except ExportdError as exc:
            abort(context, exc)
        return epb.GetJobResponse(job=m.job_to_proto(job))

    def WatchJob(
        self, request: epb.WatchJobRequest, context: grpc.ServicerContext
    ) -> Iterator[epb.WatchJobResponse]:
        try:
            job = self._jobs.get(request.job_id, self._tenant_of(context))
        except ExportdError as exc:
            abort(context, exc)
        for snapshot in self._jobs.watch(job, is_active=context.is_active):
            if snapshot.result is not None:
                # The last progress (state SUCCEEDED, fraction 1), as on the Export stream.
                yield epb.WatchJobResponse(progress=m.progress_to_proto(snapshot.progress))
                yield epb.WatchJobResponse(
                    completed=m.completed_to_proto(job.job_id, snapshot.result)
                )
            elif snapshot.error is not None:
                yield epb.WatchJobResponse(failed=m.failure_to_proto(snapshot.error))
            else:
                yield epb.WatchJobResponse(progress=m.progress_to_proto(snapshot.progress))

    def CancelJob(
        self, request: epb.CancelJobRequest, context: grpc.ServicerContext
    ) -> epb.CancelJobResponse:
        try:
            job = self._jobs.request_cancel(
                request.job_id, self._tenant_of(context), request.reason
            )
        except ExportdError as exc:
            abort(context, exc)
        return epb.CancelJobResponse(job=m.job_to_proto(job))

    def ListJobs(
        self, request: epb.ListJobsRequest, context: grpc.ServicerContext
    ) -> epb.ListJobsResponse:
        try:
            jobs, token = self._jobs.list_page(
                self._tenant_of(context),
                page_size=request.page_size,
                page_token=request.page_token,
                states=m.states_from_proto(list(request.states)),
            )
        except ExportdError as exc:
            abort(context, exc)
        return epb.ListJobsResponse(jobs=[m.job_to_proto(j) for j in jobs], next_page_token=token)


def _event_to_proto(event: object) -> epb.ExportResponse | bytes:
    from .exports import Accepted, Chunk, Completed, JobProgress

    if isinstance(event, Chunk):
        # ExportResponse{chunk: FileChunk{offset, data}} (field 3), encoded by hand.
        inner = encode_chunk(event.offset, event.data)
        return b"".join([b"\x1a", _encode_varint(len(inner)), inner])
    if isinstance(event, JobProgress):
        return epb.ExportResponse(progress=m.progress_to_proto(event.progress))
    if isinstance(event, Accepted):
        return epb.ExportResponse(
            accepted=epb.ExportAccepted(job_id=event.job_id, queue_position=event.queue_position)
        )
    if isinstance(event, Completed):
        return epb.ExportResponse(completed=m.completed_to_proto(event.job_id, event.result))
    raise TypeError(f"unknown event {event!r}")


class ArtifactServicer(apb_grpc.ArtifactServiceServicer):
    """ArtifactService: read, describe, delete and renew kept files."""

    def __init__(
        self, store: ArtifactStore, *, chunk_size: int, tenant_of: TenantOf = _no_tenant
    ) -> None:
        self._store = store
        self._chunk_size = chunk_size
        self._tenant_of = tenant_of

    def ReadArtifact(  # type: ignore[override]  # yields pre-encoded messages
        self, request: apb.ReadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        """Chunks as encoded ReadArtifactResponse messages (see add_artifact_service)."""
        try:
            chunks = self._store.read(
                request.handle,
                self._tenant_of(context),
                offset=request.offset,
                limit=request.limit,
                chunk_size=self._chunk_size,
            )
            for offset, data in chunks:
                if not context.is_active():
                    return
                yield encode_chunk(offset, data)
        except ExportdError as exc:
            abort(context, exc)

    def GetArtifact(
        self, request: apb.GetArtifactRequest, context: grpc.ServicerContext
    ) -> apb.GetArtifactResponse:
        try:
            artifact = self._store.get(request.handle, self._tenant_of(context))
        except ExportdError as exc:
            abort(context, exc)
        return apb.GetArtifactResponse(artifact=m.artifact_to_proto(artifact))

    def DeleteArtifact(
        self, request: apb.DeleteArtifactRequest, context: grpc.ServicerContext
    ) -> apb.DeleteArtifactResponse:
        try:
            self._store.delete(request.handle, self._tenant_of(context))
        except ExportdError as exc:
            abort(context, exc)
        return apb.DeleteArtifactResponse()

    def RenewArtifact(
        self, request: apb.RenewArtifactRequest, context: grpc.ServicerContext
    ) -> apb.RenewArtifactResponse:
        try:
            ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else None
            if ttl is not None and ttl <= 0:
                raise InvalidArgument("ttl must be positive", reason="BAD_OPTION")
            artifact = self._store.renew(request.handle, self._tenant_of(context), ttl)
        except ExportdError as exc:
            abort(context, exc)
        return apb.RenewArtifactResponse(artifact=m.artifact_to_proto(artifact))
