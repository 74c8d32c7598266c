"""The scanner's TR reports: real trigger times of each story (``TRFile`` of Huth-lab ``ridge_utils``).

The nominal TR of ds003020 is 2.0 s and the official loader simulates its triggers on that grid; the real
TR is ~2.0045 s, so by the end of a long story the true TRs lie ~1 s behind the grid. A report is a text
file ``<story>.report`` (``DataConfig.tr_report_dir``, default ``<derivative>/trfiles``), one event per line,
``<seconds> <label>``::

    0.000 init-trigger          # init-trigger / trigger: one volume acquisition starts
    2.004 trigger
    10.012 sound-start          # audio onset (TR times are relative to it)
    ...                         # sound-stop and any other label are ignored

A gap longer than 1.5 × the mean gap gets one trigger inserted at the previous one + 2.0045 s, as
``TRFile`` repairs a missed trigger (``TRFile`` inserts in increasing order without shifting its indices,
which misplaces the second of two repairs; here every repair lands in its own gap). TR mid-points are
``trigger - sound_start + mean(diff(triggers)) / 2`` (``DataSequence.from_grid``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from braintune_dist.errors import DatasetError

REPORT_TR = 2.0045          # TRFile's expectedtr: the spacing of a trigger inserted where one was missed


def read_respdict(path: Path) -> dict[str, int]:
    """Story → TR count of its TR grid, from a ``respdict.json``; ``DatasetError`` naming the file and the story
    unless every count is a whole number above 0 (``int()`` would take 60.9 as 60 and ``true`` as 1)."""
    try:
        d = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise DatasetError(f"{path}: not a JSON mapping story → int ({exc})") from None
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: not a JSON mapping story → int (it holds a {type(d).__name__})")
    for story, n in d.items():
        if type(n) not in (int, float):          # bool is an int to Python: true would pass as 1 TR
            raise DatasetError(f"{path}: story {story!r}: {json.dumps(n)} is not a TR count (an integer)")
        if not (type(n) is int or n.is_integer()) or n <= 0:
            raise DatasetError(f"{path}: story {story!r} has {json.dumps(n)} TRs; the count must be a whole number "
                               "above 0")
    return {str(k): int(v) for k, v in d.items()}


def read_tr_report(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """(trigger times (n_triggers,), sound-start time) in the report's clock; the format is in the module doc.

    Raises ``DatasetError`` naming the file and line for an unreadable line, no sound-start or < 2 triggers.
    """
    triggers, start = [], None
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            t = float(parts[0])
        except ValueError:
            raise DatasetError(f"{path}:{i}: expected '<seconds> <label>', got {line.strip()!r}") from None
        label = " ".join(parts[1:])
        if label in ("init-trigger", "trigger"):
            triggers.append(t)
        elif label == "sound-start":
            start = t
    if start is None or len(triggers) < 2:
        raise DatasetError(f"{path}: a TR report needs a sound-start line and at least 2 triggers "
                           f"(found {len(triggers)} triggers, sound-start {'yes' if start is not None else 'no'})")
    gaps = np.diff(triggers)
    for i in sorted(np.flatnonzero(gaps > 1.5 * gaps.mean()), reverse=True):   # a missed trigger: insert one
        triggers.insert(i + 1, triggers[i] + REPORT_TR)
    return np.asarray(triggers, dtype=np.float64), float(start)
