"""Parquet and Arrow IPC file, streamed batch by batch through pyarrow.

Both keep the schema exactly: every type, time zone, dictionary encoding, list field name and
field metadata reads back as it was sent (Parquet stores the Arrow schema beside its own). One
exception belongs to Parquet itself: it has no second unit, so ``timestamp[s]`` and ``time32[s]``
come back in milliseconds (same instants), and pyarrow's reader names a map's entries field after
the column (map types still compare equal). The Arrow IPC file keeps everything bit for bit.

Streaming: the Arrow file writes each batch as it arrives. Parquet gathers batches into one row
group of up to ``row_group_size`` rows, but never more than 64 MiB of Arrow data, and writes it
out as soon as it is full, so memory stays bounded by one row group whatever the table's size.
The sink is flushed after every write and never closed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from ..errors import InvalidArgument
from ._base import EncoderContext
from .options import ArrowOptions, ParquetOptions

__all__ = ["ArrowEncoder", "ParquetEncoder"]

_PARQUET_CODECS = {"none", "snappy", "gzip", "brotli", "lz4", "zstd"}
_ARROW_CODECS = {"lz4", "zstd"}
_ROW_GROUP_BYTES = 64 << 20


class _Unclosed:
    """The sink as pyarrow sees it: writes and flushes pass through, close only flushes, so the
    writer can end its file without closing a sink the encoder does not own."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink
        self.closed = False

    def write(self, data: Any) -> int:
        self._sink.write(data)
        return memoryview(data).nbytes

    def flush(self) -> None:
        self._sink.flush()

    def close(self) -> None:
        self.closed = True
        self._sink.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class ParquetEncoder:
    """One Parquet file; ``compression`` is a pyarrow codec name or "none" (default zstd)."""

    def __init__(self, schema: pa.Schema, options: ParquetOptions, ctx: EncoderContext) -> None:
        codec = (options.compression or "zstd").lower()
        if codec not in _PARQUET_CODECS:
            raise InvalidArgument(
                f"unknown Parquet compression {options.compression!r}; "
                f"one of {sorted(_PARQUET_CODECS)}",
                reason="INVALID_PARQUET_COMPRESSION",
            )
        if options.row_group_size <= 0:
            raise InvalidArgument(
                f"row_group_size must be positive, got {options.row_group_size}",
                reason="INVALID_ROW_GROUP_SIZE",
            )
        self._sink = ctx.sink
        self._row_group_size = options.row_group_size
        self._writer = pq.ParquetWriter(
            pa.PythonFile(_Unclosed(ctx.sink), mode="w"),
            schema,
            compression=codec,
            store_schema=True,
            use_compliant_nested_type=False,
        )
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        """Add one batch; full row groups are written out at once."""
        if batch.num_rows == 0:
            return
        self._pending.append(batch)
        self._pending_rows += batch.num_rows
        self._pending_bytes += batch.nbytes
        if self._pending_rows >= self._row_group_size or self._pending_bytes >= _ROW_GROUP_BYTES:
            self._flush_row_groups()

    def finish(self) -> None:
        """Write what is pending and the footer; the sink stays open."""
        self._flush_row_groups()
        self._writer.close()
        self._sink.flush()

    def _flush_row_groups(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending)
        self._pending = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self._writer.write_table(table, row_group_size=self._row_group_size)
        self._sink.flush()

    def abort(self) -> None:
        """Release the writer after a failure; the partial file is the caller's to discard."""
        # the export already failed; a second error would hide the first
        with contextlib.suppress(Exception):
            self._writer.close()


class ArrowEncoder:
    """One Arrow IPC file (Feather v2); ``compression`` is None, "lz4" or "zstd"."""

    def __init__(self, schema: pa.Schema, options: ArrowOptions, ctx: EncoderContext) -> None:
        codec = options.compression.lower() if options.compression else None
        if codec in ("", "none"):
            codec = None
        if codec is not None and codec not in _ARROW_CODECS:
            raise InvalidArgument(
                f"unknown Arrow IPC compression {options.compression!r}; lz4, zstd or none",
                reason="INVALID_ARROW_COMPRESSION",
            )
        if codec == "lz4":
            codec = "lz4_frame"
        self._sink = ctx.sink
        self._writer = ipc.new_file(
            pa.PythonFile(_Unclosed(ctx.sink), mode="w"),
            schema,
            options=ipc.IpcWriteOptions(compression=codec),
        )

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch as one record batch of the file."""
        self._writer.write_batch(batch)
        self._sink.flush()

    def finish(self) -> None:
        """Write the footer; the sink stays open."""
        self._writer.close()
        self._sink.flush()

    def abort(self) -> None:
        """Release the writer after a failure; the partial file is the caller's to discard."""
        # the export already failed; a second error would hide the first
        with contextlib.suppress(Exception):
            self._writer.close()
