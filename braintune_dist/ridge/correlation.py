"""Pearson correlation per voxel between measured and predicted responses."""
from __future__ import annotations

from braintune_dist.ridge.backend import backend_of, get_backend


def correlation_score(y_true, y_pred, backend=None, batch: int = 4096):
    """Pearson r per column, a constant column scoring 0 (not NaN).

    Parameters
    ----------
    y_true : array of shape (n_samples, n_targets) or (n_samples,)
        Measured responses (NumPy or CuPy).
    y_pred : array of shape (n_samples, n_targets) or (n_samples,)
        Predicted responses.
    backend : {"numpy", "cupy", "auto"}, Backend or None
        None: the backend of the inputs (CuPy if either input is a CuPy array).
    batch : int
        Columns per batch on the CPU path (bounds the float64 temporaries).

    Returns
    -------
    r : array of shape (n_targets,) or () for 1-D inputs, float64, on the chosen backend.
        Sums are accumulated in float64; values are clipped to [-1, 1].
    """
    if backend is None:
        be = backend_of(y_pred)
        be = be if be.name == "cupy" else backend_of(y_true)
    else:
        be = get_backend(backend)
    a, b = be.asarray(y_true), be.asarray(y_pred)
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {a.shape} and {b.shape}")
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise ValueError(f"y_true must be 1-D or 2-D with at least one row, got shape {a.shape}")
    one = a.ndim == 1
    if one:
        a, b = a[:, None], b[:, None]
    if be.name == "numpy":
        r = be.pearson_columns(a, b, batch=batch)
    else:
        r = be.pearson_columns(a, b)
    return r[0] if one else r
