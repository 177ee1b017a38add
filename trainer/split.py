"""RUN/split.json: the exact file lists of a run, so evaluation and conversion reuse them.

Paths are stored relative to the data root (and to the external test root, when there is
one), so a run can be re-rooted at another copy of the data with
`trainer.run.read_split(run, data=DIR)` (the reader lives with the rest of the run folder).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from edge.manifest import LABELS
from trainer.data import SPLITS, Item, count_labels, hash_files
from trainer.run import SPLIT_FILE, SPLIT_SCHEMA


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
        "schema": SPLIT_SCHEMA,
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
