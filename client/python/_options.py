"""Build the contract's ExportSpec from plain names and values.

Format options are read off the proto descriptors, so every field the contract has is an SDK
argument and a CLI ``--option KEY=VALUE`` without a hand-kept list; an unknown key fails here, in
the client, with the known keys named.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import formats_pb2 as fpb
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from .errors import InvalidArgumentError, StatusCode

FORMATS: dict[str, tuple[int, str]] = {
    "csv": (fpb.FORMAT_CSV, "csv"),
    "tsv": (fpb.FORMAT_TSV, "csv"),
    "xlsx": (fpb.FORMAT_XLSX, "xlsx"),
    "pdf": (fpb.FORMAT_PDF, "pdf"),
    "parquet": (fpb.FORMAT_PARQUET, "parquet"),
    "arrow": (fpb.FORMAT_ARROW, "arrow"),
    "jsonl": (fpb.FORMAT_JSONL, "json_lines"),
}
SUFFIXES = {
    "csv": ".csv",
    "tsv": ".tsv",
    "xlsx": ".xlsx",
    "pdf": ".pdf",
    "parquet": ".parquet",
    "arrow": ".arrow",
    "jsonl": ".jsonl",
}
DELIVERIES = {
    "stream": epb.DELIVERY_STREAM,
    "handle": epb.DELIVERY_HANDLE,
    "stream_and_handle": epb.DELIVERY_STREAM_AND_HANDLE,
}
# Options that belong to every format: they live on ExportSpec itself.
SPEC_OPTIONS = ("timezone", "null_text")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Column:
    """A column to export: its name in the data, its header in the file, an XLSX number format."""

    source: str
    header: str = ""
    number_format: str = ""


def _bad(message: str) -> InvalidArgumentError:
    return InvalidArgumentError(StatusCode.INVALID_ARGUMENT, message, reason="BAD_OPTION")


def _enum_value(enum: EnumDescriptor, value: object, key: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip().upper().replace("-", "_")
    for v in enum.values:
        if v.number != 0 and (v.name == text or v.name.endswith("_" + text)):
            return int(v.number)
    choices = ", ".join(v.name.split("_")[-1].lower() for v in enum.values if v.number != 0)
    raise _bad(f"option {key}={value!r}: choose one of {choices}")


def _coerce(field: Any, value: object, key: str) -> object:
    t = field.type
    if t == FieldDescriptor.TYPE_BOOL:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise _bad(f"option {key}={value!r}: expected true or false")
    if t == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        return _enum_value(field.enum_type, value, key)
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        try:
            return int(str(value))
        except ValueError:
            raise _bad(f"option {key}={value!r}: expected a whole number") from None
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        try:
            return float(str(value))
        except ValueError:
            raise _bad(f"option {key}={value!r}: expected a number") from None
    if t == FieldDescriptor.TYPE_STRING:
        text = str(value)
        return {"\\t": "\t", "tab": "\t"}.get(text, text) if key in ("delimiter",) else text
    raise _bad(f"option {key} cannot be set from the SDK")


def option_names(fmt: str) -> list[str]:
    """Every option key ``fmt`` accepts (its message's fields, then the spec-wide ones)."""
    _, field = FORMATS[fmt]
    message = fpb.DESCRIPTOR.message_types_by_name[_message_name(field)]
    return [f.name for f in message.fields] + list(SPEC_OPTIONS)


def _message_name(field: str) -> str:
    return {"json_lines": "JsonLinesOptions"}.get(field, field.capitalize() + "Options")


def build_spec(
    fmt: str,
    *,
    options: Mapping[str, object] | None = None,
    delivery: str = "stream",
    file_name: str = "",
    priority: int = 0,
    request_id: str = "",
    columns: Sequence[str | Column] | None = None,
    expected_rows: int = 0,
    ttl: float | None = None,
) -> epb.ExportSpec:
    """The ExportSpec for ``fmt`` with ``options`` applied by name."""
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidArgumentError(
            StatusCode.INVALID_ARGUMENT,
            f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}",
            reason="BAD_FORMAT",
        )
    if delivery not in DELIVERIES:
        raise _bad(f"unknown delivery {delivery!r}; choose one of {', '.join(DELIVERIES)}")
    number, field = FORMATS[fmt]
    spec = epb.ExportSpec(
        format=number,  # type: ignore[arg-type]
        delivery=DELIVERIES[delivery],
        file_name=file_name,
        priority=priority,
        request_id=request_id,
        expected_rows=expected_rows,
    )
    target: Message = getattr(spec, field)
    target.SetInParent()
    fields = target.DESCRIPTOR.fields_by_name
    for key, value in (options or {}).items():
        if key in SPEC_OPTIONS:
            setattr(spec, key, str(value))
            continue
        if key not in fields:
            known = ", ".join(option_names(fmt))
            raise InvalidArgumentError(
                StatusCode.INVALID_ARGUMENT,
                f"unknown option {key!r} for {fmt}; known options: {known}",
                reason="UNKNOWN_OPTION",
            )
        setattr(target, key, _coerce(fields[key], value, key))
    for column in columns or ():
        c = Column(column) if isinstance(column, str) else column
        spec.columns.add(source=c.source, header=c.header, number_format=c.number_format)
    if ttl is not None:
        spec.ttl.FromNanoseconds(int(ttl * 1e9))
    return spec
