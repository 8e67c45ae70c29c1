"""Each per-export limit, breached on a real server: its own status and reason, a message naming
the limit, the slot and temp files freed, and the next export served."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pyarrow as pa
import pytest
from exportd.client import (
    DeadlineExceededError,
    ExportClient,
    ExportdError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from exportd.server.config import ExportLimits
from support import ServerFactory, reference_table, wait_for


@pytest.mark.parametrize(
    ("limits", "data", "error", "reason"),
    [
        (
            ExportLimits(max_rows=1_000),
            reference_table(5_000),
            ResourceExhaustedError,
            "TOO_MANY_ROWS",
        ),
        (
            ExportLimits(max_bytes_received=100_000),
            reference_table(5_000),
            ResourceExhaustedError,
            "UPLOAD_TOO_LARGE",
        ),
        (
            ExportLimits(max_columns=10),
            pa.table({f"c{i}": [i] for i in range(11)}),
            InvalidArgumentError,
            "TOO_MANY_COLUMNS",
        ),
    ],
    ids=["rows", "bytes", "columns"],
)
def test_limit_breach(
    make_server: ServerFactory,
    limits: ExportLimits,
    data: pa.Table,
    error: type[ExportdError],
    reason: str,
) -> None:
    server = make_server(limits=limits)
    with ExportClient(server.target) as client:
        with pytest.raises(error) as info:
            client.export(data.to_reader(max_chunksize=500), "csv", delivery="handle")
        assert info.value.reason == reason
        assert any(ch.isdigit() for ch in info.value.message)  # the limit is named
        wait_for(lambda: server.governor.running == 0)
        assert list(server.artifacts.tmp_dir.iterdir()) == []
        assert client.export(pa.table({"a": [1]}), "csv").rows == 1


def test_client_that_stops_sending_hits_the_data_timeout(make_server: ServerFactory) -> None:
    server = make_server(limits=ExportLimits(data_timeout=0.5))
    never = threading.Event()

    def stalls() -> Iterator[pa.RecordBatch]:
        yield reference_table(10).to_batches()[0]
        never.wait(10)

    with ExportClient(server.target) as client:
        with pytest.raises(DeadlineExceededError) as info:
            client.export(stalls(), "csv")
        never.set()
        assert info.value.reason == "DATA_TIMEOUT"
        wait_for(lambda: server.governor.running == 0)
        assert client.export(pa.table({"a": [1]}), "csv").rows == 1
