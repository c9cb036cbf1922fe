"""Built-in phantom set with tumour types: normal, glioma, meningioma, pituitary (4 classes).

The same procedural axial brain as `phantom.py` (head, skull, folded cortex, fissure, deep grey
nuclei, lateral ventricles, T1/T2/FLAIR-like contrasts, blur, bias field, Rician noise, per-image
min-max), with one lesion whose kind follows what tells the three types apart on MRI:

- glioma: intra-axial, deep in a hemisphere's white matter, never touching the brain surface;
  irregular infiltrative outline, thick irregular enhancing rim around a necrotic core,
  finger-like oedema spreading through white matter, marked mass effect.
- meningioma: extra-axial and dural-based: it sits on the inner table at the convexity (or
  against the falx), flattened on that side (broad dural base), round and well circumscribed,
  homogeneous avid enhancement, a thin CSF cleft between it and the displaced cortex, a dural
  tail along the dura on both sides, little or no oedema.
- pituitary: midline sellar/suprasellar mass: centred on the midline in front of the third
  ventricle, round or slightly lobulated, solid with a cystic part in some, no oedema, splays
  the frontal horns symmetrically.

Every class draws its anatomy, pose, slice level, contrast and acquisition from the same
distributions, so nothing but the lesion separates them. Both generators' outputs are pinned by
tests/test_phantom.py; a change to either output must bump that module's `GENERATOR_VERSION`,
which is what the data caches and run fingerprints key on.

Determinism: the k-th image of class c is drawn from `np.random.default_rng([seed, 10 + c, k])`;
`generate` interleaves the classes with a permutation from
`np.random.default_rng([seed, 20, *counts])`, keeping each class in its own order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from jax_mri_ldm.data.phantom import _contrast, _ellipse, _fourier_field, _ramp
from jax_mri_ldm.errors import UserError

GENERATOR_VERSION = 1
CLASS_NAMES: tuple[str, ...] = ("normal", "glioma", "meningioma", "pituitary")

Grid = dict[str, np.ndarray | float]


def _pose(rng: np.random.Generator, size: int) -> Grid:
    """Pixel grid and the head frame (anterior-posterior half-length 1, y down = posterior)."""
    t = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    gy, gx = np.meshgrid(t, t, indexing="ij")  # (H, W) each
    scale = rng.uniform(0.74, 0.93)
    tilt = rng.normal(0.0, np.deg2rad(7.0))
    cx, cy = rng.normal(0.0, 0.03, size=2).tolist()
    cos_t, sin_t = float(np.cos(tilt)), float(np.sin(tilt))
    x0 = (cos_t * (gx - cx) + sin_t * (gy - cy)) / scale
    y0 = (-sin_t * (gx - cx) + cos_t * (gy - cy)) / scale
    return {"gx": gx, "gy": gy, "x0": x0, "y0": y0, "px": 2.0 / (size * scale)}


def _head_shape(rng: np.random.Generator) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Draws the head outline; returns depth(x, y) below the scalp surface (head units)."""
    aspect = rng.uniform(0.74, 0.86)
    egg = rng.uniform(0.0, 0.12)
    harm_amp = (rng.normal(0.0, 0.012, size=4) / np.arange(1, 5)).tolist()
    harm_ph = rng.uniform(0.0, 2.0 * np.pi, size=4).tolist()

    def depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        ax = aspect * (1.0 + egg * y)
        r = np.sqrt((x / ax) ** 2 + y**2)
        psi = np.arctan2(np.abs(x), -y)
        mod = 1.0
        for m in range(4):
            mod = mod + harm_amp[m] * np.cos((m + 2) * psi + harm_ph[m])
        rho = r / mod
        return np.hypot(x, y) * (1.0 / np.maximum(rho, 1e-6) - 1.0)

    depth.aspect = aspect  # type: ignore[attr-defined]
    return depth


def _glioma(rng: np.random.Generator, depth, inner: float) -> dict:
    """Deep hemispheric white-matter mass (rejection-sampled away from surface and midline)."""
    radius = float(np.exp(rng.uniform(np.log(0.1), np.log(0.24))))
    for _ in range(200):
        lx = rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.5)
        ly = rng.uniform(-0.6, 0.6)
        if float(depth(np.float32(lx), np.float32(ly))) - inner > radius + 0.08:
            break
    return {
        "kind": "glioma",
        "c": (lx, ly),
        "r": radius,
        "harm": (rng.normal(0.0, 0.11, size=4) / np.sqrt(np.arange(2, 6))).tolist(),
        "harm_ph": rng.uniform(0.0, 2.0 * np.pi, size=4).tolist(),
        "necrosis": rng.uniform(0.3, 0.75),
        "rim_w": rng.uniform(0.2, 0.38),
        "oedema": rng.uniform(1.6, 2.6) + rng.uniform(0.03, 0.08) / radius,
        "oedema_amp": rng.uniform(0.75, 1.0),
        "push": rng.uniform(0.35, 0.6),
        "push_r": 1.6,
    }


def _meningioma(rng: np.random.Generator, depth, inner: float) -> dict:
    """Dural-based mass on the inner table at the convexity, or against the falx."""
    radius = float(np.exp(rng.uniform(np.log(0.1), np.log(0.24))))
    falx = rng.random() < 0.3
    if falx:
        side = float(rng.choice([-1.0, 1.0]))
        # The falx shows in front of the genu and behind the splenium of the corpus callosum.
        y = rng.uniform(0.35, 0.6) * float(rng.choice([-1.0, 1.0]))
        c = (side * 0.75 * radius, y)
        base = {"falx": True, "side": side}
    else:
        ang = rng.uniform(-np.pi, np.pi)  # direction from the head centre, 0 = anterior
        ux, uy = float(np.sin(ang)), float(-np.cos(ang))
        # Walk out along the ray to the inner table, then back in by ~0.6 radius.
        for s in np.linspace(0.2, 1.2, 101):
            if float(depth(np.float32(s * ux), np.float32(s * uy))) < inner:
                break
        s = s - 0.6 * radius
        c = (s * ux, s * uy)
        base = {"falx": False, "ang": float(np.arctan2(ux, -uy))}
    return {
        "kind": "meningioma",
        "c": c,
        "r": radius,
        "harm": (rng.normal(0.0, 0.025, size=4) / np.sqrt(np.arange(2, 6))).tolist(),
        "harm_ph": rng.uniform(0.0, 2.0 * np.pi, size=4).tolist(),
        "cleft": rng.uniform(0.06, 0.14),  # CSF cleft width as a fraction of the radius
        "tail": rng.uniform(0.5, 1.1),  # dural tail length as a multiple of the radius
        "oedema": rng.uniform(1.2, 1.6),
        "oedema_amp": rng.uniform(0.0, 0.35) * (rng.random() < 0.4),
        "calc": rng.random() < 0.25,  # a few calcified (dark) specks
        "push": rng.uniform(0.3, 0.55),
        "push_r": 1.5,
        **base,
    }


def _pituitary(rng: np.random.Generator) -> dict:
    """Midline sellar/suprasellar mass in front of the third ventricle."""
    radius = float(np.exp(rng.uniform(np.log(0.08), np.log(0.17))))
    return {
        "kind": "pituitary",
        "c": (rng.normal(0.0, 0.012), rng.uniform(-0.2, -0.04)),
        "r": radius,
        "elong": rng.uniform(1.0, 1.35),  # anterior-posterior elongation
        "harm": (rng.normal(0.0, 0.04, size=4) / np.sqrt(np.arange(2, 6))).tolist(),
        "harm_ph": rng.uniform(0.0, 2.0 * np.pi, size=4).tolist(),
        "cyst": rng.uniform(0.3, 0.6) if rng.random() < 0.35 else 0.0,
        "push": rng.uniform(0.25, 0.5),
        "push_r": 1.8,
    }


def _draw_lesion(rng: np.random.Generator, label: int, depth, inner: float) -> list[dict]:
    if label == 1:
        return [_glioma(rng, depth, inner)]
    if label == 2:
        return [_meningioma(rng, depth, inner)]
    if label == 3:
        return [_pituitary(rng)]
    return []


def _warp(g: Grid, lesions: list[dict], depth0: np.ndarray, inner: float, surf: float):
    """Mass effect: inverse radial warp away from each lesion, fading to zero at the skull."""
    x0, y0 = g["x0"], g["y0"]
    x, y = x0.copy(), y0.copy()
    for les in lesions:
        # Intra-axial masses leave the brain surface in place; extra-axial ones indent it.
        ref = inner if les["kind"] == "meningioma" else surf
        fade = np.clip((depth0 - ref) / 0.12, 0.0, 1.0)
        lx, ly = les["c"]
        dx, dy = x0 - lx, y0 - ly
        r2 = dx**2 + dy**2
        gw = les["push"] * np.exp(-r2 / (2.0 * (les["push_r"] * les["r"]) ** 2)) * fade
        x, y = x - dx * gw, y - dy * gw
    return x, y


def _cortex(rng: np.random.Generator, x, y, d, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Grey-matter and CSF fractions of the folded cortex and the fissure (warped frame)."""
    ax_ = np.abs(x)
    psi = np.arctan2(ax_, -y)
    arc = psi * 0.75
    wav = rng.uniform(20.0, 28.0)
    k_s, k_d = (0.6 * wav, 1.3 * wav), (0.0, 1.1 * wav)
    n_sym, gs_sym, gd_sym = _fourier_field(rng, arc, d, 16, k_s, k_d, with_grad=True)
    psi_s = np.arctan2(x, -y)
    n_asym, gs_asym, gd_asym = _fourier_field(rng, psi_s * 0.75, d, 10, k_s, k_d, with_grad=True)
    asym = rng.uniform(0.2, 0.45)
    n = n_sym + asym * n_asym
    grad = np.hypot(gs_sym + asym * gs_asym, gd_sym + asym * gd_asym) + 1e-3
    depth_var = _fourier_field(rng, arc, 0.0 * d, 6, (0.2 * wav, 0.6 * wav), (0.0, 0.0))[0]
    sulcus_depth = rng.uniform(0.11, 0.18) * np.clip(1.0 + 0.45 * depth_var, 0.35, 2.0)
    d_sulc = np.hypot(np.abs(n) / grad, np.maximum(d - sulcus_depth, 0.0))
    y_genu, y_splen = rng.uniform(-0.38, -0.25), rng.uniform(0.3, 0.45)
    d_fiss = np.minimum(
        np.hypot(ax_, np.maximum(y - y_genu, 0.0)), np.hypot(ax_, np.maximum(y_splen - y, 0.0))
    )
    d_fiss = d_fiss + 0.02 * np.abs(_fourier_field(rng, y, 0.0 * y, 3, (5.0, 12.0), (0, 0))[0])
    d_csf = np.minimum(np.minimum(np.maximum(d, 0.0), d_sulc), d_fiss)
    gm_thick = rng.uniform(0.036, 0.05)
    sulc_w = rng.uniform(0.003, 0.009) * (1.0 + 1.5 * np.exp(-np.maximum(d, 0.0) / 0.02))
    gm_frac = _ramp(gm_thick - d_csf, px)
    csf_frac = np.maximum(_ramp(sulc_w - np.minimum(d_sulc, d_fiss), px), _ramp(-d, px))
    return gm_frac, csf_frac


def _deep(rng: np.random.Generator, x, y, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Deep grey nuclei and lateral-ventricle fractions (the slice level sets what shows)."""
    ax_ = np.abs(x)
    level = rng.uniform(0.0, 1.0)
    nuc_vis = min(max(1.2 - 1.4 * level, 0.0), 1.0)
    deep = np.zeros_like(x)
    if nuc_vis > 0.0:
        sx = rng.uniform(0.9, 1.1)
        nuc = np.minimum(
            np.minimum(
                _ellipse(ax_, y, 0.13 * sx, -0.2, 0.06, 0.1, 0.5),
                _ellipse(ax_, y, 0.29 * sx, -0.02, 0.055, 0.16, -0.2),
            ),
            _ellipse(ax_, y, 0.09 * sx, 0.13, 0.075, 0.11, 0.15),
        )
        deep = nuc_vis * _ramp(1.0 - nuc, 4.0 * px / 0.1)
    vent_size = float(np.exp(rng.normal(0.0, 0.3)))
    v_gap = rng.uniform(0.01, 0.025)
    v_front, v_back = -0.34 + 0.06 * level, 0.4 - 0.12 * level
    tv = (y - 0.5 * (v_front + v_back)) / (0.5 * (v_back - v_front))
    w0 = 0.034 * vent_size
    bow_f = rng.uniform(0.04, 0.1) * (1.0 - 0.5 * level)
    bow_b = rng.uniform(0.12, 0.24) * (1.0 - 0.5 * level)
    centre = v_gap + w0 + bow_f * np.maximum(-tv - 0.1, 0.0) ** 2
    centre = centre + bow_b * np.maximum(tv - 0.05, 0.0) ** 2
    width = w0 * (
        0.75 + 0.8 * np.exp(-(((tv + 0.6) / 0.3) ** 2)) + 0.6 * np.exp(-(((tv - 0.55) / 0.28) ** 2))
    )
    width = width * np.clip(1.0 - 0.9 * np.maximum(tv - 0.7, 0.0) / 0.3, 0.1, 1.0)
    vent = _ramp(1.0 - (((ax_ - centre) / width) ** 2 + tv**6), 2.5 * px / w0)
    return deep, vent


def _lesion_q(les: dict, x0, y0) -> np.ndarray:
    """Normalised lesion radius (< 1 inside) with the lesion's outline harmonics."""
    lx, ly = les["c"]
    dx, dy = x0 - lx, (y0 - ly) / les.get("elong", 1.0)
    ang = np.arctan2(dy, dx)
    shape = 1.0
    for m in range(4):
        shape = shape + les["harm"][m] * np.cos((m + 2) * ang + les["harm_ph"][m])
    return np.hypot(dx, dy) / (les["r"] * shape)


def _oedema(rng, img, les, q, x0, y0, tis, wm_frac, brain_mask) -> np.ndarray:
    fingers = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 6, (1.5, 3.5), (0.0, 3.5))[0]
    qe = q / (les["oedema"] * (1.0 + 0.18 * fingers))
    oed = np.clip((1.0 - qe) / 0.35, 0.0, 1.0) ** 0.7
    oed = les["oedema_amp"] * oed * (0.35 + 0.65 * wm_frac) * brain_mask
    return img + oed * (tis["oedema"] - img)


def _paint_glioma(rng, img, les, g, tis, wm_frac, brain_mask) -> np.ndarray:
    x0, y0, px = g["x0"], g["y0"], g["px"]
    q = _lesion_q(les, x0, y0)
    edge = px / les["r"]
    img = _oedema(rng, img, les, q, x0, y0, tis, wm_frac, brain_mask)
    tex = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 12, (4.0, 9.0), (0.0, 9.0))[0]
    necro = _ramp(les["necrosis"] * (1.0 - les["rim_w"]) - q + 0.1 * tex, 2.0 * edge)
    core = tis["solid"] * (1.0 + 0.14 * tex)
    core = core + necro * (tis["necrosis"] * (1.0 + 0.08 * tex) - core)
    rim = _ramp(q - (1.0 - les["rim_w"] * (1.0 + 0.3 * tex)), 2.0 * edge) * (1.0 - necro)
    core = core + rng.uniform(0.7, 1.0) * rim * (tis["rim"] - core)
    inside = _ramp(1.0 - q, 1.5 * edge) * brain_mask
    return img + inside * (core - img)


def _dural_tail(les, g, depth0, inner: float) -> np.ndarray:
    """Thin enhancing dura next to the base, fading with distance from the lesion."""
    x0, y0, px = g["x0"], g["y0"], g["px"]
    thick = 0.012 + px
    length = les["tail"] * les["r"]
    lx, ly = les["c"]
    if les["falx"]:
        along = np.abs(y0 - ly)
        across = np.abs(x0)
    else:
        along = np.abs(np.angle(np.exp(1j * (np.arctan2(x0, -y0) - les["ang"])))) * 0.8
        across = np.abs(depth0 - inner - 0.5 * thick)
    return _ramp(thick - across, px) * np.exp(-along / length) * (along > 0.5 * les["r"])


def _paint_meningioma(rng, img, les, g, tis, wm_frac, brain_mask, intracranial, depth0, inner):
    x0, y0, px = g["x0"], g["y0"], g["px"]
    q = _lesion_q(les, x0, y0)
    edge = px / les["r"]
    img = _oedema(rng, img, les, q, x0, y0, tis, wm_frac, brain_mask)
    base = intracranial
    if les["falx"]:  # flat medial base against the falx
        base = base * _ramp(les["side"] * x0, px)
    cleft = _ramp(1.0 + les["cleft"] - q, edge) * base * brain_mask
    img = img + cleft * (tis["csf"] - img)
    tail = _dural_tail(les, g, depth0, inner) * intracranial
    value = 0.55 * tis["solid"] + 0.45 * tis["rim"]
    img = img + 0.8 * tail * (value - img)
    tex = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 8, (3.0, 7.0), (0.0, 7.0))[0]
    core = value * (1.0 + 0.04 * tex)
    if les["calc"]:
        specks = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 10, (8.0, 14.0), (0.0, 14.0))
        core = core + np.clip(specks[0] - 1.6, 0.0, 1.0) * (tis["bone"] - core)
    inside = _ramp(1.0 - q, 1.5 * edge) * base
    return img + inside * (core - img)


def _paint_pituitary(rng, img, les, g, tis, brain_mask) -> np.ndarray:
    x0, y0, px = g["x0"], g["y0"], g["px"]
    q = _lesion_q(les, x0, y0)
    edge = px / les["r"]
    tex = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 8, (3.0, 7.0), (0.0, 7.0))[0]
    core = (0.75 * tis["solid"] + 0.25 * tis["deep"]) * (1.0 + 0.06 * tex)
    if les["cyst"] > 0.0:  # an eccentric cystic part with fluid signal
        qc = np.hypot(x0 - les["c"][0] - 0.3 * les["r"], y0 - les["c"][1]) / les["r"]
        cyst = _ramp(les["cyst"] - qc, 2.0 * edge)
        core = core + cyst * (tis["necrosis"] - core)
    inside = _ramp(1.0 - q, 1.5 * edge) * brain_mask
    return img + inside * (core - img)


def _acquire(rng: np.random.Generator, img: np.ndarray, g: Grid, size: int) -> np.ndarray:
    """Point-spread blur, quadratic bias field, Rician noise, min-max to [0, 1]."""
    gx, gy = g["gx"], g["gy"]
    img = ndimage.gaussian_filter(img, sigma=0.6 * size / 256.0 + 0.25)
    b = rng.normal(0.0, 0.12, size=5).tolist()
    bias = 1.0 + b[0] * gx + b[1] * gy + 0.5 * b[2] * gx * gy + 0.5 * b[3] * gx**2
    img = img * np.clip(bias + 0.5 * b[4] * gy**2, 0.5, 1.5)
    sigma = rng.uniform(0.01, 0.04) * min(1.0, size / 256.0) ** 0.5
    noise_re = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    noise_im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.hypot(img + noise_re, noise_im)
    lo, hi = img.min(), img.max()
    return ((img - lo) / (hi - lo)).astype(np.float32)


def generate_slice(rng: np.random.Generator, label: int, size: int = 256) -> np.ndarray:
    """Draws one axial slice of class `label` (index into CLASS_NAMES).

    Args:
      rng: source of all randomness for this slice.
      label: 0 normal, 1 glioma, 2 meningioma, 3 pituitary.
      size: output side in pixels (>= 32); all geometry scales with it.

    Returns:
      (size, size) float32 image, min-max normalised to [0, 1].
    """
    if label not in range(len(CLASS_NAMES)):
        raise ValueError(f"phantom_types label must be in 0..3 {CLASS_NAMES}, got {label!r}")
    if size < 32:
        raise ValueError(f"phantom size must be >= 32 pixels, got {size}")
    g = _pose(rng, size)
    depth = _head_shape(rng)
    x0, y0, px = g["x0"], g["y0"], g["px"]
    depth0 = depth(x0, y0)
    t_scalp, t_bone = rng.uniform(0.035, 0.06), rng.uniform(0.03, 0.05)
    inner = t_scalp + t_bone  # depth of the inner table (dura)
    surf = inner + rng.uniform(0.008, 0.022)  # brain surface below the subarachnoid CSF
    lesions = _draw_lesion(rng, label, depth, inner)
    x, y = _warp(g, lesions, depth0, inner, surf)
    d = depth(x, y) - surf
    gm_frac, csf_frac = _cortex(rng, x, y, d, px)
    deep, vent = _deep(rng, x, y, px)

    tis = _contrast(rng)
    wm_tex = 1.0 + 0.04 * _fourier_field(rng, x, y, 10, (10.0, 25.0), (0.0, 25.0))[0]
    img = _ramp(depth0, px) * tis["fat"]
    img = img + _ramp(depth0 - t_scalp, px) * (tis["bone"] - img)
    marrow = _ramp(0.25 * t_bone - np.abs(depth0 - t_scalp - 0.5 * t_bone), px)
    img = img + 0.6 * marrow * (tis["marrow"] - img)
    intracranial = _ramp(depth0 - inner, px)
    brain = tis["gm"] * gm_frac + tis["wm"] * wm_tex * (1.0 - gm_frac)
    brain = brain + deep * (tis["deep"] - brain)
    brain = brain + csf_frac * (tis["csf"] - brain)
    brain = brain + vent * (tis["csf"] - brain)
    img = img + intracranial * (brain - img)
    wm_frac = (1.0 - gm_frac) * (1.0 - csf_frac) * (1.0 - vent) * (d > 0)
    brain_mask = _ramp(depth0 - surf, px)
    for les in lesions:
        if les["kind"] == "glioma":
            img = _paint_glioma(rng, img, les, g, tis, wm_frac, brain_mask)
        elif les["kind"] == "meningioma":
            args = (tis, wm_frac, brain_mask, intracranial, depth0, inner)
            img = _paint_meningioma(rng, img, les, g, *args)
        else:
            img = _paint_pituitary(rng, img, les, g, tis, brain_mask)
    return _acquire(rng, img, g, size)


def class_counts(num_normal: int, num_tumour: int) -> list[int]:
    """Images per class: num_normal normal, num_tumour split over the three types (the
    first types get the remainder), e.g. (170, 230) -> [170, 77, 77, 76]."""
    q, r = divmod(int(num_tumour), 3)
    return [int(num_normal)] + [q + (i < r) for i in range(3)]


def generate(
    num_normal: int = 170, num_tumour: int = 230, size: int = 256, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates the four-class phantom set (same bytes for the same arguments).

    Args:
      num_normal: normal slices (label 0).
      num_tumour: tumour slices, split over glioma (1), meningioma (2), pituitary (3) by
        `class_counts`.
      size: height and width in pixels (>= 32).
      seed: non-negative generator seed.

    Returns:
      images: (N, size, size, 1) float32 in [0, 1]; labels: (N,) int32 indexing CLASS_NAMES.
    """
    if num_normal < 0 or num_tumour < 0:
        raise UserError(
            f"config.data.builtin: counts must be >= 0, got num_normal={num_normal}, "
            f"num_tumour={num_tumour}"
        )
    if seed < 0:
        raise UserError(f"config.data.builtin.seed={seed} must be >= 0")
    counts = class_counts(num_normal, num_tumour)
    labels = np.concatenate([np.full(n, c, np.int32) for c, n in enumerate(counts)])  # (N,)
    labels = np.random.default_rng([seed, 20, *counts]).permutation(labels)
    images = np.empty((labels.shape[0], size, size, 1), np.float32)  # (N, H, W, 1)
    seen = [0] * len(CLASS_NAMES)
    for i, lab in enumerate(labels.tolist()):
        rng = np.random.default_rng([seed, 10 + lab, seen[lab]])
        seen[lab] += 1
        images[i, :, :, 0] = generate_slice(rng, lab, size)
    return images, labels
