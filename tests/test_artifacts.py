"""The artifact store and its database, on real files and a real SQLite database.

Time is injected (a settable clock) where expiry matters; everything else is the real thing:
files on disk, fsync, rename, SQLite in WAL mode, a killed process, a full filesystem.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from exportd.server.artifacts import HANDLE_PREFIX, Artifact, ArtifactStore
from exportd.server.db import Database
from exportd.server.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)

KiB = 1024
MiB = 1024 * KiB


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StoreFactory = Callable[..., ArtifactStore]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_store(tmp_path: Path, clock: Clock) -> Iterator[StoreFactory]:
    """Open stores on one data directory (each call is a fresh start of the server's store)."""
    opened: list[tuple[Database, ArtifactStore]] = []

    def make(**kwargs: object) -> ArtifactStore:
        db = Database(tmp_path / "exportd.db")
        options: dict[str, object] = {"min_free_bytes": 0, "clock": clock}
        options.update(kwargs)
        store = ArtifactStore(tmp_path / "artifacts", db, **options)  # type: ignore[arg-type]
        opened.append((db, store))
        return store

    yield make
    for db, store in opened:
        store.stop()
        db.close()


@pytest.fixture
def store(make_store: StoreFactory) -> ArtifactStore:
    return make_store()


def put(
    store: ArtifactStore,
    data: bytes,
    *,
    tenant: str = "acme",
    job_id: str = "job-1",
    file_name: str = "report.csv",
    ttl: float | None = None,
) -> Artifact:
    with store.begin(
        tenant=tenant, job_id=job_id, file_name=file_name, media_type="text/csv", ttl=ttl
    ) as pending:
        pending.write(data)
        return pending.commit()


def read_all(store: ArtifactStore, handle: str, tenant: str = "acme", **kwargs: int) -> bytes:
    return b"".join(data for _, data in store.read(handle, tenant, **kwargs))


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def flip_byte(path: Path, position: int) -> None:
    with path.open("r+b") as f:
        f.seek(position)
        original = f.read(1)
        f.seek(position)
        f.write(bytes([original[0] ^ 0xFF]))


# -- writing and committing ----------------------------------------------------------------------


def test_commit_round_trip_is_byte_identical_and_atomic(store: ArtifactStore) -> None:
    data = os.urandom(3 * MiB + 12_345)
    pending = store.begin(
        tenant="acme", job_id="job-7", file_name="../../etc/passwd", media_type="text/csv"
    )
    # Every buffer kind a writer may hand over, in small and large pieces.
    pending.write(data[:10])
    pending.write(bytearray(data[10:300_000]))
    pending.write(memoryview(data)[300_000 : 2 * MiB])
    pending.write(data[2 * MiB :])
    assert pending.tell() == len(data)
    assert pending.writable() and not pending.readable()

    # Before commit: bytes only in tmp/, nothing visible.
    assert names(store.tmp_dir) == [pending.temp_path.name]
    assert names(store.files_dir) == []
    assert store.count() == 0

    artifact = pending.commit()

    assert names(store.tmp_dir) == []
    assert names(store.files_dir) == [artifact.path.name]
    assert artifact.path.parent == store.files_dir
    # The user's file name is metadata only; the handle is not the name on disk either.
    assert artifact.file_name == "../../etc/passwd"
    assert artifact.handle not in artifact.path.name
    assert artifact.size == len(data)
    assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    assert artifact.path.read_bytes() == data
    assert artifact.tenant == "acme" and artifact.job_id == "job-7"
    assert artifact.expires_at - artifact.created_at == pytest.approx(store.default_ttl)
    assert read_all(store, artifact.handle) == data
    assert store.get(artifact.handle, "acme") == artifact
    with pytest.raises(FailedPrecondition):
        pending.write(b"more")
    with pytest.raises(FailedPrecondition):
        pending.commit()


def test_empty_file_commits_and_reads_nothing(store: ArtifactStore) -> None:
    artifact = put(store, b"")
    assert artifact.size == 0
    assert artifact.sha256 == hashlib.sha256(b"").hexdigest()
    assert list(store.read(artifact.handle, "acme")) == []


def test_pyarrow_writes_through_the_pending_file(store: ArtifactStore) -> None:
    table = pa.table({"id": pa.array(range(50_000), pa.int64()), "name": ["Zürich"] * 50_000})
    with store.begin(
        tenant="acme", job_id="job-pq", file_name="t.parquet", media_type="application/x-parquet"
    ) as pending:
        pq.write_table(table, pending, row_group_size=10_000)
        artifact = pending.commit()
    back = pq.read_table(io.BytesIO(read_all(store, artifact.handle)))
    assert back.equals(table)


def test_handles_are_unguessable(store: ArtifactStore) -> None:
    handles = [put(store, b"x", job_id=f"job-{i}").handle for i in range(200)]
    assert len(set(handles)) == len(handles)
    bits = 0
    for handle in handles:
        assert handle.startswith(HANDLE_PREFIX)
        raw = base64.urlsafe_b64decode(handle[len(HANDLE_PREFIX) :] + "==")
        assert len(raw) * 8 >= 128
        bits += sum(bin(byte).count("1") for byte in raw)
    total_bits = 200 * len(raw) * 8
    # Random bits: about half are ones (38,400 bits; 0.45..0.55 is > 35 standard deviations).
    assert 0.45 < bits / total_bits < 0.55
    on_disk = set(names(store.files_dir))
    assert not on_disk & set(handles)
    assert all(len(name) == 64 for name in on_disk)


def test_abort_close_and_exceptions_remove_the_temp_file(store: ArtifactStore) -> None:
    pending = store.begin(tenant="acme", job_id="j", file_name="a.csv", media_type="text/csv")
    pending.write(b"a" * 500_000)
    assert pending.temp_path.exists()
    pending.abort()
    assert not pending.temp_path.exists()
    pending.abort()  # idempotent
    with pytest.raises(FailedPrecondition):
        pending.write(b"b")
    with pytest.raises(FailedPrecondition):
        pending.commit()

    closed = store.begin(tenant="acme", job_id="j", file_name="b.csv", media_type="text/csv")
    closed.write(b"b" * 1000)
    closed.close()
    assert not closed.temp_path.exists()

    with (
        pytest.raises(RuntimeError, match="encoder failed"),
        store.begin(tenant="acme", job_id="j", file_name="c.csv", media_type="text/csv") as p,
    ):
        p.write(b"c" * 1000)
        raise RuntimeError("encoder failed")
    assert not p.temp_path.exists()
    assert names(store.tmp_dir) == []
    assert names(store.files_dir) == []
    assert store.count() == 0


def test_concurrent_writers_get_distinct_readable_files(store: ArtifactStore) -> None:
    payloads = {f"job-{i}": os.urandom(200_000 + i) for i in range(8)}
    results: dict[str, Artifact] = {}
    errors: list[BaseException] = []

    def work(job_id: str) -> None:
        try:
            results[job_id] = put(store, payloads[job_id], job_id=job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(j,)) for j in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({a.handle for a in results.values()}) == len(payloads)
    for job_id, artifact in results.items():
        assert read_all(store, artifact.handle) == payloads[job_id]


# -- restarts and crash leftovers --------------------------------------------------------------


def test_restart_keeps_handles_byte_identical(make_store: StoreFactory) -> None:
    first = make_store()
    data = os.urandom(2 * MiB + 7)
    artifact = put(first, data, tenant="t1")
    first.db.close()

    second = make_store()
    assert second.get(artifact.handle, "t1") == artifact
    assert read_all(second, artifact.handle, "t1") == data


def test_start_removes_orphans_and_forgets_lost_files(make_store: StoreFactory) -> None:
    first = make_store()
    kept = put(first, b"kept" * 1000)
    lost = put(first, b"lost" * 1000)
    lost.path.unlink()  # its row now points at nothing
    stray = first.files_dir / ("0" * 64)
    stray.write_bytes(b"a file no row knows")  # e.g. a crash between rename and insert
    pending = first.begin(tenant="acme", job_id="crashed", file_name="x", media_type="text/csv")
    pending.write(b"half-written" * 1000)
    pending.flush()
    (first.tmp_dir / "older.part").write_bytes(b"left by an older run")
    assert len(names(first.tmp_dir)) == 2

    second = make_store()
    assert names(second.tmp_dir) == []
    assert names(second.files_dir) == [kept.path.name]
    assert read_all(second, kept.handle) == b"kept" * 1000
    with pytest.raises(NotFound):
        second.get(lost.handle, "acme")
    assert second.count() == 1
    pending.abort()  # the crashed writer's leftovers are already gone; nothing breaks


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from exportd.server.artifacts import ArtifactStore
    from exportd.server.db import Database

    root = Path(sys.argv[1])
    store = ArtifactStore(root / "artifacts", Database(root / "exportd.db"), min_free_bytes=0)
    data = bytes(range(256)) * 8192
    p = store.begin(tenant="acme", job_id="done", file_name="a.csv", media_type="text/csv")
    p.write(data)
    print(p.commit().handle, flush=True)
    q = store.begin(tenant="acme", job_id="running", file_name="b.csv", media_type="text/csv")
    q.write(data)
    q.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_kill_9_after_commit_loses_nothing(tmp_path: Path, make_store: StoreFactory) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    handle = proc.stdout.strip()
    assert len(os.listdir(tmp_path / "artifacts" / "tmp")) == 1  # the running job's temp file

    store = make_store(clock=time.time)  # the child stamped its file with the real clock
    assert names(store.tmp_dir) == []
    assert read_all(store, handle) == bytes(range(256)) * 8192
    assert store.get(handle, "acme").sha256 == hashlib.sha256(bytes(range(256)) * 8192).hexdigest()


# -- expiry, sweeping and the size cap -----------------------------------------------------------


def test_expired_handle_is_not_found_and_removed(store: ArtifactStore, clock: Clock) -> None:
    artifact = put(store, b"short-lived", ttl=10)
    clock.advance(9)
    assert store.get(artifact.handle, "acme").handle == artifact.handle
    clock.advance(2)
    with pytest.raises(NotFound) as info:
        store.get(artifact.handle, "acme")
    assert info.value.reason == "ARTIFACT_NOT_FOUND"
    assert not artifact.path.exists()
    assert store.count() == 0


def test_sweep_removes_expired_files(store: ArtifactStore, clock: Clock) -> None:
    short = put(store, b"a" * 100, ttl=60, job_id="short")
    long = put(store, b"b" * 100, ttl=3600, job_id="long")
    clock.advance(61)
    assert [a.handle for a in store.list("acme")] == [long.handle]
    assert short.path.exists()  # not yet swept: still on disk and counted
    assert store.total_bytes() == 200
    assert store.sweep() == 1
    assert not short.path.exists()
    assert long.path.exists()
    assert store.total_bytes() == 100
    with pytest.raises(NotFound):
        store.read(short.handle, "acme")


def test_renew_extends_life(store: ArtifactStore, clock: Clock) -> None:
    artifact = put(store, b"keep me", ttl=60)
    clock.advance(50)
    renewed = store.renew(artifact.handle, "acme", 600)
    assert renewed.expires_at == pytest.approx(clock.now + 600)
    clock.advance(100)
    assert read_all(store, artifact.handle) == b"keep me"
    assert store.renew(artifact.handle, "acme", None).expires_at == pytest.approx(
        clock.now + store.default_ttl
    )
    with pytest.raises(InvalidArgument):
        store.renew(artifact.handle, "acme", 0)
    with pytest.raises(InvalidArgument):
        store.renew(artifact.handle, "acme", float("nan"))


def test_size_cap_evicts_expired_first_then_oldest(make_store: StoreFactory, clock: Clock) -> None:
    store = make_store(max_total_bytes=3000)
    a = put(store, b"a" * 1000, ttl=3600, job_id="a")
    clock.advance(1)
    b = put(store, b"b" * 1000, ttl=5, job_id="b")
    clock.advance(1)
    c = put(store, b"c" * 1000, ttl=3600, job_id="c")
    clock.advance(10)  # b has expired; a is the oldest

    d = put(store, b"d" * 1000, ttl=3600, job_id="d")
    assert not b.path.exists()
    assert {x.job_id for x in store.list("acme")} == {"a", "c", "d"}

    clock.advance(1)
    e = put(store, b"e" * 1000, ttl=3600, job_id="e")
    assert not a.path.exists()
    assert {x.job_id for x in store.list("acme")} == {"c", "d", "e"}
    assert store.total_bytes() == 3000

    # A file larger than the cap evicts everything else but is itself kept.
    clock.advance(1)
    big = put(store, b"f" * 5000, job_id="big")
    assert [x.handle for x in store.list("acme")] == [big.handle]
    assert read_all(store, big.handle) == b"f" * 5000
    assert names(store.files_dir) == [big.path.name]
    for gone in (c, d, e):
        with pytest.raises(NotFound):
            store.get(gone.handle, "acme")


def test_sweeper_thread_starts_sweeps_and_stops(store: ArtifactStore, clock: Clock) -> None:
    artifact = put(store, b"x" * 100, ttl=30)
    store.start_sweeper(0.02)
    store.start_sweeper(0.02)  # a second start does not add a thread
    assert store.sweeper_running
    sweepers = [t for t in threading.enumerate() if t.name == "exportd-artifact-sweeper"]
    assert len(sweepers) == 1 and sweepers[0].daemon
    clock.advance(31)
    deadline = time.monotonic() + 10
    while artifact.path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not artifact.path.exists()
    assert store.count() == 0
    started = time.monotonic()
    store.stop()
    assert time.monotonic() - started < 2
    assert not store.sweeper_running
    assert not sweepers[0].is_alive()
    with pytest.raises(InvalidArgument):
        store.start_sweeper(0)


# -- reading --------------------------------------------------------------------------------------


def test_ranged_read_and_resume_equal_the_tail(store: ArtifactStore) -> None:
    data = os.urandom(5 * 64 * KiB + 999)
    artifact = put(store, data)
    chunk = 64 * KiB

    # A download interrupted after three chunks resumes where it stopped.
    received = bytearray()
    for i, (offset, piece) in enumerate(store.read(artifact.handle, "acme", chunk_size=chunk)):
        assert offset == len(received)
        assert len(piece) <= chunk
        received += piece
        if i == 2:
            break
    for offset, piece in store.read(
        artifact.handle, "acme", offset=len(received), chunk_size=chunk
    ):
        assert offset == len(received)
        assert len(piece) <= chunk
        received += piece
    assert bytes(received) == data

    for offset in (1, 100_000, len(data) - 1):
        assert read_all(store, artifact.handle, offset=offset, chunk_size=chunk) == data[offset:]
    assert read_all(store, artifact.handle, offset=1000, limit=70_000) == data[1000:71_000]
    assert read_all(store, artifact.handle, limit=10) == data[:10]
    assert read_all(store, artifact.handle, offset=10, limit=10 * len(data)) == data[10:]


def test_read_range_errors(store: ArtifactStore) -> None:
    artifact = put(store, b"0123456789")
    assert list(store.read(artifact.handle, "acme", offset=10)) == []
    with pytest.raises(OutOfRange):
        store.read(artifact.handle, "acme", offset=11)
    with pytest.raises(InvalidArgument):
        store.read(artifact.handle, "acme", offset=-1)
    with pytest.raises(InvalidArgument):
        store.read(artifact.handle, "acme", limit=-1)
    with pytest.raises(NotFound):
        store.read("art_" + "A" * 32, "acme")
    with pytest.raises(NotFound):
        store.read("", "acme")


def test_corrupted_file_is_never_sent_in_full(
    make_store: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[tuple[str, str]] = []
    store = make_store(on_corrupt=lambda a, detail: reported.append((a.handle, detail)))
    chunk = 64 * KiB
    data = os.urandom(4 * chunk + 100)

    for position in (10, 2 * chunk + 5, len(data) - 1):
        artifact = put(store, data, job_id=f"job-{position}")
        flip_byte(artifact.path, position)
        received = bytearray()
        with (
            caplog.at_level(logging.ERROR, logger="exportd.artifacts"),
            pytest.raises(DataLoss) as info,
        ):
            for _, piece in store.read(artifact.handle, "acme", chunk_size=chunk):
                received += piece
        assert info.value.reason == "ARTIFACT_CORRUPT"
        assert len(received) < len(data)  # the last chunk was held back
        assert reported[-1][0] == artifact.handle
        assert any(artifact.handle in r.getMessage() for r in caplog.records)

        # A ranged (resumed) read verifies the whole file before sending anything.
        with pytest.raises(DataLoss):
            store.read(artifact.handle, "acme", offset=len(received))
        with pytest.raises(DataLoss):
            store.read(artifact.handle, "acme", limit=10)

    small = put(store, b"tiny file", job_id="small")
    flip_byte(small.path, 0)
    stream = store.read(small.handle, "acme")
    with pytest.raises(DataLoss):
        next(stream)


def test_truncated_file_is_data_loss(store: ArtifactStore) -> None:
    artifact = put(store, b"z" * 10_000)
    with artifact.path.open("r+b") as f:
        f.truncate(5_000)
    with pytest.raises(DataLoss):
        store.read(artifact.handle, "acme")


def test_resumes_do_not_rehash_a_verified_file(store: ArtifactStore) -> None:
    data = os.urandom(300_000)
    artifact = put(store, data)
    # Hashed as it was written: neither whole reads nor resumes hash it again.
    assert read_all(store, artifact.handle) == data
    for offset in (1000, 2000, 3000):
        assert read_all(store, artifact.handle, offset=offset) == data[offset:]
    assert store.verifications == 0

    # A change to the file (a later write, so a later mtime and ctime) invalidates that.
    flip_byte(artifact.path, 200_000)
    later = time.time() + 5
    os.utime(artifact.path, (later, later))
    with pytest.raises(DataLoss):
        store.read(artifact.handle, "acme", offset=4000)
    assert store.verifications == 1


def test_a_restarted_store_verifies_before_trusting(store: ArtifactStore) -> None:
    data = os.urandom(300_000)
    artifact = put(store, data)
    again = ArtifactStore(store.root, store.db)
    assert read_all(again, artifact.handle, offset=1000) == data[1000:]
    assert read_all(again, artifact.handle, offset=2000) == data[2000:]
    assert again.verifications == 1


def test_read_survives_concurrent_delete(store: ArtifactStore) -> None:
    data = os.urandom(400_000)
    artifact = put(store, data)
    stream = store.read(artifact.handle, "acme", chunk_size=64 * KiB)
    first = next(stream)
    store.delete(artifact.handle, "acme")
    assert not artifact.path.exists()
    assert first[1] + b"".join(piece for _, piece in stream) == data


def test_delete(store: ArtifactStore) -> None:
    artifact = put(store, b"bye")
    store.delete(artifact.handle, "acme")
    assert not artifact.path.exists()
    with pytest.raises(NotFound):
        store.delete(artifact.handle, "acme")
    with pytest.raises(NotFound):
        store.get(artifact.handle, "acme")


# -- tenants and space -------------------------------------------------------------------------


def test_tenants_are_isolated(store: ArtifactStore) -> None:
    mine = put(store, b"acme's data", tenant="acme")
    theirs = put(store, b"globex data" * 10, tenant="globex")

    with pytest.raises(NotFound) as other:
        store.get(mine.handle, "globex")
    with pytest.raises(NotFound) as unknown:
        store.get("art_doesnotexist", "globex")
    assert other.value.message == unknown.value.message
    assert other.value.reason == "ARTIFACT_NOT_FOUND"
    with pytest.raises(NotFound):
        store.read(mine.handle, "globex")
    with pytest.raises(NotFound):
        store.delete(mine.handle, "globex")
    with pytest.raises(NotFound):
        store.renew(mine.handle, "globex", 60)

    assert [a.handle for a in store.list("acme")] == [mine.handle]
    assert [a.handle for a in store.list("globex")] == [theirs.handle]
    assert store.list("initech") == []
    assert store.total_bytes("acme") == 11
    assert store.total_bytes("globex") == 110
    assert store.total_bytes() == 121
    assert read_all(store, mine.handle, "acme") == b"acme's data"


def test_tenant_quota(make_store: StoreFactory) -> None:
    store = make_store(max_tenant_bytes=1000)
    first = put(store, b"q" * 1000, tenant="acme")
    with pytest.raises(ResourceExhausted) as info:
        store.begin(tenant="acme", job_id="j2", file_name="b", media_type="text/csv")
    assert info.value.reason == "TENANT_QUOTA"
    put(store, b"other tenant is unaffected", tenant="globex")
    store.delete(first.handle, "acme")
    put(store, b"room again", tenant="acme")
    assert names(store.tmp_dir) == []


def test_low_free_space_refuses_to_begin(make_store: StoreFactory) -> None:
    store = make_store(min_free_bytes=1 << 62)
    with pytest.raises(ResourceExhausted) as info:
        store.begin(tenant="acme", job_id="j", file_name="a", media_type="text/csv")
    assert info.value.reason == "DISK_FULL"
    assert names(store.tmp_dir) == []


def test_invalid_ttl_is_refused(store: ArtifactStore) -> None:
    for ttl in (0, -5, float("inf")):
        with pytest.raises(InvalidArgument):
            store.begin(tenant="acme", job_id="j", file_name="a", media_type="text/csv", ttl=ttl)
    assert names(store.tmp_dir) == []


_FILL_A_SMALL_DISK = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from exportd.server.artifacts import ArtifactStore
    from exportd.server.db import Database
    from exportd.server.errors import ResourceExhausted

    disk = Path(sys.argv[1])
    db = Database(Path(sys.argv[2]))
    store = ArtifactStore(disk, db, min_free_bytes=0)
    p = store.begin(tenant="acme", job_id="big", file_name="big.csv", media_type="text/csv")
    try:
        for _ in range(64):
            p.write(os.urandom(64 * 1024))
        p.commit()
        print("no error")
    except ResourceExhausted as exc:
        print(exc.reason, sorted(os.listdir(disk / "tmp")))
    small = os.urandom(100_000)
    q = store.begin(tenant="acme", job_id="small", file_name="s.csv", media_type="text/csv")
    q.write(small)
    a = q.commit()
    print(b"".join(d for _, d in store.read(a.handle, "acme")) == small)
    """
)


def test_disk_full_while_writing_removes_the_temp_file(tmp_path: Path) -> None:
    """ENOSPC from a real 1 MiB tmpfs, mounted in a private mount namespace."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare(1) is not installed")
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = subprocess.run(
        [unshare, "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {disk}"],
        capture_output=True,
    )
    if probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs in a user namespace here")
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {disk} && "
        f'exec "{sys.executable}" -c "$0" {disk} {tmp_path / "exportd.db"}'
    )
    proc = subprocess.run(
        [unshare, "-rm", "sh", "-c", script, _FILL_A_SMALL_DISK],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["DISK_FULL []", "True"]


# -- the database ---------------------------------------------------------------------------------


def test_database_is_durable_and_transactional(tmp_path: Path) -> None:
    db = Database(tmp_path / "t.db")
    assert db.execute("PRAGMA journal_mode")[0][0] == "wal"
    assert db.execute("PRAGMA synchronous")[0][0] == 2  # FULL
    db.executescript("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL);")
    db.executescript("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL);")
    db.execute("INSERT INTO kv VALUES (?, ?)", ("a", 1))

    with pytest.raises(RuntimeError), db.transaction():
        db.execute("INSERT INTO kv VALUES (?, ?)", ("b", 2))
        db.execute("UPDATE kv SET v = 10 WHERE k = 'a'")
        raise RuntimeError("roll back")
    assert [tuple(r) for r in db.execute("SELECT k, v FROM kv ORDER BY k")] == [("a", 1)]

    with db.transaction() as conn:
        conn.execute("INSERT INTO kv VALUES ('c', 3)")
        db.execute("INSERT INTO kv VALUES ('d', 4)")
    assert db.executemany("INSERT INTO kv VALUES (?, ?)", [("e", 5), ("f", 6)]) == 2
    assert db.execute_rowcount("DELETE FROM kv WHERE v > ?", (4,)) == 2

    def insert_many(prefix: str) -> None:
        for i in range(200):
            db.execute("INSERT INTO kv VALUES (?, ?)", (f"{prefix}{i}", i))

    threads = [threading.Thread(target=insert_many, args=(p,)) for p in "wxyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    db.close()

    reopened = Database(tmp_path / "t.db")
    rows = reopened.execute("SELECT k, v FROM kv WHERE k IN ('a', 'c', 'd')  ORDER BY k")
    assert [(r["k"], r["v"]) for r in rows] == [("a", 1), ("c", 3), ("d", 4)]
    assert reopened.execute("SELECT COUNT(*) FROM kv")[0][0] == 3 + 800
    reopened.close()
