"""What every encoder promises, and what it is given.

An encoder turns record batches of one fixed schema into one file's bytes, written to a sink it does
not own. It is pure with respect to the service: no grpc, no jobs, no storage. The caller has
already selected, ordered and renamed columns, so the schema an encoder sees is the file's schema.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from .options import CommonOptions


@dataclass
class ExportWarnings:
    """Counts of what an encoder changed to make a valid file, one entry per code."""

    counts: dict[str, int] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    def add(self, code: str, count: int, message: str) -> None:
        """Count ``count`` more of ``code``; the first message given for a code stays."""
        if count <= 0:
            return
        self.counts[code] = self.counts.get(code, 0) + count
        self.messages.setdefault(code, message)

    def items(self) -> list[tuple[str, int, str]]:
        """(code, count, message) for every code, in the order first seen."""
        return [(code, n, self.messages[code]) for code, n in self.counts.items()]


@dataclass
class EncoderContext:
    """Everything an encoder gets besides its schema and options.

    ``sink`` is a writable binary file object (an ``io.RawIOBase``); encoders write to it and flush,
    never close it. ``scratch_dir`` is a private directory for spill files, removed by the caller.
    ``progress(done, total)`` reports rows rendered during ``finish`` for formats that render late.
    """

    sink: io.RawIOBase
    common: CommonOptions
    scratch_dir: Path
    warnings: ExportWarnings = field(default_factory=ExportWarnings)
    progress: Callable[[int, int], None] | None = None


class Encoder(Protocol):
    """One file being written. ``write`` may be called any number of times (also zero), then
    ``finish`` once; ``abort`` instead of ``finish`` releases resources after a failure.

    An encoder whose ``finish`` does most of the work (PDF draws its pages there) sets a class
    attribute ``renders_late = True``; the service then runs ``finish`` on a worker thread and keeps
    reporting progress meanwhile."""

    def write(self, batch: pa.RecordBatch) -> None: ...

    def finish(self) -> None: ...

    def abort(self) -> None: ...
