"""How a classifier takes in synthetic slices next to real ones: draw share and label filter.

Left alone, a classifier trained on real + synthetic images draws each class's batch slots
uniformly over both, so a synthetic pool several times the real set's size dominates training,
and every synthetic image whose content does not show its label teaches the wrong class. Two
standard remedies, both decided without any held-out image:

* **share**: synthetic images get a fixed share of each class's draws (`share_weights`, the
  per-image weights of `domain_classifier.train_classifier`), whatever their number;
* **filter**: keep only the synthetic images that a classifier trained on the same real images
  alone assigns to their own label with probability >= a threshold (`filter_keep`): it removes
  the images the generator drew off-label and keeps the variation of the rest.

The downstream study (`study.downstream_study`) applies both to its '+syn' arms; the reading
guide in docs/evaluation.md says what each measures.
"""

from __future__ import annotations

import numpy as np


def check_settings(share: float | None, keep_prob: float | None) -> None:
    """Raises ValueError naming the report option when a setting is out of range."""
    if share is not None and not 0.0 < float(share) < 1.0:
        raise ValueError(
            f"--config.downstream_syn_share={share}: use a share in (0, 1), or 0 (None in "
            "Python) to draw synthetic images in proportion to their number."
        )
    if keep_prob is not None and not 0.0 <= float(keep_prob) < 1.0:
        raise ValueError(
            f"--config.downstream_syn_keep_prob={keep_prob}: use a probability in [0, 1); 0 "
            "(None in Python) keeps every synthetic image."
        )


def share_weights(labels: np.ndarray, is_syn: np.ndarray, share: float | None) -> np.ndarray | None:
    """Per-image draw weights that give synthetic images `share` of each class's draws.

    Args:
      labels: (N,) class of each training image.
      is_syn: (N,) True for the synthetic ones.
      share: the synthetic share in (0, 1); None = no weights (uniform over the class).

    Returns:
      (N,) weights, or None. A class without synthetic (or real) images gives all of its
      draws to the images it has. The share is fixed, not capped: a class whose filter kept
      few synthetic images draws each of them often (the study records the kept counts).
    """
    if share is None:
        return None
    w = np.zeros(labels.shape, np.float64)
    for c in np.unique(labels):
        for syn, part in ((True, share), (False, 1.0 - share)):
            members = (labels == c) & (is_syn == syn)
            w[members] = part / max(1, int(members.sum()))
    return w


def own_label_probability(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) probability that a classifier's (N, K) `probs` give each image's own label."""
    return np.asarray(probs)[np.arange(labels.size), labels]


def filter_keep(p_own: np.ndarray, keep_prob: float | None) -> np.ndarray:
    """(N,) mask of the synthetic images to keep: P(own label) >= keep_prob (None: all)."""
    p_own = np.asarray(p_own, np.float64)
    if keep_prob is None:
        return np.ones(p_own.shape, bool)
    return p_own >= keep_prob
