"""What the report's sections share: the run, its data splits, settings, nulls with reasons.

A section's `compute(ctx)` reads what earlier sections left in `ctx.results` (their JSON) and
`ctx.shared` (arrays and objects that are not JSON: the classifier, features, synthetic sets)
and returns its own JSON; `render(report)` turns the finished report.json into markdown.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np

from jax_mri_ldm import data as data_lib

FALLBACK_NULL_REASON = "undefined (non-finite value)"


class Nulls:
    """Records why a metric is null, keyed by its dotted path in report.json."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def null(self, path: str, reason: str) -> None:
        self.reasons[path] = reason

    def value(self, path: str, fn: Callable[[], Any], reason: str | None = None) -> float | None:
        """fn() as a finite float, or None with the reason (ValueError text or `reason`)."""
        try:
            v = fn()
        except ValueError as e:
            self.reasons[path] = reason or str(e)
            return None
        return self.finite(path, v, reason)

    def finite(self, path: str, v: Any, reason: str | None = None) -> float | None:
        if v is None or not math.isfinite(float(v)):
            self.reasons[path] = reason or FALLBACK_NULL_REASON
            return None
        return float(v)


def walk_nulls(obj: Any, path: str = "") -> list[str]:
    """Dotted paths of every None leaf (list items by index)."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += walk_nulls(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out += walk_nulls(v, f"{path}.{i}")
    elif obj is None:
        out.append(path)
    return out


def clean(x: Any) -> Any:
    """numpy -> Python, tuples -> lists, non-finite floats -> None (recursively)."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


@dataclasses.dataclass
class Context:
    """Everything a section's compute may read or add to.

    Attributes:
      cfg: the report config (configs/report.py).
      run: the diffusion run (`pipeline.LDMPipeline`).
      workdir: the diffusion run directory as given.
      ds: the whole data set; train / val / test: the run's split of it.
      generator_train: every image the generator trained on (train plus the run's
        config.extra_train images; None = train), the memorisation search's reference.
      calibration: fresh held-out built-in slices that set the memorisation thresholds with
        the test split (`data.calibration_slices`; None = test split alone).
      out_dir: where report.md / report.json / figures/ go.
      nulls: reasons for null metrics.
      log: progress printer.
      results: section key -> its JSON (filled in compute order).
      shared: non-JSON objects shared between sections (classifier, features, sets).
      figures: figure key -> absolute path.
      timings: stage -> seconds.
    """

    cfg: ml_collections.ConfigDict
    run: Any
    workdir: str
    ds: data_lib.ImageSet
    train: data_lib.ImageSet
    val: data_lib.ImageSet
    test: data_lib.ImageSet
    out_dir: str
    nulls: Nulls = dataclasses.field(default_factory=Nulls)
    log: Callable[..., None] = print
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)
    figures: dict[str, str] = dataclasses.field(default_factory=dict)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    generator_train: data_lib.ImageSet | None = None
    calibration: data_lib.ImageSet | None = None
    _clock: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def seen_by_generator(self) -> data_lib.ImageSet:
        """`generator_train`, or the training split when the run used no extra images."""
        return self.train if self.generator_train is None else self.generator_train

    @property
    def calibration_images(self) -> np.ndarray | None:
        """(M, H, W, 1) images of `calibration`, or None."""
        return None if self.calibration is None else self.calibration.images

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.run.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.run.class_names)

    @property
    def vae_workdir(self) -> str:
        """The VAE run's folder: the absolute path recorded when the LDM trained or, when the
        runs were moved since (another checkout or machine), the LDM config's `vae_workdir`
        as written there (relative to the current folder); the recorded path if neither
        exists."""
        recorded = str(self.run.meta["vae"].get("source_workdir", ""))
        given = str(self.run.config.get("vae_workdir") or "")
        if not os.path.isdir(recorded) and given and os.path.isdir(given):
            return given
        return recorded

    def figure_path(self, name: str) -> str:
        """Absolute path of figures/<name>.png."""
        return os.path.join(self.out_dir, "figures", f"{name}.png")

    def lap(self, name: str) -> None:
        """Records the seconds since the previous lap under `name`."""
        now = time.perf_counter()
        self.timings[name] = now - self._clock
        self._clock = now
        self.log(f"[report] {name}: {self.timings[name]:.1f} s", flush=True)
