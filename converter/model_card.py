"""BUNDLE/MODEL_CARD.md: what the model is for, how it was trained and measured, and its limits.

Generated from the manifest, validation.json and the run's report.json at conversion, so
every figure in it is one the kit measured, with the protocol it was measured under.
"""

from __future__ import annotations

import json
from pathlib import Path


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * float(v):.2f} %"


def render(manifest, validation: dict, run_report: dict) -> str:
    t = manifest.training or {}
    pp = manifest.postprocess
    fit = validation.get("postprocess", {})
    split = run_report.get("split", {})
    near = split.get("near_duplicates") or {}
    lines = [
        f"# Model card: {manifest.name}",
        "",
        "## Intended use",
        "A **screening aid** for peripheral-blood-smear fields in acute lymphoblastic leukemia work-up: it sorts "
        f"fields into {', '.join(manifest.labels)} and refers uncertain ones to a person. It is not a diagnosis; "
        "every sample decision is reviewed by a qualified morphologist. Use only on smears prepared, stained and "
        "imaged like the training data.",
        "",
        "## Model",
        f"- Architecture: {manifest.arch}"
        + (f" (conv depth {t.get('cnn_depth')})" if t.get("cnn_depth") else "")
        + f", input {manifest.input.height}x{manifest.input.width} RGB uint8, stain normalisation "
        f"{manifest.input.stain_norm.method}.",
        f"- Starting weights: {t.get('weights')}; recipe {t.get('recipe', 'full')}; epochs {t.get('epochs')}; "
        f"SMOTE {t.get('smote')}; seed {t.get('seed')}.",
        f"- Files: {', '.join(f'{e.format} ({e.path})' for e in manifest.files)}.",
        "",
        "## Data and split",
        f"- Split protocol `{t.get('split_protocol')}` (seed {t.get('split_seed')}), counts {t.get('split_counts')}.",
        f"- Byte-identical duplicates removed: {t.get('duplicates_removed')}; near-duplicate groups (perceptual "
        f"hash, kept whole in one split): {near.get('groups', t.get('near_duplicates'))}.",
        f"- Data set fingerprint: `{t.get('dataset_fingerprint')}`.",
        "",
        "## Metrics (test split unless stated)",
        "| what | value | protocol |",
        "|---|---|---|",
        f"| float Keras accuracy | {_pct(validation.get('float_accuracy'))} | {validation.get('split')} |",
        f"| colour-statistics baseline | {_pct(run_report.get('baseline_accuracy'))} | same test split, "
        "gradient-boosted trees on colour statistics fitted on the training split |",
        f"| ROC-AUC (one-vs-rest, float) | {run_report.get('roc_auc_ovr')} | test split |",
    ]
    for r in validation.get("formats", []):
        if r.get("accuracy") is None:
            continue
        lines.append(f"| {r['format']}: accuracy (plain argmax) / with TTA / as the box decides | "
                     f"{_pct(r['accuracy'])} / {_pct(r.get('accuracy_tta'))} / {_pct(r.get('accuracy_box'))} | "
                     "test split, through the edge backend |")
        lines.append(f"| {r['format']}: ECE raw / as the box decides | {_pct(r.get('ece'))} / "
                     f"{_pct(r.get('ece_box'))} | 15 equal-width bins |")
    samples = fit.get("samples_test") or {}
    if samples:
        m = samples[samples["chosen"]]
        lines.append(f"| sample-level accuracy / refer rate ({samples['chosen']}) | {_pct(m['accuracy'])} / "
                     f"{_pct(m['refer_rate'])} | {samples['slides']} synthetic slides of "
                     f"{samples['fields_per_slide']} test fields each |")
    lines += [
        "",
        "## Decision rule on the box",
        f"- Post-processing (fitted on the validation split on the {fit.get('source_format', 'int8')} outputs): "
        f"TTA {pp.tta}, temperature {pp.temperature:.3f}, log prior shift {pp.log_prior_shift}, sample pooling "
        f"{pp.pool}.",
        f"- A field is `refer` when its top probability is below {manifest.thresholds.refer_below:.3f} "
        "(chosen so at most 1 % of accepted validation fields are wrong; see risk_coverage.png).",
        *_slide_cutoff_lines(manifest.thresholds),
        *_guard_lines(manifest.ood),
        "",
        "## Limits",
        "- Trained on one data set; staining, scanner and magnification shifts lower accuracy (docs/robustness.md). "
        "Validate on local slides with `leukedge bench BUNDLE --data DIR` before clinical use.",
        "- The colour baseline above shows how much of the task colour statistics alone solve; a model that "
        "does not beat it may be reading staining, not morphology.",
        "- Most errors on the real set sit on the Benign/Early boundary (hematogones vs early pre-B blasts).",
        "- Probabilities are calibrated on the validation split; a different class mix at the lab shifts them "
        "(the prior correction assumes the training split's class frequencies).",
    ]
    return "\n".join(lines) + "\n"


def _guard_lines(section) -> list[str]:
    """The unfamiliar-input guard on the card: what it does and how well it separated."""
    if section is None:
        return ["- Unfamiliar-input guard: **off** (converted with --no-guard): fields unlike the training data "
                "get a class like any other."]
    rep = section.report
    shifted = ", ".join(f"{name} {_pct(v['flag_rate'])}" for name, v in rep.get("shifted", {}).items())
    return [
        f"- Unfamiliar-input guard ({section.method}, {section.features_dim} features; class means and covariance "
        f"from the training split, threshold {section.threshold:.3f} at the validation split's "
        f"{section.quantile:.0%} quantile; image statistics {', '.join(section.stats)}): an unfamiliar field "
        "is `refer`, never a class.",
        f"  Flags {_pct(rep.get('validation', {}).get('flag_rate'))} of the validation split; of its shifted copies "
        f"{shifted}; feature-score AUROC familiar vs shifted {rep.get('auroc_features', float('nan')):.3f}.",
    ]


def write(bundle: Path, manifest, validation: dict, run_dir: Path) -> Path:
    try:
        report = json.loads((Path(run_dir) / "report.json").read_text())
    except (OSError, ValueError):
        report = {}
    path = Path(bundle) / "MODEL_CARD.md"
    path.write_text(render(manifest, validation, report))
    return path


def _slide_cutoff_lines(thresholds) -> list[str]:
    """The slide decision's own cut-off, when the bundle has one (older bundles use the field's)."""
    cut = thresholds.sample_refer_below
    if cut is None:
        return ["- A slide (sample) is `refer` when its pooled top probability is below the same value."]
    return [f"- A slide (sample) is `refer` when its pooled top probability is below {cut:.3f} (the same rule on "
            "simulated slides of validation fields; they are independent draws, fields of one real slide are "
            "more alike)."]
