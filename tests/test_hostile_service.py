"""Issue-level checks through the real server: the hostile table in every format with defaults,
warnings reported, wide and long data, and bad input that fails clearly while serving goes on."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import grpc
import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from exportd.client import ExportClient, InvalidArgumentError
from exportd.server.app import RunningServer
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import export_service_pb2_grpc as epb_grpc
from exportd.v1 import formats_pb2 as fpb
from fixtures_hostile import DECIMAL_20, INJECTIONS, LONG_CELL, hostile_table
from python_calamine import CalamineWorkbook


def _reject_constant(name: str) -> None:
    raise ValueError(f"non-standard JSON constant {name}")


def test_hostile_table_in_every_format(client: ExportClient, tmp_path: Path) -> None:
    table = hostile_table()
    files: dict[str, Path] = {}
    warnings: dict[str, set[str]] = {}
    for fmt in ("csv", "tsv", "xlsx", "pdf", "parquet", "arrow", "jsonl"):
        out = tmp_path / f"hostile.{fmt}"
        result = client.export(table, fmt, output=out)
        assert result.rows == table.num_rows
        files[fmt] = out
        warnings[fmt] = {w.code for w in result.warnings}
        job = client.get_job(result.job_id)
        assert job.result is not None
        assert {w.code for w in job.result.warnings} == warnings[fmt]

    with open(files["csv"], encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    texts = [r[0] for r in rows[1 : 1 + len(INJECTIONS)]]
    assert texts == ["'" + s for s in INJECTIONS[:-1]] + ["#N/A"]  # #N/A is not a formula
    assert len(rows) == table.num_rows + 1

    wb = openpyxl.load_workbook(files["xlsx"])
    ws = wb.worksheets[0]
    assert all(c.data_type != "f" for row in ws.iter_rows() for c in row)
    header = [c.value for c in ws[1]]
    col = header.index("text") + 1
    values = [ws.cell(row=2 + i, column=col).value for i in range(len(INJECTIONS))]
    assert values[:4] == INJECTIONS[:4] and values[-1] == "#N/A"
    cal = CalamineWorkbook.from_path(str(files["xlsx"])).get_sheet_by_index(0).to_python()
    assert str(DECIMAL_20) in {str(v) for row in cal for v in row}
    assert "CELL_TRUNCATED" in warnings["xlsx"] or len(LONG_CELL) <= 32_767
    assert "CONTROL_CHARACTERS_REMOVED" in warnings["xlsx"]

    fonts = subprocess.run(
        ["pdffonts", str(files["pdf"])], capture_output=True, text=True, check=True
    )
    lines = fonts.stdout.splitlines()[2:]
    assert lines and all(" yes " in line.split("TrueType", 1)[-1] for line in lines)
    # Every column at once is cut to fit the page; the text column alone shows the scripts whole.
    alone = client.export(table, "pdf", columns=["text"], output=tmp_path / "scripts.pdf")
    assert alone.path is not None
    text = subprocess.run(
        ["pdftotext", str(alone.path), "-"], capture_output=True, text=True
    ).stdout
    for word in ("東京", "Москва", "Ελλάδα", "Grüße"):
        assert word in text

    assert pq.read_table(files["parquet"]).column("int64").equals(table.column("int64"))
    back = pa.ipc.open_file(files["arrow"]).read_all()
    assert back.schema.equals(table.schema)
    assert repr(back.to_pylist()) == repr(table.to_pylist())  # NaN is never equal to itself
    for line in files["jsonl"].read_text().splitlines():
        json.loads(line, parse_constant=_reject_constant)


def test_wide_table_and_long_cell(client: ExportClient, tmp_path: Path) -> None:
    wide = pa.table({f"c{i}": pa.array([i, i + 1]) for i in range(1_200)})
    for fmt in ("csv", "xlsx", "parquet"):
        result = client.export(wide, fmt, output=tmp_path / f"wide.{fmt}")
        assert result.rows == 2
    ws = openpyxl.load_workbook(tmp_path / "wide.xlsx", read_only=True).worksheets[0]
    assert next(ws.iter_rows(min_row=2, max_row=2, values_only=True))[1_199] == 1_199
    long = pa.table({"t": ["y" * 200_000]})
    result = client.export(long, "csv")
    assert result.data is not None and b"y" * 200_000 in result.data


def test_too_many_columns_for_xlsx_then_serving_goes_on(client: ExportClient) -> None:
    too_wide = pa.table({f"c{i}": pa.array([1], pa.int8()) for i in range(16_385)})
    with pytest.raises(InvalidArgumentError) as info:
        client.export(too_wide, "xlsx")
    assert "16" in info.value.message
    assert client.export(pa.table({"a": [1]}), "xlsx").rows == 1


def test_schema_change_mid_stream_is_invalid_argument(server: RunningServer) -> None:
    def stream(table: pa.Table) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return bytes(sink.getvalue().to_pybytes())

    first = stream(pa.table({"a": [1, 2]}))
    second = stream(pa.table({"b": ["x"]}))
    requests = iter(
        [
            epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV)),
            epb.ExportRequest(data=epb.ExportData(arrow_ipc=first)),
            epb.ExportRequest(data=epb.ExportData(arrow_ipc=second)),
            epb.ExportRequest(end=epb.ExportEnd()),
        ]
    )
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as info:
        list(epb_grpc.ExportServiceStub(channel).Export(requests))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "schema" in info.value.details()


def test_truncated_stream_and_oversized_batch(make_server: object) -> None:
    from exportd.server.config import ExportLimits

    server = make_server(limits=ExportLimits(max_batch_bytes=10_000))  # type: ignore[operator]
    table = pa.table({"a": pa.array(range(10_000), pa.int64())})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    data = sink.getvalue().to_pybytes()
    with grpc.insecure_channel(server.target) as channel:
        stub = epb_grpc.ExportServiceStub(channel)
        cut = iter(
            [
                epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV)),
                epb.ExportRequest(data=epb.ExportData(arrow_ipc=data[: len(data) // 2])),
                epb.ExportRequest(end=epb.ExportEnd()),
            ]
        )
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Export(cut))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        whole = iter(
            [
                epb.ExportRequest(spec=epb.ExportSpec(format=fpb.FORMAT_CSV)),
                epb.ExportRequest(data=epb.ExportData(arrow_ipc=data)),
                epb.ExportRequest(end=epb.ExportEnd()),
            ]
        )
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Export(whole))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "limit" in info.value.details()
    with ExportClient(server.target) as c:
        assert c.export(table.slice(0, 100), "csv").rows == 100
