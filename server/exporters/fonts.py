"""TrueType fonts for PDF text in any script, with per-character fallback.

A ``FontSet`` is an ordered chain of TrueType files. Text is drawn in the first font that has a
glyph for each character; a character no font has becomes U+FFFD (drawn by the primary font when it
has that glyph) and is counted by the caller, so a PDF never shows an empty missing-glyph box.
Every font is embedded by reportlab as a subset with a ToUnicode map, so the text is extractable.

Only TrueType outlines (``.ttf``) work: reportlab cannot embed CFF/OpenType-CFF fonts. The
default chain is DejaVu Sans (Latin, Greek, Cyrillic, Arabic, Hebrew, many symbols) with DejaVu Sans
Bold for headers and titles, then Droid Sans Fallback for Chinese and Japanese, then Nanum Gothic
for Korean Hangul, which Droid Sans Fallback lacks (Debian packages fonts-dejavu-core,
fonts-droid-fallback and fonts-nanum).

Characters beyond the Basic Multilingual Plane (most emoji) count as missing even where a font has
them: reportlab writes 16-bit ToUnicode entries, so such characters would extract as the wrong text.

Right-to-left text: ``visual_order`` reorders runs of Hebrew/Arabic characters for display (a
simplified form of the Unicode bidi algorithm: the paragraph direction comes from the first strong
character, digit runs inside right-to-left text stay left-to-right). Arabic letters are drawn in
their isolated forms (there is no shaping engine here), which stays legible and extracts as the
original characters.

Each file is parsed and registered with reportlab once per process; a FontSet is immutable and may
be shared between threads.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import FF_FORCEBOLD, TTFont

__all__ = [
    "DEFAULT_FONT_PATHS",
    "REPLACEMENT",
    "FontFace",
    "FontSet",
    "default_fontset",
    "set_default_fontset",
    "visual_order",
]

FONT_DIR = Path("/usr/share/fonts/truetype")
DEFAULT_FONT_PATHS: tuple[Path, ...] = (
    FONT_DIR / "dejavu" / "DejaVuSans.ttf",
    FONT_DIR / "dejavu" / "DejaVuSans-Bold.ttf",
    FONT_DIR / "droid" / "DroidSansFallbackFull.ttf",
    FONT_DIR / "nanum" / "NanumGothic.ttf",
)
"""The default chain: regular faces in order are the fallback chain; bold faces serve headers.
Files that are not installed are left out of the default set."""

REPLACEMENT = "\ufffd"
"""Drawn in place of a character that no font in the set can show."""

_REGISTER_LOCK = threading.Lock()
_REGISTERED: dict[Path, FontFace] = {}


@dataclass(frozen=True, eq=False)
class FontFace:
    """One registered TrueType file: its reportlab name, weight and the code points it covers."""

    name: str
    path: Path
    bold: bool
    codepoints: frozenset[int]
    widths: dict[int, float] = field(repr=False)
    default_width: float

    def width_of(self, cp: int) -> float:
        """Advance of code point ``cp`` in thousandths of the font size."""
        return self.widths.get(cp, self.default_width)


def _load_face(path: Path) -> FontFace:
    resolved = path.resolve()
    with _REGISTER_LOCK:
        face = _REGISTERED.get(resolved)
        if face is not None:
            return face
        if resolved.suffix.lower() not in (".ttf", ".ttc"):
            raise ValueError(f"{path}: only TrueType (.ttf) fonts can be embedded")
        name = f"exportd-{resolved.stem}-{len(_REGISTERED)}"
        font = TTFont(name, str(resolved))
        pdfmetrics.registerFont(font)
        ttf = font.face
        face = FontFace(
            name=name,
            path=resolved,
            bold=bool(ttf.flags & FF_FORCEBOLD),
            codepoints=frozenset(ttf.charToGlyph),
            widths=dict(ttf.charWidths),
            default_width=float(ttf.defaultWidth),
        )
        _REGISTERED[resolved] = face
        return face


def _ranges(codepoints: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for cp in sorted(codepoints):
        if out and cp == out[-1][1] + 1:
            out[-1] = (out[-1][0], cp)
        else:
            out.append((cp, cp))
    return out


def _re2_class(ranges: list[tuple[int, int]], negate: bool) -> str:
    parts = [f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges]
    return "[" + ("^" if negate else "") + "".join(parts) + "]"


class FontSet:
    """An ordered fallback chain of regular faces plus the bold chain used for headers.

    ``regular`` is tried in order for body text; ``bold`` (bold faces first, then the regular chain)
    for headers and titles. Widths and font choice are cached per code point.
    """

    def __init__(self, faces: Sequence[FontFace]) -> None:
        regular = [f for f in faces if not f.bold]
        bolds = [f for f in faces if f.bold]
        if not regular:
            regular = list(bolds)
        if not regular:
            raise ValueError("a FontSet needs at least one font")
        self.regular: tuple[FontFace, ...] = tuple(regular)
        self.bold: tuple[FontFace, ...] = tuple(bolds + regular)
        self._pick: dict[tuple[bool, int], FontFace | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, paths: Sequence[Path | str]) -> FontSet:
        """Load (once per process) and chain the TrueType files at ``paths``, in order.

        Faces whose OS/2 weight is 600 or more are bold and serve headers; the others form the
        body fallback chain in the order given. Raises ``ValueError`` for a non-TrueType file and
        ``OSError`` for a missing one.
        """
        return cls([_load_face(Path(p)) for p in paths])

    @property
    def primary(self) -> FontFace:
        """The first regular face: what text is drawn in when it covers every character."""
        return self.regular[0]

    def head(self, bold: bool) -> FontFace:
        """The first face of the regular or bold chain."""
        return self.bold[0] if bold else self.regular[0]

    def uncovered_pattern(self, bold: bool = False) -> str:
        """An RE2 character class matching every character the chain's first face lacks.

        A column with no match draws entirely in that face: no per-character work.
        """
        return _uncovered_pattern(self.head(bold))

    def face_for(self, cp: int, bold: bool = False) -> FontFace | None:
        """The first face of the chain with a glyph for ``cp``, or None when none has one (always
        None beyond U+FFFF, see the module docstring)."""
        key = (bold, cp)
        try:
            return self._pick[key]
        except KeyError:
            pass
        chain = self.bold if bold else self.regular
        found = None
        if cp <= 0xFFFF:
            found = next((f for f in chain if cp in f.codepoints), None)
        with self._lock:
            self._pick[key] = found
        return found

    def char_width(self, cp: int, bold: bool = False) -> float:
        """Advance of ``cp`` in thousandths of the font size, in the face that draws it."""
        face = self.face_for(cp, bold)
        if face is None:
            return self.head(bold).width_of(ord(REPLACEMENT))
        return face.width_of(cp)

    def text_width(self, text: str, size: float, bold: bool = False) -> float:
        """Width of ``text`` in points at ``size``, as ``runs`` would draw it."""
        cw = self.char_width
        return sum(cw(ord(ch), bold) for ch in text) * size / 1000.0

    def runs(self, text: str, bold: bool = False) -> tuple[list[tuple[str, str]], int]:
        """Split ``text`` into (font name, text) runs by which face has each glyph.

        Characters no face has become U+FFFD in the primary face; their number is returned.
        """
        out: list[tuple[str, str]] = []
        missing = 0
        head = self.head(bold)
        cur_name = ""
        cur: list[str] = []
        for ch in text:
            face = self.face_for(ord(ch), bold)
            if face is None:
                missing += 1
                face, ch = head, REPLACEMENT
            if face.name != cur_name:
                if cur:
                    out.append((cur_name, "".join(cur)))
                cur_name, cur = face.name, []
            cur.append(ch)
        if cur:
            out.append((cur_name, "".join(cur)))
        return out, missing


@lru_cache(maxsize=16)
def _uncovered_pattern(face: FontFace) -> str:
    covered = [cp for cp in face.codepoints if cp < 0xD800 or 0xDFFF < cp <= 0xFFFF]
    return _re2_class(_ranges(covered), negate=True)


_DEFAULT: FontSet | None = None
_DEFAULT_LOCK = threading.Lock()


def default_fontset() -> FontSet:
    """The FontSet of DEFAULT_FONT_PATHS (those present), built once per process."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            present = [p for p in DEFAULT_FONT_PATHS if p.exists()]
            _DEFAULT = FontSet.from_paths(present or list(DEFAULT_FONT_PATHS))
        return _DEFAULT


def set_default_fontset(paths: Sequence[Path | str] | None) -> FontSet:
    """Make the chain at ``paths`` the process default (None restores DEFAULT_FONT_PATHS).

    For the server's ``font_paths`` setting: call once at start-up, before exports run; encoders
    created afterwards draw with it. Raises like ``FontSet.from_paths``.
    """
    global _DEFAULT
    fontset = FontSet.from_paths(paths) if paths is not None else None
    with _DEFAULT_LOCK:
        _DEFAULT = fontset
    return fontset if fontset is not None else default_fontset()


RTL_PATTERN = "[\\x{590}-\\x{8ff}\\x{fb1d}-\\x{fdff}\\x{fe70}-\\x{fefc}]"
"""An RE2 class of the Hebrew and Arabic blocks: cells matching it go through ``visual_order``."""

_RTL_RUN = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")


def _strong(ch: str) -> str:
    bidi = unicodedata.bidirectional(ch)
    if bidi in ("R", "AL"):
        return "R"
    if bidi == "L":
        return "L"
    return ""


def visual_order(text: str) -> str:
    """Reorder one line of logical-order text into left-to-right display order.

    Characters of right-to-left scripts are reversed within their runs; in a right-to-left
    paragraph (first strong character R/AL) the order of runs is reversed too, so a number or Latin
    word inside Hebrew text stays readable. Text without right-to-left characters is returned as is.
    """
    if not _RTL_RUN.search(text):
        return text
    # Resolve each character to R or L; neutrals take the direction of the run they sit in.
    base = "L"
    for ch in text:
        s = _strong(ch)
        if s:
            base = s
            break
    levels = [_strong(ch) for ch in text]
    # Neutrals between two characters of the same direction take it; otherwise the base direction.
    n = len(text)
    resolved = list(levels)
    i = 0
    while i < n:
        if resolved[i]:
            i += 1
            continue
        j = i
        while j < n and not levels[j]:
            j += 1
        left = resolved[i - 1] if i > 0 else base
        right = levels[j] if j < n else base
        fill = left if left == right else base
        for k in range(i, j):
            # Digits are left-to-right inside any run.
            resolved[k] = "L" if unicodedata.bidirectional(text[k]) in ("EN", "AN") else fill
        i = j
    runs: list[tuple[str, str]] = []
    for ch, d in zip(text, resolved, strict=True):
        if runs and runs[-1][0] == d:
            runs[-1] = (d, runs[-1][1] + ch)
        else:
            runs.append((d, ch))
    pieces = [t[::-1] if d == "R" else t for d, t in runs]
    if base == "R":
        pieces.reverse()
    return "".join(pieces)
