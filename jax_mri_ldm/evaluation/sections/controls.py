"""Section 11: the controls, the feature space they choose, and which metrics can be trusted.

Real held-out images (the run's validation split) are scored like a synthetic set, next to
corrupted copies of them (`evaluation.controls`). A metric is trustworthy for this run when it
ranks the real images best and every corruption it is responsible for worse (`trust`); the
feature space is the candidate whose FID separates the corruptions from the real images best.
"""

from __future__ import annotations

from typing import Any

from jax_mri_ldm import plots
from jax_mri_ldm.errors import UserError
from jax_mri_ldm.evaluation import cache as eval_cache
from jax_mri_ldm.evaluation import control_study, features, prdc, scoring
from jax_mri_ldm.evaluation import controls as controls_lib
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, img, nulls_note, table, verdict

HEADER = "## 11. Controls: which metrics can be trusted"


def _choose(ctx: Context, sets: dict) -> tuple[control_study.Space, dict]:
    """The chosen space and the JSON describing the choice."""
    space, s = ctx.cfg.features.space, features.SSLSettings.from_config(ctx.cfg.features)
    key = features.cache_key(s, ctx.ds.fingerprint, ctx.train.ids)
    cache = eval_cache.run_cache_dir(ctx.workdir)
    d = int(ctx.cfg.classifier_widths[-1])
    builders = {
        "contrastive": lambda: control_study.contrastive_space(
            ctx.train.images, s, cache, key, ctx.log
        ),
        "random": lambda: control_study.random_space(s),
        "classifier": lambda: control_study.Space(
            ctx.shared["classifier_embed"],
            {"description": f"domain classifier penultimate layer ({d}-d)"},
        ),
    }
    if space != "auto":
        if space not in builders:
            raise UserError(
                f"--config.features.space={space}: use auto or one of {', '.join(builders)}."
            )
        builders = {space: builders[space]}
    _, chosen, info = control_study.choose_space(builders, sets, ctx.test.images)
    return chosen, info


def _prdc_reference(ctx: Context, space: control_study.Space) -> prdc.Reference:
    """PRDC's real manifold as configured (`config.features.prdc_*`)."""
    fc = ctx.cfg.features
    if fc.prdc_reference not in prdc.REFERENCES:
        raise UserError(
            f"--config.features.prdc_reference={fc.prdc_reference}: use "
            f"{' or '.join(prdc.REFERENCES)}."
        )
    return control_study.prdc_reference(
        space,
        (ctx.train.images, ctx.train.labels),
        (ctx.test.images, ctx.test.labels),
        ctx.class_names,
        split=str(fc.prdc_reference),
        k=int(fc.prdc_k),
        input_size=int(fc.prdc_input_size),
    )


def _control_sets(ctx: Context, held_out=None, seed_offset: int = 0) -> dict:
    """Controls made from `held_out` (default: the validation split, the table's controls;
    recall's k is chosen on a second set made from the test split)."""
    held = ctx.val if held_out is None else held_out
    if not ctx.cfg.controls:
        ctx.nulls.null("controls", "controls switched off (config.controls=False)")
        return {}
    if len(held) < 2:
        ctx.nulls.null("controls", f"the run's held-out split has {len(held)} images")
        return {}
    gen = ctx.shared["gen"]
    return controls_lib.make_controls(
        held.images,
        held.labels,
        ctx.train.images,
        ctx.train.labels,
        seed=ctx.cfg.controls_seed + seed_offset,
        decode=gen.decode_latents,
        latent_shape=ctx.run.latent_shape,
        reconstruct=ctx.run.vae.reconstruct,
    )


def compute(ctx: Context) -> dict[str, Any]:
    sets = _control_sets(ctx)
    chosen, space = _choose(ctx, sets)
    embed = chosen.embed
    ref = scoring.build_reference(
        ctx.test.images,
        ctx.test.labels,
        ctx.seen_by_generator.images,  # nearest-train search: split + extra training images
        ctx.class_names,
        embed,
        ctx.shared.get("classify"),
        ctx.shared.get("period"),
        ctx.cfg.memorisation_search_size,
        ctx.cfg.kid_subsets,
        ctx.cfg.kid_subset_size,
        int(ctx.cfg.features.prdc_k),
        calibration_images=ctx.calibration_images,
        cache_dir=eval_cache.run_cache_dir(ctx.workdir),
    )
    fc = ctx.cfg.features
    ks, n_sub = tuple(int(k) for k in fc.recall_ks), int(fc.equal_n_subsets)
    selection = _control_sets(ctx, ctx.test, seed_offset=1) if sets and len(ctx.test) > 1 else {}
    pref, recall_k = control_study.fit_recall(
        _prdc_reference(ctx, chosen), sets, selection, ks, n_sub
    )
    if recall_k is None:
        why = "no control sets" if not sets else "no recall_ks or too few test images"
        ctx.nulls.null("recall_k", f"{why}: recall uses k = {pref.k}")
    elif recall_k["chosen"] is None:
        why = "no candidate k ranks every corruption below the real test images"
        ctx.nulls.null("recall_k.chosen", f"{why}; recall uses k = {pref.k} and stays untrusted")
    ctx.shared["ref"], ctx.shared["prdc_ref"] = ref, pref
    ctx.shared["train_feats"] = embed(ctx.train.images)
    rows, tab = control_study.score_controls(ref, sets, ctx.nulls, prdc_ref=pref)
    ctx.shared["control_sets"] = sets
    ctx.shared["trust"] = tab
    if sets:
        ctx.figures["controls"] = plots.save_rows_figure(
            [(name, x[:4]) for name, (x, _) in sets.items()],
            ctx.figure_path("controls"),
            title="control sets: real held-out images and their corruptions",
        )
    held = {"held_out": "validation split", "n": int(len(ctx.val))} if sets else None
    out = {"feature_space": space, "prdc_reference": pref.describe(), "recall_k": recall_k}
    return {**out, "controls": {"sets": rows, "table": tab, "set": held}}


def is_trusted(r: dict, metric: str) -> bool | None:
    """True / False from the controls table; None when the controls were not run."""
    m = (r.get("controls") or {}).get("table", {}).get("metrics", {}).get(metric)
    return None if m is None else m["trustworthy"]


def _space_lines(fs: dict) -> list[str]:
    L = [
        f"**Feature space: {fs['chosen']}**: {fs['description']}. Rule: {fs['rule']}.",
        "",
    ]
    if fs["candidates"]:
        ctrl = list(next(iter(fs["candidates"].values()))["fid"])
        rows = [
            [name, *(f(c["fid"][k]) for k in ctrl), ", ".join(c["missed"]) or "none"]
            for name, c in fs["candidates"].items()
        ]
        L += ["FID to the test split per candidate space:", ""]
        L += table(["space", *ctrl, "corruptions missed"], rows)
    return L


def render(r: dict) -> str:
    L = [HEADER, ""]
    L += [
        "Every metric is also computed on control sets: the real held-out images (validation "
        "split; the reference) and corrupted copies of them: Gaussian noise (σ = 0.1), "
        "Gaussian blur (σ = 2 px), shuffled patches, an added period-8 grid of amplitude "
        "0.03, VAE decodes of pure N(0, I) latents, and two kinds of training-image copies: "
        "mirrored training images (which memorisation must flag) and their VAE "
        "reconstructions (a copy as smooth as a sample, shown beside them). A metric that "
        "does not rank the real images best and every corruption it is responsible for "
        "worse is **not trustworthy for this run** and decides nothing (guidance w, sampler).",
        "",
    ]
    L += _space_lines(r["feature_space"])
    if r.get("prdc_reference"):
        L += [control_study.format_prdc_reference(r["prdc_reference"]) + ".", ""]
    if r.get("recall_k"):
        L += _recall_k_lines(r["recall_k"])
    c = r.get("controls") or {}
    tab = c.get("table", {}).get("metrics", {})
    if tab:
        ctrl = list(c["sets"])
        rows = []
        for m, t in tab.items():
            cells = [f(t["scores"].get(k), 4 if m == "kid" else 3) for k in ctrl]
            rows.append([f"{t['label']} ({t['better']})", *cells, verdict(t["trustworthy"])])
        L += table(["metric (better)", *ctrl, "trustworthy"], rows)
        bad = c["table"]["untrusted"]
        L += [
            "Not trustworthy for this run: "
            + (", ".join(f"{m} (misses {', '.join(tab[m]['failures'])})" for m in bad) or "none")
            + ".",
            "",
        ]
        if "controls" in r["figures"]:
            L += [img(r["figures"]["controls"], "control sets"), ""]
    hide = (".fid_kid.", ".prdc.", ".fidelity_detail.")
    return "\n".join(L + nulls_note(r["null_reasons"], ["controls", "feature_space"], hide=hide))


def _recall_k_lines(rk: dict) -> list[str]:
    """Recall of every control set at each candidate k, and the k the controls chose."""
    by_k = rk["recall_by_k"]
    sets = list(next(iter(by_k.values())))
    rows = [[k, *(f(v[s]) for s in sets)] for k, v in by_k.items()]
    chosen = "none passed" if rk["chosen"] is None else f"k = {rk['chosen']}"
    head = (
        "Recall's own k, chosen on a second set of controls made from the test split, so the "
        f"table above checks it on controls it was not chosen on ({rk['rule']}): **{chosen}**."
    )
    return [head, "", *table(["recall's k", *sets], rows)]


def untrusted_note(r: dict, metrics: list[str]) -> str:
    """' (not trustworthy for this run)' when any of `metrics` failed the controls."""
    bad = [m for m in metrics if is_trusted(r, m) is False]
    return f" ({', '.join(bad)}: not trustworthy for this run, see section 11)" if bad else ""
