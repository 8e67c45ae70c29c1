"""XLSX: a streaming, vectorised Arrow -> SpreadsheetML encoder.

Each record batch becomes worksheet XML without a Python object per cell: for every column,
``pyarrow.compute`` turns the whole column into cell markup, the columns are joined element-wise
into ``<row>`` elements, and the resulting string buffer is deflated (ISA-L for levels 1-3) and
written in one piece. A batch is rendered in slices of at most 8,192 rows (about 2 MiB of XML),
so memory stays flat whatever the table's size. Everything runs on the caller's thread: the
pyarrow kernels, the compressor and the CRC release the GIL, so two exports on two threads use
two cores. The zip is written forward-only (data descriptors), so the sink need not seek.

What a cell holds, per Arrow type (a reader may rely on this):

==========================  ===============================================================
Arrow type                  cell
==========================  ===============================================================
integers                    number; beyond +-2^53 (where a double loses digits) exact text
float16/32/64               number (shortest text that reads back to the same float); NaN,
                            inf and -inf as the text ``NaN`` / ``inf`` / ``-inf`` (warning
                            NON_FINITE_AS_TEXT), since Excel has no such numbers
decimal                     number; a value with more than 15 significant digits as exact
                            text (Excel keeps 15)
bool                        boolean cell (``t="b"``)
date32/date64               Excel serial date, styled ``date_format``
timestamp                   Excel serial date-time, styled ``datetime_format``; zoned values
                            shown as wall time in the ``timezone`` option (Excel has no zones),
                            naive ones as they are. Excel keeps milliseconds.
date/timestamp out of range before 1900-01-01 or after 9999-12-31: the value's text
                            (warning DATE_AS_TEXT)
time32/time64               fraction of a day, styled ``hh:mm:ss``
duration                    number of days, styled ``[h]:mm:ss`` (sums and sorts like a
                            number; negative durations show as ##### in Excel)
string (all kinds)          inline string (``t="inlineStr"``), never a formula; characters
                            XML forbids removed (warning CONTROL_CHARACTERS_REMOVED); more
                            than 32,767 characters (UTF-16 units, Excel's limit) truncated
                            (warning CELL_TRUNCATED); spaces kept as they are
binary, list, struct, map   inline string with ``_text.render_text`` (base64, JSON)
null                        an empty cell
==========================  ===============================================================

A per-column number format (``CommonOptions.number_formats``, keyed by header) replaces the
default style of that column. Rows beyond a sheet's 1,048,575 data rows go on sheets named
``"<name> (2)"``, ``"<name> (3)"``, ... with the header repeated (warning ROWS_ON_NEW_SHEET counts
the rows moved), or raise InvalidArgument(reason="TOO_MANY_ROWS") with ``RowOverflow.FAIL``. A
sheet whose XML would pass 4 GiB continues the same way (``SHEET_TOO_LARGE`` under FAIL): every
zip entry stays a plain one with a data descriptor, because Excel rejects the ZIP64 headers a
streamed entry of unknown size would otherwise need.
More than 16,384 columns raise InvalidArgument(reason="TOO_MANY_COLUMNS") at construction.
Cells carry no ``r`` reference: rows and cells are positional, and null cells are written as
``<c/>`` so later cells keep their column.
"""

from __future__ import annotations

import functools
import io
import math
import re
import struct
import zlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from isal import isal_zlib

from ..errors import InvalidArgument
from . import _xlsx_parts as parts
from ._base import EncoderContext
from ._text import render_text, sanitize_text
from .options import RowOverflow, XlsxOptions

__all__ = [
    "MAX_COLUMNS",
    "MAX_ROWS_PER_SHEET",
    "MAX_SHEET_BYTES",
    "XlsxEncoder",
    "sanitize_sheet_name",
]

MAX_ROWS_PER_SHEET = 1_048_575
"""Data rows a sheet holds under its header (Excel's 1,048,576 rows minus the header)."""
MAX_COLUMNS = 16_384
"""Columns a sheet holds (A..XFD)."""
MAX_SHEET_BYTES = 0xFFFF_FFFF
"""Most bytes of XML one sheet part holds: a zip entry stays under 4 GiB so it needs no ZIP64
(Excel refuses ZIP64 local headers on parts that do not need them)."""
_TAIL_RESERVE = 256
"""Bytes kept free for the end of a sheet part (closing tags and the autofilter)."""
MAX_CELL_CHARS = 32_767
"""Characters (UTF-16 code units) a cell holds."""

_SAFE_INT = 2**53
_EXCEL_EPOCH_OFFSET = 25_569
"""Days from Excel's day 0 (1899-12-30, counting its fictitious 1900-02-29) to 1970-01-01."""
_FIRST_SERIAL = 1  # 1900-01-01
_LAST_SERIAL = 2_958_466  # 10000-01-01, exclusive
_UNITS_PER_DAY = {"s": 86_400, "ms": 86_400_000, "us": 86_400_000_000, "ns": 86_400_000_000_000}
_TIME_FORMAT = "hh:mm:ss"
_DURATION_FORMAT = "[h]:mm:ss"
_CHUNK_BYTES = 4 << 20
"""Rough size of the XML rendered per step: bounds memory and keeps string offsets in 32 bits.
Each step makes a few dozen compute calls whose Python side holds the GIL; 16k-row steps halve
those against 8k (two XLSX exports at once 0.62 → 0.60 of one after the other, each ~5% faster)
for ~3 MiB more working memory, and 32k rows gained nothing more."""
_MAX_CHUNK_ROWS = 16_384
_WIDTH_SAMPLE_ROWS = 1_000
_WIDE_CHARACTERS = (
    "[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf"
    "\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]"
)
"""East Asian Wide and Fullwidth ranges (Unicode UAX #11), counted twice in column widths."""
_MAX_WIDTH = 60.0
_MIN_WIDTH = 6.0
_SHEET_NAME_FORBIDDEN = re.compile(r"[\\/?*\[\]:\x00-\x1f\ufffe\uffff]")

_TEXT_OPEN = "<is><t>"
_TEXT_OPEN_PRESERVE = '<is><t xml:space="preserve">'
_NEEDS_CARE = (
    "[&<>\\r\\x{0}-\\x{8}\\x{B}\\x{C}\\x{E}-\\x{1F}\\x{FFFE}\\x{FFFF}]|^[ \\t\\n]|[ \\t\\n]$"
)
"""Text that needs escaping, character removal or xml:space="preserve"; most text needs none."""
_TEXT_CLOSE = "</t></is></c>"
_NUM_CLOSE = "</v></c>"


def sanitize_sheet_name(name: str, default: str = "Export") -> str:
    """A valid worksheet name from ``name``: characters Excel forbids (``\\ / ? * [ ] :`` and
    control characters) removed, leading and trailing apostrophes and spaces stripped, at most 31
    characters, never the reserved "History"; ``default`` when nothing is left."""
    cleaned = _SHEET_NAME_FORBIDDEN.sub("", name).strip().strip("'").strip()
    cleaned = cleaned[:31].rstrip().rstrip("'")
    if cleaned.lower() == "history":  # Excel reserves it for change tracking
        cleaned = "History (data)"
    return cleaned or default


def _numbered_sheet_name(base: str, number: int) -> str:
    if number == 1:
        return base
    suffix = f" ({number})"
    return base[: 31 - len(suffix)].rstrip().rstrip("'") + suffix


class _ZipStream:
    """The workbook's zip container, written forward-only to ``sink`` on the caller's thread.

    Every entry is a plain (non-ZIP64) entry whose sizes follow its data in a data descriptor, so
    the sink need not seek and may be a pipe; Excel rejects ZIP64 headers on parts that do not
    need them. Deflate levels 1-3 use ISA-L (several times faster than zlib's level 1 and as small
    as its level 4), 4-9 zlib, 0 stores. Entry times are fixed (1980-01-01), so the same table and
    options always give the same bytes. Compression runs on the calling thread in large pieces:
    both compressors and the CRC release the GIL, and nothing is held between calls but the
    compressor's window, so memory stays flat.
    """

    def __init__(self, sink: io.RawIOBase, level: int) -> None:
        self._sink: io.RawIOBase | None = sink
        self._level = level
        self._offset = 0
        self._directory: list[_ZipEntry] = []
        self._entry: _ZipEntry | None = None
        self._compressor: Any = None

    def writestr(self, name: str, text: str) -> None:
        """Add a whole small part."""
        self._begin(name)
        self.write(memoryview(text.encode("utf-8")))
        self._end()

    def open_entry(self, name: str, head: str) -> None:
        """Start a streamed part with ``head`` as its first bytes; it must stay under 4 GiB."""
        self._begin(name)
        self.write(memoryview(head.encode("utf-8")))

    def write(self, data: memoryview) -> None:
        """Append ``data`` to the open part."""
        entry = self._entry
        if entry is None or self._sink is None:
            raise ValueError("no zip entry is open")
        entry.crc = isal_zlib.crc32(data, entry.crc)
        entry.size += data.nbytes
        if self._compressor is None:
            self._put(data)
            entry.compressed += data.nbytes
        else:
            out = self._compressor.compress(data)
            entry.compressed += len(out)
            self._put(out)

    def close_entry(self, tail: str) -> None:
        """End the open part with ``tail``."""
        self.write(memoryview(tail.encode("utf-8")))
        self._end()

    def close(self) -> None:
        """Write the central directory and flush the sink."""
        sink = self._sink
        if sink is None or self._entry is not None:
            raise ValueError("the zip is aborted or has an open entry")
        start = self._offset
        records = [_central_record(e) for e in self._directory]
        self._put(b"".join(records))
        end = self._offset
        count, size = len(self._directory), end - start
        tail = b""
        if start >= _ZIP32_LIMIT or end >= _ZIP32_LIMIT or count >= 0xFFFF:
            tail += struct.pack(
                "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, start
            )
            tail += struct.pack("<IIQI", 0x07064B50, 0, end, 1)
        tail += struct.pack(
            "<IHHHHIIH",
            0x06054B50,
            0,
            0,
            min(count, 0xFFFF),
            min(count, 0xFFFF),
            min(size, _ZIP32_LIMIT),
            min(start, _ZIP32_LIMIT),
            0,
        )
        self._put(tail)
        sink.flush()
        self._sink = None

    def abort(self) -> None:
        """Stop writing: nothing more reaches the sink."""
        self._sink = None
        self._entry = None
        self._compressor = None

    def _begin(self, name: str) -> None:
        if self._entry is not None:
            raise ValueError("a zip entry is already open")
        method = 8 if self._level else 0
        encoded = name.encode("ascii")
        entry = _ZipEntry(encoded, method, self._offset)
        self._put(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                20,
                _DESCRIPTOR_FLAG,
                method,
                _DOS_TIME,
                _DOS_DATE,
                0,
                0,
                0,
                len(encoded),
                0,
            )
            + encoded
        )
        self._entry = entry
        if self._level == 0:
            self._compressor = None
        elif self._level <= 3:
            self._compressor = isal_zlib.compressobj(self._level, isal_zlib.DEFLATED, -15)
        else:
            self._compressor = zlib.compressobj(self._level, zlib.DEFLATED, -15)

    def _end(self) -> None:
        entry = self._entry
        if entry is None:
            raise ValueError("no zip entry is open")
        if self._compressor is not None:
            out = self._compressor.flush()
            entry.compressed += len(out)
            self._put(out)
            self._compressor = None
        if entry.size >= _ZIP32_LIMIT or entry.compressed >= _ZIP32_LIMIT:
            raise ValueError("a zip entry passed 4 GiB")
        self._put(struct.pack("<IIII", 0x08074B50, entry.crc, entry.compressed, entry.size))
        self._directory.append(entry)
        self._entry = None

    def _put(self, data: bytes | memoryview) -> None:
        """Write ``data`` to the sink in full."""
        sink = self._sink
        if sink is None:
            raise ValueError("the zip was aborted")
        view = memoryview(data)
        view = view.cast("B") if view.format != "B" else view
        done, n = 0, view.nbytes
        while done < n:
            wrote = sink.write(view[done:])
            if wrote is None:
                raise BlockingIOError("the sink would block")
            done += wrote
        self._offset += n


_ZIP32_LIMIT = 0xFFFF_FFFF
_DESCRIPTOR_FLAG = 0x08
_DOS_DATE = (1980 - 1980) << 9 | 1 << 5 | 1  # 1980-01-01
_DOS_TIME = 0


class _ZipEntry:
    """What the central directory records of one written entry."""

    __slots__ = ("compressed", "crc", "method", "name", "offset", "size")

    def __init__(self, name: bytes, method: int, offset: int) -> None:
        self.name = name
        self.method = method
        self.offset = offset
        self.crc = 0
        self.size = 0
        self.compressed = 0


def _central_record(e: _ZipEntry) -> bytes:
    extra = b""
    offset = e.offset
    version = 20
    if offset >= _ZIP32_LIMIT:
        extra = struct.pack("<HHQ", 0x0001, 8, offset)
        offset = _ZIP32_LIMIT
        version = 45
    return (
        struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            (3 << 8) | version,
            version,
            _DESCRIPTOR_FLAG,
            e.method,
            _DOS_TIME,
            _DOS_DATE,
            e.crc,
            e.compressed,
            e.size,
            len(e.name),
            len(extra),
            0,
            0,
            0,
            0o600 << 16,
            offset,
        )
        + e.name
        + extra
    )


class _Column:
    """How one column becomes cells: its style index and the cell markup it opens with."""

    def __init__(self, field: pa.Field, style: int) -> None:
        self.field = field
        self.style = style
        s = f' s="{style}"' if style else ""
        self.num_open = f"<c{s}><v>"
        self.bool_open = f'<c{s} t="b"><v>'
        self.text_open = f'<c{s} t="inlineStr">' + _TEXT_OPEN
        self.text_open_preserve = f'<c{s} t="inlineStr">' + _TEXT_OPEN_PRESERVE


def _value_type(t: pa.DataType) -> pa.DataType:
    while True:
        if pa.types.is_dictionary(t):
            t = t.value_type
        elif isinstance(t, pa.ExtensionType):
            t = t.storage_type
        elif pa.types.is_run_end_encoded(t):
            t = t.value_type
        else:
            return t


def _plain(arr: pa.Array) -> pa.Array:
    """Dictionary, extension and run-end encoded arrays as their plain values."""
    while True:
        t = arr.type
        if pa.types.is_dictionary(t):
            arr = pc.take(arr.dictionary, arr.indices)
        elif isinstance(t, pa.ExtensionType):
            arr = arr.storage
        elif pa.types.is_run_end_encoded(t):
            arr = pc.run_end_decode(arr)
        else:
            return arr


def _ticks(arr: pa.Array) -> pa.Array:
    """A temporal array's raw count of units as float64 (beyond 2^53 the nearest double)."""
    return _cast(_cast(arr, pa.int64()), pa.float64(), safe=False)


def _is_zoned(t: pa.DataType) -> bool:
    t = _value_type(t)
    return bool(pa.types.is_timestamp(t) and t.tz is not None)


def _check_timezone(timezone: str) -> None:
    probe = pa.array([0], pa.timestamp("s", "UTC"))
    try:
        pc.local_timestamp(probe.cast(pa.timestamp("s", timezone)))
    except pa.ArrowInvalid as exc:
        raise InvalidArgument(
            f"unknown time zone {timezone!r}: {exc}", reason="UNKNOWN_TIMEZONE"
        ) from exc


@functools.lru_cache(maxsize=256)
def _cast_options(target: pa.DataType, safe: bool) -> pc.CastOptions:
    return pc.CastOptions.safe(target) if safe else pc.CastOptions.unsafe(target)


def _cast(arr: pa.Array, target: pa.DataType, safe: bool = True) -> pa.Array:
    """``pc.cast`` with its options made once per target type (building them holds the GIL)."""
    result: pa.Array = pc.call_function("cast", [arr], _cast_options(target, safe))
    return result


@functools.lru_cache(maxsize=1024, typed=True)
def _lit(value: str | float) -> pa.Scalar:
    """``value`` as an Arrow scalar, made once: pyarrow converts a plain Python argument of a
    compute call anew on every call, holding the GIL (tens of microseconds each)."""
    return pa.scalar(value)


_EMPTY = _lit("")
_NULL_AS_EMPTY_CELL = pc.JoinOptions(null_handling="replace", null_replacement="<c/>")


def _any(mask: pa.Array) -> bool:
    return bool(pc.any(mask).as_py())


def _count(mask: pa.Array) -> int:
    return int(pc.sum(mask).as_py() or 0)


class XlsxEncoder:
    """Writes one XLSX workbook of ``schema``-shaped batches to ``ctx.sink`` as they arrive.

    ``max_rows_per_sheet`` is the data rows a sheet holds under its header (Excel's limit by
    default) and ``max_sheet_bytes`` the XML a sheet part may reach before the rows continue on
    a new sheet; lower them only to exercise sheet overflow. ``compression_level`` 1-9 is the
    deflate level (1-3 ISA-L's levels, 4-9 zlib's), 0 stores the parts uncompressed. Rows and
    warnings are final once ``finish`` returns; after ``abort`` nothing more is written to the
    sink.
    """

    def __init__(
        self,
        schema: pa.Schema,
        options: XlsxOptions,
        ctx: EncoderContext,
        *,
        max_rows_per_sheet: int = MAX_ROWS_PER_SHEET,
        max_sheet_bytes: int = MAX_SHEET_BYTES,
    ) -> None:
        if len(schema) > MAX_COLUMNS:
            raise InvalidArgument(
                f"XLSX holds at most {MAX_COLUMNS:,} columns; this table has {len(schema):,}",
                reason="TOO_MANY_COLUMNS",
            )
        if max_rows_per_sheet < 1:
            raise ValueError("max_rows_per_sheet must be positive")
        if not 0 <= options.compression_level <= 9:
            raise InvalidArgument(
                f"compression_level must be 0..9, not {options.compression_level}",
                reason="INVALID_OPTION",
            )
        self._schema = schema
        self._options = options
        self._ctx = ctx
        self._timezone = ctx.common.timezone
        self._header = options.header
        self._capacity = max_rows_per_sheet + (0 if options.header else 1)
        self._max_sheet_bytes = max_sheet_bytes - _TAIL_RESERVE
        self._sheet_name = sanitize_sheet_name(options.sheet_name)
        self._styles = parts.StyleTable(options.bold_header)
        self._columns = [
            _Column(f, self._styles.style_for(self._default_format(f))) for f in schema
        ]
        self._last_letter = parts.column_letters(len(schema) - 1) if len(schema) else "A"
        self._header_xml = self._render_header() if options.header and len(schema) else ""
        self._widths: list[float] | None = None
        if any(_is_zoned(f.type) for f in schema):
            _check_timezone(self._timezone)

        self._zip = _ZipStream(ctx.sink, options.compression_level)
        self._zip.writestr("[Content_Types].xml", parts.CONTENT_TYPES)
        self._zip.writestr("_rels/.rels", parts.ROOT_RELS)
        self._sheet_open = False
        self._sheet_rows = 0
        self._sheets: list[parts.SheetEntry] = []
        self._rows = 0
        self._closed = False
        self._sheet_bytes = 0
        self._moved = 0

    # --- public -------------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        """Append ``batch``'s rows (its schema must be the encoder's)."""
        if self._closed:
            raise ValueError("write after finish or abort")
        n = batch.num_rows
        if n == 0:
            return
        if self._options.row_overflow is RowOverflow.FAIL and self._rows + n > self._capacity:
            raise InvalidArgument(
                f"the table has more than {self._capacity:,} rows, the most one sheet holds, "
                "and row_overflow is FAIL",
                reason="TOO_MANY_ROWS",
            )
        for start, length in self._chunk_bounds(batch):
            self._write_chunk(batch.slice(start, length))

    def finish(self) -> None:
        """Close the last sheet and write the workbook parts and the zip directory."""
        if self._closed:
            raise ValueError("finish after finish or abort")
        if not self._sheet_open and not self._sheets:
            self._open_sheet()
        self._close_sheet()
        self._ctx.warnings.add(
            "ROWS_ON_NEW_SHEET",
            self._moved,
            "rows beyond what one sheet holds continue on further sheets",
        )
        self._zip.writestr("xl/workbook.xml", parts.workbook_xml(self._sheets))
        self._zip.writestr("xl/_rels/workbook.xml.rels", parts.workbook_rels(len(self._sheets)))
        self._zip.writestr("xl/styles.xml", self._styles.xml())
        self._closed = True
        self._zip.close()

    def abort(self) -> None:
        """Stop without completing the file; writes nothing more to the sink."""
        if self._closed:
            return
        self._closed = True
        self._zip.abort()

    # --- sheets -------------------------------------------------------------------------------

    def _default_format(self, field: pa.Field) -> str:
        custom = self._ctx.common.number_formats.get(field.name, "")
        if custom:
            return custom
        t = _value_type(field.type)
        if pa.types.is_date(t):
            return self._options.date_format or XlsxOptions.date_format
        if pa.types.is_timestamp(t):
            return self._options.datetime_format or XlsxOptions.datetime_format
        if pa.types.is_time(t):
            return _TIME_FORMAT
        if pa.types.is_duration(t):
            return _DURATION_FORMAT
        return ""

    def _render_header(self) -> str:
        names = pa.array([f.name for f in self._schema], pa.string())
        text = self._escape(self._truncate(self._sanitize(names)))
        s = f' s="{parts.StyleTable.HEADER}"' if self._options.bold_header else ""
        cells = pc.binary_join_element_wise(
            f'<c{s} t="inlineStr">{_TEXT_OPEN_PRESERVE}', text, _TEXT_CLOSE, ""
        )
        return "<row>" + "".join(cells.to_pylist()) + "</row>"

    def _open_sheet(self) -> None:
        number = len(self._sheets) + 1
        if self._widths is None:
            self._widths = [self._width(len(f.name)) for f in self._schema]
        freeze = self._header and self._options.freeze_header and len(self._schema) > 0
        head = parts.sheet_head(self._widths, freeze) + self._header_xml
        self._zip.open_entry(parts.sheet_part_name(number), head)
        self._sheet_open = True
        self._sheet_bytes = len(head.encode("utf-8"))
        self._sheet_rows = 0

    def _close_sheet(self) -> None:
        if not self._sheet_open:
            return
        number = len(self._sheets) + 1
        filter_range = None
        if self._header and self._options.autofilter and len(self._schema):
            filter_range = f"A1:{self._last_letter}{self._sheet_rows + 1}"
        self._zip.close_entry(parts.sheet_tail(filter_range))
        self._sheet_open = False
        name = _numbered_sheet_name(self._sheet_name, number)
        absolute = None
        if filter_range:
            absolute = f"$A$1:${self._last_letter}${self._sheet_rows + 1}"
        self._sheets.append(parts.SheetEntry(name, number, absolute))

    # --- rows ---------------------------------------------------------------------------------

    def _chunk_bounds(self, batch: pa.RecordBatch) -> list[tuple[int, int]]:
        n = batch.num_rows
        per_row = batch.nbytes / n + 24 * max(1, batch.num_columns)
        rows = max(1, min(_MAX_CHUNK_ROWS, int(_CHUNK_BYTES / per_row)))
        return [(start, min(rows, n - start)) for start in range(0, n, rows)]

    def _write_chunk(self, chunk: pa.RecordBatch) -> None:
        rows = self._render_rows(chunk)
        n = len(rows)
        _, offset_buffer, data = rows.buffers()
        offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, offset_buffer], 0, rows.offset)
        view = memoryview(data) if data is not None else memoryview(b"")
        done = 0
        while done < n:
            if self._sheet_open and self._sheet_rows >= self._capacity:
                self._close_sheet()
            if not self._sheet_open:
                self._open_sheet()
            take = min(n - done, self._capacity - self._sheet_rows)
            lo = offsets[done].as_py()
            if self._sheet_bytes + offsets[done + take].as_py() - lo > self._max_sheet_bytes:
                budget = self._max_sheet_bytes - self._sheet_bytes + lo
                ends = offsets.slice(done + 1, take)
                fit = int(pc.sum(pc.less_equal(ends, budget)).as_py() or 0)
                if fit == 0 and self._sheet_rows:
                    self._split_for_size()
                    continue
                take = max(fit, 1)
            hi = offsets[done + take].as_py()
            self._zip.write(view[lo:hi])
            self._sheet_bytes += hi - lo
            self._sheet_rows += take
            if len(self._sheets):
                self._moved += take
            self._rows += take
            done += take

    def _split_for_size(self) -> None:
        if self._options.row_overflow is RowOverflow.FAIL:
            raise InvalidArgument(
                "the sheet's XML would pass the 4 GiB a zip entry holds without ZIP64 "
                "(which Excel rejects), and row_overflow is FAIL",
                reason="SHEET_TOO_LARGE",
            )
        self._close_sheet()

    def _render_rows(self, chunk: pa.RecordBatch) -> pa.StringArray:
        """One ``<row>...</row>`` string per row of ``chunk``."""
        pieces: list[Any] = ["<row>"]
        sample = self._widths is None
        samples: list[float] = []
        for column, arr in zip(self._columns, chunk.columns, strict=True):
            col_pieces, shown = self._cells(column, arr)
            pieces.extend(col_pieces)
            if sample:
                samples.append(self._sample_width(column.field, shown))
        if sample:
            self._widths = samples
        pieces.append("</row>")
        merged: list[Any] = []
        for piece in pieces:
            if isinstance(piece, str) and merged and isinstance(merged[-1], str):
                merged[-1] += piece
            else:
                merged.append(piece)
        if all(isinstance(p, str) for p in merged):
            merged.append(pa.array([""] * len(chunk), pa.string()))
        args = [_lit(p) if isinstance(p, str) else p for p in merged]
        result: pa.StringArray = pc.call_function(
            "binary_join_element_wise", [*args, _EMPTY], _NULL_AS_EMPTY_CELL
        )
        return result

    def _width(self, chars: int) -> float:
        """Column width in characters for content ``chars`` display columns wide."""
        return float(min(_MAX_WIDTH, max(_MIN_WIDTH, chars + 2)))

    def _sample_width(self, field: pa.Field, shown: pa.Array | None) -> float:
        longest = 0
        if shown is not None and len(shown):
            sample = shown.slice(0, _WIDTH_SAMPLE_ROWS)
            # East Asian wide characters take two columns of a spreadsheet cell.
            lengths = pc.add(
                pc.utf8_length(sample), pc.count_substring_regex(sample, _WIDE_CHARACTERS)
            )
            longest = int(pc.max(lengths).as_py() or 0)
        fmt = self._ctx.common.number_formats.get(field.name) or self._default_format(field)
        if fmt:
            longest = max(longest, len(fmt))
        # the autofilter button takes about two characters of the header cell
        return self._width(max(longest, len(field.name) + 2))

    def _cells(self, col: _Column, arr: pa.Array) -> tuple[list[Any], pa.Array | None]:
        """The markup pieces of one column for the row join, and its text for width sampling.

        A piece is a literal string or an array; an array holding nulls is a whole cell each (the
        join writes ``<c/>`` for them), an array without nulls may sit between literal markup.
        """
        arr = _plain(arr)
        t = arr.type
        if pa.types.is_null(t):
            return ["<c/>"], None
        if pa.types.is_boolean(t):
            return self._wrap(
                col.bool_open, pc.if_else(arr, _lit("1"), _lit("0")), _NUM_CLOSE
            ), None
        if pa.types.is_integer(t):
            return self._integers(col, arr)
        if pa.types.is_floating(t):
            return self._floats(col, arr)
        if pa.types.is_decimal(t):
            return self._decimals(col, arr)
        if pa.types.is_date(t) or pa.types.is_timestamp(t):
            return self._dates(col, arr), None
        if pa.types.is_time(t):
            unit = _UNITS_PER_DAY[t.unit]
            days = pc.divide(_ticks(arr), _lit(float(unit)))
            return self._wrap(col.num_open, _cast(days, pa.string()), _NUM_CLOSE), None
        if pa.types.is_duration(t):
            unit = _UNITS_PER_DAY[t.unit]
            days = pc.divide(_ticks(arr), _lit(float(unit)))
            return self._wrap(col.num_open, _cast(days, pa.string()), _NUM_CLOSE), None
        return self._text(col, render_text(arr, timezone=self._timezone))

    @staticmethod
    def _wrap(open_: str, values: pa.Array, close: str) -> list[Any]:
        if values.null_count:
            return [pc.binary_join_element_wise(_lit(open_), values, _lit(close), _EMPTY)]
        return [open_, values, close]

    def _mixed(
        self, col: _Column, as_text: pa.Array, numbers: pa.Array, text: pa.Array
    ) -> list[Any]:
        """Cells that are numbers except where ``as_text`` holds, which are inline text."""
        num_cells = pc.binary_join_element_wise(
            _lit(col.num_open), numbers, _lit(_NUM_CLOSE), _EMPTY
        )
        # number and date text (digits, NaN, ISO dates) holds nothing to escape
        text_cells = pc.binary_join_element_wise(
            _lit(col.text_open), text, _lit(_TEXT_CLOSE), _EMPTY
        )
        return [pc.if_else(as_text, text_cells, num_cells)]

    def _integers(self, col: _Column, arr: pa.Array) -> tuple[list[Any], pa.Array]:
        digits = _cast(arr, pa.string())
        if arr.type.bit_width <= 32:  # every value is exact as a double
            return self._wrap(col.num_open, digits, _NUM_CLOSE), digits
        low, high = pc.min_max(arr).values()
        lo, hi = low.as_py(), high.as_py()
        if lo is None or (lo >= -_SAFE_INT and hi <= _SAFE_INT):
            return self._wrap(col.num_open, digits, _NUM_CLOSE), digits
        big = pc.greater(arr, pa.scalar(_SAFE_INT, arr.type))
        if pa.types.is_signed_integer(arr.type):
            big = pc.or_(big, pc.less(arr, pa.scalar(-_SAFE_INT, arr.type)))
        self._ctx.warnings.add(
            "NUMBER_AS_TEXT",
            _count(big),
            "numbers with more digits than Excel keeps were written as exact text",
        )
        return self._mixed(col, big, digits, digits), digits

    def _floats(self, col: _Column, arr: pa.Array) -> tuple[list[Any], pa.Array]:
        if arr.type == pa.float16():
            arr = _cast(arr, pa.float32())
        digits = _cast(arr, pa.string())
        # a finite sum proves every value finite; only NaN, inf or overflow need the full check
        total = pc.sum(arr).as_py()
        if total is None or math.isfinite(total):
            return self._wrap(col.num_open, digits, _NUM_CLOSE), digits
        bad = pc.invert(pc.is_finite(arr))
        if not _any(bad):
            return self._wrap(col.num_open, digits, _NUM_CLOSE), digits
        self._ctx.warnings.add(
            "NON_FINITE_AS_TEXT", _count(bad), "NaN and infinities were written as text"
        )
        positive = pc.if_else(pc.greater(arr, pa.scalar(0, arr.type)), _lit("inf"), _lit("-inf"))
        words = pc.if_else(pc.is_nan(arr), _lit("NaN"), positive)
        return self._mixed(col, bad, digits, words), digits

    def _decimals(self, col: _Column, arr: pa.Array) -> tuple[list[Any], pa.Array]:
        digits = _cast(arr, pa.string())
        if arr.type.precision <= 15:
            return self._wrap(col.num_open, digits, _NUM_CLOSE), digits
        significant = pc.utf8_trim(pc.replace_substring_regex(digits, r"E.*$|\D", ""), "0")
        wide = pc.greater(pc.utf8_length(significant), pa.scalar(15, pa.int32()))
        if not _any(wide):
            return self._wrap(col.num_open, digits, _NUM_CLOSE), digits
        self._ctx.warnings.add(
            "NUMBER_AS_TEXT",
            _count(wide),
            "numbers with more digits than Excel keeps were written as exact text",
        )
        return self._mixed(col, wide, digits, digits), digits

    def _dates(self, col: _Column, arr: pa.Array) -> list[Any]:
        t = arr.type
        if pa.types.is_date32(t):
            days = _cast(_cast(arr, pa.int32()), pa.float64())
        elif pa.types.is_date64(t):
            days = pc.divide(_ticks(arr), _lit(86_400_000.0))
        else:
            local = arr
            if t.tz is not None:
                local = pc.local_timestamp(arr.cast(pa.timestamp(t.unit, self._timezone)))
            ticks = _ticks(local)
            days = pc.divide(ticks, _lit(float(_UNITS_PER_DAY[t.unit])))
        serial = pc.add(days, _lit(float(_EXCEL_EPOCH_OFFSET)))
        low, high = (v.as_py() for v in pc.min_max(serial).values())
        if low is not None and low < 61.0:
            # Excel counts a 1900-02-29 that never was: serials before 1900-03-01 are one lower.
            early = pc.less(serial, _lit(61.0))
            serial = pc.if_else(early, pc.subtract(serial, _lit(1.0)), serial)
            low -= 1.0
        numbers = _cast(serial, pa.string())
        if low is None or (low >= _FIRST_SERIAL and high < _LAST_SERIAL):
            return self._wrap(col.num_open, numbers, _NUM_CLOSE)
        outside = pc.or_(
            pc.less(serial, _lit(float(_FIRST_SERIAL))),
            pc.greater_equal(serial, _lit(float(_LAST_SERIAL))),
        )
        self._ctx.warnings.add(
            "DATE_AS_TEXT",
            _count(outside),
            "dates before 1900 or after 9999 were written as text",
        )
        text = render_text(arr, timezone=self._timezone)
        return self._mixed(col, outside, numbers, text)

    # --- text ---------------------------------------------------------------------------------

    def _text(self, col: _Column, text: pa.Array) -> tuple[list[Any], pa.Array]:
        """Inline string cells of ``text``: one regex pass finds whether any cell needs
        character removal, escaping or preserved edge spaces; most columns need none of it."""
        if len(text) and _any(pc.match_substring_regex(text, _NEEDS_CARE)):
            text = self._truncate(self._sanitize(text))
            return self._wrap(col.text_open_preserve, self._escape(text), _TEXT_CLOSE), text
        text = self._truncate(text)
        return self._wrap(col.text_open, text, _TEXT_CLOSE), text

    def _sanitize(self, text: pa.Array) -> pa.Array:
        """Remove XML-illegal characters, counting the cells changed."""
        text, removed = sanitize_text(text)
        self._ctx.warnings.add(
            "CONTROL_CHARACTERS_REMOVED",
            removed,
            "characters not allowed in XLSX were removed from text cells",
        )
        return text

    def _truncate(self, text: pa.Array) -> pa.Array:
        """Cut cells to Excel's 32,767 UTF-16 units (never splitting a pair), counting them."""
        if len(text) == 0:
            return text
        # a cell over 32,767 UTF-16 units has more than 16,383 code points, so as many bytes
        if (pc.max(pc.binary_length(text)).as_py() or 0) <= MAX_CELL_CHARS // 2:
            return text
        lengths = pc.utf8_length(text)
        candidates = pc.greater(lengths, MAX_CELL_CHARS // 2)
        index = pc.indices_nonzero(candidates)
        cut: list[str] = []
        long_values = text.take(index).to_pylist()
        changed_at: list[int] = []
        for i, value in zip(index.to_pylist(), long_values, strict=True):
            units = value.encode("utf-16-le")
            if len(units) <= 2 * MAX_CELL_CHARS:
                continue
            head = units[: 2 * MAX_CELL_CHARS]
            if 0xD8 <= head[-1] <= 0xDB:  # a high surrogate whose pair was cut off
                head = head[:-2]
            cut.append(head.decode("utf-16-le"))
            changed_at.append(i)
        if not cut:
            return text
        self._ctx.warnings.add(
            "CELL_TRUNCATED",
            len(cut),
            f"text longer than {MAX_CELL_CHARS:,} characters was truncated",
        )
        mask = [False] * len(text)
        for i in changed_at:
            mask[i] = True
        return pc.replace_with_mask(text, pa.array(mask), pa.array(cut, pa.string()))

    @staticmethod
    def _escape(text: pa.Array) -> pa.Array:
        """Escape markup characters, and carriage returns (XML parsers turn them into newlines).
        Quotes need no escaping in element text."""
        text = pc.replace_substring(text, "&", "&amp;")
        text = pc.replace_substring(text, "<", "&lt;")
        text = pc.replace_substring(text, ">", "&gt;")
        return pc.replace_substring(text, "\r", "&#13;")
