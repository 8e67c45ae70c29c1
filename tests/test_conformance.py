"""The language-neutral conformance scenarios (tests/conformance/scenarios.json), run from Python.

The Go and TypeScript SDKs run the same file; this runner drives the Python SDK (and the raw stub
where a scenario sends what the SDK never would) against a real in-process server per scenario.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import openpyxl
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from exportd.client import ExportClient, ExportdError, ExportResult, Progress
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc
from exportd.v1 import formats_pb2 as fpb
from support import ServerFactory

SUITE = json.loads((Path(__file__).parent / "conformance" / "scenarios.json").read_text())
FORMAT_NAMES = {
    "FORMAT_CSV": "csv",
    "FORMAT_TSV": "tsv",
    "FORMAT_XLSX": "xlsx",
    "FORMAT_PDF": "pdf",
    "FORMAT_PARQUET": "parquet",
    "FORMAT_ARROW": "arrow",
    "FORMAT_JSONL": "jsonl",
}
DELIVERIES = {
    "DELIVERY_STREAM": "stream",
    "DELIVERY_HANDLE": "handle",
    "DELIVERY_STREAM_AND_HANDLE": "stream_and_handle",
}
TYPES = {"int64": pa.int64(), "utf8": pa.string(), "float64": pa.float64(), "bool": pa.bool_()}


def suite_table() -> pa.Table:
    spec = SUITE["table"]
    columns = spec["columns"]
    arrays = {
        c["name"]: pa.array([row[i] for row in spec["rows"]], TYPES[c["type"]])
        for i, c in enumerate(columns)
    }
    return pa.table(arrays)


def batches(held: threading.Event | None = None) -> Iterator[pa.RecordBatch]:
    for i, batch in enumerate(suite_table().to_batches(max_chunksize=SUITE["table"]["batch_rows"])):
        if held is not None and i == 1:
            assert held.wait(30)
        yield batch


def check_content(fmt: str, data: bytes, tmp_path: Path) -> None:
    table = suite_table()
    path = tmp_path / f"content.{fmt}"
    path.write_bytes(data)
    ids = table["id"].to_pylist()
    if fmt in ("csv", "tsv"):
        parse = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",")
        assert pcsv.read_csv(path, parse_options=parse)["id"].to_pylist() == ids
    elif fmt == "xlsx":
        ws = openpyxl.load_workbook(path, read_only=True).worksheets[0]
        assert [r[0] for r in ws.iter_rows(min_row=2, values_only=True)] == ids
    elif fmt == "pdf":
        text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True).stdout
        assert "Zoë Ünïcode" in text and "O'Brien, Pat" in text
    elif fmt == "parquet":
        assert pq.read_table(path).equals(table)
    elif fmt == "arrow":
        assert pa.ipc.open_file(path).read_all().equals(table)
    else:
        assert [json.loads(line)["id"] for line in data.decode().splitlines()] == ids


def expect_error(exc: ExportdError | grpc.RpcError, want: dict[str, Any]) -> None:
    if isinstance(exc, grpc.RpcError):
        assert exc.code().name == want["code"]  # type: ignore[attr-defined]
        return
    assert exc.code.name == want["code"], exc
    if "reason" in want:
        assert exc.reason == want["reason"]
    if want.get("retry_info"):
        assert exc.retry_after is not None and exc.retry_after > 0


def server_for(make_server: ServerFactory, name: str) -> Any:
    flags = SUITE["servers"][name]["flags"]
    overrides: dict[str, int] = {}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        overrides[flag.removeprefix("--").replace("-", "_")] = int(value)
    return make_server(**overrides)


@pytest.mark.parametrize("scenario", SUITE["scenarios"], ids=lambda s: s["name"])
def test_scenario(scenario: dict[str, Any], make_server: ServerFactory, tmp_path: Path) -> None:
    server = server_for(make_server, scenario["server"])
    kind = scenario["kind"]
    fmt = FORMAT_NAMES.get(scenario.get("format", ""), "")
    delivery = DELIVERIES.get(scenario.get("delivery", ""), "stream")
    with ExportClient(server.target) as client:
        if kind == "export":
            result = client.export(suite_table(), fmt, delivery=delivery)
            assert result.rows == suite_table().num_rows
            if delivery != "handle":
                assert result.data is not None and len(result.data) == result.size
                assert hashlib.sha256(result.data).hexdigest() == result.sha256
                check_content(fmt, result.data, tmp_path)
            if delivery != "stream":
                out = tmp_path / "fetched"
                client.fetch(result.handle, out)
                assert hashlib.sha256(out.read_bytes()).hexdigest() == result.sha256
                check_content(fmt, out.read_bytes(), tmp_path)
        elif kind == "watch":
            release = threading.Event()
            ids: list[str] = []
            done: list[ExportResult] = []
            t = threading.Thread(
                target=lambda: done.append(
                    client.export(batches(release), fmt, delivery=delivery, on_accepted=ids.append)
                )
            )
            t.start()
            while not ids:
                time.sleep(0.01)
            events: list[Progress | ExportResult] = []
            with ExportClient(server.target) as second:
                watcher = threading.Thread(target=lambda: events.extend(second.watch(ids[0])))
                watcher.start()
                time.sleep(0.2)
                release.set()
                t.join(30)
                watcher.join(30)
            assert isinstance(events[-1], ExportResult) and events[-1].sha256 == done[0].sha256
            if scenario.get("watch_progress_reaches_one"):
                assert any(isinstance(e, Progress) and e.fraction == 1.0 for e in events)
        elif kind == "cancel":
            release = threading.Event()
            ids = []
            errors: list[BaseException] = []

            def run() -> None:
                try:
                    if scenario["via"] == "cancel_job":
                        client.export(batches(release), fmt, on_accepted=ids.append)
                    else:
                        stop = threading.Event()
                        ids.append("")
                        threading.Timer(0.3, stop.set).start()
                        client.export(batches(release), fmt, cancel=stop)
                except BaseException as exc:
                    errors.append(exc)

            t = threading.Thread(target=run)
            t.start()
            while not ids:
                time.sleep(0.01)
            if scenario["via"] == "cancel_job":
                client.cancel(ids[0])
            t.join(30)
            release.set()
            assert errors and isinstance(errors[0], ExportdError)
            expect_error(errors[0], scenario["expect_error"])
            if ids[0]:
                assert client.get_job(ids[0]).state == "cancelled"
        elif kind == "resume":
            result = client.export(suite_table(), fmt, delivery=delivery)
            whole = b"".join(d for _, d in client.read(result.handle))
            out = tmp_path / "resumed"
            out.write_bytes(whole[: int(len(whole) * scenario["prefix_fraction"])])
            client.fetch(result.handle, out)
            assert out.read_bytes() == whole
            assert hashlib.sha256(whole).hexdigest() == result.sha256
        elif kind == "read_error":
            handle = scenario.get("handle")
            offset = 0
            if handle is None:
                result = client.export(suite_table(), fmt, delivery=delivery)
                handle, offset = result.handle, result.size + scenario["offset_past_end"]
            with pytest.raises(ExportdError) as info:
                list(client.read(handle, offset=offset))
            expect_error(info.value, scenario["expect_error"])
        elif kind == "export_error":
            spec = epb.ExportSpec(format=getattr(fpb, scenario["format"]))
            for name in scenario.get("options", {}):
                getattr(spec, name).SetInParent()
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, suite_table().schema) as w:
                w.write_table(suite_table())
            data = scenario.get("data_utf8", "").encode() or sink.getvalue().to_pybytes()
            requests = [
                epb.ExportRequest(spec=spec),
                epb.ExportRequest(data=epb.ExportData(arrow_ipc=data)),
                epb.ExportRequest(end=epb.ExportEnd()),
            ]
            with (
                grpc.insecure_channel(server.target) as channel,
                pytest.raises(grpc.RpcError) as rpc,
            ):
                list(epb_grpc.ExportServiceStub(channel).Export(iter(requests)))
            expect_error(rpc.value, scenario["expect_error"])
        elif kind == "queue_full":
            release = threading.Event()
            ids = []
            t = threading.Thread(
                target=lambda: client.export(batches(release), fmt, on_accepted=ids.append)
            )
            t.start()
            while not ids:
                time.sleep(0.01)
            with ExportClient(server.target) as second, pytest.raises(ExportdError) as info:
                second.export(suite_table(), fmt)
            release.set()
            t.join(30)
            expect_error(info.value, scenario["expect_error"])
        else:
            raise AssertionError(f"unknown scenario kind {kind}")
