"""The job registry: every export's record, its state machine, and live events for watchers.

States move QUEUED → RECEIVING → RENDERING → SUCCEEDED | FAILED | CANCELLED and never back. A
job's creation and its end are written to SQLite at once (WAL), so job history and handles survive
a restart, a killed process included; the end of a job that kept a file is also synced to disk
(synchronous=FULL) before the client hears of it, so its handle survives a power loss too. The
states and progress in between live in memory only, because a job left unfinished by a crash is
marked FAILED "server restarted" when the registry opens, whatever its last state was.

Watchers follow a job by version number: every publish bumps ``Job.version`` and wakes them, and
each reads the newest snapshot, so a slow watcher skips stale progress instead of queueing it.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from .db import Database
from .errors import InvalidArgument, NotFound


class JobState(Enum):
    """Where a job is in its life; the values are the contract's JobState numbers."""

    QUEUED = 1
    RECEIVING = 2
    RENDERING = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELLED = 6

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Progress:
    """A snapshot of a job's advance."""

    state: JobState
    queue_position: int = 0
    rows_done: int = 0
    rows_total: int = 0
    bytes_received: int = 0
    bytes_written: int = 0
    fraction: float = 0.0
    elapsed: float = 0.0
    eta: float | None = None


@dataclass(frozen=True)
class ExportWarning:
    """One kind of change an exporter made, counted."""

    code: str
    count: int
    message: str


@dataclass(frozen=True)
class JobResult:
    """What a successful job produced."""

    size: int
    sha256: str
    rows: int
    media_type: str
    file_name: str
    handle: str = ""
    expires_at: float | None = None
    warnings: tuple[ExportWarning, ...] = ()


@dataclass(frozen=True)
class JobFailure:
    """Why a job failed or was cancelled: a gRPC code name, a sentence, a machine reason."""

    code: str
    message: str
    reason: str


@dataclass(eq=False)
class Job:
    """A job's record. Mutable only through JobRegistry, which persists and publishes changes."""

    job_id: str
    tenant: str
    format: str
    file_name: str
    priority: int
    request_id: str
    delivery: str
    created_at: float
    state: JobState = JobState.QUEUED
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress = field(default_factory=lambda: Progress(JobState.QUEUED))
    result: JobResult | None = None
    error: JobFailure | None = None
    version: int = 0
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    cancel_reason: str = ""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id       TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    format       TEXT NOT NULL,
    file_name    TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    request_id   TEXT NOT NULL,
    delivery     TEXT NOT NULL,
    state        INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    started_at   REAL,
    finished_at  REAL,
    progress     TEXT,
    result       TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_tenant ON jobs (tenant, created_at DESC, job_id);
CREATE INDEX IF NOT EXISTS jobs_by_request ON jobs (tenant, request_id);
"""


class JobRegistry:
    """Creates, finds, updates and lists jobs; publishes their changes to watchers."""

    def __init__(
        self,
        db: Database,
        *,
        idempotency_window: float = 3600.0,
        live_limit: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._clock = clock
        self._idempotency_window = idempotency_window
        self._live: dict[str, Job] = {}
        self._live_limit = live_limit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        db.executescript(_SCHEMA)
        self._fail_unfinished()

    def _fail_unfinished(self) -> None:
        """Jobs a previous process left queued or running can never finish: say so."""
        failure = JobFailure(
            "UNAVAILABLE", "server restarted before the job finished", "SERVER_RESTARTED"
        )
        self._db.execute(
            "UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE state IN (?, ?, ?)",
            (
                JobState.FAILED.value,
                self._clock(),
                json.dumps(asdict(failure)),
                JobState.QUEUED.value,
                JobState.RECEIVING.value,
                JobState.RENDERING.value,
            ),
        )

    # -- creation and lookup -------------------------------------------------------------------

    def create(
        self,
        *,
        tenant: str,
        format: str,
        file_name: str,
        priority: int,
        request_id: str,
        delivery: str,
    ) -> tuple[Job, bool]:
        """A new QUEUED job, or the existing one for a repeated ``request_id`` within the
        idempotency window (second value False)."""
        with self._lock:
            if request_id:
                existing = self._find_request(tenant, request_id)
                if existing is not None:
                    return existing, False
            job = Job(
                job_id="job_" + secrets.token_hex(12),
                tenant=tenant,
                format=format,
                file_name=file_name,
                priority=priority,
                request_id=request_id,
                delivery=delivery,
                created_at=self._clock(),
            )
            # Unsynced: a kill -9 keeps the row, and the job's end (synced) makes it durable with
            # it; only a power loss in between could drop a job that never finished anyway.
            self._db.execute(
                "INSERT INTO jobs (job_id, tenant, format, file_name, priority, request_id, "
                "delivery, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    tenant,
                    format,
                    file_name,
                    priority,
                    request_id,
                    delivery,
                    job.state.value,
                    job.created_at,
                ),
                synced=False,
            )
            self._remember(job)
            return job, True

    def _find_request(self, tenant: str, request_id: str) -> Job | None:
        since = self._clock() - self._idempotency_window
        for job in self._live.values():
            if job.tenant == tenant and job.request_id == request_id and job.created_at >= since:
                return job
        rows = self._db.execute(
            "SELECT * FROM jobs WHERE tenant = ? AND request_id = ? AND created_at >= ? "
            "ORDER BY created_at DESC LIMIT 1",
            (tenant, request_id, since),
        )
        return self._from_row(rows[0]) if rows else None

    def _remember(self, job: Job) -> None:
        self._live[job.job_id] = job
        if len(self._live) > self._live_limit:
            for old in [j for j in self._live.values() if j.state.terminal][: len(self._live) // 4]:
                del self._live[old.job_id]

    def get(self, job_id: str, tenant: str) -> Job:
        """The job, or NotFound when it does not exist or belongs to another tenant."""
        with self._lock:
            job = self._live.get(job_id)
            if job is None:
                rows = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
                job = self._from_row(rows[0]) if rows else None
            if job is None or job.tenant != tenant:
                raise NotFound(f"no job {job_id!r}", reason="JOB_NOT_FOUND")
            return job

    def list_page(
        self,
        tenant: str,
        *,
        page_size: int = 50,
        page_token: str = "",
        states: set[JobState] | None = None,
    ) -> tuple[list[Job], str]:
        """A page of the tenant's jobs, newest first, and the next page's token ("" at the end)."""
        page_size = max(1, min(page_size or 50, 1000))
        where = "tenant = ?"
        params: list[object] = [tenant]
        if page_token:
            try:
                created, job_id = json.loads(base64.urlsafe_b64decode(page_token.encode()))
            except (ValueError, TypeError) as exc:
                raise InvalidArgument(
                    "page_token is not one this server issued", reason="BAD_PAGE_TOKEN"
                ) from exc
            where += " AND (created_at < ? OR (created_at = ? AND job_id < ?))"
            params += [created, created, job_id]
        if states:
            # SQLite holds a running job as QUEUED (states in between are memory only), so any
            # unfinished state asked for matches every unfinished row; the live state decides below.
            stored = {s.value for s in states}
            if any(not s.terminal for s in states):
                stored |= {s.value for s in JobState if not s.terminal}
            where += f" AND state IN ({','.join('?' * len(stored))})"
            params += sorted(stored)
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY created_at DESC, job_id DESC LIMIT ?",
            (*params, page_size + 1),
        )
        with self._lock:
            page = [self._live.get(r["job_id"]) or self._from_row(r) for r in rows[:page_size]]
        jobs = [j for j in page if not states or j.state in states]
        token = ""
        if len(rows) > page_size:
            last = page[-1]
            token = base64.urlsafe_b64encode(
                json.dumps([last.created_at, last.job_id]).encode()
            ).decode()
        return jobs, token

    # -- changes -------------------------------------------------------------------------------

    def set_state(self, job: Job, state: JobState, **progress: float | int | None) -> None:
        """Move a live job to ``state`` and publish a progress snapshot (memory only)."""
        with self._lock:
            if job.state.terminal:
                return
            job.state = state
            if state is not JobState.QUEUED and job.started_at is None:
                job.started_at = self._clock()
            job.progress = replace(job.progress, state=state, queue_position=0, **progress)  # type: ignore[arg-type]
            # Not written to SQLite: a crash turns any unfinished job into FAILED "server
            # restarted" whatever its last state was, so only creation and the end are durable.
            self._publish(job)

    def report(self, job: Job, progress: Progress) -> None:
        """Publish a progress snapshot (memory only; state changes go through set_state)."""
        with self._lock:
            if job.state.terminal:
                return
            job.progress = progress
            self._publish(job)

    def succeed(self, job: Job, result: JobResult) -> None:
        """Record success, persist it and wake watchers."""
        self._finish(job, JobState.SUCCEEDED, result=result)

    def fail(self, job: Job, failure: JobFailure) -> None:
        """Record failure (CANCELLED when the code says so), persist it and wake watchers."""
        state = JobState.CANCELLED if failure.code == "CANCELLED" else JobState.FAILED
        self._finish(job, state, error=failure)

    def _finish(
        self,
        job: Job,
        state: JobState,
        *,
        result: JobResult | None = None,
        error: JobFailure | None = None,
    ) -> None:
        with self._lock:
            if job.state.terminal:
                return
            job.state = state
            job.finished_at = self._clock()
            job.result = result
            job.error = error
            fraction = 1.0 if state is JobState.SUCCEEDED else job.progress.fraction
            job.progress = replace(
                job.progress, state=state, queue_position=0, fraction=fraction, eta=None
            )
            self._db.execute(
                "UPDATE jobs SET state = ?, started_at = ?, finished_at = ?, progress = ?, "
                "result = ?, error = ? WHERE job_id = ?",
                (
                    state.value,
                    job.started_at,
                    job.finished_at,
                    _progress_json(job.progress),
                    json.dumps(asdict(result)) if result else None,
                    json.dumps(asdict(error)) if error else None,
                    job.job_id,
                ),
                # Synced when the job kept a file, so its handle and history are on disk
                # together; a streamed file is already the client's, and its record survives
                # a killed process unsynced.
                synced=bool(result and result.handle),
            )
            self._publish(job)

    def note_corrupt(self, job_id: str, detail: str) -> None:
        """Record on a job that its kept file failed its checksum (DATA_LOSS, reason
        ``ARTIFACT_CORRUPT``), so GetJob tells why the handle no longer serves. The state and
        result stay as they were: the export did succeed; its stored bytes did not survive."""
        failure = JobFailure(
            "DATA_LOSS",
            f"the stored file is corrupt and is not served: {detail}",
            "ARTIFACT_CORRUPT",
        )
        with self._lock:
            job = self._live.get(job_id)
            if job is not None:
                job.error = failure
                self._publish(job)
            self._db.execute(
                "UPDATE jobs SET error = ? WHERE job_id = ?",
                (json.dumps(asdict(failure)), job_id),
            )

    def request_cancel(self, job_id: str, tenant: str, reason: str) -> Job:
        """Ask a job to stop; the thread running it notices within a fraction of a second."""
        job = self.get(job_id, tenant)
        with self._lock:
            if not job.state.terminal:
                job.cancel_reason = reason or "cancelled by a client"
                job.cancel_requested.set()
                self._publish(job)
        return job

    def cancel_all(self, reason: str) -> None:
        """Ask every live job to stop (shutdown after the grace period)."""
        with self._lock:
            for job in self._live.values():
                if not job.state.terminal:
                    job.cancel_reason = reason
                    job.cancel_requested.set()
            self._changed.notify_all()

    def _publish(self, job: Job) -> None:
        job.version += 1
        self._changed.notify_all()

    def watch(self, job: Job, *, is_active: Callable[[], bool] = lambda: True) -> Iterator[Job]:
        """Yield the job each time it changes, from now until it ends (then once more, final).

        The same Job object is yielded; read what you need from it before the next step."""
        seen = -1
        while True:
            with self._lock:
                self._changed.wait_for(
                    lambda: job.version != seen or job.state.terminal,  # noqa: B023 - runs now
                    timeout=0.5,
                )
                changed = job.version != seen
                seen = job.version
                terminal = job.state.terminal
            if changed or terminal:
                yield job
            if terminal or not is_active():
                return

    def running_jobs(self) -> list[Job]:
        """Live jobs that have not ended."""
        with self._lock:
            return [j for j in self._live.values() if not j.state.terminal]

    # -- rows ----------------------------------------------------------------------------------

    def _from_row(self, r: sqlite3.Row) -> Job:
        progress = _progress_from_json(r["progress"], JobState(r["state"]))
        result = None
        if r["result"]:
            data = json.loads(r["result"])
            data["warnings"] = tuple(ExportWarning(**w) for w in data.get("warnings", ()))
            result = JobResult(**data)
        error = JobFailure(**json.loads(r["error"])) if r["error"] else None
        return Job(
            job_id=r["job_id"],
            tenant=r["tenant"],
            format=r["format"],
            file_name=r["file_name"],
            priority=r["priority"],
            request_id=r["request_id"],
            delivery=r["delivery"],
            created_at=r["created_at"],
            state=JobState(r["state"]),
            started_at=r["started_at"],
            finished_at=r["finished_at"],
            progress=progress,
            result=result,
            error=error,
        )


def _progress_json(p: Progress) -> str:
    data = asdict(p)
    data["state"] = p.state.value
    return json.dumps(data)


def _progress_from_json(text: str | None, state: JobState) -> Progress:
    if not text:
        return Progress(state)
    data = json.loads(text)
    data["state"] = state
    return Progress(**data)
