"""The small XML parts of an XLSX package, written once per workbook.

The worksheet XML is streamed by ``xlsx.XlsxEncoder``; everything here is tiny and built from plain
strings. ``[Content_Types].xml`` gives every ``.xml`` part the worksheet content type by default, so
it can be written before the number of sheets is known.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_REL_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
XML_DECL = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

CONTENT_TYPES = (
    XML_DECL + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" '
    'ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/styles.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    "</Types>"
)

ROOT_RELS = (
    XML_DECL + f'<Relationships xmlns="{PKG_REL_NS}">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/>'
    "</Relationships>"
)


@dataclass(frozen=True)
class SheetEntry:
    """One finished worksheet: its name, part number (sheetN.xml) and autofilter range, if any."""

    name: str
    number: int
    filter_range: str | None


def sheet_part_name(number: int) -> str:
    """Zip entry name of worksheet ``number`` (1-based)."""
    return f"xl/worksheets/sheet{number}.xml"


def workbook_xml(sheets: list[SheetEntry]) -> str:
    """The workbook part: the sheet list and the hidden filter names Excel expects for filters."""
    entries = "".join(
        f'<sheet name={quoteattr(s.name)} sheetId={quoteattr(str(s.number))} r:id="rId{s.number}"/>'
        for s in sheets
    )
    names = "".join(
        f'<definedName name="_xlnm._FilterDatabase" localSheetId="{i}" hidden="1">'
        f"{escape(quote_sheet_name(s.name))}!{s.filter_range}</definedName>"
        for i, s in enumerate(sheets)
        if s.filter_range
    )
    defined = f"<definedNames>{names}</definedNames>" if names else ""
    return (
        XML_DECL + f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">'
        '<bookViews><workbookView activeTab="0"/></bookViews>'
        f"<sheets>{entries}</sheets>{defined}</workbook>"
    )


def workbook_rels(sheet_count: int) -> str:
    """Relationships from the workbook to its sheets (rId1..rIdN) and styles."""
    ws = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"
    st = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles"
    rels = "".join(
        f'<Relationship Id="rId{n}" Type="{ws}" Target="worksheets/sheet{n}.xml"/>'
        for n in range(1, sheet_count + 1)
    )
    rels += f'<Relationship Id="rId{sheet_count + 1}" Type="{st}" Target="styles.xml"/>'
    return XML_DECL + f'<Relationships xmlns="{PKG_REL_NS}">{rels}</Relationships>'


class StyleTable:
    """The workbook's cell formats: index 0 is the default, 1 the (bold) header, then one per
    distinct number format asked for. ``style_for`` returns the ``s`` attribute value to use."""

    def __init__(self, bold_header: bool) -> None:
        self._bold = bold_header
        self._formats: list[str] = []

    HEADER = 1

    def style_for(self, number_format: str) -> int:
        """Cell format index for ``number_format`` (an Excel format code); 0 for the empty code."""
        if not number_format:
            return 0
        if number_format not in self._formats:
            self._formats.append(number_format)
        return 2 + self._formats.index(number_format)

    def xml(self) -> str:
        """The styles part."""
        num_fmts = "".join(
            f'<numFmt numFmtId="{164 + i}" formatCode={quoteattr(code)}/>'
            for i, code in enumerate(self._formats)
        )
        xf = '<xf numFmtId="{0}" fontId="{1}" fillId="0" borderId="0" xfId="0"{2}/>'
        xfs = [xf.format(0, 0, ""), xf.format(0, 1 if self._bold else 0, ' applyFont="1"')]
        xfs += [xf.format(164 + i, 0, ' applyNumberFormat="1"') for i in range(len(self._formats))]
        font = '<font>{}<sz val="11"/><name val="Calibri"/><family val="2"/></font>'
        return (
            XML_DECL
            + f'<styleSheet xmlns="{MAIN_NS}">'
            + (f'<numFmts count="{len(self._formats)}">{num_fmts}</numFmts>' if num_fmts else "")
            + f'<fonts count="2">{font.format("")}{font.format("<b/>")}</fonts>'
            '<fills count="2"><fill><patternFill patternType="none"/></fill>'
            '<fill><patternFill patternType="gray125"/></fill></fills>'
            '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border>'
            "</borders>"
            '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/>'
            "</cellStyleXfs>"
            f'<cellXfs count="{len(xfs)}">{"".join(xfs)}</cellXfs>'
            '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
            "</styleSheet>"
        )


def quote_sheet_name(name: str) -> str:
    """``name`` as it appears in a formula reference: always single-quoted, quotes doubled."""
    return "'" + name.replace("'", "''") + "'"


def column_letters(index: int) -> str:
    """Excel column name of the 0-based column ``index`` (0 -> A, 26 -> AA)."""
    letters = ""
    n = index + 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def sheet_head(widths: list[float], freeze_header: bool) -> str:
    """Everything of a worksheet before its first row: the frozen pane, column widths and the
    opening of sheetData."""
    if freeze_header:
        view = (
            '<sheetViews><sheetView workbookViewId="0">'
            '<pane ySplit="1" topLeftCell="A2" activePane="bottomLeft" state="frozen"/>'
            '<selection pane="bottomLeft" activeCell="A2" sqref="A2"/>'
            "</sheetView></sheetViews>"
        )
    else:
        view = '<sheetViews><sheetView workbookViewId="0"/></sheetViews>'
    cols = "".join(
        f'<col min="{i}" max="{i}" width="{w:.2f}" customWidth="1"/>'
        for i, w in enumerate(widths, start=1)
    )
    return (
        XML_DECL + f'<worksheet xmlns="{MAIN_NS}" xmlns:r="{REL_NS}">{view}'
        '<sheetFormatPr defaultRowHeight="15"/>'
        + (f"<cols>{cols}</cols>" if cols else "")
        + "<sheetData>"
    )


def sheet_tail(filter_range: str | None) -> str:
    """Everything of a worksheet after its last row."""
    auto = f'<autoFilter ref="{filter_range}"/>' if filter_range else ""
    return f"</sheetData>{auto}</worksheet>"
