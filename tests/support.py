"""Test data and types shared by the test modules (imported as ``support``)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pyarrow as pa
from exportd.server.app import RunningServer

ServerFactory = Callable[..., RunningServer]


def reference_table(n: int, *, start: int = 1) -> pa.Table:
    """PERF.md's reference table: the eight kinds of column every export carries."""
    ids = pa.array(range(start, start + n), pa.int64())
    words = ["Zürich", "Москва", "Acme", "Zoë & Co", "東京", "Oslo", "Lima <x>", "O'Neil"]
    base = dt.datetime(2024, 1, 1, 8, 30)
    return pa.table(
        {
            "order_id": ids,
            "customer": pa.array([words[i % len(words)] for i in range(n)]),
            "amount": pa.array(
                [round((i * 37 % 100_000) / 100, 2) for i in range(n)], pa.float64()
            ),
            "qty": pa.array([i % 50 for i in range(n)], pa.int32()),
            "paid": pa.array([i % 3 == 0 for i in range(n)]),
            "placed_at": pa.array(
                [base + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("us")
            ),
            "note": pa.array([f"note {i:06d} for the order" for i in range(n)]),
            "ratio": pa.array([i / 7 for i in range(n)], pa.float64()),
        }
    )


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")
