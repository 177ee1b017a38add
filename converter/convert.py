"""`convert`: RUN/model.keras -> a validated bundle directory (the contract in docs/contracts.md).

Order of work: check the run (model, split, labels) before anything heavy; build every
format into a hidden temporary folder next to OUT; validate all of them on the test split;
apply the int8 accuracy gate; write the manifest last; then rename the folder into place.
A failure at any step removes the temporary folder, so OUT is either the previous bundle
or a complete new one, never half-written.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from converter import build
from edge.errors import BadInput
from edge.formats import DEFAULT_FORMATS, FORMATS
from edge.manifest import MANIFEST
from trainer.run import load_run


class GateFailed(BadInput):
    """An int8 format lost more accuracy than --max-drop allows (exit 2)."""


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise BadInput(f"--formats: unknown format {unknown[0] if unknown else '(none)'!r} (choose from {', '.join(FORMATS)})")
    if "tflite-edgetpu" in names and "tflite-int8" not in names:
        names.insert(0, "tflite-int8")  # the Edge TPU file is compiled from it, and validated through it
    return tuple(dict.fromkeys(names))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move a finished bundle into place, replacing an older bundle (never an unrelated folder)."""
    if out.exists():
        if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
            raise BadInput(f"{out}: exists and is not a bundle; choose another --out")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def convert(run_dir, out, formats=DEFAULT_FORMATS, calib: int = 300, data=None, max_drop: float = 0.5,
            qat: bool = False, allow_cpu_fallback: bool = False, name: str | None = None, seed: int = 0,
            progress: bool = True, echo: Callable[[str], None] = print, sign_key: Path | None = None,
            release: int | None = None, guard: bool = True) -> Path:
    """Convert RUN into a validated bundle at `out` and return its path (see module docstring).

    Raises BadInput (exit 2) for bad input and GateFailed (exit 2) when an int8 format
    drops more than `max_drop` percentage points against the float model; in that case the
    table is printed and the rejected bundle is kept at OUT.rejected for inspection.
    With `guard` (the default) the models get a second output, their penultimate features, and the
    bundle carries the unfamiliar-input guard fitted on them (converter/ood_fit.py).
    With `sign_key`, the bundle is signed (converter/signing.py) before it is moved into place.
    """
    formats = parse_formats(formats)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise BadInput(f"{out}: exists and is not a bundle; choose another --out")
    if sign_key is not None:
        from converter.signing import load_private_key

        load_private_key(sign_key)  # a bad key fails now, not after the conversion
    run = load_run(Path(run_dir), Path(data) if data else None)
    echo(f"run {run.path}: {run.arch} {run.spec.height}x{run.spec.width}, formats {', '.join(formats)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        result = build.build_bundle(run, tmp, formats, calib=calib, max_drop=max_drop, qat=qat,
                                    allow_cpu_fallback=allow_cpu_fallback, name=name or out.name,
                                    seed=seed, progress=progress, echo=echo, guard=guard)
        if result.failing:
            rejected = out.with_name(f"{out.name}.rejected")
            shutil.rmtree(rejected, ignore_errors=True)
            os.replace(tmp, rejected)
            worst = ", ".join(f"{f} {d:+.2f} pp" for f, d in result.failing.items())
            raise GateFailed(f"int8 accuracy drop over --max-drop {max_drop} pp ({worst}); "
                             f"bundle not written, inspect {rejected}")
        if sign_key is not None:
            from converter.signing import sign

            signed = sign(tmp, sign_key, release)
            echo(f"signed: release {signed['release']}, key {signed['fingerprint']}")
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    echo(f"bundle written: {out}")
    return out
