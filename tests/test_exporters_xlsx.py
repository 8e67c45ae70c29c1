"""The XLSX encoder, proven by reading its files back with openpyxl and python-calamine."""

from __future__ import annotations

import datetime as dt
import gc
import io
import threading
import zipfile
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pytest
from exportd.server.errors import InvalidArgument
from exportd.server.exporters import EncoderContext, create_encoder
from exportd.server.exporters.options import CommonOptions, RowOverflow, XlsxOptions
from exportd.server.exporters.xlsx import XlsxEncoder, sanitize_sheet_name
from python_calamine import CalamineWorkbook


class FileSink(io.RawIOBase):
    """A write-only, non-seekable sink over a file, like a pipe or a network stream."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self.threads: set[int] = set()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        self.threads.add(threading.get_ident())
        view = memoryview(data).cast("B")
        # accept at most 1 MiB per call, so the encoder must cope with partial writes
        part = view[: 1 << 20]
        self._file.write(part)
        return len(part)

    def close(self) -> None:
        self._file.close()
        super().close()


def export(
    tmp_path: Path,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    options: XlsxOptions | None = None,
    common: CommonOptions | None = None,
) -> tuple[Path, EncoderContext]:
    """Write ``batches`` through create_encoder into a file; return its path and the context."""
    path = tmp_path / "out.xlsx"
    sink = FileSink(path)
    ctx = EncoderContext(sink=sink, common=common or CommonOptions(), scratch_dir=tmp_path)
    encoder = create_encoder("xlsx", schema, options or XlsxOptions(), ctx)
    for batch in batches:
        encoder.write(batch)
    encoder.finish()
    assert not sink.closed, "the encoder must not close the sink"
    assert sink.threads == {threading.get_ident()}, "only the calling thread writes the sink"
    sink.close()
    return path, ctx


def export_table(
    tmp_path: Path, table: pa.Table, chunk: int = 3, **kwargs: Any
) -> tuple[Path, EncoderContext]:
    return export(tmp_path, table.to_batches(max_chunksize=chunk), table.schema, **kwargs)


def openpyxl_rows(path: Path, sheet: int = 0) -> list[list[Any]]:
    wb = openpyxl.load_workbook(path)
    ws = wb.worksheets[sheet]
    rows = []
    for row in ws.iter_rows():
        for cell in row:
            assert cell.data_type != "f", f"{cell.coordinate} is a formula"
        rows.append([cell.value for cell in row])
    return rows


def calamine_rows(path: Path, sheet: int = 0) -> list[list[Any]]:
    rows: list[list[Any]] = (
        CalamineWorkbook.from_path(str(path)).get_sheet_by_index(sheet).to_python()
    )
    return rows


def test_typed_cells_read_back_equal(tmp_path: Path) -> None:
    ts = [dt.datetime(2024, 3, 1, 12, 30, 5, 250_000), None, dt.datetime(1900, 1, 1, 0, 0, 1)]
    ts += [dt.datetime(1900, 3, 1, 6), dt.datetime(9999, 12, 31, 23, 59, 59)]
    days = [dt.date(2024, 2, 29), dt.date(1900, 2, 28), None, dt.date(1900, 3, 1)]
    days += [dt.date(1970, 1, 1)]
    f32 = [0.1, None, 3.5, -1.0, 1e10]  # float32 cells read back as their shortest text
    table = pa.table(
        {
            "id": pa.array([1, -2, None, 2**53, -(2**53)], pa.int64()),
            "small": pa.array([1, 2, 3, None, 255], pa.uint8()),
            "amount": [0.1, 1e-7, None, 1.5e300, -2.25],
            "f32": pa.array(f32, pa.float32()),
            "paid": [True, False, None, True, False],
            "when": pa.array(ts, pa.timestamp("us")),
            "day": pa.array(days, pa.date32()),
            "day64": pa.array(days, pa.date64()),
            "name": ["Zürich", "Москва", None, "", "plain"],
            "price": pa.array(
                [Decimal("12.34"), None, Decimal("-0.01"), Decimal("99999.99"), Decimal(0)],
                pa.decimal128(7, 2),
            ),
        }
    )
    path, ctx = export_table(tmp_path, table, chunk=2)
    assert ctx.warnings.counts == {}
    header, *body = openpyxl_rows(path)
    assert header == table.column_names
    assert len(body) == table.num_rows
    source = table.to_pylist()
    assert [row[3] for row in body] == f32
    for got, want in zip(body, source, strict=True):
        assert got[0] == want["id"]
        assert got[1] == want["small"]
        assert got[2] == want["amount"]
        assert got[4] is want["paid"] or got[4] == want["paid"]
        assert got[5] == want["when"]
        assert got[6] == (
            None if want["day"] is None else dt.datetime.combine(want["day"], dt.time())
        )
        assert got[7] == got[6]
        assert got[8] == (want["name"] or None) or (got[8] == "" and want["name"] == "")
        assert got[9] == (None if want["price"] is None else float(want["price"]))

    cal_header, *cal = calamine_rows(path)
    assert cal_header == table.column_names
    for got, want in zip(cal, source, strict=True):
        assert got[0] == ("" if want["id"] is None else want["id"])
        assert got[2] == ("" if want["amount"] is None else want["amount"])
        assert got[4] == ("" if want["paid"] is None else want["paid"])
        assert got[5] == ("" if want["when"] is None else want["when"])
        assert got[6] == ("" if want["day"] is None else want["day"])
        assert got[8] == (want["name"] or "")


def test_types_of_cells_in_the_xml(tmp_path: Path) -> None:
    table = pa.table({"n": [1.5], "b": [True], "s": ["=1+1"], "d": [dt.date(2024, 1, 1)]})
    path, _ = export_table(tmp_path, table)
    ws = openpyxl.load_workbook(path).active
    assert [c.data_type for c in ws[2]] == ["n", "b", "s", "d"]
    assert ws["D2"].number_format == "yyyy-mm-dd"


def test_hostile_text_stays_text(tmp_path: Path) -> None:
    hostile = [
        "=1+1",
        "#N/A",
        "@SUM(A1)",
        "+1",
        "-1",
        '=HYPERLINK("http://x")',
        "  spaces kept  ",
        "a & b < c > d \" ' e",
        "line1\r\nline2\ttab",
        "bell\x07nul\x00vt\x0bend\ufffe",
        "中文 日本語 한국어 العربية Ελληνικά 😀👍🏽",
        "x" * 40_000,
        "😀" * 20_000,
    ]
    table = pa.table({"text": hostile, "large": pa.array(hostile, pa.large_string())})
    path, ctx = export_table(tmp_path, table, chunk=4)
    assert ctx.warnings.counts["CONTROL_CHARACTERS_REMOVED"] == 2
    assert ctx.warnings.counts["CELL_TRUNCATED"] == 4
    expected = list(hostile)
    expected[9] = "bellnulvtend"
    expected[11] = "x" * 32_767
    expected[12] = "😀" * 16_383  # 32,766 UTF-16 units: the next emoji would split a pair
    rows = openpyxl_rows(path)[1:]
    assert [r[0] for r in rows] == expected
    assert [r[1] for r in rows] == expected
    assert [r[0] for r in calamine_rows(path)[1:]] == expected


def test_numbers_excel_cannot_hold_are_exact_text(tmp_path: Path) -> None:
    int64_min, int64_max = -(2**63), 2**63 - 1
    table = pa.table(
        {
            "big": pa.array([int64_min, int64_max, 2**53 + 1, 7], pa.int64()),
            "ubig": pa.array([2**64 - 1, 0, 2**53, 1], pa.uint64()),
            "dec": pa.array(
                [
                    Decimal("12345678901234567890"),
                    Decimal("-0.123456789012345678"),
                    Decimal("123456789012345"),
                    None,
                ],
                pa.decimal128(38, 18),
            ),
            "f": [float("nan"), float("inf"), float("-inf"), 1.0],
        }
    )
    path, ctx = export_table(tmp_path, table)
    assert ctx.warnings.counts["NUMBER_AS_TEXT"] == 3 + 1 + 2
    assert ctx.warnings.counts["NON_FINITE_AS_TEXT"] == 3
    dec_text = [f"{Decimal(v):.18f}" for v in ("12345678901234567890", "-0.123456789012345678")]
    for rows in (openpyxl_rows(path)[1:], calamine_rows(path)[1:]):
        assert [r[0] for r in rows[:3]] == [str(int64_min), str(int64_max), str(2**53 + 1)]
        assert rows[3][0] == 7
        assert rows[0][1] == str(2**64 - 1)
        assert rows[2][1] == 2**53
        assert [r[2] for r in rows[:2]] == dec_text
        assert rows[2][2] == 123456789012345
        assert [r[3] for r in rows] == ["NaN", "inf", "-inf", 1.0]


def test_zoned_timestamps_show_wall_time_of_the_timezone(tmp_path: Path) -> None:
    instant = dt.datetime(2024, 7, 1, 10, 0, tzinfo=dt.UTC)
    table = pa.table(
        {
            "zoned": pa.array([instant], pa.timestamp("ms", "UTC")),
            "naive": pa.array([dt.datetime(2024, 7, 1, 10, 0)], pa.timestamp("ns")),
        }
    )
    path, _ = export_table(tmp_path, table, common=CommonOptions(timezone="Europe/Berlin"))
    for rows in (openpyxl_rows(path), calamine_rows(path)):
        assert rows[1] == [dt.datetime(2024, 7, 1, 12, 0), dt.datetime(2024, 7, 1, 10, 0)]


def test_unknown_timezone_is_invalid_argument(tmp_path: Path) -> None:
    schema = pa.schema([("at", pa.timestamp("us", "UTC"))])
    common = CommonOptions(timezone="Mars/Base")
    with FileSink(tmp_path / "x") as sink, pytest.raises(InvalidArgument) as err:
        ctx = EncoderContext(sink=sink, common=common, scratch_dir=tmp_path)
        create_encoder("xlsx", schema, XlsxOptions(), ctx)
    assert err.value.reason == "UNKNOWN_TIMEZONE"


def test_times_durations_dates_out_of_range(tmp_path: Path) -> None:
    table = pa.table(
        {
            "t": pa.array([dt.time(13, 30, 15)], pa.time64("us")),
            "dur": pa.array([dt.timedelta(hours=30, minutes=1)], pa.duration("s")),
            "old": pa.array([dt.date(1899, 12, 31)], pa.date32()),
        }
    )
    path, ctx = export_table(tmp_path, table)
    assert ctx.warnings.counts == {"DATE_AS_TEXT": 1}
    ws = openpyxl.load_workbook(path).active
    assert ws["A2"].value == dt.time(13, 30, 15)
    assert ws["B2"].value == dt.timedelta(hours=30, minutes=1)
    assert ws["B2"].number_format == "[h]:mm:ss"
    assert ws["C2"].value == "1899-12-31"


def test_nested_binary_dictionary_and_null_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "list": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
            "struct": pa.array([{"a": 1, "b": "x<y"}, None, {"a": None, "b": ""}]),
            "bin": pa.array([b"\x00\xff", None, b""], pa.binary()),
            "dict": pa.array(["red", "green", None]).dictionary_encode(),
            "nothing": pa.nulls(3),
            "last": [1, 2, 3],
        }
    )
    path, _ = export_table(tmp_path, table, chunk=2)
    expected = [
        ["[1,2]", '{"a":1,"b":"x<y"}', "AP8=", "red", None, 1],
        [None, None, None, "green", None, 2],
        ["[]", '{"a":null,"b":""}', "", None, None, 3],
    ]
    got = openpyxl_rows(path)[1:]
    # openpyxl reads an empty inline string as None; calamine as ""
    assert [[None if v == "" else v for v in row] for row in got] == [
        [None if v == "" else v for v in row] for row in expected
    ]
    assert calamine_rows(path)[1:] == [["" if v is None else v for v in r] for r in expected]


def test_workbook_features(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": [1, 2, 3],
            "a rather long header name": ["x", "y", "z"],
            "note": ["a much longer text value that sets the width", "b", "c"],
            "amount": [1234.5, 2.25, 3.0],
            "day": pa.array([dt.date(2024, 1, 1)] * 3, pa.date32()),
        }
    )
    formats = {"amount": "#,##0.00", "day": "dd/mm/yyyy"}
    options = XlsxOptions(sheet_name="Q1: sales/[draft]?*\\", datetime_format="yyyy-mm-dd hh:mm")
    path, _ = export_table(
        tmp_path, table, options=options, common=CommonOptions(number_formats=formats)
    )
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Q1 salesdraft"]
    ws = wb.active
    assert all(cell.font.b for cell in ws[1])
    assert not ws["A2"].font.b
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == "A1:E4"
    widths = {c: ws.column_dimensions[c].width for c in "ABCDE"}
    assert widths["C"] > widths["B"] > widths["A"] > 0
    assert widths["C"] >= len("a much longer text value that sets the width")
    assert ws["D2"].number_format == "#,##0.00"
    assert ws["E2"].number_format == "dd/mm/yyyy"
    assert ws["E2"].value == dt.datetime(2024, 1, 1)
    assert ws["A2"].number_format == "General"


def test_options_turn_features_off(tmp_path: Path) -> None:
    day = dt.date(2024, 5, 6)
    table = pa.table({"id": [1, 2], "day": pa.array([day, day], pa.date32())})
    options = XlsxOptions(
        header=False,
        bold_header=False,
        freeze_header=False,
        autofilter=False,
        sheet_name="",
        date_format="",
    )
    path, _ = export_table(tmp_path, table, options=options)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["Export"]
    ws = wb.active
    assert ws.freeze_panes is None
    assert ws.auto_filter.ref is None
    assert ws["B1"].number_format == "yyyy-mm-dd"  # an empty format falls back to the default
    midnight = dt.datetime.combine(day, dt.time())
    assert openpyxl_rows(path) == [[1, midnight], [2, midnight]]


def test_sanitize_sheet_name() -> None:
    assert sanitize_sheet_name("a" * 40) == "a" * 31
    assert sanitize_sheet_name("history") == "History (data)"  # reserved by Excel
    assert sanitize_sheet_name("[]:*?/\\") == "Export"
    assert sanitize_sheet_name("'quoted'") == "quoted"
    assert sanitize_sheet_name("tab\there") == "tabhere"


@pytest.mark.parametrize("write_empty_batch", [False, True])
def test_empty_table_has_header_only(tmp_path: Path, write_empty_batch: bool) -> None:
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    batches = [pa.RecordBatch.from_pylist([], schema=schema)] if write_empty_batch else []
    path, _ = export(tmp_path, batches, schema)
    assert openpyxl_rows(path) == [["id", "name"]]
    assert calamine_rows(path) == [["id", "name"]]
    assert openpyxl.load_workbook(path).active.auto_filter.ref == "A1:B1"


def test_wide_table(tmp_path: Path) -> None:
    columns = {f"c{i}": list(range(i, i + 5)) for i in range(1000)}
    table = pa.table(columns)
    path, _ = export_table(tmp_path, table, chunk=2)
    rows = calamine_rows(path)
    assert rows[0] == table.column_names
    assert rows[1:] == [[i + r for i in range(1000)] for r in range(5)]
    ws = openpyxl.load_workbook(path).active
    assert ws.max_column == 1000
    assert ws.auto_filter.ref == "A1:ALL6"


def test_too_many_columns(tmp_path: Path) -> None:
    schema = pa.schema([(f"c{i}", pa.int8()) for i in range(16_385)])
    with FileSink(tmp_path / "x") as sink, pytest.raises(InvalidArgument) as err:
        ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)
        create_encoder("xlsx", schema, XlsxOptions(), ctx)
    assert err.value.reason == "TOO_MANY_COLUMNS"


def _overflow(
    tmp_path: Path, options: XlsxOptions, rows: int, limit: int, max_bytes: int = 1 << 30
) -> tuple[Path, Any]:
    table = pa.table({"id": list(range(rows)), "name": [f"n{i}" for i in range(rows)]})
    path = tmp_path / "overflow.xlsx"
    with path.open("wb", buffering=0) as sink:
        ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)
        encoder = XlsxEncoder(
            table.schema, options, ctx, max_rows_per_sheet=limit, max_sheet_bytes=max_bytes
        )
        try:
            for batch in table.to_batches(max_chunksize=7):
                encoder.write(batch)
        except InvalidArgument:
            encoder.abort()
            raise
        encoder.finish()
    return path, ctx


def test_rows_continue_on_new_sheets(tmp_path: Path) -> None:
    path, ctx = _overflow(tmp_path, XlsxOptions(sheet_name="x" * 31), rows=25, limit=10)
    assert ctx.warnings.counts == {"ROWS_ON_NEW_SHEET": 15}
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == ["x" * 31, "x" * 27 + " (2)", "x" * 27 + " (3)"]
    cal = CalamineWorkbook.from_path(str(path))
    assert cal.sheet_names == wb.sheetnames
    ids: list[Any] = []
    for index, sheet in enumerate(wb.worksheets):
        rows = openpyxl_rows(path, index)
        assert rows[0] == ["id", "name"]
        assert calamine_rows(path, index) == rows
        assert sheet.freeze_panes == "A2"
        assert sheet.auto_filter.ref == f"A1:B{len(rows)}"
        ids += [r[0] for r in rows[1:]]
    assert ids == list(range(25))
    assert [len(openpyxl_rows(path, i)) - 1 for i in range(3)] == [10, 10, 5]


def test_sheet_xml_over_the_size_limit_continues_on_a_new_sheet(tmp_path: Path) -> None:
    path, ctx = _overflow(tmp_path, XlsxOptions(), rows=100, limit=1000, max_bytes=3000)
    cal = CalamineWorkbook.from_path(str(path))
    counts = [len(calamine_rows(path, i)) - 1 for i in range(len(cal.sheet_names))]
    assert len(counts) > 2
    assert sum(counts) == 100
    assert ctx.warnings.counts == {"ROWS_ON_NEW_SHEET": 100 - counts[0]}
    ids = [row[0] for i in range(len(counts)) for row in calamine_rows(path, i)[1:]]
    assert ids == list(range(100))
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.filename.startswith("xl/worksheets/"):
                assert info.file_size <= 3000
    with pytest.raises(InvalidArgument) as err:
        options = XlsxOptions(row_overflow=RowOverflow.FAIL)
        _overflow(tmp_path, options, rows=100, limit=1000, max_bytes=3000)
    assert err.value.reason == "SHEET_TOO_LARGE"


def test_zip_entries_need_no_zip64(tmp_path: Path) -> None:
    """Excel refuses ZIP64 local headers on small parts: every entry is a plain deflated entry
    with a data descriptor (version 2.0, real sizes in the central directory)."""
    table = pa.table({"id": list(range(1000))})
    path, _ = export_table(tmp_path, table, chunk=100)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names[:2] == ["[Content_Types].xml", "_rels/.rels"]
        assert {"xl/workbook.xml", "xl/styles.xml", "xl/worksheets/sheet1.xml"} <= set(names)
        for info in zf.infolist():
            assert info.extra == b""
            assert info.compress_type == zipfile.ZIP_DEFLATED
            local = raw[info.header_offset : info.header_offset + 30]
            assert local[:4] == b"PK\x03\x04"
            assert int.from_bytes(local[4:6], "little") == 20  # version needed: 2.0
            assert int.from_bytes(local[28:30], "little") == 0  # no extra field


def test_exactly_full_sheet_adds_no_empty_sheet(tmp_path: Path) -> None:
    path, ctx = _overflow(tmp_path, XlsxOptions(), rows=20, limit=10)
    assert openpyxl.load_workbook(path).sheetnames == ["Export", "Export (2)"]
    assert ctx.warnings.counts == {"ROWS_ON_NEW_SHEET": 10}


def test_row_overflow_fail(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as err:
        _overflow(tmp_path, XlsxOptions(row_overflow=RowOverflow.FAIL), rows=11, limit=10)
    assert err.value.reason == "TOO_MANY_ROWS"
    path, ctx = _overflow(tmp_path, XlsxOptions(row_overflow=RowOverflow.FAIL), rows=10, limit=10)
    assert len(openpyxl_rows(path)) == 11
    assert ctx.warnings.counts == {}


def test_seekable_sink_and_compression_level(tmp_path: Path) -> None:
    table = pa.table({"text": ["same words again and again"] * 2000})
    sizes = []
    for level in (0, 1, 9):
        sink = io.BytesIO()
        ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)  # type: ignore[arg-type]
        encoder = create_encoder("xlsx", table.schema, XlsxOptions(compression_level=level), ctx)
        encoder.write(table.to_batches()[0])
        encoder.finish()
        data = sink.getvalue()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None
        path = tmp_path / f"l{level}.xlsx"
        path.write_bytes(data)
        assert len(calamine_rows(path)) == 2001
        sizes.append(len(data))
    assert sizes[0] > sizes[1] >= sizes[2]


def test_abort_writes_nothing_more(tmp_path: Path) -> None:
    table = pa.table({"id": list(range(100))})
    sink = io.BytesIO()
    ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)  # type: ignore[arg-type]
    encoder = create_encoder("xlsx", table.schema, XlsxOptions(), ctx)
    encoder.write(table.to_batches()[0])
    size = len(sink.getvalue())
    encoder.abort()
    assert len(sink.getvalue()) == size
    assert not sink.closed


@pytest.mark.slow
def test_more_rows_than_a_sheet_holds(tmp_path: Path) -> None:
    rows = 1_048_600
    ids = pa.array(range(rows), pa.int64())
    table = pa.table({"id": ids, "label": pa.compute.cast(ids, pa.string())})
    path, ctx = export_table(tmp_path, table, chunk=100_000)
    assert ctx.warnings.counts == {"ROWS_ON_NEW_SHEET": rows - 1_048_575}
    cal = CalamineWorkbook.from_path(str(path))
    assert cal.sheet_names == ["Export", "Export (2)"]
    first = cal.get_sheet_by_index(0).to_python()
    second = cal.get_sheet_by_index(1).to_python()
    assert len(first) == 1_048_576
    assert first[0] == second[0] == ["id", "label"]
    assert first[1] == [0, "0"]
    assert first[-1] == [1_048_574, "1048574"]
    assert second[1:] == [[i, str(i)] for i in range(1_048_575, rows)]


class FailingSink(io.RawIOBase):
    """A sink that fails once ``limit`` bytes were written, like a client that went away."""

    def __init__(self, limit: int) -> None:
        self.written = 0
        self.limit = limit

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data).cast("B"))
        if self.written + n > self.limit:
            raise OSError("connection reset")
        self.written += n
        return n


def test_sink_failure_is_raised_and_abort_is_clean(tmp_path: Path) -> None:
    table = pa.table({"id": list(range(200_000)), "text": ["some text"] * 200_000})
    sink = FailingSink(limit=50_000)
    ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)
    encoder = create_encoder("xlsx", table.schema, XlsxOptions(), ctx)
    with pytest.raises(OSError, match="connection reset"):
        for batch in table.to_batches(max_chunksize=10_000):
            encoder.write(batch)
        encoder.finish()
    written = sink.written
    encoder.abort()
    assert sink.written == written


def test_dropped_encoder_leaves_no_thread(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2, 3]})
    sink = io.BytesIO()
    ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)  # type: ignore[arg-type]
    encoder = create_encoder("xlsx", table.schema, XlsxOptions(), ctx)
    encoder.write(table.to_batches()[0])
    del encoder
    gc.collect()
    assert not [t for t in threading.enumerate() if t.name == "xlsx-zip"]


def _xlsx_bytes(tmp_path: Path, table: pa.Table, options: XlsxOptions) -> bytes:
    sink = io.BytesIO()
    ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)  # type: ignore[arg-type]
    encoder = create_encoder("xlsx", table.schema, options, ctx)
    for batch in table.to_batches(max_chunksize=7_000):
        encoder.write(batch)
    encoder.finish()
    return sink.getvalue()


def test_every_compression_level_reads_back_and_output_is_reproducible(tmp_path: Path) -> None:
    """Levels 1-3 deflate with ISA-L, 4-9 with zlib, 0 stores: every level gives a zip whose CRCs
    and sizes check out and whose cells read back; the same input always gives the same bytes."""
    n = 20_000
    ids = pa.array(range(n), pa.int64())
    table = pa.table({"id": ids, "label": pa.compute.cast(ids, pa.string())})
    sizes = {}
    for level in range(10):
        data = _xlsx_bytes(tmp_path, table, XlsxOptions(compression_level=level))
        assert data == _xlsx_bytes(tmp_path, table, XlsxOptions(compression_level=level))
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.testzip() is None
            for info in zf.infolist():
                want = zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED
                assert info.compress_type == want
                assert info.flag_bits & 0x08  # sizes in a data descriptor: the sink never seeks
        path = tmp_path / f"level{level}.xlsx"
        path.write_bytes(data)
        rows = calamine_rows(path)
        assert rows[0] == ["id", "label"]
        assert rows[1:] == [[i, str(i)] for i in range(n)]
        sizes[level] = len(data)
    assert sizes[0] > 3 * max(sizes[level] for level in range(1, 10))


def test_wide_characters_count_twice_in_column_widths(tmp_path: Path) -> None:
    table = pa.table({"latin": ["abcdefghij"] * 3, "cjk": ["東京都渋谷区神南一丁目"] * 3})
    path, _ = export_table(tmp_path, table)
    ws = openpyxl.load_workbook(path).worksheets[0]
    latin, cjk = ws.column_dimensions["A"].width, ws.column_dimensions["B"].width
    assert cjk >= 2 * 11 and cjk > latin  # eleven wide characters take 22 columns
