"""CSV and TSV encoders, read back by Python's csv module and by pyarrow's CSV reader."""

from __future__ import annotations

import csv
import gzip
import io
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest
from exportd.server.errors import InvalidArgument
from exportd.server.exporters import EncoderContext, create_encoder
from exportd.server.exporters._text import render_text
from exportd.server.exporters.options import CommonOptions, Compression, CsvOptions, Quoting
from fixtures_hostile import INJECTIONS, LONG_CELL, hostile_table

_TEXT_COLUMNS = {"text", "controls", "large_text", "binary", "dict"}


class Sink(io.RawIOBase):
    """A sink that records bytes and fails the test if an encoder closes it."""

    def __init__(self) -> None:
        super().__init__()
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        assert not self.closed
        view = memoryview(b).cast("B")
        self.data += view
        return len(view)

    def close(self) -> None:
        raise AssertionError("encoders must not close the sink")


def encode(
    table: pa.Table,
    options: CsvOptions,
    tmp_path: Path,
    *,
    fmt: str = "csv",
    common: CommonOptions | None = None,
    chunk: int = 3,
) -> bytes:
    sink = Sink()
    ctx = EncoderContext(sink=sink, common=common or CommonOptions(), scratch_dir=tmp_path)
    encoder = create_encoder(fmt, table.schema, options, ctx)
    for batch in table.to_batches(max_chunksize=chunk):
        encoder.write(batch)
    encoder.finish()
    return bytes(sink.data)


def expected_cells(
    table: pa.Table, *, guard: bool = True, null_text: str = "", timezone: str = "UTC"
) -> list[list[str]]:
    """The documented rendering, with the OWASP guard applied here in plain Python."""
    columns = []
    for name in table.column_names:
        texts = render_text(table[name], timezone=timezone, null_text=None).to_pylist()
        cells = []
        for text in texts:
            if text is None:
                cells.append(null_text)
            elif guard and name in _TEXT_COLUMNS and text[:1] in ("=", "+", "-", "@", "\t", "\r"):
                cells.append("'" + text)
            else:
                cells.append(text)
        columns.append(cells)
    return [list(row) for row in zip(*columns, strict=True)]


def read_rows(data: bytes, **fmt: Any) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), **fmt))


def test_hostile_table_reads_back_with_python_csv(tmp_path: Path) -> None:
    table = hostile_table()
    rows = read_rows(encode(table, CsvOptions(), tmp_path))
    assert rows[0] == table.column_names
    assert rows[1:] == expected_cells(table)


def test_formula_guard_prefixes_text_and_never_numbers(tmp_path: Path) -> None:
    table = hostile_table()
    rows = read_rows(encode(table, CsvOptions(), tmp_path))
    header = rows[0]
    text = [row[header.index("text")] for row in rows[1:]]
    for injection in INJECTIONS:
        if injection[0] in "=+-@\t\r":
            assert "'" + injection in text
    assert "#N/A" in text
    assert LONG_CELL in text
    ints = [row[header.index("int64")] for row in rows[1:]]
    assert ints[:4] == ["-9223372036854775808", "9223372036854775807", "0", "-1"]
    floats = [row[header.index("float64")] for row in rows[1:]]
    assert floats[2] == "-inf"
    durations = [row[header.index("duration")] for row in rows[1:]]
    assert durations[2] == "-2.000"
    dicts = [row[header.index("dict")] for row in rows[1:]]
    assert "'=red" in dicts


def test_guard_off_leaves_text_alone(tmp_path: Path) -> None:
    table = hostile_table()
    rows = read_rows(encode(table, CsvOptions(formula_guard=False), tmp_path))
    assert rows[1:] == expected_cells(table, guard=False)
    assert [row[0] for row in rows[1:8]] == INJECTIONS


def test_header_names_are_guarded_too(tmp_path: Path) -> None:
    table = pa.table({"=HYPERLINK()": [1], "ok": ["x"]})
    assert read_rows(encode(table, CsvOptions(), tmp_path))[0] == ["'=HYPERLINK()", "ok"]


def test_pyarrow_reads_back_equal_to_source(tmp_path: Path) -> None:
    table = hostile_table()
    names = "int64 int8 uint64 float64 decimal bool date ts_naive ts_utc large_text text"
    source = table.select(names.split())
    data = encode(source, CsvOptions(formula_guard=False), tmp_path)
    back = pacsv.read_csv(
        io.BytesIO(data),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=source.schema,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    assert back.schema == source.schema
    for name in source.column_names:
        assert_same(back[name], source[name], name)


def assert_same(got: pa.ChunkedArray, want: pa.ChunkedArray, name: str) -> None:
    got_list, want_list = got.to_pylist(), want.to_pylist()
    assert len(got_list) == len(want_list), name
    for g, w in zip(got_list, want_list, strict=True):
        if isinstance(w, float) and math.isnan(w):
            assert isinstance(g, float) and math.isnan(g), name
        else:
            assert g == w, name


def test_zoned_timestamps_in_the_chosen_zone_read_back_as_the_same_instants(
    tmp_path: Path,
) -> None:
    source = hostile_table().select(["ts_utc", "ts_zoned"])
    data = encode(source, CsvOptions(), tmp_path, common=CommonOptions(timezone="Asia/Tokyo"))
    assert "+09:00" in data.decode()
    back = pacsv.read_csv(
        io.BytesIO(data),
        convert_options=pacsv.ConvertOptions(
            column_types={
                "ts_utc": pa.timestamp("ms", "UTC"),
                "ts_zoned": pa.timestamp("us", "UTC"),
            }
        ),
    )
    for name in source.column_names:
        assert pc.all(pc.equal(back[name], source[name].cast(back[name].type))).as_py()


def test_delimiter_and_null_text(tmp_path: Path) -> None:
    table = hostile_table()
    options = CsvOptions(delimiter=";")
    data = encode(table, options, tmp_path, common=CommonOptions(null_text="NULL"))
    rows = read_rows(data, delimiter=";")
    assert rows[1:] == expected_cells(table, null_text="NULL")
    assert rows[-1] == ["NULL"] * table.num_columns


def test_tsv(tmp_path: Path) -> None:
    table = hostile_table()
    data = encode(table, CsvOptions(delimiter="\t"), tmp_path, fmt="tsv")
    rows = read_rows(data, delimiter="\t")
    assert rows[0] == table.column_names
    assert rows[1:] == expected_cells(table)


@pytest.mark.parametrize("quote", ['"', "'"])
def test_quoting_all_quotes_every_non_null_field(tmp_path: Path, quote: str) -> None:
    table = pa.table({"n": [1, None, 3], "s": ["a", "b", None], "f": [0.5, 1.5, 2.5]})
    data = encode(table, CsvOptions(quote=quote, quoting=Quoting.ALL), tmp_path).decode()
    q = quote
    assert data.splitlines() == [
        f"{q}n{q},{q}s{q},{q}f{q}",
        f"{q}1{q},{q}a{q},{q}0.5{q}",
        f",{q}b{q},{q}1.5{q}",
        f"{q}3{q},,{q}2.5{q}",
    ]


@pytest.mark.parametrize("quote", ['"', "'"])
def test_quoting_none_writes_no_quotes_and_refuses_values_that_need_them(
    tmp_path: Path, quote: str
) -> None:
    clean = pa.table({"n": [1, 2], "s": ["a b", "c"]})
    data = encode(clean, CsvOptions(quote=quote, quoting=Quoting.NONE), tmp_path).decode()
    assert data.splitlines() == ["n,s", "1,a b", "2,c"]
    dirty = pa.table({"s": ["a,b"]})
    with pytest.raises(InvalidArgument) as err:
        encode(dirty, CsvOptions(quote=quote, quoting=Quoting.NONE), tmp_path)
    assert err.value.reason == "CSV_NEEDS_QUOTING"


def test_custom_quote_character_reads_back(tmp_path: Path) -> None:
    table = hostile_table()
    data = encode(table, CsvOptions(quote="'", delimiter="|"), tmp_path)
    rows = read_rows(data, quotechar="'", delimiter="|")
    assert rows[0] == table.column_names
    assert rows[1:] == expected_cells(table)


def test_header_off(tmp_path: Path) -> None:
    table = hostile_table()
    rows = read_rows(encode(table, CsvOptions(header=False), tmp_path))
    assert rows == expected_cells(table)


@pytest.mark.parametrize("quote", ['"', "'"])
def test_crlf_line_terminator(tmp_path: Path, quote: str) -> None:
    table = pa.table({"n": [1, 2, 3], "s": ["x", "y", "z"]})
    data = encode(table, CsvOptions(line_terminator="\r\n", quote=quote), tmp_path)
    assert data.count(b"\r\n") == 4
    assert data.count(b"\n") == 4
    assert read_rows(data, quotechar=quote)[1:] == expected_cells(table)


def test_bom_comes_first_and_utf8_sig_reads_back(tmp_path: Path) -> None:
    table = hostile_table()
    data = encode(table, CsvOptions(bom=True), tmp_path)
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == table.column_names
    assert rows[1:] == expected_cells(table)


def test_gzip_and_zstd_decompress_to_the_plain_file(tmp_path: Path) -> None:
    table = hostile_table()
    plain = encode(table, CsvOptions(bom=True), tmp_path)
    gz = encode(table, CsvOptions(bom=True, compression=Compression.GZIP), tmp_path)
    assert gzip.decompress(gz) == plain
    zst = encode(table, CsvOptions(bom=True, compression=Compression.ZSTD), tmp_path)
    assert zst[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic number
    stream = pa.CompressedInputStream(pa.BufferReader(zst), "zstd")
    assert stream.read() == plain


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_compressed_output_streams_before_finish(tmp_path: Path, compression: Compression) -> None:
    n = 200_000
    table = pa.table({"id": pa.array(range(n)), "s": pa.array([f"row {i}" for i in range(n)])})
    sink = Sink()
    ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)
    encoder = create_encoder("csv", table.schema, CsvOptions(compression=compression), ctx)
    for batch in table.to_batches(max_chunksize=20_000):
        encoder.write(batch)
    before_finish = len(sink.data)
    encoder.finish()
    assert before_finish > 0
    assert before_finish > len(sink.data) // 2


def test_empty_table_gives_header_only(tmp_path: Path) -> None:
    table = hostile_table().slice(0, 0)
    for options in (CsvOptions(), CsvOptions(quote="'")):
        data = encode(table, options, tmp_path)
        assert read_rows(data, quotechar=options.quote) == [table.column_names]
    gz = encode(table, CsvOptions(compression=Compression.GZIP), tmp_path)
    assert read_rows(gzip.decompress(gz)) == [table.column_names]


def test_zero_batches_still_write_a_header(tmp_path: Path) -> None:
    sink = Sink()
    schema = pa.schema([("a", pa.int64()), ("b", pa.string())])
    ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)
    encoder = create_encoder("csv", schema, CsvOptions(), ctx)
    encoder.finish()
    assert read_rows(bytes(sink.data)) == [["a", "b"]]


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (CsvOptions(delimiter=";;"), "INVALID_CSV_DELIMITER"),
        (CsvOptions(delimiter="\n"), "INVALID_CSV_DELIMITER"),
        (CsvOptions(quote=""), "INVALID_CSV_QUOTE"),
        (CsvOptions(quote=",", delimiter=","), "INVALID_CSV_QUOTE"),
        (CsvOptions(line_terminator="\r"), "INVALID_LINE_TERMINATOR"),
    ],
)
def test_bad_options_are_invalid_argument(tmp_path: Path, options: CsvOptions, reason: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        encode(pa.table({"a": [1]}), options, tmp_path)
    assert err.value.reason == reason
