"""The controls on their own: which metrics rank real held-out images above every corruption?

Used by the report (section 11) and standalone, on any data set without a trained generator:

    python -m jax_mri_ldm.evaluation.control_study --path=../shared/data/brain_tumor_yes_no \
        --image_size=128

builds the candidate feature spaces from the training split, scores the validation split (the
real held-out set) and its corruptions against the test split with every metric, and prints
the controls table (the 'vae_prior' control needs a VAE and is left out here).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from jax_mri_ldm.evaluation import controls as controls_lib
from jax_mri_ldm.evaluation import domain_classifier, features, prdc, scoring, trust
from jax_mri_ldm.evaluation.context import Nulls

CANDIDATES = ("contrastive", "random", "classifier")
"""Candidate feature spaces, in the order they are tried."""

Embed = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class RealSplits:
    """Images and labels of the three real splits."""

    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Space:
    """A candidate feature space.

    Attributes:
      embed: images -> features (FID / KID and the space choice).
      info: JSON description.
      at_size: the same weights seeing another input side (the encoders; None: fixed size).
    """

    embed: Embed
    info: dict
    at_size: Callable[[int], Embed] | None = None

    def sized(self, size: int | None) -> tuple[Embed, int | None]:
        """(embed at `size`, the size used or None = the space's own) for PRDC."""
        if not size or self.at_size is None:
            return self.embed, None
        return self.at_size(int(size)), int(size)


def contrastive_space(
    train_images: np.ndarray,
    s: features.SSLSettings,
    cache_dir: str | None,
    key: str,
    log: Callable[[str], None] | None = None,
) -> Space:
    """The self-supervised encoder (trained or from the cache) and its description."""
    params, info = features.load_or_train(train_images, s, cache_dir, key, log=log)
    desc = (
        f"self-supervised (SimCLR) multi-scale CNN ({sum(s.widths)}-d, {s.input_size} px), "
        f"trained on the {len(train_images)} real training slices for {s.steps} steps"
    )
    if info.get("collapsed"):
        desc += " (collapsed: its NT-Xent ended at chance, so it is a random map)"
    info = {k: v for k, v in info.items() if k != "path"}
    return Space(
        features.encoder_embed(params, s.widths, s.input_size),
        {"description": desc, **info},
        lambda n: features.encoder_embed(params, s.widths, n),
    )


def random_space(s: features.SSLSettings) -> Space:
    desc = f"untrained multi-scale CNN ({sum(s.widths)}-d, {s.input_size} px)"
    return Space(
        features.random_encoder_embed(s),
        {"description": desc},
        lambda n: features.random_encoder_embed(dataclasses.replace(s, input_size=n)),
    )


def prdc_reference(
    space: Space,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: Sequence[str],
    *,
    split: str = "train",
    k: int = prdc.DEFAULT_K,
    input_size: int = 0,
) -> prdc.Reference:
    """PRDC's real manifold: the chosen split embedded in `space` at `input_size`.

    `input_size` 0 means the images' own side (an encoder then sees every pixel, so pixel
    noise and a faint grid are not averaged away by a resize); a space without `at_size`
    keeps its own size.
    """
    x, y = {"train": train, "test": test}.get(split, (None, None))
    if x is None:
        raise ValueError(f"PRDC reference {split!r}: use one of {', '.join(prdc.REFERENCES)}.")
    embed, size = space.sized(input_size or int(x.shape[1]))
    return prdc.build_reference(split, x, y, class_names, embed, k, size)


def choose_recall_k(
    pref: prdc.Reference,
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    candidates: Sequence[int],
) -> tuple[int | None, dict[int, dict[str, float]]]:
    """Recall's k: the largest candidate at which recall ranks the controls right.

    Recall counts real features inside balls around the judged set's own features, with
    radius the distance to their k-th neighbour in that set. A control set is the held-out
    split (a few dozen images on a small data set), where a k = 5 ball spans a fifth of a class
    and swallows a blurred copy as readily as the original. Only control sets enter this
    choice (real images and their corruptions), never a synthetic image.

    Returns:
      (chosen k, or None when no candidate passes `trust`'s recall rule; {k: {set: recall}}).
    """
    rule = trust.RULES_BY_NAME["recall"]
    feats = {name: (pref.embed(x), np.asarray(y)) for name, (x, y) in sets.items()}
    table: dict[int, dict[str, float]] = {}
    for k in sorted({int(k) for k in candidates}, reverse=True):
        at_k = dataclasses.replace(pref, recall_k=k)  # keeps pref's equal-n counts
        table[k] = {name: _recall_or_none(at_k, f, y) for name, (f, y) in feats.items()}
    passing = [k for k, scores in table.items() if trust.check_metric(rule, scores)["trustworthy"]]
    return (passing[0] if passing else None), table


def _recall_or_none(pref: prdc.Reference, feats: np.ndarray, labels: np.ndarray) -> float | None:
    """Overall recall of a set against `pref`; None for a set too small for PRDC."""
    try:
        return prdc.score_features(pref, feats, labels)["overall"]["recall"]
    except ValueError:
        return None


def fit_recall(
    pref: prdc.Reference,
    held_out_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    selection_sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    candidates: Sequence[int],
    subsets: int,
) -> tuple[prdc.Reference, dict | None]:
    """`pref` with recall's k and the size at which recall and coverage are measured.

    k is chosen (`choose_recall_k`) on `selection_sets`, controls made from a different real
    split (the test split) than `held_out_sets` (the validation split's controls, which the
    report's trust table then checks k on): a k picked and validated on the same sets would
    pass by construction. The size is the held-out set's per-class counts
    (`prdc.Reference.equal_n`), the size at which that table validates recall and coverage.
    Without held-out controls, candidates or subsets the matching part stays as it was.

    Returns:
      (the reference, JSON of the choice or None).
    """
    real = held_out_sets.get("real")
    if real is None:
        return pref, None
    labels = np.asarray(real[1])
    counts = tuple(int(np.sum(labels == c)) for c in range(len(pref.class_names)))
    if subsets > 0:
        pref = dataclasses.replace(pref, equal_n=counts, subsets=int(subsets))
    if not candidates or "real" not in selection_sets:
        return pref, None
    k, table = choose_recall_k(pref, selection_sets, candidates)
    pref = dataclasses.replace(pref, recall_k=pref.k if k is None else k)
    rule = (
        "the largest candidate k at which recall ranks the real test images above every "
        "corruption of them (selection controls, not the table's); none passing: the k of "
        "precision, density and coverage"
    )
    by_k = {str(kk): v for kk, v in table.items()}
    return pref, {"candidates": sorted(table, reverse=True), "chosen": k, "rule": rule,
                  "recall_by_k": by_k}  # fmt: skip


def choose_space(
    candidates: Mapping[str, Callable[[], Space]],
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    test_images: np.ndarray,
) -> tuple[str, Space, dict]:
    """Builds every candidate, ranks the corruption controls by FID, keeps the best.

    Args:
      candidates: name -> builder returning a `Space`.
      sets: the control sets (may be empty: the first candidate is taken).
      test_images: the FID reference.

    Returns:
      (chosen name, its Space, JSON: 'chosen', 'rule', 'description', 'candidates').
    """
    corr = {k: v for k, v in sets.items() if k == "real" or k in controls_lib.CORRUPTIONS}
    built, rankings = {}, {}
    for name, build in candidates.items():
        built[name] = build()
        if corr:
            rank = features.control_ranking(
                built[name].embed, corr, test_images, controls_lib.CORRUPTIONS
            )
            rankings[name] = {**built[name].info, **rank}
    chosen = features.choose_space(rankings) if rankings else next(iter(candidates))
    rule = (
        "the candidate whose FID to the test split ranks the most corruptions worse than the "
        "real held-out images, then the one with the widest worst-case margin"
    )
    if len(candidates) == 1:
        rule = "set by config.features.space"
    info = {"chosen": chosen, "rule": rule, "description": built[chosen].info["description"]}
    return chosen, built[chosen], {**info, "candidates": rankings}


def score_controls(
    ref: scoring.Reference,
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]],
    nulls: Nulls,
    path: str = "controls.sets",
    prdc_ref: prdc.Reference | None = None,
) -> tuple[dict[str, dict], dict]:
    """Scores every control set; returns (rows by set, `trust.controls_table`).

    With `prdc_ref`, precision / recall / density / coverage are measured against it (see
    `prdc.rescore_row`) instead of the test features of `ref`.
    """
    rows = {}
    for name, (x, y) in sets.items():
        rows[name] = scoring.score_set(ref, x, y, nulls, f"{path}.{name}")[0]
        if prdc_ref is not None:
            prdc.rescore_row(prdc_ref, rows[name], x, y, nulls, f"{path}.{name}")
    if not rows:
        return rows, {"metrics": {}, "untrusted": []}
    scores = {m: {c: rows[c][m] for c in rows} for m in scoring.SCALARS}
    return rows, trust.controls_table(scores)


def run_controls(
    splits: RealSplits,
    class_names: Sequence[str],
    ssl: features.SSLSettings,
    *,
    space: str = "auto",
    classifier_steps: int = 300,
    classifier_input_size: int = 64,
    period: int | None = 8,
    search_size: int = 64,
    cache_dir: str | None = None,
    cache_key: str = "",
    seed: int = 0,
    prdc_split: str = "train",
    prdc_k: int = prdc.DEFAULT_K,
    prdc_input_size: int = 0,
    recall_ks: Sequence[int] = (),
    equal_n_subsets: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Controls table for a data set without a generator (no 'vae_prior' control).

    `cache_key` names the cached contrastive encoder (`features.cache_key` of the settings and
    data); without one nothing is cached. `prdc_*`: see `prdc_reference`; `recall_ks`,
    `equal_n_subsets`: see `fit_recall`.

    Returns:
      {'feature_space': choice JSON, 'prdc_reference': `prdc.Reference.describe()`,
       'recall_k': `fit_recall`'s choice, 'sets': rows, 'table': controls table}.
    """
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = splits.train, splits.val, splits.test
    say = log or (lambda _: None)
    say(f"domain classifier: {classifier_steps} steps on {len(tr_x)} training images")
    clf, _ = domain_classifier.train_classifier(
        tr_x,
        tr_y,
        steps=classifier_steps,
        input_size=classifier_input_size,
        num_classes=len(class_names),
    )
    classify = lambda x: domain_classifier.classify(clf, x)[0]  # noqa: E731
    builders = {
        "contrastive": lambda: contrastive_space(
            tr_x, ssl, cache_dir if cache_key else None, cache_key, log
        ),
        "random": lambda: random_space(ssl),
        "classifier": lambda: Space(
            lambda x: domain_classifier.classify(clf, x)[1], {"description": "classifier"}
        ),
    }
    if space != "auto":
        builders = {space: builders[space]}
    sets = controls_lib.make_controls(va_x, va_y, tr_x, tr_y, seed=seed)
    say(f"feature spaces: {', '.join(builders)}")
    _, space, info = choose_space(builders, sets, te_x)
    say(f"scoring {len(sets)} control sets in the {info['chosen']} space")
    ref = scoring.build_reference(
        te_x, te_y, tr_x, class_names, space.embed, classify, period, search_size
    )
    pref = prdc_reference(
        space, splits.train, splits.test, class_names,
        split=prdc_split, k=prdc_k, input_size=prdc_input_size,
    )  # fmt: skip
    selection = controls_lib.make_controls(te_x, te_y, tr_x, tr_y, seed=seed + 1)
    pref, recall_k = fit_recall(pref, sets, selection, recall_ks, equal_n_subsets)
    rows, table = score_controls(ref, sets, Nulls(), prdc_ref=pref)
    return {"feature_space": info, "prdc_reference": pref.describe(), "recall_k": recall_k,
            "sets": rows, "table": table}  # fmt: skip


def format_table(table: dict) -> str:
    """The controls table as markdown (metrics x control sets, trustworthy column)."""
    metrics = table["metrics"]
    if not metrics:
        return "(no controls)"
    sets = list(next(iter(metrics.values()))["scores"])
    lines = ["| metric (better) | " + " | ".join(sets) + " | trustworthy |"]
    lines.append("|" + "---|" * (len(sets) + 2))
    for t in metrics.values():
        cells = ["n/a" if t["scores"][k] is None else f"{t['scores'][k]:.4g}" for k in sets]
        ok = {True: "yes", False: "**no** (misses " + ", ".join(t["failures"]) + ")"}
        lines.append(
            f"| {t['label']} ({t['better']}) | "
            + " | ".join(cells)
            + f" | {ok.get(t['trustworthy'], 'n/a')} |"
        )
    return "\n".join(lines)


def format_prdc_reference(d: dict) -> str:
    """One line: which real images precision / recall / density / coverage measure against."""
    line = (
        f"precision/recall/density/coverage: real {d['split']} split as the manifold "
        f"(n = {d['n']}, {d['n_per_class']}), k = {d['k']}, features at {d['features_at']}"
    )
    if d.get("recall_k") not in (None, d["k"]):
        line += f"; recall's own k = {d['recall_k']}"
    if d.get("equal_n_per_class"):
        line += (
            f"; recall and coverage at the held-out size {d['equal_n_per_class']} (larger sets: "
            f"mean of {d['equal_n_subsets']} random subsets)"
        )
    return line


def format_candidates(fs: dict) -> str:
    """FID to the test split per candidate space and control, with the chosen space."""
    cands = fs["candidates"]
    if not cands:
        return f"feature space: {fs['chosen']} ({fs['description']})"
    sets = list(next(iter(cands.values()))["fid"])
    lines = ["| space | " + " | ".join(sets) + " | missed |", "|" + "---|" * (len(sets) + 2)]
    for name, c in cands.items():
        cells = " | ".join(f"{c['fid'][k]:.4g}" for k in sets)
        lines.append(f"| {name} | {cells} | {', '.join(c['missed']) or 'none'} |")
    chosen = f"chosen: {fs['chosen']} ({fs['description']})"
    return "\n".join(lines + ["", chosen])


def _main(argv: Sequence[str]) -> None:
    del argv
    import json

    import ml_collections
    from absl import flags

    from jax_mri_ldm import config_loader
    from jax_mri_ldm import data as data_lib

    f = flags.FLAGS
    cfg = data_lib.get_data_config()
    cfg.path, cfg.image_size = f.path, f.image_size
    if f.classes:
        cfg.classes = f.classes
    ds = data_lib.load_imageset(ml_collections.ConfigDict(cfg.to_dict()))
    split = data_lib.split_indices(ds, **cfg.split)
    parts = [ds.subset(split[k]) for k in ("train", "val", "test")]
    fc = config_loader.load_config("report", "paper").features
    ssl = features.SSLSettings(
        widths=tuple(fc.widths),
        input_size=min(int(fc.input_size), f.image_size),
        steps=f.ssl_steps,
        batch_size=int(fc.batch_size),
    )
    res = run_controls(
        RealSplits(*[(p.images, p.labels) for p in parts]),
        ds.class_names,
        ssl,
        space=f.space,
        classifier_steps=f.classifier_steps,
        cache_dir=os.path.expanduser("~/.cache/jax_mri_ldm/control_study"),
        cache_key=features.cache_key(ssl, ds.fingerprint, parts[0].ids),
        prdc_split=str(fc.prdc_reference),
        prdc_k=int(fc.prdc_k),
        prdc_input_size=int(fc.prdc_input_size),
        recall_ks=tuple(int(k) for k in fc.recall_ks),
        equal_n_subsets=int(fc.equal_n_subsets),
        log=print,
    )
    print(f"splits: {[len(p) for p in parts]} (train, val = real held-out, test = reference)")
    print(format_candidates(res["feature_space"]))
    print(format_prdc_reference(res["prdc_reference"]))
    print(format_table(res["table"]))
    print(json.dumps({"untrusted": res["table"]["untrusted"]}))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("path", "", "Image folder root ('' = the built-in phantom set).")
    flags.DEFINE_integer("image_size", 128, "Side of the slices.")
    flags.DEFINE_string("classes", "", "binary | folders ('' = the data default).")
    flags.DEFINE_string("space", "auto", "Feature space: auto | contrastive | random | classifier.")
    flags.DEFINE_integer("ssl_steps", 300, "Contrastive encoder training steps.")
    flags.DEFINE_integer("classifier_steps", 300, "Domain classifier training steps.")
    app.run(_main)
