"""Downstream study: does adding synthetic slices help a classifier of the run's classes?

A small CNN (models/classifier.py) is trained per arm and per seed and scored on the same real
test split:

* ``real``      all real training images;
* ``real+syn``  all real training images plus ``n_per_class`` synthetic images per class;
* ``syn``       ``n_per_class`` synthetic images per class only;
* ``half+syn``  a stratified half of the real training images plus the synthetic images;
* ``half``      that same half alone.

Within a seed every arm shares the classifier initialisation, the synthetic subset and the half
split, so arm differences are paired; across seeds all three are redrawn. ``half`` vs
``half+syn`` vs ``real`` answers "how much real data is the synthetic set worth": the share of
the half -> all-real gap that adding synthetic images recovers.

The classifier and its training live in `domain_classifier`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.evaluation import metrics, stats
from jax_mri_ldm.evaluation.domain_classifier import (
    check_dataset,
    evaluate_classifier,
    train_classifier,
)

ARMS: tuple[str, ...] = ("real", "real+syn", "syn", "half+syn", "half")
"""Every arm downstream_study knows, in the order it reports them."""

ARM_DESCRIPTIONS: dict[str, str] = {
    "real": "all real training images",
    "real+syn": "all real training images + n_per_class synthetic images per class",
    "syn": "n_per_class synthetic images per class only",
    "half+syn": "stratified half of the real training images + the synthetic images",
    "half": "the same stratified half of the real training images alone",
}

METRIC_NAMES: tuple[str, ...] = ("accuracy", "auc", "sensitivity", "specificity")
"""Metrics of a two-class study (tumour = positive); K > 2 classes: see `metric_names`."""


def metric_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """The study's metrics for these classes: METRIC_NAMES for two, else K-way accuracy,
    macro one-vs-rest AUC and the recall of every class (`recall_<name>`)."""
    if len(class_names) == 2:
        return METRIC_NAMES
    return ("accuracy", "auc", *(f"recall_{n}" for n in class_names))


# (arm, baseline) pairs reported as paired per-seed differences.
_COMPARISONS: tuple[tuple[str, str], ...] = (
    ("real+syn", "real"),
    ("syn", "real"),
    ("half+syn", "half"),
    ("half+syn", "real"),
    ("half", "real"),
)


# --------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------


def _jsonable(x):
    """Recursively converts numpy scalars to Python and non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _counts(labels: np.ndarray, class_names: Sequence[str]) -> dict[str, int]:
    return {name: int(np.sum(labels == i)) for i, name in enumerate(class_names)}


def _summarise(values: Sequence[float], confidence: float) -> dict:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "half_width": None, "n": 0}
    mean, half = stats.mean_ci(v, confidence)
    return {"mean": mean, "half_width": half, "n": int(v.size)}


def _arm_data(
    arm: str,
    real: tuple[np.ndarray, np.ndarray],
    half_idx: np.ndarray,
    syn: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, real labels used, synthetic labels used) for one arm."""
    parts, real_used, syn_used = [], np.zeros(0, np.int32), np.zeros(0, np.int32)
    if arm in ("real", "real+syn"):
        parts.append(real)
        real_used = real[1]
    elif arm in ("half", "half+syn"):
        parts.append((real[0][half_idx], real[1][half_idx]))
        real_used = real[1][half_idx]
    if arm in ("real+syn", "syn", "half+syn"):
        parts.append(syn)
        syn_used = syn[1]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, real_used, syn_used


def downstream_study(
    real_train: tuple,
    real_test: tuple,
    synthetic: tuple | None,
    *,
    n_per_class: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    arms: Sequence[str] = ARMS,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    input_size: int | None = 64,
    widths: Sequence[int] = (16, 32, 64, 128),
    augment: bool = True,
    half_fraction: float = 0.5,
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> dict:
    """Trains one classifier per (arm, seed) and scores it on the real test split.

    Args:
      real_train: (images (N, H, W, C), labels (N,)) real training split, labels 0/1.
      real_test: (images, labels) real test split used to score every arm.
      synthetic: (images, labels) pool of synthetic images; each seed draws n_per_class per
        class from it without replacement. May be None if no arm uses synthetic images.
      n_per_class: synthetic images per class added in the '+syn' arms and used by 'syn'.
      seeds: one run per seed and arm (classifier init, synthetic subset, half split).
      arms: subset of ARMS to run.
      steps: training steps per run (same for every arm, so arms differ only in data).
      batch_size: images per step.
      lr: Adam learning rate.
      input_size: classifier working resolution.
      widths: classifier channels per block.
      augment: random horizontal flips.
      half_fraction: share of each real class kept in the 'half' arms.
      confidence: level of the Student-t intervals over seeds.
      progress: optional callback receiving one line per finished run.
      class_names: label id -> name; K = len(class_names) classes (metrics: `metric_names`).

    Returns:
      JSON-able dict (non-finite numbers become None):
        'config': the settings above;
        'data': class counts of real_train, real_test and synthetic;
        'arms': {arm: {'description', 'train_counts': {'real': {...}, 'synthetic': {...}},
                 'per_seed': [{'seed', 'accuracy', 'auc', 'sensitivity', 'specificity',
                 'final_loss'}], 'summary': {metric: {'mean', 'half_width', 'n'}}}};
        'comparisons': {'A - B': {metric: {'mean', 'half_width', 'n'}}} paired over seeds, for
                 every (A, B) in real+syn-real, syn-real, half+syn-half, half+syn-real,
                 half-real whose arms were both run;
        'real_data_equivalence': {metric: {'half', 'half+syn', 'real', 'gap_recovered'}} where
                 gap_recovered = (half+syn - half) / (real - half) on seed means (None when the
                 gap is below 1e-6): 1 means the synthetic set made up for the missing half.
    """
    arms, seeds = _check_study_args(arms, seeds, half_fraction)
    class_names = tuple(class_names)
    names = metric_names(class_names)
    data = _prepare_study_data(
        real_train, real_test, synthetic, arms, n_per_class, class_names, input_size
    )
    train_kw = dict(steps=steps, batch_size=batch_size, lr=lr, augment=augment)
    train_kw.update(input_size=input_size, widths=tuple(widths), num_classes=len(class_names))
    per_arm = _run_arms(
        data, arms, seeds, n_per_class, half_fraction, train_kw, class_names, progress
    )
    _summarise_arms(per_arm, arms, names, confidence)
    config = {
        "n_per_class": n_per_class,
        "seeds": list(seeds),
        "arms": list(arms),
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in train_kw.items()},
        "half_fraction": half_fraction,
        "confidence": confidence,
        "class_names": list(class_names),
        "metric_names": list(names),
    }
    return _study_result(config, data, per_arm, arms, names, confidence, class_names)


def _summarise_arms(per_arm: dict, arms, names: Sequence[str], confidence: float) -> None:
    """Adds each arm's 'description' and per-metric 'summary' over seeds (in place)."""
    for arm in arms:
        runs = per_arm[arm]["per_seed"]
        per_arm[arm]["description"] = ARM_DESCRIPTIONS[arm]
        per_arm[arm]["summary"] = {m: _summarise([r[m] for r in runs], confidence) for m in names}


def _study_result(config, data, per_arm, arms, names, confidence, class_names) -> dict:
    """The study's JSON-able result (see `downstream_study`)."""
    tr_y, te_y, sy_y = data["train"][1], data["test"][1], data["syn_labels"]
    return _jsonable(
        {
            "config": config,
            "data": {
                "real_train": _counts(tr_y, class_names),
                "real_test": _counts(te_y, class_names),
                "synthetic": None if sy_y is None else _counts(sy_y, class_names),
            },
            "arms": {a: per_arm[a] for a in arms},
            "comparisons": _comparisons(per_arm, names, confidence),
            "real_data_equivalence": _equivalence(per_arm, names),
        }
    )


def _check_study_args(arms, seeds, half_fraction) -> tuple[tuple[str, ...], tuple[int, ...]]:
    arms = tuple(arms)
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise ValueError(f"unknown arms {unknown}; choose from {ARMS}.")
    if len(set(arms)) != len(arms):
        raise ValueError(f"arms contains duplicates: {arms}.")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("downstream_study needs at least one seed.")
    if not 0.0 < half_fraction < 1.0:
        raise ValueError(f"half_fraction must be in (0, 1); got {half_fraction}.")
    return arms, seeds


def _prepare_study_data(
    real_train, real_test, synthetic, arms, n_per_class, class_names, input_size
) -> dict[str, Any]:
    """Checked, resized arrays (resized once: training and prediction then skip it)."""
    k = len(class_names)
    tr_x, tr_y = check_dataset("real_train", *real_train, k)
    te_x, te_y = check_dataset("real_test", *real_test, k)
    tr_x, te_x = metrics.resize_images(tr_x, input_size), metrics.resize_images(te_x, input_size)
    out: dict[str, Any] = {"train": (tr_x, tr_y), "test": (te_x, te_y), "syn": None}
    out["syn_labels"] = None
    if any("syn" in a for a in arms):
        if synthetic is None:
            raise ValueError(f"arms {arms} use synthetic images but synthetic is None.")
        sy_x, sy_y = check_dataset("synthetic", *synthetic, k)
        sy_x = metrics.resize_images(sy_x, input_size)
        if sy_x.shape[1:] != tr_x.shape[1:]:
            raise ValueError(f"synthetic image shape {sy_x.shape[1:]} != real {tr_x.shape[1:]}.")
        members = [np.flatnonzero(sy_y == c) for c in range(k)]
        short = {class_names[c]: m.size for c, m in enumerate(members) if m.size < n_per_class}
        if n_per_class < 1 or short:
            raise ValueError(
                f"n_per_class={n_per_class} needs that many synthetic images per class; "
                f"available: {short or 'n_per_class must be >= 1'}. Generate more or lower it."
            )
        out.update(syn=(sy_x, sy_y), syn_labels=sy_y, syn_members=members)
    out["real_members"] = [np.flatnonzero(tr_y == c) for c in range(k)]
    empty = [class_names[c] for c, m in enumerate(out["real_members"]) if m.size == 0]
    if empty:
        raise ValueError(f"real_train has no {empty} images; every class is needed.")
    return out


def _run_arms(data, arms, seeds, n_per_class, half_fraction, train_kw, class_names, progress):
    """Trains and scores one classifier per (seed, arm); returns {arm: {'per_seed', ...}}."""
    per_arm: dict[str, dict] = {a: {"per_seed": []} for a in arms}
    te_x, te_y = data["test"]
    for seed in seeds:
        rng = np.random.default_rng(seed)
        half_idx = np.sort(
            np.concatenate(
                [
                    rng.choice(m, max(1, round(half_fraction * m.size)), replace=False)
                    for m in data["real_members"]
                ]
            )
        )
        syn = None
        if data["syn"] is not None:
            pick = np.concatenate(
                [rng.choice(m, n_per_class, replace=False) for m in data["syn_members"]]
            )
            syn = (data["syn"][0][pick], data["syn"][1][pick])
        for arm in arms:
            x, y, real_used, syn_used = _arm_data(arm, data["train"], half_idx, syn)
            clf, hist = train_classifier(x, y, seed=seed, **train_kw)
            scores = evaluate_classifier(clf, te_x, te_y, class_names=class_names)
            per_arm[arm]["per_seed"].append(
                {"seed": seed, **scores, "final_loss": hist["loss"][-1]}
            )
            per_arm[arm]["train_counts"] = {
                "real": _counts(real_used, class_names),
                "synthetic": _counts(syn_used, class_names),
            }
            if progress is not None:
                line = ", ".join(f"{k}={v:.3f}" for k, v in scores.items())
                progress(f"seed {seed} arm {arm}: {line}")
    return per_arm


def _comparisons(per_arm: dict, names: Sequence[str], confidence: float) -> dict:
    out = {}
    for a, b in _COMPARISONS:
        if a in per_arm and b in per_arm:
            pairs = list(zip(per_arm[a]["per_seed"], per_arm[b]["per_seed"], strict=True))
            out[f"{a} - {b}"] = {
                m: _summarise([ra[m] - rb[m] for ra, rb in pairs], confidence) for m in names
            }
    return out


def _equivalence(per_arm: dict, names: Sequence[str]) -> dict:
    out = {}
    if all(a in per_arm for a in ("half", "half+syn", "real")):
        for m in names:
            means = {a: per_arm[a]["summary"][m]["mean"] for a in ("half", "half+syn", "real")}
            gap = None
            if None not in means.values() and abs(means["real"] - means["half"]) >= 1e-6:
                gap = (means["half+syn"] - means["half"]) / (means["real"] - means["half"])
            out[m] = {**means, "gap_recovered": gap}
    return out
