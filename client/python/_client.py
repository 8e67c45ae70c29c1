"""ExportClient: export Arrow data to files through an exportd server, follow jobs, fetch files."""

from __future__ import annotations

import collections
import hashlib
import io
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import grpc
import pyarrow as pa
from exportd.v1 import artifact_service_pb2 as apb
from exportd.v1 import artifact_service_pb2_grpc as apb_grpc
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc

from ._options import Column, build_spec
from .errors import (
    ChecksumMismatchError,
    ExportdError,
    StatusCode,
    error_for,
    from_rpc_error,
)

DataSource: TypeAlias = pa.Table | pa.RecordBatchReader | Iterable[pa.RecordBatch]

_STATES = {
    epb.JOB_STATE_QUEUED: "queued",
    epb.JOB_STATE_RECEIVING: "receiving",
    epb.JOB_STATE_RENDERING: "rendering",
    epb.JOB_STATE_SUCCEEDED: "succeeded",
    epb.JOB_STATE_FAILED: "failed",
    epb.JOB_STATE_CANCELLED: "cancelled",
}
_STATE_NUMBERS = {name: number for number, name in _STATES.items()}
_FORMAT_NAMES = {1: "csv", 2: "tsv", 3: "xlsx", 4: "pdf", 5: "parquet", 6: "arrow", 7: "jsonl"}


@dataclass(frozen=True)
class Progress:
    """A snapshot of an export's advance: ``state`` is queued, receiving, rendering, succeeded,
    failed or cancelled; ``fraction`` runs 0..1 (0 while unknown); ``eta`` is seconds or None."""

    state: str
    queue_position: int
    rows_done: int
    rows_total: int
    bytes_received: int
    bytes_written: int
    fraction: float
    elapsed: float
    eta: float | None

    @classmethod
    def _from(cls, p: epb.Progress) -> Progress:
        return cls(
            state=_STATES.get(p.state, "unknown"),
            queue_position=p.queue_position,
            rows_done=p.rows_done,
            rows_total=p.rows_total,
            bytes_received=p.bytes_received,
            bytes_written=p.bytes_written,
            fraction=p.fraction,
            elapsed=p.elapsed.ToNanoseconds() / 1e9,
            eta=p.eta.ToNanoseconds() / 1e9 if p.HasField("eta") else None,
        )


@dataclass(frozen=True)
class Warning:
    """Something the exporter changed to make a valid file, counted."""

    code: str
    count: int
    message: str


@dataclass(frozen=True)
class ExportResult:
    """A finished export. ``handle`` is set when the file is kept; ``path`` when the SDK wrote it;
    ``data`` when it was streamed with no output given."""

    job_id: str
    handle: str
    size: int
    sha256: str
    rows: int
    media_type: str
    file_name: str
    warnings: tuple[Warning, ...] = ()
    expires_at: float | None = None
    path: Path | None = None
    data: bytes | None = None

    @classmethod
    def _from(cls, c: epb.ExportCompleted, **extra: object) -> ExportResult:
        return cls(
            job_id=c.job_id,
            handle=c.handle,
            size=c.size_bytes,
            sha256=c.sha256,
            rows=c.rows,
            media_type=c.media_type,
            file_name=c.file_name,
            warnings=tuple(Warning(w.code, w.count, w.message) for w in c.warnings),
            expires_at=c.expires_at.ToNanoseconds() / 1e9 if c.HasField("expires_at") else None,
            **extra,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class JobInfo:
    """A job as the server records it."""

    job_id: str
    state: str
    format: str
    file_name: str
    priority: int
    request_id: str
    created_at: float
    progress: Progress
    result: ExportResult | None
    error: ExportdError | None

    @classmethod
    def _from(cls, j: epb.Job) -> JobInfo:
        error = None
        if j.HasField("error"):
            try:
                code = StatusCode(j.error.code)
            except ValueError:
                code = StatusCode.UNKNOWN
            error = error_for(code, j.error.message, reason=j.error.reason)
        return cls(
            job_id=j.job_id,
            state=_STATES.get(j.state, "unknown"),
            format=_FORMAT_NAMES.get(j.format, "unknown"),
            file_name=j.file_name,
            priority=j.priority,
            request_id=j.request_id,
            created_at=j.create_time.ToNanoseconds() / 1e9,
            progress=Progress._from(j.progress),
            result=ExportResult._from(j.result) if j.HasField("result") else None,
            error=error,
        )


@dataclass(frozen=True)
class ArtifactInfo:
    """A kept file's metadata."""

    handle: str
    job_id: str
    file_name: str
    media_type: str
    size: int
    sha256: str
    created_at: float
    expires_at: float

    @classmethod
    def _from(cls, a: apb.Artifact) -> ArtifactInfo:
        return cls(
            handle=a.handle,
            job_id=a.job_id,
            file_name=a.file_name,
            media_type=a.media_type,
            size=a.size_bytes,
            sha256=a.sha256,
            created_at=a.create_time.ToNanoseconds() / 1e9,
            expires_at=a.expire_time.ToNanoseconds() / 1e9,
        )


_MESSAGE_LIMIT = 8 << 20
"""The largest gRPC message either side sends or takes: the server's default limit."""
_MAX_PIECE = _MESSAGE_LIMIT - 64
"""The largest data message payload within that limit, framing included."""

# A piece of the IPC stream: bytes pyarrow wrote, a view of a batch's own buffer, or a cut of one.
_Part: TypeAlias = bytes | memoryview | pa.Buffer


class _Pieces(io.RawIOBase):
    """Collects what pyarrow's IPC writer writes, to be sent as data messages."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: collections.deque[_Part] = collections.deque()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview | pa.Buffer) -> int:
        # pyarrow hands a record batch's bodies over as pa.Buffer views of the batch's own
        # memory: kept as they are, the only copy the SDK makes is the one into the message.
        # Anything else (flatbuffer headers, padding) may be a scratch area and is copied.
        data: _Part = b if isinstance(b, bytes | pa.Buffer) else bytes(b)
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def take(self, piece_size: int, *, final: bool = False) -> Iterator[list[_Part]]:
        """The stream written so far as groups of exactly ``piece_size`` bytes (and the rest when
        ``final``), each to become one data message; a part is cut where a message ends.

        pyarrow hands over each buffer on its own, and a group is joined only once, into the
        message itself. Messages of one fixed size bound what an upload holds in flight by
        bytes, whatever the size of a record batch: the server's peak memory then no longer
        grows with the batches a client chooses.
        """
        while self.size >= piece_size or (final and self.size):
            group: list[_Part] = []
            need = piece_size
            while need and self.parts:
                part = self.parts[0]
                if len(part) <= need:
                    group.append(self.parts.popleft())
                    need -= len(part)
                else:
                    view = memoryview(part)
                    group.append(view[:need])
                    self.parts[0] = view[need:]
                    need = 0
            self.size -= piece_size - need
            yield group


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _data_message(parts: list[_Part]) -> bytes:
    """ExportRequest{data{arrow_ipc}} encoded by hand from ``parts``: one copy of the bytes,
    where building and serializing the message would make two more."""
    size = sum(len(p) for p in parts)
    inner = b"\x0a" + _varint(size)
    return b"".join([b"\x12", _varint(len(inner) + size), inner, *parts])


def _serialize_export_request(request: epb.ExportRequest | bytes) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _parse_export_response(raw: bytes) -> epb.ExportResponse | tuple[int, memoryview]:
    """An ExportResponse; a file chunk comes back as (offset, data view) without protobuf's copy."""
    if raw[:1] == b"\x1a":
        try:
            size, pos = _read_varint(raw, 1)
            if pos + size == len(raw):
                offset, data = _parse_chunk(raw[pos:])
                return offset, data
        except (IndexError, ValueError):
            pass
    return epb.ExportResponse.FromString(raw)


def _parse_chunk(raw: bytes) -> tuple[int, memoryview]:
    """A ReadArtifactResponse as (offset, data view), without protobuf's copy of the data."""
    offset, data, pos = 0, memoryview(b""), 0
    try:
        while pos < len(raw):
            tag, pos = _read_varint(raw, pos)
            if tag == 0x08:
                offset, pos = _read_varint(raw, pos)
            elif tag == 0x12:
                size, pos = _read_varint(raw, pos)
                data = memoryview(raw)[pos : pos + size]
                pos += size
            else:
                raise ValueError(f"unexpected field tag {tag}")
    except (IndexError, ValueError):
        message = apb.ReadArtifactResponse.FromString(raw)
        return message.offset, memoryview(message.data)
    return offset, data


def _batches(data: DataSource) -> tuple[pa.Schema, Iterator[pa.RecordBatch], int]:
    if isinstance(data, pa.Table):
        return data.schema, iter(data.to_batches()), data.num_rows
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, iter(data), 0
    it: Iterator[pa.RecordBatch] = iter(data)
    first = next(it, None)
    if first is None:
        raise ValueError("an iterable of record batches needs at least one batch for its schema")

    def chain() -> Iterator[pa.RecordBatch]:
        yield first
        yield from it

    return first.schema, chain(), 0


def _cancel_when(event: threading.Event, call: Any) -> None:
    event.wait()
    call.cancel()


class ExportClient:
    """A connection to an exportd server.

    ``target`` is "host:port". ``token`` is sent as a bearer token when the server has auth on;
    ``root_certificates`` (and a client key/certificate for mutual TLS) switch to TLS. Use it as a
    context manager, or call close(). Thread-safe: one client may run several exports at once.
    ``piece_size`` is the size of each data message of an upload (the last one may be smaller):
    the default 2 MiB keeps both sides' memory small at full speed; the server's limit on a
    message (8 MiB by default) caps it.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        private_key: bytes | None = None,
        certificate_chain: bytes | None = None,
        piece_size: int = 2 << 20,
    ) -> None:
        if not 1 <= piece_size <= _MAX_PIECE:
            raise ValueError(f"piece_size must be 1 to {_MAX_PIECE} bytes, not {piece_size}")
        options = [
            # File chunks are at most 1 MiB and data messages piece_size, plus framing; allow
            # the server's 8 MiB.
            ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
            ("grpc.max_send_message_length", _MESSAGE_LIMIT),
            # Keep long exports alive through idle middleboxes, within the server's ping policy.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if root_certificates is not None or certificate_chain is not None:
            creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._exports = epb_grpc.ExportServiceStub(self._channel)
        self._artifacts = apb_grpc.ArtifactServiceStub(self._channel)
        # The two bulk paths skip protobuf's copies of the bytes: data messages are encoded by
        # hand, and downloads are parsed into views (see _data_message and _parse_chunk).
        self._export_call = self._channel.stream_stream(
            "/exportd.v1.ExportService/Export",
            request_serializer=_serialize_export_request,
            response_deserializer=_parse_export_response,
        )
        self._read_chunks = self._channel.unary_stream(
            "/exportd.v1.ArtifactService/ReadArtifact",
            request_serializer=apb.ReadArtifactRequest.SerializeToString,
            response_deserializer=_parse_chunk,
        )
        self._piece_size = piece_size

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> ExportClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- export --------------------------------------------------------------------------------

    def export(
        self,
        data: DataSource,
        format: str,
        *,
        output: str | Path | BinaryIO | None = None,
        delivery: str | None = None,
        options: Mapping[str, object] | None = None,
        columns: Sequence[str | Column] | None = None,
        file_name: str = "",
        priority: int = 0,
        request_id: str = "",
        expected_rows: int | None = None,
        ttl: float | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_accepted: Callable[[str], None] | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
    ) -> ExportResult:
        """Export ``data`` (a Table, RecordBatchReader or iterable of batches) as ``format``.

        With delivery "stream" (the default) the file comes back on the stream: written to
        ``output`` (a path — written to "<path>.<random>.part", then renamed — or a binary file
        object), or
        returned in ``result.data`` when no output is given. With delivery "handle" the server
        keeps the file and ``result.handle`` names it for fetch(). The received bytes are checked
        against the server's sha256. ``options`` are the format's options by name (see the
        contract's *Options messages), plus "timezone" and "null_text". Setting ``cancel`` stops
        the export.
        """
        if delivery is None:
            delivery = "stream"
        name = file_name or (Path(output).name if isinstance(output, str | Path) else "")
        schema, batches, rows = _batches(data)
        spec = build_spec(
            format,
            options=options,
            delivery=delivery,
            file_name=name,
            priority=priority,
            request_id=request_id,
            columns=columns,
            expected_rows=expected_rows if expected_rows is not None else rows,
            ttl=ttl,
        )
        streamed = delivery != "handle"
        sink: BinaryIO | None = None
        part: Path | None = None
        buffer: io.BytesIO | None = None
        if streamed:
            if isinstance(output, str | Path):
                # Unique per export, so two exports to the same path never write one file.
                part = Path(f"{output}.{secrets.token_hex(4)}.part")
                sink = open(part, "wb")  # noqa: SIM115 - closed in finally
            elif output is not None:
                sink = output
            else:
                buffer = io.BytesIO()
                sink = buffer
        digest = hashlib.sha256()
        written = 0
        completed: epb.ExportCompleted | None = None
        call = self._export_call(
            self._requests(spec, schema, batches), metadata=self._metadata, timeout=timeout
        )
        stopper = None
        if cancel is not None:
            stopper = threading.Thread(target=_cancel_when, args=(cancel, call), daemon=True)
            stopper.start()
        try:
            for response in call:
                if isinstance(response, tuple):  # a file chunk: (offset, data view)
                    offset, data = response
                    if sink is None:
                        continue
                    if offset != written:
                        raise error_for(
                            StatusCode.DATA_LOSS, f"chunk at offset {offset}, expected {written}"
                        )
                    sink.write(data)
                    digest.update(data)
                    written += len(data)
                    continue
                kind = response.WhichOneof("kind")
                if kind == "progress" and on_progress is not None:
                    on_progress(Progress._from(response.progress))
                elif kind == "accepted" and on_accepted is not None:
                    on_accepted(response.accepted.job_id)
                elif kind == "completed":
                    completed = response.completed
        except grpc.RpcError as exc:
            if part is not None:
                part.unlink(missing_ok=True)
            raise from_rpc_error(exc) from None
        except BaseException:
            call.cancel()  # type: ignore[no-untyped-call]
            if part is not None:
                part.unlink(missing_ok=True)
            raise
        finally:
            if cancel is not None:
                cancel.set()  # releases the stopper thread; the call is over either way
            if part is not None and sink is not None:
                sink.close()
        if completed is None:
            raise error_for(StatusCode.UNKNOWN, "the server ended the export without a result")
        if (
            streamed
            and sink is not None
            and completed.sha256
            and written
            and (digest.hexdigest() != completed.sha256 or written != completed.size_bytes)
        ):
            if part is not None:
                part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                StatusCode.DATA_LOSS,
                f"received {written} bytes with sha256 {digest.hexdigest()}, server sent "
                f"{completed.size_bytes} bytes with sha256 {completed.sha256}",
                reason="CHECKSUM_MISMATCH",
            )
        path = None
        if part is not None:
            path = Path(output)  # type: ignore[arg-type]
            os.replace(part, path)
        return ExportResult._from(
            completed, path=path, data=buffer.getvalue() if buffer is not None else None
        )

    def _requests(
        self, spec: epb.ExportSpec, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> Iterator[epb.ExportRequest | bytes]:
        yield epb.ExportRequest(spec=spec)
        pieces = _Pieces()
        with pa.ipc.new_stream(pieces, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
                for group in pieces.take(self._piece_size):
                    yield _data_message(group)
        for group in pieces.take(self._piece_size, final=True):
            yield _data_message(group)
        yield epb.ExportRequest(end=epb.ExportEnd())

    # -- jobs ----------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> JobInfo:
        """A job's current record."""
        response = self._unary(self._exports.GetJob, epb.GetJobRequest(job_id=job_id))
        return JobInfo._from(response.job)

    def watch(
        self, job_id: str, *, timeout: float | None = None
    ) -> Iterator[Progress | ExportResult]:
        """Follow a job to its end: Progress snapshots, then the ExportResult; a failed or
        cancelled job raises its error."""
        call = self._exports.WatchJob(
            epb.WatchJobRequest(job_id=job_id), metadata=self._metadata, timeout=timeout
        )
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "progress":
                    yield Progress._from(event.progress)
                elif kind == "completed":
                    yield ExportResult._from(event.completed)
                    return
                elif kind == "failed":
                    try:
                        code = StatusCode(event.failed.code)
                    except ValueError:
                        code = StatusCode.UNKNOWN
                    raise error_for(code, event.failed.message, reason=event.failed.reason)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def cancel(self, job_id: str, reason: str = "") -> JobInfo:
        """Ask the server to cancel a job."""
        response = self._unary(
            self._exports.CancelJob, epb.CancelJobRequest(job_id=job_id, reason=reason)
        )
        return JobInfo._from(response.job)

    def list_jobs(self, *, page_size: int = 50, states: Sequence[str] = ()) -> Iterator[JobInfo]:
        """The caller's jobs, newest first, fetched a page at a time."""
        token = ""
        while True:
            request = epb.ListJobsRequest(
                page_size=page_size,
                page_token=token,
                states=[_STATE_NUMBERS[s] for s in states],
            )
            response = self._unary(self._exports.ListJobs, request)
            for job in response.jobs:
                yield JobInfo._from(job)
            token = response.next_page_token
            if not token:
                return

    # -- artifacts -----------------------------------------------------------------------------

    def get_artifact(self, handle: str) -> ArtifactInfo:
        """A kept file's metadata."""
        response = self._unary(self._artifacts.GetArtifact, apb.GetArtifactRequest(handle=handle))
        return ArtifactInfo._from(response.artifact)

    def delete_artifact(self, handle: str) -> None:
        """Remove a kept file now."""
        self._unary(self._artifacts.DeleteArtifact, apb.DeleteArtifactRequest(handle=handle))

    def renew_artifact(self, handle: str, ttl: float | None = None) -> ArtifactInfo:
        """Extend a kept file's life by ``ttl`` seconds from now (the server default when None)."""
        request = apb.RenewArtifactRequest(handle=handle)
        if ttl is not None:
            request.ttl.FromNanoseconds(int(ttl * 1e9))
        response = self._unary(self._artifacts.RenewArtifact, request)
        return ArtifactInfo._from(response.artifact)

    def read(
        self, handle: str, *, offset: int = 0, limit: int = 0
    ) -> Iterator[tuple[int, memoryview]]:
        """(offset, data) chunks of a kept file from ``offset``; ≤ ``limit`` bytes (0: all).

        ``data`` is a read-only memoryview of the received message (no copy): write it, hash
        it or join it as it is, and call ``bytes(data)`` only where bytes are needed.
        """
        call = self._read_chunks(
            apb.ReadArtifactRequest(handle=handle, offset=offset, limit=limit),
            metadata=self._metadata,
        )
        try:
            yield from call
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # type: ignore[no-untyped-call]

    def fetch(
        self,
        handle: str,
        path: str | Path,
        *,
        resume: bool = True,
        on_bytes: Callable[[int, int], None] | None = None,
        retries: int = 3,
    ) -> ArtifactInfo:
        """Download a kept file to ``path``, resuming a partial file already there (and after a
        dropped connection, up to ``retries`` times), then verify its sha256. A file that fails
        verification is removed and ChecksumMismatchError raised.

        Before each retry it waits for the connection to come back (1 s, then 2 s, 4 s, … at most
        each), so a link that is down for a moment does not use up every retry at once. When the
        retries run out, UnavailableError is raised and the partial file stays for a later
        ``fetch`` to resume."""
        info = self.get_artifact(handle)
        target = Path(path)
        have = target.stat().st_size if resume and target.exists() else 0
        if have > info.size:
            have = 0
        attempts = 0
        with open(target, "r+b" if have else "wb") as f:
            f.truncate(have)
            f.seek(have)
            while have < info.size:
                try:
                    for offset, data in self.read(handle, offset=have):
                        if offset != have:
                            raise error_for(
                                StatusCode.DATA_LOSS, f"chunk at {offset}, expected {have}"
                            )
                        f.write(data)
                        have += len(data)
                        if on_bytes is not None:
                            on_bytes(have, info.size)
                except ExportdError as exc:
                    attempts += 1
                    if exc.code is not StatusCode.UNAVAILABLE or attempts > retries:
                        raise
                    f.flush()
                    # A call on a channel in reconnect backoff fails at once: wait it out.
                    ready = grpc.channel_ready_future(self._channel)
                    try:
                        ready.result(timeout=min(30.0, 2.0 ** (attempts - 1)))
                    except grpc.FutureTimeoutError:
                        ready.cancel()
        digest = hashlib.sha256()
        with open(target, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != info.sha256:
            target.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                StatusCode.DATA_LOSS,
                f"{target} has sha256 {digest.hexdigest()}, expected {info.sha256}; removed it",
                reason="CHECKSUM_MISMATCH",
            )
        return info

    def _unary(self, method: Callable[..., Any], request: object) -> Any:
        try:
            return method(request, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
