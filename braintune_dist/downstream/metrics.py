"""Accuracy and F1 (macro, micro) for single- and multi-label predictions, in numpy.

Conventions are scikit-learn's ``f1_score(average=..., zero_division=0)`` for single-label targets: macro averages
the F1 of the classes that are true or predicted at least once (a class absent from both says nothing about the
model); micro pools true/false positives over classes (for a single-label task it equals accuracy). Multi-label
targets use the same rule (scikit-learn would average a 0 for every label column absent from both, so a test
split without some phoneme would lower every model's macro F1 alike). Multi-label accuracy is the exact-match
(subset) accuracy.
"""
from __future__ import annotations

import numpy as np


def _one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(y), n_classes), dtype=bool)
    out[np.arange(len(y)), y] = True
    return out


def scores(y_true: np.ndarray, y_pred: np.ndarray, multi_label: bool, n_classes: int) -> dict[str, float]:
    """accuracy, f1_macro, f1_micro of predictions.

    Parameters
    ----------
    y_true, y_pred : arrays of shape (n,) int class indices, or (n, n_classes) 0/1 when ``multi_label``
    """
    if multi_label:
        t, p = np.asarray(y_true, bool), np.asarray(y_pred, bool)
        accuracy = float((t == p).all(axis=1).mean())
    else:
        t, p = _one_hot(np.asarray(y_true), n_classes), _one_hot(np.asarray(y_pred), n_classes)
        accuracy = float((np.asarray(y_true) == np.asarray(y_pred)).mean())
    tp = (t & p).sum(axis=0).astype(float)                      # (n_classes,)
    fp = (~t & p).sum(axis=0).astype(float)
    fn = (t & ~p).sum(axis=0).astype(float)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    seen = denom > 0                                            # true or predicted at least once
    pooled = 2 * tp.sum() + fp.sum() + fn.sum()
    return dict(accuracy=accuracy, f1_macro=float(f1[seen].mean()) if seen.any() else 0.0,
                f1_micro=float(2 * tp.sum() / pooled) if pooled > 0 else 0.0)
