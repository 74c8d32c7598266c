"""Narratives-layout reader on a simulated dataset: trims, sidecar TR, hemispheres, words, exclusions, ISC ceiling,
and one DatasetError naming the file for each bad input."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from braintune_dist.data.narratives import INITIAL_TRIM, NarrativesConfig, NarrativesDataset
from braintune_dist.data.simulate.narratives import NarrSimConfig, _write_gifti, simulate_narratives
from braintune_dist.errors import DatasetError

SIM = NarrSimConfig(participants=4, stories=2, story_trs=40, music_trs=8, tail_trs=4)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return simulate_narratives(SIM, tmp_path_factory.mktemp("narr") / "ds")


@pytest.fixture
def clone(root, tmp_path):
    """A copy of the dataset made of hard links: cheap, and safe as long as a file is replaced, not edited."""
    dst = tmp_path / "ds"
    shutil.copytree(root, dst, copy_function=os.link)
    return dst


def replace(path: Path, text: str) -> None:
    path.unlink()                    # break the hard link first: the shared dataset must stay intact
    path.write_text(text)


def func(root: Path, sub: str, story: str, suffix: str) -> Path:
    return root / sub / "func" / f"{sub}_task-{story}_{suffix}"


def gii(root: Path, sub: str, story: str, hemi: str) -> Path:
    return (root / "derivatives" / "afni-nosmooth" / sub / "func" /
            f"{sub}_task-{story}_space-fsaverage5_hemi-{hemi}_desc-clean.func.gii")


def test_story_trs_after_trims_and_sidecar_tr(root):
    ds = NarrativesDataset(root)
    assert ds.tasks() == ["narr01", "narr02"] and ds.space == "fsaverage5"
    assert ds.tr("sub-001", "narr01") == 1.5                          # from task-narr01_bold.json at the root
    start = SIM.music_trs + INITIAL_TRIM                               # onset 12 s = 8 TRs, then 6 dropped
    assert ds.story_rows("sub-001", "narr01") == (start, SIM.music_trs + SIM.story_trs)
    Y = ds.load_responses("sub-001", "narr01")
    assert Y.shape == (SIM.story_trs - INITIAL_TRIM, 2 * 10242) == (ds.n_trs("sub-001", "narr01"), Y.shape[1])
    left = np.stack([d.data for d in nib.load(gii(root, "sub-001", "narr01", "L")).darrays])
    right = np.stack([d.data for d in nib.load(gii(root, "sub-001", "narr01", "R")).darrays])
    assert left.shape[0] == SIM.music_trs + SIM.story_trs + SIM.tail_trs
    np.testing.assert_array_equal(Y, np.concatenate([left, right], axis=1)[start: start + len(Y)])
    t = ds.tr_times("sub-001", "narr01")                               # mid-points from audio onset
    np.testing.assert_allclose(t[:2], [(start + 0.5) * 1.5 - 12.0, (start + 1.5) * 1.5 - 12.0])


def test_participant_sidecar_overrides_the_task_one(clone):
    (func(clone, "sub-001", "narr01", "bold.json")).write_text(json.dumps({"RepetitionTime": 2.0}))
    ds = NarrativesDataset(clone)
    assert ds.tr("sub-001", "narr01") == 2.0 and ds.tr("sub-002", "narr01") == 1.5


def test_words_timed_and_unfound_dropped(root):
    ds = NarrativesDataset(root)
    raw = json.loads(ds.gentle_path("narr01").read_text())["words"]
    words = ds.words("narr01")
    assert len(words) == sum(w["case"] == "success" for w in raw) == len(raw) - 1
    assert "unheard" not in {w.text for w in words}
    assert all(0 <= w.xmin < w.xmax <= SIM.story_trs * SIM.tr for w in words)
    assert all(a.xmin <= b.xmin for a, b in zip(words, words[1:]))
    phones = ds.phones("narr01")
    assert len(phones) > len(words) and phones[0].xmin == words[0].xmin
    assert len(ds.load_audio("narr01")) == int(SIM.story_trs * SIM.tr * 16_000)


def test_excluded_scan_left_out_and_refused_when_named(root):
    ds = NarrativesDataset(root)
    assert ds.participants("narr01") == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert ds.participants("narr02") == ds.participants() == ["sub-001", "sub-002", "sub-003"]
    named = NarrativesDataset(root, NarrativesConfig(participants=["sub-001", "sub-004"]))
    assert named.participants("narr01") == ["sub-001", "sub-004"]
    with pytest.raises(DatasetError, match=r"sub-004_task-narr02.*scan_exclude\.json"):
        named.participants("narr02")


def test_isc_ceiling_high_in_planted_regions_zero_elsewhere(root):
    ds = NarrativesDataset(root)
    subs, isc = ds.isc_ceiling("narr01")
    assert subs == ds.participants("narr01") and isc.shape == (4, 2 * 10242)
    region = np.load(root / "ground_truth" / "vertex_region.npy")
    for r in range(1, region.max() + 1):                                  # every stage region, acoustic first
        assert np.median(isc[:, region == r]) > 0.4, r
    assert abs(isc[:, region == 0].mean()) < 0.03


def test_runs_first_by_default_and_by_number(root, clone):
    events = func(clone, "sub-001", "narr01", "events.tsv")
    for run in (1, 2):
        os.link(events, func(clone, "sub-001", "narr01", f"run-{run}_events.tsv").with_name(
            f"sub-001_task-narr01_run-{run}_events.tsv"))
    events.unlink()
    for h in "LR":
        src = gii(clone, "sub-001", "narr01", h)
        for run, other in ((1, "sub-001"), (2, "sub-002")):                 # run-2 holds sub-002's data
            os.link(gii(clone, other, "narr01", h), str(src).replace("_task-narr01_", f"_task-narr01_run-{run}_"))
        src.unlink()
    original = NarrativesDataset(root)
    first = NarrativesDataset(clone).load_responses("sub-001", "narr01")
    second = NarrativesDataset(clone, NarrativesConfig(run=2)).load_responses("sub-001", "narr01")
    np.testing.assert_array_equal(first, original.load_responses("sub-001", "narr01"))
    np.testing.assert_array_equal(second, original.load_responses("sub-002", "narr01"))
    assert NarrativesDataset(clone).scan_stem("sub-001", "narr01") == "sub-001_task-narr01_run-1"
    with pytest.raises(DatasetError, match="no run-3"):
        NarrativesDataset(clone, NarrativesConfig(run=3)).load_responses("sub-001", "narr01")


def test_condition_with_its_own_stimulus(clone):
    table = (clone / "participants.tsv").read_text().replace("sub-002\t25\tF\tnarr01,narr02\tn/a,n/a",
                                                             "sub-002\t25\tF\tnarr01,narr02\tvodka,n/a")
    replace(clone / "participants.tsv", table)
    shutil.copytree(clone / "stimuli" / "gentle" / "narr01", clone / "stimuli" / "gentle" / "narr01vodka")
    os.link(clone / "stimuli" / "narr01_audio.wav", clone / "stimuli" / "narr01vodka_audio.wav")
    ds = NarrativesDataset(clone)
    assert ds.stimulus("sub-002", "narr01") == "narr01vodka" and ds.stimulus("sub-001", "narr01") == "narr01"
    assert ds.stimulus("sub-002", "narr02") == "narr02"
    assert len(ds.words("narr01vodka")) == len(ds.words("narr01"))


# ---------------------------------------------------------------------- bad inputs: one DatasetError naming the file
def test_missing_sidecar(clone):
    (clone / "task-narr01_bold.json").unlink()
    with pytest.raises(DatasetError, match=r"task-narr01_bold\.json.*RepetitionTime"):
        NarrativesDataset(clone).load_responses("sub-001", "narr01")


def test_hemispheres_of_different_templates(clone):
    path = gii(clone, "sub-001", "narr01", "R")
    path.unlink()
    _write_gifti(path, np.zeros((2, 40962), np.float32))
    with pytest.raises(DatasetError, match=rf"different templates.*{path.name} is fsaverage6"):
        NarrativesDataset(clone).load_responses("sub-001", "narr01")


def test_events_without_story_row(clone):
    path = func(clone, "sub-002", "narr01", "events.tsv")
    replace(path, "onset\tduration\ttrial_type\tstim_file\n0.0\t10.5\tmusic\tmusic.wav\n")
    with pytest.raises(DatasetError, match=rf"{path.name}: no story row"):
        NarrativesDataset(clone).load_responses("sub-002", "narr01")


def test_gentle_past_the_audio(clone):
    path = clone / "stimuli" / "gentle" / "narr02" / "align.json"
    data = json.loads(path.read_text())
    last = [w for w in data["words"] if w["case"] == "success"][-1]
    last["end"] = SIM.story_trs * SIM.tr + 5.0
    replace(path, json.dumps(data))
    with pytest.raises(DatasetError, match=r"narr02/align\.json: words aligned up to 65\.00 s.*narr02_audio\.wav"):
        NarrativesDataset(clone).words("narr02")


def test_shifted_onset_read_from_the_participants_own_events(clone):
    # a trigger error moves one participant's story onset 6 s (4 TRs) earlier in the scan
    path = func(clone, "sub-002", "narr01", "events.tsv")
    replace(path, path.read_text().replace("12.0\t60.0", "6.0\t60.0"))
    ds = NarrativesDataset(clone)
    assert ds.story_rows("sub-002", "narr01") == (4 + INITIAL_TRIM, 4 + SIM.story_trs)
    assert ds.story_rows("sub-001", "narr01") == (SIM.music_trs + INITIAL_TRIM, SIM.music_trs + SIM.story_trs)
    np.testing.assert_allclose(ds.tr_times("sub-002", "narr01"), ds.tr_times("sub-001", "narr01"))


def test_template_that_disagrees_with_the_file_name(clone):
    for h in "LR":
        path = gii(clone, "sub-001", "narr01", h)
        path.unlink()
        _write_gifti(path, np.zeros((2, 40962), np.float32))
    with pytest.raises(DatasetError, match=r"hemi-L_desc-clean\.func\.gii and .*: fsaverage6, but their names say "
                                           r"space-fsaverage5"):
        NarrativesDataset(clone).load_responses("sub-001", "narr01")
