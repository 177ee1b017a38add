"""One row of docs/real-data.md's table from a training run and its bundle, so every figure
there is read from the files that `leukedge train` and `leukedge convert` wrote, not copied.

    python benchmarks/real_table.py RUN BUNDLE [RUN BUNDLE ...]
    python benchmarks/real_table.py --knobs RUN [RUN ...]     # one knob's effect per row, no bundle needed

Columns: architecture and size, epochs (best), internal-split test accuracy of the float model,
the colour baseline on the same split, int8 as the box decides (TTA and calibration as fitted),
its ECE, the slide cut-off, training wall time and img/s, and the unfamiliar-input guard's flag
rates (validation split; stain and 2x magnification shifts of it).
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.train import TrainConfig  # noqa: E402

HEADER = ("| model | epochs (best) | float test % | colour baseline % | int8 on the box % | ECE box % | "
          "slide cut-off | wall min | train img/s | guard flags: val / stain / 2x |")


def row(run: Path, bundle: Path) -> str:
    report = json.loads((run / "report.json").read_text())
    validation = json.loads((bundle / "validation.json").read_text())
    manifest = json.loads((bundle / "manifest.json").read_text())
    int8 = next(f for f in validation["formats"] if f["format"] == "tflite-int8")
    guard = validation.get("unfamiliar_input_guard") or {}
    shifted = guard.get("shifted", {})
    flags = " / ".join(f"{100 * g['flag_rate']:.1f}" for g in (guard.get("validation"), shifted.get("stain"),
                                                              shifted.get("magnification_2x")) if g) or "off"
    size = report["img_size"]
    arch = report["arch"] + (f" depth {report['cnn_depth']}" if report["arch"] == "custom_cnn" else "")
    cut = manifest["thresholds"].get("sample_refer_below")
    return (f"| {arch} {size} px | {report['epochs']} ({report['best_epoch']}) | {100 * report['accuracy']:.2f} | "
            f"{100 * report['baseline_accuracy']:.2f} | {100 * int8['accuracy_box']:.2f} | {100 * int8['ece_box']:.2f} | "
            f"{'-' if cut is None else f'{cut:.3f}'} | {report['wall_s'] / 60:.1f} | {report['train_img_per_s']:.0f} | "
            f"{flags} |")


# the knobs a run can differ in, with the kit's default (what a run that does not record one had)
KNOBS = ("img_size", "smote", "augment", "label_smoothing", "ema", "lr_schedule")
KNOB_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.name in KNOBS}
KNOB_HEADER = ("| knobs | epochs (best) | best val % | float test % | as the box decides (float) % | ECE box % | "
               "colour baseline % | wall min | train img/s |")


def knob_row(run: Path) -> str:
    """A row for the knob table: the run's settings that differ from the kit's defaults, and its figures."""
    report = json.loads((run / "report.json").read_text())
    history = json.loads((run / "history.json").read_text())
    knobs = [f"{k.replace('_', ' ')} {report.get(k, v)}" for k, v in KNOB_DEFAULTS.items()
             if report.get(k, v) != v and k != "img_size"]
    name = f"{report['img_size']} px" + (", " + ", ".join(knobs) if knobs else "")
    return (f"| {name} | {report['epochs']} ({report['best_epoch']}) | {100 * max(history['val_accuracy']):.2f} | "
            f"{100 * report['accuracy']:.2f} | {100 * report['accuracy_box']:.2f} | {100 * report['ece_box']:.2f} | "
            f"{100 * report['baseline_accuracy']:.2f} | {report['wall_s'] / 60:.1f} | {report['train_img_per_s']:.0f} |")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--knobs"] and len(argv) > 1:
        print(KNOB_HEADER)
        print("|" + "---|" * (KNOB_HEADER.count("|") - 1))
        for run in argv[1:]:
            print(knob_row(Path(run)))
        return 0
    if len(argv) < 2 or len(argv) % 2:
        print("usage: real_table.py RUN BUNDLE [RUN BUNDLE ...] | --knobs RUN [RUN ...]", file=sys.stderr)
        return 2
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for run, bundle in zip(argv[::2], argv[1::2]):
        print(row(Path(run), Path(bundle)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
