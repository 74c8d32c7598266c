"""Brain maps: fsaverage5 from nilearn's files, FreeSurfer atlases through nibabel, GIfTI / NIfTI maps,
surface figures, and where the simulator puts its vertices."""
import numpy as np
import pytest

from braintune_dist.data.simulate import brain, placement
from braintune_dist.data.surface import fsaverage5, read_atlas
from braintune_dist.data.voxels import CommonSpace, find_common_space
from braintune_dist.errors import DatasetError
from braintune_dist.evaluate.figures import plot_surface_map
from braintune_dist.evaluate.maps import load_mask, on_surface, read_gifti, vertex_values, write_gifti, write_volume
from braintune_dist.tracking import save_figure

N = 10242                                  # fsaverage5 vertices per hemisphere


def test_fsaverage5_meshes():
    s = fsaverage5()
    assert s.n_per_hemi == N and set(s.meshes) == {"pial", "white", "inflated", "flat", "sphere"}
    coords, faces = s.meshes["pial"]["left"]
    assert coords.shape == (N, 3) and faces.max() == N - 1
    assert (coords[:, 0] < 5).all() and (s.meshes["pial"]["right"][0][:, 0] > -5).all()   # x < 0 is left
    d = s.sphere_distance(0)
    assert d[0] == pytest.approx(0, abs=1e-3) and 0 < np.sort(d)[1] < 6 and d.max() < np.pi * 100 + 1e-3


def test_gifti_round_trip(tmp_path):
    vals = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    vals[::5] = np.nan
    p = write_gifti(tmp_path / "m" / "rnorm_hemi-L.func.gii", vals, "left", "test map")
    back = read_gifti(p)
    np.testing.assert_array_equal(back, vals)                         # NaN in the same places
    assert not list(tmp_path.glob("m/.*"))                            # no temporary left behind
    import nibabel as nib
    img = nib.load(str(p))
    assert img.meta["AnatomicalStructurePrimary"] == "CortexLeft"


def _write_annots(d, names_l=("unknown", "auditory", "semantic"), names_r=("unknown", "semantic", "auditory")):
    """Both hemispheres: vertices 0-99 region 1, 100-199 region 2, the rest label 0 ('unknown')."""
    import nibabel as nib
    for hemi, names in (("lh", names_l), ("rh", names_r)):
        labels = np.zeros(N, np.int32)
        labels[:100], labels[100:200] = 1, 2
        ctab = np.array([[25, 5, 25, 0, 0], [200, 0, 0, 0, 0], [0, 0, 200, 0, 0]], np.int32)
        nib.freesurfer.write_annot(str(d / f"{hemi}.toy.annot"), labels, ctab, list(names), fill_ctab=True)


def test_rois_from_annot_and_label_files(tmp_path):
    d = tmp_path / "atlas"
    d.mkdir()
    _write_annots(d)
    region, names, surface = read_atlas(d)
    assert surface == "fsaverage5" and names == ["auditory", "semantic"] and region.shape == (2 * N,)
    aud, sem = names.index("auditory"), names.index("semantic")
    assert (region[:100] == aud).all() and (region[100:200] == sem).all() and (region[200:N] == -1).all()
    assert (region[N:N + 100] == sem).all() and (region[N + 100:N + 200] == aud).all()  # by name, not label number
    # a user's folder: the atlas + each participant's voxel → surface vertex map, no code
    (d / "UTS01").mkdir()
    np.save(d / "UTS01" / "voxel_to_vertex.npy", np.array([5, 150, N + 5, N + 150, 300, -1], np.int64))
    space = find_common_space("/nonexistent", str(d), ["UTS01"])
    assert space.surface == "fsaverage5" and space.n_vertices == 2 * N
    assert space.voxel_regions("UTS01").tolist() == ["auditory", "semantic", "semantic", "auditory", "", ""]
    # .label files: one per ROI and hemisphere
    import nibabel as nib
    d2 = tmp_path / "labels"
    d2.mkdir()
    for hemi, idx in (("lh", np.arange(10, 20)), ("rh", np.arange(30, 35))):
        with open(d2 / f"{hemi}.A1.label", "w") as f:      # FreeSurfer ASCII label: header, count, rows
            f.write(f"#!ascii label\n{len(idx)}\n" + "".join(f"{i} 0 0 0 0\n" for i in idx))
    assert nib.freesurfer.read_label(str(d2 / "lh.A1.label")).tolist() == list(range(10, 20))
    region, names, _ = read_atlas(d2, n_per_hemi=N)
    assert names == ["A1"] and np.flatnonzero(region == 0).tolist() == list(range(10, 20)) + list(range(N + 30, N + 35))


def test_atlas_errors_name_the_file(tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "lh.toy.annot").write_bytes(b"not an annot")
    (d / "rh.toy.annot").write_bytes(b"not an annot")
    with pytest.raises(DatasetError, match="lh.toy.annot: not a readable FreeSurfer .annot"):
        read_atlas(d)
    (d / "rh.toy.annot").unlink()
    with pytest.raises(DatasetError, match="exactly one rh.<atlas>.annot"):
        read_atlas(d)
    with pytest.raises(DatasetError, match="common-space map not found"):
        CommonSpace.load(tmp_path / "empty", [])


def test_vertex_values_average_participants():
    space = CommonSpace(np.zeros(3, np.int64), ["x"], {"a": np.array([0, 0, 1, -1]), "b": np.array([1, 2])},
                        "fsaverage5", np.array([7, 8, N + 1]))
    v = vertex_values(space, {"a": np.array([1.0, 3.0, 5.0, 9.0]), "b": np.array([np.nan, 4.0])})
    # vertex 0: a's two voxels (mean 2); vertex 1: a's 5 (b's NaN ignored); vertex 2: b's 4
    np.testing.assert_allclose(v, [2.0, 5.0, 4.0])


def test_vertex_index_off_the_surface_names_the_file(tmp_path):
    """A common_space.npz whose vertex_index does not fit the surface it names is refused, not an IndexError."""
    space = CommonSpace(np.zeros(3, np.int64), ["x"], {}, "fsaverage5", np.array([7, 8, 2 * N]), str(tmp_path))
    with pytest.raises(DatasetError, match=rf"{tmp_path}/common_space.npz: vertex_index holds 7 .. {2 * N}, but "
                                           rf"fsaverage5 has vertices 0 .. {2 * N - 1}"):
        on_surface(space, np.ones(3), fsaverage5())
    space.vertex_index[2] = N + 1
    assert {h: v.shape for h, v in on_surface(space, np.ones(3), fsaverage5()).items()} == {"left": (N,), "right": (N,)}


def test_nifti_volume_map(tmp_path):
    import nibabel as nib
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2:4, 1:5] = True                                          # 16 voxels
    affine = np.diag([2.5, 2.5, 2.5, 1.0])
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    m, img = load_mask(tmp_path / "mask.nii.gz", 16)
    vals = np.arange(16, dtype=np.float32)
    p = write_volume(tmp_path / "out" / "s_rnorm.nii.gz", vals, m, img)
    back = nib.load(str(p))
    data = np.asarray(back.dataobj)
    np.testing.assert_array_equal(data[mask], vals)
    np.testing.assert_allclose(back.affine, affine)
    assert np.isnan(data[~mask]).all()
    with pytest.raises(DatasetError, match="mask has 16 nonzero voxels, the responses have 17"):
        load_mask(tmp_path / "mask.nii.gz", 17)


def test_placement_is_anatomical_and_deterministic_per_seed():
    s = fsaverage5()
    region = brain.draw_regions(np.random.default_rng(0), 600, dict(auditory=.2, phonetic=.15, lexical=.15,
                                                                    semantic=.25))
    a, pa = placement.place(np.random.default_rng(1), s, region, brain.REGION_NAMES)
    b, _ = placement.place(np.random.default_rng(1), s, region, brain.REGION_NAMES)
    c, _ = placement.place(np.random.default_rng(2), s, region, brain.REGION_NAMES)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and len(set(a.tolist())) == 600
    for p in pa:
        info = p.info(s)
        assert (s.hemi_of(a[p.members]) == ["left", "right"].index(p.hemi)).all()
        assert (np.sign(info["centre_pial_mm"][0]) == (-1 if p.hemi == "left" else 1))
        assert p.distances.max() < 40                                 # a compact patch, not scattered vertices
    temporal = [p.info(s) for p in pa if p.region in ("auditory", "phonetic", "lexical")]
    assert all(-45 < t["centre_pial_mm"][1] < 0 and -10 < t["centre_pial_mm"][2] < 20 for t in temporal)
    # smooth within a patch: neighbours' weights correlate, distant members' do not
    Z = placement.smooth(np.random.default_rng(3).standard_normal((600, 64)), pa, 8.0)
    p = max(pa, key=lambda p: len(p.members))
    C = np.corrcoef(Z[p.members])
    d = p.distances
    assert C[(d > 0) & (d < 5)].mean() > 0.5 > 0.15 > abs(C[d > 20].mean())


def test_surface_figure_renders(tmp_path):
    s = fsaverage5()
    vals = {h: np.full(N, np.nan) for h in ("left", "right")}
    centre = s.nearest_vertex("left", (-44, -22, 8))
    d = s.sphere_distance(centre)
    vals["left"][d < 15] = 0.8                                        # a blob on left Heschl's gyrus
    vals["right"][:50] = -0.5
    fig = plot_surface_map(s, vals, "toy difference", diverging=True, threshold=0.1)
    assert "|value| < 0.1" in fig._suptitle.get_text()
    path = save_figure(fig, tmp_path / "toy.png")
    import matplotlib.image
    img = matplotlib.image.imread(path)[..., :3]
    red = (img[..., 0] > 0.5) & (img[..., 1] < 0.35) & (img[..., 2] < 0.35)
    assert red.sum() > 50, red.sum()                                  # the blob is drawn in the diverging map
