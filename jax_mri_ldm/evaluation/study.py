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

Training is deliberately plain: Adam, cross-entropy, class-balanced batches (each batch holds the
classes in equal numbers, drawn with replacement), random horizontal flips, a fixed number of
steps and the final parameters (no early stopping, which would need a validation split carved
out of tiny data). Images are resized to ``input_size`` once up front.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_mri_ldm import CLASS_NAMES
from jax_mri_ldm.batching import batched_apply
from jax_mri_ldm.evaluation import metrics, stats
from jax_mri_ldm.models.classifier import ClassifierCNN

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


@dataclasses.dataclass(frozen=True)
class TrainedClassifier:
    """A classifier module together with its trained parameters.

    Attributes:
      model: the ClassifierCNN definition (hashable; carries input_size and widths).
      params: its flax parameter tree.
    """

    model: ClassifierCNN
    params: Any


# --------------------------------------------------------------------------------------------
# Training and inference
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _train_step_fn(model: ClassifierCNN, lr: float, augment: bool) -> tuple[Callable, Any]:
    """Jitted train step and optimiser for one (model, lr, augment); cached so that repeated
    training runs (seeds, arms) reuse one compilation."""
    tx = optax.adam(lr)

    def step(params, opt_state, x, y, key):
        # x: (B, s, s, C), y: (B,)
        flip_key, drop_key = jax.random.split(key)
        if augment:
            flip = jax.random.bernoulli(flip_key, 0.5, (x.shape[0],))
            x = jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)

        def loss_fn(p):
            logits = model.apply({"params": p}, x, train=True, rngs={"dropout": drop_key})
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return params, opt_state, loss, acc

    return jax.jit(step), tx


@functools.lru_cache(maxsize=32)
def _apply_fn(model: ClassifierCNN) -> Callable:
    """Jitted eval forward returning (probabilities, features); cached per model."""

    def apply(params, x):
        logits, feats = model.apply({"params": params}, x, train=False, return_features=True)
        return jax.nn.softmax(logits, axis=-1), feats

    return jax.jit(apply)


def _check_dataset(name: str, images, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels).astype(np.int32).ravel()
    if images.ndim != 4:
        raise ValueError(f"{name} images must be (N, H, W, C); got shape {images.shape}.")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}: {images.shape[0]} images but {labels.shape[0]} labels; pass matching arrays."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} labels must be in [0, {num_classes}); got {np.unique(labels)}.")
    return images, labels


def train_classifier(
    train_images,
    train_labels,
    *,
    seed: int = 0,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    augment: bool = True,
    val: tuple | None = None,
    input_size: int | None = 64,
    widths: Sequence[int] = (16, 32, 64, 128),
    num_classes: int = 2,
    dropout_rate: float = 0.0,
    log_every: int = 25,
    eval_every: int | None = None,
) -> tuple[TrainedClassifier, dict]:
    """Trains a ClassifierCNN with Adam on class-balanced, randomly flipped batches.

    Args:
      train_images: (N, H, W, C) images in [0, 1].
      train_labels: (N,) integer labels in [0, num_classes); every class must occur.
      seed: seeds the initialisation, batch sampling, flips and dropout.
      steps: number of optimisation steps.
      batch_size: images per step (classes in equal numbers, up to rounding).
      lr: Adam learning rate.
      augment: random horizontal flips.
      val: optional (images, labels) evaluated every `eval_every` steps and at the end
        (binary metrics; needs num_classes == 2).
      input_size: side length the model works at (images are resized once up front).
      widths: channels per downsampling block.
      num_classes: number of classes.
      dropout_rate: dropout on pooled features during training.
      log_every: record the mean loss / batch accuracy every this many steps.
      eval_every: validation period in steps; None = only at the end.

    Returns:
      (classifier, history) where history has lists 'step', 'loss', 'batch_accuracy' (means over
      each logging interval) and 'val' (dicts with 'step' and the binary metrics).
    """
    images, labels = _check_dataset("train", train_images, train_labels, num_classes)
    if steps < 1 or batch_size < num_classes:
        raise ValueError(f"need steps >= 1, batch_size >= num_classes; got {steps}, {batch_size}.")
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    missing = [c for c, m in enumerate(members) if m.size == 0]
    if missing:
        raise ValueError(
            f"train_labels has no examples of class(es) {missing}; balanced sampling needs "
            "every class."
        )
    if val is not None:
        val_images, val_labels = _check_dataset("val", val[0], val[1], num_classes)
        val_images = metrics.resize_images(val_images, input_size)
    images = metrics.resize_images(images, input_size)  # (N, s, s, C), once

    model = ClassifierCNN(
        num_classes=num_classes,
        widths=tuple(int(w) for w in widths),
        input_size=input_size,
        dropout_rate=float(dropout_rate),
    )
    step_fn, tx = _train_step_fn(model, float(lr), bool(augment))
    key = jax.random.PRNGKey(seed)
    init_key, step_key = jax.random.split(key)
    params = model.init(init_key, jnp.asarray(images[:1]))["params"]
    val_data = (val_images, val_labels) if val is not None else None
    params, history = _fit(
        model,
        step_fn,
        params,
        tx.init(params),
        images,
        labels,
        members,
        batch_size,
        seed,
        steps,
        log_every,
        eval_every,
        val_data,
        step_key,
    )
    return TrainedClassifier(model, params), history


def _fit(
    model,
    step_fn,
    params,
    opt_state,
    images,
    labels,
    members,
    batch_size,
    seed,
    steps,
    log_every,
    eval_every,
    val,
    step_key,
) -> tuple[Any, dict]:
    """The training loop of `train_classifier`: balanced batches, logging, validation."""
    num_classes = len(members)
    rng = np.random.default_rng(seed)
    slot_classes = np.arange(batch_size) % num_classes  # equal numbers per class per batch
    history: dict[str, list] = {"step": [], "loss": [], "batch_accuracy": [], "val": []}
    loss_acc, acc_acc, count = 0.0, 0.0, 0
    for step in range(1, steps + 1):
        cls = (slot_classes + step) % num_classes
        idx = np.array([members[c][rng.integers(members[c].size)] for c in cls])
        params, opt_state, loss, acc = step_fn(
            params,
            opt_state,
            jnp.asarray(images[idx]),
            jnp.asarray(labels[idx]),
            jax.random.fold_in(step_key, step),
        )
        loss_acc += float(loss)
        acc_acc += float(acc)
        count += 1
        if step % log_every == 0 or step == steps:
            history["step"].append(step)
            history["loss"].append(loss_acc / count)
            history["batch_accuracy"].append(acc_acc / count)
            loss_acc, acc_acc, count = 0.0, 0.0, 0
        if val is not None and (
            step == steps or (eval_every is not None and step % eval_every == 0)
        ):
            scores = evaluate_classifier(TrainedClassifier(model, params), *val)
            history["val"].append({"step": step, **scores})
    return params, history


def _forward(clf: TrainedClassifier, images, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, K), features (N, D)) in one pass over fixed-size batches."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C); got shape {images.shape}.")
    images = metrics.resize_images(images, clf.model.input_size)
    fn = _apply_fn(clf.model)
    return batched_apply(lambda x: fn(clf.params, x), images, batch_size=batch_size)


def classify(clf: TrainedClassifier, images, batch_size: int = 64):
    """Class probabilities (N, K) and pooled penultimate features (N, D) of one forward pass."""
    return _forward(clf, images, batch_size)


def predict_proba(clf: TrainedClassifier, images, batch_size: int = 128) -> np.ndarray:
    """Class probabilities.

    Args:
      clf: a trained classifier.
      images: (N, H, W, C) images in [0, 1].
      batch_size: images per jitted call.

    Returns:
      (N, num_classes) float32 softmax probabilities.
    """
    return _forward(clf, images, batch_size)[0]


def extract_features(clf: TrainedClassifier, images, batch_size: int = 128) -> np.ndarray:
    """Pooled penultimate features, the input to the domain FID / KID.

    Args:
      clf: a trained classifier.
      images: (N, H, W, C) images in [0, 1].
      batch_size: images per jitted call.

    Returns:
      (N, D) float32 features, D = widths[-1].
    """
    return _forward(clf, images, batch_size)[1]


def evaluate_classifier(
    clf: TrainedClassifier,
    images,
    labels,
    threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """The study's metrics of a classifier on labelled images (`metric_names`).

    Args:
      clf: a trained classifier.
      images: (N, H, W, C) images in [0, 1].
      labels: (N,) labels in [0, K).
      threshold: two classes: P(class 1) at or above which a slice is called class 1.
      class_names: K > 2: names for the per-class recalls (default: the class ids).

    Returns:
      Two classes: 'accuracy', 'auc', 'sensitivity', 'specificity' (class 1 = positive);
      K > 2: 'accuracy', 'auc' (macro one-vs-rest) and 'recall_<name>' per class; nan where
      undefined.
    """
    probs = predict_proba(clf, images)
    if clf.model.num_classes == 2:
        return stats.binary_metrics(labels, probs[:, 1], threshold)
    return multiclass_metrics(labels, probs, class_names)


def multiclass_metrics(labels, probs, class_names: Sequence[str] | None = None) -> dict:
    """K-way accuracy, macro one-vs-rest AUC and per-class recall ('recall_<name>').

    Args:
      labels: (N,) ids in [0, K).
      probs: (N, K) class probabilities.
      class_names: names for the recall keys (default: the ids).

    Returns:
      {'accuracy', 'auc', 'recall_<name>'...}; nan where a class is absent.
    """
    labels = np.asarray(labels).astype(np.int64)
    probs = np.asarray(probs)
    names = (
        list(class_names) if class_names is not None else [str(k) for k in range(probs.shape[1])]
    )
    pred = np.argmax(probs, axis=1)
    out = {"accuracy": float(np.mean(pred == labels)) if labels.size else math.nan}
    aucs = []
    for k, name in enumerate(names):
        pos = labels == k
        aucs.append(stats.roc_auc(pos.astype(int), probs[:, k]))
        out[f"recall_{name}"] = float(np.mean(pred[pos] == k)) if pos.any() else math.nan
    out["auc"] = float(np.mean(aucs)) if np.all(np.isfinite(aucs)) else math.nan
    return {k: out[k] for k in ("accuracy", "auc", *(f"recall_{n}" for n in names))}


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
    for arm in arms:
        runs = per_arm[arm]["per_seed"]
        per_arm[arm]["description"] = ARM_DESCRIPTIONS[arm]
        per_arm[arm]["summary"] = {m: _summarise([r[m] for r in runs], confidence) for m in names}
    tr_y, te_y, sy_y = data["train"][1], data["test"][1], data["syn_labels"]
    return _jsonable(
        {
            "config": {
                "n_per_class": n_per_class,
                "seeds": list(seeds),
                "arms": list(arms),
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in train_kw.items()},
                "half_fraction": half_fraction,
                "confidence": confidence,
                "class_names": list(class_names),
                "metric_names": list(names),
            },
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
    tr_x, tr_y = _check_dataset("real_train", *real_train, k)
    te_x, te_y = _check_dataset("real_test", *real_test, k)
    tr_x, te_x = metrics.resize_images(tr_x, input_size), metrics.resize_images(te_x, input_size)
    out: dict[str, Any] = {"train": (tr_x, tr_y), "test": (te_x, te_y), "syn": None}
    out["syn_labels"] = None
    if any("syn" in a for a in arms):
        if synthetic is None:
            raise ValueError(f"arms {arms} use synthetic images but synthetic is None.")
        sy_x, sy_y = _check_dataset("synthetic", *synthetic, k)
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
