"""CSV and TSV, streamed batch by batch.

What a caller may rely on:

- Values read as ``_text.render_text`` documents; nulls are ``CommonOptions.null_text`` (never
  quoted, so an empty null and a quoted empty string stay apart under MINIMAL and ALL quoting).
- Quoting MINIMAL quotes fields that may need it (with the default ``"`` quote: every text field
  and any field containing the delimiter, quote or a line break; with another quote character:
  exactly the fields containing one of those, plus empty text). ALL quotes every non-null field.
  NONE never quotes, and a field that would need quoting fails the export with InvalidArgument
  (reason ``CSV_NEEDS_QUOTING``), as the contract says. A quote inside a field is doubled.
- The formula-injection guard (on by default) prefixes ``'`` to every text cell, and header name,
  that starts with ``=``, ``+``, ``-``, ``@``, tab or carriage return (OWASP CSV injection).
  Text cells are strings, binary (base64 can start with ``+``) and dictionary-encoded text;
  numbers, dates, times, timestamps, durations and booleans are never altered.
- The optional UTF-8 byte order mark comes first; gzip or zstd compress the whole stream as it
  is written (one gzip member / zstd frame), never buffering the file.
- The encoder writes to ``ctx.sink`` and flushes after every batch; it never closes the sink.

Speed: with the default quote character the batch goes to ``pyarrow.csv.write_csv`` with only the
columns that need it converted (text under the guard, floats holding NaN, zoned timestamps,
durations, binary, nested); everything else stays native because pyarrow already writes exactly
the documented text. Another quote character takes a vectorised path that builds each line with
``pyarrow.compute``.
"""

from __future__ import annotations

import contextlib
import io
import zlib
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import InvalidArgument
from ._base import EncoderContext
from ._text import render_text
from .options import Compression, CsvOptions, Quoting

__all__ = ["DelimitedEncoder"]

_GUARD_FIRST = pa.array(["=", "+", "-", "@", "\t", "\r"], pa.string())
_PYARROW_QUOTING = {Quoting.MINIMAL: "needed", Quoting.ALL: "all_valid", Quoting.NONE: "none"}


class _KeepOpen(io.RawIOBase):
    """Hands writes through to a sink but ignores close, so a compressor can finish its stream
    without closing a sink the encoder does not own."""

    def __init__(self, sink: Any) -> None:
        super().__init__()
        self._sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sink.write(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        self._sink.flush()


class ByteStream:
    """The bytes of one text file going to ``sink``: optionally compressed, never closing it.

    gzip uses zlib at level 1 (pyarrow's gzip stream is fixed at a slow level; level 1 is about
    20 times faster for a few percent more bytes); zstd uses pyarrow's stream at its default level.
    Both compress as data arrives and release the GIL while doing it.
    """

    def __init__(self, sink: Any, compression: Compression) -> None:
        self._sink = sink
        self._gzip: Any = None
        self._zstd: Any = None
        if compression is Compression.GZIP:
            self._gzip = zlib.compressobj(1, zlib.DEFLATED, 31)
        elif compression is Compression.ZSTD:
            raw = pa.PythonFile(_KeepOpen(sink), mode="w")
            self._zstd = pa.CompressedOutputStream(raw, "zstd")

    def write(self, data: Any) -> None:
        if self._gzip is not None:
            out = self._gzip.compress(data)
            if out:
                self._sink.write(out)
        elif self._zstd is not None:
            self._zstd.write(data)
        else:
            self._sink.write(data)

    def flush(self) -> None:
        if self._zstd is not None:
            self._zstd.flush()
        self._sink.flush()

    def close(self) -> None:
        """End the compressed stream (if any) and flush the sink, which stays open."""
        if self._gzip is not None:
            self._sink.write(self._gzip.flush())
            self._gzip = None
        if self._zstd is not None:
            self._zstd.close()
            self._zstd = None
        self._sink.flush()


def _check_options(options: CsvOptions) -> None:
    if len(options.delimiter) != 1 or options.delimiter in "\r\n":
        raise InvalidArgument(
            f"CSV delimiter must be one character other than a line break, got "
            f"{options.delimiter!r}",
            reason="INVALID_CSV_DELIMITER",
        )
    if len(options.quote) != 1 or options.quote in "\r\n" or options.quote == options.delimiter:
        raise InvalidArgument(
            f"CSV quote must be one character, not a line break nor the delimiter, got "
            f"{options.quote!r}",
            reason="INVALID_CSV_QUOTE",
        )
    if options.line_terminator not in ("\n", "\r\n"):
        raise InvalidArgument(
            f'CSV line terminator must be "\\n" or "\\r\\n", got {options.line_terminator!r}',
            reason="INVALID_LINE_TERMINATOR",
        )


def _is_text_like(t: pa.DataType) -> bool:
    """Whether a column's cells are text to a spreadsheet (and so subject to the guard)."""
    if pa.types.is_dictionary(t):
        return _is_text_like(t.value_type)
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _is_native(t: pa.DataType) -> bool:
    """Types pyarrow's CSV writer already renders exactly as ``render_text`` documents."""
    return bool(
        pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_string(t)
        or (pa.types.is_timestamp(t) and t.tz is None)
    )


def guard_formulas(text: pa.Array) -> pa.Array:
    """Prefix ``'`` to every cell starting with = + - @ tab or CR; nulls stay nulls."""
    if len(text) == 0:
        return text
    hits = pc.is_in(pc.utf8_slice_codeunits(text, 0, 1), value_set=_GUARD_FIRST)
    if not pc.any(hits).as_py():
        return text
    return pc.if_else(hits, pc.binary_join_element_wise("'", text, ""), text)


class DelimitedEncoder:
    """CSV or TSV per ``CsvOptions`` (TSV is CSV with a tab delimiter, filled in by the caller)."""

    def __init__(self, schema: pa.Schema, options: CsvOptions, ctx: EncoderContext) -> None:
        _check_options(options)
        self._schema = schema
        self._options = options
        self._ctx = ctx
        self._timezone = ctx.common.timezone
        self._null_text = ctx.common.null_text
        self._out = ByteStream(ctx.sink, options.compression)
        self._native_quote = options.quote == '"'
        self._started = False
        self._finished = False
        self._text_like = [_is_text_like(f.type) for f in schema]
        self._write_options = pacsv.WriteOptions(
            include_header=False,
            delimiter=options.delimiter,
            quoting_style=_PYARROW_QUOTING[options.quoting],
            quoting_header=_PYARROW_QUOTING[options.quoting],
            null_string=self._null_text,
            eol=options.line_terminator,
            batch_size=max(1024, 1 << 14),
        )

    # -- Encoder -----------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        """Encode one batch and flush it to the sink."""
        self._start()
        if batch.num_rows == 0:
            return
        if self._native_quote:
            self._write_native(batch)
        else:
            self._write_vectorised(batch)
        self._out.flush()

    def finish(self) -> None:
        """Write the header when no batch came, end compression, flush. The sink stays open."""
        self._start()
        self._finished = True
        self._out.close()

    def abort(self) -> None:
        """Drop the compressor's state; what was written stays in the sink for the caller."""
        self._finished = True
        # the export already failed; a second error would hide the first
        with contextlib.suppress(Exception):
            self._out.close()

    # -- internals ---------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._options.bom:
            self._out.write("\ufeff".encode())
        if self._options.header:
            names = pa.array([f.name for f in self._schema], pa.string())
            if self._options.formula_guard:
                names = guard_formulas(names)
            self._write_header(names.to_pylist())

    def _write_header(self, names: list[str]) -> None:
        if self._native_quote:
            empty = pa.table({str(i): pa.array([], pa.string()) for i in range(len(names))})
            empty = empty.rename_columns(names)
            buf = pa.BufferOutputStream()
            options = pacsv.WriteOptions(
                include_header=True,
                delimiter=self._options.delimiter,
                quoting_header=_PYARROW_QUOTING[self._options.quoting],
                eol=self._options.line_terminator,
            )
            self._pyarrow_csv(empty, buf, options)
            self._out.write(buf.getvalue())
        else:
            cells = self._quote(pa.array(names, pa.string()), text=True)
            line = self._options.delimiter.join(cells.to_pylist()) + self._options.line_terminator
            self._out.write(line.encode())
        self._out.flush()

    def _pyarrow_csv(self, data: pa.Table | pa.RecordBatch, buf: Any, options: Any) -> None:
        try:
            pacsv.write_csv(data, buf, options)
        except pa.ArrowInvalid as exc:
            if self._options.quoting is Quoting.NONE:
                raise InvalidArgument(
                    f"a value needs quoting but quoting is NONE: {exc}",
                    reason="CSV_NEEDS_QUOTING",
                ) from exc
            raise

    def _write_native(self, batch: pa.RecordBatch) -> None:
        columns = []
        for i, column in enumerate(batch.columns):
            t = column.type
            if self._text_like[i]:
                text = render_text(column, timezone=self._timezone)
                columns.append(guard_formulas(text) if self._options.formula_guard else text)
            elif pa.types.is_floating(t) and t != pa.float16():
                if column.null_count < len(column) and pc.any(pc.is_nan(column)).as_py():
                    columns.append(render_text(column))
                else:
                    columns.append(column)
            elif _is_native(t):
                columns.append(column)
            else:
                columns.append(render_text(column, timezone=self._timezone))
        converted = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
        buf = pa.BufferOutputStream()
        self._pyarrow_csv(converted, buf, self._write_options)
        self._out.write(buf.getvalue())

    def _write_vectorised(self, batch: pa.RecordBatch) -> None:
        cells = []
        for i, column in enumerate(batch.columns):
            text = render_text(column, timezone=self._timezone)
            if self._text_like[i] and self._options.formula_guard:
                text = guard_formulas(text)
            cells.append(self._quote(text, text=self._text_like[i]))
        terminator = self._options.line_terminator
        if cells:
            row = pc.binary_join_element_wise(*cells, self._options.delimiter)
            lines = pc.binary_join_element_wise(row, terminator, "")
        else:
            lines = pa.array([terminator] * batch.num_rows, pa.string())
        self._out.write(string_bytes(lines))

    def _quote(self, values: pa.Array, *, text: bool) -> pa.Array:
        """Quote (doubling inner quotes) the fields the quoting style asks for; nulls become
        ``null_text`` unquoted."""
        quote = self._options.quote
        special = "".join(
            f"\\x{{{ord(c):X}}}" for c in (self._options.delimiter, quote, "\r", "\n")
        )
        pattern = f"[{special}]"
        quoting = self._options.quoting
        if quoting is Quoting.NONE:
            if len(values) and pc.any(pc.match_substring_regex(values, pattern)).as_py():
                raise InvalidArgument(
                    "a value contains the delimiter, the quote or a line break, "
                    "but quoting is NONE",
                    reason="CSV_NEEDS_QUOTING",
                )
            return pc.fill_null(values, self._null_text)
        if quoting is Quoting.ALL:
            need = values.is_valid()
        else:
            need = pc.match_substring_regex(values, pattern)
            if text:
                need = pc.or_(need, pc.equal(pc.utf8_length(values), 0))
        if len(values) and pc.any(need).as_py():
            escaped = pc.replace_substring(values, quote, quote + quote)
            values = pc.if_else(
                need, pc.binary_join_element_wise(quote, escaped, quote, ""), values
            )
        return pc.fill_null(values, self._null_text)


def string_bytes(lines: pa.Array) -> pa.Buffer:
    """The concatenated UTF-8 bytes of a null-free string array, without copying."""
    buffers = lines.buffers()
    offsets = pa.Array.from_buffers(pa.int32(), len(lines) + 1, [None, buffers[1]], 0, lines.offset)
    start = offsets[0].as_py()
    end = offsets[len(lines)].as_py()
    return buffers[2].slice(start, end - start)
