"""One encoder per format, chosen by name.

``create_encoder(format, schema, options, ctx)`` is the only entry point the service uses; each
format's module is imported when first needed, so a server that never writes PDF never loads
reportlab.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pyarrow as pa

from ._base import Encoder, EncoderContext, ExportWarnings
from .options import (
    ArrowOptions,
    CsvOptions,
    FormatOptions,
    JsonLinesOptions,
    ParquetOptions,
    PdfOptions,
    XlsxOptions,
)

__all__ = [
    "FORMATS",
    "Encoder",
    "EncoderContext",
    "ExportWarnings",
    "FormatInfo",
    "create_encoder",
]


@dataclass(frozen=True)
class FormatInfo:
    """What a format is called, how its files are named and served, and who writes it."""

    name: str
    suffix: str
    media_type: str
    options_type: type
    module: str
    encoder: str
    spools: bool = False
    """The encoder writes spill files to EncoderContext.scratch_dir (created only for these)."""


FORMATS: dict[str, FormatInfo] = {
    info.name: info
    for info in (
        FormatInfo("csv", ".csv", "text/csv", CsvOptions, "delimited", "DelimitedEncoder"),
        FormatInfo(
            "tsv", ".tsv", "text/tab-separated-values", CsvOptions, "delimited", "DelimitedEncoder"
        ),
        FormatInfo(
            "xlsx",
            ".xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            XlsxOptions,
            "xlsx",
            "XlsxEncoder",
        ),
        FormatInfo("pdf", ".pdf", "application/pdf", PdfOptions, "pdf", "PdfEncoder", spools=True),
        FormatInfo(
            "parquet",
            ".parquet",
            "application/vnd.apache.parquet",
            ParquetOptions,
            "columnar",
            "ParquetEncoder",
        ),
        FormatInfo(
            "arrow",
            ".arrow",
            "application/vnd.apache.arrow.file",
            ArrowOptions,
            "columnar",
            "ArrowEncoder",
        ),
        FormatInfo(
            "jsonl", ".jsonl", "application/jsonl", JsonLinesOptions, "jsonl", "JsonLinesEncoder"
        ),
    )
}


def create_encoder(
    fmt: str, schema: pa.Schema, options: FormatOptions, ctx: EncoderContext
) -> Encoder:
    """Build the encoder for ``fmt`` (a key of FORMATS) writing ``schema``-shaped batches."""
    info = FORMATS[fmt]
    if not isinstance(options, info.options_type):
        raise TypeError(f"{fmt} takes {info.options_type.__name__}, not {type(options).__name__}")
    module = importlib.import_module(f"{__name__}.{info.module}")
    factory = getattr(module, info.encoder)
    encoder: Encoder = factory(schema, options, ctx)
    return encoder
