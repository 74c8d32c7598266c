"""Whole-dataset checks of a ds003020 root, run before a job spends time on it.

``validate`` reads every response file of the split once (the per-file checks of ``LebelDataset``: shapes,
row counts against respdict, NaN, bounds), the audio and the TextGrids; ``check_tiers`` checks that each
story's TextGrid holds the tiers a job reads; ``lacking`` names who did not hear which story.
"""
from __future__ import annotations

from braintune_dist.data.lebel import SAMPLE_RATE, DatasetError, LebelDataset
from braintune_dist.data.textgrid import TextGridError


def validate(ds: LebelDataset, participants: list[str] | None = None, mode: str = "shared",
             check_audio: bool = True) -> dict:
    """Read every (subject, story) of ``ds.split(mode, subjects)`` that the subject heard, once; raises
    ``DatasetError`` on the first problem.

    Returns
    -------
    summary : dict
        ``{'subjects': {sub: {'n_voxels', 'n_stories', 'n_rows', 'n_repeats'}}, 'stories': [...], 'split': {...},
        'lacking': {sub: [stories]}, 'tr_reports': [stories timed by TR reports], 'audio_seconds': float}``
    """
    participants = participants or ds.participants()
    split = ds.split(mode, participants)
    stories = sorted(set(split["train"] + split["val"] + split["test"]))
    summary: dict = {"subjects": {}, "stories": stories, "split": split, "audio_seconds": 0.0,
                     "lacking": lacking(ds, split, participants)}
    for sub in participants:
        n_vox, n_rows = None, 0
        heard = [s for s in stories if s not in summary["lacking"].get(sub, [])]   # every story in mode 'shared'
        for story in heard:
            Y = ds.load_responses(sub, story)
            if n_vox is not None and Y.shape[1] != n_vox:
                raise DatasetError(f"{ds.response_path(sub, story)}: {Y.shape[1]} voxels, "
                                   f"other stories of {sub} have {n_vox}")
            n_vox, n_rows = Y.shape[1], n_rows + Y.shape[0]
        n_rep = ds.load_repeats(sub).shape[0] if ds.cfg.test_story in heard else 0
        summary["subjects"][sub] = dict(n_voxels=n_vox, n_stories=len(heard), n_rows=n_rows, n_repeats=n_rep)
    summary["tr_reports"] = [s for s in stories if ds.report(s) is not None]   # the rest: the 2.0 s grid
    if check_audio:
        for story in stories:
            summary["audio_seconds"] += len(ds.load_audio(story)) / SAMPLE_RATE
            ds.load_textgrid(story)
    return summary


def lacking(ds: LebelDataset, split: dict[str, list[str]], participants: list[str] | None = None) -> dict[str, list[str]]:
    """Subject → the stories of ``split`` it did not hear (only the subjects that lack some)."""
    named = [s for stories in split.values() for s in stories]
    out = {sub: [s for s in named if not ds.response_path(sub, s).is_file()] for sub in participants or ds.participants()}
    return {sub: stories for sub, stories in out.items() if stories}


def check_tiers(ds: LebelDataset, stories: list[str], tiers: list[str], why: str) -> None:
    """Each story's TextGrid has every tier of ``tiers`` ('phones', 'words'); ``why`` says what reads them."""
    for story in stories:
        grid = ds.load_textgrid(story)
        for name in tiers:
            try:
                grid.tier(name)
            except TextGridError:
                raise DatasetError(f"{ds.textgrid_path(story)}: no {name!r} tier (tiers: "
                                   f"{[t.name for t in grid.tiers]}); {why} reads it") from None
