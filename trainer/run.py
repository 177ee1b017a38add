"""A training RUN folder: its file names, what it says about itself, and its checked loading.

Does for a run what edge/manifest.py does for a bundle. `leukedge train` writes the
folder; the converter, `evaluate` and `robustness` read it only through here, so they
agree on the model's input (size and stain normalisation), its architecture and the
exact file lists of its splits (RUN/split.json; written by trainer.split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import ValidationError

from edge.errors import BadInput
from edge.manifest import LABELS, InputSpec
from edge.stain import StainNorm
from trainer.data import SPLITS, Item, load_images
from trainer.models import ARCHITECTURES

MODEL_FILE = "model.keras"
CONFIG_FILE = "train_config.json"
REPORT_FILE = "report.json"
HISTORY_FILE = "history.json"
SPLIT_FILE = "split.json"
SPLIT_SCHEMA = 1


class SplitInfo(NamedTuple):
    """Items per split (keys train, val, test) and the rest of split.json as `meta`."""

    splits: dict[str, list[Item]]
    meta: dict[str, Any]


@dataclass
class Run:
    """A training run folder, checked: the model, its input rule, its records and the data splits."""

    path: Path
    model: object  # keras.Model
    spec: InputSpec
    arch: str
    labels: list[str]
    config: dict  # train_config.json ({} when absent)
    report: dict  # report.json ({} when absent)
    splits: dict = field(default_factory=dict)
    split_meta: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- records


def read_config(run_dir: Path) -> dict:
    """RUN/train_config.json ({} when absent); BadInput when present but unreadable."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: unreadable ({exc})") from None


def _read_report(run_dir: Path) -> dict:
    """RUN/report.json, or {} when absent or unreadable (it only describes the run)."""
    try:
        return json.loads((Path(run_dir) / REPORT_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def stain_setting(config: dict, where: Path | str = CONFIG_FILE) -> StainNorm:
    """The stain normalisation a run was trained with (train_config's `stain_norm`; method none if absent).

    The converter, `evaluate` and `robustness` must all apply exactly this one.
    """
    value = config.get("stain_norm") or {"method": "none"}
    try:
        return StainNorm.model_validate(value)
    except ValidationError:
        raise BadInput(f"{where}: stain_norm {str(value)[:80]!r} is not a fitted normalisation "
                       "(expected an object with method and target)") from None


def run_stain(run_dir: Path) -> StainNorm:
    """`stain_setting` of a RUN folder's train_config.json."""
    return stain_setting(read_config(run_dir), Path(run_dir) / CONFIG_FILE)


def arch_of(config: dict, report: dict, model) -> str:
    """The architecture the records name, else guessed from the layer names (older runs)."""
    for record in (report, config):
        if record.get("arch") in ARCHITECTURES:
            return record["arch"]
    names = " ".join(layer.name.lower() for layer in model.layers)
    return next((arch.name for arch in ARCHITECTURES.values() if arch.layer_hint in names), "custom_cnn")


def training_info(run: Run) -> dict:
    """The manifest's `training`: how the model was trained (report.json, train_config.json, split.json)."""
    cfg, rep, meta = run.config, run.report, run.split_meta

    def pick(key, default=None):
        return rep.get(key, cfg.get(key, default))

    return {
        "dataset_fingerprint": meta.get("fingerprint"),
        "split_protocol": meta.get("protocol"),
        "split_seed": meta.get("seed"),
        "split_counts": meta.get("counts"),
        "duplicates_removed": meta.get("duplicates_removed"),
        "near_duplicates": (meta.get("near_duplicates") or {}).get("groups"),
        "seed": pick("seed", meta.get("seed")),
        "epochs": pick("epochs"),
        "weights": pick("weights"),
        "smote": pick("smote"),
        "img_size": pick("img_size"),
        "recipe": pick("recipe", "full"),
        "cnn_depth": pick("cnn_depth") if "cnn_depth" in sized_by(pick("arch")) else None,
        "test_accuracy_float": rep.get("accuracy"),
    }


def sized_by(arch) -> tuple[str, ...]:
    """The options that size the architecture a record names (none for a name it does not know)."""
    record = ARCHITECTURES.get(arch) if isinstance(arch, str) else None
    return record.options if record else ()


# --------------------------------------------------------------------------- split


def read_split(run_dir: Path, data: Path | None = None, test_data: Path | None = None, check: bool = True) -> SplitInfo:
    """Read RUN/split.json (or the file itself) back into Items.

    `data` re-roots train/val (and test, unless it was an external folder); `test_data`
    re-roots an external test set. With `check`, a missing listed file is a BadInput that
    says how many are missing and which root to fix (one stat per file: cheap).
    """
    run_dir = Path(run_dir)
    path = run_dir if run_dir.suffix == ".json" else run_dir / SPLIT_FILE
    if not path.is_file():
        raise BadInput(f"{path}: no split file (is {run_dir} a training run folder?)")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: not a readable split file ({exc})") from None
    if not isinstance(record, dict) or record.get("schema") != SPLIT_SCHEMA:
        raise BadInput(f"{path}: schema {record.get('schema') if isinstance(record, dict) else None!r}, "
                       f"expected {SPLIT_SCHEMA}")
    if record.get("labels") != list(LABELS):
        raise BadInput(f"{path}: labels {record.get('labels')} differ from this kit's {list(LABELS)}")
    splits: dict[str, list[Item]] = {}
    try:
        data_root = Path(data) if data is not None else Path(record["data_root"])
        external = record.get("test_root") is not None
        test_root = (Path(test_data) if test_data is not None else Path(record["test_root"])) if external else data_root
        for name in SPLITS:
            root = test_root if name == "test" else data_root
            rows = record["splits"].get(name, [])
            splits[name] = [Item(root / row["path"], row["label"]) for row in rows]
    except (KeyError, TypeError, AttributeError) as exc:
        raise BadInput(f"{path}: malformed file list ({exc!r})") from None
    for name, items in splits.items():
        for item in items:
            if item.label not in LABELS:
                raise BadInput(f"{path}: {name} entry {item.path} has unknown label {item.label!r}")
    if check:
        for name in SPLITS:
            missing = [i.path for i in splits[name] if not i.path.is_file()]
            if missing:
                flag = "--test-data" if (name == "test" and external) else "--data"
                root = test_root if name == "test" else data_root
                raise BadInput(
                    f"{missing[0]}: {len(missing)} of {len(splits[name])} {name} files listed in {path} "
                    f"are missing under {root}; point {flag} at the data set the run was trained on"
                )
    meta = {k: v for k, v in record.items() if k != "splits"}
    return SplitInfo(splits, meta)


# --------------------------------------------------------------------------- loading


def load_run(run_dir: Path, data: Path | None = None, split: bool = True) -> Run:
    """Check and load a RUN folder; BadInput naming the file for anything a user can fix.

    With `split`, RUN/split.json must exist and list files present (re-rooted at `data`):
    the converter calibrates and validates on the run's own split.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BadInput(f"{run_dir}: run folder does not exist")
    model_path = run_dir / MODEL_FILE
    if not model_path.is_file():
        raise BadInput(f"{model_path}: missing (is {run_dir} a finished training run?)")
    info = SplitInfo({}, {})
    if split:
        if not (run_dir / SPLIT_FILE).is_file():
            raise BadInput(f"{run_dir / SPLIT_FILE}: missing; the converter calibrates and validates on the run's "
                           "own split")
        info = read_split(run_dir, data=data)
    config = read_config(run_dir)
    stain = stain_setting(config, run_dir / CONFIG_FILE)
    import keras

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad file to the user
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{model_path}: not a loadable Keras model ({msg})") from None
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[2] is None:
        raise BadInput(f"{model_path}: input shape {shape}, expected (None, H, W, 3)")
    dtype = str(model.inputs[0].dtype)
    if "uint8" not in dtype:
        raise BadInput(f"{model_path}: input dtype {dtype}, expected uint8 (scaling belongs inside the model)")
    labels = list(info.meta.get("labels", LABELS))
    n_out = model.output_shape[-1]
    if n_out != len(labels):
        raise BadInput(f"{model_path}: model has {n_out} outputs but split.json lists {len(labels)} labels {labels}")
    spec = InputSpec(height=int(shape[1]), width=int(shape[2]), stain_norm=stain)
    report = _read_report(run_dir)
    return Run(run_dir, model, spec, arch_of(config, report, model), labels, config, report, info.splits, info.meta)


def load_split(run: Run, name: str, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images of one split with the run's own InputSpec (same preprocessing as the box)."""
    items = run.splits.get(name, [])
    if not items:
        raise BadInput(f"{run.path / SPLIT_FILE}: the {name} split is empty")
    x, y, bad = load_images(items, run.spec, progress=progress)
    if bad:
        run.warnings.append(f"{name} split: {len(bad)} unreadable images skipped (first: {bad[0][0]}: {bad[0][1]})")
    if len(x) == 0:
        raise BadInput(f"{run.path / SPLIT_FILE}: no readable images in the {name} split")
    return x, y
