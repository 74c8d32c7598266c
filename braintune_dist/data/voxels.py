"""Voxels: noise ceiling from repeats, selection by threshold, region masks, common-space projection.

Noise ceiling follows Schoppe et al. 2016 as the original brain-tuning code's ``spe_and_cc_norm`` implements it:
with N z-scored repeats, ``y = mean over repeats``, total power TP = 1, signal power
``SP = (N·var(y) − TP) / (N − 1)`` (ddof=1), and ``cc_max = 1 / sqrt(1 + (1/N)·(TP/SP − 1))`` with
NaN → 0 (SP ≤ 0 gives no ceiling). Normalised alignment is ``r / cc_max``.

Common space: every participant's voxels map to a shared vertex index (simulated data:
``ground_truth/``; real data: a directory the user supplies in the same format)::

    <dir>/common_space.npz               vertex_region (n_vertices,) int, region_names (n_regions,) str,
                                         optional surface (str, e.g. 'fsaverage5') and vertex_index
                                         (n_vertices,) int: each vertex's index on that surface
    <dir>/<subject>/voxel_to_vertex.npy  (n_voxels,) int64, -1 = voxel not mapped

or, for real data on a FreeSurfer template, an atlas instead of the ``.npz``: ``lh.<atlas>.annot`` and
``rh.<atlas>.annot`` (or ``?h.<roi>.label`` files) in ``<dir>``; the common space is then the whole surface
(left then right hemisphere) and ``voxel_to_vertex`` holds surface vertex indices.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from braintune_dist.data.surface import has_atlas, read_atlas
from braintune_dist.errors import DatasetError


def noise_ceiling(repeats: np.ndarray, zscore: bool = True, batch: int = 1024) -> np.ndarray:
    """Schoppe cc_max per voxel from individual repeats.

    Parameters
    ----------
    repeats : array of shape (n_repeats, n_trs, n_voxels)
        Responses to the same stimulus, one slab per repeat (any float dtype; not copied whole).
    zscore : bool
        z-score each repeat over time first, so that the formula's TP = 1 holds exactly. False applies the
        formula to the repeats as given, as the papers' ``spe_and_cc_norm(individual_repeats[:, 40:])`` does:
        run-z-scored repeats trimmed to ``[40:]`` are no longer exactly z-scored, and cc_max then differs.
    batch : int
        Voxels per float64 block: peak memory is ~2 blocks of ``n_repeats × n_trs × batch × 8`` bytes on top
        of the input (~40 MB for 10 repeats × 241 TRs × 1024 voxels), whatever the voxel count; small blocks
        are also faster (they stay in cache and need no fresh pages: 1.9 s against 20 s in one block at 95 k).

    Returns
    -------
    cc_max : array of shape (n_voxels,), float64
        Maximum achievable Pearson r with the repeat mean; 0 where the signal power is ≤ 0.
    """
    R = np.asarray(repeats)
    if R.ndim != 3 or R.shape[0] < 2:
        raise ValueError(f"repeats must have shape (n_repeats ≥ 2, n_trs, n_voxels), got {R.shape}")
    n, out = R.shape[0], np.empty(R.shape[2])
    for a in range(0, R.shape[2], max(1, batch)):
        B = R[:, :, a:a + batch].astype(np.float64)                # (n, n_trs, b)
        if zscore:
            B -= B.mean(axis=1, keepdims=True)
            sd = B.std(axis=1, keepdims=True)
            np.divide(B, sd, out=B, where=sd > 0)                  # constant repeats stay 0
        sp = (n * B.mean(axis=0).var(axis=0, ddof=1) - 1.0) / (n - 1)   # signal power, TP = 1
        with np.errstate(divide="ignore", invalid="ignore"):
            cc = 1.0 / np.sqrt(1.0 + (1.0 / n) * (1.0 / sp - 1.0))
        out[a:a + batch] = np.nan_to_num(np.where(sp > 0, cc, 0.0), nan=0.0)
    return out


def isc_ceiling(responses: np.ndarray, batch: int = 1024) -> np.ndarray:
    """Leave-one-out inter-subject correlation per vertex: the ceiling where no story is repeated (Narratives).

    Each participant's response is correlated with the mean of the others' (all heard the same story, in one
    common space). A model can predict of participant i at most what is shared with the others; their mean is a
    noisy estimate of the shared part, so this is a conservative ceiling (Nastase et al. 2021).

    Parameters
    ----------
    responses : array of shape (n_participants ≥ 2, n_trs, n_vertices)
        The same TRs of one story for every participant (any float dtype; not copied whole).
    batch : int
        Vertices per float64 block.

    Returns
    -------
    isc : array of shape (n_participants, n_vertices), float64
        Pearson r of participant i against the mean of the others; 0 where either side is constant.
    """
    R = np.asarray(responses)
    if R.ndim != 3 or R.shape[0] < 2:
        raise ValueError(f"responses must have shape (n_participants ≥ 2, n_trs, n_vertices), got {R.shape}")
    n, out = R.shape[0], np.empty((R.shape[0], R.shape[2]))
    for a in range(0, R.shape[2], max(1, batch)):
        B = R[:, :, a:a + batch].astype(np.float64)                 # (n, n_trs, b)
        B -= B.mean(axis=1, keepdims=True)
        others = (B.sum(axis=0, keepdims=True) - B) / (n - 1)       # (n, n_trs, b): mean of everyone but i
        num = (B * others).sum(axis=1)
        den = np.sqrt((B ** 2).sum(axis=1) * (others ** 2).sum(axis=1))
        out[:, a:a + batch] = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return out


def repeats_with_data(R: np.ndarray, where: str, rows: str = "") -> np.ndarray:
    """The repeats of ``R`` that hold data, for :func:`noise_ceiling`.

    A repeat NaN throughout is dropped with a warning naming ``where`` and the repeat: as zeros it would lower
    every voxel's ceiling and inflate r / ceiling. Fewer than 2 left raise ``DatasetError``. A voxel NaN in every
    repeat passes silently (the reader sets it to 0, and its ceiling is 0, like an empty voxel of the responses);
    other NaN (a voxel missing in some repeats or rows) also become 0, with a warning: those voxels' ceiling is
    then lower than their data's.

    Parameters
    ----------
    R : array of shape (n_repeats, n_rows, n_voxels)
    where : str
        The file and key, as messages name them.
    rows : str
        Which rows ``R`` holds, as messages say it (e.g. " in rows [40:]").

    Returns
    -------
    array of shape (n_kept, n_rows, n_voxels): ``R`` itself when no repeat was dropped.
    """
    import warnings
    some, every = np.empty((2, R.shape[0], R.shape[2]), dtype=bool)         # (n_repeats, n_voxels) each
    for i in range(R.shape[0]):                                              # one repeat's mask at a time
        nan = np.isnan(R[i])
        some[i], every[i] = nan.any(axis=0), nan.all(axis=0)
    empty = [i for i in range(R.shape[0]) if every[i].all()]
    kept = [i for i in range(R.shape[0]) if i not in empty]
    if len(kept) < 2:
        gone = f" ({len(empty)} of {R.shape[0]} are NaN throughout{rows}: repeats {empty})" if empty else ""
        raise DatasetError(f"{where} needs ≥ 2 repeats with data for a noise ceiling{gone}")
    if empty:
        warnings.warn(f"{where}: repeat(s) {empty} are NaN throughout{rows}: dropped; the noise ceiling uses the "
                      f"other {len(kept)}", stacklevel=3)
        R, some, every = R[kept], some[kept], every[kept]
    partial = some.any(axis=0) & ~every.all(axis=0)                         # (n_voxels,)
    if partial.any():
        which = [kept[i] for i in np.flatnonzero(some[:, partial].any(axis=1))]
        warnings.warn(f"{where} has NaN in {int(partial.sum())} voxel(s) in some repeats or rows{rows} (repeat(s) "
                      f"{which}): set to 0 there, which lowers those voxels' noise ceiling", stacklevel=3)
    return R


def zscore(Y, dtype=None) -> np.ndarray:
    """Z-score each column over rows (ddof 0); constant columns become 0.

    Y : (n_rows, n) array-like → (n_rows, n) in ``dtype`` (default: Y's own), computed in that dtype.
    """
    Y = np.asarray(Y) if dtype is None else np.asarray(Y, dtype)
    mu, sd = Y.mean(0), Y.std(0)
    return np.where(sd > 0, (Y - mu) / np.where(sd > 0, sd, 1), 0).astype(Y.dtype, copy=False)


def normalised_alignment(r: np.ndarray, cc_max: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """``r / cc_max`` per voxel; NaN where ``cc_max <= threshold`` (no reliable ceiling)."""
    r, cc = np.asarray(r, dtype=np.float64), np.asarray(cc_max, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cc > threshold, r / cc, np.nan)


def common_space_dir(root: str | os.PathLike, directory: str = "") -> Path:
    """The common-space directory: ``directory`` if given, else ``<root>/ground_truth`` (simulated data)."""
    return Path(directory) if directory else Path(root) / "ground_truth"


def find_common_space(root: str | os.PathLike, directory: str, participants: list[str]) -> "CommonSpace | None":
    """``CommonSpace`` from ``common_space_dir(root, directory)``, or None when it holds no map."""
    d = common_space_dir(root, directory)
    return CommonSpace.load(d, participants) if (d / "common_space.npz").is_file() or has_atlas(d) else None


def _array(path: Path, z=None, key: str = "") -> np.ndarray:
    """The array of the ``.npy`` file ``path``, or array ``key`` of its open ``.npz`` ``z``, never unpickled; a
    ``DatasetError`` naming ``path`` for an object array or an unreadable file."""
    try:
        return np.load(path, allow_pickle=False) if z is None else z[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            what = f" {key}" if key else ""
            raise DatasetError(f"{path}:{what} holds Python objects (an object array), which are not loaded; it must "
                               "be a plain numeric (or, for names, string) array") from None
        raise DatasetError(f"{path}: unreadable ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc})") from None


def _indices(a: np.ndarray, where: str) -> np.ndarray:
    """``a`` as int64 indices; ``DatasetError`` naming ``where`` unless it holds integers: casting floats would
    truncate them silently (−0.3, an unmapped voxel, would become vertex 0)."""
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    detail = ""
    if a.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(a) | (a != np.round(a)))
        detail = f", e.g. {a.flat[bad[0]]:g} at index {bad[0]}" if bad.size else " (whole numbers, stored as floats)"
    raise DatasetError(f"{where} must hold integer indices (int64, -1 = none), not {a.dtype}{detail}; save it "
                       "with an integer dtype")


def _check_on_template(vertex_index: np.ndarray, surface: str, path: Path) -> None:
    """Every vertex lies on the named template (its size known for the fsaverage family)."""
    from braintune_dist.data.surface import TEMPLATE_SIZES
    per_hemi = {name: n for n, name in TEMPLATE_SIZES.items()}.get(surface)
    top = 2 * per_hemi if per_hemi else None
    if vertex_index.size and (vertex_index.min() < 0 or (top and vertex_index.max() >= top)):
        span = f"0 .. {top - 1}" if top else "indices >= 0"
        raise DatasetError(f"{path}: vertex_index holds {vertex_index.min()} .. {vertex_index.max()}, but "
                           f"{surface or 'the surface'} has vertices {span}")


@dataclass
class CommonSpace:
    """Shared vertex space of all participants and each participant's voxel → vertex map."""

    vertex_region: np.ndarray
    """(n_vertices,) int: index into ``region_names`` of each vertex (-1 = none)."""
    region_names: list[str]
    """Region labels, e.g. ['null', 'auditory', 'semantic'] for simulated data."""
    maps: dict[str, np.ndarray]
    """subject → (n_voxels,) int64 vertex index of each voxel, -1 = unmapped."""
    surface: str = ""
    """Template surface the vertices lie on ('fsaverage5', ...); '' = an abstract vertex space (no maps)."""
    vertex_index: np.ndarray | None = None
    """(n_vertices,) int64 index of each vertex on ``surface`` (both-hemisphere numbering); None = no surface."""
    directory: str = ""
    """Folder it was loaded from (named in errors)."""

    @property
    def n_vertices(self) -> int:
        return int(self.vertex_region.shape[0])

    @classmethod
    def load(cls, directory: str | os.PathLike, participants: list[str]) -> "CommonSpace":
        """Read ``common_space.npz`` (or the atlas files) and ``<subject>/voxel_to_vertex.npy`` for each subject."""
        d = Path(directory)
        path = d / "common_space.npz"
        surface, vertex_index = "", None
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                for key in ("vertex_region", "region_names"):
                    if key not in z:
                        raise DatasetError(f"{path}: missing array {key!r}")
                vertex_region = _indices(_array(path, z, "vertex_region"), f"{path}: vertex_region")
                names = [str(s) for s in _array(path, z, "region_names")]
                if "vertex_index" in z:
                    surface = str(_array(path, z, "surface")) if "surface" in z else ""
                    vertex_index = _indices(_array(path, z, "vertex_index"), f"{path}: vertex_index")
                    if vertex_index.shape != vertex_region.shape:
                        raise DatasetError(f"{path}: vertex_index has {vertex_index.shape[0]} entries, "
                                           f"vertex_region {vertex_region.shape[0]}")
                    _check_on_template(vertex_index, surface, path)
        elif has_atlas(d):
            vertex_region, names, surface = read_atlas(d)
            vertex_index = np.arange(len(vertex_region), dtype=np.int64)
        else:
            raise DatasetError(f"common-space map not found: {path} (needs vertex_region, region_names), "
                               "nor a FreeSurfer atlas (lh./rh.<atlas>.annot) in that folder")
        maps = {}
        for sub in participants:
            p = d / sub / "voxel_to_vertex.npy"
            if not p.is_file():
                raise DatasetError(f"no common-space map for subject {sub}: {p}")
            m = _indices(_array(p), f"{p}: the map")
            if m.ndim != 1 or (m >= len(vertex_region)).any() or (m < -1).any():
                raise DatasetError(f"{p}: must be a 1-D vector of vertex indices in [-1, {len(vertex_region)})")
            maps[sub] = m
        return cls(vertex_region, names, maps, surface, vertex_index, str(d))

    def _map(self, participant: str, n_voxels: int | None = None) -> np.ndarray:
        if participant not in self.maps:
            raise DatasetError(f"subject {participant!r} has no common-space map (have {sorted(self.maps)})")
        m = self.maps[participant]
        if n_voxels is not None and m.shape[0] != n_voxels:
            where = Path(self.directory) / participant / "voxel_to_vertex.npy" if self.directory else f"map of {participant}"
            raise DatasetError(f"{where}: maps {m.shape[0]} voxels, {participant}'s responses have {n_voxels}")
        return m

    def check_voxels(self, participant: str, n_voxels: int) -> None:
        """Raise ``DatasetError`` unless ``participant``'s map covers exactly ``n_voxels`` voxels."""
        self._map(participant, n_voxels)

    def coverage(self, participant: str) -> np.ndarray:
        """(n_vertices,) bool: vertices that at least one voxel of ``participant`` maps to."""
        m = self._map(participant)
        cov = np.zeros(self.n_vertices, dtype=bool)
        cov[m[m >= 0]] = True
        return cov

    def to_common(self, participant: str, Y: np.ndarray) -> np.ndarray:
        """Project participant responses to the common space.

        Parameters
        ----------
        Y : array of shape (n_rows, n_voxels)

        Returns
        -------
        Yc : array of shape (n_rows, n_vertices), float32
            Mean of the voxels mapped to each vertex; 0 at vertices the subject does not cover.
        """
        Y = np.asarray(Y, dtype=np.float32)
        m = self._map(participant, Y.shape[1])
        keep = m >= 0
        counts = np.bincount(m[keep], minlength=self.n_vertices).astype(np.float32)   # (n_vertices,)
        # one sparse scatter: (n_rows, n_kept) @ (n_kept, n_vertices) one-hot, done with add.at on columns
        out = np.zeros((Y.shape[0], self.n_vertices), dtype=np.float32)
        np.add.at(out.T, m[keep], Y[:, keep].T)
        return out / np.maximum(counts, 1.0)

    def voxel_regions(self, participant: str) -> np.ndarray:
        """(n_voxels,) region name of each voxel of ``participant`` ('' where unmapped)."""
        m = self._map(participant)
        reg = np.where(m >= 0, self.vertex_region[np.maximum(m, 0)], -1)
        names = np.array(self.region_names + [""], dtype=object)
        return names[reg].astype(str)

    def region_mask(self, participant: str, region: str) -> np.ndarray:
        """(n_voxels,) bool mask of ``participant``'s voxels in ``region``."""
        if region not in self.region_names:
            raise DatasetError(f"unknown region {region!r} (regions: {self.region_names})")
        return self.voxel_regions(participant) == region
