"""One row of docs/real-data.md's table from a training run and its bundle, so every figure
there is read from the files that `leukedge train` and `leukedge convert` wrote, not copied.

    python benchmarks/real_table.py RUN BUNDLE [RUN BUNDLE ...]

Columns: architecture and size, epochs (best), internal-split test accuracy of the float model,
the colour baseline on the same split, int8 as the box decides (TTA and calibration as fitted),
its ECE, the slide cut-off, training wall time and img/s, and the unfamiliar-input guard's flag
rates (validation split; stain and 2x magnification shifts of it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print("usage: real_table.py RUN BUNDLE [RUN BUNDLE ...]", file=sys.stderr)
        return 2
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for run, bundle in zip(argv[::2], argv[1::2]):
        print(row(Path(run), Path(bundle)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
