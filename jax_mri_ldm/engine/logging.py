"""What a user watches: JSON-lines metrics, TensorBoard event files and a tqdm bar."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from jax_mri_ldm import atomic

# abspath(workdir) -> Unix time its current session started (see `start_session`).
_SESSIONS: dict[str, float] = {}


def start_session(workdir: str) -> float:
    """Marks now as the start of a training session of `workdir` and returns it.

    Every record written to `workdir` afterwards carries it as ``session``, so a run trained
    in several sessions (stopped, then resumed) can be timed without the gaps between them
    (`training_seconds`). Keyed by run directory: a process that trains the VAE and then the
    LDM (`make demo`) starts each run's session when that run starts.
    """
    start = _SESSIONS[os.path.abspath(workdir)] = time.time()
    return start


def session_start(workdir: str) -> float:
    """The start of `workdir`'s session in this process (started now if none was)."""
    key = os.path.abspath(workdir)
    return _SESSIONS[key] if key in _SESSIONS else start_session(workdir)


def _to_python(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return value.item()
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    return value


class MetricWriter:
    """Appends `{"step", "split", ...}` records to `<workdir>/metrics.jsonl` and TensorBoard.

    Only process 0 writes; other processes get a writer whose methods do nothing.

    Args:
      workdir: the run directory.
      enabled: False on non-zero processes.
      tensorboard: also write TensorBoard event files under `<workdir>/tb`.
    """

    def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.session = session_start(workdir)
        self._tb = None
        if enabled and tensorboard:
            from tensorboardX import SummaryWriter  # local: heavy import, optional

            self._tb = SummaryWriter(os.path.join(workdir, "tb"), flush_secs=30)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """Writes one record; non-finite floats are kept as strings in JSON ('nan')."""
        if not self.enabled:
            return
        record: dict[str, Any] = {
            "step": int(step),
            "split": split,
            "time": time.time(),
            "session": self.session,
        }
        for key, value in metrics.items():
            value = _to_python(value)
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            record[key] = value
            if self._tb is not None and isinstance(value, (int, float)):
                self._tb.add_scalar(f"{split}/{key}", value, int(step))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(workdir: str, split: str | None = None) -> list[dict[str, Any]]:
    """Reads `<workdir>/metrics.jsonl` (optionally one split), keeping the last record per step.

    A resumed run truncates the file to its checkpoint's step (`truncate_metrics`); should a
    step still appear twice, the later record wins.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if split is None or rec.get("split") == split:
                by_key[(rec.get("split", ""), rec["step"])] = rec
    return sorted(by_key.values(), key=lambda r: (r["step"], r.get("split", "")))


def training_seconds(records: Sequence[dict[str, Any]]) -> float | None:
    """Wall seconds a run took, without the gaps between its sessions.

    Each session (one training call: a first run or a resume, `start_session`) counts from
    its start to its last record, so data loading, compilation and the final test scores are
    in it and a night between a Ctrl-C and the resume is not. Records written before sessions
    were logged (no ``session``) count as one session from their first to their last record.

    Returns:
      The sum over sessions, or None when there is no session record and fewer than two
      timed records.
    """
    spans: dict[float | None, tuple[float, float]] = {}
    legacy = 0  # timed records without a session stamp
    for rec in records:
        if "time" not in rec:
            continue
        key, t = rec.get("session"), float(rec["time"])
        legacy += key is None
        lo, hi = spans.get(key, (t if key is None else float(key), t))
        spans[key] = (min(lo, t), max(hi, t))
    if not spans or (set(spans) == {None} and legacy < 2):
        return None
    return float(sum(hi - lo for lo, hi in spans.values()))


def truncate_metrics(workdir: str, step: int) -> int:
    """Drops the records of `<workdir>/metrics.jsonl` after `step` (and torn lines).

    Called when a run resumes from its checkpoint at `step`: the steps after it are trained
    again and logged again, so without this the file would hold them twice. The file is
    rewritten through a temporary file and a rename.

    Returns:
      The number of lines dropped.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
                keep = int(rec["step"]) <= step
            except (ValueError, KeyError, TypeError):
                keep = False  # a line torn by a kill mid-write
            if keep:
                kept.append(line if line.endswith("\n") else line + "\n")
            elif line.strip():
                dropped += 1
    if dropped:
        atomic.write_text(path, "".join(kept))
    return dropped


def progress_bar(total: int, initial: int, desc: str, enabled: bool = True) -> tqdm.tqdm:
    """A tqdm bar over steps; disabled (but still usable) on non-zero processes."""
    return tqdm.tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        disable=not enabled,
        file=sys.stderr,
        mininterval=1.0,
    )


def convergence_warning(
    losses: Sequence[float],
    num_updates: int,
    *,
    min_updates: int,
    name: str = "run",
    still_falling: float = 0.02,
) -> str | None:
    """A one-paragraph warning for a run that stopped far from converged, else None.

    Two signs, either is enough: fewer optimiser updates than ``min_updates``, or a loss still
    falling at the end (the mean of the last quarter of ``losses`` is more than
    ``still_falling`` below the mean of the quarter before). Call it once at the end of
    training with the logged training losses in step order.

    Args:
      losses: logged training losses, oldest first (fewer than 8 values: slope not judged).
      num_updates: optimiser updates the run made.
      min_updates: updates below which the run is called short.
      name: what to call the run in the message (e.g. ``"LDM"``).
      still_falling: relative drop between the last two quarters that counts as falling.

    Returns:
      The warning text, or None when neither sign is present.
    """
    reasons = []
    if num_updates < min_updates:
        reasons.append(f"it made {num_updates} updates, fewer than the {min_updates} recommended")
    vals = np.asarray(losses, np.float64)
    vals = vals[np.isfinite(vals)]
    if vals.size >= 8:
        q = vals.size // 4
        prev, last = vals[-2 * q : -q].mean(), vals[-q:].mean()
        drop = (prev - last) / max(abs(prev), 1e-12)
        if drop > still_falling:
            reasons.append(f"its loss was still falling ({100 * drop:.1f} % over the last quarter)")
    if not reasons:
        return None
    more = max(2 * num_updates, min_updates)
    return (
        f"WARNING: {name} is likely far from converged: {' and '.join(reasons)}. Samples and "
        f"reconstructions will be worse than a longer run's; train longer, e.g. "
        f"--config.train.num_steps={more} (same --workdir resumes)."
    )
