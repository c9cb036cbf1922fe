"""Downstream study: does adding synthetic slices help a classifier of the run's classes?

A small CNN (models/classifier.py) is trained per arm and per seed and scored on the same real
evaluation set (`evaluation_set`: the held-out validation and test splits, which neither the
generator nor any arm trains on):

* ``real``      all real training images;
* ``real+syn``  all real training images plus ``n_per_class`` synthetic images per class;
* ``syn``       ``n_per_class`` synthetic images per class only;
* ``half+syn``  a stratified half of the real training images plus the synthetic images;
* ``half``      that same half alone.

Within a seed every arm shares the classifier initialisation (`train_classifier` draws it from
PRNGKey(seed) for the same input shape), the synthetic subset and the half split, so arm
differences are paired: a gain is the mean of per-seed differences with a paired Student-t
interval (`stats.paired_mean_ci`); across seeds all three are redrawn. ``half`` vs ``half+syn``
vs ``real`` answers "how much real data is the synthetic set worth": the share of the half ->
all-real gap that adding synthetic images recovers.

The optional synthetic-amount sweep repeats ``half+syn`` with ``round(m * h_c)`` synthetic images
of class c for each multiple m of `syn_multiples` (h_c: the half's size of class c), drawn
nested (a larger m adds images to a smaller m's draw), each scored as a paired gain over ``half``.

The classifier and its training live in `domain_classifier`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.evaluation import metrics, stats, synthetic_mix
from jax_mri_ldm.evaluation.domain_classifier import (
    check_dataset,
    evaluate_classifier,
    predict_proba,
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


HALF_FRACTION = 0.5
"""Share of each real class kept in the 'half' arms (and the sweep's unit, `half_sizes`)."""

EVAL_SPLITS: tuple[str, ...] = ("val", "test")
"""Splits the study may be scored on: held out from the VAE, the LDM and every arm."""

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


def _paired(runs_a: Sequence[dict], runs_b: Sequence[dict], m: str, confidence: float) -> dict:
    """Paired summary of metric m over seeds: per-seed differences, their mean and t interval."""
    a = [np.nan if r[m] is None else r[m] for r in runs_a]
    b = [np.nan if r[m] is None else r[m] for r in runs_b]
    mean, half, n = stats.paired_mean_ci(a, b, confidence)
    return {
        "mean": mean if n else None,
        "half_width": half if n >= 2 else None,
        "n": n,
        "per_seed": [x - y for x, y in zip(a, b, strict=True)],
    }


def evaluation_set(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]], requested: Sequence[str]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[str, ...], str | None]:
    """The study's real evaluation set: the requested held-out splits, concatenated.

    Only EVAL_SPLITS qualify: the VAE and the LDM train on the train split alone (train_vae.py
    and train_ldm.py subset the data with split["train"]; the VAE reads the val split only for its
    monitoring PSNR / figures, never for a gradient or a checkpoint choice), so no image here
    was seen by the generator or by any arm. An empty requested split (tiny data) is left out;
    if all are empty, the test split is used.

    Args:
      splits: split name -> (images (N, H, W, C), labels (N,)); must hold every requested name
        and 'test'.
      requested: split names, e.g. ("val", "test") (`--config.downstream_eval_splits`).

    Returns:
      ((images, labels), the splits used, a note on left-out splits or None).
    """
    requested = tuple(requested)
    if not requested or len(set(requested)) != len(requested) or set(requested) - set(EVAL_SPLITS):
        raise ValueError(
            f"--config.downstream_eval_splits={requested}: use a non-empty subset of "
            f"{EVAL_SPLITS} without repeats (splits the generator never trained on)."
        )
    used = tuple(s for s in requested if len(splits[s][1]) > 0)
    empty = [s for s in requested if s not in used]
    used = used or ("test",)
    if len(splits[used[0]][1]) == 0:
        raise ValueError("the val and test splits are both empty: the study has nothing to score.")
    note = None
    if empty:
        note = f"{' and '.join(empty)} split empty: scored on {' + '.join(used)} only"
    x = np.concatenate([splits[s][0] for s in used])
    y = np.concatenate([splits[s][1] for s in used])
    return (x, y), used, note


def half_sizes(class_sizes: Sequence[int], half_fraction: float) -> list[int]:
    """Per-class size of the stratified half: max(1, round(half_fraction * n_c))."""
    return [max(1, round(half_fraction * int(n))) for n in class_sizes]


def sweep_counts(half: Sequence[int], multiples: Sequence[float]) -> list[list[int]]:
    """Synthetic images per class of each sweep row: max(1, round(m * h_c)) for multiple m.

    Args:
      half: the half real set's size per class (`half_sizes`).
      multiples: positive multiples of it.

    Returns:
      One per-class count list per multiple, in order.
    """
    bad = [m for m in multiples if not float(m) > 0]
    if bad:
        raise ValueError(f"--config.downstream_syn_multiples must be > 0; got {bad}.")
    return [[max(1, round(float(m) * int(h))) for h in half] for m in multiples]


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
    real_eval: tuple,
    synthetic: tuple | None,
    *,
    n_per_class: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    arms: Sequence[str] = ARMS,
    syn_multiples: Sequence[float] = (),
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    input_size: int | None = 64,
    widths: Sequence[int] = (16, 32, 64, 128),
    augment: bool = True,
    half_fraction: float = HALF_FRACTION,
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
    memo: Callable[[tuple, Callable[[], dict]], dict] | None = None,
    syn_share: float | None = None,
    syn_keep_prob: float | None = None,
) -> dict:
    """Trains one classifier per (arm, seed) and scores it on the real evaluation set.

    Args:
      real_train: (images (N, H, W, C), labels (N,)) real training split, labels 0/1.
      real_eval: (images, labels) real held-out images that score every arm (`evaluation_set`).
      synthetic: (images, labels) pool of synthetic images; each seed draws n_per_class per
        class from it without replacement. May be None if no arm uses synthetic images.
      n_per_class: synthetic images per class added in the '+syn' arms and used by 'syn'.
      seeds: one run per seed and arm (classifier init, synthetic subset, half split).
      arms: subset of ARMS to run.
      syn_multiples: the synthetic-amount sweep (needs the 'half' arm): one more 'half+syn' run
        per seed and multiple m, with `sweep_counts` images per class; () = no sweep.
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
      memo: `memo(parts, compute) -> dict` keeps each classifier run's scores under the hash
        of its inputs (`resume.ResumeStore.result`), so a stopped study resumes; None = off.
      syn_share: the synthetic images' share of each class's draws in 'real+syn', 'half+syn'
        and the sweep (`synthetic_mix.share_weights`); None = uniform over real and synthetic.
      syn_keep_prob: label filter of those arms: keep the synthetic images that the same
        seed's classifier of their real images alone (`FILTER_SOURCE`, which must be in `arms`)
        gives P(own label) >= this; None = keep all. Each filtered run records its
        'synthetic_used' counts.

    Returns:
      JSON-able dict (non-finite numbers become None):
        'config': the settings above (and 'pairing', how the comparisons are paired);
        'data': class counts of real_train, real_eval and synthetic;
        'arms': {arm: {'description', 'train_counts': {'real': {...}, 'synthetic': {...}},
                 'per_seed': [{'seed', 'accuracy', 'auc', 'sensitivity', 'specificity',
                 'final_loss'}], 'summary': {metric: {'mean', 'half_width', 'n'}}}};
        'comparisons': {'A - B': {metric: {'mean', 'half_width', 'n', 'per_seed'}}} paired
                 over seeds (`_paired`), for every (A, B) in real+syn-real, syn-real,
                 half+syn-half, half+syn-real, half-real whose arms were both run;
        'real_data_equivalence': {metric: {'half', 'half+syn', 'real', 'gap_recovered'}} where
                 gap_recovered = (half+syn - half) / (real - half) on seed means (None when the
                 gap is below 1e-6): 1 means the synthetic set made up for the missing half;
        'syn_sweep': {'baseline': 'half', 'rows': [{'multiple', 'arm', 'synthetic_per_class',
                 'per_seed', 'summary', 'gain'}]} (gain: paired over 'half', as 'comparisons').
    """
    arms, seeds = _check_study_args(arms, seeds, half_fraction, syn_multiples)
    _check_mix(arms, syn_share, syn_keep_prob)
    mix = {"share": syn_share, "keep_prob": syn_keep_prob}
    class_names = tuple(class_names)
    names = metric_names(class_names)
    data = _prepare_study_data(
        real_train, real_eval, synthetic, arms, bool(syn_multiples), n_per_class, class_names,
        input_size,
    )  # fmt: skip
    data["multiples"] = tuple(float(m) for m in syn_multiples)
    data["half_sizes"] = half_sizes([m.size for m in data["real_members"]], half_fraction)
    data["sweep"] = sweep_counts(data["half_sizes"], syn_multiples)
    _check_pool(data, class_names)
    train_kw = dict(steps=steps, batch_size=batch_size, lr=lr, augment=augment)
    train_kw.update(input_size=input_size, widths=tuple(widths), num_classes=len(class_names))
    per_arm, sweep = _run_arms(
        data, arms, seeds, n_per_class, train_kw, class_names, progress, memo, mix
    )
    _summarise_arms(per_arm, arms, names, confidence)
    config = {
        "n_per_class": n_per_class, "seeds": list(seeds), "arms": list(arms),
        "syn_multiples": [float(m) for m in syn_multiples], "syn_share": syn_share,
        "syn_keep_prob": syn_keep_prob,
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in train_kw.items()},
        "half_fraction": half_fraction, "confidence": confidence,
        "class_names": list(class_names), "metric_names": list(names), "pairing": PAIRING,
    }  # fmt: skip
    result = _study_result(config, data, per_arm, arms, names, confidence, class_names)
    if syn_multiples:
        result["syn_sweep"] = _jsonable(_sweep_result(sweep, per_arm, names, data, confidence))
    return result


PAIRING = (
    "paired over seeds: within a seed every arm shares the classifier initialisation, the half "
    "split and the synthetic draw; a difference is the mean of the per-seed differences with a "
    "Student-t interval over seeds"
)


def _summarise_arms(per_arm: dict, arms, names: Sequence[str], confidence: float) -> None:
    """Adds each arm's 'description' and per-metric 'summary' over seeds (in place)."""
    for arm in arms:
        runs = per_arm[arm]["per_seed"]
        per_arm[arm]["description"] = ARM_DESCRIPTIONS[arm]
        per_arm[arm]["summary"] = {m: _summarise([r[m] for r in runs], confidence) for m in names}


def _sweep_result(sweep: list[dict], per_arm: dict, names, data, confidence: float) -> dict:
    """The synthetic-amount sweep: each row's summary and its paired gain over 'half'."""
    base = per_arm["half"]["per_seed"]
    for row in sweep:
        runs = row["per_seed"]
        row["summary"] = {m: _summarise([r[m] for r in runs], confidence) for m in names}
        row["gain"] = {m: _paired(runs, base, m, confidence) for m in names}
    return {"baseline": "half", "half_per_class": data["half_sizes"], "rows": sweep}


def _study_result(config, data, per_arm, arms, names, confidence, class_names) -> dict:
    """The study's JSON-able result (see `downstream_study`)."""
    tr_y, te_y, sy_y = data["train"][1], data["test"][1], data["syn_labels"]
    return _jsonable(
        {
            "config": config,
            "data": {
                "real_train": _counts(tr_y, class_names),
                "real_eval": _counts(te_y, class_names),
                "synthetic": None if sy_y is None else _counts(sy_y, class_names),
            },
            "arms": {a: per_arm[a] for a in arms},
            "comparisons": _comparisons(per_arm, names, confidence),
            "real_data_equivalence": _equivalence(per_arm, names),
        }
    )


def _check_study_args(
    arms, seeds, half_fraction, syn_multiples
) -> tuple[tuple[str, ...], tuple[int, ...]]:
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
    if syn_multiples and "half" not in arms:
        raise ValueError("syn_multiples measures gains over the 'half' arm; add it to arms.")
    return arms, seeds


def _check_mix(arms: tuple[str, ...], share: float | None, keep_prob: float | None) -> None:
    """The mixing settings are in range and every filtered arm has its vetting arm."""
    synthetic_mix.check_settings(share, keep_prob)
    if keep_prob is None:
        return
    missing = {a: FILTER_SOURCE[a] for a in arms if a in FILTER_SOURCE}
    missing = {a: s for a, s in missing.items() if s not in arms}
    if missing:
        raise ValueError(
            f"the label filter (syn_keep_prob={keep_prob}) vets each arm's synthetic images "
            f"with a classifier of its real images alone; add {sorted(set(missing.values()))} "
            f"to arms for {sorted(missing)}, or set syn_keep_prob=None."
        )


def _prepare_study_data(
    real_train, real_eval, synthetic, arms, sweep, n_per_class, class_names, input_size
) -> dict[str, Any]:
    """Checked, resized arrays (resized once: training and prediction then skip it)."""
    k = len(class_names)
    tr_x, tr_y = check_dataset("real_train", *real_train, k)
    te_x, te_y = check_dataset("real_eval", *real_eval, k)
    tr_x, te_x = metrics.resize_images(tr_x, input_size), metrics.resize_images(te_x, input_size)
    out: dict[str, Any] = {"train": (tr_x, tr_y), "test": (te_x, te_y), "syn": None}
    out["syn_labels"] = None
    if sweep or any("syn" in a for a in arms):
        if synthetic is None:
            raise ValueError(f"arms {arms} or the sweep use synthetic images; synthetic is None.")
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


def _check_pool(data: dict, class_names: Sequence[str]) -> None:
    """Every sweep row must fit in the synthetic pool (draws are without replacement)."""
    if not data["sweep"]:
        return
    pool = [m.size for m in data["syn_members"]]
    need = [max(row[c] for row in data["sweep"]) for c in range(len(pool))]
    if any(n > p for n, p in zip(need, pool, strict=True)):
        need_d, pool_d = (dict(zip(class_names, v, strict=True)) for v in (need, pool))
        raise ValueError(
            f"syn_multiples need up to {need_d} synthetic images per class; the pool has "
            f"{pool_d}. Lower the multiples or generate more (--config.num_synthetic_per_class)."
        )


def _seed_draws(data: dict, seed: int, n_per_class: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One seed's stratified half (indices into the real train split) and synthetic subset
    (indices into the pool; None without a pool)."""
    rng = np.random.default_rng(seed)
    half_idx = np.sort(
        np.concatenate(
            [
                rng.choice(m, h, replace=False)
                for m, h in zip(data["real_members"], data["half_sizes"], strict=True)
            ]
        )
    )
    if data["syn"] is None:
        return half_idx, None
    pick = np.concatenate([rng.choice(m, n_per_class, replace=False) for m in data["syn_members"]])
    return half_idx, pick


def _sweep_draws(data: dict, seed: int) -> list[np.ndarray]:
    """One seed's pool indices of the sweep rows, nested: every row takes the first counts of
    one per-class permutation (its own stream, so the main arms' draws do not depend on it)."""
    if not data["sweep"]:
        return []
    rng = np.random.default_rng([seed, 1])
    perms = [rng.permutation(m) for m in data["syn_members"]]
    return [np.concatenate([p[:n] for p, n in zip(perms, c, strict=True)]) for c in data["sweep"]]


FILTER_SOURCE: dict[str, str] = {"real+syn": "real", "half+syn": "half"}
"""With a label filter, the real-only arm whose classifier vets each '+syn' arm's synthetic
images ('syn' has no real images to train one and is never filtered)."""


def _mixed(data, arm, half_idx, pick, p_own, mix) -> tuple[np.ndarray, np.ndarray, Any, dict]:
    """(images, labels, draw weights or None, {'real', 'synthetic'} label arrays) of one arm:
    its synthetic draw `pick` filtered by `p_own` (the pool's P(own label); None = keep all)
    and weighted to the synthetic share `mix['share']` when the arm has real images too."""
    syn = None
    if pick is not None and arm in ("real+syn", "syn", "half+syn"):
        if p_own is not None:
            pick = pick[synthetic_mix.filter_keep(p_own[pick], mix["keep_prob"])]
        syn = (data["syn"][0][pick], data["syn"][1][pick])
    x, y, real_used, syn_used = _arm_data(arm, data["train"], half_idx, syn)
    is_syn = np.r_[np.zeros(real_used.size, bool), np.ones(syn_used.size, bool)]
    share = mix["share"] if arm in FILTER_SOURCE else None  # the arms with both kinds
    weights = synthetic_mix.share_weights(y, is_syn, share)
    return x, y, weights, {"real": real_used, "synthetic": syn_used}


def _run_arms(data, arms, seeds, n_per_class, train_kw, class_names, progress, memo, mix):
    """Trains and scores one classifier per (seed, arm) and per (seed, sweep row).

    The real-only arms run first within a seed, so that with a label filter
    (`mix['keep_prob']`) their classifiers' P(own label) of every pool image (`FILTER_SOURCE`)
    is known when the '+syn' arms draw. `memo(parts, compute)`, when given, returns a stored
    result of a run whose inputs `parts` (seed, images, labels, evaluation set, settings) it
    has seen, or computes and keeps it.

    Returns:
      ({arm: {'per_seed', 'train_counts'}}, [{'multiple', 'arm', 'synthetic_per_class',
      'per_seed'}] of the sweep rows).
    """
    per_arm: dict[str, dict] = {a: {"per_seed": []} for a in arms}
    sweep = [
        {"multiple": m, "arm": f"half+syn x{m:g}",
         "synthetic_per_class": dict(zip(class_names, c, strict=True)), "per_seed": []}
        for m, c in zip(data["multiples"], data["sweep"], strict=True)
    ]  # fmt: skip
    run = _runner(data, train_kw, class_names, progress, memo, mix)
    order = sorted(arms, key=lambda a: a not in FILTER_SOURCE.values())
    consumers = {FILTER_SOURCE[a] for a in arms if a in FILTER_SOURCE} | (
        {"half"} if sweep else set()
    )
    for seed in seeds:
        half_idx, pick = _seed_draws(data, seed, n_per_class)
        p_own: dict[str, Any] = {}
        for arm in order:
            src = FILTER_SOURCE.get(arm)
            x, y, w, used = _mixed(data, arm, half_idx, pick, p_own.get(src), mix)
            out = run(arm, x, y, w, seed, vets=arm in consumers)
            p_own[arm] = out.pop("p_own_pool", None)
            if mix["keep_prob"] is not None and arm in FILTER_SOURCE:
                out["synthetic_used"] = _counts(used["synthetic"], class_names)
            per_arm[arm]["per_seed"].append(out)
            per_arm[arm]["train_counts"] = {k: _counts(v, class_names) for k, v in used.items()}
        for row, rpick in zip(sweep, _sweep_draws(data, seed), strict=True):
            x, y, w, used = _mixed(data, "half+syn", half_idx, rpick, p_own.get("half"), mix)
            out = run(row["arm"], x, y, w, seed)
            if mix["keep_prob"] is not None:
                out["synthetic_used"] = _counts(used["synthetic"], class_names)
            row["per_seed"].append(out)
    _mean_kept(per_arm, class_names, n_per_class)
    return per_arm, sweep


def _mean_kept(per_arm: dict, class_names: Sequence[str], n_per_class: int) -> None:
    """Filtered arms: 'train_counts' gets 'synthetic_drawn' (n_per_class per class, before
    the filter) and, as 'synthetic', the mean kept count over seeds (rounded), instead of
    the last seed's."""
    for a in per_arm.values():
        used = [r["synthetic_used"] for r in a["per_seed"] if "synthetic_used" in r]
        if used:
            a["train_counts"]["synthetic_drawn"] = {n: n_per_class for n in class_names}
            a["train_counts"]["synthetic"] = {
                n: round(float(np.mean([u[n] for u in used]))) for n in class_names
            }


def _runner(data, train_kw, class_names, progress, memo, mix) -> Callable[..., dict]:
    """`run(name, x, y, weights, seed, vets=False) -> scores`: one classifier run, memoised;
    with `vets` and a label filter, the scores carry 'p_own_pool' (P(own label) of the pool)."""

    def fit(x, y, w, seed: int, vets: bool) -> dict:
        clf, hist = train_classifier(x, y, seed=seed, sample_weights=w, **train_kw)
        scores = evaluate_classifier(clf, *data["test"], class_names=class_names)
        out = {"seed": seed, **scores, "final_loss": float(hist["loss"][-1])}
        if vets:
            probs = predict_proba(clf, data["syn"][0])
            out["p_own_pool"] = synthetic_mix.own_label_probability(probs, data["syn"][1]).tolist()
        return out

    def run(name: str, x, y, w, seed: int, vets: bool = False) -> dict:
        vets = vets and mix["keep_prob"] is not None and data["syn"] is not None
        if memo is None:
            out = fit(x, y, w, seed, vets)
        else:
            parts = ("study run", seed, x, y, *data["test"], sorted(train_kw.items()), class_names)
            parts += () if w is None else ("weights", w)
            parts += ("vets", *data["syn"]) if vets else ()
            out = memo(parts, lambda: fit(x, y, w, seed, vets))
        out = dict(out)
        if vets:
            out["p_own_pool"] = np.asarray(out["p_own_pool"])
        if progress is not None:
            line = ", ".join(f"{k}={out[k]:.3f}" for k in metric_names(class_names) if k in out)
            progress(f"seed {seed} arm {name}: {line}")
        return out

    return run


def _comparisons(per_arm: dict, names: Sequence[str], confidence: float) -> dict:
    out = {}
    for a, b in _COMPARISONS:
        if a in per_arm and b in per_arm:
            runs_a, runs_b = per_arm[a]["per_seed"], per_arm[b]["per_seed"]
            out[f"{a} - {b}"] = {m: _paired(runs_a, runs_b, m, confidence) for m in names}
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
