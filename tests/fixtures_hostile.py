"""A table built to break exporters: every Arrow type exportd documents, and the values that
trip up spreadsheets, text formats and JSON. Shared by the tests of every format."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa

INJECTIONS = ["=1+1", "+cmd", "-2", "@SUM(A1)", "\tx", "\rx", "#N/A"]
"""Strings a spreadsheet would run as formulas or show as errors, in rows 0..6 of ``text``."""

LONG_CELL = "x" * 39_990 + "0123456789"
"""A 40,000-character cell, in row 8 of ``text``."""

SCRIPTS = "Grüße 東京 مرحبا Москва Ελλάδα שלום 😀🚀"
"""Latin, CJK, Arabic, Cyrillic, Greek, Hebrew and emoji in one cell, row 7 of ``text``."""

DECIMAL_20 = Decimal("12345678901234567890")
"""A 20-digit decimal, more than a float64 holds exactly."""

ROWS = 10


def hostile_table() -> pa.Table:
    """Ten rows; the last row is null in every column, and every column has at least one null.

    Row 0 holds the extremes (int64 min, NaN, 1900 dates), row 1 the other extremes (int64 max,
    +inf), row 2 -inf; ``text`` holds the injections, the scripts and the long cell.
    """
    n = ROWS
    text = [
        *INJECTIONS,
        SCRIPTS,
        LONG_CELL,
        None,
    ]
    controls: list[str | None] = [
        "a\x00b",
        "bell\x07",
        "vt\x0bff\x0c",
        "esc\x1b[0m",
        "tab\tnl\nrc\r",
        "\ufffe",
        "ok",
    ]
    controls += [None] * (n - len(controls))
    utc = dt.UTC
    columns: dict[str, pa.Array] = {
        "text": pa.array(text, pa.string()),
        "controls": pa.array(controls, pa.string()),
        "large_text": pa.array(
            ["plain", "a,b", 'say "hi"', "line\nbreak", "", " lead", "trail ", "Ω", "∑", None],
            pa.large_string(),
        ),
        "int64": pa.array(
            [-(2**63), 2**63 - 1, 0, -1, 2**53 + 1, -(2**53) - 1, 42, 7, 9, None], pa.int64()
        ),
        "int8": pa.array([-128, 127, 0, 1, -1, 2, 3, 4, 5, None], pa.int8()),
        "uint64": pa.array([0, 2**64 - 1, 1, 2, 3, 4, 5, 6, 7, None], pa.uint64()),
        "float64": pa.array(
            [float("nan"), float("inf"), float("-inf"), 0.1, -0.0, 1e300, 5e-324, 1 / 3, 2.5, None],
            pa.float64(),
        ),
        "float32": pa.array(
            [0.1, 1.5, float("nan"), -2.25, 0.0, 3.0, 1e10, 7.0, 8.0, None], pa.float32()
        ),
        "decimal": pa.array(
            [DECIMAL_20, -DECIMAL_20, Decimal(0), Decimal(1), Decimal(-1)]
            + [Decimal(99)] * 4
            + [None],
            pa.decimal128(38, 0),
        ),
        "decimal_scaled": pa.array(
            [Decimal("1234567890123456789.01"), Decimal("-0.50"), Decimal("0.00")]
            + [Decimal("1.10")] * 6
            + [None],
            pa.decimal128(22, 2),
        ),
        "bool": pa.array([True, False, True, False, True, False, True, False, True, None]),
        "date": pa.array(
            [dt.date(1900, 1, 1), dt.date(1899, 12, 31), dt.date(2024, 2, 29)]
            + [dt.date(2000, 1, 1)] * 6
            + [None],
            pa.date32(),
        ),
        "ts_naive": pa.array(
            [dt.datetime(1900, 1, 1), dt.datetime(2024, 3, 1, 10, 0, 0, 123456)]
            + [dt.datetime(2024, 12, 31, 23, 59, 59)] * 7
            + [None],
            pa.timestamp("us"),
        ),
        "ts_utc": pa.array(
            [dt.datetime(2024, 3, 1, 9, tzinfo=utc), dt.datetime(1900, 1, 1, tzinfo=utc)]
            + [dt.datetime(2024, 7, 1, 12, tzinfo=utc)] * 7
            + [None],
            pa.timestamp("ms", tz="UTC"),
        ),
        "ts_zoned": pa.array(
            [dt.datetime(2024, 3, 1, 9, tzinfo=utc)] * 9 + [None],
            pa.timestamp("us", tz="America/New_York"),
        ),
        "time": pa.array(
            [dt.time(0, 0), dt.time(23, 59, 59, 999999)] + [dt.time(12, 30)] * 7 + [None],
            pa.time64("us"),
        ),
        "duration": pa.array([0, 1_500, -2_000, 86_400_000] + [1] * 5 + [None], pa.duration("ms")),
        "binary": pa.array(
            [b"\x00\xff", b"", b"\xfb\xef", b"hello"] + [b"x"] * 5 + [None], pa.binary()
        ),
        "dict": pa.array(
            ["red", "=red", "blue", "red", "green", "blue", "red", "red", "blue", None]
        ).dictionary_encode(),
        "list": pa.array(
            [[1, 2, None], [], [2**63 - 1]] + [[0]] * 6 + [None], pa.list_(pa.int64())
        ),
        "struct": pa.array(
            [{"name": "東京", "score": 1.5}, {"name": 'q"uote\n', "score": None}]
            + [{"name": "x", "score": 0.0}] * 7
            + [None],
            pa.struct([("name", pa.string()), ("score", pa.float64())]),
        ),
        "map": pa.array(
            [[("a", 1), ("b", None)], []] + [[("k", 2)]] * 7 + [None],
            pa.map_(pa.string(), pa.int64()),
        ),
    }
    return pa.table(columns)
