"""The report's opening: the commands that reproduce it and a summary of the run and machine."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from jax_mri_ldm.evaluation import runinfo
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, table
from jax_mri_ldm.evaluation.sections import common

HEADERS = ("## Commands", "## Run summary")


def _commands(ctx: Context, command: str | None) -> dict[str, Any]:
    src = ctx.vae_workdir
    vae_cfg_path = os.path.join(src, "config.json")
    vae_cfg = None
    if os.path.exists(vae_cfg_path):
        with open(vae_cfg_path) as fh:
            vae_cfg = json.load(fh)
    eval_cmd = runinfo.evaluate_command(ctx.workdir, ctx.out_dir, ctx.cfg)
    spec, T = common.main_spec(ctx, ctx.shared["main_w"]), ctx.run.schedule.num_timesteps
    n = ctx.cfg.num_synthetic_per_class * len(ctx.class_names)
    out = {
        "evaluate": command or eval_cmd,
        "evaluate_equivalent": eval_cmd,
        "train_vae": runinfo.train_command("vae", vae_cfg, src) if vae_cfg else None,
        "train_ldm": runinfo.train_command("ldm", ctx.run.config.to_dict(), ctx.workdir),
        "sample": runinfo.sample_command(ctx.workdir, spec, T, n),  # the main set's setting
        "sample_from_report": runinfo.report_sample_command(ctx.workdir, ctx.out_dir, n),
    }
    if out["train_vae"] is None:
        ctx.nulls.null("commands.train_vae", f"{vae_cfg_path} not found")
    return out


def _run(ctx: Context) -> dict[str, Any]:
    run, cfg = ctx.run, ctx.run.config.to_dict()
    spe = int(run.meta.get("steps_per_epoch", 0)) or None
    data = run.meta["vae"]["data"]
    out = {
        "ldm_workdir": os.path.abspath(ctx.workdir),
        "vae_workdir": ctx.vae_workdir,
        "checkpoint_step": run.step,
        "config_fingerprint": run.config_fingerprint,  # with the step: which run this report is of
        "epochs_trained": run.step / spe if spe else None,
        "final": run.final,
        "params": "EMA" if ctx.cfg.use_ema else "raw",
        "unet_parameters": int(sum(np.size(x) for x in jax.tree.leaves(run.ema_params))),
        "class_names": list(ctx.class_names),
        "ldm_config": {
            "preset": cfg.get("preset"),
            "model": cfg["model"],
            "diffusion": cfg["diffusion"],
            "optim": {k: cfg["optim"][k] for k in ("learning_rate", "ema_decay", "schedule")},
            "train": {k: cfg["train"][k] for k in ("batch_size", "num_epochs", "num_steps")},
        },
        "vae": {
            "model": run.meta["vae"]["model"],
            "latent_shape": list(run.latent_shape),
            "latent_scale_factor": run.latent_scale_factor,
        },
        "data": {
            "source": data.get("source"),
            "path": data.get("path") or "(built-in phantom set)",
            "image_size": run.image_size,
            "fingerprint": ctx.ds.fingerprint,
            "counts": ctx.ds.counts(),
            "split": {k: getattr(ctx, k).counts() for k in ("train", "val", "test")},
        },
        "extra_train": _extra(ctx),
    }
    if out["epochs_trained"] is None:
        ctx.nulls.null("run.epochs_trained", "steps_per_epoch missing from the checkpoint metadata")
    return out


def _extra(ctx: Context) -> dict[str, Any] | None:
    """What the run added to the generator's training set (config.extra_train), or None."""
    rec = ctx.run.meta.get("extra_train") or {}
    if not rec:
        ctx.nulls.null(
            "run.extra_train",
            "no extra training images (config.extra_train.path, .builtin_per_class)",
        )
        return None
    if rec.get("domain_floor") is None:
        why = "extra_train.domain_quantile <= 0 (off)"
        if rec.get("builtin_per_class"):
            why = "generated built-in slices: same generator, no domain filter"
        ctx.nulls.null("run.extra_train.domain_floor", why)
    return {
        "path": rec["path"],
        "folders": rec.get("folders", []),
        "builtin_per_class": rec.get("builtin_per_class", 0),
        "counts": rec["counts"],
        "dropped_near_copies": len(rec.get("dropped_near_copies", [])),
        "left_out_unlike_training": len(rec.get("left_out_unlike_training", [])),
        "domain_floor": rec.get("domain_floor"),
        "folder_floors": rec.get("folder_floors", {}),
    }


def _folder_floors(x: dict[str, Any]) -> str:
    """'; glioma 0.712; pituitary off' for per-folder floors (extra_train.folder_quantiles)."""
    items = (x.get("folder_floors") or {}).items()
    return "".join(f"; {k} {'off' if v is None else f(v)}" for k, v in items)


def _extra_line(x: dict[str, Any] | None) -> list[str]:
    if not x:
        return []
    generated = x.get("builtin_per_class")  # generated slices come from no folder
    folders = "" if generated else f" (folders {', '.join(x['folders']) or 'all'})"
    return [
        f"- Extra training images (diffusion stage only, `config.extra_train`): {x['counts']} "
        f"from {x['path']}{folders}; "
        f"{x['dropped_near_copies']} dropped as near-copies of main-set images, "
        f"{x['left_out_unlike_training']} left out as unlike the training split (floor "
        f"{f(x['domain_floor'])}{_folder_floors(x)}). Memorisation is searched over them too."
    ]


def compute(ctx: Context, command: str | None = None) -> dict[str, Any]:
    return {
        "commands": _commands(ctx, command),
        "run": _run(ctx),
        "machine": runinfo.machine_info(),
    }


def _cpu_detail(m: dict) -> str:
    """'family 26, model 2, avx512f; ' where the report knows them (older reports: '')."""
    parts = [f"{k} {m[f'cpu_{k}']}" for k in ("family", "model") if m.get(f"cpu_{k}") is not None]
    parts += [m["cpu_simd"]] if m.get("cpu_simd") else []
    return f"{', '.join(parts)}; " if parts else ""


def _run_lines(r: dict) -> list[str]:
    run, m = r["run"], r["machine"]
    lc, d = run["ldm_config"], run["data"]
    T = lc["diffusion"]["num_timesteps"]
    return [
        f"- LDM run: `{run['ldm_workdir']}` (preset `{lc['preset']}`), checkpoint step "
        f"{run['checkpoint_step']} ({f(run['epochs_trained'], 1)} epochs), "
        f"{'finished' if run['final'] else '**not finished**'}; sampling with the "
        f"{run['params']} weights; UNet {run['unet_parameters']:,} parameters, channels "
        f"{tuple(lc['model']['channels'])}, {lc['model']['num_res_blocks']} res blocks/level, "
        f"attention at {tuple(lc['model']['attn_resolutions']) or 'bottleneck only'}.",
        f"- Diffusion: {lc['diffusion']['schedule']} schedule, T={T}, "
        f"{lc['diffusion']['prediction']}-prediction, p_uncond={lc['diffusion']['p_uncond']}; "
        f"batch {lc['train']['batch_size']}, lr {lc['optim']['learning_rate']}, EMA "
        f"{lc['optim']['ema_decay']}.",
        f"- VAE: `{run['vae_workdir']}`, features {tuple(run['vae']['model']['features'])}, "
        f"latent {tuple(run['vae']['latent_shape'])}, scale factor "
        f"{run['vae']['latent_scale_factor']:.4f}.",
        f"- Data: {d['path']} (source `{d['source']}`), {d['image_size']} px, "
        f"{sum(d['counts'].values())} images {d['counts']}, fingerprint `{d['fingerprint'][:12]}`.",
        *_extra_line(run.get("extra_train")),
        f"- Machine: {m['cpu']} ({_cpu_detail(m)}{m['cpu_count']} logical cores), backend "
        f"{m['backend']}, "
        f"jax {m['versions'].get('jax')}, flax {m['versions'].get('flax')}, Python "
        f"{m['versions'].get('python')}.",
        f"- Report preset `{r['preset']}`; total time {r['timings_seconds']['total']:.0f} s "
        "(see Timings).",
        "",
    ]


def render(r: dict) -> str:
    c, run = r["commands"], r["run"]
    names = run["class_names"]
    L = ["## Commands", "", "```bash"]
    if c.get("train_vae"):
        L.append(c["train_vae"])
    L += [c["train_ldm"], c["evaluate"], "```", ""]
    if c["evaluate"] != c["evaluate_equivalent"]:
        L += [f"Equivalent: `{c['evaluate_equivalent']}`", ""]
    if c.get("sample"):  # reports older than this field have none
        L += [
            "Synthetic slices drawn as the main set was (its sampler and w; `sample.py`'s own "
            "seeds, so other images):",
            "",
            "```bash",
            c["sample"],
            "```",
            "",
        ]
    if c.get("sample_from_report"):
        L += ["The same setting, read from this report:", "", "```bash"]
        L += [c["sample_from_report"], "```", ""]
    L += ["## Run summary", ""] + _run_lines(r)
    split = run["data"]["split"]
    rows = [
        [k, *(split[k].get(cn, 0) for cn in names), sum(split[k].values())]
        for k in ("train", "val", "test")
    ]
    return "\n".join(L + table(["split", *names, "total"], rows))
