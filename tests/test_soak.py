"""A bounded soak against a real ``exportd serve`` process: a few hundred mixed exports from four
client threads (CSV, XLSX, PDF, Parquet, streamed and kept; cancels by CancelJob and by the
stream's cancel message; malformed streams; client deadlines), with the server's resident memory,
open descriptors and threads measured after a warm-up and at the end, and every kept file
downloaded again at the end."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from exportd.client import (
    CancelledError,
    DeadlineExceededError,
    ExportClient,
    ExportResult,
)
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc
from exportd.v1 import formats_pb2 as fpb
from support import reference_table
from test_cli import ServerProcess

THREADS = 4
WARMUP_OPS = 16  # per thread: every operation once
SOAK_OPS = 100  # per thread, after the warm-up
TIME_BOUND = 60.0  # seconds for the whole soak; fewer operations run on a slow machine

RSS_TOLERANCE = 1.25  # resident memory may grow 25 % past the warm-up
FD_TOLERANCE = 5
THREAD_TOLERANCE = 5


def sample(pid: int) -> dict[str, int]:
    """Resident memory (KiB), threads and open descriptors of a process, from /proc."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()[0] if value.split() else ""
    return {
        "rss_kib": int(status["VmRSS"]),
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


class Soak:
    """The operations one client thread draws from, and what they left to check."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.table = reference_table(400)
        self.ipc = ipc_bytes(self.table)
        self.kept: list[tuple[ExportResult, bytes | None]] = []
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _record(self, name: str, kept: tuple[ExportResult, bytes | None] | None = None) -> None:
        with self._lock:
            self.outcomes[name] += 1
            if kept is not None:
                self.kept.append(kept)

    # -- operations ---------------------------------------------------------------------------

    def streamed(self, c: ExportClient, fmt: str) -> None:
        result = c.export(self.table, fmt)
        assert result.data is not None and result.size == len(result.data)
        assert hashlib.sha256(result.data).hexdigest() == result.sha256
        if fmt == "csv":
            back = pcsv.read_csv(pa.BufferReader(result.data))
            assert back["order_id"].to_pylist() == self.table["order_id"].to_pylist()
        elif fmt == "parquet":
            assert pq.read_table(pa.BufferReader(result.data)).equals(self.table)
        self._record(f"{fmt} streamed")

    def kept_only(self, c: ExportClient, fmt: str) -> None:
        result = c.export(self.table, fmt, delivery="handle")
        assert result.handle
        self._record(f"{fmt} kept", (result, None))

    def streamed_and_kept(self, c: ExportClient, fmt: str) -> None:
        result = c.export(self.table, fmt, delivery="stream_and_handle")
        assert result.handle and result.data is not None
        self._record(f"{fmt} streamed and kept", (result, result.data))

    def cancel_job(self, c: ExportClient) -> None:
        gate = threading.Event()

        def held() -> Iterator[pa.RecordBatch]:
            yield self.table.to_batches()[0]
            gate.wait(30)

        def cancel(job_id: str) -> None:
            c.cancel(job_id, "soak")

        try:
            with pytest.raises(CancelledError):
                c.export(held(), "xlsx", on_accepted=cancel)
        finally:
            gate.set()
        self._record("cancelled by CancelJob")

    def cancel_message(self, c: ExportClient) -> None:
        requests = [
            epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_PDF)),
            epb.ExportRequest(data=epb.ExportData(arrow_ipc=self.ipc[: len(self.ipc) // 2])),
            epb.ExportRequest(cancel=epb.ExportCancel(reason="soak")),
        ]
        with grpc.insecure_channel(self.target) as channel, pytest.raises(grpc.RpcError) as info:
            list(epb_grpc.ExportServiceStub(channel).Export(iter(requests), timeout=30))
        assert info.value.code() == grpc.StatusCode.CANCELLED
        self._record("cancelled by the stream")

    def malformed(self, c: ExportClient) -> None:
        garbage = bytearray(self.ipc)
        garbage[8:40] = os.urandom(32)  # inside the schema message's header
        requests = [
            epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV)),
            epb.ExportRequest(data=epb.ExportData(arrow_ipc=bytes(garbage))),
            epb.ExportRequest(end=epb.ExportEnd()),
        ]
        with grpc.insecure_channel(self.target) as channel, pytest.raises(grpc.RpcError) as info:
            list(epb_grpc.ExportServiceStub(channel).Export(iter(requests), timeout=30))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
        self._record("malformed")

    def deadline(self, c: ExportClient) -> None:
        gate = threading.Event()

        def stalls() -> Iterator[pa.RecordBatch]:
            yield self.table.to_batches()[0]
            gate.wait(30)

        try:
            with pytest.raises(DeadlineExceededError):
                c.export(stalls(), "csv", delivery="stream_and_handle", timeout=0.3)
        finally:
            gate.set()
        self._record("deadline")

    def mix(self) -> list[Callable[[ExportClient], None]]:
        """One of each operation; the runs draw from it at random."""
        ops: list[Callable[[ExportClient], None]] = []
        for fmt in ("csv", "xlsx", "pdf", "parquet"):
            ops += [
                lambda c, f=fmt: self.streamed(c, f),  # type: ignore[misc]
                lambda c, f=fmt: self.kept_only(c, f),  # type: ignore[misc]
                lambda c, f=fmt: self.streamed_and_kept(c, f),  # type: ignore[misc]
            ]
        ops += [self.cancel_job, self.cancel_message, self.malformed, self.deadline]
        return ops

    def run(self, ops_per_thread: int, seed: int, stop_at: float) -> int:
        """Run the mix on THREADS threads; returns how many operations ran."""
        errors: list[BaseException] = []
        done = Counter[int]()

        def worker(n: int) -> None:
            rng = random.Random(seed * 100 + n)
            mix = self.mix()
            with ExportClient(self.target) as c:
                for i in range(ops_per_thread):
                    # Every operation once, in turn, then drawn at random.
                    op = mix[i % len(mix)] if i < len(mix) else rng.choice(mix)
                    if time.monotonic() > stop_at:
                        return
                    try:
                        op(c)
                    except BaseException as exc:  # reported after the join
                        errors.append(exc)
                        return
                    done[n] += 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIME_BOUND + 30)
        if errors:
            raise errors[0]
        return sum(done.values())


def settled(pid: int) -> dict[str, int]:
    """A sample once the server has had a moment to finish what the clients left."""
    time.sleep(1.0)
    return sample(pid)


def test_soak_keeps_memory_descriptors_and_threads_flat_and_loses_no_handle(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, "--max-queue", "64")
    started = time.monotonic()
    try:
        soak = Soak(server.target)
        warm_ops = soak.run(WARMUP_OPS, seed=1, stop_at=started + TIME_BOUND / 3)
        warm = settled(server.proc.pid)
        soak_ops = soak.run(SOAK_OPS, seed=2, stop_at=started + TIME_BOUND)
        end = settled(server.proc.pid)

        lost = []
        for result, streamed in soak.kept:
            out = tmp_path / "fetched"
            with ExportClient(server.target) as c:
                c.fetch(result.handle, out, resume=False)
            body = out.read_bytes()
            if hashlib.sha256(body).hexdigest() != result.sha256 or (
                streamed is not None and body != streamed
            ):
                lost.append(result.handle)
        final = sample(server.proc.pid)
        assert server.stop() == 0
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    elapsed = time.monotonic() - started
    print(
        f"\nsoak: {warm_ops} warm-up + {soak_ops} operations in {elapsed:.1f} s; "
        f"{dict(soak.outcomes)}\nafter warm-up {warm}\nat the end    {end}\n"
        f"after fetching {len(soak.kept)} kept files {final}"
    )
    assert warm_ops + soak_ops >= 200, "a few hundred operations ran"
    for kind in ("cancelled by CancelJob", "cancelled by the stream", "malformed", "deadline"):
        assert soak.outcomes[kind] >= 5, kind
    assert not lost, f"{len(lost)} of {len(soak.kept)} kept files did not come back intact"
    assert end["rss_kib"] <= warm["rss_kib"] * RSS_TOLERANCE, (warm, end)
    assert end["fds"] <= warm["fds"] + FD_TOLERANCE, (warm, end)
    assert end["threads"] <= warm["threads"] + THREAD_TOLERANCE, (warm, end)
    assert not os.listdir(data / "artifacts" / "tmp")
    assert not os.listdir(data / "scratch")
