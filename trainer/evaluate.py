"""`leukedge evaluate`: score a trained RUN on any folder, in the same report format as training.

Every image found under the folder (trainer.data.scan: the ALL layout or any folder
of class folders) is decoded with the run's image size and stain normalisation,
i.e. exactly as the edge box would see it. The colour baseline is refitted on the
run's own training split (the file lists in RUN/split.json; `train_data` re-roots
them when the data set has moved) and scored on the same folder, so the report
says whether the model beats colour statistics on this folder too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from edge.errors import BadInput
from edge.manifest import LABELS, InputSpec
from edge.postprocess import PostProcess
from trainer.baseline import baseline_accuracy, compare
from trainer.calibrate import apply_report
from trainer.data import count_labels, load_images, report_skipped, scan
from trainer.plots import plot_confusion
from trainer.report import classification_report, format_table, versions, write_json
from trainer.run import CONFIG_FILE, MODEL_FILE, load_run, read_split

log = logging.getLogger(__name__)


def evaluate_run(run: Path, data: Path, out: Path | None = None, train_data: Path | None = None,
                 subset: str | None = None, baseline: bool = True, batch: int = 64,
                 progress: bool = True) -> dict:
    """Score RUN/model.keras on every image under `data`; write and return the report."""
    start = time.perf_counter()
    run, data = Path(run), Path(data)
    trained = load_run(run, split=False)
    config, train_report, spec = trained.config, trained.report, trained.spec
    if not config:
        raise BadInput(f"{run / CONFIG_FILE}: missing (is {run} a finished `leukedge train` run?)")
    size = config.get("img_size")
    if size is not None and (spec.height, spec.width) != (int(size), int(size)):
        raise BadInput(f"{run / MODEL_FILE}: input {(spec.height, spec.width, 3)} disagrees with train_config "
                       f"img_size {size}")
    subset = subset or config.get("subset", "Original")
    found = scan(data, subset)
    x, y, bad = load_images(found.items, spec, progress=progress)
    report_skipped(list(found.skipped) + bad, data)
    if len(x) == 0:
        raise BadInput(f"{data}: no decodable images")
    probs = trained.model.predict(x, batch_size=batch, verbose=1 if progress else 0)
    report = classification_report(y, probs, LABELS)
    if train_report.get("postprocess"):  # the run's fitted post-processing, as the box would apply it
        fitted = train_report["postprocess"]
        report["postprocess"] = apply_report(trained.model, x, y, PostProcess.model_validate(fitted["params"]), batch,
                                             fitted["refer_below"])
        report.update({k: report["postprocess"][k] for k in ("accuracy_tta", "accuracy_box", "ece_box")})
    if baseline:
        x_train, y_train = _training_split(run, train_data, spec, progress)
        compare(report, baseline_accuracy(x_train, y_train, x, y, int(config.get("seed", 0))))
    else:
        report.update(baseline_accuracy=None, beats_baseline=None)
    good = [i for i in found.items if i.path not in {p for p, _ in bad}]
    report.update(
        split={"protocol": "folder", "seed": config.get("seed"), "counts": {"test": count_labels(good)},
               "duplicates_removed": 0, "test_source": str(data.absolute()), "skipped": len(found.skipped) + len(bad)},
        smote=config.get("smote"), weights=train_report.get("weights", config.get("weights_source")),
        arch=config.get("arch"), img_size=spec.height, epochs=config.get("epochs_run", config.get("epochs")),
        stain_norm=spec.stain_norm.method, run=str(run.absolute()),
        train_img_per_s=train_report.get("train_img_per_s"), versions=versions())
    out = Path(out) if out else run / f"eval_{data.absolute().name or 'data'}.json"
    report["confusion_png"] = str(plot_confusion(report, out.with_suffix(".png"), title=f"{data.name}: "
                                                 f"accuracy {report['accuracy'] * 100:.2f} % (n={report['n']})"))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(out, report)
    report["report_json"] = str(out)
    if progress:
        print(format_table(report))
        print(f"report: {out}")
    return report


def _training_split(run: Path, train_data: Path | None, spec: InputSpec, progress: bool):
    try:
        info = read_split(run, data=train_data)
    except BadInput as exc:
        raise BadInput(f"{exc} (evaluate: --train-data DIR re-roots the training files for the colour "
                       "baseline; --no-baseline skips it)") from None
    x, y, _ = load_images(info.splits["train"], spec, progress=progress)
    return x, y
