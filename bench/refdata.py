"""PERF.md's reference table, built column-wise with pyarrow.compute.

The values equal ``tests/support.py``'s ``reference_table`` row for row (``run.py --quick``
checks this on a slice), but millions of rows take seconds rather than minutes because no
Python object is made per cell.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc

WORDS = ["Zürich", "Москва", "Acme", "Zoë & Co", "東京", "Oslo", "Lima <x>", "O'Neil"]
BATCH_ROWS = 65_536
_BASE_US = 1_704_097_800_000_000  # 2024-01-01 08:30:00 as microseconds since the epoch
_MINUTE_US = 60_000_000


def _mod(values: pa.Array, k: int) -> pa.Array:
    return pc.subtract(values, pc.multiply(pc.divide(values, k), k))


def reference_batch(first: int, n: int) -> pa.RecordBatch:
    """Rows ``first`` .. ``first + n - 1`` (0-based) of the reference table."""
    i = pa.array(range(first, first + n), pa.int64())
    amount = pc.divide(pc.cast(_mod(pc.multiply(i, 37), 100_000), pa.float64()), 100.0)
    note = pc.binary_join_element_wise(
        "note ", pc.utf8_lpad(pc.cast(i, pa.string()), 6, "0"), " for the order", ""
    )
    placed = pc.cast(pc.add(pc.multiply(i, _MINUTE_US), _BASE_US), pa.timestamp("us"))
    return pa.record_batch(
        {
            "order_id": pc.add(i, 1),
            "customer": pc.take(pa.array(WORDS), _mod(i, len(WORDS))),
            "amount": amount,
            "qty": pc.cast(_mod(i, 50), pa.int32()),
            "paid": pc.equal(_mod(i, 3), 0),
            "placed_at": placed,
            "note": note,
            "ratio": pc.divide(pc.cast(i, pa.float64()), 7.0),
        }
    )


def reference_batches(n: int, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The reference table of ``n`` rows as a stream of batches, never all in memory."""
    for first in range(0, n, batch_rows):
        yield reference_batch(first, min(batch_rows, n - first))


def reference_table(n: int, batch_rows: int = BATCH_ROWS) -> pa.Table:
    """The reference table of ``n`` rows, in batches of ``batch_rows``."""
    return pa.Table.from_batches(list(reference_batches(n, batch_rows)))
