"""`leukedge evaluate`: score a trained RUN on any folder, in the same report format as training.

Every image found under the folder (trainer.data.scan: the ALL layout or any folder
of class folders) is decoded with the run's image size and stain normalisation,
i.e. exactly as the edge box would see it. The colour baseline is refitted on the
run's own training split (the file lists in RUN/split.json; `train_data` re-roots
them when the data set has moved) and scored on the same folder, so the report
says whether the model beats colour statistics on this folder too.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from edge.bundle import LABELS, StainNorm
from edge.errors import BadInput

log = logging.getLogger(__name__)


def load_run(run: Path) -> tuple[dict, dict]:
    """(train_config, training report) of a run folder; BadInput if it is not one."""
    run = Path(run)
    if not run.is_dir():
        raise BadInput(f"{run}: no such run folder")
    if not (run / "model.keras").is_file():
        raise BadInput(f"{run}: no model.keras (is it a finished `leukedge train` run?)")
    try:
        config = json.loads((run / "train_config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{run / 'train_config.json'}: missing or unreadable ({exc})") from None
    report_path = run / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    return config, report


def stain_of(config: dict, where: Path | str = "train_config.json") -> StainNorm:
    """The stain normalisation a run was trained with (train_config's `stain_norm`; method none if absent)."""
    from pydantic import ValidationError

    value = config.get("stain_norm") or {"method": "none"}
    try:
        return StainNorm.model_validate(value)
    except ValidationError:
        raise BadInput(f"{where}: stain_norm {str(value)[:80]!r} is not a fitted normalisation "
                       "(expected an object with method and target)") from None


def run_stain_norm(run: Path) -> StainNorm:
    """`stain_of` for a RUN folder: what the converter, evaluate and robustness must all apply."""
    path = Path(run) / "train_config.json"
    if not path.is_file():
        return StainNorm()
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: unreadable ({exc})") from None
    return stain_of(config, path)


def evaluate_run(run: Path, data: Path, out: Path | None = None, train_data: Path | None = None,
                 subset: str | None = None, baseline: bool = True, batch: int = 64,
                 progress: bool = True) -> dict:
    """Score RUN/model.keras on every image under `data`; write and return the report."""
    start = time.perf_counter()
    run, data = Path(run), Path(data)
    config, train_report = load_run(run)
    from trainer.data import count_labels, load_images, scan

    subset = subset or config.get("subset", "Original")
    found = scan(data, subset)
    size, stain = int(config["img_size"]), stain_of(config)
    x, y, bad = load_images(found.items, size, progress=progress, stain=stain)
    if len(x) == 0:
        raise BadInput(f"{data}: no decodable images")
    import keras

    from trainer.baseline import baseline_accuracy, compare
    from trainer.report import classification_report, format_table, versions, write_json

    model = keras.saving.load_model(run / "model.keras", compile=False)
    shape = tuple(model.inputs[0].shape[1:])
    if shape != (size, size, 3):
        raise BadInput(f"{run / 'model.keras'}: input {shape} disagrees with train_config img_size {size}")
    probs = model.predict(x, batch_size=batch, verbose=1 if progress else 0)
    report = classification_report(y, probs, LABELS)
    if baseline:
        x_train, y_train = _training_split(run, train_data, size, stain, progress)
        compare(report, baseline_accuracy(x_train, y_train, x, y, int(config.get("seed", 0))))
    else:
        report.update(baseline_accuracy=None, beats_baseline=None)
    good = [i for i in found.items if i.path not in {p for p, _ in bad}]
    report.update(
        split={"protocol": "folder", "seed": config.get("seed"), "counts": {"test": count_labels(good)},
               "duplicates_removed": 0, "test_source": str(data.absolute()), "skipped": len(found.skipped) + len(bad)},
        smote=config.get("smote"), weights=train_report.get("weights", config.get("weights_source")),
        arch=config.get("arch"), img_size=size, epochs=config.get("epochs_run", config.get("epochs")),
        stain_norm=stain.method, run=str(run.absolute()),
        train_img_per_s=train_report.get("train_img_per_s"), versions=versions())
    out = Path(out) if out else run / f"eval_{data.absolute().name or 'data'}.json"
    from trainer.plots import plot_confusion

    report["confusion_png"] = str(plot_confusion(report, out.with_suffix(".png"), title=f"{data.name}: "
                                                 f"accuracy {report['accuracy'] * 100:.2f} % (n={report['n']})"))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(out, report)
    report["report_json"] = str(out)
    if progress:
        print(format_table(report))
        print(f"report: {out}")
    return report


def _training_split(run: Path, train_data: Path | None, size: int, stain, progress: bool):
    from trainer.data import load_images
    from trainer.split import read_split

    try:
        info = read_split(run, data=train_data)
    except BadInput as exc:
        raise BadInput(f"{exc} (evaluate: --train-data DIR re-roots the training files for the colour "
                       "baseline; --no-baseline skips it)") from None
    x, y, _ = load_images(info.splits["train"], size, progress=progress, stain=stain)
    return x, y
