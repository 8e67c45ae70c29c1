"""Server configuration as frozen dataclasses with documented defaults.

``ServerConfig()`` is a working local server: loopback, ./exportd-data, SQLite beside the files,
auth off. Every field can be set from the ``exportd serve`` command line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ExportLimits:
    """Per-export limits; a breach ends the export with a specific status and message."""

    max_bytes_received: int = 16 << 30
    """Arrow IPC bytes one export may upload (RESOURCE_EXHAUSTED past it)."""
    max_rows: int = 500_000_000
    """Rows one export may carry (RESOURCE_EXHAUSTED past it)."""
    max_columns: int = 20_000
    """Columns one export may carry (INVALID_ARGUMENT past it)."""
    max_batch_bytes: int = 512 << 20
    """Decoded size of one record batch (INVALID_ARGUMENT past it)."""
    data_timeout: float = 60.0
    """Seconds to wait for the client's next data message (DEADLINE_EXCEEDED past it)."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``exportd serve`` can be told."""

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = 50051
    """Port to listen on; 0 picks a free one (printed on start)."""
    data_dir: Path = Path("exportd-data")
    """Artifacts, temp files and the SQLite database live here."""
    max_concurrent: int = field(default_factory=lambda: os.cpu_count() or 2)
    """Exports rendering at once (the governor's semaphore)."""
    max_queue: int = 32
    """Exports that may wait for a slot; one more is refused with RESOURCE_EXHAUSTED."""
    artifact_ttl: float = 24 * 3600.0
    """Seconds a kept file lives unless renewed."""
    max_artifact_bytes: int | None = None
    """Total size of kept files; the oldest are evicted past it. None: unbounded."""
    min_free_bytes: int = 256 << 20
    """Free disk space an export needs before it starts (RESOURCE_EXHAUSTED below it)."""
    sweep_interval: float = 60.0
    """Seconds between sweeps for expired files."""
    chunk_size: int = 1 << 20
    """Bytes per file chunk on the Export stream and ReadArtifact (at most 1 MiB)."""
    progress_interval: float = 0.1
    """Seconds between progress events (about ten a second)."""
    limits: ExportLimits = field(default_factory=ExportLimits)
    """Per-export limits."""
    grace_period: float = 30.0
    """Seconds running exports get to finish on SIGTERM before they are cancelled."""
    max_message_bytes: int = 8 << 20
    """Largest gRPC message the server accepts (data pieces) or sends."""
    auth_tokens_file: Path | None = None
    """TOML or JSON file mapping sha256 hex of bearer tokens to tenants; None: auth off."""
    max_running_per_tenant: int | None = None
    """Exports one tenant may render at once (the rest wait in the queue). None: no cap."""
    max_tenant_bytes: int | None = None
    """Bytes of kept files one tenant may hold before new exports are refused. None: no cap."""
    tls_cert: Path | None = None
    """PEM certificate chain of the server; with ``tls_key`` it serves TLS only."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    metrics_port: int | None = None
    """Port for Prometheus metrics over HTTP on ``host`` (0 picks one). None: no metrics."""
    log_json: bool = False
    """Log one JSON object per line (with job_id and tenant on job lines) instead of text."""
