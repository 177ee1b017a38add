"""`leukedge bench BUNDLE [--data DIR]`: the validation table again, on any folder.

Without --data it prints BUNDLE/validation.json as written at conversion. With --data it
runs every bundle file that runs on this machine (through the edge backends, the agent's
own code path) over the labelled images under DIR and compares them with the bundle's
float file (onnx-fp32 or tflite-fp32), or with the first format when there is none.
`accuracy` stays the plain argmax; `accuracy_tta` averages the eight dihedral passes;
`accuracy_box`/`ece_box` apply the manifest's `postprocess` exactly as the agent does.
With the unfamiliar-input guard in the bundle, every image is also scored by it as the agent
scores a field (`edge.ood.Guard.score_field` on the first file's features): on a folder from
another lab, the share it would refer says how far that lab is from the training data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from converter.calibration import select_balanced
from converter.validate import box_columns, row, run_features, run_format, summarize, validation_table
from edge.argtypes import output_file, positive_int
from edge.errors import BadInput
from edge.formats import BACKEND_FOR, REFERENCE_ORDER
from edge.manifest import bundle_path, load_manifest
from edge.ood import FORMAT as OOD_FORMAT
from edge.ood import Guard
from trainer.data import load_images, report_skipped, scan


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, help="bundle folder (manifest.json)")
    p.add_argument("--data", type=Path, default=None,
                   help="folder of labelled images (ALL layout or one folder per class) to measure on")
    p.add_argument("--subset", default="Original", help="ALL-layout subset under --data (default Original)")
    p.add_argument("--limit", type=positive_int, default=None, help="use at most this many images (class-balanced)")
    p.add_argument("--json", type=output_file, default=None, help="also write the table as JSON here")
    p.add_argument("--no-tta", action="store_true",
                   help="skip the eight-pass dihedral run (accuracy_tta empty; accuracy_box too if the manifest says TTA)")


def bench(bundle: Path, data: Path, subset: str = "Original", limit: int | None = None, tta: bool = True,
          echo=lambda line: print(line, file=sys.stderr, flush=True)) -> dict:
    """validation.json-shaped dict for the bundle's files on the images under `data`.

    `echo` gets a line as each format starts (stderr by default: stdout is the table), and
    each run over the images draws a bar in a terminal (trainer.progress.frames)."""
    manifest = load_manifest(bundle, verify=True)
    found = scan(data, subset)
    items = select_balanced(found.items, limit) if limit else found.items
    x, y, bad = load_images(items, manifest.input, progress=False)
    report_skipped(list(found.skipped) + bad, data)
    if len(x) == 0:
        raise BadInput(f"{data}: no readable images")
    runnable = [e for e in manifest.files if e.format in BACKEND_FOR]
    if not runnable:
        raise BadInput(f"{bundle}: no file that runs on this machine ({[e.format for e in manifest.files]})")
    paths = {e.format: bundle_path(bundle, e) for e in runnable}  # never a file outside the bundle
    outputs = {}
    for e in runnable:
        echo(f"bench: {e.format} on {len(x)} images ...")
        outputs[e.format] = run_format(paths[e.format], e.format, x)
    ref_fmt = next((f for f in REFERENCE_ORDER if f in outputs), runnable[0].format)
    ref = outputs[ref_fmt][0]
    rows = []
    for e in runnable:  # plain argmax as before, then with TTA and as the box decides (manifest's postprocess)
        probs, p50 = outputs[e.format]
        if tta:
            echo(f"bench: {e.format} with the eight-pass TTA on {len(x)} images ...")
        passes = run_format(paths[e.format], e.format, x, tta=True)[0] if tta else None
        rows.append(row(e.format, paths[e.format], y, probs, ref, p50, manifest.labels)
                    | box_columns(y, probs, passes, manifest.postprocess))
    note = f"{data}, n={len(y)}" + (f", {len(bad)} unreadable skipped" if bad else "")
    out = {"float_accuracy": summarize(y, ref, manifest.labels)["accuracy"], "reference": ref_fmt,
           "split": note, "n": int(len(y)), "postprocess": {"params": manifest.postprocess.model_dump()},
           "formats": rows}
    if manifest.ood is not None:
        fmt = runnable[0].format  # the file the agent prefers among those this machine runs
        guard = Guard.load(manifest.ood, bundle_path(bundle, manifest.file(OOD_FORMAT)))
        out["unfamiliar_input_guard"] = guard_summary(guard, run_features(paths[fmt], fmt, x), x) | {"format": fmt}
    return out


def guard_summary(guard: Guard, features, images) -> dict:
    """How many images the guard calls unfamiliar, and why, scored one by one as the agent does."""
    verdicts = [guard.score_field(f, image) for f, image in zip(features, images)]
    reasons: dict[str, int] = {}
    for v in verdicts:
        for reason in v.reasons or (("features",) if v.unfamiliar else ()):
            reasons[reason] = reasons.get(reason, 0) + 1
    return {"n": len(verdicts), "flag_rate": sum(v.unfamiliar for v in verdicts) / max(len(verdicts), 1),
            "reasons": reasons}


def run(args: argparse.Namespace) -> int:
    if args.data is None:
        manifest = load_manifest(args.bundle, verify=True)
        path = args.bundle / "validation.json"
        if not path.is_file():
            raise BadInput(f"{path}: missing; pass --data DIR to measure the bundle on a folder")
        validation = json.loads(path.read_text())
    else:
        validation = bench(args.bundle, args.data, args.subset, args.limit, tta=not args.no_tta)
        manifest = load_manifest(args.bundle, verify=False)
    print(f"bundle {manifest.name} ({manifest.arch}, {manifest.input.height}x{manifest.input.width})")
    print(validation_table(validation, manifest.labels))
    guard = validation.get("unfamiliar_input_guard")
    if guard is None:
        print("unfamiliar-input guard: off (this bundle has none)")
    elif "flag_rate" in guard:
        print(f"unfamiliar-input guard: {guard['flag_rate']:.1%} of {guard['n']} images would be referred as "
              f"unlike the training data ({', '.join(f'{k} {v}' for k, v in guard['reasons'].items()) or 'none'})")
    else:  # the conversion's report in validation.json
        print(f"unfamiliar-input guard: flags {guard['validation']['flag_rate']:.1%} of the validation split; "
              + ", ".join(f"{k} {v['flag_rate']:.0%}" for k, v in guard["shifted"].items()))
    if args.json:
        args.json.write_text(json.dumps(validation, indent=2) + "\n")
    return 0
