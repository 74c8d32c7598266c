"""Praat TextGrid read/write (interval tiers only), as used by the LeBel dataset.

The ds003020 TextGrids hold two interval tiers: tier 0 = phones, tier 1 = words (the Huth-lab
loaders index them by position, ``make_phoneme_ds`` uses ``tiers[0]``, ``make_word_ds`` ``tiers[1]``).
Both the long ("ooTextFile" with ``xmin = ...`` lines) and the short text formats are read.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from braintune_dist.io import write_text
from braintune_dist.errors import UserError


# Word-tier labels that are not words, compared after ``label.lower().strip("{}").strip()`` as the Huth-lab
# loaders do. REFERENCE_NON_WORDS is ``DEFAULT_BAD_WORDS`` of deep-fMRI-dataset's ``ridge_utils/dsutils.py``;
# NON_WORDS adds the empty label, Praat's silence markers and the other ds003020 noise codes
# ({CG} cough, {IG} ignore), which the later reference loaders drop too.
REFERENCE_NON_WORDS = ("sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp")
NON_WORDS = REFERENCE_NON_WORDS + ("", "sil", "sl", "cg", "ig")


class TextGridError(UserError):
    """A TextGrid file cannot be parsed; the message names the file."""


@dataclass
class Interval:
    xmin: float
    """Start time in seconds."""
    xmax: float
    """End time in seconds."""
    text: str
    """Label (empty or 'sp'/'sil' for silence)."""


@dataclass
class Tier:
    name: str
    """Tier name, e.g. 'phones' or 'words'."""
    intervals: list[Interval] = field(default_factory=list)
    """Intervals in time order."""

    def labelled(self, silence: tuple[str, ...] = ("", "sp", "sil", "{sl}", "{SL}")) -> list[Interval]:
        """Intervals whose label is not a silence marker (phones; words use :meth:`words`)."""
        return [iv for iv in self.intervals if iv.text.strip() not in silence]

    def words(self, non_words=NON_WORDS) -> list[Interval]:
        """Intervals that hold a word: neither silence nor a noise code such as {NS} or sentence_start."""
        drop = {w.lower() for w in non_words}
        return [iv for iv in self.intervals if iv.text.lower().strip("{}").strip() not in drop]


@dataclass
class TextGrid:
    xmin: float
    xmax: float
    tiers: list[Tier]
    source: str = field(default="", compare=False)
    """The file it was read from (named in errors)."""

    def tier(self, name: str) -> Tier:
        """Tier by name (case-insensitive, 'phone' matches 'phones'), else by LeBel position."""
        want = name.lower().rstrip("s")
        for t in self.tiers:
            if t.name.lower().rstrip("s") == want:
                return t
        position = {"phone": 0, "word": 1}.get(want)
        # LeBel's unnamed tiers by position, but never a tier that is named as the other kind
        if position is not None and position < len(self.tiers) and \
                self.tiers[position].name.lower().rstrip("s") not in ("phone", "word"):
            return self.tiers[position]
        raise TextGridError(f"{self.source or 'TextGrid'}: no tier named {name!r} (tiers: {[t.name for t in self.tiers]})")


_HEADING = re.compile(r"^\s*(item|intervals|points)\s*\[\s*\d*\s*\]\s*:")
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|([-+0-9.eE]+)|(<exists>)|([A-Za-z]\w*)')


def _tokens(text: str) -> list[str | float]:
    """Strings and numbers in file order (the grammar both TextGrid formats share)."""
    out: list[str | float] = []
    for line in text.splitlines():
        if _HEADING.match(line):          # long format 'item [1]:' / 'intervals [3]:' carry no value
            continue
        # long format: 'xmin = 0' -> keep only the value part; short format: bare values
        if "=" in line and not line.strip().startswith('"'):
            line = line.split("=", 1)[1]
        for m in _TOKEN.finditer(line):
            if m.group(1) is not None:
                out.append(m.group(1).replace('""', '"'))
            elif m.group(2) is not None:
                try:
                    out.append(float(m.group(2)))
                except ValueError:
                    pass
    return out


def parse_textgrid(text: str, source: str = "<string>") -> TextGrid:
    """Parse TextGrid text (long or short format) into interval tiers."""
    toks = _tokens(text)
    try:
        if toks[:2] != ["ooTextFile", "TextGrid"]:
            raise TextGridError(f"{source}: not a Praat TextGrid (header {toks[:2]!r})")
        pos = 2
        xmin, xmax = float(toks[pos]), float(toks[pos + 1])
        n_tiers = int(toks[pos + 2])
        pos += 3
        tiers = []
        for _ in range(n_tiers):
            kind, name = toks[pos], toks[pos + 1]
            pos += 4  # class, name, xmin, xmax
            n = int(toks[pos])
            pos += 1
            if kind != "IntervalTier":
                raise TextGridError(f"{source}: tier {name!r} is a {kind}; only IntervalTier is supported")
            ivs = []
            for _ in range(n):
                a, b, lab = float(toks[pos]), float(toks[pos + 1]), toks[pos + 2]
                if not isinstance(lab, str):
                    lab = str(lab)
                ivs.append(Interval(a, b, lab))
                pos += 3
            check_intervals(ivs, source, str(name))
            tiers.append(Tier(str(name), ivs))
    except (IndexError, TypeError, ValueError) as exc:
        if isinstance(exc, TextGridError):
            raise
        raise TextGridError(f"{source}: malformed TextGrid ({exc.__class__.__name__}: {exc})") from None
    return TextGrid(xmin, xmax, tiers, source)


TOLERANCE = 1e-6
"""Seconds by which an interval may start before the previous one starts or ends (rounding in hand-edited files)."""


def check_intervals(intervals: list[Interval], source: str, tier: str) -> None:
    """Raise ``TextGridError`` naming the file, tier and interval (numbered from 1, as Praat does) unless the
    intervals lie at times ≥ 0, each ends after it starts, and each starts where the previous one ended or later.
    Readers index frames and TRs by these times: a negative one wraps to the end of an array, and unsorted or
    overlapping ones give words and phones to other times, silently."""
    prev = None
    for j, iv in enumerate(intervals, 1):
        where = f"{source}: tier {tier!r} interval [{j}] ({iv.xmin:g} – {iv.xmax:g} s, {iv.text!r})"
        if not (math.isfinite(iv.xmin) and math.isfinite(iv.xmax)) or iv.xmin < 0:
            raise TextGridError(f"{where}: times must be finite and ≥ 0")
        if iv.xmax < iv.xmin:
            raise TextGridError(f"{where}: ends before it starts")
        if prev is not None and iv.xmin < prev.xmin - TOLERANCE:
            raise TextGridError(f"{where}: out of time order (interval [{j - 1}] starts later, at {prev.xmin:g} s)")
        if prev is not None and iv.xmin < prev.xmax - TOLERANCE:
            raise TextGridError(f"{where}: overlaps interval [{j - 1}], which ends at {prev.xmax:g} s")
        prev = iv


def read_textgrid(path: str | os.PathLike) -> TextGrid:
    """Read a TextGrid file (UTF-8, UTF-16 with BOM, or latin-1)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = raw.decode("utf-16")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    return parse_textgrid(text, source=str(path))


def format_textgrid(grid: TextGrid) -> str:
    """Long-format TextGrid text, as Praat writes it."""
    q = lambda s: '"' + s.replace('"', '""') + '"'  # noqa: E731
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "",
             f"xmin = {grid.xmin!r}", f"xmax = {grid.xmax!r}", "tiers? <exists> ",
             f"size = {len(grid.tiers)}", "item []:"]
    for i, tier in enumerate(grid.tiers, 1):
        lines += [f"    item [{i}]:", '        class = "IntervalTier" ', f"        name = {q(tier.name)} ",
                  f"        xmin = {grid.xmin!r} ", f"        xmax = {grid.xmax!r} ",
                  f"        intervals: size = {len(tier.intervals)} "]
        for j, iv in enumerate(tier.intervals, 1):
            lines += [f"        intervals [{j}]:", f"            xmin = {iv.xmin!r} ",
                      f"            xmax = {iv.xmax!r} ", f"            text = {q(iv.text)} "]
    return "\n".join(lines) + "\n"


def write_textgrid(grid: TextGrid, path: str | os.PathLike) -> None:
    """Write a long-format TextGrid atomically (temp name, then rename)."""
    write_text(path, format_textgrid(grid))


def fill_gaps(intervals: list[Interval], xmin: float, xmax: float) -> list[Interval]:
    """Insert empty-label intervals so the tier tiles [xmin, xmax] as Praat requires."""
    out, t = [], xmin
    for iv in sorted(intervals, key=lambda iv: iv.xmin):
        if iv.xmin > t + 1e-9:
            out.append(Interval(t, iv.xmin, ""))
        out.append(iv)
        t = iv.xmax
    if xmax > t + 1e-9:
        out.append(Interval(t, xmax, ""))
    return out
