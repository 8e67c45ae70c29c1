"""The documented text and JSON rendering of every Arrow type, checked against Python's own
parsers (float, Decimal, datetime, base64, json) rather than stored strings."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from exportd.server.errors import InvalidArgument
from exportd.server.exporters._text import json_values, render_text, sanitize_text
from fixtures_hostile import hostile_table

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _reject(token: str) -> Any:
    raise ValueError(f"non-strict JSON literal {token}")


def _pairs(col: pa.Array, **kwargs: Any) -> list[tuple[Any, Any]]:
    return list(zip(col.to_pylist(), render_text(col, **kwargs).to_pylist(), strict=True))


def test_every_hostile_column_renders_to_strings_of_the_same_length() -> None:
    table = hostile_table()
    for name in table.column_names:
        out = render_text(table[name], null_text="∅")
        assert out.type == pa.string(), name
        assert len(out) == table.num_rows, name
        assert out.null_count == 0, name
        assert out[table.num_rows - 1].as_py() == "∅", name


def test_nulls_stay_null_without_null_text() -> None:
    col = hostile_table()["int64"]
    out = render_text(col)
    assert out.null_count == col.null_count


def test_integers_are_exact() -> None:
    table = hostile_table()
    for name in ("int64", "int8", "uint64"):
        for value, text in _pairs(table[name]):
            assert (value is None and text is None) or int(text) == value


def test_floats_round_trip_and_non_finite_are_named() -> None:
    for name in ("float64", "float32"):
        col = hostile_table()[name]
        for value, text in _pairs(col):
            if value is None:
                assert text is None
            elif math.isnan(value):
                assert text == "NaN"
            elif math.isinf(value):
                assert text == ("inf" if value > 0 else "-inf")
            else:
                back = pa.array([float(text)], pa.float64()).cast(col.type).to_pylist()[0]
                assert back == value, (name, value, text)


def test_decimals_are_exact() -> None:
    table = hostile_table()
    for name in ("decimal", "decimal_scaled"):
        for value, text in _pairs(table[name]):
            assert (value is None and text is None) or Decimal(text) == value
    texts = render_text(table["decimal"]).to_pylist()
    assert "12345678901234567890" in texts


def test_booleans_dates_and_times() -> None:
    table = hostile_table()
    for value, text in _pairs(table["bool"]):
        assert value is None or text == ("true" if value else "false")
    for value, text in _pairs(table["date"]):
        assert value is None or dt.date.fromisoformat(text) == value
    for value, text in _pairs(table["time"]):
        assert value is None or dt.time.fromisoformat(text) == value


def test_naive_timestamps_stay_naive() -> None:
    for value, text in _pairs(hostile_table()["ts_naive"], timezone="Asia/Tokyo"):
        if value is None:
            continue
        parsed = dt.datetime.fromisoformat(text)
        assert parsed.tzinfo is None
        assert parsed == value
        assert text[10] == " "


@pytest.mark.parametrize(
    "zone", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Europe/Dublin"]
)
def test_zoned_timestamps_are_shown_in_the_chosen_zone_with_offset(zone: str) -> None:
    table = hostile_table()
    for name in ("ts_utc", "ts_zoned"):
        for value, text in _pairs(table[name], timezone=zone):
            if value is None:
                continue
            parsed = dt.datetime.fromisoformat(text)
            expected = value.astimezone(ZoneInfo(zone))
            assert parsed == value
            assert parsed.utcoffset() == expected.utcoffset()
            assert parsed.replace(tzinfo=None) == expected.replace(tzinfo=None)


def test_unknown_time_zone_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as err:
        render_text(hostile_table()["ts_utc"], timezone="Mars/Olympus_Mons")
    assert err.value.reason == "UNKNOWN_TIMEZONE"


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_durations_are_exact_seconds(unit: str) -> None:
    raw = [0, 1, -1, 90_500, -(2**63), 2**63 - 1, None]
    col = pa.array(raw, pa.duration(unit))
    scale = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}[unit]
    for count, text in zip(raw, render_text(col).to_pylist(), strict=True):
        assert (count is None and text is None) or Decimal(text) * scale == count


def test_binary_is_base64() -> None:
    for kind in (pa.binary(), pa.large_binary()):
        col = hostile_table()["binary"].cast(kind)
        for value, text in _pairs(col):
            assert value is None or base64.b64decode(text, validate=True) == value
    fixed = pa.array([b"ab", None, b"\xff\x00"], pa.binary(2))
    for value, text in _pairs(fixed):
        assert value is None or base64.b64decode(text, validate=True) == value


def test_strings_unchanged_and_dictionaries_decoded() -> None:
    table = hostile_table()
    for name in ("text", "controls", "large_text"):
        assert render_text(table[name]).to_pylist() == table[name].to_pylist()
    assert render_text(table["dict"]).to_pylist() == table["dict"].to_pylist()
    ints = pa.array([5, None, 7, 5]).dictionary_encode()
    assert render_text(ints).to_pylist() == ["5", None, "7", "5"]


def test_nested_values_are_compact_json() -> None:
    table = hostile_table()
    for name in ("list", "struct"):
        for value, text in _pairs(table[name]):
            if value is None:
                assert text is None
                continue
            assert json.loads(text, parse_constant=_reject) == value
            assert ", " not in text and ": " not in text
    for value, text in _pairs(table["map"]):
        assert value is None or json.loads(text) == dict(value)


def test_nested_rendering_respects_slices() -> None:
    table = hostile_table()
    for name in ("list", "struct", "map"):
        whole = render_text(table[name])
        for start in (1, 3):
            part = render_text(table[name].combine_chunks().slice(start, 4))
            assert part.to_pylist() == whole.slice(start, 4).to_pylist()


def test_nested_nan_inside_json_becomes_null() -> None:
    col = pa.array([[1.5, float("nan"), float("inf")]])
    assert json.loads(render_text(col)[0].as_py(), parse_constant=_reject) == [1.5, None, None]


def test_sanitize_text_removes_exactly_the_xml_illegal_characters() -> None:
    controls = hostile_table()["controls"].combine_chunks()
    cleaned, changed = sanitize_text(controls)
    values = controls.to_pylist()
    expected = [None if v is None else _XML_ILLEGAL.sub("", v) for v in values]
    assert cleaned.to_pylist() == expected
    assert changed == sum(1 for v in values if v is not None and _XML_ILLEGAL.search(v))
    assert changed > 0
    assert "tab\tnl\nrc\r" in cleaned.to_pylist()


def test_sanitize_text_leaves_clean_text_alone() -> None:
    clean = pa.array(["Grüße", "東京", None, ""])
    out, changed = sanitize_text(clean)
    assert changed == 0
    assert out.to_pylist() == clean.to_pylist()


def test_json_values_are_strict_json_for_every_column() -> None:
    table = hostile_table()
    total_non_finite = 0
    for name in table.column_names:
        values, non_finite = json_values(table[name], timezone="Europe/Berlin")
        total_non_finite += non_finite
        parsed = [json.loads(v, parse_constant=_reject) for v in values.to_pylist()]
        assert parsed[-1] is None, name
    assert total_non_finite == 4  # NaN, inf, -inf in float64 and NaN in float32


def test_json_values_keep_big_numbers_exact() -> None:
    table = hostile_table()
    ints, _ = json_values(table["int64"])
    assert [json.loads(v) for v in ints.to_pylist()] == table["int64"].to_pylist()
    decimals, _ = json_values(table["decimal_scaled"])
    parsed = [json.loads(v, parse_float=Decimal) for v in decimals.to_pylist()]
    assert parsed == table["decimal_scaled"].to_pylist()


def test_json_strings_escape_quotes_and_controls() -> None:
    table = hostile_table()
    for name in ("text", "controls", "large_text", "dict"):
        values, _ = json_values(table[name])
        assert [json.loads(v) for v in values.to_pylist()] == table[name].to_pylist()
