"""Parquet, Arrow IPC file and JSON Lines encoders, read back by pyarrow and json.loads."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import io
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from exportd.server.errors import InvalidArgument
from exportd.server.exporters import EncoderContext, ExportWarnings, create_encoder
from exportd.server.exporters.options import (
    ArrowOptions,
    CommonOptions,
    Compression,
    FormatOptions,
    JsonLinesOptions,
    ParquetOptions,
)
from fixtures_hostile import DECIMAL_20, LONG_CELL, SCRIPTS, hostile_table


class Sink(io.RawIOBase):
    """A sink that records bytes and fails the test if an encoder closes it."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        self.data += view
        return len(view)

    def close(self) -> None:
        raise AssertionError("encoders must not close the sink")


def encode(
    fmt: str,
    table: pa.Table,
    options: FormatOptions,
    tmp_path: Path,
    *,
    common: CommonOptions | None = None,
    chunk: int = 3,
) -> tuple[bytes, ExportWarnings]:
    sink = Sink()
    ctx = EncoderContext(sink=sink, common=common or CommonOptions(), scratch_dir=tmp_path)
    encoder = create_encoder(fmt, table.schema, options, ctx)
    for batch in table.to_batches(max_chunksize=chunk):
        encoder.write(batch)
    encoder.finish()
    return bytes(sink.data), ctx.warnings


def assert_tables_equal(got: pa.Table, want: pa.Table) -> None:
    """Schemas identical (types, zones, names, nested field names) and values equal, NaN = NaN."""
    assert got.schema.equals(want.schema, check_metadata=False), (got.schema, want.schema)
    for name in want.column_names:
        assert got.schema.field(name).type == want.schema.field(name).type, name
        for g, w in zip(got[name].to_pylist(), want[name].to_pylist(), strict=True):
            if isinstance(w, float) and math.isnan(w):
                assert isinstance(g, float) and math.isnan(g), name
            else:
                assert g == w, name


# --- Parquet ------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zstd", "snappy", "gzip", "none"])
def test_parquet_reads_back_equal_with_exact_types(tmp_path: Path, codec: str) -> None:
    table = hostile_table()
    data, _ = encode("parquet", table, ParquetOptions(compression=codec), tmp_path)
    back = pq.read_table(io.BytesIO(data))
    assert_tables_equal(back, table)
    assert back.schema.field("list").type.value_field.name == "item"
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    expected = "UNCOMPRESSED" if codec == "none" else codec.upper()
    assert meta.row_group(0).column(0).compression == expected


def test_parquet_gathers_batches_into_row_groups(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array(range(1000), pa.int64())})
    data, _ = encode("parquet", table, ParquetOptions(row_group_size=300), tmp_path, chunk=70)
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sum(sizes) == 1000
    assert max(sizes) <= 300
    assert meta.num_row_groups < 1000 // 70
    assert pq.read_table(io.BytesIO(data)).equals(table)


def test_parquet_empty_table_is_a_valid_file_with_the_schema(tmp_path: Path) -> None:
    table = hostile_table().slice(0, 0)
    data, _ = encode("parquet", table, ParquetOptions(), tmp_path)
    back = pq.read_table(io.BytesIO(data))
    assert back.num_rows == 0
    assert back.schema.equals(table.schema, check_metadata=False)


def test_parquet_bad_options(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument):
        encode("parquet", pa.table({"a": [1]}), ParquetOptions(compression="rar"), tmp_path)
    with pytest.raises(InvalidArgument):
        encode("parquet", pa.table({"a": [1]}), ParquetOptions(row_group_size=0), tmp_path)


# --- Arrow IPC file -----------------------------------------------------------------------------


@pytest.mark.parametrize("codec", [None, "lz4", "zstd"])
def test_arrow_file_reads_back_identical(tmp_path: Path, codec: str | None) -> None:
    table = hostile_table()
    data, _ = encode("arrow", table, ArrowOptions(compression=codec), tmp_path)
    assert data[:6] == b"ARROW1"
    reader = ipc.open_file(pa.BufferReader(data))
    assert reader.num_record_batches == math.ceil(table.num_rows / 3)
    back = reader.read_all()
    assert_tables_equal(back, table)
    assert back.schema.equals(table.schema, check_metadata=True)


def test_arrow_empty_table_and_bad_codec(tmp_path: Path) -> None:
    table = hostile_table().slice(0, 0)
    data, _ = encode("arrow", table, ArrowOptions(), tmp_path)
    back = ipc.open_file(pa.BufferReader(data)).read_all()
    assert back.num_rows == 0
    assert back.schema.equals(table.schema)
    with pytest.raises(InvalidArgument):
        encode("arrow", pa.table({"a": [1]}), ArrowOptions(compression="brotli"), tmp_path)


# --- JSON Lines ---------------------------------------------------------------------------------


def _reject(token: str) -> Any:
    raise ValueError(f"non-strict JSON literal {token}")


def read_jsonl(data: bytes) -> list[dict[str, Any]]:
    text = data.decode("utf-8")
    assert text.endswith("\n")
    return [
        json.loads(line, parse_constant=_reject, parse_float=Decimal)
        for line in text.split("\n")[:-1]
    ]


def test_jsonl_is_strict_and_exact(tmp_path: Path) -> None:
    table = hostile_table()
    data, warnings = encode("jsonl", table, JsonLinesOptions(), tmp_path)
    rows = read_jsonl(data)
    assert len(rows) == table.num_rows
    assert all(list(row) == table.column_names for row in rows)
    assert rows[-1] == dict.fromkeys(table.column_names)
    source = table.to_pylist()

    for name in ("text", "controls", "large_text", "dict", "bool", "list", "struct"):
        got = [r[name] for r in rows]
        want = [s[name] for s in source]
        if name == "struct":
            want = [None if w is None else {**w, "score": _num(w["score"])} for w in want]
        assert got == want, name
    assert rows[8]["text"] == LONG_CELL
    assert rows[7]["text"] == SCRIPTS

    assert [r["int64"] for r in rows] == [s["int64"] for s in source]
    assert rows[0]["int64"] == -(2**63) and rows[1]["int64"] == 2**63 - 1
    assert rows[1]["uint64"] == 2**64 - 1
    assert rows[0]["decimal"] == DECIMAL_20
    assert [r["decimal_scaled"] for r in rows] == [s["decimal_scaled"] for s in source]

    floats = [r["float64"] for r in rows]
    assert floats[:3] == [None, None, None]  # NaN, inf, -inf
    assert [float(f) for f in floats[3:9]] == [s["float64"] for s in source[3:9]]
    assert warnings.counts == {"NON_FINITE_AS_NULL": 4}

    assert [r["binary"] for r in rows[:-1]] == [
        base64.b64encode(s["binary"]).decode() for s in source[:-1]
    ]
    assert [r["map"] for r in rows[:-1]] == [dict(s["map"]) for s in source[:-1]]
    assert [dt.date.fromisoformat(r["date"]) for r in rows[:-1]] == [s["date"] for s in source[:-1]]
    assert [Decimal(r["duration"]) for r in rows[:-1]] == [
        Decimal(s["duration"] / dt.timedelta(milliseconds=1)) / 1000 for s in source[:-1]
    ]


def _num(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata"])
def test_jsonl_timestamps_are_iso_8601(tmp_path: Path, zone: str) -> None:
    table = hostile_table()
    data, _ = encode("jsonl", table, JsonLinesOptions(), tmp_path, common=CommonOptions(zone))
    rows = read_jsonl(data)
    source = table.to_pylist()
    for row, src in zip(rows[:-1], source[:-1], strict=True):
        naive = dt.datetime.fromisoformat(row["ts_naive"])
        assert "T" in row["ts_naive"] and naive.tzinfo is None and naive == src["ts_naive"]
        for name in ("ts_utc", "ts_zoned"):
            shown = dt.datetime.fromisoformat(row[name])
            assert shown == src[name], name
            assert shown.utcoffset() == src[name].astimezone(ZoneInfo(zone)).utcoffset()


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_jsonl_compressed(tmp_path: Path, compression: Compression) -> None:
    table = hostile_table()
    plain, _ = encode("jsonl", table, JsonLinesOptions(), tmp_path)
    packed, _ = encode("jsonl", table, JsonLinesOptions(compression=compression), tmp_path)
    if compression is Compression.GZIP:
        assert gzip.decompress(packed) == plain
    else:
        assert pa.CompressedInputStream(pa.BufferReader(packed), "zstd").read() == plain


def test_jsonl_empty_table_is_an_empty_file(tmp_path: Path) -> None:
    data, warnings = encode("jsonl", hostile_table().slice(0, 0), JsonLinesOptions(), tmp_path)
    assert data == b""
    assert warnings.counts == {}


def test_jsonl_keys_are_escaped(tmp_path: Path) -> None:
    table = pa.table({'we"ird\nname': [1], "東京": ["x"]})
    data, _ = encode("jsonl", table, JsonLinesOptions(), tmp_path)
    assert read_jsonl(data) == [{'we"ird\nname': 1, "東京": "x"}]
