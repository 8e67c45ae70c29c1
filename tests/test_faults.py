"""Faults against real servers: a connection cut mid-download, deadlines that pass and clients
that die mid-export, hostile compressed Arrow bodies, and a stored file that rots on disk."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
from exportd.client import (
    DeadlineExceededError,
    ExportClient,
    Progress,
    StatusCode,
    UnavailableError,
)
from exportd.client.errors import DataLossError
from exportd.server.app import RunningServer
from exportd.server.jobs import JobState
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc
from exportd.v1 import formats_pb2 as fpb
from support import ServerFactory, reference_table
from test_cli import ServerProcess

# -- a TCP proxy that cuts connections ---------------------------------------------------------


class CuttingProxy:
    """Forwards 127.0.0.1 connections to ``target``; the first ``cuts`` connections are cut
    once ``cut_after`` bytes have gone from the server to the client, later ones pass whole.
    After a cut the link stays down for ``down_for`` seconds: connections are dropped at once.

    A real TCP connection dropped in the middle of an HTTP/2 stream: the client's gRPC core
    sees the socket die, exactly as with a flaky network or a restarting load balancer.
    """

    def __init__(
        self, target: str, *, cut_after: int, cuts: int = 1, down_for: float = 0.0
    ) -> None:
        host, port = target.rsplit(":", 1)
        self._upstream = (host, int(port))
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.down_for = down_for
        self.refused = 0
        """Connections reset at once because the link was down after a cut."""
        self._down_until = 0.0
        self.connections = 0
        self.forwarded = 0
        """Bytes sent from the server to the client, over all connections."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        accept = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                down = time.monotonic() < self._down_until
                self.refused += down
            if down:
                _drop(downstream)
                continue
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                if self._closed:
                    downstream.close()
                    upstream.close()
                    return
                self.connections += 1
                cut = self.cuts_left > 0
                self.cuts_left -= 1 if cut else 0
                self._sockets += [downstream, upstream]
            for src, dst, counted in ((downstream, upstream, False), (upstream, downstream, True)):
                pump = threading.Thread(
                    target=self._pump,
                    args=(src, dst, counted, cut, (downstream, upstream)),
                    name="proxy-pump",
                    daemon=True,
                )
                pump.start()
                self._threads.append(pump)

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        counted: bool,
        cut: bool,
        pair: tuple[socket.socket, socket.socket],
    ) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if counted and cut and sent + len(data) >= self.cut_after:
                    dst.sendall(data[: self.cut_after - sent])
                    with self._lock:
                        self.forwarded += self.cut_after - sent
                        self._down_until = time.monotonic() + self.down_for
                    _drop(*pair)  # both ways at once, like a link that died
                    return
                dst.sendall(data)
                if counted:
                    sent += len(data)
                    with self._lock:
                        self.forwarded += len(data)
        except OSError:
            pass
        finally:
            _drop(*pair)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets = list(self._sockets)
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        _drop(*sockets)
        for t in self._threads:
            t.join(5)


def _drop(*sockets: socket.socket) -> None:
    """Shut down (waking any thread blocked in recv on them) and close."""
    for s in sockets:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


@pytest.fixture
def big_handle(server: RunningServer) -> tuple[str, bytes, pa.Table]:
    """An 8 MiB Arrow IPC file kept by the server, incompressible, with its stored bytes."""
    table = pa.table({"blob": pa.array([os.urandom(64 << 10) for _ in range(128)], pa.binary())})
    with ExportClient(server.target) as c:
        result = c.export(table, "arrow", delivery="handle")
    (stored,) = server.artifacts.files_dir.iterdir()
    data = stored.read_bytes()
    assert hashlib.sha256(data).hexdigest() == result.sha256
    return result.handle, data, table


def test_fetch_resumes_after_the_connection_drops_mid_download(
    server: RunningServer, big_handle: tuple[str, bytes, pa.Table], tmp_path: Path
) -> None:
    handle, stored, table = big_handle
    cut_after = 3 << 20
    proxy = CuttingProxy(server.target, cut_after=cut_after)
    seen: list[tuple[int, int]] = []  # (bytes on disk, proxy connections) at each chunk
    out = tmp_path / "fetched.arrow"
    try:
        with ExportClient(proxy.target) as c:
            info = c.fetch(
                handle, out, on_bytes=lambda have, total: seen.append((have, proxy.connections))
            )
    finally:
        proxy.close()
    assert proxy.connections == 2, "one connection cut, one retry"
    assert out.read_bytes() == stored and info.size == len(stored)
    assert pa.ipc.open_file(out).read_all().equals(table)
    kept = max(have for have, conn in seen if conn == 1)
    assert 0 < kept < len(stored), "bytes from the first connection were kept"
    assert min(have for have, conn in seen if conn == 2) > kept
    # A restart from zero would send the whole file again after the cut.
    assert proxy.forwarded < len(stored) + cut_after


def test_fetch_waits_out_a_link_that_stays_down_for_a_while(
    server: RunningServer, big_handle: tuple[str, bytes, pa.Table], tmp_path: Path
) -> None:
    handle, stored, _ = big_handle
    proxy = CuttingProxy(server.target, cut_after=3 << 20, down_for=1.5)
    out = tmp_path / "fetched.arrow"
    try:
        with ExportClient(proxy.target) as c:
            c.fetch(handle, out)
    finally:
        proxy.close()
    assert out.read_bytes() == stored
    assert proxy.refused >= 1, "the retry met the link still down"


def test_fetch_gives_up_after_its_retries_and_a_later_fetch_resumes(
    server: RunningServer, big_handle: tuple[str, bytes, pa.Table], tmp_path: Path
) -> None:
    handle, stored, _ = big_handle
    out = tmp_path / "partial.arrow"
    proxy = CuttingProxy(server.target, cut_after=2 << 20, cuts=10)
    try:
        with ExportClient(proxy.target) as c, pytest.raises(UnavailableError):
            c.fetch(handle, out, retries=2)
    finally:
        proxy.close()
    assert proxy.connections == 3  # the first try and two retries
    partial = out.read_bytes()
    assert 0 < len(partial) < len(stored) and stored.startswith(partial)
    sent: list[int] = []
    with ExportClient(server.target) as c:
        c.fetch(handle, out, on_bytes=lambda have, total: sent.append(have))
    assert out.read_bytes() == stored
    assert sent[0] > len(partial), "the second fetch started where the first stopped"


# -- a stored file that rots ---------------------------------------------------------------------


def test_corrupted_artifact_is_data_loss_and_recorded_on_its_job(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server()
    table = pa.table({"n": pa.array(range(50_000), pa.int64())})
    with ExportClient(server.target) as c:
        result = c.export(table, "csv", delivery="handle")
        assert c.get_job(result.job_id).error is None
        (stored,) = server.artifacts.files_dir.iterdir()
        data = bytearray(stored.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit, same size
        stored.write_bytes(bytes(data))
        with pytest.raises(DataLossError) as info:
            c.fetch(result.handle, tmp_path / "rotten.csv")
        assert info.value.reason == "ARTIFACT_CORRUPT"
        job = c.get_job(result.job_id)
        assert job.state == "succeeded" and job.result is not None  # the history stands
        assert job.error is not None and job.error.code is StatusCode.DATA_LOSS
        assert job.error.reason == "ARTIFACT_CORRUPT" and "sha256" in job.error.message
    server.stop(0)
    # The record is durable: a restarted server still reports it.
    again = make_server()
    with ExportClient(again.target) as c:
        job = c.get_job(result.job_id)
        assert job.error is not None and job.error.reason == "ARTIFACT_CORRUPT"


# -- deadlines and clients that go away ----------------------------------------------------------


def _leftovers(server: RunningServer, job_id: str) -> list[str]:
    """What an ended export must not leave behind: its threads, its slot, its temp files."""
    left = [t.name for t in threading.enumerate() if t.name.endswith(job_id)]
    if server.governor.running:
        left.append(f"{server.governor.running} governor slot(s)")
    left += [f"tmp/{p.name}" for p in server.artifacts.tmp_dir.iterdir()]
    left += [f"scratch/{p.name}" for p in (server.config.data_dir / "scratch").iterdir()]
    if not server.jobs.get(job_id, "").state.terminal:
        left.append("job still running")
    return left


def _released_within(server: RunningServer, job_id: str, since: float, limit: float) -> float:
    """Seconds from ``since`` until nothing of the job is left; fails after ``limit``."""
    while True:
        left = _leftovers(server, job_id)
        elapsed = time.monotonic() - since
        if not left:
            return elapsed
        assert elapsed < limit, f"after {elapsed:.2f} s still held: {left}"
        time.sleep(0.01)


def test_expired_deadline_while_uploading_frees_everything(make_server: ServerFactory) -> None:
    server = make_server()
    release = threading.Event()
    ids: list[str] = []

    def stalls() -> Iterator[pa.RecordBatch]:
        yield from reference_table(500).to_batches(max_chunksize=100)
        release.wait(30)  # the client never sends the rest

    try:
        with ExportClient(server.target) as c, pytest.raises(DeadlineExceededError):
            c.export(
                stalls(), "xlsx", delivery="stream_and_handle", timeout=1.0, on_accepted=ids.append
            )
        expired = time.monotonic()
        took = _released_within(server, ids[0], expired, 1.0)
    finally:
        release.set()
    job = server.jobs.get(ids[0], "")
    assert job.state is JobState.CANCELLED and job.error is not None
    assert job.error.reason == "CLIENT_GONE" and "went away" in job.error.message
    print(f"released {took:.3f} s after the deadline")


def test_expired_deadline_while_rendering_a_pdf_stops_it(make_server: ServerFactory) -> None:
    server = make_server()
    batches = reference_table(120_000).to_batches(max_chunksize=5_000)
    with ExportClient(server.target) as c:
        # Aim the deadline a little into rendering, from the phases of the previous run; the
        # machine's load moves them, so aim again (at most four times) until it lands there.
        seen: dict[str, float] = {}

        def timed(p: Progress) -> None:
            seen.setdefault(p.state, time.monotonic())

        began = time.monotonic()
        c.export(batches, "pdf", on_progress=timed)
        timeout = took = 0.0
        for _ in range(4):
            if "succeeded" in seen:
                rendering = seen["succeeded"] - seen["rendering"]
                timeout = seen["rendering"] - began + max(0.3, rendering / 3)
            else:  # the deadline fell before rendering: aim later
                timeout += 0.5
            ids: list[str] = []
            seen.clear()
            began = time.monotonic()
            try:
                c.export(
                    batches,
                    "pdf",
                    delivery="stream_and_handle",
                    timeout=timeout,
                    on_accepted=ids.append,
                    on_progress=timed,
                )
                continue  # done before the deadline: aim again
            except DeadlineExceededError:
                expired = time.monotonic()
            took = _released_within(server, ids[0], expired, 1.0)
            job = server.jobs.get(ids[0], "")
            assert job.state is JobState.CANCELLED and job.error is not None
            assert job.error.reason == "CLIENT_GONE"
            if "rendering" in seen:
                seen.pop("succeeded", None)
                break
        else:
            pytest.fail("no deadline fell while the PDF was rendering")
    print(f"released {took:.3f} s after the deadline, {timeout:.2f} s into the export")


CLIENT = """
import sys
from exportd.client import ExportClient
sys.path.insert(0, sys.argv[3])
from support import reference_table

batches = reference_table(int(sys.argv[2])).to_batches(max_chunksize=5_000)
with ExportClient(sys.argv[1]) as c:
    c.export(
        batches, "pdf", delivery="stream_and_handle", on_accepted=lambda j: print(j, flush=True)
    )
"""


@pytest.mark.parametrize("phase", [JobState.RECEIVING, JobState.RENDERING])
def test_client_killed_mid_export_frees_everything(
    make_server: ServerFactory, phase: JobState
) -> None:
    server = make_server()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, server.target, "60000", str(Path(__file__).parent)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert client.stdout is not None
        job_id = client.stdout.readline().strip()
        job = server.jobs.get(job_id, "")
        deadline = time.monotonic() + 30
        # In the phase, with its temp file begun.
        while job.state is not phase or not list(server.artifacts.tmp_dir.iterdir()):
            assert time.monotonic() < deadline and not job.state.terminal, job.state
            time.sleep(0.01)
        client.kill()
        killed = time.monotonic()
        client.wait(10)
        took = _released_within(server, job_id, killed, 1.0)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
    assert job.state is JobState.CANCELLED and job.error is not None
    assert job.error.reason == "CLIENT_GONE"
    print(f"released {took:.3f} s after kill -9 while {phase.name}")


# -- compressed Arrow bodies ---------------------------------------------------------------------


def _ipc(table: pa.Table, compression: str | None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def _export_raw(target: str, data: bytes, piece: int = 1 << 20) -> list[epb.ExportResponse]:
    requests = [epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV))]
    for start in range(0, len(data), piece):
        requests.append(
            epb.ExportRequest(data=epb.ExportData(arrow_ipc=data[start : start + piece]))
        )
    requests.append(epb.ExportRequest(end=epb.ExportEnd()))
    with grpc.insecure_channel(target) as channel:
        return list(epb_grpc.ExportServiceStub(channel).Export(iter(requests), timeout=60))


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_compressed_batches_are_sized_before_they_are_decoded(tmp_path: Path) -> None:
    limit = 64 << 20
    server = ServerProcess(tmp_path / "data", "--limits-max-batch-bytes", str(limit))
    try:
        # Legitimate compressed input, with a dictionary column, goes through untouched.
        words = pa.array(["alpha", "beta", "gamma"] * 10_000).dictionary_encode()
        table = pa.table({"n": pa.array(range(30_000), pa.int64()), "w": words})
        for codec in ("lz4", "zstd"):
            replies = _export_raw(server.target, _ipc(table, codec))
            csv = b"".join(r.chunk.data for r in replies if r.WhichOneof("kind") == "chunk")
            back = pcsv.read_csv(pa.BufferReader(csv))
            assert back["n"].equals(table["n"]) and back["w"].to_pylist() == words.to_pylist()
        before = _status_kib(server.proc.pid, "VmHWM")
        # A gibibyte of zeros compresses to a few dozen kilobytes.
        zeros = pa.table({"z": pa.array(np.zeros(1 << 27, dtype=np.int64))})
        refusals: list[grpc.RpcError] = []
        for codec in ("zstd", "lz4"):
            hostile = _ipc(zeros, codec)
            assert len(hostile) < 8 << 20
            with pytest.raises(grpc.RpcError) as info:
                _export_raw(server.target, hostile)
            refusals.append(info.value)
        grown = _status_kib(server.proc.pid, "VmHWM") - before
        assert grown < 100 << 10, f"peak memory grew by {grown} KiB"
        for refusal in refusals:
            assert refusal.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = refusal.details() or ""
            assert "max_batch_bytes" in details and str(limit) in details
            assert str(1 << 30) in details, "the decoded size is named"
        with ExportClient(server.target) as c:  # and it goes on serving
            assert c.export(table.slice(0, 10), "csv").rows == 10
        print(f"peak RSS grew {grown} KiB over two 1 GiB compressed batches")
    finally:
        server.stop(signal.SIGKILL)
