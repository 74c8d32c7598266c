"""Probe scores (accuracy, F1 macro, F1 micro) and the levels a probe must beat (chance, naive majority).

Conventions (those of scikit-learn's ``accuracy_score`` and ``f1_score(average=..., zero_division=0)``):

* single-label: accuracy = fraction of clips whose class is right; F1 micro = 2 TP / (2 TP + FP + FN) summed
  over classes (equal to accuracy); F1 macro = mean of per-class F1 over the classes present in ``y_true``
  or ``y_pred``.
* multi-label: accuracy = exact-match (subset) accuracy, every label of a clip right; F1 micro pools TP, FP,
  FN over all labels; F1 macro = mean per-class F1 over the classes with at least one true or predicted
  positive. (scikit-learn averages over *every* column of an indicator matrix, scoring a column with no true
  and no predicted positive 0; here such a column is left out, as a class absent from a single-label test
  set is.)
* a class with TP + FP + FN = 0 never enters a mean; F1 = 0 where TP = 0.
"""
from __future__ import annotations

import numpy as np

from braintune_dist.downstream.tasks import Task


def _one_hot(y: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(y), n_classes), dtype=bool)
    out[np.arange(len(y)), y] = True
    return out


def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[float, float]:
    """(macro, micro) F1 from per-class counts (n_classes,), float: classes with tp + fp + fn = 0 left out."""
    used = (tp + fp + fn) > 0
    if not used.any():
        return 0.0, 0.0
    per_class = 2 * tp[used] / (2 * tp[used] + fp[used] + fn[used])
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum())
    return float(per_class.mean()), float(micro)


def scores(y_true: np.ndarray, y_pred: np.ndarray, multi_label: bool, n_classes: int) -> dict[str, float]:
    """Accuracy, F1 macro and F1 micro of predictions (conventions in the module docstring).

    Parameters
    ----------
    y_true, y_pred : (n,) int class indices, or (n, n_classes) 0/1 when ``multi_label``
    multi_label : bool
    n_classes : int

    Returns
    -------
    dict with 'accuracy', 'f1_macro', 'f1_micro' (floats in [0, 1])
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or len(y_true) == 0:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same non-empty shape")
    if multi_label:
        t, p = y_true.astype(bool), y_pred.astype(bool)
        accuracy = float((t == p).all(axis=1).mean())
    else:
        t, p = _one_hot(y_true, n_classes), _one_hot(y_pred, n_classes)
        accuracy = float((y_true == y_pred).mean())
    tp = (t & p).sum(axis=0).astype(float)
    fp = (~t & p).sum(axis=0).astype(float)
    fn = (t & ~p).sum(axis=0).astype(float)
    macro, micro = _f1(tp, fp, fn)
    return {"accuracy": accuracy, "f1_macro": macro, "f1_micro": micro}


def chance(task: Task) -> dict[str, float]:
    """Expected scores of a random guess on the test split.

    Single-label: a uniform guess over the classes (accuracy = F1 micro = 1 / n_classes). Multi-label: each
    label guessed present, independently, with its rate p_c in the training split. Accuracy is the exact
    expectation; the F1s are F1 of the expected counts (E TP, E FP, E FN), which the expected F1 approaches
    as the test split grows: per class 2 p q / (p + q) for test rate q in the multi-label case,
    2 n_c / (n + K n_c) for a class with n_c of n test clips among K classes in the single-label case.
    """
    y = task.targets[task.indices("test")]
    n, k = len(y), len(task.classes)
    if task.multi_label:
        p = task.targets[task.indices("train")].mean(axis=0)             # (n_classes,) guess rates
        m = y.sum(axis=0).astype(float)                                  # (n_classes,) test positives
        tp, fp, fn = p * m, p * (n - m), (1 - p) * m
        with np.errstate(divide="ignore"):
            log_hit = np.where(y == 1, np.log(p), np.log1p(-p))          # (n, n_classes)
        accuracy = float(np.exp(log_hit.sum(axis=1)).mean())
    else:
        m = np.bincount(y, minlength=k).astype(float)
        tp, fp, fn = m / k, (n - m) / k, m * (1 - 1 / k)
        accuracy = 1 / k
    macro, micro = _f1(tp, fp, fn)
    return {"accuracy": accuracy, "f1_macro": macro, "f1_micro": micro}


def levels(task: Task) -> dict:
    """The levels a probe must beat on the test split.

    Returns
    -------
    dict: 'n_classes'; 'chance' (see :func:`chance`) and 'majority' (the training split's naive classifier,
    ``Task.majority()``, scored on the test split), each a dict of 'accuracy', 'f1_macro', 'f1_micro'.
    """
    test = task.indices("test")
    y = task.targets[test]
    guess = task.majority()
    pred = np.tile(guess, (len(test), 1)) if task.multi_label else np.full(len(test), guess[0])
    return {"n_classes": len(task.classes), "chance": chance(task),
            "majority": scores(y, pred, task.multi_label, len(task.classes))}
