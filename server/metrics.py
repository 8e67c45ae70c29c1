"""Prometheus metrics over HTTP (``--metrics-port``; off by default).

Every server gets its own registry, so several servers in one process (tests) never share
counters. Series a dashboard may rely on:

* ``exportd_exports_total{format, outcome}`` — ended exports; outcome is ``succeeded`` or the
  lower-case status code that ended it (``cancelled``, ``resource_exhausted``, ...).
* ``exportd_export_duration_seconds{format}`` — histogram, from acceptance to the end (queue
  time included, as the client sees it).
* ``exportd_export_size_bytes{format}`` — histogram of the sizes of files produced.
* ``exportd_bytes_received_total`` / ``exportd_bytes_written_total`` — Arrow bytes in, file
  bytes out (also counted for exports that fail part way).
* ``exportd_bytes_downloaded_total`` — bytes of kept files sent by ReadArtifact.
* ``exportd_queue_depth`` / ``exportd_running_exports`` — the governor now.
* ``exportd_artifacts_stored`` / ``exportd_artifact_bytes`` — kept files and their bytes now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .artifacts import ArtifactStore
from .errors import ExportdError
from .exports import Accepted, Completed, Event, Exports, ExportSpec, Input
from .governor import Governor

_SIZE_BUCKETS = tuple(float(1 << n) for n in range(10, 36, 2))  # 1 KiB .. 32 GiB
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class ExportMetrics:
    """The series above, registered in a registry of their own."""

    def __init__(self, governor: Governor, artifacts: ArtifactStore) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.exports = Counter(
            "exportd_exports",
            "Ended exports by format and outcome",
            ["format", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "exportd_export_duration_seconds",
            "Seconds from acceptance to the end of an export",
            ["format"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.size = Histogram(
            "exportd_export_size_bytes",
            "Bytes of files produced",
            ["format"],
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.bytes_received = Counter(
            "exportd_bytes_received", "Arrow IPC bytes received from clients", registry=r
        )
        self.bytes_written = Counter(
            "exportd_bytes_written", "File bytes produced by exports", registry=r
        )
        self.bytes_downloaded = Counter(
            "exportd_bytes_downloaded", "Bytes of kept files sent by ReadArtifact", registry=r
        )
        queue = Gauge("exportd_queue_depth", "Exports waiting for a slot", registry=r)
        queue.set_function(lambda: governor.queued)
        running = Gauge("exportd_running_exports", "Exports holding a slot", registry=r)
        running.set_function(lambda: governor.running)
        stored = Gauge("exportd_artifacts_stored", "Kept files", registry=r)
        stored.set_function(lambda: artifacts.count())
        held = Gauge("exportd_artifact_bytes", "Bytes of kept files", registry=r)
        held.set_function(lambda: artifacts.total_bytes())

    def record(self, fmt: str, outcome: str, seconds: float, received: int, written: int) -> None:
        """Count one ended export."""
        self.exports.labels(fmt, outcome).inc()
        self.duration.labels(fmt).observe(seconds)
        if outcome == "succeeded":
            self.size.labels(fmt).observe(written)
        self.bytes_received.inc(received)
        self.bytes_written.inc(written)


class MeteredExports(Exports):
    """Exports that report each ended export to :class:`ExportMetrics`; behaviour is unchanged
    (events and errors pass through as they are)."""

    def __init__(self, *, metrics: ExportMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metrics = metrics

    def run(
        self,
        spec: ExportSpec,
        inputs: Iterator[Input],
        *,
        tenant: str = "",
        is_active: Callable[[], bool] = lambda: True,
    ) -> Iterator[Event]:
        started = time.monotonic()
        job_id = ""
        outcome = "unknown"
        try:
            for event in super().run(spec, inputs, tenant=tenant, is_active=is_active):
                if isinstance(event, Accepted):
                    job_id = event.job_id
                elif isinstance(event, Completed):
                    outcome = "succeeded"
                yield event
        except ExportdError as exc:
            outcome = exc.code.lower()
            raise
        except GeneratorExit:
            outcome = "cancelled"
            raise
        except Exception:
            outcome = "internal"
            raise
        finally:
            self._record(spec.format, outcome, started, job_id, tenant)

    def _record(self, fmt: str, outcome: str, started: float, job_id: str, tenant: str) -> None:
        received = written = 0
        if job_id:
            try:
                job = self.jobs.get(job_id, tenant)
            except ExportdError:
                job = None
            if job is not None:
                received = job.progress.bytes_received
                written = job.result.size if job.result is not None else job.progress.bytes_written
        self.metrics.record(fmt, outcome, time.monotonic() - started, received, written)


class MeteredArtifactStore(ArtifactStore):
    """An ArtifactStore that counts the bytes :meth:`read` hands out; otherwise unchanged."""

    metrics: ExportMetrics | None = None

    def read(
        self,
        handle: str,
        tenant: str,
        offset: int = 0,
        limit: int = 0,
        chunk_size: int = 1 << 20,
    ) -> Iterator[tuple[int, bytes]]:
        chunks = super().read(handle, tenant, offset, limit, chunk_size)  # checks raise here
        return self._counted(chunks)

    def _counted(self, chunks: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        for offset, data in chunks:
            if self.metrics is not None:
                self.metrics.bytes_downloaded.inc(len(data))
            yield offset, data


@dataclass
class MetricsEndpoint:
    """The HTTP server answering ``GET /metrics``."""

    server: WSGIServer
    thread: Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(metrics: ExportMetrics, host: str, port: int) -> MetricsEndpoint:
    """Start answering Prometheus scrapes on ``host:port`` (0 picks a free port)."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsEndpoint(server, thread)
