"""The PDF encoder, proven by independent readers: pypdf (pages, sizes, content) and poppler's
pdftotext/pdffonts (extracted text, embedded fonts)."""

from __future__ import annotations

import re
import subprocess
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from exportd.server.errors import InvalidArgument
from exportd.server.exporters import EncoderContext, create_encoder
from exportd.server.exporters.fonts import DEFAULT_FONT_PATHS, FontSet, set_default_fontset
from exportd.server.exporters.options import (
    CellOverflow,
    CommonOptions,
    Orientation,
    PageSize,
    PdfOptions,
)
from exportd.server.exporters.pdf import PdfEncoder
from pypdf import PdfReader

BIDI_MARKS = re.compile("[\u200e\u200f\u202a-\u202e]")
CUSTOMERS = ["Anna Berg", "Zürich AG", "Москва", "Bob Ltd", "Σοφία"]


def reference_table(n: int) -> pa.Table:
    """The eight-column reference table of PERF.md."""
    ids = list(range(1, n + 1))
    return pa.table(
        {
            "order_id": pa.array(ids, pa.int64()),
            "customer": [CUSTOMERS[i % 5] for i in ids],
            "amount": [round(i * 1.37 % 1000, 2) for i in ids],
            "qty": pa.array([i % 50 for i in ids], pa.int32()),
            "paid": [i % 3 == 0 for i in ids],
            "placed_at": pa.array([datetime(2024, 1, 1, 8, 0) for _ in ids], pa.timestamp("us")),
            "note": [f"deliver before noon #{i % 97}" for i in ids],
            "ratio": [i / 7 for i in ids],
        }
    )


class Exported:
    def __init__(self, path: Path, encoder: PdfEncoder, ctx: EncoderContext) -> None:
        self.path = path
        self.encoder = encoder
        self.ctx = ctx

    def pages(self, layout: bool = False) -> list[str]:
        args = ["pdftotext", "-enc", "UTF-8"] + (["-layout"] if layout else [])
        out = subprocess.run(
            [*args, str(self.path), "-"], capture_output=True, check=True, text=True
        ).stdout
        pages = out.split("\f")
        if pages and not pages[-1].strip():
            pages.pop()
        return [BIDI_MARKS.sub("", p) for p in pages]

    def reader(self) -> PdfReader:
        return PdfReader(self.path)

    def fonts(self) -> list[list[str]]:
        out = subprocess.run(
            ["pdffonts", str(self.path)], capture_output=True, check=True, text=True
        ).stdout
        return [line.split() for line in out.splitlines()[2:]]


def export(
    tmp_path: Path,
    table: pa.Table,
    options: PdfOptions | None = None,
    *,
    batch_rows: int = 300,
    common: CommonOptions | None = None,
    fonts: FontSet | None = None,
) -> Exported:
    scratch = tmp_path / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "report.pdf"
    seen: list[tuple[int, int]] = []
    with path.open("wb", buffering=0) as sink:
        ctx = EncoderContext(
            sink=sink,
            common=common or CommonOptions(file_name="report.pdf"),
            scratch_dir=scratch,
            progress=lambda done, total: seen.append((done, total)),
        )
        opts = options or PdfOptions()
        if fonts is None:
            enc = create_encoder("pdf", table.schema, opts, ctx)
        else:
            enc = PdfEncoder(table.schema, opts, ctx, fonts=fonts)
        assert isinstance(enc, PdfEncoder)
        for batch in table.to_batches(max_chunksize=batch_rows):
            enc.write(batch)
        enc.finish()
    assert list(scratch.iterdir()) == [], "the spool is removed"
    assert seen and seen[-1] == (table.num_rows, table.num_rows)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    return Exported(path, enc, ctx)


def first_tokens(page: str) -> list[str]:
    return [line.split()[0] for line in page.splitlines() if line.strip()]


def test_reference_table_every_page_has_header_footer_and_every_row(tmp_path: Path) -> None:
    n = 2500
    out = export(tmp_path, reference_table(n))
    pages = out.pages(layout=True)
    total = out.encoder.page_count
    assert len(out.reader().pages) == total == len(pages)
    assert total > 10
    ids: list[int] = []
    for number, page in enumerate(pages, start=1):
        header_line = next(line for line in page.splitlines() if "order_id" in line)
        assert header_line.split() == reference_table(0).column_names
        assert f"Page {number} of {total}" in page
        ids.extend(int(t) for t in first_tokens(page) if t.isdigit())
    assert ids == list(range(1, n + 1))
    assert "report" in pages[0].splitlines()[0]
    assert "Generated at" in pages[0] and "Generated at" not in pages[1]
    text = "".join(pages)
    for name in CUSTOMERS:
        assert name in text


def test_every_font_is_embedded(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2], "text": ["plain", "中文 עברית"]})
    out = export(tmp_path, table)
    fonts = out.fonts()
    assert len(fonts) >= 3
    for row in fonts:
        assert row[-5] == "yes", row  # emb column
    names = " ".join(row[0] for row in fonts)
    assert "DejaVuSans" in names and "DejaVuSans-Bold" in names and "DroidSansFallback" in names


HOSTILE = {
    "latin": "Grüße aus Köln, ça va? Ærøskøbing",
    "greek": "Καλημέρα κόσμε",
    "cyrillic": "Здравствуйте, мир",
    "chinese": "你好\uff0c世界",
    "japanese": "こんにちは世界",
    "arabic": "مرحبا بالعالم",
    "hebrew": "שלום עולם",
}


def test_every_script_is_extractable(tmp_path: Path) -> None:
    names = list(HOSTILE)
    table = pa.table(
        {"id": list(range(1, len(names) + 1)), "script": names, "text": [HOSTILE[k] for k in names]}
    )
    out = export(tmp_path, table)
    text = "\n".join(out.pages())
    for key, value in HOSTILE.items():
        assert value in text, key
    # Each text sits on its own row, beside its id and script name.
    rows = {}
    for line in out.pages(layout=True)[0].splitlines():
        words = line.split()
        if words and words[0].isdigit():
            rows[int(words[0])] = line
    for i, key in enumerate(names, start=1):
        assert key in rows[i] and HOSTILE[key] in rows[i], (key, rows[i])
    assert "GLYPH_MISSING" not in out.ctx.warnings.counts
    assert "\ufffd" not in text


@pytest.mark.skipif(not DEFAULT_FONT_PATHS[3].exists(), reason="fonts-nanum is not installed")
def test_korean_hangul_is_extractable(tmp_path: Path) -> None:
    out = export(tmp_path, pa.table({"id": [1], "text": ["안녕하세요 세계"]}))
    assert "안녕하세요 세계" in "".join(out.pages())
    assert "GLYPH_MISSING" not in out.ctx.warnings.counts


def test_mixed_direction_cell_keeps_logical_order(tmp_path: Path) -> None:
    table = pa.table({"id": [1], "text": ["order 42 שלום עולם"]})
    out = export(tmp_path, table)
    assert "order 42 שלום עולם" in "".join(out.pages())


def test_characters_no_font_has_are_counted_not_boxed(tmp_path: Path) -> None:
    crab = "\U0001f980"  # in none of the fonts
    smile = "\U0001f600"  # DejaVu has it, but beyond U+FFFF it could not be extracted
    table = pa.table({"id": [1, 2, 3], "text": [f"crab {crab}{crab}", f"smile {smile}", "☺ ok"]})
    out = export(tmp_path, table)
    assert out.ctx.warnings.counts["GLYPH_MISSING"] == 3
    text = "".join(out.pages())
    assert "crab \ufffd\ufffd" in text
    assert "smile \ufffd" in text
    assert "☺ ok" in text


def test_fontset_from_paths_is_the_fallback_chain(tmp_path: Path) -> None:
    only_latin = FontSet.from_paths([DEFAULT_FONT_PATHS[0]])
    table = pa.table({"id": [1], "text": ["abc 中文"]})
    out = export(tmp_path, table, fonts=only_latin)
    assert out.ctx.warnings.counts["GLYPH_MISSING"] == 2
    assert "abc \ufffd\ufffd" in "".join(out.pages())
    names = " ".join(row[0] for row in out.fonts())
    assert "Droid" not in names and "Bold" not in names


def test_process_default_fontset_can_be_replaced(tmp_path: Path) -> None:
    serif = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")
    try:
        set_default_fontset([serif])
        out = export(tmp_path, pa.table({"id": [1], "text": ["Grüße"]}))
    finally:
        set_default_fontset(None)
    names = [row[0] for row in out.fonts()]
    assert names and all("DejaVuSerif" in name for name in names)
    assert "Grüße" in "".join(out.pages())


def _size(out: Exported) -> tuple[float, float]:
    box = out.reader().pages[0].mediabox
    return float(box.width), float(box.height)


@pytest.mark.parametrize(
    ("page_size", "short", "long"),
    [
        (PageSize.A4, 595.28, 841.89),
        (PageSize.LETTER, 612.0, 792.0),
        (PageSize.LEGAL, 612.0, 1008.0),
        (PageSize.A3, 841.89, 1190.55),
    ],
)
def test_page_sizes_and_orientation(
    tmp_path: Path, page_size: PageSize, short: float, long: float
) -> None:
    table = pa.table({"id": [1, 2, 3], "name": ["a", "b", "c"]})
    portrait = export(tmp_path / "p", table, PdfOptions(page_size=page_size))
    w, h = _size(portrait)
    assert (w, h) == pytest.approx((short, long), abs=0.01)
    landscape = export(
        tmp_path / "l", table, PdfOptions(page_size=page_size, orientation=Orientation.LANDSCAPE)
    )
    assert _size(landscape) == pytest.approx((long, short), abs=0.01)


def test_auto_orientation_turns_wide_tables_landscape(tmp_path: Path) -> None:
    narrow = export(tmp_path / "n", pa.table({"id": [1], "x": ["short"]}))
    w, h = _size(narrow)
    assert w < h
    wide = pa.table({f"column_{i}": [f"value number {i} here"] for i in range(8)})
    out = export(tmp_path / "w", wide)
    w, h = _size(out)
    assert w > h
    forced = export(tmp_path / "f", wide, PdfOptions(orientation=Orientation.PORTRAIT))
    w, h = _size(forced)
    assert w < h


LONG = " ".join(f"word{i:03d}" for i in range(120))


def test_ellipsis_cuts_cells_to_one_line(tmp_path: Path) -> None:
    n = 60
    table = pa.table({"id": list(range(1, n + 1)), "note": [LONG] * n})
    out = export(tmp_path, table, PdfOptions(cell_overflow=CellOverflow.ELLIPSIS))
    pages = out.pages(layout=True)
    text = "".join(pages)
    assert "word119" not in text
    assert text.count("\u2026") == n
    assert out.ctx.warnings.counts["CELL_TRUNCATED"] == n
    assert len(out.reader().pages) == out.encoder.page_count
    body = [line for p in pages for line in p.splitlines() if "word000" in line]
    assert [int(line.split()[0]) for line in body] == list(range(1, n + 1))


def test_wrap_keeps_every_word_and_paginates_exactly(tmp_path: Path) -> None:
    n = 60
    table = pa.table(
        {"id": list(range(1, n + 1)), "note": [LONG if i % 4 == 0 else "short" for i in range(n)]}
    )
    ellipsis = export(tmp_path / "e", table)
    out = export(tmp_path / "w", table, PdfOptions(cell_overflow=CellOverflow.WRAP))
    pages = out.pages()
    assert len(out.reader().pages) == out.encoder.page_count == len(pages)
    assert out.encoder.page_count > ellipsis.encoder.page_count
    words = re.findall(r"word\d{3}", "".join(pages))
    assert words == [f"word{i:03d}" for i in range(120)] * (n // 4)
    assert "CELL_TRUNCATED" not in out.ctx.warnings.counts
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
        assert "note" in page


def test_wrap_cuts_a_cell_taller_than_a_page(tmp_path: Path) -> None:
    huge = "x" * 40_000
    table = pa.table({"id": [1, 2, 3], "note": ["a", huge, "c"]})
    out = export(tmp_path, table, PdfOptions(cell_overflow=CellOverflow.WRAP))
    assert out.ctx.warnings.counts["CELL_TRUNCATED"] == 1
    pages = out.pages(layout=True)
    assert len(out.reader().pages) == out.encoder.page_count == len(pages)
    ids = [int(t) for p in pages for t in first_tokens(p) if t.isdigit()]
    assert ids == [1, 2, 3]


def _content(out: Exported, page: int = 0) -> str:
    data = out.reader().pages[page].get_contents()
    assert data is not None
    return data.get_data().decode("latin-1")


def test_zebra_shades_every_other_row(tmp_path: Path) -> None:
    table = pa.table({"id": list(range(1, 21))})
    zebra = _content(export(tmp_path / "z", table, PdfOptions(zebra=True)))
    plain = _content(export(tmp_path / "p", table, PdfOptions(zebra=False)))
    shade = re.compile(r"(?<![\d.])0?\.94 0?\.95 0?\.97 rg")
    assert shade.search(zebra) and not shade.search(plain)
    assert zebra.count(" re") - plain.count(" re") == 10


def test_empty_table_is_one_page_with_the_header(tmp_path: Path) -> None:
    out = export(tmp_path, reference_table(0))
    pages = out.pages(layout=True)
    assert len(out.reader().pages) == 1 == len(pages)
    assert "Page 1 of 1" in pages[0]
    header = next(line for line in pages[0].splitlines() if "order_id" in line)
    assert header.split() == reference_table(0).column_names


def test_two_hundred_columns_split_into_page_groups(tmp_path: Path) -> None:
    n, cols = 90, 200
    table = pa.table(
        {"id": list(range(1, n + 1))}
        | {f"c{j:03d}": [f"r{i}c{j}" for i in range(n)] for j in range(1, cols)}
    )
    out = export(tmp_path, table)
    pages = out.pages(layout=True)
    total = out.encoder.page_count
    assert len(out.reader().pages) == total == len(pages)
    text = "".join(pages)
    for j in range(1, cols):
        assert f"c{j:03d}" in text
        assert f"r{n - 1}c{j}" in text
    groups = 0
    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {total}" in page
        header = next(line for line in page.splitlines() if line.split()[:1] == ["id"])
        groups += "c001" in header
    # Every page repeats the id column, and the row slices are the same for every group.
    ids = [int(t) for p in pages for t in first_tokens(p) if t.isdigit()]
    assert sorted(set(ids)) == list(range(1, n + 1))
    assert len(ids) == n * (total // groups)


def test_title_subtitle_and_generated_line(tmp_path: Path) -> None:
    table = pa.table({"id": [1]})
    out = export(
        tmp_path,
        table,
        PdfOptions(title="Quarterly Umsätze", subtitle="Region Nord — 東京", generated_at=False),
    )
    first = out.pages()[0]
    assert "Quarterly Umsätze" in first and "Region Nord — 東京" in first
    assert "Generated at" not in first
    metadata = out.reader().metadata
    assert metadata is not None
    assert metadata.title == "Quarterly Umsätze"


def test_values_render_like_text_formats(tmp_path: Path) -> None:
    table = pa.table(
        {
            "id": [1, 2, 3],
            "when": pa.array([0, None, 0], pa.timestamp("s", tz="UTC")),
            "big": pa.array([2**63 - 1, -(2**63), 0], pa.int64()),
            "ctl": ["tab\there", "line\nbreak\x07bell", "del\x7f and c1\x85"],
        }
    )
    out = export(
        tmp_path,
        table,
        common=CommonOptions(file_name="x.pdf", timezone="Asia/Tokyo", null_text="(none)"),
    )
    text = "".join(out.pages(layout=True))
    assert "1970-01-01 09:00:00+09:00" in text
    assert "(none)" in text
    assert "9223372036854775807" in text and "-9223372036854775808" in text
    assert "tab here" in text and "line breakbell" in text
    assert "del and c1" in text
    assert out.ctx.warnings.counts["CHARS_REMOVED"] == 2
    assert "GLYPH_MISSING" not in out.ctx.warnings.counts


def test_abort_removes_the_spool(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with (tmp_path / "x.pdf").open("wb", buffering=0) as sink:
        ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=scratch)
        table = reference_table(2000)
        enc = create_encoder("pdf", table.schema, PdfOptions(), ctx)
        for batch in table.to_batches(max_chunksize=500):
            enc.write(batch)
        assert list(scratch.iterdir())
        enc.abort()
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("size", [4.0, 30.0])
def test_font_size_out_of_range_is_invalid(tmp_path: Path, size: float) -> None:
    with (tmp_path / "x.pdf").open("wb", buffering=0) as sink:
        ctx = EncoderContext(sink=sink, common=CommonOptions(), scratch_dir=tmp_path)
        with pytest.raises(InvalidArgument):
            create_encoder("pdf", pa.schema([("a", pa.int64())]), PdfOptions(font_size=size), ctx)


@pytest.mark.parametrize("font_size", [5.0, 12.0, 24.0])
def test_font_sizes_keep_pagination_exact(tmp_path: Path, font_size: float) -> None:
    out = export(tmp_path, reference_table(400), PdfOptions(font_size=font_size))
    pages = out.pages(layout=True)
    assert len(out.reader().pages) == out.encoder.page_count == len(pages)
    ids = [int(t) for p in pages for t in first_tokens(p) if t.isdigit()]
    assert ids == list(range(1, 401))
