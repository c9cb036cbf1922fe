"""The domain classifier: train a ClassifierCNN on class-balanced batches, predict, score.

Training is deliberately plain: Adam, cross-entropy, class-balanced batches (each batch holds the
classes in equal numbers, drawn with replacement), random horizontal flips, a fixed number of
steps and the final parameters (no early stopping, which would need a validation split carved
out of tiny data). Images are resized to ``input_size`` once up front. Two classes are scored
with accuracy / AUC / sensitivity / specificity (class 1 positive), K > 2 with K-way accuracy,
macro one-vs-rest AUC and per-class recall.
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

from jax_mri_ldm.batching import batched_apply
from jax_mri_ldm.evaluation import metrics, stats
from jax_mri_ldm.models.classifier import ClassifierCNN


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


def check_dataset(name: str, images, labels, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
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


def _balanced_inputs(
    train_images, train_labels, num_classes: int, steps: int, batch_size: int
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Checked (images, labels) and each class's member indices; raises on unusable settings."""
    images, labels = check_dataset("train", train_images, train_labels, num_classes)
    if steps < 1 or batch_size < num_classes:
        raise ValueError(f"need steps >= 1, batch_size >= num_classes; got {steps}, {batch_size}.")
    members = [np.flatnonzero(labels == c) for c in range(num_classes)]
    missing = [c for c, m in enumerate(members) if m.size == 0]
    if missing:
        raise ValueError(
            f"train_labels has no examples of class(es) {missing}; balanced sampling needs "
            "every class."
        )
    return images, labels, members


def _resized_val(val: tuple | None, num_classes: int, input_size: int | None) -> tuple | None:
    """The checked validation (images resized to the model's side, labels), or None."""
    if val is None:
        return None
    val_images, val_labels = check_dataset("val", val[0], val[1], num_classes)
    return metrics.resize_images(val_images, input_size), val_labels


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
    sample_weights=None,
    init_params=None,
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
      sample_weights: optional (N,) non-negative weights: within its class, an image is drawn
        with probability proportional to its weight (None = uniformly). The downstream study
        uses it to fix the synthetic images' share of each class's draws.
      init_params: optional parameters to start from instead of a fresh initialisation (a
        classifier of the same architecture trained on other images: pretraining, then
        fine-tuning with a fresh optimiser state).

    Returns:
      (classifier, history) where history has lists 'step', 'loss', 'batch_accuracy' (means over
      each logging interval) and 'val' (dicts with 'step' and the binary metrics).
    """
    images, labels, members = _balanced_inputs(
        train_images, train_labels, num_classes, steps, batch_size
    )
    val_data = _resized_val(val, num_classes, input_size)
    draw = _class_draws(members, sample_weights, labels.shape[0])
    images = metrics.resize_images(images, input_size)  # (N, s, s, C), once
    model = ClassifierCNN(
        num_classes=num_classes,
        widths=tuple(int(w) for w in widths),
        input_size=input_size,
        dropout_rate=float(dropout_rate),
    )
    step_fn, tx = _train_step_fn(model, float(lr), bool(augment))
    init_key, step_key = jax.random.split(jax.random.PRNGKey(seed))
    params = model.init(init_key, jnp.asarray(images[:1]))["params"]
    if init_params is not None:
        jax.tree.map(_same_shape, params, init_params)  # the same architecture, or a clear error
        params = init_params
    params, history = _fit(
        model, step_fn, params, tx.init(params), images, labels, draw, batch_size, seed,
        steps, log_every, eval_every, val_data, step_key,
    )  # fmt: skip
    return TrainedClassifier(model, params), history


def _same_shape(a, b) -> None:
    if np.shape(a) != np.shape(b):
        raise ValueError(f"init_params do not fit this classifier: {np.shape(b)} vs {np.shape(a)}.")


def _class_draws(
    members: list[np.ndarray], weights, n: int
) -> Callable[[np.random.Generator, int], int]:
    """`draw(rng, c)`: one training image index of class c, uniform or by `weights` (N,)."""
    if weights is None:
        return lambda rng, c: members[c][rng.integers(members[c].size)]
    w = np.asarray(weights, np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"sample_weights must be ({n},) finite and >= 0; got shape {w.shape}.")
    cdfs = [np.cumsum(w[m]) for m in members]
    if min(c[-1] for c in cdfs) <= 0:
        raise ValueError("sample_weights give some class a total weight of 0.")
    cdfs = [c / c[-1] for c in cdfs]  # ends at exactly 1: a weight-0 tail is never drawn
    return lambda rng, c: members[c][min(np.searchsorted(cdfs[c], rng.random(), "right"),
                                         members[c].size - 1)]  # fmt: skip


def _fit(
    model,
    step_fn,
    params,
    opt_state,
    images,
    labels,
    draw,
    batch_size,
    seed,
    steps,
    log_every,
    eval_every,
    val,
    step_key,
) -> tuple[Any, dict]:
    """The training loop of `train_classifier`: balanced batches (`draw(rng, class)` picks an
    image), logging, validation."""
    num_classes = model.num_classes
    rng = np.random.default_rng(seed)
    slot_classes = np.arange(batch_size) % num_classes  # equal numbers per class per batch
    history: dict[str, list] = {"step": [], "loss": [], "batch_accuracy": [], "val": []}
    loss_acc, acc_acc, count = 0.0, 0.0, 0
    for step in range(1, steps + 1):
        cls = (slot_classes + step) % num_classes
        idx = np.array([draw(rng, c) for c in cls])
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
