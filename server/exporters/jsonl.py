"""JSON Lines: one strict JSON object per row, streamed batch by batch.

What a caller may rely on (values as ``_text.json_values`` documents):

- Each line is ``{"column": value, ...}`` in schema order, ended by ``\\n``, UTF-8, with no
  NaN or Infinity literals: a non-finite float becomes ``null`` and is counted in the export's
  warnings under ``NON_FINITE_AS_NULL``.
- 64-bit integers and decimals are written exactly as JSON numbers (``-9223372036854775808``,
  ``12345678901234567890``, ``1.50``); a reader that wants them exact must parse numbers
  exactly (Python's ``json`` does for integers; pass ``parse_float=Decimal`` for decimals).
- Timestamps are ISO 8601 strings: zoned ones in ``CommonOptions.timezone`` with the offset
  (``2024-03-01T10:00:00.000000+01:00``), naive ones without. Dates ``YYYY-MM-DD``, times
  ``HH:MM:SS[.fraction]``, durations a number of seconds, binary a base64 string, lists arrays,
  structs and maps objects.
- Optional gzip or zstd compress the whole stream as it is written. The sink is flushed after
  every batch and never closed.

Every line is built with ``pyarrow.compute`` over whole columns; no per-row Python except for
binary (base64) values.
"""

from __future__ import annotations

import contextlib
import json

import pyarrow as pa
import pyarrow.compute as pc

from ._base import EncoderContext
from ._text import json_values
from .delimited import ByteStream, string_bytes
from .options import JsonLinesOptions

__all__ = ["JsonLinesEncoder"]

_SLICE_ROWS = 1 << 16


class JsonLinesEncoder:
    """One JSON Lines file of ``schema``-shaped rows."""

    def __init__(self, schema: pa.Schema, options: JsonLinesOptions, ctx: EncoderContext) -> None:
        self._ctx = ctx
        self._timezone = ctx.common.timezone
        self._out = ByteStream(ctx.sink, options.compression)
        self._keys = [json.dumps(name, ensure_ascii=False) + ":" for name in schema.names]

    def write(self, batch: pa.RecordBatch) -> None:
        """Encode one batch and flush it to the sink."""
        for start in range(0, batch.num_rows, _SLICE_ROWS):
            self._write_slice(batch.slice(start, _SLICE_ROWS))
        self._out.flush()

    def finish(self) -> None:
        """End compression and flush; the sink stays open."""
        self._out.close()

    def abort(self) -> None:
        """Drop the compressor's state; what was written stays in the sink for the caller."""
        # the export already failed; a second error would hide the first
        with contextlib.suppress(Exception):
            self._out.close()

    def _write_slice(self, batch: pa.RecordBatch) -> None:
        if not self._keys:
            self._out.write(b"{}\n" * batch.num_rows)
            return
        parts: list[object] = []
        non_finite = 0
        for i, column in enumerate(batch.columns):
            values, bad = json_values(column, timezone=self._timezone)
            non_finite += bad
            parts.append(("{" if i == 0 else ",") + self._keys[i])
            parts.append(values)
        parts.append("}\n")
        lines = pc.binary_join_element_wise(*parts, "")
        if non_finite:
            self._ctx.warnings.add(
                "NON_FINITE_AS_NULL",
                non_finite,
                "NaN and infinite floats were written as null; JSON has no literal for them",
            )
        self._out.write(string_bytes(lines))
