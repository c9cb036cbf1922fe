"""Sampler settings: `SamplerSpec` (one setting) and the project's only definition of the defaults.

`SamplerSpec`'s field defaults are the default sampler of an eps-prediction run;
`default_sampler_spec(prediction, schedule)` is a run's default (read by `sample.py`, the
training grids of `configs/ldm.py` and the report through `LDMPipeline.default_spec`);
`spec_with` applies the settings a user gave on top of it. No network or run is loaded here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from jax_mri_ldm import sampling
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.schedules import Schedule, schedule_from_config

# Steps per sampler when a setting gives none: the paper's full chain for DDPM (None = all T of
# the schedule), the usual few-step settings for the fast samplers.
DEFAULT_STEPS: dict[str, int | None] = {"ddpm": None, "ddim": 50, "dpmpp_2m": 25}
# Timestep spacing per sampler: DPM-Solver++ needs steps uniform in log-SNR at few steps (with
# time-uniform steps on the cosine schedule its last jump overshoots; see sampling.py).
DEFAULT_SPACING: dict[str, str] = {"ddpm": "uniform", "ddim": "uniform", "dpmpp_2m": "logSNR"}
_PRETTY = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp_2m": "DPM-Solver++(2M)"}


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One sampler setting; the field defaults are the default sampler of an eps-prediction run.

    That default is DDIM-50 with eta = 1 (fresh noise at every step) and guidance w = 3. Why
    eta = 1: with eps-prediction the deterministic few-step samplers (DDIM eta = 0,
    DPM-Solver++) keep every epsilon error made at the noisiest steps in the sample, which
    inflates the latent spread; the fresh noise of eta = 1 washes those errors out, like DDPM at
    a fraction of the cost (docs/results.md has the measurements). A run's own default is
    `default_sampler_spec` (by what its network predicts: v-prediction runs use the
    deterministic DPM-Solver++ 10 with epsilon scaling 0.99).

    Attributes:
      sampler: 'ddpm' | 'ddim' | 'dpmpp_2m'.
      steps: network calls; None = the sampler's default (`DEFAULT_STEPS`; DDPM: all T).
      eta: DDIM stochasticity (0 deterministic, 1 ancestral); the other samplers ignore it.
      guidance_scale: classifier-free guidance w (1 = plain conditional, 0 = unconditional).
      spacing: timestep spacing (see `sampling.timesteps_for`); None = `DEFAULT_SPACING`.
      use_ema: sample with the EMA weights (the paper's choice) instead of the raw ones.
      eps_scale: epsilon scaling (Ning et al. 2024): every step uses eps / eps_scale; 1 = off.
      guidance_interval: None (guide every step) or (lo, hi): guide with w only at steps whose
        noise level sigma_t lies in (lo, hi], plain conditional elsewhere (`sampling`'s
        docstring; Kynkäänniemi et al. 2024). An empty sequence means None.
    """

    sampler: str = "ddim"
    steps: int | None = None
    eta: float = 1.0
    guidance_scale: float = 3.0
    spacing: str | None = None
    use_ema: bool = True
    eps_scale: float = 1.0
    guidance_interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        """Stores the interval as hashable floats (flags and configs give lists or strings)."""
        interval = self.guidance_interval
        if isinstance(interval, list | tuple | str) and len(interval) == 0:
            interval = None
        try:
            interval = sampling.normalize_interval(interval)
        except ValueError as e:
            raise UserError(
                f"--guidance_interval={self.guidance_interval}: {e}; give two noise levels "
                "lo,hi with 0 <= lo < hi (hi may be inf), e.g. --guidance_interval=0.5,30."
            ) from e
        object.__setattr__(self, "guidance_interval", interval)

    def validate(self) -> SamplerSpec:
        """Returns self, or raises ValueError naming the bad `sample.py` flag."""
        if self.sampler not in sampling.SAMPLERS:
            raise UserError(
                f"--sampler={self.sampler} is not one of {', '.join(sampling.SAMPLERS)}."
            )
        if self.steps is not None and self.steps <= 0:
            raise UserError(f"--steps={self.steps} must be positive.")
        if self.eta < 0:
            raise UserError(f"--eta={self.eta} must be >= 0 (0: deterministic DDIM, 1: ancestral).")
        if not self.eps_scale > 0:
            raise UserError(f"--eps_scale={self.eps_scale} must be > 0 (1: off).")
        if self.spacing is not None and self.spacing not in sampling.SPACINGS:
            raise UserError(
                f"--spacing={self.spacing} is not one of {', '.join(sampling.SPACINGS)}."
            )
        return self

    def resolved(self, num_timesteps: int) -> SamplerSpec:
        """The same setting with every default filled in: steps, spacing, eta (0 unless DDIM)."""
        self.validate()
        steps = self.steps if self.steps is not None else DEFAULT_STEPS[self.sampler]
        return dataclasses.replace(
            self,
            steps=int(num_timesteps if steps is None else steps),
            spacing=self.spacing or DEFAULT_SPACING[self.sampler],
            eta=float(self.eta) if self.sampler == "ddim" else 0.0,
            guidance_scale=float(self.guidance_scale),
            eps_scale=float(self.eps_scale),
        )

    def name(self, num_timesteps: int) -> str:
        """Human label, e.g. 'DPM-Solver++(2M) 25' or 'DDIM 50 η=1'."""
        r = self.resolved(num_timesteps)
        eta = f" η={r.eta:g}" if r.sampler == "ddim" else ""
        scale = f" ε/{r.eps_scale:g}" if r.eps_scale != 1.0 else ""
        name = f"{_PRETTY[r.sampler]} {r.steps}{eta}{scale}"
        if r.guidance_interval is None:
            return name
        lo, hi = r.guidance_interval
        return f"{name} guided σ∈({lo:g}, {hi:g}]"


# Prediction targets whose runs sample with `FAST_DETERMINISTIC` (where their schedule allows
# its epsilon scaling): it matched DDPM-1000 at two seeds on each data set (docs/results.md).
DETERMINISTIC_DEFAULT_PREDICTIONS: tuple[str, ...] = ("v",)
# The fast deterministic default: DPM-Solver++(2M) at 10 steps (logSNR spacing) with epsilon
# scaling 0.99, guidance as SamplerSpec (`sample.py --sampler=dpmpp_2m --steps=10
# --eps_scale=0.99`).
FAST_DETERMINISTIC = {"sampler": "dpmpp_2m", "steps": 10, "eta": 0.0, "eps_scale": 0.99}


def eps_scale_fits(spec: SamplerSpec, schedule: Schedule) -> bool:
    """True when `spec`'s epsilon scaling stays bounded on `schedule` (`check_eps_scale`)."""
    T = schedule.num_timesteps
    try:  # more steps than T also do not fit
        r = spec.resolved(T)
        ts = sampling.timesteps_for(r.sampler, r.steps, T, r.spacing, schedule=schedule)
        sampling.check_eps_scale(schedule, ts, r.eps_scale)
    except ValueError:
        return False
    return True


def default_sampler_spec(prediction: str, schedule: Schedule) -> SamplerSpec:
    """The default sampler of a run whose network predicts `prediction` (its config's
    `diffusion.prediction`) on `schedule`.

    v: DPM-Solver++(2M) 10 with eps / 0.99 (`FAST_DETERMINISTIC`), deterministic and 4x faster
    than DDIM-50 eta = 1; with as many DDPM images as its own it falls inside DDPM-1000's
    intervals (or beyond them on the better side) at two seeds on both data sets, where the
    unscaled one misses (docs/results.md). On a schedule where that scaling would be amplified
    (few timesteps, zero terminal SNR; `eps_scale_fits`) the run falls back to `SamplerSpec()`.
    eps and x0: `SamplerSpec()`, DDIM-50 eta = 1: with eps-prediction the deterministic
    samplers carry the noisiest steps' epsilon errors into the sample (`SamplerSpec`).
    """
    if prediction in DETERMINISTIC_DEFAULT_PREDICTIONS:
        fast = SamplerSpec(**FAST_DETERMINISTIC)
        if eps_scale_fits(fast, schedule):
            return fast
    return SamplerSpec()


def _grid(spec: SamplerSpec) -> tuple:
    """(sampler, steps, spacing) with the sampler's defaults filled in (DDPM: always all T)."""
    steps = DEFAULT_STEPS[spec.sampler] if spec.steps is None else spec.steps
    steps = None if spec.sampler == "ddpm" else steps
    return spec.sampler, steps, spec.spacing or DEFAULT_SPACING[spec.sampler]


def spec_with(base: SamplerSpec, overrides: dict[str, Any]) -> SamplerSpec:
    """`base` with the fields of `overrides` whose value is not None (flags left unset keep
    the base's), validated. A sampler change drops the base's steps, spacing and eta (they
    belong to its sampler; eta goes back to `SamplerSpec`'s); a change of sampler, steps or
    spacing drops its epsilon scaling unless `eps_scale` is given (it was measured at those
    steps); DDPM drops any steps (all T)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    scaled_grid = _grid(base)
    if given.get("sampler", base.sampler) != base.sampler:
        base = dataclasses.replace(base, steps=None, spacing=None, eta=SamplerSpec.eta)
    spec = dataclasses.replace(base, **given)
    if "eps_scale" not in given and _grid(spec) != scaled_grid:
        spec = dataclasses.replace(spec, eps_scale=1.0)
    return (dataclasses.replace(spec, steps=None) if spec.sampler == "ddpm" else spec).validate()


def grid_sampler_spec(config: ml_collections.ConfigDict) -> SamplerSpec:
    """The setting of an LDM config's training grids: the run's default sampler
    (`default_sampler_spec`) with `config.train.eval_{sampler,sample_steps,eta,guidance_scale}`
    where they are set."""
    t = config.train
    default = default_sampler_spec(
        str(config.diffusion.prediction), schedule_from_config(config.diffusion)
    )
    return spec_with(
        default,
        {
            "sampler": t.eval_sampler,
            "steps": t.eval_sample_steps,
            "eta": t.eval_eta,
            "guidance_scale": t.eval_guidance_scale,
        },
    )
