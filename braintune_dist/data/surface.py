"""Cortical surfaces of the common space: FreeSurfer fsaverage meshes and ROI atlases, read with nibabel.

The common space of the project is a FreeSurfer template surface. Its vertices are numbered as one
array over both hemispheres: left ``0 … n-1``, then right ``n … 2n-1`` (``n`` = vertices per hemisphere:
10,242 for fsaverage5, 40,962 for fsaverage6, 163,842 for fsaverage).

* :func:`fsaverage5` loads the meshes nilearn's wheel ships (no download): pial, white, inflated, flat
  and sphere for both hemispheres, with sulcal depth for shading.
* :func:`read_atlas` reads ROI labels from FreeSurfer files: ``lh.<atlas>.annot`` + ``rh.<atlas>.annot``,
  or one ``<hemi>.<roi>.label`` file per ROI.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.errors import DatasetError

HEMIS = ("left", "right")
FS_HEMI = {"left": "lh", "right": "rh"}
TEMPLATE_SIZES = {10242: "fsaverage5", 40962: "fsaverage6", 163842: "fsaverage"}
"""Vertices per hemisphere → FreeSurfer template name."""
MESHES = {"pial": "pial_{hemi}", "white": "white_{hemi}", "inflated": "infl_{hemi}", "flat": "flat_{hemi}",
          "sphere": "sphere_{hemi}"}
"""Mesh kind → file stem in nilearn's fsaverage5 folder."""
SPHERE_RADIUS = 100.0
"""Radius (mm) of FreeSurfer's registration sphere: distances on it are in 'sphere mm'."""


@dataclass
class Surface:
    """One template surface, both hemispheres."""

    name: str
    """Template name, e.g. 'fsaverage5'."""
    n_per_hemi: int
    """Vertices per hemisphere."""
    meshes: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    """Mesh kind → hemisphere → (coords (n_per_hemi, 3) float32 mm, faces (n_faces, 3) int32)."""
    sulc: dict[str, np.ndarray]
    """Hemisphere → (n_per_hemi,) sulcal depth, the background shading of figures."""

    @property
    def n_vertices(self) -> int:
        return 2 * self.n_per_hemi

    def split(self, values: np.ndarray) -> dict[str, np.ndarray]:
        """(2 n_per_hemi, ...) array over both hemispheres → {'left': (n_per_hemi, ...), 'right': ...}."""
        values = np.asarray(values)
        if values.shape[0] != self.n_vertices:
            raise ValueError(f"{self.name}: expected {self.n_vertices} vertex values, got {values.shape[0]}")
        return {"left": values[: self.n_per_hemi], "right": values[self.n_per_hemi:]}

    def hemi_of(self, vertex: np.ndarray) -> np.ndarray:
        """Hemisphere index (0 left, 1 right) of each surface vertex index."""
        return (np.asarray(vertex) >= self.n_per_hemi).astype(np.int64)

    def nearest_vertex(self, hemi: str, xyz, kind: str = "pial") -> int:
        """Surface index (both-hemisphere numbering) of the ``kind`` mesh vertex of ``hemi`` nearest ``xyz`` (mm)."""
        coords = self.meshes[kind][hemi][0]
        v = int(np.argmin(((coords - np.asarray(xyz, dtype=np.float32)) ** 2).sum(axis=1)))
        return v + (self.n_per_hemi if hemi == "right" else 0)

    def sphere_distance(self, vertex: int, others: np.ndarray | None = None) -> np.ndarray:
        """Great-circle distance (sphere mm) from surface vertex ``vertex`` to ``others`` (default: every vertex
        of its hemisphere, in that hemisphere's numbering). Vertices of the other hemisphere get +inf."""
        hemi = HEMIS[int(self.hemi_of(vertex))]
        sphere = self.meshes["sphere"][hemi][0].astype(np.float64)
        sphere = sphere / np.linalg.norm(sphere, axis=1, keepdims=True)
        local = vertex - (self.n_per_hemi if hemi == "right" else 0)
        if others is None:
            return SPHERE_RADIUS * np.arccos(np.clip(sphere @ sphere[local], -1.0, 1.0))
        others = np.asarray(others)
        same = self.hemi_of(others) == HEMIS.index(hemi)
        out = np.full(others.shape, np.inf)
        idx = others[same] - (self.n_per_hemi if hemi == "right" else 0)
        out[same] = SPHERE_RADIUS * np.arccos(np.clip(sphere[idx] @ sphere[local], -1.0, 1.0))
        return out


def _nilearn_fsaverage5_dir() -> Path:
    try:
        import nilearn
    except ImportError as e:   # a dependency of the package; only a broken install lacks it
        raise DatasetError("fsaverage5 meshes need nilearn (pip install nilearn)") from e
    return Path(nilearn.__file__).parent / "datasets" / "data" / "fsaverage5"


@functools.lru_cache(maxsize=1)
def fsaverage5() -> Surface:
    """fsaverage5 (10,242 vertices per hemisphere) from the GIfTI files bundled in nilearn's wheel, via nibabel."""
    import nibabel as nib
    d = _nilearn_fsaverage5_dir()
    meshes: dict = {}
    for kind, stem in MESHES.items():
        meshes[kind] = {}
        for hemi in HEMIS:
            g = nib.load(d / f"{stem.format(hemi=hemi)}.gii.gz")
            meshes[kind][hemi] = (np.asarray(g.darrays[0].data, np.float32), np.asarray(g.darrays[1].data, np.int32))
    sulc = {hemi: np.asarray(nib.load(d / f"sulc_{hemi}.gii.gz").darrays[0].data, np.float32) for hemi in HEMIS}
    return Surface("fsaverage5", len(sulc["left"]), meshes, sulc)


def load_surface(name: str) -> Surface:
    """The template surface called ``name`` (only fsaverage5 ships with the package)."""
    if name != "fsaverage5":
        raise DatasetError(f"surface {name!r}: only 'fsaverage5' is bundled (from nilearn); "
                           "maps on other templates are written as GIfTI without figures")
    return fsaverage5()


# --------------------------------------------------------------------------- atlases
def _annot_files(directory: Path) -> dict[str, Path] | None:
    found = {h: sorted(directory.glob(f"{FS_HEMI[h]}.*.annot")) for h in HEMIS}
    if not any(found.values()):
        return None
    for h in HEMIS:
        if len(found[h]) != 1:
            raise DatasetError(f"{directory}: need exactly one {FS_HEMI[h]}.<atlas>.annot, found "
                               f"{[p.name for p in found[h]] or 'none'}")
    return {h: found[h][0] for h in HEMIS}


def has_atlas(directory: str | os.PathLike) -> bool:
    """True when ``directory`` holds FreeSurfer ``?h.*.annot`` or ``?h.*.label`` files."""
    d = Path(directory)
    return d.is_dir() and any(any(d.glob(f"{FS_HEMI[h]}.*.{ext}")) for h in HEMIS for ext in ("annot", "label"))


def _read_annot(path: Path) -> tuple[np.ndarray, list[str]]:
    import nibabel as nib
    try:
        labels, _, names = nib.freesurfer.read_annot(str(path))
    except Exception as e:   # nibabel raises ValueError/struct.error/EOFError on a damaged file
        raise DatasetError(f"{path}: not a readable FreeSurfer .annot file ({type(e).__name__}: {e})") from None
    return np.asarray(labels, np.int64), [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_labels(directory: Path, n_per_hemi: int | None) -> tuple[np.ndarray, list[str], int]:
    import nibabel as nib
    files = {h: sorted(directory.glob(f"{FS_HEMI[h]}.*.label")) for h in HEMIS}
    per_hemi: dict[str, list[tuple[str, np.ndarray]]] = {h: [] for h in HEMIS}
    top = -1
    for h in HEMIS:
        for p in files[h]:
            try:
                idx = np.asarray(nib.freesurfer.read_label(str(p)), np.int64)
            except Exception as e:
                raise DatasetError(f"{p}: not a readable FreeSurfer .label file ({type(e).__name__}: {e})") from None
            per_hemi[h].append((p.name[3:-len(".label")], idx))
            top = max(top, int(idx.max(initial=-1)))
    n = n_per_hemi or next((s for s in sorted(TEMPLATE_SIZES) if s > top), None)
    if n is None or top >= n:
        raise DatasetError(f"{directory}: label vertex index {top} is beyond every fsaverage template")
    names = sorted({name for h in HEMIS for name, _ in per_hemi[h]})
    region = np.full(2 * n, -1, np.int64)
    for k, h in enumerate(HEMIS):
        for name, idx in per_hemi[h]:
            region[idx + k * n] = names.index(name)
    return region, names, n


UNLABELLED = ("unknown", "medial_wall", "???", "corpuscallosum")
"""Atlas names (lower case) that mean 'no region' (FreeSurfer's medial wall and unknown labels)."""


def read_atlas(directory: str | os.PathLike, n_per_hemi: int | None = None) -> tuple[np.ndarray, list[str], str]:
    """ROI of every surface vertex from FreeSurfer atlas files in ``directory``.

    ``lh.<atlas>.annot`` and ``rh.<atlas>.annot`` (one atlas), else ``lh.<roi>.label`` / ``rh.<roi>.label`` files
    (ROI = the name between hemisphere and extension). A name found in both hemispheres is one bilateral
    region; unknown / medial-wall labels are no region.

    Returns
    -------
    vertex_region : (2 n_per_hemi,) int64, index into ``names``, -1 = no region
    names : list of str
    surface : template name from the vertex count, e.g. 'fsaverage5'
    """
    d = Path(directory)
    annots = _annot_files(d)
    if annots is None:
        if not has_atlas(d):
            raise DatasetError(f"{d}: no FreeSurfer atlas (lh./rh.<atlas>.annot or <hemi>.<roi>.label files)")
        region, names, n = _read_labels(d, n_per_hemi)
    else:
        per = {h: _read_annot(annots[h]) for h in HEMIS}
        sizes = {len(per[h][0]) for h in HEMIS}
        if len(sizes) != 1:
            raise DatasetError(f"{d}: the two .annot files cover {sorted(sizes)} vertices; they must match")
        n = sizes.pop()
        names = sorted({nm for h in HEMIS for nm in per[h][1] if nm.lower() not in UNLABELLED})
        region = np.full(2 * n, -1, np.int64)
        for k, h in enumerate(HEMIS):
            labels, hemi_names = per[h]
            lut = np.array([names.index(nm) if nm in names else -1 for nm in hemi_names] + [-1], np.int64)
            region[k * n:(k + 1) * n] = lut[np.where(labels >= 0, labels, len(hemi_names))]
    if n_per_hemi is not None and n != n_per_hemi:
        raise DatasetError(f"{d}: atlas has {n} vertices per hemisphere, the common space {n_per_hemi}")
    if n not in TEMPLATE_SIZES:
        raise DatasetError(f"{d}: {n} vertices per hemisphere is no fsaverage template ({sorted(TEMPLATE_SIZES)})")
    return region, names, TEMPLATE_SIZES[n]
