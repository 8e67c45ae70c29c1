"""The service end to end through the Python SDK against a real server on 127.0.0.1:0."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import openpyxl
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from exportd.client import (
    CancelledError,
    ExportClient,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    Progress,
    ResourceExhaustedError,
)
from exportd.server.app import RunningServer
from exportd.server.jobs import JobState
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc
from exportd.v1 import formats_pb2 as fpb
from python_calamine import CalamineWorkbook
from support import ServerFactory, reference_table, wait_for


def held_batches(
    table: pa.Table, release: threading.Event, *, after: int = 1
) -> Iterator[pa.RecordBatch]:
    """Yield ``after`` batches, then wait for ``release`` before the rest: an export held open."""
    batches = table.to_batches(max_chunksize=100)
    for i, batch in enumerate(batches):
        if i == after:
            assert release.wait(30), "test never released the export"
        yield batch


def check_file(fmt: str, data: bytes, table: pa.Table, tmp_path: Path) -> None:
    """Read ``data`` back with an independent reader and compare it with ``table``."""
    path = tmp_path / f"check.{fmt}"
    path.write_bytes(data)
    if fmt == "csv":
        opts = pcsv.ConvertOptions(column_types=table.schema)
        assert pcsv.read_csv(path, convert_options=opts).equals(table)
    elif fmt == "tsv":
        rows = list(csv.reader(io.StringIO(data.decode()), delimiter="\t"))
        assert rows[0] == table.column_names
        assert [int(r[0]) for r in rows[1:]] == table["order_id"].to_pylist()
    elif fmt == "xlsx":
        ws = openpyxl.load_workbook(path, read_only=True).worksheets[0]
        rows = list(ws.iter_rows(values_only=True))
        assert list(rows[0]) == table.column_names
        assert [list(r) for r in rows[1:]] == [list(r.values()) for r in table.to_pylist()]
        cal = CalamineWorkbook.from_path(str(path)).get_sheet_by_index(0).to_python()
        assert cal[1][0] == table["order_id"][0].as_py() and cal[1][4] is table["paid"][0].as_py()
    elif fmt == "pdf":
        text = subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
        ).stdout
        pages = text.split("\f")[:-1] or [text]
        for page in pages:
            assert "order_id" in page and "customer" in page
        for oid in table["order_id"].to_pylist():
            assert str(oid) in text
    elif fmt in ("parquet",):
        assert pq.read_table(path).equals(table)
    elif fmt == "arrow":
        assert pa.ipc.open_file(path).read_all().equals(table)
    elif fmt == "jsonl":
        lines = data.decode().splitlines()
        assert [json.loads(line)["order_id"] for line in lines] == table["order_id"].to_pylist()
    else:
        raise AssertionError(fmt)


FORMATS = ["csv", "tsv", "xlsx", "pdf", "parquet", "arrow", "jsonl"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_streamed_and_by_handle(
    fmt: str, client: ExportClient, table: pa.Table, tmp_path: Path
) -> None:
    small = table.slice(0, 300)
    streamed = client.export(small, fmt)
    assert streamed.data is not None and streamed.size == len(streamed.data)
    assert streamed.sha256 == hashlib.sha256(streamed.data).hexdigest()
    assert streamed.rows == 300 and streamed.handle == ""
    check_file(fmt, streamed.data, small, tmp_path)

    kept = client.export(small, fmt, delivery="handle", file_name=f"orders.{fmt}")
    assert kept.handle.startswith("art_") and len(kept.handle) >= 30
    out = tmp_path / f"fetched.{fmt}"
    info = client.fetch(kept.handle, out)
    assert info.sha256 == kept.sha256 and out.stat().st_size == kept.size
    check_file(fmt, out.read_bytes(), small, tmp_path)


def test_stream_to_path_and_both_deliveries(
    client: ExportClient, table: pa.Table, tmp_path: Path
) -> None:
    out = tmp_path / "orders.csv"
    result = client.export(table, "csv", output=out, delivery="stream_and_handle")
    assert result.path == out and not list(tmp_path.glob("*.part"))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
    assert result.handle and result.file_name == "orders.csv"
    assert b"".join(d for _, d in client.read(result.handle)) == out.read_bytes()


def test_progress_in_order_and_reaches_one(client: ExportClient) -> None:
    big = reference_table(60_000)
    events: list[Progress] = []
    client.export(
        big.to_reader(max_chunksize=2_000), "csv", on_progress=events.append, expected_rows=60_000
    )
    order = ["receiving", "rendering", "succeeded"]
    states = [e.state for e in events]
    assert [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s] == order
    rows = [e.rows_done for e in events if e.state == "receiving"]
    assert rows == sorted(rows)
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert events[-1].rows_done == 60_000 or events[-2].rows_done == 60_000


def test_watch_from_a_second_client(server: RunningServer, table: pa.Table) -> None:
    release = threading.Event()
    job_ids: list[str] = []
    results: list[object] = []
    with ExportClient(server.target) as a, ExportClient(server.target) as b:
        t = threading.Thread(
            target=lambda: results.append(
                a.export(held_batches(table, release), "csv", on_accepted=job_ids.append)
            )
        )
        t.start()
        wait_for(lambda: job_ids)
        seen: list[object] = []
        watcher = threading.Thread(target=lambda: seen.extend(b.watch(job_ids[0])))
        watcher.start()
        time.sleep(0.3)
        release.set()
        t.join(30)
        watcher.join(30)
    final = seen[-1]
    assert isinstance(final, type(results[0]))
    assert final.sha256 == results[0].sha256  # type: ignore[attr-defined]
    assert any(isinstance(e, Progress) and e.state == "receiving" for e in seen)


def test_cancel_frees_the_slot_and_removes_the_temp_file(
    make_server: ServerFactory, table: pa.Table
) -> None:
    server = make_server(max_concurrent=1, max_queue=4)
    release = threading.Event()
    job_ids: list[str] = []
    errors: list[BaseException] = []
    tmp = server.artifacts.tmp_dir

    def run() -> None:
        with ExportClient(server.target) as c:
            try:
                c.export(
                    held_batches(table, release),
                    "xlsx",
                    delivery="handle",
                    on_accepted=job_ids.append,
                )
            except BaseException as exc:
                errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    wait_for(lambda: job_ids and any(tmp.iterdir()))
    with ExportClient(server.target) as c:
        job = c.cancel(job_ids[0], "no longer needed")
        assert job.job_id == job_ids[0]
        t.join(10)
        assert isinstance(errors[0], CancelledError)
        assert c.get_job(job_ids[0]).state == "cancelled"
    release.set()
    assert server.governor.running == 0
    assert list(tmp.iterdir()) == []
    assert list((server.config.data_dir / "scratch").iterdir()) == []
    with ExportClient(server.target) as c:  # the slot is free again
        assert c.export(table, "csv").rows == table.num_rows


def test_cancel_message_on_the_stream(make_server: ServerFactory, table: pa.Table) -> None:
    server = make_server()
    channel = grpc.insecure_channel(server.target)
    stub = epb_grpc.ExportServiceStub(channel)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table.slice(0, 10))
    requests = iter(
        [
            epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV)),
            epb.ExportRequest(data=epb.ExportData(arrow_ipc=sink.getvalue().to_pybytes()[:100])),
            epb.ExportRequest(cancel=epb.ExportCancel(reason="changed my mind")),
        ]
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Export(requests))
    assert info.value.code() == grpc.StatusCode.CANCELLED
    assert "changed my mind" in info.value.details()
    channel.close()


def test_queue_full_is_resource_exhausted_with_retry_info(
    make_server: ServerFactory, table: pa.Table
) -> None:
    server = make_server(max_concurrent=1, max_queue=0)
    release = threading.Event()
    job_ids: list[str] = []
    with ExportClient(server.target) as a, ExportClient(server.target) as b:
        t = threading.Thread(
            target=lambda: a.export(held_batches(table, release), "csv", on_accepted=job_ids.append)
        )
        t.start()
        wait_for(lambda: job_ids)
        with pytest.raises(ResourceExhaustedError) as info:
            b.export(table, "csv")
        assert info.value.reason == "QUEUE_FULL"
        assert info.value.retry_after is not None and info.value.retry_after > 0
        release.set()
        t.join(30)
        assert b.export(table, "csv").rows == table.num_rows  # serving goes on


def test_higher_priority_overtakes_and_queue_positions_are_reported(
    make_server: ServerFactory, table: pa.Table
) -> None:
    server = make_server(max_concurrent=1, max_queue=4)
    release = threading.Event()
    ids: dict[str, str] = {}
    progress: dict[str, list[Progress]] = {"low": [], "high": []}

    def run(name: str, data: object, priority: int) -> None:
        with ExportClient(server.target) as c:
            c.export(
                data,  # type: ignore[arg-type]
                "csv",
                priority=priority,
                on_accepted=lambda j: ids.__setitem__(name, j),
                on_progress=progress.setdefault(name, []).append,
            )

    holder = threading.Thread(target=run, args=("holder", held_batches(table, release), 0))
    holder.start()
    wait_for(lambda: "holder" in ids)
    low = threading.Thread(target=run, args=("low", table, 0))
    low.start()
    wait_for(lambda: "low" in ids)
    high = threading.Thread(target=run, args=("high", table, 10))
    high.start()
    wait_for(lambda: "high" in ids)
    wait_for(lambda: any(p.queue_position == 2 for p in progress["low"]))  # pushed back by high
    release.set()
    for t in (holder, low, high):
        t.join(30)
    low_job = server.jobs.get(ids["low"], "")
    high_job = server.jobs.get(ids["high"], "")
    assert high_job.started_at is not None and low_job.started_at is not None
    assert high_job.started_at < low_job.started_at
    assert low_job.state is JobState.SUCCEEDED and high_job.state is JobState.SUCCEEDED


def test_handle_survives_a_restart(
    make_server: ServerFactory, table: pa.Table, tmp_path: Path
) -> None:
    first = make_server()
    with ExportClient(first.target) as c:
        result = c.export(table, "parquet", delivery="handle")
    first.stop(0)
    second = make_server()
    with ExportClient(second.target) as c:
        out = tmp_path / "again.parquet"
        c.fetch(result.handle, out)
        assert hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
        assert c.get_job(result.job_id).state == "succeeded"


def test_expired_handle_is_not_found(client: ExportClient, table: pa.Table, tmp_path: Path) -> None:
    result = client.export(table, "csv", delivery="handle", ttl=0.3)
    time.sleep(0.6)
    with pytest.raises(NotFoundError):
        client.fetch(result.handle, tmp_path / "late.csv")
    with pytest.raises(NotFoundError):
        client.get_artifact("art_" + "x" * 32)


def test_resumed_fetch_is_byte_identical(
    client: ExportClient, table: pa.Table, tmp_path: Path
) -> None:
    result = client.export(reference_table(50_000), "csv", delivery="handle")
    whole = b"".join(d for _, d in client.read(result.handle))
    out = tmp_path / "partial.csv"
    out.write_bytes(whole[: len(whole) // 3])
    client.fetch(result.handle, out)
    assert out.read_bytes() == whole
    tail = b"".join(d for _, d in client.read(result.handle, offset=1000, limit=5000))
    assert tail == whole[1000:6000]
    with pytest.raises(OutOfRangeError):
        list(client.read(result.handle, offset=len(whole) + 1))


def test_malformed_arrow_is_invalid_argument_and_the_next_export_succeeds(
    server: RunningServer, client: ExportClient, table: pa.Table
) -> None:
    channel = grpc.insecure_channel(server.target)
    stub = epb_grpc.ExportServiceStub(channel)
    garbage = iter(
        [
            epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV)),
            epb.ExportRequest(
                data=epb.ExportData(arrow_ipc=b"\xff\xff\xff\xff\x10\x00\x00\x00not arrow at all")
            ),
            epb.ExportRequest(end=epb.ExportEnd()),
        ]
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Export(garbage))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Arrow" in info.value.details()
    channel.close()
    assert client.export(table, "csv").rows == table.num_rows
    failed = [j for j in client.list_jobs() if j.state == "failed"]
    assert failed and failed[0].error is not None and failed[0].error.reason == "MALFORMED_ARROW"


def test_bad_spec_and_unknown_option(
    server: RunningServer, client: ExportClient, table: pa.Table
) -> None:
    channel = grpc.insecure_channel(server.target)
    stub = epb_grpc.ExportServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Export(iter([epb.ExportRequest(spec=epb.ExportSpec())])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "format" in info.value.details()
    mismatch = epb.ExportSpec(format=fpb.FORMAT_CSV, pdf=fpb.PdfOptions(title="x"))
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Export(iter([epb.ExportRequest(spec=mismatch)])))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    with pytest.raises(InvalidArgumentError) as err:
        client.export(table, "csv", options={"delimter": ";"})
    assert "delimiter" in err.value.message  # the known options are named
    with pytest.raises(InvalidArgumentError):
        client.export(table, "csv", options={"delimiter": ";;"})
    with pytest.raises(InvalidArgumentError) as err:
        client.export(table, "csv", columns=["order_id", "nope"])
    assert err.value.reason == "UNKNOWN_COLUMN"


def test_columns_selected_renamed_and_ordered(client: ExportClient, table: pa.Table) -> None:
    from exportd.client import Column

    result = client.export(table, "csv", columns=[Column("qty", "Quantity"), "order_id"])
    assert result.data is not None
    assert result.data.splitlines()[0] == b'"Quantity","order_id"'


def test_idempotent_request_id_returns_the_same_job(client: ExportClient, table: pa.Table) -> None:
    first = client.export(table, "csv", delivery="handle", request_id="nightly-2026-12-04")
    again = client.export(table, "csv", delivery="handle", request_id="nightly-2026-12-04")
    assert again.job_id == first.job_id and again.handle == first.handle
    assert len([j for j in client.list_jobs() if j.request_id == "nightly-2026-12-04"]) == 1


def test_list_jobs_pages(client: ExportClient, table: pa.Table) -> None:
    for _ in range(5):
        client.export(table.slice(0, 10), "csv")
    jobs = list(client.list_jobs(page_size=2))
    assert len(jobs) == 5 and len({j.job_id for j in jobs}) == 5
    assert [j.created_at for j in jobs] == sorted((j.created_at for j in jobs), reverse=True)


def test_health_and_reflection(server: RunningServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="exportd.v1.ExportService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"exportd.v1.ExportService", "exportd.v1.ArtifactService"} <= names
    channel.close()


def test_list_jobs_by_state_sees_running_jobs(server: RunningServer, table: pa.Table) -> None:
    release = threading.Event()
    ids: list[str] = []
    with ExportClient(server.target) as a, ExportClient(server.target) as b:
        t = threading.Thread(
            target=lambda: a.export(held_batches(table, release), "csv", on_accepted=ids.append)
        )
        t.start()
        wait_for(lambda: ids and b.get_job(ids[0]).state == "receiving")
        assert [j.job_id for j in b.list_jobs(states=["receiving"])] == ids
        assert list(b.list_jobs(states=["succeeded"])) == []
        release.set()
        t.join(30)
        assert [j.job_id for j in b.list_jobs(states=["succeeded"])] == ids


def test_two_exports_to_one_path_do_not_collide(client: ExportClient, tmp_path: Path) -> None:
    out = tmp_path / "same.csv"
    tables = [reference_table(20_000), reference_table(20_000, start=10**6)]
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda t=t: results.append(client.export(t, "csv", output=out)))
        for t in tables
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and not list(tmp_path.glob("*.part"))
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest in {r.sha256 for r in results}  # type: ignore[attr-defined]
