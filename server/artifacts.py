"""The artifact store: the files exportd keeps, known by unguessable handles.

What a caller may rely on:

* **Nothing half-written is ever visible.** A file is written to ``root/tmp/``, hashed (SHA-256)
  and counted while written, then ``fsync``-ed, atomically renamed into ``root/files/``, the
  directory ``fsync``-ed, and only then recorded in SQLite. A handle that
  :meth:`PendingArtifact.commit` returned survives ``kill -9`` and a restart byte for byte.
* **Crash leftovers are cleaned at start.** Temp files, rows whose file is gone and files without
  a row are removed when the store is opened. One server process owns a data directory.
* **Handles are unguessable** (``"art_"`` + 192 random bits) and never name a file on disk: a file
  is stored under the SHA-256 of its handle, so listing the directory does not reveal handles, and
  the user's file name is only metadata.
* **Tenants are isolated.** Another tenant's handle behaves exactly like an unknown one
  (:class:`~exportd.server.errors.NotFound`, reason ``ARTIFACT_NOT_FOUND``).
* **A corrupted file is never sent in full.** A read from the start to the end hashes while it
  streams and holds back the last chunk until the digest matches; any other range verifies the
  whole file first (remembered per file state, so resumed downloads do not rehash every time).
  A mismatch raises :class:`~exportd.server.errors.DataLoss` (reason ``ARTIFACT_CORRUPT``), is
  logged, and is reported to the ``on_corrupt`` callback.
* **Space is bounded.** :meth:`ArtifactStore.begin` refuses to start when the disk has less than
  ``min_free_bytes`` free or the tenant already holds ``max_tenant_bytes``; running out of space
  while writing removes the temp file; both raise :class:`~exportd.server.errors.ResourceExhausted`
  (``DISK_FULL`` / ``TENANT_QUOTA``). Past ``max_total_bytes``, commits evict expired files first,
  then the oldest. Expired files are removed by :meth:`ArtifactStore.sweep`, which a background
  thread runs every ``interval`` seconds once :meth:`ArtifactStore.start_sweeper` is called.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import math
import os
import secrets
import shutil
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .db import Database
from .errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = ["HANDLE_PREFIX", "Artifact", "ArtifactStore", "PendingArtifact"]

log = logging.getLogger("exportd.artifacts")

MiB = 1024 * 1024
HANDLE_PREFIX = "art_"
_HANDLE_RANDOM_BYTES = 24  # 192 bits
_MAX_HANDLE_LENGTH = 128
_WRITE_BUFFER = 256 * 1024
_VERIFY_CHUNK = 4 * MiB
_VERIFIED_CACHE_SIZE = 4096
_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    handle      TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    media_type  TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_tenant ON artifacts (tenant, created_at);
CREATE INDEX IF NOT EXISTS artifacts_by_expiry ON artifacts (expires_at);
CREATE INDEX IF NOT EXISTS artifacts_by_age ON artifacts (created_at);
"""

_COLUMNS = "handle, tenant, job_id, file_name, media_type, size, sha256, created_at, expires_at"


@dataclass(frozen=True)
class Artifact:
    """A kept file's metadata; ``path`` is where its bytes are (read them through the store)."""

    handle: str
    tenant: str
    job_id: str
    file_name: str
    media_type: str
    size: int
    sha256: str
    """Lower-case hex SHA-256 of the whole file, computed while it was written."""
    created_at: float
    """Seconds since the epoch (the store's clock) when the file was committed."""
    expires_at: float
    """Seconds since the epoch after which the handle is NOT_FOUND and the file is removed."""
    path: Path


def _not_found() -> NotFound:
    # One message for unknown, expired and another tenant's handles: nothing to tell them apart.
    return NotFound(
        "artifact not found (unknown, expired or deleted handle)", reason="ARTIFACT_NOT_FOUND"
    )


def _disk_full(exc: OSError | None = None) -> ResourceExhausted:
    detail = f": {exc.strerror}" if exc is not None and exc.strerror else ""
    return ResourceExhausted(f"no space left for the file{detail}", reason="DISK_FULL")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stored_name(handle: str) -> str:
    return hashlib.sha256(handle.encode("utf-8")).hexdigest()


def _file_state(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class _PipelinedHash:
    """sha256 on a worker thread, so hashing a file being served overlaps with sending it.

    hashlib releases the GIL on large updates; at most two chunks wait to be hashed, so memory
    stays bounded when the network is faster than the hash.
    """

    def __init__(self, *, enabled: bool) -> None:
        self._digest = hashlib.sha256()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hash") if enabled else None
        self._pending: deque[Future[None]] = deque()

    def __enter__(self) -> _PipelinedHash:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def update(self, data: bytes) -> None:
        assert self._pool is not None
        while len(self._pending) >= 2:
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self._digest.update, data))

    def hexdigest(self) -> str:
        while self._pending:
            self._pending.popleft().result()
        return self._digest.hexdigest()


class PendingArtifact(io.RawIOBase):
    """A file being written: a writable binary stream that becomes an :class:`Artifact` on commit.

    Hand it to an encoder as its sink. Every byte written is counted and hashed; nothing is
    visible to readers until :meth:`commit`. :meth:`abort` (or closing it, or leaving its ``with``
    block, without a commit) removes the temp file. Running out of disk space while writing
    removes the temp file and raises ResourceExhausted (``DISK_FULL``); any other write error
    removes it and propagates. Safe to abort from another thread (a cancel) while one thread
    writes.
    """

    def __init__(
        self,
        store: ArtifactStore,
        *,
        fd: int,
        temp_path: Path,
        tenant: str,
        job_id: str,
        file_name: str,
        media_type: str,
        ttl: float,
    ) -> None:
        super().__init__()
        self._store = store
        self._fd = fd
        self.temp_path = temp_path
        """Where the bytes are until commit (inside the store's ``tmp/``)."""
        self.tenant = tenant
        self.job_id = job_id
        self.file_name = file_name
        self.media_type = media_type
        self.ttl = ttl
        self._buf = bytearray()
        self._hash = hashlib.sha256()
        self._size = 0
        self._state = "open"  # -> "committed" | "aborted"
        self._lock = threading.RLock()
        self._artifact: Artifact | None = None

    # -- io.RawIOBase ---------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        """Bytes written so far."""
        return self._size

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, b: ReadableBuffer, /) -> int:
        """Write all of ``b`` (bytes, bytearray, memoryview or any buffer) and return its length."""
        view = memoryview(b)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        n = view.nbytes
        with self._lock:
            self._check_open()
            if n == 0:
                return 0
            try:
                if len(self._buf) + n <= _WRITE_BUFFER:
                    self._buf += view
                else:
                    self._drain()
                    if n >= _WRITE_BUFFER:
                        self._write_all(view)
                    else:
                        self._buf += view
            except OSError as exc:
                self._fail(exc)
                raise
            self._hash.update(view)
            self._size += n
        return n

    def flush(self) -> None:
        """Hand buffered bytes to the OS (a no-op once committed or aborted)."""
        with self._lock:
            if self._state != "open":
                return
            try:
                self._drain()
            except OSError as exc:
                self._fail(exc)
                raise

    def close(self) -> None:
        """Close the stream; without a prior :meth:`commit` this aborts (removes the temp file)."""
        if not self.closed:
            self.abort()
        super().close()

    # -- artifact life ----------------------------------------------------------------------

    def commit(self) -> Artifact:
        """Make the file durable and visible; return its metadata with a fresh handle.

        After this returns the file is on disk (file and directory synced) and recorded in the
        database; then the store's size cap is enforced (this file is never the one evicted).
        Raises ResourceExhausted (``DISK_FULL``) if the final flush finds no space, and
        FailedPrecondition if already committed or aborted.
        """
        with self._lock:
            self._check_open()
            try:
                self._drain()
                os.fsync(self._fd)
            except OSError as exc:
                self._fail(exc)
                raise
            fd, self._fd = self._fd, -1
            os.close(fd)
            self._state = "committed"
            try:
                artifact = self._store._install(self, self._hash.hexdigest(), self._size)
            except BaseException:
                self._state = "aborted"
                self.temp_path.unlink(missing_ok=True)
                raise
            self._artifact = artifact
        super().close()
        self._store._after_commit(artifact)
        return artifact

    def abort(self) -> None:
        """Discard the file: close and remove the temp file. Idempotent; a no-op after commit."""
        with self._lock:
            if self._state != "open":
                return
            self._state = "aborted"
            self._buf = bytearray()
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
            self.temp_path.unlink(missing_ok=True)
        log.debug(
            "aborted artifact for job %s (tenant %s)",
            self.job_id,
            self.tenant,
            extra={"job_id": self.job_id, "tenant": self.tenant},
        )

    @property
    def artifact(self) -> Artifact | None:
        """The committed artifact, or None before commit / after abort."""
        return self._artifact

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise FailedPrecondition(
                f"artifact for job {self.job_id} is already {self._state}",
                reason="ARTIFACT_CLOSED",
            )

    def _write_all(self, view: memoryview) -> None:
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _drain(self) -> None:
        if self._buf:
            self._write_all(memoryview(self._buf))
            self._buf.clear()

    def _fail(self, exc: OSError) -> None:
        """Remove the temp file after a write error; raise ResourceExhausted if the disk is full.

        Otherwise return, and the caller re-raises the original error.
        """
        self.abort()
        if exc.errno in _DISK_FULL_ERRNOS:
            log.warning(
                "disk full while writing the file of job %s (tenant %s); temp file removed",
                self.job_id,
                self.tenant,
                extra={"job_id": self.job_id, "tenant": self.tenant},
            )
            raise _disk_full(exc) from exc


class ArtifactStore:
    """The file manager: begin → write → commit, then get/read/renew/delete by handle.

    Thread-safe. Metadata lives in the ``artifacts`` table of ``db`` (created here); bytes live
    under ``root``. Times come from ``clock`` (seconds since the epoch), injectable for tests.
    """

    def __init__(
        self,
        root: Path,
        db: Database,
        *,
        default_ttl: float = 24 * 3600,
        max_total_bytes: int | None = None,
        max_tenant_bytes: int | None = None,
        min_free_bytes: int = 64 * MiB,
        clock: Callable[[], float] = time.time,
        on_corrupt: Callable[[Artifact, str], None] | None = None,
    ) -> None:
        """Open the store at ``root``, creating it, and remove what a crash left behind.

        ``default_ttl``: seconds a file lives when :meth:`begin`/:meth:`renew` get no TTL.
        ``max_total_bytes``: size cap of all stored files (None: no cap). ``max_tenant_bytes``:
        bytes one tenant may hold before :meth:`begin` refuses (None: no limit).
        ``min_free_bytes``: free disk space :meth:`begin` requires. ``on_corrupt(artifact,
        detail)``: called when a file fails its checksum (e.g. to mark its job); errors it
        raises are logged and swallowed.
        """
        self.root = Path(root)
        self.db = db
        self.default_ttl = self._valid_ttl(default_ttl)
        if max_total_bytes is not None and max_total_bytes < 0:
            raise InvalidArgument("max_total_bytes must be >= 0", reason="INVALID_CONFIG")
        if max_tenant_bytes is not None and max_tenant_bytes < 0:
            raise InvalidArgument("max_tenant_bytes must be >= 0", reason="INVALID_CONFIG")
        self.max_total_bytes = max_total_bytes
        self.max_tenant_bytes = max_tenant_bytes
        self.min_free_bytes = min_free_bytes
        self._clock = clock
        self._on_corrupt = on_corrupt
        self._tmp_dir = self.root / "tmp"
        self._files_dir = self.root / "files"
        for d in (self.root, self._tmp_dir, self._files_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db.executescript(_SCHEMA)
        self._evict_lock = threading.Lock()
        self._verified: OrderedDict[str, tuple[int, int, int, int]] = OrderedDict()
        self._verified_lock = threading.Lock()
        self._verifications = 0
        self._sweeper: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._recover()

    @property
    def tmp_dir(self) -> Path:
        """Where files being written live (emptied at start)."""
        return self._tmp_dir

    @property
    def files_dir(self) -> Path:
        """Where committed files live, each named by the SHA-256 of its handle."""
        return self._files_dir

    # -- writing --------------------------------------------------------------------------------

    def begin(
        self,
        *,
        tenant: str,
        job_id: str,
        file_name: str,
        media_type: str,
        ttl: float | None = None,
    ) -> PendingArtifact:
        """Start a new file for ``tenant``; write to the returned stream, then commit or abort.

        Raises ResourceExhausted with reason ``DISK_FULL`` when less than ``min_free_bytes`` are
        free, or ``TENANT_QUOTA`` when the tenant already holds ``max_tenant_bytes`` of
        unexpired files; InvalidArgument for a TTL that is not a positive number.
        """
        ttl = self.default_ttl if ttl is None else self._valid_ttl(ttl)
        free = shutil.disk_usage(self._tmp_dir).free
        if free < self.min_free_bytes:
            log.warning(
                "refusing a file for job %s: %d bytes free, %d required",
                job_id,
                free,
                self.min_free_bytes,
                extra={"job_id": job_id, "tenant": tenant},
            )
            raise ResourceExhausted(
                f"not enough free disk space to store the file ({free} bytes free, "
                f"{self.min_free_bytes} required)",
                reason="DISK_FULL",
            )
        if self.max_tenant_bytes is not None:
            held = self._live_bytes(tenant)
            if held >= self.max_tenant_bytes:
                raise ResourceExhausted(
                    f"the tenant's stored files use {held} bytes, the quota is "
                    f"{self.max_tenant_bytes}; delete files or wait for them to expire",
                    reason="TENANT_QUOTA",
                )
        temp_path = self._tmp_dir / f"{secrets.token_hex(16)}.part"
        try:
            fd = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno in _DISK_FULL_ERRNOS:
                raise _disk_full(exc) from exc
            raise
        return PendingArtifact(
            self,
            fd=fd,
            temp_path=temp_path,
            tenant=tenant,
            job_id=job_id,
            file_name=file_name,
            media_type=media_type,
            ttl=ttl,
        )

    # -- reading and managing -----------------------------------------------------------------

    def get(self, handle: str, tenant: str) -> Artifact:
        """Return the metadata of ``tenant``'s file ``handle``.

        NotFound (``ARTIFACT_NOT_FOUND``) when the handle is unknown, another tenant's, or
        expired (an expired file is removed on the spot).
        """
        if not handle or len(handle) > _MAX_HANDLE_LENGTH:
            raise _not_found()
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM artifacts WHERE handle = ?", (handle,))
        if not rows or rows[0]["tenant"] != tenant:
            raise _not_found()
        artifact = self._artifact(rows[0])
        if artifact.expires_at <= self._clock():
            self._remove(artifact.handle, "expired")
            raise _not_found()
        return artifact

    def read(
        self,
        handle: str,
        tenant: str,
        offset: int = 0,
        limit: int = 0,
        chunk_size: int = MiB,
    ) -> Iterator[tuple[int, bytes]]:
        """Stream ``(offset, data)`` chunks of at most ``chunk_size`` bytes from ``offset``.

        ``limit`` 0 reads to the end, otherwise at most ``limit`` bytes. The handle, the range
        and (for a partial range) the checksum are checked before this returns, so those errors
        raise here: NotFound, InvalidArgument (negative offset/limit), OutOfRange (offset past
        the end; an offset equal to the size yields nothing), DataLoss (``ARTIFACT_CORRUPT``).
        A read of the whole file is verified as it streams: DataLoss is raised by the iterator
        before it yields the last chunk. The file stays readable through the open descriptor
        even if it is deleted or evicted meanwhile.
        """
        if offset < 0 or limit < 0:
            raise InvalidArgument("offset and limit must not be negative", reason="INVALID_RANGE")
        if chunk_size <= 0:
            raise InvalidArgument("chunk_size must be positive", reason="INVALID_RANGE")
        artifact = self.get(handle, tenant)
        if offset > artifact.size:
            raise OutOfRange(
                f"offset {offset} is past the end of the file ({artifact.size} bytes)",
                reason="OFFSET_PAST_END",
            )
        end = artifact.size if limit == 0 else min(artifact.size, offset + limit)
        if offset == end:
            return iter(())
        try:
            f = open(artifact.path, "rb", buffering=0)  # noqa: SIM115 (closed by the stream)
        except FileNotFoundError:
            raise _not_found() from None
        try:
            st = os.fstat(f.fileno())
            if st.st_size != artifact.size:
                raise self._corrupt(
                    artifact, f"size on disk is {st.st_size}, {artifact.size} were stored"
                )
            # A file whose bytes were already checked (hashed as they were written, or on an
            # earlier read) and whose inode, size, mtime and ctime are unchanged is sent as it is;
            # any other whole read is verified as it streams.
            whole = offset == 0 and end == artifact.size and not self._is_verified(handle, st)
            if not whole:
                self._verify(f, artifact, st)
                f.seek(offset)
        except BaseException:
            f.close()
            raise
        return self._stream(f, artifact, st, offset, end, chunk_size, whole)

    def delete(self, handle: str, tenant: str) -> None:
        """Remove ``tenant``'s file ``handle`` now; NotFound if it is unknown or expired."""
        artifact = self.get(handle, tenant)
        if not self._remove(artifact.handle, "deleted"):
            raise _not_found()

    def renew(self, handle: str, tenant: str, ttl: float | None) -> Artifact:
        """Let ``tenant``'s file live ``ttl`` seconds from now (None: the default TTL)."""
        ttl = self.default_ttl if ttl is None else self._valid_ttl(ttl)
        artifact = self.get(handle, tenant)
        expires_at = self._clock() + ttl
        changed = self.db.execute_rowcount(
            "UPDATE artifacts SET expires_at = ? WHERE handle = ? AND tenant = ?",
            (expires_at, artifact.handle, tenant),
        )
        if not changed:
            raise _not_found()
        return replace(artifact, expires_at=expires_at)

    def list(self, tenant: str) -> list[Artifact]:
        """``tenant``'s unexpired files, newest first."""
        rows = self.db.execute(
            f"SELECT {_COLUMNS} FROM artifacts WHERE tenant = ? AND expires_at > ? "
            "ORDER BY created_at DESC, rowid DESC",
            (tenant, self._clock()),
        )
        return [self._artifact(r) for r in rows]

    def total_bytes(self, tenant: str | None = None) -> int:
        """Bytes of stored files (expired ones count until swept), for all or one tenant."""
        if tenant is None:
            rows = self.db.execute("SELECT COALESCE(SUM(size), 0) FROM artifacts")
        else:
            rows = self.db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE tenant = ?", (tenant,)
            )
        return int(rows[0][0])

    def count(self, tenant: str | None = None) -> int:
        """Number of stored files (expired ones count until swept), for all or one tenant."""
        if tenant is None:
            rows = self.db.execute("SELECT COUNT(*) FROM artifacts")
        else:
            rows = self.db.execute("SELECT COUNT(*) FROM artifacts WHERE tenant = ?", (tenant,))
        return int(rows[0][0])

    # -- expiry and the size cap ----------------------------------------------------------------

    def sweep(self) -> int:
        """Remove expired files, then enforce the size cap; return how many files were removed."""
        return self._sweep(stoppable=False)

    def start_sweeper(self, interval: float) -> None:
        """Run :meth:`sweep` every ``interval`` seconds on a daemon thread until :meth:`stop`.

        Calling it while a sweeper runs does nothing.
        """
        if not (interval > 0 and math.isfinite(interval)):
            raise InvalidArgument(
                "sweep interval must be a positive number", reason="INVALID_CONFIG"
            )
        if self._sweeper is not None and self._sweeper.is_alive():
            return
        self._stop_event.clear()
        self._sweeper = threading.Thread(
            target=self._sweep_loop, args=(interval,), name="exportd-artifact-sweeper", daemon=True
        )
        self._sweeper.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the sweeper; wait up to ``timeout`` seconds (a running pass stops between files)."""
        self._stop_event.set()
        thread, self._sweeper = self._sweeper, None
        if thread is not None:
            thread.join(timeout)

    @property
    def verifications(self) -> int:
        """How many whole-file checksum passes ranged reads have run (a resumed download of a
        file already verified in its current state runs none)."""
        return self._verifications

    @property
    def sweeper_running(self) -> bool:
        """Whether the background sweeper thread is alive."""
        return self._sweeper is not None and self._sweeper.is_alive()

    # -- internals --------------------------------------------------------------------------------

    @staticmethod
    def _valid_ttl(ttl: float) -> float:
        if not (ttl > 0 and math.isfinite(ttl)):
            raise InvalidArgument(
                f"time to live must be a positive number of seconds, got {ttl!r}",
                reason="INVALID_TTL",
            )
        return float(ttl)

    def _artifact(self, row: sqlite3.Row) -> Artifact:
        handle = str(row["handle"])
        return Artifact(
            handle=handle,
            tenant=str(row["tenant"]),
            job_id=str(row["job_id"]),
            file_name=str(row["file_name"]),
            media_type=str(row["media_type"]),
            size=int(row["size"]),
            sha256=str(row["sha256"]),
            created_at=float(row["created_at"]),
            expires_at=float(row["expires_at"]),
            path=self._files_dir / _stored_name(handle),
        )

    def _live_bytes(self, tenant: str) -> int:
        rows = self.db.execute(
            "SELECT COALESCE(SUM(size), 0) FROM artifacts WHERE tenant = ? AND expires_at > ?",
            (tenant, self._clock()),
        )
        return int(rows[0][0])

    def _install(self, pending: PendingArtifact, sha256: str, size: int) -> Artifact:
        """Rename a synced temp file into ``files/`` and record it; undo both on failure."""
        handle = HANDLE_PREFIX + secrets.token_urlsafe(_HANDLE_RANDOM_BYTES)
        dest = self._files_dir / _stored_name(handle)
        try:
            os.replace(pending.temp_path, dest)
        except OSError as exc:
            if exc.errno in _DISK_FULL_ERRNOS:
                raise _disk_full(exc) from exc
            raise
        try:
            _fsync_dir(self._files_dir)
            now = self._clock()
            artifact = Artifact(
                handle=handle,
                tenant=pending.tenant,
                job_id=pending.job_id,
                file_name=pending.file_name,
                media_type=pending.media_type,
                size=size,
                sha256=sha256,
                created_at=now,
                expires_at=now + pending.ttl,
                path=dest,
            )
            self.db.execute(
                f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    artifact.handle,
                    artifact.tenant,
                    artifact.job_id,
                    artifact.file_name,
                    artifact.media_type,
                    artifact.size,
                    artifact.sha256,
                    artifact.created_at,
                    artifact.expires_at,
                ),
            )
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        log.info(
            "stored artifact %s for job %s (tenant %s): %d bytes, sha256 %s",
            handle,
            artifact.job_id,
            artifact.tenant,
            size,
            sha256,
            extra={"job_id": artifact.job_id, "tenant": artifact.tenant},
        )
        # The bytes were hashed as they were written and are synced: the first download need
        # not hash them again while the file on disk is unchanged.
        self._mark_verified(handle, _file_state(os.stat(dest)))
        return artifact

    def _after_commit(self, artifact: Artifact) -> None:
        try:
            self._enforce_cap(keep=artifact.handle, stoppable=False)
        except Exception:
            log.exception("enforcing the artifact size cap failed")

    def _remove(self, handle: str, why: str) -> bool:
        """Delete the row, then the file: a crash between leaves a file the next start removes."""
        if not self.db.execute_rowcount("DELETE FROM artifacts WHERE handle = ?", (handle,)):
            return False
        (self._files_dir / _stored_name(handle)).unlink(missing_ok=True)
        with self._verified_lock:
            self._verified.pop(handle, None)
        log.info("removed artifact %s (%s)", handle, why)
        return True

    def _sweep(self, *, stoppable: bool) -> int:
        removed = 0
        rows = self.db.execute(
            "SELECT handle FROM artifacts WHERE expires_at <= ? ORDER BY expires_at",
            (self._clock(),),
        )
        for row in rows:
            if stoppable and self._stop_event.is_set():
                return removed
            if self._remove(str(row["handle"]), "expired"):
                removed += 1
        return removed + self._enforce_cap(keep=None, stoppable=stoppable)

    def _enforce_cap(self, *, keep: str | None, stoppable: bool) -> int:
        if self.max_total_bytes is None:
            return 0
        with self._evict_lock:
            total = self.total_bytes()
            if total <= self.max_total_bytes:
                return 0
            # Expired files go first (soonest-expired first), then the oldest by creation.
            candidates = self.db.execute(
                "SELECT handle, size FROM artifacts WHERE handle != ? "
                "ORDER BY (expires_at <= ?) DESC, "
                "CASE WHEN expires_at <= ? THEN expires_at ELSE created_at END, rowid",
                (keep or "", self._clock(), self._clock()),
            )
            removed = 0
            for row in candidates:
                if total <= self.max_total_bytes:
                    break
                if stoppable and self._stop_event.is_set():
                    break
                if self._remove(str(row["handle"]), "size cap"):
                    total -= int(row["size"])
                    removed += 1
            if total > self.max_total_bytes:
                log.warning(
                    "artifact store holds %d bytes, over its cap of %d, with nothing left to evict",
                    total,
                    self.max_total_bytes,
                )
            return removed

    def _sweep_loop(self, interval: float) -> None:
        while not self._stop_event.wait(interval):
            try:
                removed = self._sweep(stoppable=True)
                if removed:
                    log.info("sweep removed %d artifact(s)", removed)
            except Exception:
                log.exception("artifact sweep failed")

    def _recover(self) -> None:
        """Remove crash leftovers: temp files, rows without a file, files without a row."""
        temps = 0
        for entry in os.scandir(self._tmp_dir):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                Path(entry.path).unlink(missing_ok=True)
            temps += 1
        if temps:
            log.info("removed %d temp file(s) left by an interrupted run", temps)
        on_disk = {e.name for e in os.scandir(self._files_dir)}
        known: set[str] = set()
        lost: list[str] = []
        for row in self.db.execute("SELECT handle FROM artifacts"):
            handle = str(row["handle"])
            name = _stored_name(handle)
            if name in on_disk:
                known.add(name)
            else:
                lost.append(handle)
        if lost:
            self.db.executemany("DELETE FROM artifacts WHERE handle = ?", [(h,) for h in lost])
            log.warning("forgot %d artifact(s) whose file is missing", len(lost))
        strays = on_disk - known
        for name in strays:
            path = self._files_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if strays:
            log.info("removed %d stored file(s) with no record", len(strays))

    def _verify(self, f: io.FileIO, artifact: Artifact, st: os.stat_result) -> None:
        """Hash the whole open file unless this exact file state was verified before."""
        state = _file_state(st)
        with self._verified_lock:
            if self._verified.get(artifact.handle) == state:
                self._verified.move_to_end(artifact.handle)
                return
        with self._verified_lock:
            self._verifications += 1
        digest = hashlib.sha256()
        f.seek(0)
        remaining = artifact.size
        while remaining:
            data = f.read(min(_VERIFY_CHUNK, remaining))
            if not data:
                raise self._corrupt(artifact, "file ended early")
            digest.update(data)
            remaining -= len(data)
        if digest.hexdigest() != artifact.sha256:
            raise self._corrupt(artifact, f"sha256 on disk is {digest.hexdigest()}")
        self._mark_verified(artifact.handle, state)

    def _is_verified(self, handle: str, st: os.stat_result) -> bool:
        with self._verified_lock:
            return self._verified.get(handle) == _file_state(st)

    def _mark_verified(self, handle: str, state: tuple[int, int, int, int]) -> None:
        with self._verified_lock:
            self._verified[handle] = state
            self._verified.move_to_end(handle)
            while len(self._verified) > _VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)

    def _stream(
        self,
        f: io.FileIO,
        artifact: Artifact,
        st: os.stat_result,
        offset: int,
        end: int,
        chunk_size: int,
        whole: bool,
    ) -> Iterator[tuple[int, bytes]]:
        with f, _PipelinedHash(enabled=whole) as digest:
            held: tuple[int, bytes] | None = None
            pos = offset
            while pos < end:
                data = f.read(min(chunk_size, end - pos))
                if not data:
                    raise self._corrupt(artifact, "file ended early")
                if whole:
                    digest.update(data)
                    if held is not None:
                        yield held
                    held = (pos, data)
                else:
                    yield pos, data
                pos += len(data)
            if whole and held is not None:
                if digest.hexdigest() != artifact.sha256:
                    raise self._corrupt(artifact, f"sha256 on disk is {digest.hexdigest()}")
                self._mark_verified(artifact.handle, _file_state(st))
                yield held

    def _corrupt(self, artifact: Artifact, detail: str) -> DataLoss:
        with self._verified_lock:
            self._verified.pop(artifact.handle, None)
        log.error(
            "artifact %s of job %s (tenant %s) is corrupt and was not sent: %s (expected "
            "%d bytes, sha256 %s)",
            artifact.handle,
            artifact.job_id,
            artifact.tenant,
            detail,
            artifact.size,
            artifact.sha256,
            extra={"job_id": artifact.job_id, "tenant": artifact.tenant},
        )
        if self._on_corrupt is not None:
            try:
                self._on_corrupt(artifact, detail)
            except Exception:
                log.exception("reporting corrupt artifact %s failed", artifact.handle)
        return DataLoss(
            f"the stored file of job {artifact.job_id} is corrupt ({detail}); it cannot be served",
            reason="ARTIFACT_CORRUPT",
        )
