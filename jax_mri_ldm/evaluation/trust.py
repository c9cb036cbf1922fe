"""Which metrics can be trusted in this run: do they rank the controls correctly?

Every metric is scored on the control sets (`controls.make_controls`) exactly as on a synthetic
set. A metric is trustworthy for a run when the real held-out images score best and every
control it is responsible for scores strictly worse; a metric that fails is reported as "not
trustworthy for this run" and never decides a default (guidance w, sampler).

Each metric declares the direction in which it is better and the controls it must detect:
a grid detector is not expected to notice blur, while a distribution distance (FID) must notice
every corruption.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from jax_mri_ldm.evaluation.controls import CORRUPTIONS, MEMORISED


@dataclasses.dataclass(frozen=True)
class MetricRule:
    """How to read one metric on the controls.

    Attributes:
      name: the metric's key in the control scores.
      better: 'lower' | 'higher' | 'near_real' (closer to the real set's value, on a log scale).
      must_detect: the controls that must score worse than the real held-out set.
      label: human name for the table.
    """

    name: str
    better: str
    must_detect: tuple[str, ...]
    label: str


RULES: tuple[MetricRule, ...] = (
    MetricRule("fid", "lower", CORRUPTIONS, "feature FID vs test"),
    MetricRule("kid", "lower", CORRUPTIONS, "feature KID vs test"),
    MetricRule("precision", "higher", CORRUPTIONS, "precision"),
    MetricRule("recall", "higher", CORRUPTIONS, "recall"),
    MetricRule("density", "higher", CORRUPTIONS, "density"),
    MetricRule("coverage", "higher", CORRUPTIONS, "coverage"),
    # Noise, blur and a faint grid keep the class evidence (a tumour stays visible), so class
    # fidelity is only responsible for the controls that destroy it.
    MetricRule("fidelity", "higher", ("patch_shuffle", "vae_prior"), "class fidelity"),
    MetricRule("spectrum", "lower", CORRUPTIONS, "spectrum distance"),
    MetricRule("grid", "near_real", ("grid",), "grid score (median)"),
    # The nearest-neighbour search runs at a reduced size (64 px), where a 2 px blur and a faint
    # grid vanish: NN-SSIM answers "is the anatomy like some real slice?" and is responsible for
    # the controls that change it; blur and grid are the spectrum's and grid score's.
    MetricRule("nn_ssim", "higher", ("noise", "patch_shuffle", "vae_prior"), "NN-SSIM"),
    # Both rules must flag exact copies (mirrored training images). Decoded copies (VAE
    # reconstructions of training images) are scored and shown but not required: under a VAE
    # that cannot yet reconstruct, they are no copies (bench/memorisation_rules.py checks them).
    MetricRule("memorised", "lower", (MEMORISED,), "memorised fraction"),
    MetricRule("memorised_relative", "lower", (MEMORISED,), "memorised fraction (relative)"),
)
"""Every metric the controls table knows, in table order."""

RULES_BY_NAME: dict[str, MetricRule] = {r.name: r for r in RULES}


def _badness(rule: MetricRule, value: float, real: float) -> float:
    """A number that grows as the metric gets worse (0-based for 'near_real')."""
    if rule.better == "lower":
        return value
    if rule.better == "higher":
        return -value
    return abs(math.log(max(value, 1e-30) / max(real, 1e-30)))


def check_metric(rule: MetricRule, scores: Mapping[str, float | None]) -> dict:
    """Does `rule`'s metric rank 'real' best and every control it must detect worse?

    Args:
      rule: the metric's rule.
      scores: control name -> value of this metric (None = not computed); needs 'real'.

    Returns:
      {'trustworthy': bool or None (no real value), 'failures': [control...], 'worse': {control:
      bool or None}} where 'worse' covers every control present (also ones not required).
    """
    real = scores.get("real")
    if real is None:
        return {"trustworthy": None, "failures": [], "worse": {}, "reason": "no real value"}
    ref = _badness(rule, real, real)
    worse = {
        c: (None if v is None else _badness(rule, v, real) > ref)
        for c, v in scores.items()
        if c != "real"
    }
    failures = [c for c in rule.must_detect if c in worse and worse[c] is not True]
    return {"trustworthy": not failures, "failures": failures, "worse": worse}


def controls_table(scores: Mapping[str, Mapping[str, float | None]]) -> dict:
    """Checks every metric with a rule that has scores.

    Args:
      scores: metric name -> {control name -> value}.

    Returns:
      {'metrics': {name: check_metric(...) + 'label', 'better', 'must_detect', 'scores'},
       'untrusted': [names whose check failed]}.
    """
    out: dict[str, dict] = {}
    for rule in RULES:
        if rule.name not in scores:
            continue
        res = check_metric(rule, scores[rule.name])
        out[rule.name] = {
            **res,
            "label": rule.label,
            "better": rule.better,
            "must_detect": list(rule.must_detect),
            "scores": dict(scores[rule.name]),
        }
    untrusted = [k for k, v in out.items() if v["trustworthy"] is False]
    return {"metrics": out, "untrusted": untrusted}


def trusted(table: dict, names: Sequence[str]) -> list[str]:
    """The metrics among `names` whose control check passed."""
    return [n for n in names if table["metrics"].get(n, {}).get("trustworthy") is True]
