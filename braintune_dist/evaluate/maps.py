"""Brain maps: per-vertex alignment on the common space's cortical surface, as GIfTI files and figures;
per-voxel alignment as NIfTI volumes when a participant's brain mask is given.

Vertex values are the mean over participants of their voxels mapped to the vertex (``CommonSpace.maps``),
at each model's best layer (``report.best_layers``). Files, under ``<report out_dir>/maps/``::

    <model>/r_hemi-{L,R}.func.gii           Pearson r on the test story
    <model>/rnorm_hemi-{L,R}.func.gii       r / noise ceiling (NaN where the ceiling is below threshold)
    <model>-minus-<reference>/rnorm_hemi-{L,R}.func.gii   the difference of the two r / ceiling maps
    <model>/<subject>_rnorm.nii.gz          per-voxel r / ceiling in the participant's volume (with a mask)

Every GIfTI holds all vertices of one hemisphere of the template (fsaverage5: 10,242), NaN where no
participant's voxel maps; any GIfTI viewer (FreeSurfer freeview, Connectome Workbench, nilearn) opens them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.data.surface import HEMIS, Surface, load_surface
from braintune_dist.data.voxels import CommonSpace
from braintune_dist.config import ConfigError
from braintune_dist.errors import DatasetError
from braintune_dist.io import atomic_path

HEMI_TAG = {"left": "L", "right": "R"}
GIFTI_STRUCTURE = {"left": "CortexLeft", "right": "CortexRight"}


@dataclass
class MapSettings:
    """Which brain maps the alignment report writes."""

    enabled: bool = True
    """Write per-vertex GIfTI maps (needs a common space on a surface) and their figures."""
    figures: bool = True
    """Draw the maps on the inflated and flat fsaverage5 meshes (nilearn)."""
    reference: str = "untuned"
    """Model the difference maps subtract (every other model minus it); skipped when absent."""
    threshold: float = 0.1
    """Figures of r / ceiling leave vertices below this value uncoloured."""
    diff_threshold: float = 0.02
    """Difference figures leave vertices with |difference| below this uncoloured."""
    volumes: str = ""
    """Folder with ``<subject>/mask.nii.gz`` (brain mask in the participant's reference volume, nonzero
    voxels in numpy C order = the hf5 columns); '' = no per-voxel NIfTI maps."""

    def __post_init__(self):
        for name in ("threshold", "diff_threshold"):
            if getattr(self, name) < 0:
                raise ConfigError(f"eval.maps.{name}: {getattr(self, name)} must be >= 0")


def vertex_values(space: CommonSpace, per_participant: dict[str, np.ndarray]) -> np.ndarray:
    """Mean over participants of per-voxel values at each common-space vertex.

    Parameters
    ----------
    per_subject : subject → (n_voxels,) values (NaN = no value)

    Returns
    -------
    v : (n_vertices,) float64, NaN where no finite value maps
    """
    total = np.zeros(space.n_vertices)
    count = np.zeros(space.n_vertices)
    for sub, vals in per_participant.items():
        m = space.maps[sub]
        vals = np.asarray(vals, np.float64)
        if vals.shape != m.shape:
            raise DatasetError(f"{sub}: {vals.shape[0]} voxel values, common-space map has {m.shape[0]}")
        ok = (m >= 0) & np.isfinite(vals)
        # a participant with several voxels on one vertex counts once (their mean), like to_common
        s = np.bincount(m[ok], weights=vals[ok], minlength=space.n_vertices)
        c = np.bincount(m[ok], minlength=space.n_vertices)
        total += np.where(c > 0, s / np.maximum(c, 1), 0.0)
        count += c > 0
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def on_surface(space: CommonSpace, values: np.ndarray, surface: Surface) -> dict[str, np.ndarray]:
    """Common-space values (n_vertices,) → {hemisphere: (n_per_hemi,) float32}, NaN off the common space."""
    index = space.vertex_index
    if index.size and (index.min() < 0 or index.max() >= surface.n_vertices):
        raise DatasetError(f"{Path(space.directory) / 'common_space.npz'}: vertex_index holds {index.min()} .. "
                           f"{index.max()}, but {surface.name} has vertices 0 .. {surface.n_vertices - 1}")
    full = np.full(surface.n_vertices, np.nan, np.float32)
    full[index] = values
    return surface.split(full)


def write_gifti(path: str | Path, values: np.ndarray, hemi: str, name: str) -> Path:
    """One hemisphere's per-vertex values (n_per_hemi,) as a functional GIfTI, written atomically."""
    import nibabel as nib
    from nibabel.gifti import GiftiDataArray, GiftiImage, GiftiMetaData
    arr = GiftiDataArray(np.asarray(values, np.float32), intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_FLOAT32",
                         meta=GiftiMetaData({"Name": name}))
    img = GiftiImage(darrays=[arr], meta=GiftiMetaData({"AnatomicalStructurePrimary": GIFTI_STRUCTURE[hemi]}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def read_gifti(path: str | Path) -> np.ndarray:
    """The first data array of a GIfTI file, (n,) float32."""
    import nibabel as nib
    return np.asarray(nib.load(str(path)).darrays[0].data, np.float32)


def load_mask(path: Path, n_voxels: int) -> "tuple[np.ndarray, object]":
    """(mask bool array in the volume, the NIfTI image) for a participant with ``n_voxels`` columns."""
    import nibabel as nib
    if not path.is_file():
        raise DatasetError(f"brain mask not found: {path}")
    try:
        img = nib.load(str(path))
        mask = np.asarray(img.dataobj) != 0
    except Exception as e:   # nibabel raises several types on a damaged file
        raise DatasetError(f"{path}: not a readable NIfTI mask ({type(e).__name__}: {e})") from None
    if int(mask.sum()) != n_voxels:
        raise DatasetError(f"{path}: mask has {int(mask.sum())} nonzero voxels, the responses have {n_voxels}")
    return mask, img


def write_volume(path: Path, values: np.ndarray, mask: np.ndarray, like) -> Path:
    """Per-voxel values (n_voxels,) into the mask's volume (NaN outside), NIfTI with the mask's affine."""
    import nibabel as nib
    vol = np.full(mask.shape, np.nan, np.float32)
    vol[mask] = values                              # C order of the mask = the hf5 column order
    path.parent.mkdir(parents=True, exist_ok=True)
    header = like.header.copy()
    header.set_data_dtype(np.float32)               # a uint8 mask's header would quantise the values
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(vol, like.affine, header), tmp)
    return path


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def brain_maps(space: CommonSpace, scores: dict, best: dict, ceiling_threshold: float, settings: MapSettings,
               out_dir: str | Path, log=print) -> dict[str, dict]:
    """Write every model's maps (and differences to ``settings.reference``) under ``out_dir``.

    Parameters
    ----------
    scores : model → subject → ``VoxelScores`` (from ``pipeline.encode``)
    best : model → layer the maps use
    ceiling_threshold : noise ceilings at or below it give NaN r / ceiling

    Returns
    -------
    maps : name → {'values': (n_vertices,), 'per_hemi': {hemisphere: (n_per_hemi,)}, 'files': [paths],
        'kind': 'rnorm' | 'r' | 'diff', 'layer'}
    """
    surface = load_surface(space.surface)
    out = Path(out_dir)
    maps: dict[str, dict] = {}
    for model, subs in scores.items():
        layer = best[model]
        for kind in ("r", "rnorm"):
            vals = {s: (vs.r[layer] if kind == "r" else vs.r_norm(layer, ceiling_threshold)) for s, vs in subs.items()}
            maps[f"{model}/{kind}"] = dict(kind=kind, values=vertex_values(space, vals), layer=layer)
        if settings.volumes:
            for s, vs in subs.items():
                mask, img = load_mask(Path(settings.volumes) / s / "mask.nii.gz", vs.r[layer].shape[0])
                p = write_volume(out / _safe(model) / f"{s}_rnorm.nii.gz", vs.r_norm(layer, ceiling_threshold), mask, img)
                maps[f"{model}/rnorm"].setdefault("volumes", []).append(str(p))
    ref = settings.reference
    if f"{ref}/rnorm" in maps:
        for model in scores:
            if model != ref:
                maps[f"{model}-minus-{ref}/rnorm"] = dict(
                    kind="diff", values=maps[f"{model}/rnorm"]["values"] - maps[f"{ref}/rnorm"]["values"],
                    layer=(best[model], best[ref]))
    for name, m in maps.items():
        folder, kind = name.rsplit("/", 1)
        m["per_hemi"] = per_hemi = on_surface(space, m["values"], surface)
        m["files"] = [str(write_gifti(out / _safe(folder) / f"{kind}_hemi-{HEMI_TAG[h]}.func.gii", per_hemi[h], h,
                                      f"{folder} {kind}")) for h in HEMIS]
    log(f"[maps] {len(maps)} per-vertex maps on {surface.name} (GIfTI, both hemispheres) in {out}")
    return maps
