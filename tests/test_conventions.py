"""The field's reference conventions, each written out here from its published definition and compared with
the package: Huth-lab ``ridge_utils`` (deep-fMRI-dataset: ``dsutils``, ``interpdata``, ``npp``,
``stimulus_utils``, ``DataSequence``) and the brain-tuning papers' ``spe_and_cc_norm``."""
import numpy as np
import pytest

from braintune_dist.data.lebel import DataConfig, DatasetError, LebelDataset, TEST_STORY
from braintune_dist.data.textgrid import NON_WORDS, REFERENCE_NON_WORDS, Interval, TextGrid, Tier, write_textgrid
from braintune_dist.data.trfiles import REPORT_TR, read_tr_report
from braintune_dist.data.simulate import SimConfig, simulate
from braintune_dist.data.voxels import find_common_space, noise_ceiling
from braintune_dist.evaluate.compute import ComputeSettings
from braintune_dist.evaluate.encoding import RidgeConfig
from braintune_dist.evaluate.pipeline import encode
from braintune_dist.features.config import FeatureConfig
from braintune_dist.features.interp import align_to_trs
from braintune_dist.features.lowlevel import StimulusFeatures
from layouts import N_TRS, build_real_layout

# dsutils.DEFAULT_BAD_WORDS, as published
DSUTILS_BAD_WORDS = frozenset(["sentence_start", "sentence_end", "br", "lg", "ls", "ns", "sp"])


def make_word_ds_filter(transcript, bad_words=DSUTILS_BAD_WORDS):
    """dsutils.make_word_ds: ``[x for x in transcript if x[2].lower().strip("{}").strip() not in bad_words]``."""
    return [x for x in transcript if x[2].lower().strip("{}").strip() not in bad_words]


def lanczosinterp2D(data, oldtime, newtime, window=3, cutoff_mult=1.0):
    """interpdata.lanczosinterp2D: an unnormalised Lanczos kernel with cutoff 1 / mean(diff(newtime))."""
    cutoff = 1 / np.mean(np.diff(newtime)) * cutoff_mult
    sincmat = np.zeros((len(newtime), len(oldtime)))
    for ndi in range(len(newtime)):
        t = (newtime[ndi] - oldtime) * cutoff
        with np.errstate(divide="ignore", invalid="ignore"):
            val = window * np.sin(np.pi * t) * np.sin(np.pi * t / window) / (np.pi ** 2 * t ** 2)
        val[t == 0] = 1.0
        val[np.abs(t) > window] = 0.0
        sincmat[ndi, :] = val
    return np.dot(sincmat, data)


def zs(v):
    """npp.zs: z-score each column (ddof 0)."""
    return (v - v.mean(0)) / v.std(0)


def cc_max_reference(orig_data):
    """spe_and_cc_norm(orig_data, ..., data_norm=True)'s CCmax: TP = 1, SP with ddof=1, nan → 0."""
    y = np.mean(orig_data, axis=0)
    num_trials = len(orig_data)
    TP = np.zeros(orig_data.shape[2]) + 1
    SP = (1 / (num_trials - 1)) * ((num_trials * np.var(y, axis=0, ddof=1)) - TP)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(1 / (np.sqrt(1 + ((1 / num_trials) * ((TP / SP) - 1)))))


def trfile_reference(path, expectedtr=REPORT_TR):
    """stimulus_utils.TRFile.load_from_file: triggers, sound start, then the missed-trigger repair."""
    trtimes, soundstarttime = [], -1
    for ll in open(path):
        timestr = ll.split()[0]
        label = " ".join(ll.split()[1:])
        time = float(timestr)
        if label in ("init-trigger", "trigger"):
            trtimes.append(time)
        elif label == "sound-start":
            soundstarttime = time
    itrtimes = np.diff(trtimes)
    badtrtimes = np.nonzero(itrtimes > (itrtimes.mean() * 1.5))[0]
    newtrs = [(trtimes[btr] + expectedtr, btr) for btr in badtrtimes]
    for ntr, btr in newtrs:
        trtimes.insert(btr + 1, ntr)
    return np.array(trtimes), soundstarttime


NOISY = ["sentence_start", "{NS}", "I", "{BR}", "went", "sp", "{LG}", "home", "{ls}", "SP", "{CG}", "{IG}", "",
         "sil", "Sentence_End", "{sl}", "ok"]


def test_word_filter_is_dsutils_make_word_ds():
    tier = Tier("words", [Interval(float(i), i + 1.0, w) for i, w in enumerate(NOISY)])
    ref = make_word_ds_filter([(iv.xmin, iv.xmax, iv.text) for iv in tier.intervals])
    assert [(iv.xmin, iv.xmax, iv.text) for iv in tier.words(REFERENCE_NON_WORDS)] == ref
    # the reference list keeps '', sil, {sl}, {CG} and {IG}; the default drops them too
    assert [iv.text for iv in tier.words(REFERENCE_NON_WORDS)] == ["I", "went", "home", "{CG}", "{IG}", "", "sil",
                                                                   "{sl}", "ok"]
    assert [iv.text for iv in tier.words()] == ["I", "went", "home", "ok"]
    assert set(REFERENCE_NON_WORDS) == DSUTILS_BAD_WORDS and set(REFERENCE_NON_WORDS) < set(NON_WORDS)


def _words_layout(tmp_path, seed=0):
    """build_real_layout with a word tier of real words and noise codes across each story."""
    root = build_real_layout(tmp_path / "ds")
    rng = np.random.default_rng(seed)
    ds = LebelDataset(root)
    for story, n in N_TRS.items():
        seconds = (n - 5) * 2.0 - 10.0
        edges = np.sort(rng.uniform(0, seconds, 2 * int(seconds)))
        labels = rng.choice(["dog", "ran", "home", "{NS}", "sp", "sentence_start"], len(edges) - 1)
        words = Tier("words", [Interval(a, b, str(w)) for a, b, w in zip(edges[:-1], edges[1:], labels)])
        write_textgrid(TextGrid(0.0, seconds, [Tier("phones", []), words]), ds.textgrid_path(story))
    return root


def test_word_rate_mid_is_huth_wordrate(tmp_path):
    root = _words_layout(tmp_path)
    ds = LebelDataset(root)
    cfg = FeatureConfig(delays=[0])
    for story in ("alpha", TEST_STORY):
        got = StimulusFeatures(cfg, spaces=("word_rate_mid",)).story_features(ds, story)["word_rate_mid"]
        # get_wordrate_vectors: ones at the word mid-times (make_word_ds words), downsampled to the TR times
        transcript = [(iv.xmin, iv.xmax, iv.text) for iv in ds.load_textgrid(story).tier("words").intervals]
        mid = np.array([(s + e) / 2 for s, e, _ in make_word_ds_filter(transcript)])
        ref = zs(lanczosinterp2D(np.ones((len(mid), 1)), mid, ds.tr_times(story))[ds.row_tr_index(story)])
        np.testing.assert_allclose(got, ref, atol=2e-6)
        # the onset-bin word rate is another feature, not a rescaling of this one
        onsets = StimulusFeatures(cfg, spaces=("word_rate",)).story_features(ds, story)["word_rate"]
        assert not np.allclose(onsets, got, atol=0.05)


def test_dataset_words_use_the_setting(tmp_path):
    root = _words_layout(tmp_path)
    default = [iv.text for iv in LebelDataset(root).words("alpha")]
    assert set(default) <= {"dog", "ran", "home"} and default
    every = [iv.text for iv in LebelDataset(root, DataConfig(non_words=[])).words("alpha")]
    assert {"{NS}", "sp", "sentence_start"} & set(every) and len(every) > len(default)


def test_features_zscored_in_float64(tmp_path):
    ds = LebelDataset(build_real_layout(tmp_path / "ds"))
    story = "alpha"
    times = np.arange(0.05, (N_TRS[story] - 5) * 2.0 - 10.0, 0.1)
    rng = np.random.default_rng(0)
    f = (1000.0 + 10.0 * rng.standard_normal((len(times), 8))).astype(np.float32)   # 1 % around a large mean
    got = align_to_trs(times, {"x": f}, ds, story, FeatureConfig(delays=[0]))["x"]
    ref = zs(lanczosinterp2D(f.astype(np.float64), times, ds.tr_times(story))[ds.row_tr_index(story)])
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 2e-6          # centred in float32 this is ~4e-5


def test_noise_ceiling_conventions_match_spe_and_cc_norm():
    rng = np.random.default_rng(1)
    n_rep, n_tr, v = 6, 281, 50
    signal = rng.standard_normal((n_tr, v)) * np.linspace(0, 1.5, v)
    drift = np.linspace(-1, 1, n_tr)[:, None] * rng.uniform(0, 1, v)         # slow drift: [40:] is not z-scored
    run = np.stack([zs(signal + drift + rng.standard_normal((n_tr, v))) for _ in range(n_rep)])
    run[:, :, 0] = 0.0                                                        # a constant (all-NaN → 0) voxel
    stored = run[:, 40:]                                                      # individual_repeats[:, 40:]
    ref_stored = cc_max_reference(stored)
    got_stored = noise_ceiling(stored, zscore=False)
    # the reference maps a constant voxel (SP = -1/(N-1)) to 1/sqrt(0) = inf → 1.8e308; here it has no ceiling
    assert ref_stored[0] > 1e300 and got_stored[0] == 0.0
    np.testing.assert_allclose(got_stored[1:], ref_stored[1:], rtol=1e-12, atol=1e-12)
    # the default re-z-scores each trimmed repeat, so the formula's TP = 1 holds
    rz = np.stack([zs(r) for r in stored[:, :, 1:]])
    np.testing.assert_allclose(noise_ceiling(stored, zscore=True)[1:], cc_max_reference(rz), rtol=1e-12, atol=1e-12)
    rel = np.abs(noise_ceiling(stored)[1:] - got_stored[1:]) / np.maximum(got_stored[1:], 1e-9)
    assert np.median(rel[got_stored[1:] > 0.3]) > 0.005                      # the conventions differ
    # voxel blocks change nothing
    np.testing.assert_allclose(noise_ceiling(stored, batch=7), noise_ceiling(stored, batch=v), rtol=1e-14)


def test_dataset_ceiling_setting(tmp_path):
    root = build_real_layout(tmp_path / "ds")
    reps = LebelDataset(root).load_repeats("UTS01")
    np.testing.assert_array_equal(LebelDataset(root).noise_ceiling("UTS01"), noise_ceiling(reps))
    stored = LebelDataset(root, DataConfig(ceiling="stored")).noise_ceiling("UTS01")
    np.testing.assert_array_equal(stored, noise_ceiling(reps, zscore=False))


def _report(path, triggers, start=10.0):
    lines = [f"{t:.4f} {'init-trigger' if i == 0 else 'trigger'}" for i, t in enumerate(triggers)]
    path.write_text("\n".join(lines[:2] + [f"{start:.4f} sound-start", "12.0 word hello"] + lines[2:]) + "\n")


def test_tr_report_is_trfile(tmp_path):
    trig = list(np.arange(40) * 2.0045)
    one_missed = trig[:17] + trig[18:]
    _report(tmp_path / "a.report", one_missed, start=10.02)
    got, start = read_tr_report(tmp_path / "a.report")
    ref, ref_start = trfile_reference(tmp_path / "a.report")
    np.testing.assert_allclose(got, ref, atol=1e-9)
    assert start == ref_start == 10.02 and len(got) == 40
    # two missed triggers: TRFile inserts the second one a place too early (it does not shift its indices);
    # here each lands in its own gap, so the triggers stay in time order
    _report(tmp_path / "b.report", trig[:10] + trig[11:30] + trig[31:])
    got, _ = read_tr_report(tmp_path / "b.report")
    ref, _ = trfile_reference(tmp_path / "b.report")
    assert np.all(np.diff(got) > 0) and not np.all(np.diff(ref) > 0)
    np.testing.assert_allclose(got, trig, atol=0.01)


def test_dataset_reads_tr_reports(tmp_path):
    root = build_real_layout(tmp_path / "ds")
    ds = LebelDataset(root)
    grid = ds.tr_times("alpha")
    (ds.deriv / "trfiles").mkdir()
    trig = np.arange(N_TRS["alpha"] - 5) * 2.0045 + 3.0
    _report(ds.deriv / "trfiles" / "alpha.report", trig, start=13.0)
    ds = LebelDataset(root)                                                   # auto: the report where there is one
    # DataSequence.from_grid: tr_times = trigger - sound start + avgtr / 2
    np.testing.assert_allclose(ds.tr_times("alpha"), trig - 13.0 + 2.0045 / 2, atol=1e-9)
    assert ds.tr_length("alpha") == pytest.approx(2.0045)
    assert abs(ds.tr_times("alpha")[-1] - grid[-1]) > 0.1                     # drifts off the 2.0 s grid
    np.testing.assert_array_equal(LebelDataset(root, DataConfig(tr_source="grid")).tr_times("alpha"), grid)
    np.testing.assert_array_equal(ds.tr_times("beta"), LebelDataset(root, DataConfig(tr_source="grid")).tr_times("beta"))
    with pytest.raises(DatasetError, match=r"missing TR report for story 'beta': .*trfiles/beta.report"):
        LebelDataset(root, DataConfig(tr_source="reports")).tr_times("beta")
    _report(ds.deriv / "trfiles" / "beta.report", np.arange(12) * 2.0)
    with pytest.raises(DatasetError, match=r"beta.report: 12 triggers, but respdict.json's 36 TRs .* mean 31"):
        LebelDataset(root).tr_times("beta")
    (ds.deriv / "trfiles" / "beta.report").write_text("0.0 trigger\nabc trigger\n")
    with pytest.raises(DatasetError, match=r"beta.report:2: expected '<seconds> <label>'"):
        LebelDataset(root).tr_times("beta")
    (ds.deriv / "trfiles" / "beta.report").write_text("0.0 trigger\n2.0 trigger\n")
    with pytest.raises(DatasetError, match=r"beta.report: a TR report needs a sound-start"):
        LebelDataset(root).tr_times("beta")


def test_reports_recover_a_drifting_scanner(tmp_path):
    """A simulated scanner at 2.05 s per TR: read from its reports, the planted drivers fit far better than
    on the nominal 2.0 s grid, which ends ~4 s off by the last TR."""
    root = tmp_path / "ds"
    simulate(SimConfig(participants=1, stories=3, trs_per_story=90, n_vertices=120, seed=3, scanner_tr=2.05,
                       snr_auditory=1.0, snr_semantic=1.0), root)
    r = {}
    for source in ("auto", "grid"):
        ds = LebelDataset(root, DataConfig(root=str(root), tr_source=source))
        subs = ds.participants()
        rows, _ = encode(ds, {"stim": StimulusFeatures(FeatureConfig(), spaces=("spectral", "categories"))}, subs,
                         ds.split()["train"], RidgeConfig(), find_common_space(root, "", subs),
                         ComputeSettings(runner="local"), log=lambda *a: None)
        r[source] = {(x["layer"], x["region"]): x["mean_r"] for x in rows if x["kind"] == "layer"}
    assert LebelDataset(root).tr_length("story01") == pytest.approx(2.05)
    assert r["auto"][("categories", "semantic")] > r["grid"][("categories", "semantic")] + 0.15
    assert r["auto"][("spectral", "auditory")] > r["grid"][("spectral", "auditory")] + 0.15
