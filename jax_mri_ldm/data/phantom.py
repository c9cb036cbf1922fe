"""Built-in procedural brain-MRI dataset: axial 2D slices of class normal (0) and tumour (1).

The phantom stands in for the paper's 400-image Kaggle set (170 normal / 230 tumour) so the whole
pipeline runs with no download. Every slice is drawn analytically on a continuous coordinate frame
and then rasterised, so all geometry scales with `size` (a 64x64 slice is a coarse rendering of
the same anatomy a 256x256 slice would show for the same random draw).

Anatomy, outside in: Rayleigh-noise background; scalp (bright fat) with a smooth, egg-shaped,
slightly bumpy outline; dark cortical bone with a faint diploe line; a thin CSF layer; a folded
grey-matter cortex (radially running sulci from a band-limited random field whose zero set is
lined with grey matter and filled with CSF); the interhemispheric fissure; white matter; deep grey
nuclei (caudate, putamen, thalamus) and the two lateral ventricles (the "butterfly"). Left-right
symmetry comes from building most fields from |x| in the head frame, with a small asymmetric
part. Each subject draws its own head size, aspect, position, tilt, cortical folding, ventricle
size, slice level and contrast (T1-, T2- or FLAIR-like weighting with per-tissue jitter).

Tumour slices add one or two lesions (log-uniform radius, 8-26 % of the head half-length, so
small ones are common but still span several pixels at 64x64) with an irregular outline, an
enhancing rim, a heterogeneous necrotic/solid core and finger-like oedema that spreads mostly
through white matter, plus mass effect: the brain's inner structures are sampled through a smooth
radial warp that pushes sulci and ventricles away from each lesion.

Acquisition: a mild point-spread blur, a smooth multiplicative bias field (quadratic polynomial),
Rician noise (magnitude of the signal plus complex Gaussian noise), then per-image min-max
normalisation to [0, 1] as in the paper's preprocessing.

Determinism: the k-th image of class c is drawn from `np.random.default_rng([seed, c, k])`, so it
is byte-identical however many images of either class are generated; `generate` only interleaves
the classes with a permutation drawn from `np.random.default_rng([seed, 2, n_normal, n_tumour])`,
keeping each class in its own order. (Bytes are reproducible on one platform; float32 `cos` may
differ in the last bit between CPU instruction sets or NumPy builds.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

# Bumped whenever the generator's output for a given (seed, size) changes: data caches and run
# fingerprints key on it (sources._builtin_fingerprint), not on this file's bytes, and
# tests/test_phantom.py pins the output, so a refactor must keep every draw and float op in order.
GENERATOR_VERSION = 1

# Tissue intensity tables (before per-subject jitter) for the three weightings we imitate.
# Keys: fat (scalp), bone, marrow (diploe), csf, gm, wm, deep (deep grey), oedema,
# solid (viable tumour), rim (enhancing rim), necrosis.
_CONTRASTS: dict[str, dict[str, float]] = {
    "t1": {  # post-contrast T1: dark CSF, WM brighter than GM, strongly enhancing rim
        "fat": 0.95,
        "bone": 0.05,
        "marrow": 0.55,
        "csf": 0.12,
        "gm": 0.45,
        "wm": 0.64,
        "deep": 0.57,
        "oedema": 0.48,
        "solid": 0.86,
        "rim": 0.96,
        "necrosis": 0.16,
    },
    "t2": {  # T2: bright CSF, GM brighter than WM, bright oedema and necrosis
        "fat": 0.62,
        "bone": 0.05,
        "marrow": 0.38,
        "csf": 1.0,
        "gm": 0.56,
        "wm": 0.38,
        "deep": 0.46,
        "oedema": 0.8,
        "solid": 0.66,
        "rim": 0.52,
        "necrosis": 0.92,
    },
    "flair": {  # FLAIR: T2-like tissue contrast but suppressed (dark) free water in CSF
        "fat": 0.7,
        "bone": 0.05,
        "marrow": 0.4,
        "csf": 0.1,
        "gm": 0.56,
        "wm": 0.42,
        "deep": 0.5,
        "oedema": 0.88,
        "solid": 0.74,
        "rim": 0.72,
        "necrosis": 0.35,
    },
}
# Drawn with equal shares: with fewer T1 slices a small classifier learns the T1 lesion look
# (enhancing rim, darker oedema) much more slowly than the bright T2/FLAIR oedema.
_CONTRAST_NAMES = ("t1", "t2", "flair")


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """Soft step 0 -> 1 across `x` = 0 over `width` (an area-style anti-aliased edge)."""
    return np.clip(0.5 + x / width, 0.0, 1.0)


def _fourier_field(
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    num_modes: int,
    k_u: tuple[float, float],
    k_v: tuple[float, float],
    with_grad: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Sum of random plane waves in (u, v), normalised to unit RMS; optionally its gradient.

    Wave numbers are drawn uniformly with |k_u| in `k_u` (random sign) and k_v in +-`k_v`.
    Evaluated analytically, so the field does not depend on the pixel grid.
    """
    ku = rng.uniform(*k_u, size=num_modes) * rng.choice([-1.0, 1.0], size=num_modes)
    kv = rng.uniform(k_v[0], k_v[1], size=num_modes) * rng.choice([-1.0, 1.0], size=num_modes)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=num_modes)
    amp = rng.uniform(0.5, 1.0, size=num_modes)
    amp = amp / np.sqrt(0.5 * np.sum(amp**2))  # unit RMS for independent phases
    field = np.zeros_like(u)
    du = np.zeros_like(u) if with_grad else None
    dv = np.zeros_like(u) if with_grad else None
    # Python-float parameters keep float32 grids in float32 (float32 cos is much faster).
    params = zip(amp.tolist(), ku.tolist(), kv.tolist(), phase.tolist(), strict=True)
    for a, ka, kb, ph in params:
        arg = ka * u + kb * v + ph
        field += a * np.cos(arg)
        if with_grad:
            s = a * np.sin(arg)
            du -= ka * s
            dv -= kb * s
    return field, du, dv


def _ellipse(
    x: np.ndarray,
    y: np.ndarray,
    cx: float,
    cy: float,
    ax: float,
    ay: float,
    angle: float,
    power: float = 2.0,
) -> np.ndarray:
    """Normalised radius of a rotated super-ellipse: < 1 inside, 1 on the outline."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    dx, dy = x - cx, y - cy
    xr = (c * dx + s * dy) / ax
    yr = (-s * dx + c * dy) / ay
    return (np.abs(xr) ** power + np.abs(yr) ** power) ** (1.0 / power)


def _contrast(rng: np.random.Generator) -> dict[str, float]:
    """Draws one subject's tissue intensities: a weighting family plus per-tissue jitter."""
    name = _CONTRAST_NAMES[rng.integers(3)]
    other = _CONTRAST_NAMES[rng.integers(3)]
    blend = rng.uniform(0.0, 0.25)  # a little of another weighting (sequence parameters vary)
    base, alt = _CONTRASTS[name], _CONTRASTS[other]
    out = {}
    for key in base:
        val = (1.0 - blend) * base[key] + blend * alt[key]
        out[key] = float(np.clip(val * rng.normal(1.0, 0.08) + rng.normal(0.0, 0.02), 0.02, 1.2))
    # Keep the grey/white contrast visible whatever the jitter did.
    if abs(out["gm"] - out["wm"]) < 0.06:
        sign = 1.0 if base["gm"] >= base["wm"] else -1.0
        out["gm"] = out["wm"] + sign * 0.06
    return out


@dataclasses.dataclass(frozen=True)
class _Frame:
    """Pixel grid and the subject's head frame (anterior-posterior half-length 1, y down)."""

    gx: np.ndarray  # (H, W) image x in [-1, 1] across the field of view
    gy: np.ndarray  # (H, W) image y, pointing down (anterior at the top, as displayed)
    x0: np.ndarray  # (H, W) head-frame x before any mass effect
    y0: np.ndarray  # (H, W) head-frame y before any mass effect
    px: float  # one pixel in head units: the edge anti-aliasing width


@dataclasses.dataclass(frozen=True)
class _HeadShape:
    """Head outline: ellipse, wider at the back (egg shape), with a few smooth harmonics."""

    aspect: float  # width / length
    egg: float
    harm_amp: list[float]  # amplitudes of the harmonics m = 2..5
    harm_ph: list[float]

    def radius(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised head radius (1 on the scalp surface) and radial depth from the scalp."""
        ax = self.aspect * (1.0 + self.egg * y)
        r = np.sqrt((x / ax) ** 2 + y**2)
        psi = np.arctan2(np.abs(x), -y)  # angle from anterior, mirrored: 0..pi
        mod = 1.0
        for m in range(4):
            mod = mod + self.harm_amp[m] * np.cos((m + 2) * psi + self.harm_ph[m])
        rho = r / mod
        dist = np.hypot(x, y)
        depth = dist * (1.0 / np.maximum(rho, 1e-6) - 1.0)  # along the ray, in head units
        return rho, depth


@dataclasses.dataclass(frozen=True)
class _Layers:
    """Thicknesses (head units) of the layers between the scalp surface and the brain."""

    scalp: float
    bone: float
    csf: float  # subarachnoid space; wider in "older" subjects

    @property
    def brain_surf(self) -> float:
        """Depth of the brain surface below the scalp surface."""
        return self.scalp + self.bone + self.csf


def _frame(rng: np.random.Generator, size: int) -> _Frame:
    """Draws the subject pose (head size, tilt, offset) and maps the pixel grid into it."""
    # Everything is float32 (fast transcendental functions); scalars stay Python floats so
    # NumPy's promotion rules keep it that way.
    t = ((np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0).astype(np.float32)
    gy, gx = np.meshgrid(t, t, indexing="ij")  # (H, W) each
    scale = rng.uniform(0.74, 0.93)  # head AP half-length as a fraction of the half FOV
    tilt = rng.normal(0.0, np.deg2rad(7.0))
    cx, cy = rng.normal(0.0, 0.03, size=2).tolist()
    cos_t, sin_t = float(np.cos(tilt)), float(np.sin(tilt))
    x0 = (cos_t * (gx - cx) + sin_t * (gy - cy)) / scale
    y0 = (-sin_t * (gx - cx) + cos_t * (gy - cy)) / scale
    return _Frame(gx=gx, gy=gy, x0=x0, y0=y0, px=2.0 / (size * scale))


def _head_shape(rng: np.random.Generator) -> _HeadShape:
    """Draws the head outline's aspect, egg shape and harmonics."""
    aspect = rng.uniform(0.74, 0.86)
    egg = rng.uniform(0.0, 0.12)
    harm_amp = (rng.normal(0.0, 0.012, size=4) / np.arange(1, 5)).tolist()  # m = 2..5
    harm_ph = rng.uniform(0.0, 2.0 * np.pi, size=4).tolist()
    return _HeadShape(aspect=aspect, egg=egg, harm_amp=harm_amp, harm_ph=harm_ph)


def _layers(rng: np.random.Generator) -> _Layers:
    """Draws the scalp, skull and CSF-layer thicknesses."""
    t_scalp = rng.uniform(0.035, 0.06)
    t_bone = rng.uniform(0.03, 0.05)
    t_csf = rng.uniform(0.008, 0.022)
    return _Layers(scalp=t_scalp, bone=t_bone, csf=t_csf)


def _lesion_centre(rng: np.random.Generator, aspect: float) -> tuple[float, float]:
    """Uniform position inside the inner brain (rejection sampling on an ellipse)."""
    for _ in range(100):
        lx, ly = rng.uniform(-0.62, 0.62), rng.uniform(-0.72, 0.72)
        if (lx / (aspect * 0.8)) ** 2 + (ly / 0.8) ** 2 < 0.78**2:
            break
    return lx, ly


def _lesion(rng: np.random.Generator, aspect: float, n_les: int) -> dict:
    """Draws one lesion's centre, radius, outline, composition, oedema and mass effect."""
    lx, ly = _lesion_centre(rng, aspect)
    radius = float(np.exp(rng.uniform(np.log(0.1), np.log(0.26))))
    if n_les == 2:
        radius *= 0.8
    return {
        "c": (lx, ly),
        "r": radius,
        "harm": (rng.normal(0.0, 0.09, size=4) / np.sqrt(np.arange(2, 6))).tolist(),
        "harm_ph": rng.uniform(0.0, 2.0 * np.pi, size=4).tolist(),
        "necrosis": rng.uniform(0.0, 0.6),  # core fraction that is necrotic
        "rim_w": rng.uniform(0.18, 0.35),  # rim thickness as a fraction of radius
        # Oedema extent as a multiple of the radius; small lesions (metastases) often carry
        # disproportionate oedema, hence the additive part.
        "oedema": rng.uniform(1.4, 2.4) + rng.uniform(0.04, 0.1) / radius,
        "oedema_amp": rng.uniform(0.7, 1.0),
        "push": rng.uniform(0.3, 0.6),  # mass effect strength
    }


def _lesions(rng: np.random.Generator, label: int, aspect: float) -> list[dict]:
    """No lesion for a normal slice; one (75 %) or two, each a bit smaller, for a tumour."""
    if label != 1:
        return []
    n_les = 1 if rng.random() < 0.75 else 2
    return [_lesion(rng, aspect, n_les) for _ in range(n_les)]


def _mass_effect(
    frame: _Frame, depth0: np.ndarray, brain_surf: float, lesions: list[dict]
) -> tuple[np.ndarray, np.ndarray]:
    """Warped head-frame coordinates (x, y) at which the brain's inner structures are sampled.

    Inverse radial warp q = p - (p - c) g(|p - c|), fading to zero near the skull so the head
    outline stays put. A Gaussian g with peak `push` < 1 keeps r (1 - g(r)) increasing, so the
    warp folds nothing over.
    """
    x0, y0 = frame.x0, frame.y0
    x, y = x0.copy(), y0.copy()
    fade = np.clip((depth0 - brain_surf) / 0.12, 0.0, 1.0)
    for les in lesions:
        lx, ly = les["c"]
        dx, dy = x0 - lx, y0 - ly
        r2 = dx**2 + dy**2
        g = les["push"] * np.exp(-r2 / (2.0 * (1.6 * les["r"]) ** 2)) * fade
        x = x - dx * g
        y = y - dy * g
    return x, y


def _sulci(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance to the nearest sulcus: the zero set of a band-limited field in (arc, depth).

    Wave vectors run mostly along the surface, so sulci run radially inwards; `d` is the depth
    below the brain surface.
    """
    psi = np.arctan2(np.abs(x), -y)
    arc = psi * 0.75  # ~arc length along the brain surface (mean radius ~0.75 head units)
    wav = rng.uniform(20.0, 28.0)
    k_s, k_d = (0.6 * wav, 1.3 * wav), (0.0, 1.1 * wav)
    n_sym, gs_sym, gd_sym = _fourier_field(rng, arc, d, 16, k_s, k_d, with_grad=True)
    # A small asymmetric part (sampled with signed x) keeps the hemispheres from being mirrors.
    psi_s = np.arctan2(x, -y)
    n_asym, gs_asym, gd_asym = _fourier_field(rng, psi_s * 0.75, d, 10, k_s, k_d, with_grad=True)
    asym = rng.uniform(0.2, 0.45)
    n = n_sym + asym * n_asym
    grad = np.hypot(gs_sym + asym * gs_asym, gd_sym + asym * gd_asym) + 1e-3
    # Sulci reach different depths: a field along the surface at about the sulcal spacing.
    depth_var = _fourier_field(rng, arc, 0.0 * d, 6, (0.2 * wav, 0.6 * wav), (0.0, 0.0))[0]
    sulcus_depth = rng.uniform(0.11, 0.18) * np.clip(1.0 + 0.45 * depth_var, 0.35, 2.0)
    d_line = np.abs(n) / grad  # ~distance to the nearest sulcus axis
    return np.hypot(d_line, np.maximum(d - sulcus_depth, 0.0))  # rounded fundus


def _fissure(rng: np.random.Generator, ax_: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance to the interhemispheric fissure (`ax_` = |x|).

    A midline cleft from the frontal pole back to the genu and from the occipital pole forward
    to the splenium of the corpus callosum.
    """
    y_genu = rng.uniform(-0.38, -0.25)
    y_splen = rng.uniform(0.3, 0.45)
    d_fiss = np.minimum(
        np.hypot(ax_, np.maximum(y - y_genu, 0.0)),
        np.hypot(ax_, np.maximum(y_splen - y, 0.0)),
    )
    return d_fiss + 0.02 * np.abs(_fourier_field(rng, y, 0.0 * y, 3, (5.0, 12.0), (0, 0))[0])


def _cortex(
    rng: np.random.Generator, x: np.ndarray, y: np.ndarray, d: np.ndarray, px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Grey-matter and CSF fractions of the folded cortex, sulci and fissure (warped frame)."""
    d_sulc = _sulci(rng, x, y, d)
    d_fiss = _fissure(rng, np.abs(x), y)
    d_csf = np.minimum(np.minimum(np.maximum(d, 0.0), d_sulc), d_fiss)
    gm_thick = rng.uniform(0.036, 0.05)
    sulc_w = rng.uniform(0.003, 0.009)  # half-width of the CSF in each sulcus
    sulc_w = sulc_w * (1.0 + 1.5 * np.exp(-np.maximum(d, 0.0) / 0.02))  # sulci open at the top
    gm_frac = _ramp(gm_thick - d_csf, px)  # 1 in cortex, 0 in white matter
    csf_frac = np.maximum(_ramp(sulc_w - np.minimum(d_sulc, d_fiss), px), _ramp(-d, px))
    return gm_frac, csf_frac


def _deep_nuclei(
    rng: np.random.Generator, ax_: np.ndarray, y: np.ndarray, level: float, px: float
) -> np.ndarray:
    """Fraction of deep grey (caudate, putamen, thalamus); fades out at higher slice levels."""
    nuc_vis = min(max(1.2 - 1.4 * level, 0.0), 1.0)
    if nuc_vis <= 0.0:
        return np.zeros_like(ax_)
    sx = rng.uniform(0.9, 1.1)
    caudate = _ellipse(ax_, y, 0.13 * sx, -0.2, 0.06, 0.1, 0.5)
    putamen = _ellipse(ax_, y, 0.29 * sx, -0.02, 0.055, 0.16, -0.2)
    thalamus = _ellipse(ax_, y, 0.09 * sx, 0.13, 0.075, 0.11, 0.15)
    nuc = np.minimum(np.minimum(caudate, putamen), thalamus)
    return nuc_vis * _ramp(1.0 - nuc, 4.0 * px / 0.1)


def _ventricles(
    rng: np.random.Generator, ax_: np.ndarray, y: np.ndarray, level: float, px: float
) -> np.ndarray:
    """Fraction of lateral ventricle: the axial "butterfly".

    Two tubes around a centre line x_c(t), t in [-1, 1] front to back, that bows outwards at
    both ends (frontal horns and atria).
    """
    vent_size = float(np.exp(rng.normal(0.0, 0.3)))  # ventricle width factor (age, atrophy)
    v_gap = rng.uniform(0.01, 0.025)  # septum pellucidum half-thickness
    v_front, v_back = -0.34 + 0.06 * level, 0.4 - 0.12 * level
    tv = (y - 0.5 * (v_front + v_back)) / (0.5 * (v_back - v_front))  # (H, W) in [-1, 1]
    w0 = 0.034 * vent_size
    bow_f = rng.uniform(0.04, 0.1) * (1.0 - 0.5 * level)
    bow_b = rng.uniform(0.12, 0.24) * (1.0 - 0.5 * level)
    centre = (
        v_gap
        + w0
        + bow_f * np.maximum(-tv - 0.1, 0.0) ** 2
        + bow_b * np.maximum(tv - 0.05, 0.0) ** 2
    )
    width = w0 * (
        0.75
        + 0.8 * np.exp(-(((tv + 0.6) / 0.3) ** 2))  # frontal horn
        + 0.6 * np.exp(-(((tv - 0.55) / 0.28) ** 2))  # atrium
    )
    width = width * np.clip(1.0 - 0.9 * np.maximum(tv - 0.7, 0.0) / 0.3, 0.1, 1.0)  # occipital tip
    f_vent = ((ax_ - centre) / width) ** 2 + tv**6
    return _ramp(1.0 - f_vent, 2.5 * px / w0)


def _paint_head(
    tis: dict[str, float], depth0: np.ndarray, layers: _Layers, brain: np.ndarray, px: float
) -> np.ndarray:
    """Background, scalp, bone with its diploe line, then the brain tissue inside the skull."""
    img = np.zeros_like(depth0)  # (H, W) background
    head = _ramp(depth0, px)
    img = img + head * tis["fat"]
    bone = _ramp(depth0 - layers.scalp, px)
    img = img + bone * (tis["bone"] - img)
    marrow = _ramp(0.25 * layers.bone - np.abs(depth0 - layers.scalp - 0.5 * layers.bone), px)
    img = img + 0.6 * marrow * (tis["marrow"] - img)
    intracranial = _ramp(depth0 - layers.scalp - layers.bone, px)
    return img + intracranial * (brain - img)


def _brain_tissue(
    tis: dict[str, float],
    wm_texture: np.ndarray,
    gm_frac: np.ndarray,
    csf_frac: np.ndarray,
    deep: np.ndarray,
    vent: np.ndarray,
) -> np.ndarray:
    """Brain intensities: textured white matter, cortex, deep grey, then CSF (painter's order)."""
    brain = tis["gm"] * gm_frac + tis["wm"] * wm_texture * (1.0 - gm_frac)
    brain = brain + deep * (tis["deep"] - brain)
    brain = brain + csf_frac * (tis["csf"] - brain)
    return brain + vent * (tis["csf"] - brain)


def _lesion_radius(les: dict, x0: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """Normalised radius of a lesion's irregular outline: < 1 inside the tumour."""
    lx, ly = les["c"]
    dx, dy = x0 - lx, y0 - ly
    r = np.hypot(dx, dy)
    ang = np.arctan2(dy, dx)
    shape = 1.0
    for m in range(4):
        shape = shape + les["harm"][m] * np.cos((m + 2) * ang + les["harm_ph"][m])
    return r / (les["r"] * shape)


def _paint_lesion(
    rng: np.random.Generator,
    img: np.ndarray,
    les: dict,
    frame: _Frame,
    tis: dict[str, float],
    wm_frac: np.ndarray,
    brain_mask: np.ndarray,
) -> np.ndarray:
    """Paints one lesion in the unwarped frame (the tissue it displaced was pushed outward)."""
    x0, y0 = frame.x0, frame.y0
    q = _lesion_radius(les, x0, y0)
    edge = frame.px / les["r"]

    # Oedema: a fuzzy, finger-like halo that prefers white matter.
    fingers = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 6, (1.5, 3.5), (0.0, 3.5))[0]
    qe = q / (les["oedema"] * (1.0 + 0.18 * fingers))
    oed = np.clip((1.0 - qe) / 0.35, 0.0, 1.0) ** 0.7
    oed = les["oedema_amp"] * oed * (0.35 + 0.65 * wm_frac) * brain_mask
    img = img + oed * (tis["oedema"] - img)

    # Core: viable tumour with a noisy texture, necrotic patches inside, enhancing rim.
    tex = _fourier_field(rng, x0 / les["r"], y0 / les["r"], 12, (4.0, 9.0), (0.0, 9.0))[0]
    necro = _ramp(les["necrosis"] * (1.0 - les["rim_w"]) - q + 0.08 * tex, 2.0 * edge)
    core_val = tis["solid"] * (1.0 + 0.12 * tex)
    core_val = core_val + necro * (tis["necrosis"] * (1.0 + 0.08 * tex) - core_val)
    rim = _ramp(q - (1.0 - les["rim_w"]), 2.0 * edge) * (1.0 - necro)
    rim_strength = rng.uniform(0.7, 1.0)
    core_val = core_val + rim_strength * rim * (tis["rim"] - core_val)
    inside = _ramp(1.0 - q, 1.5 * edge) * brain_mask
    return img + inside * (core_val - img)


def _acquire(rng: np.random.Generator, img: np.ndarray, frame: _Frame, size: int) -> np.ndarray:
    """Point-spread blur, bias field, Rician noise, then min-max normalisation to [0, 1]."""
    gx, gy = frame.gx, frame.gy
    img = ndimage.gaussian_filter(img, sigma=0.6 * size / 256.0 + 0.25)
    b = rng.normal(0.0, 0.12, size=5).tolist()
    bias = 1.0 + b[0] * gx + b[1] * gy + 0.5 * b[2] * gx * gy + 0.5 * b[3] * gx**2
    bias = bias + 0.5 * b[4] * gy**2
    img = img * np.clip(bias, 0.5, 1.5)
    # Coarser pixels average more signal, so noise per pixel shrinks (gently) with size.
    sigma = rng.uniform(0.01, 0.04) * min(1.0, size / 256.0) ** 0.5
    noise_re = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    noise_im = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    img = np.hypot(img + noise_re, noise_im)
    lo, hi = img.min(), img.max()
    img = (img - lo) / (hi - lo)  # float32: the max pixel maps to exactly 1, the min to 0
    assert img.dtype == np.float32, img.dtype
    return img


def generate_slice(rng: np.random.Generator, label: int, size: int = 256) -> np.ndarray:
    """Draws one axial brain-MRI-like slice.

    The steps draw from `rng` in a fixed order (pose, head outline, layers, lesions, cortex,
    fissure, deep grey, ventricles, contrast, lesion textures, acquisition); reordering them
    changes the output and so requires bumping GENERATOR_VERSION.

    Args:
      rng: source of all randomness for this slice (seed it per image for reproducibility).
      label: 0 for a normal slice, 1 for a slice with one or two tumours.
      size: output height and width in pixels (>= 32); all geometry scales with it.

    Returns:
      (size, size) float32 image, min-max normalised so its minimum is 0 and maximum is 1.
    """
    if label not in (0, 1):
        raise ValueError(f"phantom label must be 0 (normal) or 1 (tumour), got {label!r}")
    if size < 32:
        raise ValueError(f"phantom size must be >= 32 pixels, got {size}")
    frame = _frame(rng, size)
    head = _head_shape(rng)
    _, depth0 = head.radius(frame.x0, frame.y0)  # depth below the scalp (negative outside)
    layers = _layers(rng)
    lesions = _lesions(rng, label, head.aspect)  # before the anatomy: their mass effect warps it
    x, y = _mass_effect(frame, depth0, layers.brain_surf, lesions)
    d = head.radius(x, y)[1] - layers.brain_surf  # depth below the brain surface, warped frame
    gm_frac, csf_frac = _cortex(rng, x, y, d, frame.px)
    level = rng.uniform(0.0, 1.0)  # 0: through the basal ganglia, 1: above them (bodies only)
    deep = _deep_nuclei(rng, np.abs(x), y, level, frame.px)
    vent = _ventricles(rng, np.abs(x), y, level, frame.px)
    tis = _contrast(rng)  # tissue -> intensity for this subject
    wm_texture = 1.0 + 0.04 * _fourier_field(rng, x, y, 10, (10.0, 25.0), (0.0, 25.0))[0]
    brain = _brain_tissue(tis, wm_texture, gm_frac, csf_frac, deep, vent)
    img = _paint_head(tis, depth0, layers, brain, frame.px)
    wm_frac = (1.0 - gm_frac) * (1.0 - csf_frac) * (1.0 - vent) * (d > 0)
    brain_mask = _ramp(depth0 - layers.brain_surf, frame.px)
    for les in lesions:
        img = _paint_lesion(rng, img, les, frame, tis, wm_frac, brain_mask)
    return _acquire(rng, img, frame, size)


def generate(
    num_normal: int = 170, num_tumour: int = 230, size: int = 256, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generates the built-in phantom dataset (paper defaults: 170 normal, 230 tumour).

    The k-th image of class c comes from `np.random.default_rng([seed, c, k])`, so it does not
    depend on how many images are requested; the classes are interleaved by a permutation from
    `np.random.default_rng([seed, 2, num_normal, num_tumour])` that keeps each class's order
    (the j-th normal image in the output is normal image j). Same arguments -> same bytes.

    Args:
      num_normal: number of normal slices (label 0).
      num_tumour: number of tumour slices (label 1).
      size: height and width in pixels (>= 32).
      seed: non-negative generator seed.

    Returns:
      images: (N, size, size, 1) float32 in [0, 1], each min-max normalised.
      labels: (N,) int32, 0 = normal, 1 = tumour.
    """
    if num_normal < 0 or num_tumour < 0:
        raise ValueError(
            f"phantom counts must be >= 0, got num_normal={num_normal}, num_tumour={num_tumour}"
        )
    if seed < 0:
        raise ValueError(f"phantom seed must be >= 0, got {seed}")
    labels = np.concatenate([np.zeros(num_normal, np.int32), np.ones(num_tumour, np.int32)])  # (N,)
    labels = np.random.default_rng([seed, 2, num_normal, num_tumour]).permutation(labels)
    images = np.empty((labels.shape[0], size, size, 1), np.float32)  # (N, H, W, 1)
    counts = [0, 0]
    for i, lab in enumerate(labels):
        rng = np.random.default_rng([seed, int(lab), counts[lab]])
        counts[lab] += 1
        images[i, :, :, 0] = generate_slice(rng, int(lab), size)
    return images, labels
