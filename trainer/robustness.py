"""Robustness report: accuracy under controlled stain/acquisition shifts, with and without stain norm.

A model that learned the stain instead of the cells looks perfect on its own test
split and fails in the next lab. This report scores a RUN (Keras model) or a BUNDLE
(through the edge backends, exactly as the box runs it) on held-out images under
every shift of trainer/shifts.py at three strengths. Shifts act on the decoded,
cropped and resized image (the acquisition side); stain normalisation then runs
inside edge.pixels.preprocess, as on the box. The colour-statistics baseline is
scored under the same shifts: where it stays as good as the model, the model has
not shown that it needs more than colour.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from tqdm import tqdm

from edge.backends import load_for_manifest
from edge.errors import BadInput
from edge.manifest import LABELS, MANIFEST, InputSpec, load_manifest
from edge.pixels import preprocess
from edge.stain import StainNorm
from edge.stain import fit_stain_norm
from trainer.baseline import color_features, fit_color_baseline
from trainer.data import load_images, scan
from trainer.plots import pyplot
from trainer.run import MODEL_FILE, read_split, run_stain
from trainer.shifts import LEVELS, SHIFTS, apply_to_batch

log = logging.getLogger(__name__)

SCHEMA = 1
NORM_CHOICES = ("none", "reinhard", "macenko", "both")
IMAGES_CHOICES = ("auto", "split", "all")


class Target(NamedTuple):
    """A loaded model to score: a batch predictor and what it expects."""

    kind: str  # "run" | "bundle"
    path: Path
    predict: Callable[[np.ndarray], np.ndarray]  # uint8 (N,H,W,3) -> probs (N,C)
    size: int
    trained_with: StainNorm  # the normalisation the model was trained / deployed with
    runtime: str  # "keras" or the edge backend that ran it
    close: Callable[[], None]


class ShiftImages(NamedTuple):
    x_test: np.ndarray  # uint8 (N,size,size,3), cropped and resized, NOT stain-normalised
    y_test: np.ndarray
    x_train: np.ndarray | None  # for the stain target and the colour baseline (RUN only)
    y_train: np.ndarray | None
    source: dict  # what was scored, for the report


# --------------------------------------------------------------------------- targets


def open_target(path: Path, backend: str = "auto") -> Target:
    path = Path(path)
    if (path / MANIFEST).is_file():
        return _open_bundle(path, backend)
    if (path / MODEL_FILE).is_file():
        return _open_run(path)
    raise BadInput(f"{path}: neither a RUN (no {MODEL_FILE}) nor a BUNDLE (no {MANIFEST})")


def _open_run(run: Path) -> Target:
    import keras

    model = keras.saving.load_model(run / MODEL_FILE, compile=False)
    size = int(model.input_shape[1])

    def predict(x: np.ndarray) -> np.ndarray:  # predict_on_batch: no per-call tf.data/progbar set-up
        return np.concatenate([np.asarray(model.predict_on_batch(x[k : k + 256])) for k in range(0, len(x), 256)])

    return Target(
        "run", run, predict, size,
        run_stain(run), "keras", lambda: None,
    )


def _open_bundle(bundle: Path, backend: str) -> Target:
    manifest = load_manifest(bundle)
    if manifest.labels != list(LABELS):
        raise BadInput(f"{bundle / MANIFEST}: labels {manifest.labels} differ from {list(LABELS)}")
    runner, entry = load_for_manifest(bundle, manifest, backend=backend)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.stack([runner.infer(img) for img in x])

    return Target(
        "bundle", bundle, predict, manifest.input.height, manifest.input.stain_norm,
        f"{runner.name} ({entry.format})", runner.close,
    )


# --------------------------------------------------------------------------- images


def load_data(target: Target, data: Path | None, images: str = "auto", progress: bool = True) -> ShiftImages:
    """The images to score, and (for a RUN) its training split for the stain target and baseline.

    images="split": the RUN's own test split (split.json), re-rooted at `data` if given.
    images="all": every image of the ALL-layout folder `data` (e.g. another lab's).
    images="auto": "split" for a RUN, "all" for a BUNDLE (a bundle carries no split).
    """
    if images not in IMAGES_CHOICES:
        raise BadInput(f"--images {images!r}: expected one of {', '.join(IMAGES_CHOICES)}")
    if images == "auto":
        images = "split" if target.kind == "run" else "all"
    if images == "split" and target.kind == "bundle":
        raise BadInput(f"{target.path}: a bundle has no split; use --images all --data DIR")
    if images == "all" and data is None:
        raise BadInput("--data DIR is needed to score every image of a folder")
    x_train = y_train = None
    if target.kind == "run":
        split = read_split(target.path, data=data if images == "split" else None, check=images == "split")
        train = [i for i in split.splits["train"] if i.path.is_file()]
        if train:
            x_train, y_train, _ = load_images(train, target.size, progress=progress)
        else:
            log.warning("training files of %s not found: no baseline, stain target from the run only", target.path)
    if images == "split":
        items = split.splits["test"]
        source = {"images": "split-test", "root": str(data or split.meta.get("test_root") or split.meta["data_root"]),
                  "protocol": split.meta.get("protocol")}
    else:
        result = scan(Path(data))
        items = result.items
        source = {"images": "folder", "root": str(data), "skipped": len(result.skipped)}
    if not items:
        raise BadInput(f"{source['root']}: no images to score")
    x, y, bad = load_images(items, target.size, progress=progress)
    if len(x) == 0:
        raise BadInput(f"{source['root']}: none of {len(items)} images could be decoded")
    source.update(n=int(len(x)), bad=len(bad), counts={lab: int((y == k).sum()) for k, lab in enumerate(LABELS)})
    return ShiftImages(x, y, x_train, y_train, source)


def stain_norms(choice: str, target: Target, data: ShiftImages) -> dict[str, StainNorm]:
    """Variants to compare: always "none", plus the chosen method(s) with a target.

    The target comes from the model itself when it was trained/deployed with that method,
    otherwise it is fitted on the RUN's training split; for a bundle without one it is
    fitted on the scored images (labels unused) and the report says so.
    """
    if choice not in NORM_CHOICES:
        raise BadInput(f"--stain-norm {choice!r}: expected one of {', '.join(NORM_CHOICES)}")
    methods = {"none": [], "reinhard": ["reinhard"], "macenko": ["macenko"], "both": ["reinhard", "macenko"]}[choice]
    if target.trained_with.method != "none" and target.trained_with.method not in methods:
        methods.insert(0, target.trained_with.method)
    norms = {"none": StainNorm()}
    for method in methods:
        if target.trained_with.method == method:
            norms[method] = target.trained_with
        elif data.x_train is not None:
            norms[method] = fit_stain_norm(method, data.x_train)
        else:
            log.warning("%s target fitted on the scored images (no training split available)", method)
            norms[method] = fit_stain_norm(method, data.x_test)
    return norms


def normalise(x: np.ndarray, norm: StainNorm) -> np.ndarray:
    """A batch through edge.pixels.preprocess with `norm` (size unchanged: only the stain step acts)."""
    if norm.method == "none":
        return x
    spec = InputSpec(height=x.shape[1], width=x.shape[2], stain_norm=norm)
    return np.stack([preprocess(img, spec) for img in x])


# --------------------------------------------------------------------------- scoring


def fit_baselines(data: ShiftImages, norms: dict[str, StainNorm], seed: int = 0) -> dict:
    """One colour baseline per stain variant, each fitted on the normalised training split."""
    if data.x_train is None:
        return {}
    return {name: fit_color_baseline(normalise(data.x_train, n), data.y_train, seed=seed) for name, n in norms.items()}


def accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return round(float(np.mean(y == pred)), 4)


def score_shifts(target: Target, data: ShiftImages, norms: dict[str, StainNorm], baselines: dict, progress: bool = True) -> dict:
    """robustness.json's body: accuracy per shift and strength, per stain variant, model and baseline."""
    conditions = [("clean", 0)] + [(name, level) for name in SHIFTS for level in LEVELS]
    rows = {cond: {"model": {}, "baseline": {}} for cond in conditions}
    features = {variant: [] for variant in baselines}
    for cond in tqdm(conditions, desc="robustness", unit="shift", disable=None if progress else True):
        x = apply_to_batch(data.x_test, *cond)
        for variant, norm in norms.items():
            xn = normalise(x, norm)
            rows[cond]["model"][variant] = accuracy(data.y_test, target.predict(xn).argmax(axis=1))
            if variant in baselines:
                features[variant].append(color_features(xn))
    # One baseline predict per variant over all conditions: far cheaper than one per condition.
    for variant, clf in baselines.items():
        preds = clf.predict(np.concatenate(features[variant])).reshape(len(conditions), -1)
        for cond, pred in zip(conditions, preds):
            rows[cond]["baseline"][variant] = accuracy(data.y_test, pred)
    clean = rows[("clean", 0)]
    shifts = {
        name: {
            "unit": shift.unit,
            "values": list(shift.values),
            "levels": [{"level": 0, "value": None, **clean}]
            + [{"level": lv, "value": shift.values[lv - 1], **rows[(name, lv)]} for lv in LEVELS],
        }
        for name, shift in SHIFTS.items()
    }
    return {"clean": clean, "shifts": shifts, "summary": summarise(clean, rows, norms, baselines)}


def summarise(clean: dict, rows: dict, norms: dict, baselines: dict) -> dict:
    """Per variant: clean accuracy, mean and worst accuracy over all shifted conditions."""
    out = {}
    for who, variants in (("model", norms), ("baseline", baselines)):
        for variant in variants:
            accs = [r[who][variant] for (name, _), r in rows.items() if name != "clean"]
            worst = min((r[who][variant], name, lv) for (name, lv), r in rows.items() if name != "clean")
            out.setdefault(who, {})[variant] = {
                "clean": clean[who][variant],
                "mean_shifted": round(float(np.mean(accs)), 4),
                "worst": {"accuracy": worst[0], "shift": worst[1], "level": worst[2]},
                "mean_drop": round(clean[who][variant] - float(np.mean(accs)), 4),
            }
    return out


# --------------------------------------------------------------------------- output


def shift_table(report: dict) -> str:
    """robustness.json as text: one line per shift and strength, then the per-variant summary."""
    variants = list(report["norms"])
    base_variants = [v for v in variants if v in report["clean"]["baseline"]]
    head = f"{'shift':<11}{'lvl':>4}{'value':>8}" + "".join(f"{'model/' + v:>16}" for v in variants)
    head += "".join(f"{'baseline/' + v:>19}" for v in base_variants)
    lines = [head, "-" * len(head)]

    def line(name, level, value, row):
        text = f"{name:<11}{level:>4}{'-' if value is None else f'{value:g}':>8}"
        text += "".join(f"{row['model'][v]:>16.3f}" for v in variants)
        return text + "".join(f"{row['baseline'][v]:>19.3f}" for v in base_variants)

    lines.append(line("clean", 0, None, report["clean"]))
    for name, shift in report["shifts"].items():
        for lv in shift["levels"][1:]:
            lines.append(line(name, lv["level"], lv["value"], lv))
    for who, variants_summary in report["summary"].items():
        for v, s in variants_summary.items():
            w = s["worst"]
            lines.append(
                f"{who}/{v}: clean {s['clean']:.3f}, mean under shifts {s['mean_shifted']:.3f} "
                f"(drop {100 * s['mean_drop']:.1f} points), worst {w['accuracy']:.3f} ({w['shift']} level {w['level']})"
            )
    return "\n".join(lines)


def write_plot(report: dict, path: Path) -> Path:
    """Accuracy against strength, one panel per shift; solid = model, dashed = colour baseline."""
    plt = pyplot()
    names = list(report["shifts"])
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), sharey=True, squeeze=False)
    colours = dict(zip(report["norms"], ("tab:red", "tab:blue", "tab:green")))
    for ax, name in zip(axes.flat, names):
        levels = report["shifts"][name]["levels"]
        xs = [lv["level"] for lv in levels]
        for variant, colour in colours.items():
            ax.plot(xs, [lv["model"][variant] for lv in levels], "-o", color=colour, label=f"model, {variant}")
            if variant in levels[0]["baseline"]:
                ax.plot(xs, [lv["baseline"][variant] for lv in levels], "--", color=colour, alpha=0.6,
                        label=f"colour baseline, {variant}")
        ax.set_title(name, fontsize=10)
        ax.set_xticks(xs)
        ax.set_xticklabels(["0"] + [f"{v:g}" for v in report["shifts"][name]["values"]], fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8, frameon=False)
    fig.suptitle(f"accuracy under shifts ({report['data']['images']}, n={report['data']['n']}; "
                 f"trained with stain norm: {report['trained_with']})", fontsize=10)
    fig.supxlabel("shift strength (level 0..3; tick = parameter value)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def robustness_report(path: Path, data: Path | None = None, out: Path | None = None, stain_norm: str = "reinhard",
                      images: str = "auto", backend: str = "auto", progress: bool = True) -> dict:
    """Score RUN|BUNDLE `path` under every shift; write robustness.json and robustness.png; return the report.

    `out` is the JSON file (default: PATH/robustness.json); the plot goes next to it.
    """
    if images not in IMAGES_CHOICES:
        raise BadInput(f"--images {images!r}: expected one of {', '.join(IMAGES_CHOICES)}")
    if images == "all" and data is None:  # checked before the (slow) model load
        raise BadInput("--data DIR is needed to score every image of a folder")
    if data is not None and not Path(data).is_dir():
        raise BadInput(f"--data {data}: not a folder")
    target = open_target(path, backend)
    try:
        loaded = load_data(target, data, images, progress)
        norms = stain_norms(stain_norm, target, loaded)
        baselines = fit_baselines(loaded, norms)
        body = score_shifts(target, loaded, norms, baselines, progress)
    finally:
        target.close()
    out = Path(out) if out is not None else Path(path) / "robustness.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "schema": SCHEMA,
        "target": {"kind": target.kind, "path": str(target.path), "runtime": target.runtime, "img_size": target.size},
        "data": loaded.source,
        "trained_with": target.trained_with.method,
        "norms": {name: norm.model_dump(mode="json") for name, norm in norms.items()},
        "baseline": "colour statistics (trainer.baseline), fitted on the training split per stain variant"
        if baselines else None,
        **body,
        "plot": out.with_suffix(".png").name,
    }
    out.write_text(json.dumps(report, indent=1) + "\n")
    write_plot(report, out.with_suffix(".png"))
    return report
