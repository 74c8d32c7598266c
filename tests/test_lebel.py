"""Reader of the ds003020 layout on a tiny dataset built by hand (not with the simulator)."""
import json
import re
import warnings

import h5py
import numpy as np
import pytest
import soundfile as sf

from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset, TEST_STORY
from braintune_dist.data.validate import validate
from layouts import build_real_layout  # tests/ is on sys.path (pytest rootdir import)


@pytest.fixture
def real_root(tmp_path):
    return build_real_layout(tmp_path / "ds003020")


def test_reads_real_layout(real_root):
    ds = LebelDataset(real_root)
    assert ds.participants() == ["UTS01", "UTS02"]
    assert ds.split() == {"train": ["alpha", "beta"], "val": [], "test": [TEST_STORY]}
    Y = ds.load_responses("UTS01", "alpha")
    assert Y.shape == (40 - 20, 7) and Y.dtype == np.float32
    assert np.all(Y[:, 0] == 0) and np.isfinite(Y).all()          # NaN -> 0
    assert ds.load_audio("alpha").shape == (int(((40 - 5) * 2 - 10) * 16000),)
    tg = ds.load_textgrid("alpha")
    assert [iv.text for iv in tg.tier("words").labelled()] == ["hello", "world"]
    assert tg.tier("phone").intervals[0].text == "HH"
    summary = validate(ds)
    assert summary["subjects"]["UTS02"] == dict(n_voxels=5, n_stories=3, n_rows=20 + 16 + 10, n_repeats=3)


def test_trims_line_up_with_feature_grid(real_root):
    ds = LebelDataset(real_root)
    # training story: features [10:-5] of the n-5 TR grid line up with the hf5 rows
    t = ds.tr_times("alpha")
    assert len(t) == 40 - 5 and t[0] == -9.0 and np.allclose(np.diff(t), 2.0)
    idx = ds.row_tr_index("alpha")
    assert np.array_equal(idx, np.arange(len(t))[10:-5])
    assert len(idx) == ds.load_responses("UTS01", "alpha").shape[0]
    # test story: features [50:-5] against data[40:] and individual_repeats[:, 40:]
    idx = ds.row_tr_index(TEST_STORY)
    assert np.array_equal(idx, np.arange(70 - 5)[50:-5])
    assert ds.load_responses("UTS01", TEST_STORY).shape[0] == len(idx) == 10
    with h5py.File(ds.response_path("UTS01", TEST_STORY)) as f:
        raw = np.nan_to_num(f["individual_repeats"][:])
    assert np.array_equal(ds.load_repeats("UTS01"), raw[:, 40:])
    # the first kept training row (TR 10) starts 10 s after audio onset
    assert ds.tr_times("alpha")[10] - 1.0 == 10.0


def test_resamples_other_rates_with_warning(real_root):
    ds = LebelDataset(real_root)
    seconds = (40 - 5) * 2.0 - 10.0
    sf.write(ds.audio_path("alpha"), np.zeros(int(seconds * 22050)), 22050)
    with pytest.warns(UserWarning, match="22050 Hz, resampling"):
        wav = ds.load_audio("alpha")
    assert abs(len(wav) - seconds * 16000) <= 1


def _expect(match, fn, *args):
    with pytest.raises(DatasetError, match=match) as info:
        fn(*args)
    return str(info.value)


def test_bad_inputs_name_the_file(real_root):
    ds = LebelDataset(real_root)
    # missing subject / story
    _expect(r"unknown subject 'UTS09'", ds.load_responses, "UTS09", "alpha")
    _expect(r"missing story 'gamma' for subject UTS01: .*UTS01/gamma.hf5", ds.load_responses, "UTS01", "gamma")
    with pytest.raises(DatasetError, match=r"unknown subject\(s\) \['UTS09'\]"):
        LebelDataset(real_root, DataConfig(participants=["UTS09"])).participants()
    with pytest.raises(DatasetError, match="story 'gamma' missing for subject UTS01"):
        LebelDataset(real_root, DataConfig(train_stories=["gamma"])).split()
    # TR-count mismatch between respdict and responses
    with h5py.File(ds.response_path("UTS02", "beta"), "w") as f:
        f["data"] = np.zeros((15, 5), np.float32)
    msg = _expect(r"beta.hf5: 'data' has 15 rows but respdict.json gives 'beta' 36 TRs.* n_trs - 20 = 16",
                  ds.load_responses, "UTS02", "beta")
    assert "set 'beta' to 35 in" in msg and "respdict.json" in msg            # says what to do
    # audio too short for the TR grid
    sf.write(ds.audio_path("beta"), np.zeros(16000 * 5), 16000)
    _expect(r"beta.wav: audio lasts 5.0 s .* TR-count mismatch", ds.load_audio, "beta")
    # all-NaN file
    with h5py.File(ds.response_path("UTS01", "beta"), "w") as f:
        f["data"] = np.full((16, 7), np.nan, np.float32)
    _expect(r"UTS01/beta.hf5: 'data' is all NaN", ds.load_responses, "UTS01", "beta")
    # unknown key
    with h5py.File(ds.response_path("UTS01", "alpha"), "w") as f:
        f["responses"] = np.zeros((20, 7), np.float32)
    _expect(r"UTS01/alpha.hf5: no key 'data' \(keys: \['responses'\]\)", ds.load_responses, "UTS01", "alpha")
    # not an HDF5 file at all
    ds.response_path("UTS02", "alpha").write_bytes(b"garbage")
    _expect(r"UTS02/alpha.hf5: not a readable HDF5 file", ds.load_responses, "UTS02", "alpha")
    # missing audio / TextGrid, story absent from respdict
    ds.audio_path("alpha").unlink()
    _expect(r"missing audio for story 'alpha': .*stimuli/alpha.wav", ds.load_audio, "alpha")
    ds.textgrid_path("alpha").unlink()
    _expect(r"missing TextGrid for story 'alpha'", ds.load_textgrid, "alpha")
    _expect(r"story 'gamma' not in .*respdict.json", ds.n_trs, "gamma")


def test_bad_root_and_textgrid(tmp_path, real_root):
    with pytest.raises(DatasetError, match="dataset root not found"):
        LebelDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no derivative/preprocessed_data"):
        LebelDataset(tmp_path / "empty")
    ds = LebelDataset(real_root)
    ds.textgrid_path("beta").write_text("not a textgrid")
    _expect(r"beta.TextGrid: not a Praat TextGrid", ds.load_textgrid, "beta")
    ds.respdict  # cached before we break it: a fresh reader sees the broken file
    (ds.deriv / "respdict.json").write_text("[1, 2]")
    _expect(r"respdict.json: not a JSON mapping", LebelDataset(real_root).n_trs, "alpha")


def test_plural_derivatives_folder(real_root):
    (real_root / "derivative").rename(real_root / "derivatives")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert LebelDataset(real_root).load_responses("UTS01", "beta").shape == (16, 7)


@pytest.mark.parametrize("value", [60.9, True, "60", 0, -3, None])
def test_a_tr_count_that_is_not_a_whole_number_is_refused(real_root, value):
    """int() would read 60.9 as 60 and true as 1 TR: refused, naming the file and the story."""
    path = real_root / "derivative" / "respdict.json"
    counts = json.loads(path.read_text())
    path.write_text(json.dumps(dict(counts, beta=value)))
    shown = re.escape(json.dumps(value))
    if type(value) in (int, float):                # a number, but not a count; true is not even a number here
        expected = rf"{path}: story 'beta' has {shown} TRs; the count must be a whole number above 0"
    else:
        expected = rf"{path}: story 'beta': {shown} is not a TR count \(an integer\)"
    _expect(expected, LebelDataset(real_root).n_trs, "alpha")
    path.write_text(json.dumps(dict(counts, beta=36.0)))                  # a whole number written as a float
    assert LebelDataset(real_root).n_trs("beta") == 36


def test_an_empty_test_repeat_is_dropped_with_a_warning_naming_the_file(real_root):
    ds = LebelDataset(real_root)
    path = ds.response_path("UTS01", TEST_STORY)
    before = ds.load_repeats("UTS01")
    with h5py.File(path, "r+") as f:
        reps = f["individual_repeats"][...]
        reps[1, 40:] = np.nan                                             # NaN in every row the ceiling reads
        f["individual_repeats"][...] = reps
    with pytest.warns(UserWarning, match=rf"{path}: 'individual_repeats': repeat\(s\) \[1\] are NaN throughout in "
                                         r"rows \[40:\]: dropped; the noise ceiling uses the other 2"):
        after = LebelDataset(real_root).load_repeats("UTS01")
    np.testing.assert_array_equal(after, before[[0, 2]])
    with h5py.File(path, "r+") as f:
        reps[0, 40:] = np.nan
        f["individual_repeats"][...] = reps
    _expect(rf"{path}: 'individual_repeats' needs ≥ 2 repeats with data for a noise ceiling \(2 of 3 are NaN "
            r"throughout in rows \[40:\]: repeats \[0, 1\]\)", LebelDataset(real_root).load_repeats, "UTS01")
