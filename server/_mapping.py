"""Proto ⇄ domain mapping for the servicer: the one place that knows both shapes.

Option messages become the exporters' frozen dataclasses with every default filled in and every
value checked, so a bad option fails before the job is queued, with the field named.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Mapping
from typing import Any, TypeVar

from exportd.v1 import artifact_service_pb2 as apb
from exportd.v1 import export_service_pb2 as epb
from exportd.v1 import formats_pb2 as fpb
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2

from .artifacts import Artifact
from .errors import InvalidArgument
from .exporters import FORMATS
from .exporters import options as o
from .exports import Delivery, ExportSpec
from .jobs import Job, JobFailure, JobResult, JobState, Progress

T = TypeVar("T")

FORMAT_NAMES: dict[int, str] = {
    fpb.FORMAT_CSV: "csv",
    fpb.FORMAT_TSV: "tsv",
    fpb.FORMAT_XLSX: "xlsx",
    fpb.FORMAT_PDF: "pdf",
    fpb.FORMAT_PARQUET: "parquet",
    fpb.FORMAT_ARROW: "arrow",
    fpb.FORMAT_JSONL: "jsonl",
}
FORMAT_NUMBERS = {name: number for number, name in FORMAT_NAMES.items()}

_OPTIONS_FIELD = {
    "csv": "csv",
    "tsv": "csv",
    "xlsx": "xlsx",
    "pdf": "pdf",
    "parquet": "parquet",
    "arrow": "arrow",
    "jsonl": "json_lines",
}

_DELIVERY = {
    epb.DELIVERY_UNSPECIFIED: Delivery.STREAM,
    epb.DELIVERY_STREAM: Delivery.STREAM,
    epb.DELIVERY_HANDLE: Delivery.HANDLE,
    epb.DELIVERY_STREAM_AND_HANDLE: Delivery.STREAM_AND_HANDLE,
}
DELIVERY_NUMBERS = {
    "stream": epb.DELIVERY_STREAM,
    "handle": epb.DELIVERY_HANDLE,
    "stream_and_handle": epb.DELIVERY_STREAM_AND_HANDLE,
}

_COMPRESSION = {
    fpb.FILE_COMPRESSION_UNSPECIFIED: o.Compression.NONE,
    fpb.FILE_COMPRESSION_NONE: o.Compression.NONE,
    fpb.FILE_COMPRESSION_GZIP: o.Compression.GZIP,
    fpb.FILE_COMPRESSION_ZSTD: o.Compression.ZSTD,
}
_COMPRESSION_SUFFIX = {
    o.Compression.NONE: "",
    o.Compression.GZIP: ".gz",
    o.Compression.ZSTD: ".zst",
}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def _one_char(value: str, default: str, field: str) -> str:
    if not value:
        return default
    if len(value) != 1:
        raise InvalidArgument(f"{field} must be one character, not {value!r}", reason="BAD_OPTION")
    if value in "\r\n":
        raise InvalidArgument(f"{field} must not be a line break", reason="BAD_OPTION")
    return value


def _enum(mapping: Mapping[Any, T], value: int, field: str) -> T:
    try:
        return mapping[value]
    except KeyError:
        raise InvalidArgument(
            f"{field} has an unknown value {value}", reason="BAD_OPTION"
        ) from None


def _csv(msg: fpb.CsvOptions, fmt: str) -> o.CsvOptions:
    delimiter = _one_char(msg.delimiter, "\t" if fmt == "tsv" else ",", "csv.delimiter")
    quote = _one_char(msg.quote, '"', "csv.quote")
    if quote == delimiter:
        raise InvalidArgument("csv.quote and csv.delimiter must differ", reason="BAD_OPTION")
    quoting = _enum(
        {
            fpb.CSV_QUOTING_UNSPECIFIED: o.Quoting.MINIMAL,
            fpb.CSV_QUOTING_MINIMAL: o.Quoting.MINIMAL,
            fpb.CSV_QUOTING_ALL: o.Quoting.ALL,
            fpb.CSV_QUOTING_NONE: o.Quoting.NONE,
        },
        msg.quoting,
        "csv.quoting",
    )
    terminator = _enum(
        {
            fpb.LINE_TERMINATOR_UNSPECIFIED: "\n",
            fpb.LINE_TERMINATOR_LF: "\n",
            fpb.LINE_TERMINATOR_CRLF: "\r\n",
        },
        msg.line_terminator,
        "csv.line_terminator",
    )
    return o.CsvOptions(
        delimiter=delimiter,
        quote=quote,
        quoting=quoting,
        header=msg.header if msg.HasField("header") else True,
        line_terminator=terminator,
        bom=msg.bom,
        compression=_enum(_COMPRESSION, msg.compression, "csv.compression"),
        formula_guard=msg.formula_guard if msg.HasField("formula_guard") else True,
    )


def _xlsx(msg: fpb.XlsxOptions) -> o.XlsxOptions:
    level = msg.compression_level or 1
    if not 1 <= level <= 9:
        raise InvalidArgument(
            f"xlsx.compression_level must be 1 to 9, not {level}", reason="BAD_OPTION"
        )
    overflow = _enum(
        {
            fpb.XLSX_ROW_OVERFLOW_UNSPECIFIED: o.RowOverflow.NEW_SHEET,
            fpb.XLSX_ROW_OVERFLOW_NEW_SHEET: o.RowOverflow.NEW_SHEET,
            fpb.XLSX_ROW_OVERFLOW_FAIL: o.RowOverflow.FAIL,
        },
        msg.row_overflow,
        "xlsx.row_overflow",
    )
    return o.XlsxOptions(
        sheet_name=msg.sheet_name or "Export",
        bold_header=msg.bold_header if msg.HasField("bold_header") else True,
        freeze_header=msg.freeze_header if msg.HasField("freeze_header") else True,
        autofilter=msg.autofilter if msg.HasField("autofilter") else True,
        date_format=msg.date_format or "yyyy-mm-dd",
        datetime_format=msg.datetime_format or "yyyy-mm-dd hh:mm:ss",
        compression_level=level,
        row_overflow=overflow,
        header=msg.header if msg.HasField("header") else True,
    )


def _pdf(msg: fpb.PdfOptions) -> o.PdfOptions:
    size = msg.font_size or 8.0
    if not 5.0 <= size <= 24.0:
        raise InvalidArgument(f"pdf.font_size must be 5 to 24, not {size:g}", reason="BAD_OPTION")
    return o.PdfOptions(
        title=msg.title,
        subtitle=msg.subtitle,
        generated_at=msg.generated_at if msg.HasField("generated_at") else True,
        page_size=_enum(
            {
                fpb.PAGE_SIZE_UNSPECIFIED: o.PageSize.A4,
                fpb.PAGE_SIZE_A4: o.PageSize.A4,
                fpb.PAGE_SIZE_LETTER: o.PageSize.LETTER,
                fpb.PAGE_SIZE_LEGAL: o.PageSize.LEGAL,
                fpb.PAGE_SIZE_A3: o.PageSize.A3,
            },
            msg.page_size,
            "pdf.page_size",
        ),
        orientation=_enum(
            {
                fpb.ORIENTATION_UNSPECIFIED: o.Orientation.AUTO,
                fpb.ORIENTATION_PORTRAIT: o.Orientation.PORTRAIT,
                fpb.ORIENTATION_LANDSCAPE: o.Orientation.LANDSCAPE,
            },
            msg.orientation,
            "pdf.orientation",
        ),
        font_size=size,
        cell_overflow=_enum(
            {
                fpb.CELL_OVERFLOW_UNSPECIFIED: o.CellOverflow.ELLIPSIS,
                fpb.CELL_OVERFLOW_ELLIPSIS: o.CellOverflow.ELLIPSIS,
                fpb.CELL_OVERFLOW_WRAP: o.CellOverflow.WRAP,
            },
            msg.cell_overflow,
            "pdf.cell_overflow",
        ),
        zebra=msg.zebra if msg.HasField("zebra") else True,
    )


def _parquet(msg: fpb.ParquetOptions) -> o.ParquetOptions:
    codec = _enum(
        {
            fpb.PARQUET_COMPRESSION_UNSPECIFIED: "zstd",
            fpb.PARQUET_COMPRESSION_NONE: "none",
            fpb.PARQUET_COMPRESSION_SNAPPY: "snappy",
            fpb.PARQUET_COMPRESSION_GZIP: "gzip",
            fpb.PARQUET_COMPRESSION_ZSTD: "zstd",
            fpb.PARQUET_COMPRESSION_LZ4: "lz4",
        },
        msg.compression,
        "parquet.compression",
    )
    if msg.row_group_size < 0:
        raise InvalidArgument("parquet.row_group_size must not be negative", reason="BAD_OPTION")
    return o.ParquetOptions(compression=codec, row_group_size=msg.row_group_size or 1 << 20)


def _arrow(msg: fpb.ArrowOptions) -> o.ArrowOptions:
    codec = _enum(
        {
            fpb.ARROW_COMPRESSION_UNSPECIFIED: None,
            fpb.ARROW_COMPRESSION_NONE: None,
            fpb.ARROW_COMPRESSION_LZ4: "lz4",
            fpb.ARROW_COMPRESSION_ZSTD: "zstd",
        },
        msg.compression,
        "arrow.compression",
    )
    return o.ArrowOptions(compression=codec)


def _jsonl(msg: fpb.JsonLinesOptions) -> o.JsonLinesOptions:
    return o.JsonLinesOptions(
        compression=_enum(_COMPRESSION, msg.compression, "json_lines.compression")
    )


def _seconds(d: Duration) -> float:
    return d.seconds + d.nanos / 1e9


def spec_from_proto(msg: epb.ExportSpec, *, default_ttl: float) -> ExportSpec:
    """Validate the contract's ExportSpec into the domain's, naming the first bad field."""
    fmt = FORMAT_NAMES.get(msg.format)
    if fmt is None:
        known = ", ".join(fpb.Format.Name(n) for n in FORMAT_NAMES)  # type: ignore[arg-type]
        raise InvalidArgument(
            f"format is missing or unknown ({msg.format}); use one of {known}", reason="BAD_FORMAT"
        )
    given = msg.WhichOneof("options")
    expected = _OPTIONS_FIELD[fmt]
    if given is not None and given != expected:
        raise InvalidArgument(
            f"options {given!r} do not apply to format {fmt}; use {expected!r}",
            reason="OPTIONS_MISMATCH",
        )
    options: o.FormatOptions
    if fmt in ("csv", "tsv"):
        options = _csv(msg.csv, fmt)
    elif fmt == "xlsx":
        options = _xlsx(msg.xlsx)
    elif fmt == "pdf":
        options = _pdf(msg.pdf)
    elif fmt == "parquet":
        options = _parquet(msg.parquet)
    elif fmt == "arrow":
        options = _arrow(msg.arrow)
    else:
        options = _jsonl(msg.json_lines)

    suffix = FORMATS[fmt].suffix
    compression = getattr(options, "compression", None)
    if isinstance(compression, o.Compression):
        suffix += _COMPRESSION_SUFFIX[compression]
    name = _UNSAFE_NAME.sub("", msg.file_name).strip().lstrip(".")[:200] or "export" + suffix

    timezone = msg.timezone or "UTC"
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidArgument(
            f"timezone {timezone!r} is not an IANA time zone", reason="BAD_OPTION"
        ) from None
    if not -100 <= msg.priority <= 100:
        raise InvalidArgument(
            f"priority must be -100 to 100, not {msg.priority}", reason="BAD_OPTION"
        )
    if msg.expected_rows < 0:
        raise InvalidArgument("expected_rows must not be negative", reason="BAD_OPTION")
    if len(msg.request_id) > 200:
        raise InvalidArgument("request_id is longer than 200 characters", reason="BAD_OPTION")
    columns = []
    for c in msg.columns:
        if not c.source:
            raise InvalidArgument("every column needs a source name", reason="BAD_OPTION")
        columns.append(
            o.Column(source=c.source, header=c.header or c.source, number_format=c.number_format)
        )
    ttl = _seconds(msg.ttl) if msg.HasField("ttl") else None
    if ttl is not None and ttl <= 0:
        raise InvalidArgument("ttl must be positive", reason="BAD_OPTION")
    delivery = _enum(_DELIVERY, msg.delivery, "delivery")
    return ExportSpec(
        format=fmt,
        options=options,
        common=o.CommonOptions(
            timezone=timezone,
            null_text=msg.null_text if msg.HasField("null_text") else "",
            file_name=name,
        ),
        delivery=delivery,
        priority=msg.priority,
        request_id=msg.request_id,
        columns=tuple(columns),
        expected_rows=msg.expected_rows,
        ttl=ttl if ttl is not None else default_ttl,
    )


def _timestamp(epoch: float | None) -> Timestamp | None:
    if epoch is None:
        return None
    ts = Timestamp()
    ts.FromNanoseconds(int(epoch * 1e9))
    return ts


def _duration(seconds: float | None) -> Duration | None:
    if seconds is None:
        return None
    d = Duration()
    d.FromNanoseconds(int(seconds * 1e9))
    return d


def progress_to_proto(p: Progress) -> epb.Progress:
    return epb.Progress(
        state=p.state.value,  # type: ignore[arg-type]
        queue_position=p.queue_position,
        rows_done=p.rows_done,
        rows_total=p.rows_total,
        bytes_received=p.bytes_received,
        bytes_written=p.bytes_written,
        fraction=p.fraction,
        elapsed=_duration(p.elapsed),
        eta=_duration(p.eta),
    )


def completed_to_proto(job_id: str, r: JobResult) -> epb.ExportCompleted:
    return epb.ExportCompleted(
        job_id=job_id,
        handle=r.handle,
        size_bytes=r.size,
        sha256=r.sha256,
        rows=r.rows,
        media_type=r.media_type,
        file_name=r.file_name,
        warnings=[
            epb.ExportWarning(code=w.code, count=w.count, message=w.message) for w in r.warnings
        ],
        expires_at=_timestamp(r.expires_at),
    )


def failure_to_proto(f: JobFailure) -> epb.JobError:
    code = getattr(code_pb2, f.code, code_pb2.UNKNOWN)  # the same names as in servicer.abort
    return epb.JobError(code=code, message=f.message, reason=f.reason)


def job_to_proto(job: Job) -> epb.Job:
    msg = epb.Job(
        job_id=job.job_id,
        state=job.state.value,  # type: ignore[arg-type]
        format=FORMAT_NUMBERS.get(job.format, 0),  # type: ignore[arg-type]
        file_name=job.file_name,
        priority=job.priority,
        request_id=job.request_id,
        delivery=DELIVERY_NUMBERS.get(job.delivery, 0),  # type: ignore[arg-type]
        create_time=_timestamp(job.created_at),
        start_time=_timestamp(job.started_at),
        end_time=_timestamp(job.finished_at),
        progress=progress_to_proto(job.progress),
    )
    if job.result is not None:
        msg.result.CopyFrom(completed_to_proto(job.job_id, job.result))
    if job.error is not None:
        msg.error.CopyFrom(failure_to_proto(job.error))
    return msg


def states_from_proto(values: list[int]) -> set[JobState]:
    try:
        return {JobState(v) for v in values}
    except ValueError:
        raise InvalidArgument(f"unknown job state in {values}", reason="BAD_OPTION") from None


def artifact_to_proto(a: Artifact) -> apb.Artifact:
    return apb.Artifact(
        handle=a.handle,
        job_id=a.job_id,
        file_name=a.file_name,
        media_type=a.media_type,
        size_bytes=a.size,
        sha256=a.sha256,
        create_time=_timestamp(a.created_at),
        expire_time=_timestamp(a.expires_at),
    )
