"""Format options as plain frozen dataclasses.

The servicer maps the contract's option messages onto these once, so exporters never see protobuf
and can be used (and tested) on their own. Every default here is the documented default of the
matching field in ``protos/exportd/v1/formats.proto``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Compression(Enum):
    """Whole-file compression for text formats."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


class Quoting(Enum):
    """Which CSV fields are quoted."""

    MINIMAL = "minimal"
    ALL = "all"
    NONE = "none"


class RowOverflow(Enum):
    """What XLSX does with more rows than one sheet holds."""

    NEW_SHEET = "new_sheet"
    FAIL = "fail"


class PageSize(Enum):
    """PDF paper sizes."""

    A4 = "a4"
    LETTER = "letter"
    LEGAL = "legal"
    A3 = "a3"


class Orientation(Enum):
    """PDF page orientation; AUTO picks landscape when the columns do not fit portrait."""

    AUTO = "auto"
    PORTRAIT = "portrait"
    LANDSCAPE = "landscape"


class CellOverflow(Enum):
    """What a PDF cell does with text wider than its column."""

    ELLIPSIS = "ellipsis"
    WRAP = "wrap"


@dataclass(frozen=True)
class Column:
    """One output column: which source column, its header, and an optional XLSX number format."""

    source: str
    header: str
    number_format: str = ""


@dataclass(frozen=True)
class CommonOptions:
    """Options every format shares."""

    timezone: str = "UTC"
    """IANA zone that zoned timestamps are shown in; naive timestamps stay naive."""
    null_text: str = ""
    """Text for a null in CSV, TSV and PDF."""
    file_name: str = "export"
    """The output's file name (PDF uses it as the default title)."""
    number_formats: dict[str, str] = field(default_factory=dict)
    """XLSX number format per output header, from ColumnSpec.number_format."""


@dataclass(frozen=True)
class CsvOptions:
    """CSV and TSV options; see CsvOptions in formats.proto."""

    delimiter: str = ","
    quote: str = '"'
    quoting: Quoting = Quoting.MINIMAL
    header: bool = True
    line_terminator: str = "\n"
    bom: bool = False
    compression: Compression = Compression.NONE
    formula_guard: bool = True


@dataclass(frozen=True)
class XlsxOptions:
    """XLSX options; see XlsxOptions in formats.proto."""

    sheet_name: str = "Export"
    bold_header: bool = True
    freeze_header: bool = True
    autofilter: bool = True
    date_format: str = "yyyy-mm-dd"
    datetime_format: str = "yyyy-mm-dd hh:mm:ss"
    compression_level: int = 1
    row_overflow: RowOverflow = RowOverflow.NEW_SHEET
    header: bool = True


@dataclass(frozen=True)
class PdfOptions:
    """PDF options; see PdfOptions in formats.proto."""

    title: str = ""
    subtitle: str = ""
    generated_at: bool = True
    page_size: PageSize = PageSize.A4
    orientation: Orientation = Orientation.AUTO
    font_size: float = 8.0
    cell_overflow: CellOverflow = CellOverflow.ELLIPSIS
    zebra: bool = True


@dataclass(frozen=True)
class ParquetOptions:
    """Parquet options; compression is a pyarrow codec name or "none"."""

    compression: str = "zstd"
    row_group_size: int = 1 << 20


@dataclass(frozen=True)
class ArrowOptions:
    """Arrow IPC file options; compression is None, "lz4" or "zstd"."""

    compression: str | None = None


@dataclass(frozen=True)
class JsonLinesOptions:
    """JSON Lines options."""

    compression: Compression = Compression.NONE


FormatOptions = (
    CsvOptions | XlsxOptions | PdfOptions | ParquetOptions | ArrowOptions | JsonLinesOptions
)
