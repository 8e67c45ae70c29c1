"""PDF tables drawn page by page on the reportlab canvas, with an exact "Page X of Y".

How it works, and what a caller may rely on:

- ``write`` renders each batch to text (``render_text``: the same text as CSV), fits it to the
  column widths (cut with "…" or wrapped, per ``cell_overflow``) and spools the result to an Arrow
  IPC file in ``scratch_dir``, so memory stays flat however long the table. It also paginates as it
  goes: row heights are known once the text is fitted, so when ``finish`` starts the page count is
  already exact and every footer can say "Page X of Y".
- Column widths are fixed from a sample: the header and the first ``SAMPLE_ROWS`` rows. Each column
  gets the width of its widest sampled cell (at most 45% of the portrait text width), then all are
  stretched or shrunk proportionally to the page width, no column narrower than about three
  characters. Orientation AUTO picks landscape when the natural widths do not fit portrait.
- When even the narrowest widths do not fit (a very wide table), the columns are split into groups
  that each fit the page; every group repeats the first column (the row's identifier) and is
  printed on its own page for the same rows, so one slice of rows takes one page per group.
- ``finish`` draws with one text object per column per page (never platypus tables, which are
  quadratic in the row count). The header is redrawn on every page, numbers are right-aligned, the
  first page carries the title (default: the file name without its suffix), optional subtitle and a
  "Generated at" line in UTC.
- Text widths: ASCII cells are measured exactly and vectorised (a per-byte advance table summed
  over each cell with numpy); only cells holding other characters are measured per character. Only
  cells wider than their column are cut or wrapped in Python.
- Fonts come from a ``FontSet`` (see ``fonts.py``): cells the primary font covers entirely draw with
  no per-character work; other cells are split into runs per fallback font, right-to-left runs are
  put in display order. Characters no font has become U+FFFD and are counted as GLYPH_MISSING.
- Warnings: CELL_TRUNCATED (cells cut to their column, or to the height of a page when wrapping),
  CHARS_REMOVED (cells that held control characters), GLYPH_MISSING (characters no font has).
- Memory: reportlab keeps the finished (compressed) page streams until the file is saved, so
  memory grows with the size of the output file, not with the input table.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from reportlab import rl_config
from reportlab.lib import pagesizes
from reportlab.lib.rl_accel import escapePDF, fp_str
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas
from reportlab.pdfgen.textobject import PDFTextObject

from ..errors import InvalidArgument
from ._base import EncoderContext
from ._text import render_text, sanitize_text
from .fonts import RTL_PATTERN, FontSet, default_fontset, visual_order
from .options import CellOverflow, Orientation, PageSize, PdfOptions

__all__ = ["SAMPLE_ROWS", "PdfEncoder"]

SAMPLE_ROWS = 500
"""Rows (after the header) whose text decides the column widths."""

MARGIN = 36.0
ELLIPSIS = "\u2026"
CHUNK = 1 << 20
_PAGE_SIZES = {
    PageSize.A4: pagesizes.A4,
    PageSize.LETTER: pagesizes.LETTER,
    PageSize.LEGAL: pagesizes.LEGAL,
    PageSize.A3: pagesizes.A3,
}
# DEL and the C1 controls: no glyph in any font, and sanitize_text keeps them (XML allows them).
_CONTROL = "[\\x{7f}-\\x{9f}]"
_ZEBRA = (0.94, 0.95, 0.97)
_HEADER_FILL = (0.85, 0.87, 0.90)
_PROGRESS_EVERY = 0.25

# Page streams are written Flate-compressed and binary; the ASCII85 layer reportlab adds by default
# only makes files larger and slower to write.
rl_config.useA85 = 0


def _is_numeric(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


@dataclass
class _Layout:
    page_w: float
    page_h: float
    widths: list[float]
    xs: list[list[float]]
    groups: list[list[int]]
    header_lines: list[list[str]]
    header_h: float
    first_cap: float
    other_cap: float
    max_lines: int


class PdfEncoder:
    """Writes a table as a paginated PDF; see the module docstring for the layout rules."""

    renders_late = True
    """Pages are drawn in ``finish``, once the row count is known."""

    def __init__(
        self,
        schema: pa.Schema,
        options: PdfOptions,
        ctx: EncoderContext,
        fonts: FontSet | None = None,
    ) -> None:
        if not 5.0 <= options.font_size <= 24.0:
            raise InvalidArgument(
                f"PDF font_size must be between 5 and 24 points, not {options.font_size}",
                reason="PDF_FONT_SIZE",
            )
        self._schema = schema
        self._opts = options
        self._ctx = ctx
        self._fonts = fonts or default_fontset()
        fs = options.font_size
        self._fs = fs
        self._leading = fs * 1.25
        self._pad = fs * 0.4
        self._pad_v = fs * 0.2
        self._wrap = options.cell_overflow is CellOverflow.WRAP
        self._numeric = [_is_numeric(f.type) for f in schema]
        self._headers = [
            sanitize_text(pa.array([f.name], pa.string()))[0][0].as_py() for f in schema
        ]
        self._slow_re = f"{self._fonts.uncovered_pattern()}|{RTL_PATTERN}"
        self._byte_widths = self._ascii_table(bold=False)
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._layout: _Layout | None = None
        self._spool_path = ctx.scratch_dir / f"pdf-spool-{id(self):x}.arrow"
        self._spool: pa.ipc.RecordBatchFileWriter | None = None
        self._spool_sink: pa.NativeFile | None = None
        self._rows = 0
        self._page_starts: list[int] = [0]
        self._remaining = 0.0
        self._page_empty = True
        self._truncated = 0
        self._removed = 0
        self._missing = 0
        self._ascii0 = False
        self._select_ascii = ""

    # --- encoder protocol ------------------------------------------------------------------------

    def write(self, batch: pa.RecordBatch) -> None:
        """Render, fit and spool one batch; nothing is drawn until ``finish``."""
        if batch.num_rows == 0:
            return
        if self._layout is None:
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            if self._pending_rows >= SAMPLE_ROWS:
                self._start()
            return
        self._spool_batch(batch)

    def finish(self) -> None:
        """Draw every page and write the PDF to the sink."""
        if self._layout is None:
            self._start()
        layout = self._layout
        assert layout is not None
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._spool_sink is not None:
            self._spool_sink.close()
            self._spool_sink = None
        try:
            data = self._draw(layout)
        finally:
            self._remove_spool()
        view = memoryview(data)
        sink = self._ctx.sink
        for start in range(0, len(view), CHUNK):
            chunk = view[start : start + CHUNK]
            while chunk:
                n = sink.write(chunk)
                chunk = chunk[n if n is not None else 0 :]
        sink.flush()
        w = self._ctx.warnings
        w.add("CELL_TRUNCATED", self._truncated, "PDF cells were cut to fit their column or page")
        w.add("CHARS_REMOVED", self._removed, "control characters were removed from PDF cells")
        w.add("GLYPH_MISSING", self._missing, "characters no font has were drawn as U+FFFD")

    def abort(self) -> None:
        """Drop the spool; the sink is left as it is."""
        if self._spool is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self._spool.close()
            self._spool = None
        if self._spool_sink is not None:
            self._spool_sink.close()
            self._spool_sink = None
        self._remove_spool()

    @property
    def page_count(self) -> int:
        """Pages the file has (exact once ``finish`` has started)."""
        layout = self._layout
        groups = len(layout.groups) if layout is not None else 1
        return len(self._page_starts) * groups

    # --- layout ----------------------------------------------------------------------------------

    def _start(self) -> None:
        sample = [self._texts(b, sample=True) for b in self._pending]
        self._layout = self._make_layout(sample)
        self._remaining = self._layout.first_cap
        pending, self._pending = self._pending, []
        for b in pending:
            self._spool_batch(b)

    def _make_layout(self, sample: list[list[pa.StringArray]]) -> _Layout:
        fonts, fs, pad = self._fonts, self._fs, self._pad
        ncols = len(self._schema)
        base_w, base_h = _PAGE_SIZES[self._opts.page_size]
        portrait_w = min(base_w, base_h) - 2 * MARGIN
        cap = 0.45 * portrait_w
        natural = []
        for i in range(ncols):
            w = fonts.text_width(self._headers[i], fs, bold=True)
            rows = 0
            for cols in sample:
                col = cols[i][: max(0, SAMPLE_ROWS - rows)]
                rows += len(col)
                if len(col):
                    w = max(w, float(self._measure(col).max()))
            natural.append(min(w + 2 * pad, cap))
        orient = self._opts.orientation
        if orient is Orientation.AUTO:
            orient = Orientation.PORTRAIT if sum(natural) <= portrait_w else Orientation.LANDSCAPE
        if orient is Orientation.PORTRAIT:
            page_w, page_h = min(base_w, base_h), max(base_w, base_h)
        else:
            page_w, page_h = max(base_w, base_h), min(base_w, base_h)
        usable = page_w - 2 * MARGIN
        min_w = 2 * pad + fs * 1.8
        widths = self._fit(natural, usable, min_w) if ncols else []
        if widths is not None:
            groups = [list(range(ncols))]
        else:
            widths = [max(min(n, usable / 6), min(n, min_w)) for n in natural]
            groups = []
            cur: list[int] = [0]
            used = widths[0]
            for i in range(1, ncols):
                if used + widths[i] > usable and len(cur) > 1:
                    groups.append(cur)
                    cur, used = [0], widths[0]
                cur.append(i)
                used += widths[i]
            groups.append(cur)
        xs = []
        for g in groups:
            x, pos = MARGIN, []
            for i in g:
                pos.append(x)
                x += widths[i]
            xs.append(pos)
        header_lines = [
            self._wrap_text(self._headers[i], widths[i] - 2 * pad, bold=True)[:3] or [""]
            for i in range(ncols)
        ]
        lines = max((len(h) for h in header_lines), default=1)
        header_h = lines * self._leading + 2 * self._pad_v
        usable_h = page_h - 2 * MARGIN - fs * 2.0
        other_cap = usable_h - header_h
        first_cap = other_cap - self._title_height()
        max_lines = max(1, int((first_cap - 2 * self._pad_v) // self._leading))
        return _Layout(
            page_w,
            page_h,
            widths,
            xs,
            groups,
            header_lines,
            header_h,
            first_cap,
            other_cap,
            max_lines,
        )

    @staticmethod
    def _fit(natural: list[float], usable: float, min_w: float) -> list[float] | None:
        """Stretch or shrink ``natural`` to ``usable`` proportionally, no column under ``min_w``
        (or its natural width when that is smaller); None when even that does not fit."""
        total = sum(natural)
        if total <= usable:
            return [n * usable / total for n in natural]
        fixed: dict[int, float] = {}
        while True:
            free = [i for i in range(len(natural)) if i not in fixed]
            room = usable - sum(fixed.values())
            free_total = sum(natural[i] for i in free)
            if room <= 0 or not free:
                return None if room < 0 else [fixed.get(i, 0.0) for i in range(len(natural))]
            scale = room / free_total
            low = [i for i in free if natural[i] * scale < min_w]
            if not low:
                return [fixed[i] if i in fixed else natural[i] * scale for i in range(len(natural))]
            for i in low:
                fixed[i] = min(natural[i], min_w)

    def _title_height(self) -> float:
        fs = self._fs
        h = fs * 2.2 * 1.3
        if self._opts.subtitle:
            h += fs * 1.3 * 1.3
        if self._opts.generated_at:
            h += fs * 1.3
        return h + fs

    # --- text ------------------------------------------------------------------------------------

    def _texts(self, batch: pa.RecordBatch, sample: bool = False) -> list[pa.StringArray]:
        common = self._ctx.common
        out = []
        for col in batch.columns:
            text = render_text(col, timezone=common.timezone, null_text=common.null_text)
            text, changed = sanitize_text(text)
            hits = pc.sum(pc.match_substring_regex(text, _CONTROL)).as_py() or 0
            if hits:
                text = pc.replace_substring_regex(text, _CONTROL, "")
                changed += hits
            if not sample:
                self._removed += changed
            if self._wrap:
                text = pc.replace_substring_regex(text, "\\r\\n?", "\n")
                text = pc.replace_substring(text, "\t", " ")
            else:
                text = pc.replace_substring_regex(text, "\\r\\n|[\\r\\n\\t]", " ")
            out.append(text)
        return out

    def _ascii_table(self, bold: bool) -> np.ndarray:
        """Advance of every byte value at size 1000: exact for ASCII, 0 for UTF-8 lead and
        continuation bytes (cells holding those are measured per character instead)."""
        table = np.zeros(256, dtype=np.float64)
        for b in range(32, 127):
            table[b] = self._fonts.char_width(b, bold)
        return table

    def _measure(self, text: pa.StringArray) -> np.ndarray:
        """Width in points of every cell of ``text`` at the body font size."""
        n = len(text)
        if n == 0:
            return np.zeros(0)
        if text.null_count:
            text = pc.fill_null(text, "")
        text = text.cast(pa.string())
        offsets = np.frombuffer(text.buffers()[1], dtype=np.int32)[
            text.offset : text.offset + n + 1
        ]
        data_buf = text.buffers()[2]
        if data_buf is None or offsets[-1] == offsets[0]:
            return np.zeros(n)
        data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]]
        cum = np.concatenate(([0.0], np.cumsum(self._byte_widths[data])))
        rel = offsets - offsets[0]
        widths: np.ndarray = (cum[rel[1:]] - cum[rel[:-1]]) * (self._fs / 1000.0)
        non_ascii = pc.not_equal(pc.binary_length(text), pc.utf8_length(text))
        if pc.any(non_ascii).as_py():
            idx = np.flatnonzero(non_ascii.to_numpy(zero_copy_only=False))
            values = text.take(pa.array(idx)).to_pylist()
            tw = self._fonts.text_width
            for i, s in zip(idx, values, strict=True):
                widths[i] = tw(s, self._fs)
        return widths

    def _cut(self, s: str, avail: float, bold: bool = False) -> str:
        """The longest prefix of ``s`` that fits ``avail`` points with "…" appended."""
        cw = self._fonts.char_width
        limit = avail * 1000.0 / self._fs - cw(ord(ELLIPSIS), bold)
        acc = 0.0
        for i, ch in enumerate(s):
            acc += cw(ord(ch), bold)
            if acc > limit:
                return s[:i].rstrip() + ELLIPSIS
        return s

    def _wrap_text(self, s: str, avail: float, bold: bool = False) -> list[str]:
        """Greedy word wrap of ``s`` into lines of at most ``avail`` points; words longer than a
        line are broken between characters; explicit newlines are kept."""
        cw = self._fonts.char_width
        limit = avail * 1000.0 / self._fs
        lines: list[str] = []
        for para in s.split("\n"):
            line: list[str] = []
            width = 0.0
            for word in para.split(" "):
                ww = sum(cw(ord(ch), bold) for ch in word)
                space = cw(32, bold) if line else 0.0
                if line and width + space + ww <= limit:
                    line.append(" " + word)
                    width += space + ww
                    continue
                if line:
                    lines.append("".join(line))
                    line, width = [], 0.0
                if ww <= limit:
                    line, width = [word], ww
                    continue
                piece: list[str] = []
                pw = 0.0
                for ch in word:
                    c = cw(ord(ch), bold)
                    if piece and pw + c > limit:
                        lines.append("".join(piece))
                        piece, pw = [], 0.0
                    piece.append(ch)
                    pw += c
                line, width = ["".join(piece)], pw
            lines.append("".join(line))
        return lines

    # --- spool -----------------------------------------------------------------------------------

    def _spool_batch(self, batch: pa.RecordBatch) -> None:
        layout = self._layout
        assert layout is not None
        texts = self._texts(batch)
        n = batch.num_rows
        row_lines = np.ones(n, dtype=np.int32)
        arrays: list[pa.Array] = []
        names: list[str] = []
        for i, text in enumerate(texts):
            avail = layout.widths[i] - 2 * self._pad
            widths = self._measure(text)
            over = widths > avail + 1e-6
            if self._wrap:
                over |= pc.match_substring(text, "\n").to_numpy(zero_copy_only=False)
            idx = np.flatnonzero(over)
            if len(idx):
                values = text.to_pylist()
                for j in idx:
                    s = values[j]
                    if self._wrap:
                        lines = self._wrap_text(s, avail)
                        if len(lines) > layout.max_lines:
                            lines = lines[: layout.max_lines]
                            lines[-1] = self._cut(lines[-1] + ELLIPSIS * 2, avail)
                            self._truncated += 1
                        values[j] = "\n".join(lines)
                        row_lines[j] = max(row_lines[j], len(lines))
                    else:
                        values[j] = self._cut(s, avail)
                        self._truncated += 1
                text = pa.array(values, pa.string())
                if self._numeric[i]:
                    widths = self._measure(text)
            arrays.append(text)
            names.append(f"c{i}")
            if self._numeric[i]:
                arrays.append(pa.array(widths, pa.float32()))
            else:
                arrays.append(pa.nulls(n, pa.float32()))
            names.append(f"w{i}")
            # 0: ASCII (drawn as is), 1: other characters of the primary font, 2: fallback or RTL.
            non_ascii = pc.not_equal(pc.binary_length(text), pc.utf8_length(text))
            slow = pc.match_substring_regex(text, self._slow_re)
            kind = pc.add(
                pc.cast(pc.fill_null(non_ascii, False), pa.int8()),
                pc.cast(pc.fill_null(slow, False), pa.int8()),
            )
            arrays.append(kind)
            names.append(f"s{i}")
        arrays.append(pa.array(row_lines, pa.int32()))
        names.append("lines")
        out = pa.RecordBatch.from_arrays(arrays, names=names)
        if self._spool is None:
            self._spool_sink = pa.OSFile(str(self._spool_path), "wb")
            self._spool = pa.ipc.new_file(self._spool_sink, out.schema)
        self._spool.write_batch(out)
        self._paginate(row_lines * self._leading + 2 * self._pad_v)
        self._rows += n

    def _paginate(self, heights: np.ndarray) -> None:
        """Extend the page start list over the next rows, greedily filling each page."""
        layout = self._layout
        assert layout is not None
        cum = np.cumsum(heights)
        i, n, done = 0, len(heights), 0.0
        while i < n:
            fit = int(np.searchsorted(cum, done + self._remaining + 1e-6, side="right")) - i
            if fit <= 0:
                if not self._page_empty:
                    self._new_page(self._rows + i)
                    continue
                fit = 1
            taken = float(cum[i + fit - 1] - done)
            self._remaining -= taken
            self._page_empty = False
            done += taken
            i += fit
            if i < n:
                self._new_page(self._rows + i)

    def _new_page(self, row: int) -> None:
        layout = self._layout
        assert layout is not None
        self._page_starts.append(row)
        self._remaining = layout.other_cap
        self._page_empty = True

    def _remove_spool(self) -> None:
        Path(self._spool_path).unlink(missing_ok=True)

    # --- drawing ---------------------------------------------------------------------------------

    def _pages(
        self,
    ) -> Iterator[tuple[int, list[list[str]], list[list[int]], list[list[float]], list[int]]]:
        """Per page: first row index, then per column its texts, slow-path flags and widths (numeric
        columns only), then the lines of every row."""
        starts = [*self._page_starts, self._rows]
        ncols = len(self._schema)
        buf_t: list[list[str]] = [[] for _ in range(ncols)]
        buf_s: list[list[int]] = [[] for _ in range(ncols)]
        buf_w: list[list[float]] = [[] for _ in range(ncols)]
        buf_l: list[int] = []
        buf_start = 0
        batches: Iterator[pa.RecordBatch] = iter(())
        if self._rows:
            reader = pa.ipc.open_file(pa.memory_map(str(self._spool_path)))
            batches = (reader.get_batch(k) for k in range(reader.num_record_batches))
        for p in range(len(starts) - 1):
            a, b = starts[p], starts[p + 1]
            while buf_start + len(buf_l) < b:
                rb = next(batches)
                for c in range(ncols):
                    buf_t[c].extend(rb.column(3 * c).to_pylist())
                    buf_s[c].extend(rb.column(3 * c + 2).to_pylist())
                    if self._numeric[c]:
                        buf_w[c].extend(rb.column(3 * c + 1).to_pylist())
                buf_l.extend(rb.column(3 * ncols).to_pylist())
            lo, hi = a - buf_start, b - buf_start
            yield (
                a,
                [t[lo:hi] for t in buf_t],
                [s[lo:hi] for s in buf_s],
                [w[lo:hi] for w in buf_w],
                buf_l[lo:hi],
            )
            for c in range(ncols):
                del buf_t[c][:hi]
                del buf_s[c][:hi]
                del buf_w[c][:hi]
            del buf_l[:hi]
            buf_start = b

    def _draw(self, layout: _Layout) -> bytes:
        opts = self._opts
        title = opts.title or Path(self._ctx.common.file_name).stem or "export"
        canvas = Canvas(
            str(self._ctx.scratch_dir / "unused.pdf"),
            pagesize=(layout.page_w, layout.page_h),
            pageCompression=1,
            initialFontName=self._fonts.primary.name,
            initialFontSize=self._fs,
        )
        canvas.setTitle(title)
        canvas.setSubject(opts.subtitle)
        canvas.setCreator("exportd")
        self._prepare_ascii(canvas)
        total_pages = self.page_count
        ngroups = len(layout.groups)
        page_no = 0
        last = time.monotonic()
        progress = self._ctx.progress
        for first_row, texts, slow, widths, lines in self._pages():
            for g in range(ngroups):
                page_no += 1
                top = layout.page_h - MARGIN
                if page_no == 1:
                    top = self._draw_title(canvas, layout, title, top)
                self._draw_table(canvas, layout, g, top, first_row, texts, slow, widths, lines)
                self._draw_footer(canvas, layout, f"Page {page_no} of {total_pages}")
                canvas.showPage()
            now = time.monotonic()
            if progress is not None and now - last >= _PROGRESS_EVERY:
                progress(first_row + len(lines), self._rows)
                last = now
        if progress is not None:
            progress(self._rows, self._rows)
        return bytes(canvas.getpdfdata())

    def _prepare_ascii(self, canvas: Canvas) -> None:
        """Enable drawing ASCII text without reportlab's per-character subset mapping.

        reportlab puts printable ASCII into subset 0 of a TrueType font under its own codes
        (``asciiReadable``); when that holds for this document, ASCII cells are written as PDF
        string operands directly, using the documented ``splitString``/``getSubsetInternalName``
        protocol of ``reportlab.pdfbase.ttfonts`` once per document.
        """
        font = pdfmetrics.getFont(self._fonts.primary.name)
        doc = canvas._doc
        printable = "".join(map(chr, range(32, 127)))
        self._ascii0 = font.splitString(printable, doc) == [(0, printable.encode("latin-1"))]
        name = font.getSubsetInternalName(0, doc)
        self._select_ascii = f"{name} {fp_str(self._fs)} Tf"

    def _text_runs(self, to: PDFTextObject, s: str, size: float, bold: bool) -> None:
        """Draw ``s`` at the cursor with font fallback, leaving the body font selected."""
        runs, missing = self._fonts.runs(visual_order(s), bold)
        self._missing += missing
        for name, part in runs:
            to.setFont(name, size, self._leading)
            to.textOut(part)
        to.setFont(self._fonts.head(bold).name, size, self._leading)

    def _line(self, canvas: Canvas, x: float, y: float, s: str, size: float, bold: bool) -> None:
        to = canvas.beginText(x, y)
        to.setFont(self._fonts.head(bold).name, size, self._leading)
        self._text_runs(to, s, size, bold)
        canvas.drawText(to)

    def _draw_title(self, canvas: Canvas, layout: _Layout, title: str, top: float) -> float:
        fs = self._fs
        usable = layout.page_w - 2 * MARGIN
        y = top - fs * 2.2
        size = fs * 2.2
        self._line(canvas, MARGIN, y, self._fit_line(title, usable, size, True), size, True)
        y -= fs * 1.3 * 1.3
        if self._opts.subtitle:
            size = fs * 1.3
            self._line(
                canvas,
                MARGIN,
                y,
                self._fit_line(self._opts.subtitle, usable, size, False),
                size,
                False,
            )
            y -= fs * 1.3
        if self._opts.generated_at:
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            canvas.setFillColorRGB(0.35, 0.35, 0.35)
            self._line(canvas, MARGIN, y, f"Generated at {stamp}", fs, False)
            canvas.setFillColorRGB(0, 0, 0)
        return top - self._title_height()

    def _fit_line(self, s: str, avail: float, size: float, bold: bool) -> str:
        s = " ".join(s.split())
        if self._fonts.text_width(s, size, bold) <= avail:
            return s
        cw = self._fonts.char_width
        limit = avail * 1000.0 / size - cw(ord(ELLIPSIS), bold)
        acc = 0.0
        for i, ch in enumerate(s):
            acc += cw(ord(ch), bold)
            if acc > limit:
                return s[:i] + ELLIPSIS
        return s

    def _draw_footer(self, canvas: Canvas, layout: _Layout, text: str) -> None:
        size = self._fs
        width = self._fonts.text_width(text, size)
        canvas.setFont(self._fonts.primary.name, size)
        canvas.drawString((layout.page_w - width) / 2, MARGIN - size * 0.5, text)

    def _draw_table(
        self,
        canvas: Canvas,
        layout: _Layout,
        g: int,
        top: float,
        first_row: int,
        texts: list[list[str]],
        slow: list[list[int]],
        widths: list[list[float]],
        lines: list[int],
    ) -> None:
        fs, pad, pad_v, leading = self._fs, self._pad, self._pad_v, self._leading
        cols = layout.groups[g]
        xs = layout.xs[g]
        left = MARGIN
        right = xs[-1] + layout.widths[cols[-1]] if cols else MARGIN
        # Header band.
        canvas.setFillColorRGB(*_HEADER_FILL)
        canvas.rect(left, top - layout.header_h, right - left, layout.header_h, stroke=0, fill=1)
        canvas.setFillColorRGB(0, 0, 0)
        head = self._fonts.head(True).name
        ascent = fs * 0.95
        for x, i in zip(xs, cols, strict=True):
            to = canvas.beginText(x + pad, top - pad_v - ascent)
            to.setFont(head, fs, leading)
            for line in layout.header_lines[i]:
                self._text_runs(to, line, fs, True)
                to.textLine("")
            canvas.drawText(to)
        y0 = top - layout.header_h
        n = len(lines)
        heights = [k * leading + 2 * pad_v for k in lines]
        tops = [y0]
        for h in heights:
            tops.append(tops[-1] - h)
        if self._opts.zebra and n:
            path = canvas.beginPath()
            for r in range(n):
                if (first_row + r) % 2 == 1:
                    path.rect(left, tops[r + 1], right - left, heights[r])
            canvas.setFillColorRGB(*_ZEBRA)
            canvas.drawPath(path, stroke=0, fill=1)
            canvas.setFillColorRGB(0, 0, 0)
        canvas.setLineWidth(0.5)
        canvas.line(left, y0, right, y0)
        canvas.line(left, tops[-1], right, tops[-1])
        body = self._fonts.primary.name
        uniform = all(k == 1 for k in lines)
        tw = self._fonts.text_width
        row_h = heights[0] if n else leading
        for x, i in zip(xs, cols, strict=True):
            col, kinds, col_w = texts[i], slow[i], widths[i]
            avail = layout.widths[i] - 2 * pad
            right_x = x + pad + avail
            numeric = self._numeric[i]
            to = canvas.beginText(x + pad, y0 - pad_v - ascent)
            to.setFont(body, fs, row_h if uniform else leading)
            code = to._code
            if uniform and not numeric and self._ascii0 and not any(kinds):
                code.append(f"{self._select_ascii} {fp_str(row_h)} TL")
                code.append("(" + ") Tj T* (".join(map(escapePDF, col)) + ") Tj T*")
                canvas.drawText(to)
                continue
            if uniform and not numeric:
                for s, k in zip(col, kinds, strict=True):
                    if k == 2:
                        self._text_runs(to, s, fs, False)
                        to.setLeading(row_h)
                        to.textLine("")
                    else:
                        to.textLine(s)
                canvas.drawText(to)
                continue
            ascii0 = self._ascii0
            for r in range(n):
                base = tops[r] - pad_v - ascent
                s = col[r]
                k = kinds[r]
                if ascii0 and k == 0 and numeric and "\n" not in s:
                    code.append(self._select_ascii)
                    at = fp_str(right_x - col_w[r], base)
                    code.append(f"1 0 0 1 {at} Tm ({escapePDF(s)}) Tj")
                    to._curSubset = 0
                    continue
                multi = "\n" in s
                cell = s.split("\n") if multi else [s]
                for j, line in enumerate(cell):
                    yy = base - j * leading
                    if numeric:
                        w = tw(line, fs) if multi else col_w[r]
                        to.setTextOrigin(right_x - w, yy)
                    else:
                        to.setTextOrigin(x + pad, yy)
                    if k == 2:
                        self._text_runs(to, line, fs, False)
                    else:
                        to.textOut(line)
            canvas.drawText(to)
