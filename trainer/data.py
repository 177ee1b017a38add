"""The data set on disk: find labelled images, drop duplicates, split, decode to uint8 arrays.

Works on the ALL layout (`ROOT/Original/<Class>/*.jpg`, `ROOT/Segmented/...`) and on any
folder-per-class tree. Everything here is numpy + OpenCV (no TensorFlow), so training
under the JAX backend, the converter and evaluation share it.
"""

from __future__ import annotations

import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from edge.errors import BadFrame, BadInput
from edge.manifest import LABELS, InputSpec, sha256_file
from edge.pixels import preprocess, read_image

log = logging.getLogger(__name__)
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
SUBSETS = ("Original", "Segmented")
BLOCK_SIZE = 20
SPLITS = ("train", "val", "test")

# Folder names after lowercasing and dropping everything but letters, with an optional
# "malignant" prefix and "cell(s)" suffix removed (Kaggle copies name folders
# "[Malignant] early Pre-B" as well as "Early"). Exact matches only: "earlypreb" is Early,
# never Pre, and anything not listed is refused rather than guessed.
_ALIASES = {
    "Benign": ("benign", "hem", "hematogone", "hematogones", "haematogone", "haematogones"),
    "Early": ("early", "earlypre", "earlypreb", "earlyb"),
    "Pre": ("pre", "preb"),
    "Pro": ("pro", "prob"),
}
_ALIAS_TO_LABEL = {alias: label for label, names in _ALIASES.items() for alias in names}


class Item(NamedTuple):
    """One labelled image file."""

    path: Path
    label: str


class ScanResult(NamedTuple):
    """What `scan` found: the labelled images and the files it passed over, with why."""

    items: list[Item]
    skipped: list[tuple[Path, str]]

    def counts(self) -> dict[str, int]:
        return count_labels(self.items)


def count_labels(items: Iterable[Item]) -> dict[str, int]:
    """Images per label, in LABELS order (labels with no images are left out)."""
    counts = {label: 0 for label in LABELS}
    for item in items:
        counts[item.label] += 1
    return {label: n for label, n in counts.items() if n}


def _normalise(name: str) -> str:
    key = re.sub(r"[^a-z]", "", name.lower())
    key = re.sub(r"^malignant", "", key)
    return re.sub(r"cells?$", "", key)


def canonical_label(folder_name: str) -> str:
    """Map a class folder name to one of LABELS, case-insensitively; BadInput if unknown."""
    label = _ALIAS_TO_LABEL.get(_normalise(folder_name))
    if label is None:
        known = ", ".join(f"{label} ({'/'.join(names)})" for label, names in _ALIASES.items())
        raise BadInput(f"class folder {folder_name!r} is not a known class; expected one of {known}")
    return label


def number_key(path: Path) -> tuple:
    """Sort key: the last number in the file name first (WBC-Malignant-Pro-012.jpg -> 12), then a natural sort.

    The block protocol relies on this order: consecutive numbers stand in for one capture session.
    """
    numbers = re.findall(r"\d+", path.stem)
    natural = tuple((0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", path.name) if t)
    return (0, int(numbers[-1])) if numbers else (1, 0), natural, str(path)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _pick_subset(root: Path, subset: str) -> Path:
    """The folder that holds the class folders: ROOT/<subset> for the ALL layout, else ROOT itself."""
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and _visible(p)}
    if subset.lower() in children:
        return children[subset.lower()]
    layout = sorted(p.name for name, p in children.items() if name in {s.lower() for s in SUBSETS})
    if layout:
        raise BadInput(f"{root}: has no {subset!r} folder (found {', '.join(layout)}); choose --subset accordingly")
    return root


def scan(root: Path, subset: str = "Original") -> ScanResult:
    """List the labelled images under `root`, in LABELS order and by file number within a class.

    Structural problems (missing root, no class folders, an unknown or repeated class, an
    empty class) raise BadInput. Single files that are not images (by extension) are
    skipped and returned in `skipped` with the reason; undecodable images are caught later
    by `load_images`. Hidden files and folders are ignored.
    """
    root = Path(root)
    if not root.exists():
        raise BadInput(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise BadInput(f"{root}: is not a folder (expected a folder of class folders)")
    base = _pick_subset(root, subset)
    class_dirs = sorted((p for p in base.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name.lower())
    if not class_dirs:
        raise BadInput(f"{base}: no class folders (expected Benign/, Early/, Pre/, Pro/ or Original/<Class>/)")
    by_label: dict[str, Path] = {}
    for folder in class_dirs:
        try:
            label = canonical_label(folder.name)
        except BadInput as exc:
            nested = [p.name for p in folder.iterdir() if p.is_dir() and p.name.lower() in {"original", "segmented"}]
            hint = f" (it holds {', '.join(sorted(nested))}/: point --data at {folder})" if nested else ""
            raise BadInput(f"{folder}: {exc}{hint}") from None
        if label in by_label:
            raise BadInput(f"{folder}: maps to {label}, as does {by_label[label]}; merge or rename one of them")
        by_label[label] = folder

    items: list[Item] = []
    skipped: list[tuple[Path, str]] = []
    for label in LABELS:
        folder = by_label.get(label)
        if folder is None:
            continue
        found = []
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                path = Path(dirpath) / name
                if not _visible(path):
                    continue
                if path.suffix.lower() in IMAGE_EXTS:
                    found.append(path)
                else:
                    skipped.append((path, f"not an image file (extension {path.suffix or 'none'!r})"))
        if not found:
            raise BadInput(f"{folder}: class folder has no images ({', '.join(sorted(IMAGE_EXTS))})")
        items.extend(Item(p, label) for p in sorted(found, key=number_key))
    return ScanResult(items, skipped)


# --------------------------------------------------------------------------- duplicates

_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime) so a run hashes each file once."""
    st = Path(path).stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def hash_files(paths: Sequence[Path]) -> list[str]:
    """sha256 of many files, a few at a time (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2))) as pool:
        return list(pool.map(file_sha256, paths))


def remove_duplicates(
    items: Sequence[Item], reference: Sequence[Item] = ()
) -> tuple[list[Item], list[tuple[Item, Item]]]:
    """Drop byte-identical files, keeping the first in the given order.

    Returns (kept, [(removed, kept_twin), ...]). A twin in another class is removed just
    the same (its pair shows both labels). Items whose bytes equal a `reference` item
    (an external test set) are removed too, so no test image is also trained on.
    """
    seen: dict[str, Item] = {}
    for digest, ref in zip(hash_files([r.path for r in reference]), reference):
        seen.setdefault(digest, ref)
    kept: list[Item] = []
    pairs: list[tuple[Item, Item]] = []
    for digest, item in zip(hash_files([i.path for i in items]), items):
        twin = seen.get(digest)
        if twin is None:
            seen[digest] = item
            kept.append(item)
        else:
            pairs.append((item, twin))
    return kept, pairs


# --------------------------------------------------------------------------- splits


def _check_ratios(ratios: Sequence[float], n: int) -> tuple[float, ...]:
    ratios = tuple(float(r) for r in ratios)
    if n == 2 and len(ratios) == 2:
        ratios = (*ratios, 0.0)
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios[:n]) <= 0:
        raise BadInput(f"split ratios {list(ratios)}: need three non-negative fractions (train, val, test)")
    if n == 3 and abs(sum(ratios) - 1.0) > 1e-6:
        raise BadInput(f"split ratios {list(ratios)}: must add up to 1")
    total = sum(ratios[:n])
    return tuple(r / total for r in ratios[:n])


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Split n units by ratios (largest remainder); every split with a share gets one if n allows."""
    exact = [n * r for r in ratios]
    counts = [int(e) for e in exact]
    order = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    wanted = [i for i, r in enumerate(ratios) if r > 0]
    if n >= len(wanted):
        for i in wanted:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def _by_label(items: Sequence[Item]) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = {}
    for item in items:
        if item.label not in LABELS:
            raise BadInput(f"{item.path}: label {item.label!r} is not one of {list(LABELS)}")
        groups.setdefault(item.label, []).append(item)
    return {label: groups[label] for label in LABELS if label in groups}


def split_items(
    items: Sequence[Item],
    protocol: str = "image",
    seed: int = 0,
    ratios: Sequence[float] = (0.7, 0.15, 0.15),
    test_items: Sequence[Item] | None = None,
) -> dict[str, list[Item]]:
    """Split into train/val/test, stratified per class and deterministic for a seed.

    "image": each class's files are shuffled and cut by `ratios`. "block": each class's
    files, ordered by their number, form runs of BLOCK_SIZE consecutive files (a stand-in
    for capture sessions); whole blocks are shuffled and dealt out so each split gets about
    its share of blocks. The result depends on the set of items and the seed, not on
    their order. With `test_items` (an external test folder) `items` is split into
    train/val only, by the first two ratios renormalised, and test is `test_items`.
    """
    if protocol not in ("image", "block"):
        raise BadInput(f"split protocol {protocol!r}: expected 'image' or 'block'")
    if int(seed) < 0:
        raise BadInput(f"--seed {seed}: must be 0 or more")
    n_splits = 3 if test_items is None else 2
    shares = _check_ratios(ratios, n_splits)
    out: dict[str, list[Item]] = {name: [] for name in SPLITS}
    for label, group in _by_label(items).items():
        rng = np.random.default_rng([seed, LABELS.index(label)])
        ordered = sorted(group, key=item_key)
        step = 1 if protocol == "image" else BLOCK_SIZE
        blocks = [ordered[i : i + step] for i in range(0, len(ordered), step)]
        units = [blocks[i] for i in rng.permutation(len(blocks))]
        counts = _allocate(len(units), shares)
        start = 0
        for name, count in zip(SPLITS, counts):
            for unit in units[start : start + count]:
                out[name].extend(unit)
            start += count
    if test_items is not None:
        test = list(test_items)
        overlap = {i.path for i in test} & {i.path for s in out.values() for i in s}
        if overlap:
            raise BadInput(f"{sorted(overlap)[0]}: is in both the data and the external test set")
        _by_label(test)
        out["test"] = test
    for name in ("train", "val") if test_items is not None else SPLITS:
        out[name].sort(key=item_key)
    return out


def item_key(item: Item) -> tuple:
    return LABELS.index(item.label), number_key(item.path)


def check_every_class(splits: dict[str, list[Item]], where: Path) -> None:
    """Refuse a split in which a class of the training split has no validation or test image:
    its recall could not be measured, and every figure of the run would hide that."""
    for name in ("val", "test"):
        present = count_labels(splits.get(name, ()))
        missing = [label for label in count_labels(splits["train"]) if label not in present]
        if missing:
            raise BadInput(f"{where}: the {name} split has no {', '.join(missing)} image "
                           f"(counts after skipping unreadable files: {count_labels(splits['train'])} train, "
                           f"{present} {name}); add images of that class or change the ratios")


def report_skipped(skipped: Sequence[tuple[Path, str]], where: Path | str, first: int = 5,
                   listed_in: str | None = None) -> None:
    """Name the files a command passed over on the console: the first few, then a count."""
    if not skipped:
        return
    log.warning("%s: skipped %d file(s) that could not be used:", where, len(skipped))
    for path, reason in skipped[:first]:
        log.warning("  %s: %s", path, reason)
    if len(skipped) > first:
        log.warning("  ... and %d more%s", len(skipped) - first, f" (all listed in {listed_in})" if listed_in else "")


# --------------------------------------------------------------------------- decoding


def load_images(
    items: Sequence[Item],
    spec: InputSpec | int,
    progress: bool = True,
    workers: int | None = None,
    memory_budget: int = 8 << 30,
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Decode and preprocess images into memory: x uint8 (N, H, W, 3), y int64 label indices.

    `spec` is the model's InputSpec (size and stain normalisation; an int means a square
    size without normalisation). Uses edge.pixels.read_image + preprocess (the same
    crop/resize/stain-norm as the edge box). Files that cannot be decoded are skipped and
    returned in `bad` as (path, reason); x and y then hold only the good ones, in item
    order. Raises BadInput when the array would exceed `memory_budget` bytes.
    """
    if isinstance(spec, int):
        spec = InputSpec(height=spec, width=spec)
    need = len(items) * spec.height * spec.width * 3
    if need > memory_budget:
        raise BadInput(
            f"{len(items)} images at {spec.width}x{spec.height} px need {need / 2**30:.1f} GiB in memory "
            f"(budget {memory_budget / 2**30:.1f} GiB); use a smaller --img-size"
        )
    x = np.empty((len(items), spec.height, spec.width, 3), np.uint8)
    y = np.array([LABELS.index(item.label) for item in items], np.int64)

    def decode(k: int) -> str | None:
        try:
            x[k] = preprocess(read_image(items[k].path), spec)
        except BadFrame as exc:
            reason = str(exc)
            prefix = f"{items[k].path}: "
            return reason[len(prefix) :] if reason.startswith(prefix) else reason
        return None

    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(
            tqdm(pool.map(decode, range(len(items))), total=len(items), desc="decode", unit="img",
                 disable=None if progress else True)  # None: drawn only on a terminal, never into a log file
        )
    bad = [(items[k].path, reason) for k, reason in enumerate(results) if reason is not None]
    if bad:
        good = np.array([reason is None for reason in results])
        x, y = x[good], y[good]
    return x, y, bad
