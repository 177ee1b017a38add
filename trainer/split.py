"""RUN/split.json: the exact file lists of a run, so evaluation and conversion reuse them.

Paths are stored relative to the data root (and to the external test root, when there is
one), so a run can be re-rooted at another copy of the data with `read_split(run, data=DIR)`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from edge.bundle import LABELS
from edge.errors import BadInput
from trainer.data import SPLITS, Item, count_labels, hash_files

SPLIT_FILE = "split.json"
SCHEMA = 1


class SplitInfo(NamedTuple):
    """Items per split (keys train, val, test) and the rest of split.json as `meta`."""

    splits: dict[str, list[Item]]
    meta: dict[str, Any]


def _rel(path: Path | str, root: Path) -> str:
    """POSIX path relative to root; files outside it keep their absolute path."""
    path = Path(path)
    for p, r in ((path, root), (path.absolute(), root.absolute()), (path.resolve(), root.resolve())):
        try:
            return p.relative_to(r).as_posix()
        except ValueError:
            continue
    return path.absolute().as_posix()


def fingerprint(splits: Mapping[str, Sequence[Item]], data_root: Path, test_root: Path | None = None) -> str:
    """sha256 over the sorted "relpath:filesha256" lines of every file in every split."""
    lines = []
    for name in SPLITS:
        root = test_root if (name == "test" and test_root is not None) else data_root
        items = list(splits.get(name, ()))
        for item, digest in zip(items, hash_files([i.path for i in items])):
            lines.append(f"{_rel(item.path, Path(root))}:{digest}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def write_split(run_dir: Path, splits: Mapping[str, Sequence[Item]], meta: Mapping[str, Any]) -> Path:
    """Write RUN/split.json and return its path.

    `meta` needs `data_root`; it may give protocol, seed, ratios, test_root (external test
    folder or None), subset, duplicates ([(removed, kept)] as Items or paths) and skipped
    ([(path, reason)]). Counts, fingerprint and the file lists are computed here; any other
    keys in `meta` are stored as given.
    """
    if "data_root" not in meta:
        raise ValueError("write_split needs meta['data_root']")
    data_root = Path(meta["data_root"]).absolute()
    test_root = Path(meta["test_root"]).absolute() if meta.get("test_root") else None
    duplicates = [[_rel(_path(a), data_root), _rel(_path(b), data_root)] for a, b in meta.get("duplicates", ())]
    skipped = [[_rel(p, data_root), str(reason)] for p, reason in meta.get("skipped", ())]

    def listing(name: str) -> list[dict[str, str]]:
        root = test_root if (name == "test" and test_root is not None) else data_root
        return [{"path": _rel(i.path, root), "label": i.label} for i in splits.get(name, ())]

    record: dict[str, Any] = {
        "schema": SCHEMA,
        "labels": list(LABELS),
        "protocol": meta.get("protocol", "image"),
        "seed": int(meta.get("seed", 0)),
        "ratios": [float(r) for r in meta.get("ratios", (0.7, 0.15, 0.15))],
        "data_root": str(data_root),
        "test_root": str(test_root) if test_root else None,
        "subset": meta.get("subset", "Original"),
        "duplicates_removed": len(duplicates),
        "duplicates": duplicates,
        "skipped": skipped,
        "counts": {name: count_labels(splits.get(name, ())) for name in SPLITS},
        "fingerprint": fingerprint(splits, data_root, test_root),
    }
    record.update({k: v for k, v in meta.items() if k not in record and k not in ("duplicates", "skipped")})
    record["splits"] = {name: listing(name) for name in SPLITS}
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / SPLIT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def _path(x: Item | Path | str) -> Path:
    return x.path if isinstance(x, Item) else Path(x)


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
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise BadInput(f"{path}: schema {record.get('schema') if isinstance(record, dict) else None!r}, expected {SCHEMA}")
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
