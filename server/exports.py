"""The export use case: admit a job, receive its Arrow stream, render it, deliver the file.

``Exports.run`` is a generator of domain events (Accepted, JobProgress, Chunk, Completed) that the
servicer turns into protobuf one for one; failures are raised as ExportdError after the job has
been marked. Everything an export touches — its governor slot, its reader thread, its scratch
directory, its temp artifact — is released in one ``finally``, whatever ends it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import queue
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import pyarrow as pa

from .artifacts import ArtifactStore, PendingArtifact
from .config import ExportLimits
from .errors import (
    Cancelled,
    DeadlineExceeded,
    ExportdError,
    InvalidArgument,
    ResourceExhausted,
)
from .exporters import FORMATS, EncoderContext, ExportWarnings, create_encoder
from .exporters.options import Column, CommonOptions, FormatOptions
from .governor import Governor
from .jobs import ExportWarning, Job, JobFailure, JobRegistry, JobResult, JobState, Progress

log = logging.getLogger("exportd.exports")


class Delivery(Enum):
    """How the finished file reaches the client."""

    STREAM = "stream"
    HANDLE = "handle"
    STREAM_AND_HANDLE = "stream_and_handle"

    @property
    def streams(self) -> bool:
        return self is not Delivery.HANDLE

    @property
    def keeps(self) -> bool:
        return self is not Delivery.STREAM


@dataclass(frozen=True)
class ExportSpec:
    """What to make, validated: the servicer builds it from the contract's ExportSpec."""

    format: str
    options: FormatOptions
    common: CommonOptions = field(default_factory=CommonOptions)
    delivery: Delivery = Delivery.STREAM
    priority: int = 0
    request_id: str = ""
    columns: tuple[Column, ...] = ()
    expected_rows: int = 0
    ttl: float | None = None


# -- inputs from the client ------------------------------------------------------------------


@dataclass(frozen=True)
class DataPiece:
    """A piece of the Arrow IPC stream (a view into the received message, not a copy)."""

    data: bytes | memoryview


@dataclass(frozen=True)
class EndOfData:
    """The client has sent everything."""


@dataclass(frozen=True)
class CancelRequest:
    """The client asks to stop."""

    reason: str = ""


Input = DataPiece | EndOfData | CancelRequest


# -- events to the client --------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    job_id: str
    queue_position: int


@dataclass(frozen=True)
class JobProgress:
    progress: Progress


@dataclass(frozen=True)
class Chunk:
    offset: int
    data: bytes


@dataclass(frozen=True)
class Completed:
    job_id: str
    result: JobResult


Event = Accepted | JobProgress | Chunk | Completed


class Exports:
    """Runs exports end to end with the governor, the job registry and the artifact store."""

    def __init__(
        self,
        *,
        jobs: JobRegistry,
        governor: Governor,
        artifacts: ArtifactStore,
        scratch_root: Path,
        limits: ExportLimits | None = None,
        chunk_size: int = 1 << 20,
        progress_interval: float = 0.1,
    ) -> None:
        self.jobs = jobs
        self.governor = governor
        self.artifacts = artifacts
        self.scratch_root = scratch_root
        self.limits = limits or ExportLimits()
        self.chunk_size = chunk_size
        self.progress_interval = progress_interval
        scratch_root.mkdir(parents=True, exist_ok=True)
        for leftover in scratch_root.iterdir():  # crash leftovers: nobody owns them any more
            shutil.rmtree(leftover, ignore_errors=True)

    def run(
        self,
        spec: ExportSpec,
        inputs: Iterator[Input],
        *,
        tenant: str = "",
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[Event]:
        """Run one export, yielding its events; raises ExportdError when it does not succeed."""
        job, created = self.jobs.create(
            tenant=tenant,
            format=spec.format,
            file_name=spec.common.file_name,
            priority=spec.priority,
            request_id=spec.request_id,
            delivery=spec.delivery.value,
        )
        if not created:
            # An idempotent retry: report the existing job instead of exporting twice.
            yield Accepted(job.job_id, 0)
            yield from self.follow(job, is_active=is_active)
            return
        log.info(
            "job created", extra={"job_id": job.job_id, "tenant": tenant, "format": spec.format}
        )
        try:
            ticket = self.governor.enqueue(job.job_id, spec.priority, tenant=tenant)
        except ExportdError as exc:
            self.jobs.fail(job, JobFailure(exc.code, exc.message, exc.reason))
            raise
        try:
            position = ticket.position
            yield Accepted(job.job_id, position)
            while not ticket.wait(self.progress_interval):
                self._check_cancel(job, is_active)
                now = ticket.position
                if now != position:
                    position = now
                    progress = Progress(JobState.QUEUED, queue_position=position)
                    self.jobs.report(job, progress)
                    yield JobProgress(progress)
            yield from self._execute(job, spec, inputs, is_active)
        except ExportdError as exc:
            self.jobs.fail(job, JobFailure(exc.code, exc.message, exc.reason))
            log.info(
                "job ended: %s %s",
                exc.code,
                exc.message,
                extra={"job_id": job.job_id, "tenant": tenant},
            )
            raise
        except GeneratorExit:
            # The servicer stopped listening: the client went away mid-export.
            self.jobs.fail(job, JobFailure("CANCELLED", "the client went away", "CLIENT_GONE"))
            raise
        except Exception as exc:
            log.exception("job failed unexpectedly", extra={"job_id": job.job_id, "tenant": tenant})
            self.jobs.fail(job, JobFailure("INTERNAL", f"internal error: {exc}", "INTERNAL"))
            raise
        finally:
            ticket.release()

    def follow(self, job: Job, *, is_active: Callable[[], bool] = lambda: True) -> Iterator[Event]:
        """Events of an existing job from now to its end, as a watcher sees them."""
        for snapshot in self.jobs.watch(job, is_active=is_active):
            if snapshot.state is JobState.SUCCEEDED and snapshot.result is not None:
                yield Completed(job.job_id, snapshot.result)
                return
            if snapshot.state.terminal:
                error = snapshot.error or JobFailure(
                    "UNKNOWN", "the job ended without a result", "UNKNOWN"
                )
                raise _error_from_failure(error)
            yield JobProgress(snapshot.progress)

    @staticmethod
    def _check_cancel(job: Job, is_active: Callable[[], bool]) -> None:
        if job.cancel_requested.is_set():
            raise Cancelled(job.cancel_reason or "cancelled", reason="CANCELLED_BY_REQUEST")
        if not is_active():
            raise Cancelled("the client went away or its deadline passed", reason="CLIENT_GONE")

    def _execute(
        self, job: Job, spec: ExportSpec, inputs: Iterator[Input], is_active: Callable[[], bool]
    ) -> Iterator[Event]:
        """Receive and render on a worker thread while this generator sends chunks and progress.

        Decoding, encoding, hashing and the artifact write (the worker) then overlap with gRPC
        sending (this thread); the sink's bounded buffer holds the worker back when the client
        reads slowly, so memory stays flat.
        """
        info = FORMATS[spec.format]
        started = time.monotonic()
        self.jobs.set_state(job, JobState.RECEIVING, rows_total=spec.expected_rows)
        scratch = self.scratch_root / job.job_id
        if info.spools:
            scratch.mkdir()
        pending: PendingArtifact | None = None
        feed = _Feed(inputs, job, is_active, self.limits, self._check_cancel)
        sink: _TeeSink | None = None
        worker: threading.Thread | None = None
        try:
            if spec.delivery.keeps:
                pending = self.artifacts.begin(
                    tenant=job.tenant,
                    job_id=job.job_id,
                    file_name=spec.common.file_name,
                    media_type=info.media_type,
                    ttl=spec.ttl,
                )
            sink = _TeeSink(
                pending,
                stream=spec.delivery.streams,
                chunk_size=self.chunk_size,
                max_buffer=2 * self.chunk_size,
            )
            render = _Render(self, job, spec, feed, sink, scratch, is_active)
            worker = threading.Thread(target=render.run, name=f"render-{job.job_id}", daemon=True)
            worker.start()
            # Reported once the worker runs, so it reads the first data while this is sent.
            yield JobProgress(job.progress)
            last_report = time.monotonic()
            state = job.state
            while not render.done.is_set():
                sink.wait_ready(self.progress_interval)
                yield from sink.drain()
                if job.state is not state:
                    state = job.state
                    yield JobProgress(job.progress)
                    last_report = time.monotonic()
                elif time.monotonic() - last_report >= self.progress_interval:
                    last_report = time.monotonic()
                    yield self._progress(job, spec, render, feed, sink, started)
            worker.join()
            if render.error is not None:
                raise render.error
            yield from sink.drain(final=True)
            if job.state is not state:  # the worker finished before the RENDERING was reported
                yield JobProgress(job.progress)
            if pending is not None:
                artifact = pending.commit()
                handle, size, digest = artifact.handle, artifact.size, artifact.sha256
                expires: float | None = artifact.expires_at
                pending = None
            else:
                handle, size, digest, expires = "", sink.size, sink.hexdigest(), None
            result = JobResult(
                size=size,
                sha256=digest,
                rows=render.rows,
                media_type=info.media_type,
                file_name=spec.common.file_name,
                handle=handle,
                expires_at=expires,
                warnings=tuple(ExportWarning(c, n, m) for c, n, m in render.warnings.items()),
            )
            self.jobs.succeed(job, result)
            yield JobProgress(job.progress)
            log.info(
                "job succeeded: %d rows, %d bytes",
                render.rows,
                size,
                extra={"job_id": job.job_id, "tenant": job.tenant},
            )
            yield Completed(job.job_id, result)
        finally:
            feed.close()
            if sink is not None:
                sink.close()  # a worker blocked on a full buffer gives up at once
            if worker is not None:
                worker.join(10.0)
            if pending is not None:
                pending.abort()
            if info.spools:
                shutil.rmtree(scratch, ignore_errors=True)

    def _progress(
        self,
        job: Job,
        spec: ExportSpec,
        render: _Render,
        feed: _Feed,
        sink: _TeeSink,
        started: float,
    ) -> JobProgress:
        elapsed = time.monotonic() - started
        if job.state is JobState.RENDERING and render.late_total:
            fraction = min(0.99, render.late_done / render.late_total)
        else:
            total = spec.expected_rows
            fraction = min(0.99, render.rows / total) if total else 0.0
        progress = Progress(
            state=job.state,
            rows_done=render.rows,
            rows_total=spec.expected_rows,
            bytes_received=feed.received,
            bytes_written=sink.size,
            fraction=fraction,
            elapsed=elapsed,
            eta=_eta(elapsed, fraction),
        )
        self.jobs.report(job, progress)
        return JobProgress(progress)


_SLICE_ROWS = 16_384
"""Rows handed to an encoder at a time; bounds how long a cancel waits."""


class _Render:
    """The worker side of one export: decode, validate, select, encode, finish."""

    def __init__(
        self,
        exports: Exports,
        job: Job,
        spec: ExportSpec,
        feed: _Feed,
        sink: _TeeSink,
        scratch: Path,
        is_active: Callable[[], bool],
    ) -> None:
        self._exports = exports
        self._job = job
        self._spec = spec
        self._feed = feed
        self._sink = sink
        self._scratch = scratch
        self._is_active = is_active
        self.rows = 0
        self.late_done = 0
        self.late_total = 0
        self.warnings = ExportWarnings()
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        encoder = None
        try:
            limits = self._exports.limits
            reader = _open_stream(_IpcGuard(self._feed, limits.max_batch_bytes))
            select, out_schema, common = _plan_columns(reader.schema, self._spec, limits)
            ctx = EncoderContext(
                sink=self._sink,
                common=common,
                scratch_dir=self._scratch,
                warnings=self.warnings,
                progress=self._on_late_progress,
            )
            encoder = create_encoder(self._spec.format, out_schema, self._spec.options, ctx)
            while True:
                batch = _next_batch(reader)
                if batch is None:
                    break
                if batch.nbytes > limits.max_batch_bytes:
                    raise InvalidArgument(
                        f"a record batch of {batch.nbytes} bytes is over the limit of "
                        f"{limits.max_batch_bytes}; send smaller batches",
                        reason="BATCH_TOO_LARGE",
                    )
                if self.rows + batch.num_rows > limits.max_rows:
                    raise ResourceExhausted(
                        f"the export carries more than {limits.max_rows} rows",
                        reason="TOO_MANY_ROWS",
                    )
                selected = select(batch)
                # Large batches go to the encoder in zero-copy slices, so a cancel or a vanished
                # client is noticed within a slice's work (a fraction of a second), not a batch's.
                for start in range(0, max(selected.num_rows, 1), _SLICE_ROWS):
                    if start:
                        self._exports._check_cancel(self._job, self._is_active)
                    encoder.write(selected.slice(start, _SLICE_ROWS))
                self.rows += batch.num_rows
            self._feed.expect_end()
            self._exports.jobs.set_state(
                self._job,
                JobState.RENDERING,
                rows_done=self.rows,
                bytes_received=self._feed.received,
            )
            self._sink.notify()
            encoder.finish()
            encoder = None
        except BaseException as exc:  # handed to the export's generator thread
            self.error = exc
            if encoder is not None:
                encoder.abort()
        finally:
            self.done.set()
            self._sink.notify()

    def _on_late_progress(self, done: int, total: int) -> None:
        self._exports._check_cancel(self._job, self._is_active)
        self.late_done, self.late_total = done, total


def _eta(elapsed: float, fraction: float) -> float | None:
    if fraction <= 0.0:
        return None
    return elapsed * (1.0 - fraction) / fraction


def _error_from_failure(failure: JobFailure) -> ExportdError:
    from . import errors

    for cls in errors.ExportdError.__subclasses__():
        if cls.code == failure.code:
            return cls(failure.message, reason=failure.reason)
    error = ExportdError(failure.message, reason=failure.reason)
    error.code = failure.code
    return error


# -- Arrow input -----------------------------------------------------------------------------


def _open_stream(feed: io.RawIOBase) -> pa.ipc.RecordBatchStreamReader:
    try:
        return pa.ipc.open_stream(feed)
    except pa.ArrowInvalid as exc:
        raise InvalidArgument(
            f"the data is not a valid Arrow IPC stream: {exc}", reason="MALFORMED_ARROW"
        ) from exc
    except OSError as exc:
        raise InvalidArgument(
            f"the Arrow IPC stream could not be read: {exc}", reason="MALFORMED_ARROW"
        ) from exc


def _next_batch(reader: pa.ipc.RecordBatchStreamReader) -> pa.RecordBatch | None:
    try:
        batch = reader.read_next_batch()
        batch.validate(full=True)
    except StopIteration:
        return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise InvalidArgument(
            f"malformed Arrow record batch: {exc}", reason="MALFORMED_ARROW"
        ) from exc
    except OSError as exc:
        raise InvalidArgument(
            f"the Arrow IPC stream broke off: {exc}", reason="MALFORMED_ARROW"
        ) from exc
    return batch


def _plan_columns(
    schema: pa.Schema, spec: ExportSpec, limits: ExportLimits
) -> tuple[Callable[[pa.RecordBatch], pa.RecordBatch], pa.Schema, CommonOptions]:
    """Resolve the spec's column selection against the uploaded schema, once."""
    if len(schema) > limits.max_columns:
        raise InvalidArgument(
            f"the table has {len(schema)} columns; the limit is {limits.max_columns}",
            reason="TOO_MANY_COLUMNS",
        )
    if not spec.columns:
        return (lambda batch: batch), schema, spec.common
    names = schema.names
    indices: list[int] = []
    for column in spec.columns:
        matches = [i for i, name in enumerate(names) if name == column.source]
        if not matches:
            shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
            raise InvalidArgument(
                f"column {column.source!r} is not in the uploaded data (columns: {shown})",
                reason="UNKNOWN_COLUMN",
            )
        indices.append(matches[0])
    headers = [c.header or c.source for c in spec.columns]
    fields = [schema.field(i).with_name(h) for i, h in zip(indices, headers, strict=True)]
    out_schema = pa.schema(fields, metadata=schema.metadata)
    formats = {
        h: c.number_format for h, c in zip(headers, spec.columns, strict=True) if c.number_format
    }
    common = replace(spec.common, number_formats={**spec.common.number_formats, **formats})

    def select(batch: pa.RecordBatch) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays([batch.column(i) for i in indices], schema=out_schema)

    return select, out_schema, common


_CONTINUATION = 0xFFFFFFFF
_MAX_METADATA = 64 << 20
_RECORD_BATCH, _DICTIONARY_BATCH = 3, 2


class _IpcGuard(io.RawIOBase):
    """Passes the Arrow IPC stream through to pyarrow, sizing every batch before it is decoded.

    A batch's decoded size is known from its message header (buffer lengths) and, with LZ4/ZSTD
    body compression, from the 8-byte uncompressed length in front of each buffer. A batch over
    ``max_batch_bytes`` is refused (INVALID_ARGUMENT, ``BATCH_TOO_LARGE``) before pyarrow
    allocates it, so a small compressed upload cannot inflate to gigabytes. Bytes stream through
    as pyarrow asks for them; only the header of the current message is held.
    """

    def __init__(self, feed: _Feed, max_batch_bytes: int) -> None:
        super().__init__()
        self._feed = feed
        self._limit = max_batch_bytes
        self._head = b""  # prefix and metadata of the current message, not yet handed on
        self._body_left = 0
        self._body_pos = 0
        # Compressed buffers of the current body: offset -> (stored length, first 8 bytes).
        self._prefixes: dict[int, tuple[int, bytearray]] = {}
        self._ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes | memoryview:
        if size < 0:
            size = 1 << 62
        if not self._head and not self._body_left and not self._ended:
            self._head = self._next_header()
        if self._head:
            out, self._head = self._head[:size], self._head[size:]
            return out
        if self._ended:
            return self._feed.read(size)
        data = self._feed.read(min(size, self._body_left))
        if not data:
            return data
        start = self._body_pos
        for offset, (_, prefix) in self._prefixes.items():
            if len(prefix) < 8 and offset < start + len(data) and offset + 8 > start:
                lo = max(offset, start)
                prefix += data[lo - start : min(offset + 8, start + len(data)) - start]
        self._body_pos += len(data)
        self._body_left -= len(data)
        if not self._body_left and self._prefixes:
            decoded = 0
            for stored, prefix in self._prefixes.values():
                (length,) = struct.unpack("<q", bytes(prefix))
                decoded += stored - 8 if length == -1 else length  # -1: stored uncompressed
            self._check(decoded)
        return data

    def _next_header(self) -> bytes:
        prefix = bytes(self._feed.read(4))
        if len(prefix) < 4:
            self._ended = True
            return prefix
        (word,) = struct.unpack("<I", prefix)
        if word == _CONTINUATION:
            more = bytes(self._feed.read(4))
            prefix += more
            length = struct.unpack("<i", more)[0] if len(more) == 4 else 0
        else:  # the pre-1.0 format without the continuation marker
            length = struct.unpack("<i", prefix)[0]
        if length <= 0:  # the end of the stream (or nonsense pyarrow refuses): pass the rest
            self._ended = True
            return prefix
        if length > _MAX_METADATA:
            raise InvalidArgument(
                f"an Arrow IPC message header of {length} bytes is over {_MAX_METADATA}",
                reason="MALFORMED_ARROW",
            )
        metadata = bytes(self._feed.read(length))
        try:
            self._plan_body(metadata)
        except (struct.error, IndexError) as exc:
            raise InvalidArgument(
                f"malformed Arrow IPC message header: {exc}", reason="MALFORMED_ARROW"
            ) from exc
        return prefix + metadata

    def _plan_body(self, metadata: bytes) -> None:
        """Read the Message flatbuffer far enough to size its body (Message.fbs)."""
        fb = _Flatbuffer(metadata)
        message = fb.root()
        body_length = fb.scalar(message, 3, "<q", 0)
        if body_length < 0:
            raise IndexError("negative body length")
        self._body_left, self._body_pos = body_length, 0
        self._prefixes = {}
        kind = fb.scalar(message, 1, "<B", 0)
        batch = fb.table(message, 2)
        if kind == _DICTIONARY_BATCH and batch is not None:
            batch = fb.table(batch, 1)
        elif kind != _RECORD_BATCH:
            return
        if batch is None:
            return
        buffers = fb.structs(batch, 2, 16)
        compressed = fb.table(batch, 3) is not None
        plain = 0
        for at in buffers:
            offset, length = struct.unpack_from("<qq", metadata, at)
            if offset < 0 or length < 0 or offset + length > body_length:
                raise IndexError("a buffer lies outside the message body")
            if not compressed:
                plain += length
            elif length >= 8:  # an 8-byte uncompressed length, then the compressed bytes
                self._prefixes[offset] = (length, bytearray())
        self._check(plain)

    def _check(self, decoded: int) -> None:
        if decoded > self._limit:
            raise InvalidArgument(
                f"a record batch decodes to {decoded} bytes, over the limit of {self._limit} "
                "(limits.max_batch_bytes); send smaller batches",
                reason="BATCH_TOO_LARGE",
            )


class _Flatbuffer:
    """Just enough of the flatbuffers wire format to read Arrow's Message header."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def root(self) -> int:
        return int(struct.unpack_from("<I", self._data, 0)[0])

    def _field(self, table: int, index: int) -> int:
        vtable = table - struct.unpack_from("<i", self._data, table)[0]
        vsize = struct.unpack_from("<H", self._data, vtable)[0]
        slot = 4 + 2 * index
        if slot >= vsize:
            return 0
        at = struct.unpack_from("<H", self._data, vtable + slot)[0]
        return table + at if at else 0

    def scalar(self, table: int, index: int, fmt: str, default: int) -> int:
        at = self._field(table, index)
        return int(struct.unpack_from(fmt, self._data, at)[0]) if at else default

    def table(self, table: int, index: int) -> int | None:
        at = self._field(table, index)
        return at + struct.unpack_from("<I", self._data, at)[0] if at else None

    def structs(self, table: int, index: int, size: int) -> list[int]:
        at = self.table(table, index)
        if at is None:
            return []
        count = struct.unpack_from("<I", self._data, at)[0]
        if at + 4 + count * size > len(self._data):
            raise IndexError("a vector runs past the message header")
        return [at + 4 + i * size for i in range(count)]


_DATA_AFTER_END = "data follows the end of the Arrow stream (a second stream or a schema change?)"


class _Feed(io.RawIOBase):
    """The client's data messages as a readable byte stream for pyarrow's IPC reader.

    A reader thread moves messages from the gRPC request iterator into a small bounded queue, so
    the export thread can wait with a timeout (cancel, vanished client, idle limit) instead of
    blocking inside grpc, and HTTP/2 flow control still holds a fast client back.
    """

    def __init__(
        self,
        inputs: Iterator[Input],
        job: Job,
        is_active: Callable[[], bool],
        limits: ExportLimits,
        check_cancel: Callable[[Job, Callable[[], bool]], None],
    ) -> None:
        super().__init__()
        self._inputs = inputs
        self._job = job
        self._is_active = is_active
        self._limits = limits
        self._check_cancel = check_cancel
        # One message waiting (and one more in the reader's hand): enough to overlap receiving
        # with decoding, few enough that a long upload does not raise the server's peak memory.
        # Measured: a second waiting message gained no upload speed and held ~5 MiB more.
        self._queue: queue.Queue[Input | BaseException | None] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._piece = memoryview(b"")
        self._ended = False
        self.received = 0
        self._thread = threading.Thread(target=self._pump, name=f"feed-{job.job_id}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        try:
            for item in self._inputs:
                if not self._put(item) or isinstance(item, EndOfData | CancelRequest):
                    return
            self._put(None)
        except BaseException as exc:  # the RPC broke; the export thread raises it
            self._put(exc)

    def _put(self, item: Input | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def readable(self) -> bool:
        return True

    def _next(self) -> Input | None:
        """The next client message, waiting with checks; None when the stream closed."""
        idle = 0.0
        while True:
            self._check_cancel(self._job, self._is_active)
            if self._stop.is_set():
                raise Cancelled("the export stopped", reason="CLIENT_GONE")
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                idle += 0.1
                if idle >= self._limits.data_timeout:
                    raise DeadlineExceeded(
                        f"no data from the client for {self._limits.data_timeout:.0f} s",
                        reason="DATA_TIMEOUT",
                    ) from None
                continue
            if item is None or isinstance(item, BaseException):
                self._settle()
            if isinstance(item, BaseException):
                raise Cancelled(
                    f"the client's stream broke: {type(item).__name__} {item}".rstrip(),
                    reason="CLIENT_GONE",
                )
            if isinstance(item, CancelRequest):
                raise Cancelled(
                    item.reason or "cancelled by the client", reason="CANCELLED_BY_CLIENT"
                )
            return item

    def _settle(self) -> None:
        """A client that dies ends its request stream a moment before grpc marks the RPC
        inactive; wait for that moment (0.2 s at most), so the job says CLIENT_GONE rather than
        MISSING_END or a bare stream error."""
        for _ in range(10):
            self._check_cancel(self._job, self._is_active)
            time.sleep(0.02)

    def read(self, size: int = -1) -> bytes | memoryview:
        """Up to ``size`` bytes, fewer only at the end of the data.

        A read within one data message is a view of the message's bytes (pyarrow takes any
        buffer); a record batch body that spans messages (the SDK sends 2 MiB ones) is joined
        once, which is what keeps the bytes in flight bounded whatever the batch size."""
        parts: list[memoryview] = []
        want = size if size >= 0 else 1 << 62
        while want > 0:
            if not self._piece:
                if self._ended:
                    break
                item = self._next()
                if item is None:
                    raise InvalidArgument(
                        "the request stream closed without an end message", reason="MISSING_END"
                    )
                if isinstance(item, EndOfData):
                    self._ended = True
                    break
                assert isinstance(item, DataPiece)
                self.received += len(item.data)
                if self.received > self._limits.max_bytes_received:
                    raise ResourceExhausted(
                        f"the upload is over the limit of {self._limits.max_bytes_received} bytes",
                        reason="UPLOAD_TOO_LARGE",
                    )
                self._piece = memoryview(item.data)
            take = self._piece[:want]
            self._piece = self._piece[len(take) :]
            want -= len(take)
            parts.append(take)
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def expect_end(self) -> None:
        """After the Arrow stream's end: only the end message may follow."""
        if self._piece and bytes(self._piece).strip(b"\x00"):
            raise InvalidArgument(_DATA_AFTER_END, reason="DATA_AFTER_END")
        while not self._ended:
            item = self._next()
            if item is None:
                raise InvalidArgument(
                    "the request stream closed without an end message", reason="MISSING_END"
                )
            if isinstance(item, EndOfData):
                self._ended = True
            elif isinstance(item, DataPiece) and item.data:
                raise InvalidArgument(_DATA_AFTER_END, reason="DATA_AFTER_END")

    def close(self) -> None:
        self._stop.set()
        super().close()


class _TeeSink(io.RawIOBase):
    """Where an encoder's bytes go: the artifact's temp file and/or the chunk buffer for the stream.

    Written by the render worker and drained by the export's generator thread. The stream buffer
    is bounded: a writer waits while more than ``max_buffer`` bytes are unsent, and gives up with
    Cancelled once the sink is closed, so a vanished client never leaves a worker stuck.
    """

    def __init__(
        self,
        pending: PendingArtifact | None,
        *,
        stream: bool,
        chunk_size: int,
        max_buffer: int,
    ) -> None:
        super().__init__()
        self._pending = pending
        self._stream = stream
        self._chunk_size = chunk_size
        self._max_buffer = max(max_buffer, chunk_size)
        self._hash = hashlib.sha256() if pending is None else None
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._emitted = 0
        self._shut = False
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        if self._pending is not None:
            self._pending.write(view)
        if self._hash is not None:
            self._hash.update(view)
        with self._changed:
            if self._stream:
                self._changed.wait_for(lambda: self._shut or len(self._buffer) < self._max_buffer)
                if self._shut:
                    raise Cancelled("the export stopped while its file was written")
                before = len(self._buffer)
                self._buffer += view
                if before < self._chunk_size <= len(self._buffer):  # a chunk just became ready
                    self._changed.notify_all()
            self.size += len(view)
        return len(view)

    def wait_ready(self, timeout: float) -> None:
        """Wait until a whole chunk is ready, the worker signals, or ``timeout`` passes."""
        with self._changed:
            if len(self._buffer) < self._chunk_size:
                self._changed.wait(timeout)

    def notify(self) -> None:
        """Wake the draining thread (state change or the end of the work)."""
        with self._changed:
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._shut = True
            self._changed.notify_all()
        super().close()

    def drain(self, *, final: bool = False) -> Iterator[Chunk]:
        """Chunks of at most chunk_size ready to send; with ``final``, everything left.

        Everything ready is cut out under the lock in one pass (one copy per byte, one move of
        the remainder), so a large batch's output is not shifted once per chunk.
        """
        size = self._chunk_size
        with self._changed:
            ready = len(self._buffer) if final else len(self._buffer) - len(self._buffer) % size
            if ready == 0:
                return
            with memoryview(self._buffer) as view:
                pieces = [bytes(view[i : min(i + size, ready)]) for i in range(0, ready, size)]
            del self._buffer[:ready]
            offset = self._emitted
            self._emitted += ready
            self._changed.notify_all()
        for piece in pieces:
            yield Chunk(offset, piece)
            offset += len(piece)

    def hexdigest(self) -> str:
        assert self._hash is not None
        return self._hash.hexdigest()
