"""Confidence intervals over seeds and binary classification scores (accuracy, ROC AUC,
sensitivity, specificity), numpy only."""

from __future__ import annotations

import numpy as np
import scipy.stats


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and Student-t confidence half-width of independent values (e.g. one per seed).

    Args:
      values: 1D sequence of numbers.
      confidence: two-sided confidence level.

    Returns:
      (mean, half_width) with half_width = t_{(1+c)/2, n-1} * s / sqrt(n), s the ddof=1 std;
      half_width is nan when fewer than two values are given.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    mean = float(v.mean())
    if v.size < 2:
        return mean, float("nan")
    t = scipy.stats.t.ppf((1.0 + confidence) / 2.0, df=v.size - 1)
    return mean, float(t * v.std(ddof=1) / np.sqrt(v.size))


def paired_mean_ci(a, b, confidence: float = 0.95) -> tuple[float, float, int]:
    """Mean of the paired differences a_i - b_i and its Student-t half-width (a paired t interval).

    Pairing (e.g. two arms of one seed: same data draw, same initialisation) removes the variance
    the two share, so this interval is the one to read for "did A beat B", not two separate ones.

    Args:
      a: 1D values of the first condition, one per pair.
      b: 1D values of the second condition, in the same pair order.
      confidence: two-sided confidence level.

    Returns:
      (mean, half_width, n): n counts the pairs whose two values are both finite (the others are
      left out); mean is nan when n == 0 and half_width nan when n < 2.
    """
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.shape} vs {y.shape}.")
    d = x - y
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan"), 0
    mean, half = mean_ci(d, confidence)
    return mean, half, int(d.size)


def _binary_labels(labels) -> np.ndarray:
    y = np.asarray(labels).ravel()
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be 0 (negative / normal) or 1 (positive / tumour).")
    return y.astype(np.int64)


def accuracy(labels, preds) -> float:
    """Fraction of predictions equal to the labels.

    Args:
      labels: (N,) integer labels.
      preds: (N,) integer predictions.

    Returns:
      Accuracy in [0, 1].
    """
    y, p = np.asarray(labels).ravel(), np.asarray(preds).ravel()
    if y.shape != p.shape or y.size == 0:
        raise ValueError(f"labels {y.shape} and preds {p.shape} must be non-empty, equal length.")
    return float(np.mean(y == p))


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic (ties count 1/2).

    Args:
      labels: (N,) 0/1 labels (1 = positive).
      scores: (N,) scores, higher = more positive.

    Returns:
      AUC in [0, 1], or nan when only one class is present.
    """
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.shape != y.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}.")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = scipy.stats.rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def sensitivity(labels, preds) -> float:
    """True-positive rate TP / (TP + FN); nan without positives.

    Args:
      labels: (N,) 0/1 labels.
      preds: (N,) 0/1 predictions.

    Returns:
      Sensitivity (recall of class 1).
    """
    y, p = _binary_labels(labels), _binary_labels(preds)
    pos = y == 1
    return float(np.mean(p[pos] == 1)) if pos.any() else float("nan")


def specificity(labels, preds) -> float:
    """True-negative rate TN / (TN + FP); nan without negatives.

    Args:
      labels: (N,) 0/1 labels.
      preds: (N,) 0/1 predictions.

    Returns:
      Specificity (recall of class 0).
    """
    y, p = _binary_labels(labels), _binary_labels(preds)
    neg = y == 0
    return float(np.mean(p[neg] == 0)) if neg.any() else float("nan")


def binary_metrics(labels, scores, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, ROC AUC, sensitivity and specificity from positive-class scores.

    Args:
      labels: (N,) 0/1 labels.
      scores: (N,) probability (or score) of class 1.
      threshold: predict 1 where score >= threshold.

    Returns:
      dict with 'accuracy', 'auc', 'sensitivity', 'specificity' (floats; nan when undefined).
    """
    y = _binary_labels(labels)
    s = np.asarray(scores, dtype=np.float64).ravel()
    preds = (s >= threshold).astype(np.int64)
    return {
        "accuracy": accuracy(y, preds),
        "auc": roc_auc(y, s),
        "sensitivity": sensitivity(y, preds),
        "specificity": specificity(y, preds),
    }
