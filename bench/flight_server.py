"""A loopback pyarrow.flight server: the transport baseline for downloads and uploads.

Run as its own process (``python bench/flight_server.py``); it prints ``flight listening on
PORT`` and serves until killed.

- DoGet, ticket = a file path: streams the file's bytes as record batches of one binary column,
  one chunk of ``CHUNK`` bytes per batch — the same bytes ReadArtifact sends.
- DoPut: reads every batch of the uploaded stream and answers with the row count and the Arrow
  bytes received (as ``rows bytes`` in the metadata), keeping nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl

CHUNK = 1 << 20
SCHEMA = pa.schema([("chunk", pa.binary())])


def _file_batches(path: str) -> Iterator[pa.RecordBatch]:
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            yield pa.record_batch([pa.array([block], pa.binary())], schema=SCHEMA)


class BenchFlight(fl.FlightServerBase):  # type: ignore[misc]
    def do_get(self, context: Any, ticket: fl.Ticket) -> fl.GeneratorStream:
        return fl.GeneratorStream(SCHEMA, _file_batches(ticket.ticket.decode()))

    def do_put(
        self,
        context: Any,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.FlightMetadataWriter,
    ) -> None:
        rows = 0
        size = 0
        for chunk in reader:
            rows += chunk.data.num_rows
            size += chunk.data.nbytes
        writer.write(pa.py_buffer(f"{rows} {size}".encode()))


def main() -> None:
    server = BenchFlight("grpc://127.0.0.1:0")
    print(f"flight listening on {server.port}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
