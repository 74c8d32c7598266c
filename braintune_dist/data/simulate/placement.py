"""Where the simulated vertices lie: patches at anatomically plausible places on fsaverage5.

Every common-space vertex of the simulated brain is an fsaverage5 vertex. Each region is a few patches,
one per entry of ``PATCHES``: the vertices nearest (great-circle distance on the registration sphere)
to a centre given in fsaverage's pial coordinates (mm, MNI305-like), snapped to the nearest pial vertex
and moved by up to ``JITTER_MM`` per seed. A region's vertices are shared equally among its patches.
The centres follow the speech-processing literature:

* auditory: Heschl's gyrus (primary auditory cortex) on both hemispheres;
* phonetic: mid superior temporal gyrus; lexical (word form): posterior superior temporal sulcus;
* semantic: anterior lateral temporal cortex, angular gyrus and inferior frontal gyrus, both hemispheres;
* null: calcarine sulcus (V1) and the precentral hand knob, regions a story does not drive.

Within a patch, read-out weights and SNRs are smooth: i.i.d. draws are mixed by a Gaussian kernel of
the sphere distance (``smooth``), so nearby vertices respond alike, as neighbouring cortex does.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from braintune_dist.data.surface import Surface

PATCHES: dict[str, list[tuple[str, str, tuple[float, float, float]]]] = {
    "auditory": [("left", "Heschl's gyrus", (-44, -22, 8)), ("right", "Heschl's gyrus", (46, -18, 8))],
    "phonetic": [("left", "mid superior temporal gyrus", (-60, -16, 4)),
                 ("right", "mid superior temporal gyrus", (62, -12, 2))],
    "lexical": [("left", "posterior superior temporal sulcus", (-56, -40, 2)),
                ("right", "posterior superior temporal sulcus", (56, -36, 2))],
    "semantic": [("left", "anterior middle temporal gyrus", (-56, -8, -20)),
                 ("left", "angular gyrus", (-46, -66, 32)),
                 ("left", "inferior frontal gyrus", (-46, 24, 12)),
                 ("right", "anterior middle temporal gyrus", (56, -6, -20)),
                 ("right", "angular gyrus", (48, -62, 32)),
                 ("right", "inferior frontal gyrus", (48, 24, 12))],
    "null": [("left", "calcarine sulcus (V1)", (-8, -88, 4)), ("right", "calcarine sulcus (V1)", (10, -86, 6)),
             ("left", "precentral hand knob", (-38, -22, 58)), ("right", "precentral hand knob", (38, -20, 58))],
}
"""Region → patches (hemisphere, anatomical name, pial-surface centre in mm)."""
JITTER_MM = 4.0
"""Largest move (sphere mm) of a patch centre from its nominal place, drawn per seed."""


@dataclass
class Patch:
    region: str
    hemi: str
    name: str
    centre: int
    """Surface index of the centre vertex."""
    members: np.ndarray = field(repr=False)
    """Common-space indices of the patch's vertices."""
    distances: np.ndarray = field(repr=False)
    """(n, n) sphere distances (mm) between the members."""

    def info(self, surface: Surface) -> dict:
        """JSON-able description (ground truth)."""
        hemi_idx = self.centre - (surface.n_per_hemi if self.hemi == "right" else 0)
        xyz = surface.meshes["pial"][self.hemi][0][hemi_idx]
        return dict(region=self.region, hemi=self.hemi, name=self.name, centre_vertex=int(self.centre),
                    centre_pial_mm=[round(float(c), 1) for c in xyz], n_vertices=int(len(self.members)))


def place(rng: np.random.Generator, surface: Surface, region: np.ndarray, names: tuple[str, ...]
          ) -> tuple[np.ndarray, list[Patch]]:
    """Put every common-space vertex on ``surface``.

    Parameters
    ----------
    region : (n_vertices,) int, index into ``names`` of each common-space vertex (any order)

    Returns
    -------
    vertex_index : (n_vertices,) int64 surface index of each vertex (distinct)
    patches : one :class:`Patch` per entry of ``PATCHES`` that received vertices
    """
    vertex_index = np.full(len(region), -1, np.int64)
    taken = np.zeros(surface.n_vertices, bool)
    patches = []
    for r, name in enumerate(names):
        members = np.flatnonzero(region == r)
        spots = PATCHES[name]
        for k, (hemi, label, xyz) in enumerate(spots):
            part = members[k::len(spots)]                         # equal shares, interleaved
            if len(part) == 0:
                continue
            nominal = surface.nearest_vertex(hemi, xyz)
            near = np.flatnonzero(surface.sphere_distance(nominal) <= JITTER_MM)
            centre = int(rng.choice(near)) + (surface.n_per_hemi if hemi == "right" else 0)
            d = surface.sphere_distance(centre)                   # (n_per_hemi,) within the hemisphere
            offset = surface.n_per_hemi if hemi == "right" else 0
            d[taken[offset: offset + surface.n_per_hemi]] = np.inf
            chosen = np.argsort(d, kind="stable")[: len(part)] + offset
            taken[chosen] = True
            vertex_index[part] = chosen
            dist = np.stack([surface.sphere_distance(int(v), chosen) for v in chosen])
            patches.append(Patch(name, hemi, label, centre, part, dist))
    return vertex_index, patches


def patch_of(patches: list[Patch], n_vertices: int) -> np.ndarray:
    """(n_vertices,) int64 index into ``patches`` of each common-space vertex."""
    out = np.full(n_vertices, -1, np.int64)
    for k, p in enumerate(patches):
        out[p.members] = k
    return out


def smooth(Z: np.ndarray, patches: list[Patch], fwhm_mm: float) -> np.ndarray:
    """Mix the rows of ``Z`` (n_vertices, ...) within each patch by a Gaussian kernel of sphere distance.

    Each smoothed row is ``sum_j K_ij Z_j / sqrt(sum_j K_ij^2)``: rows that were i.i.d. with unit variance
    stay unit variance, and neighbours become correlated. ``fwhm_mm`` 0 returns ``Z`` unchanged.
    """
    if fwhm_mm <= 0:
        return Z
    out = np.array(Z, dtype=np.float64, copy=True)
    sigma = fwhm_mm / (2 * np.sqrt(2 * np.log(2)))
    for p in patches:
        K = np.exp(-0.5 * (p.distances / sigma) ** 2)                   # (n, n)
        K /= np.sqrt((K ** 2).sum(axis=1, keepdims=True))
        out[p.members] = np.tensordot(K, Z[p.members], axes=1)
    return out
