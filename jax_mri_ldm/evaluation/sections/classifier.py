"""Section 3: the domain classifier (class fidelity's judge; one candidate feature space)."""

from __future__ import annotations

from typing import Any

from jax_mri_ldm.evaluation import domain_classifier, setmetrics, study
from jax_mri_ldm.evaluation.context import Context
from jax_mri_ldm.evaluation.markdown import f, nulls_note, table

HEADER = "## 3. Domain classifier"


def classifier_kwargs(ctx: Context) -> dict[str, Any]:
    """The classifier settings shared by this section and the downstream study."""
    c = ctx.cfg
    return dict(
        batch_size=c.classifier_batch_size,
        lr=c.classifier_lr,
        input_size=c.classifier_input_size,
        widths=tuple(c.classifier_widths),
    )


def compute(ctx: Context) -> dict[str, Any]:
    tr, te, names = ctx.train, ctx.test, ctx.class_names
    kw = classifier_kwargs(ctx)
    clf, hist = domain_classifier.train_classifier(
        tr.images,
        tr.labels,
        seed=0,
        steps=ctx.cfg.classifier_steps,
        num_classes=ctx.num_classes,
        **kw,
    )
    ctx.shared["classify"] = lambda x: domain_classifier.classify(clf, x)[0]
    ctx.shared["classifier_embed"] = lambda x: domain_classifier.classify(clf, x)[1]
    test_probs = ctx.shared["classify"](te.images)
    scores = domain_classifier.evaluate_classifier(clf, te.images, te.labels, class_names=names)
    real_fid = setmetrics.fidelity(
        ctx.nulls, "classifier.test_recall", test_probs, te.labels, names
    )
    ctx.shared["real_fidelity"] = real_fid["overall"]
    ctx.shared["real_recall"] = real_fid["per_class"]
    test = {
        m: ctx.nulls.finite(
            f"classifier.test.{m}",
            scores[m],
            f"undefined on a test split with counts {te.counts()}",
        )
        for m in study.metric_names(names)
    }
    return {
        "classifier": {
            "trained_on": f"real train split ({len(tr)} images)",
            "steps": ctx.cfg.classifier_steps,
            **kw,
            "feature_dim": int(kw["widths"][-1]),
            "final_train_loss": hist["loss"][-1],
            "test": test,
            "test_recall": real_fid,
        }
    }


def render(r: dict) -> str:
    cl = r["classifier"]
    names = list(cl["test"])
    L = [HEADER, ""]
    L += [
        f"A {len(cl['widths'])}-block CNN (widths {tuple(cl['widths'])}, input "
        f"{cl['input_size']} px) trained on the {cl['trained_on']} for {cl['steps']} steps "
        f"(batch {cl['batch_size']}, Adam {cl['lr']}; final training loss "
        f"{f(cl['final_train_loss'])}). Its predictions define class fidelity (section 4); its "
        f"pooled penultimate features ({cl['feature_dim']}-d) are one candidate feature space "
        "(section 11).",
        "",
    ]
    L += table(names, [[f(cl["test"][k]) for k in names]])
    return "\n".join(L + nulls_note(r["null_reasons"], ["classifier."]))
