"""Noise ceiling against a direct float64 computation; selection; common-space projection."""
import numpy as np
import pytest

from braintune_dist.data.lebel import DatasetError
from braintune_dist.data.voxels import CommonSpace, isc_ceiling, noise_ceiling, normalised_alignment


def reference_cc_max(repeats):
    """Schoppe et al. 2016 / spe_and_cc_norm, written out voxel by voxel in float64."""
    n, t, v = repeats.shape
    out = np.zeros(v)
    for j in range(v):
        reps = []
        for i in range(n):
            x = repeats[i, :, j].astype(np.float64)
            reps.append((x - x.mean()) / x.std() if x.std() > 0 else np.zeros(t))
        y = np.mean(reps, axis=0)
        sp = (n * np.var(y, ddof=1) - 1.0) / (n - 1)
        out[j] = 1.0 / np.sqrt(1.0 + (1.0 / n) * (1.0 / sp - 1.0)) if sp > 0 else 0.0
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_ceiling_matches_reference(dtype):
    rng = np.random.default_rng(0)
    n_rep, n_tr, v = 5, 200, 60
    signal = rng.standard_normal((n_tr, v))
    snr = np.r_[np.zeros(20), np.logspace(-1.5, 1, 40)]              # 20 null voxels, then planted
    R = (signal * np.sqrt(snr))[None] + rng.standard_normal((n_rep, n_tr, v))
    R[:, :, 3] = 0.0                                                  # constant voxel -> no ceiling
    got = noise_ceiling(R.astype(dtype))
    ref = reference_cc_max(R.astype(dtype))
    np.testing.assert_allclose(got, ref, rtol=1e-5 if dtype == np.float32 else 1e-10, atol=1e-6)
    assert got[3] == 0.0 and np.all((got >= 0) & (got <= 1))
    # the ceiling grows with the planted SNR, and null voxels sit far below strong ones
    rank = lambda a: np.argsort(np.argsort(a))  # noqa: E731  (cc_max saturates: compare ranks)
    assert np.corrcoef(rank(got[20:]), rank(snr[20:]))[0, 1] > 0.8
    assert got[:20].mean() < 0.35 < got[-10:].min()


def test_noise_ceiling_bad_shape():
    with pytest.raises(ValueError, match=r"n_repeats ≥ 2"):
        noise_ceiling(np.zeros((1, 10, 3)))


def test_selection_and_normalisation():
    cc = np.array([0.1, 0.5, 0.41, 0.4, 0.0])
    r = np.array([0.05, 0.25, 0.41, 0.2, 0.3])
    out = normalised_alignment(r, cc)
    assert np.allclose(out[:4], [0.5, 0.5, 1.0, 0.5]) and np.isnan(out[4])


def _space(tmp_path):
    np.savez(tmp_path / "common_space.npz", vertex_region=np.array([0, 1, 1, 2, 2], np.int8),
             region_names=np.array(["null", "auditory", "semantic"]))
    (tmp_path / "s1").mkdir()
    np.save(tmp_path / "s1" / "voxel_to_vertex.npy", np.array([4, 1, 1, -1, 0], np.int64))
    return CommonSpace.load(tmp_path, ["s1"])


def test_common_space_projection(tmp_path):
    cs = _space(tmp_path)
    assert cs.n_vertices == 5
    Y = np.arange(15, dtype=np.float32).reshape(3, 5)                 # (n_rows, n_voxels)
    Yc = cs.to_common("s1", Y)
    # direct float64 reference: mean of the voxels mapped to each vertex, 0 where uncovered
    ref = np.zeros((3, 5))
    for vert in range(5):
        vox = np.flatnonzero(cs.maps["s1"] == vert)
        if len(vox):
            ref[:, vert] = Y[:, vox].astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(Yc, ref)
    assert cs.coverage("s1").tolist() == [True, True, False, False, True]
    assert cs.voxel_regions("s1").tolist() == ["semantic", "auditory", "auditory", "", "null"]
    assert cs.region_mask("s1", "auditory").tolist() == [False, True, True, False, False]


def test_common_space_errors(tmp_path):
    cs = _space(tmp_path)
    with pytest.raises(DatasetError, match=r"s1/voxel_to_vertex.npy: maps 5 voxels, s1's responses have 4"):
        cs.to_common("s1", np.zeros((2, 4)))
    with pytest.raises(DatasetError, match="subject 's2' has no common-space map"):
        cs.coverage("s2")
    with pytest.raises(DatasetError, match="unknown region 'visual'"):
        cs.region_mask("s1", "visual")
    with pytest.raises(DatasetError, match=r"no common-space map for subject s2: .*s2/voxel_to_vertex.npy"):
        CommonSpace.load(tmp_path, ["s2"])
    np.save(tmp_path / "s1" / "voxel_to_vertex.npy", np.array([9]))
    with pytest.raises(DatasetError, match=r"voxel_to_vertex.npy: must be a 1-D vector of vertex indices"):
        CommonSpace.load(tmp_path, ["s1"])
    with pytest.raises(DatasetError, match="common-space map not found"):
        CommonSpace.load(tmp_path / "nowhere", ["s1"])


def test_zscore_columns_constant_ones_zero_and_dtype():
    from braintune_dist.data.voxels import zscore
    Y = np.array([[1.0, 5.0, 2.0], [3.0, 5.0, 4.0], [5.0, 5.0, 9.0]], np.float32)
    Z = zscore(Y)
    assert Z.dtype == np.float32 and np.allclose(Z.mean(0), 0, atol=1e-6)
    assert np.allclose(Z[:, [0, 2]].std(0), 1, atol=1e-6) and (Z[:, 1] == 0).all()
    assert zscore(Y, np.float64).dtype == np.float64
    np.testing.assert_allclose(zscore(Y, np.float64)[:, 0], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)


def test_ceiling_report_names_a_map_of_the_wrong_size(tiny_root, tmp_path):
    """A voxel → vertex map shorter than the responses: one error naming the map file, not an IndexError."""
    import shutil

    from braintune_dist.data.lebel import LebelDataset
    from braintune_dist.experiment.prepare import ceiling_report
    root = tmp_path / "ds"
    shutil.copytree(tiny_root, root)
    ceiling_report(LebelDataset(root), 0.4)                                 # intact: fine
    m = root / "ground_truth" / "UTS02" / "voxel_to_vertex.npy"
    np.save(m, np.load(m)[:-3])
    with pytest.raises(DatasetError, match=r"UTS02/voxel_to_vertex.npy: maps \d+ voxels, UTS02's responses have \d+"):
        ceiling_report(LebelDataset(root), 0.4)


@pytest.mark.parametrize("values, match", [
    (np.array([4.0, 1, -0.3, -1, 0]),
     r"the map must hold integer indices \(int64, -1 = none\), not float64, e.g. -0.3 at index 2; save it"),
    (np.array([4.0, 1, 1, -1, 0]), r"the map must hold .*, not float64 \(whole numbers, stored as floats\)"),
    (np.array([4, 1, True, -1, 0], dtype=object), r"holds Python objects \(an object array\), which are not loaded"),
])
def test_a_voxel_map_that_is_not_integers_is_refused(tmp_path, values, match):
    """A float map cast to int64 would move voxel −0.3 (unmapped) to vertex 0; an object array would be unpickled."""
    _space(tmp_path)
    np.save(tmp_path / "s1" / "voxel_to_vertex.npy", values, allow_pickle=True)
    with pytest.raises(DatasetError, match=rf"{tmp_path / 's1' / 'voxel_to_vertex.npy'}: {match}"):
        CommonSpace.load(tmp_path, ["s1"])


def test_vertex_indices_off_the_template_are_refused_at_load(tmp_path):
    _space(tmp_path)
    region = np.array([0, 1, 1, 2, 2])
    for index, match in ((np.array([0, 5, 9, 20483, 20484]), r"vertex_index holds 0 .. 20484, but fsaverage5 has "
                                                             r"vertices 0 .. 20483"),
                         (np.array([-1, 5, 9, 1, 2]), r"vertex_index holds -1 .. 9, but fsaverage5 has vertices 0 ..")):
        np.savez(tmp_path / "common_space.npz", vertex_region=region, region_names=np.array(["a", "b", "c"]),
                 surface=np.array("fsaverage5"), vertex_index=index)
        with pytest.raises(DatasetError, match=rf"common_space.npz: {match}"):
            CommonSpace.load(tmp_path, ["s1"])
    np.savez(tmp_path / "common_space.npz", vertex_region=region.astype(float), region_names=np.array(["a", "b", "c"]))
    with pytest.raises(DatasetError, match=r"common_space.npz: vertex_region must hold integer indices"):
        CommonSpace.load(tmp_path, ["s1"])


def test_a_repeat_without_data_is_dropped_not_zeroed():
    """An all-NaN repeat as zeros would lower the ceiling (and inflate r / ceiling): it is dropped with a warning
    naming the file and the repeat, and the ceiling is that of the other repeats."""
    from braintune_dist.data.voxels import repeats_with_data
    rng = np.random.default_rng(0)
    signal = rng.standard_normal((60, 8))
    R = (signal + 0.7 * rng.standard_normal((4, 60, 8))).astype(np.float32)
    with_nan = R.copy()
    with_nan[2] = np.nan
    with pytest.warns(UserWarning, match=r"^f.hf5: 'r': repeat\(s\) \[2\] are NaN throughout: dropped; the noise "
                                         r"ceiling uses the other 3$"):
        kept = repeats_with_data(with_nan, "f.hf5: 'r'")
    np.testing.assert_array_equal(kept, R[[0, 1, 3]])
    zeroed = noise_ceiling(np.nan_to_num(with_nan))
    assert np.median(noise_ceiling(kept)) > np.median(zeroed) + 0.1      # what zeros did to the ceiling
    with_nan[0] = np.nan
    with_nan[3, :, 5] = np.nan                                           # one voxel missing in one repeat
    with_nan[:, :, 6] = np.nan                                           # one voxel missing everywhere: silent
    with pytest.warns(UserWarning) as caught:
        assert repeats_with_data(with_nan, "f.hf5: 'r'").shape == (2, 60, 8)
    assert [str(w.message) for w in caught][1] == (
        "f.hf5: 'r' has NaN in 1 voxel(s) in some repeats or rows (repeat(s) [3]): set to 0 there, which lowers "
        "those voxels' noise ceiling")
    with_nan[1] = np.nan
    with pytest.raises(DatasetError, match=r"f.hf5: 'r' needs ≥ 2 repeats with data for a noise ceiling \(3 of 4 "
                                           r"are NaN throughout: repeats \[0, 1, 2\]\)"):
        repeats_with_data(with_nan, "f.hf5: 'r'")


def test_isc_ceiling_against_its_formula_written_out():
    """Leave-one-out ISC: participant i against the mean of the others, vertex by vertex, np.corrcoef."""
    rng = np.random.default_rng(3)
    n, t, v = 4, 120, 30
    shared = rng.standard_normal((t, v))
    weight = np.r_[np.zeros(10), np.linspace(0.2, 3, 19), 1.0]          # 10 vertices share nothing
    R = (shared * weight)[None] + rng.standard_normal((n, t, v))
    R[:, :, -1] = 5.0                                                   # a constant vertex
    got = isc_ceiling(R.astype(np.float32), batch=7)
    want = np.zeros((n, v))
    for i in range(n):
        others = np.delete(R, i, axis=0).mean(axis=0)
        for j in range(v - 1):
            want[i, j] = np.corrcoef(R[i, :, j], others[:, j])[0, 1]
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[:, -1].tolist() == [0.0] * n
    assert np.abs(got[:, :10]).mean() < 0.15 < got[:, 20:29].mean()  # planted sharing is found
    with pytest.raises(ValueError, match="n_participants ≥ 2"):
        isc_ceiling(R[:1])
