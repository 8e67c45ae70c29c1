"""How every Arrow type reads as text, and as JSON, in one place.

The text formats (CSV/TSV, PDF, the text cells of XLSX) and JSON Lines all show values the same
way, so a value looks alike in every file exportd writes. Everything here works on whole arrays
with ``pyarrow.compute``; per-row Python runs only for binary (base64, which Arrow has no kernel
for) and for the rare types listed under "fallback" below.

Text rendering (``render_text``), what a caller may rely on:

==========================  ===============================================================
Arrow type                  text
==========================  ===============================================================
integers                    decimal digits, exact (``-9223372036854775808``)
float16/32/64               shortest text that reads back to the same float (``0.1``,
                            ``1e+20``, ``1.234567890125e+11``); ``NaN``, ``inf``, ``-inf``
decimal32/64/128/256        exact, with the type's scale (``1.50``); negative scales as
                            ``1E+2``
bool                        ``true`` / ``false``
date32/date64               ``YYYY-MM-DD``
time32/time64               ``HH:MM:SS``, plus the unit's fraction digits for ms/us/ns
                            (``10:00:00.000000`` for time64[us])
timestamp without zone      ``YYYY-MM-DD HH:MM:SS[.fff|.ffffff|.fffffffff]`` (the fraction
                            as for times), no zone: a naive value stays naive
timestamp with zone         the same instant shown in ``timezone`` with its offset:
                            ``2024-03-01 11:00:00.000+01:00``
duration                    signed seconds with the unit's fraction digits:
                            duration[ms] 90500 -> ``90.500``, duration[s] 60 -> ``60``
binary (all kinds)          standard base64 (RFC 4648, with padding)
string / large / view       unchanged
dictionary                  the decoded value's text
list / struct / map         compact JSON (see below): ``[1,2]``, ``{"a":1}``
null                        ``null_text``, or a null when ``null_text`` is None
==========================  ===============================================================

JSON rendering (``json_values``), used by JSON Lines and for nested values in text: booleans and
numbers as JSON literals (64-bit integers and decimals written exactly as JSON numbers, so a reader
that wants them exact must parse numbers exactly, e.g. ``json.loads(parse_float=Decimal)``);
non-finite floats as ``null`` (counted, since strict JSON has no NaN/Infinity); strings escaped per
RFC 8259; binary as a base64 string; dates and times as their text above in a string; timestamps as
ISO 8601 strings with ``T`` (``2024-03-01T11:00:00.000+01:00``, naive ones without offset);
durations as a number of seconds; lists as arrays; structs as objects; maps as objects whose keys
are the keys' text. Fallback: union and interval types are rendered per row with Python's ``json``
(intervals as their Python text).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InvalidArgument

__all__ = ["json_values", "render_text", "sanitize_text"]

_XML_ILLEGAL = "[\\x{0}-\\x{8}\\x{B}\\x{C}\\x{E}-\\x{1F}\\x{FFFE}\\x{FFFF}]"
_JSON_CONTROL = "[\\x{0}-\\x{1F}]"
_JSON_SHORT_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_FRACTION_DIGITS = {"s": 0, "ms": 3, "us": 6, "ns": 9}


def render_text(
    array: pa.Array | pa.ChunkedArray, *, timezone: str = "UTC", null_text: str | None = None
) -> pa.StringArray:
    """Render every value of ``array`` as text, per the table in this module's docstring.

    Returns a ``string`` array of the same length; nulls stay nulls when ``null_text`` is None,
    otherwise they become ``null_text``. Raises InvalidArgument (reason ``UNKNOWN_TIMEZONE``) when
    ``timezone`` is not a zone the time zone database knows and the array holds zoned timestamps.
    """
    if isinstance(array, pa.ChunkedArray):
        chunks = [_text(chunk, timezone) for chunk in array.chunks]
        out = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
    else:
        out = _text(array, timezone)
    if null_text is not None and out.null_count:
        out = pc.fill_null(out, null_text)
    return out


def json_values(
    array: pa.Array | pa.ChunkedArray, *, timezone: str = "UTC"
) -> tuple[pa.StringArray, int]:
    """Render every value of ``array`` as a JSON text, per this module's docstring.

    Returns the ``string`` array (a null value becomes the text ``null``, so the result has no
    nulls) and how many non-finite floats were written as ``null``, nested ones included.
    """
    if isinstance(array, pa.ChunkedArray):
        parts = [json_values(chunk, timezone=timezone) for chunk in array.chunks]
        if not parts:
            return pa.array([], pa.string()), 0
        return pa.concat_arrays([p[0] for p in parts]), sum(p[1] for p in parts)
    counter = [0]
    out = _json(array, timezone, counter)
    if out.null_count:
        out = pc.fill_null(out, "null")
    return out, counter[0]


def sanitize_text(arr: pa.StringArray) -> tuple[pa.StringArray, int]:
    """Remove the characters XML 1.0 forbids (C0 controls other than tab, LF and CR; U+FFFE and
    U+FFFF) and return the cleaned array with the number of cells that changed.

    Arrow strings are valid UTF-8, so lone surrogates cannot occur. Nulls stay nulls.
    """
    if arr.type != pa.string():
        arr = pc.cast(arr, pa.string())
    if len(arr) == 0:
        return arr, 0
    hits = pc.match_substring_regex(arr, _XML_ILLEGAL)
    changed = pc.sum(hits).as_py() or 0
    if not changed:
        return arr, 0
    return pc.replace_substring_regex(arr, _XML_ILLEGAL, ""), int(changed)


# --- text ---------------------------------------------------------------------------------------


def _text(arr: pa.Array, timezone: str) -> pa.Array:
    t = arr.type
    if pa.types.is_string(t):
        return arr
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pc.cast(arr, pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_dictionary(t):
        return pc.take(_text(arr.dictionary, timezone), arr.indices)
    if isinstance(t, pa.ExtensionType):
        return _text(arr.storage, timezone)
    if pa.types.is_run_end_encoded(t):
        return _text(pc.run_end_decode(arr), timezone)
    if pa.types.is_floating(t):
        return _float_text(arr)
    if pa.types.is_timestamp(t):
        if t.tz is None:
            return pc.cast(arr, pa.string())
        return _zoned(arr, timezone, "%Y-%m-%d %H:%M:%S%Ez")
    if pa.types.is_duration(t):
        return _seconds(arr)
    if _is_binary(t):
        return _base64(arr)
    if _is_nested(t):
        counter = [0]
        return _json(arr, timezone, counter)
    if (
        pa.types.is_integer(t)
        or pa.types.is_boolean(t)
        or pa.types.is_decimal(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
    ):
        return pc.cast(arr, pa.string())
    return pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())


def _float_text(arr: pa.Array) -> pa.Array:
    if arr.type == pa.float16():
        arr = pc.cast(arr, pa.float32())
    out = pc.cast(arr, pa.string())
    nan = pc.is_nan(arr)
    if pc.any(nan).as_py():
        out = pc.if_else(nan, "NaN", out)
    return out


def _zoned(arr: pa.Array, timezone: str, fmt: str) -> pa.Array:
    """Zoned timestamps as wall-clock time in ``timezone`` with its offset. Offsets with seconds
    (local mean time before a zone adopted standard time, e.g. Asia/Kolkata in 1900: +05:21:10)
    gain ``:SS`` as Python's ``isoformat`` writes them, so the text names the exact instant."""
    shown = arr.cast(pa.timestamp(arr.type.unit, timezone))
    try:
        text = pc.strftime(shown, format=fmt)
        local = pc.local_timestamp(shown)
    except pa.ArrowInvalid as exc:
        if "timezone" in str(exc):
            raise InvalidArgument(
                f"unknown time zone {timezone!r}: {exc}", reason="UNKNOWN_TIMEZONE"
            ) from exc
        raise
    per_second = 10 ** _FRACTION_DIGITS[arr.type.unit]
    offset = pc.divide(pc.subtract(local.cast(pa.int64()), shown.cast(pa.int64())), per_second)
    leftover = pc.abs(pc.subtract(offset, pc.multiply(pc.divide(offset, 60), 60)))
    odd = pc.not_equal(leftover, 0)
    if not pc.any(odd).as_py():
        return text
    seconds = pc.utf8_lpad(pc.cast(leftover, pa.string()), 2, "0")
    return pc.if_else(odd, pc.binary_join_element_wise(text, seconds, ":"), text)


def _seconds(arr: pa.Array) -> pa.Array:
    """Durations as exact signed seconds with the unit's fraction digits, by string arithmetic
    on the integer count (so even int64 min needs no wider integer)."""
    digits = _FRACTION_DIGITS[arr.type.unit]
    raw = pc.cast(arr.cast(pa.int64()), pa.string())
    if digits == 0:
        return raw
    negative = pc.starts_with(raw, "-")
    magnitude = pc.utf8_lpad(pc.replace_substring(raw, "-", ""), digits + 1, "0")
    whole = pc.utf8_slice_codeunits(magnitude, 0, -digits)
    fraction = pc.utf8_slice_codeunits(magnitude, -digits)
    sign = pc.if_else(negative, "-", "")
    return pc.binary_join_element_wise(sign, whole, ".", fraction, "")


def _base64(arr: pa.Array) -> pa.Array:
    values = arr.to_pylist()
    return pa.array(
        [None if v is None else base64.b64encode(v).decode("ascii") for v in values], pa.string()
    )


def _is_binary(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    )


def _is_nested(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
        or pa.types.is_struct(t)
        or pa.types.is_map(t)
        or pa.types.is_union(t)
    )


# --- JSON ---------------------------------------------------------------------------------------


def _json(arr: pa.Array, timezone: str, counter: list[int]) -> pa.Array:
    """JSON text per value; nulls stay nulls (the caller decides whether they become ``null``)."""
    t = arr.type
    if pa.types.is_null(t):
        return pa.nulls(len(arr), pa.string())
    if pa.types.is_dictionary(t):
        return pc.take(_json(arr.dictionary, timezone, counter), arr.indices)
    if isinstance(t, pa.ExtensionType):
        return _json(arr.storage, timezone, counter)
    if pa.types.is_run_end_encoded(t):
        return _json(pc.run_end_decode(arr), timezone, counter)
    if pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_decimal(t):
        return pc.cast(arr, pa.string())
    if pa.types.is_floating(t):
        if t == pa.float16():
            arr = pc.cast(arr, pa.float32())
        finite = pc.is_finite(arr)
        text = pc.cast(arr, pa.string())
        bad = pc.sum(pc.invert(pc.fill_null(finite, True))).as_py() or 0
        if bad:
            counter[0] += int(bad)
            text = pc.if_else(finite, text, pa.scalar(None, pa.string()))
        return text
    if pa.types.is_duration(t):
        return _seconds(arr)
    if pa.types.is_timestamp(t):
        if t.tz is None:
            iso = pc.replace_substring(pc.cast(arr, pa.string()), " ", "T", max_replacements=1)
        else:
            iso = _zoned(arr, timezone, "%Y-%m-%dT%H:%M:%S%Ez")
        return _quote(iso)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
    ):
        return _quote(_escape(_text(arr, timezone)))
    if _is_binary(t):
        return _quote(_base64(arr))
    if pa.types.is_map(t):
        return _json_map(arr, timezone, counter)
    if pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        target = pa.large_list(t.value_field) if _is_large(t) else pa.list_(t.value_field)
        return _json(arr.cast(target), timezone, counter)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        items = _json(arr.values, timezone, counter)
        items = pc.fill_null(items, "null") if items.null_count else items
        joined = _rejoin(arr, items, ",")
        return pc.binary_join_element_wise("[", joined, "]", "")
    if pa.types.is_struct(t):
        return _json_struct(arr, timezone, counter)
    return _json_fallback(arr)


def _is_large(t: pa.DataType) -> bool:
    return bool(pa.types.is_large_list_view(t))


def _rejoin(lists: pa.Array, items: pa.Array, separator: str) -> pa.Array:
    """Join ``items`` (aligned with ``lists.values``) per list; null lists stay null."""
    if pa.types.is_large_list(lists.type):
        rebuilt = pa.LargeListArray.from_arrays(lists.offsets, items)
    else:
        rebuilt = pa.ListArray.from_arrays(lists.offsets, items)
    joined = pc.binary_join(rebuilt, separator)
    if lists.null_count:
        joined = pc.if_else(lists.is_valid(), joined, pa.scalar(None, pa.string()))
    return joined


def _json_struct(arr: pa.Array, timezone: str, counter: list[int]) -> pa.Array:
    t = arr.type
    n = len(arr)
    if t.num_fields == 0:
        body = pa.array(["{}"] * n, pa.string())
    else:
        parts: list[Any] = []
        for i in range(t.num_fields):
            name = json.dumps(t.field(i).name, ensure_ascii=False)
            value = _json(arr.field(i), timezone, counter)
            value = pc.fill_null(value, "null") if value.null_count else value
            parts.append(pc.binary_join_element_wise(f"{name}:", value, ""))
        body = pc.binary_join_element_wise("{", *_interleave(parts, ","), "}", "")
    if arr.null_count:
        body = pc.if_else(arr.is_valid(), body, pa.scalar(None, pa.string()))
    return body


def _interleave(parts: list[Any], separator: str) -> list[Any]:
    out: list[Any] = []
    for i, part in enumerate(parts):
        if i:
            out.append(separator)
        out.append(part)
    return out


def _json_map(arr: pa.Array, timezone: str, counter: list[int]) -> pa.Array:
    keys = _quote(_escape(_text(arr.keys, timezone)))
    items = _json(arr.items, timezone, counter)
    items = pc.fill_null(items, "null") if items.null_count else items
    entries = pc.binary_join_element_wise(keys, items, ":")
    return pc.binary_join_element_wise("{", _rejoin(arr, entries, ","), "}", "")


def _escape(text: pa.Array) -> pa.Array:
    """Escape a string array for the inside of JSON string literals (RFC 8259)."""
    if len(text) == 0:
        return text
    text = pc.replace_substring(text, "\\", "\\\\")
    text = pc.replace_substring(text, '"', '\\"')
    if pc.any(pc.match_substring_regex(text, _JSON_CONTROL)).as_py():
        for code in range(0x20):
            ch = chr(code)
            text = pc.replace_substring(text, ch, _JSON_SHORT_ESCAPES.get(ch, f"\\u{code:04x}"))
    return text


def _quote(text: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', text, '"', "")


def _json_fallback(arr: pa.Array) -> pa.Array:
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode("ascii")
        return str(value)

    return pa.array(
        [
            None if v is None else json.dumps(v, default=plain, ensure_ascii=False)
            for v in arr.to_pylist()
        ],
        pa.string(),
    )
