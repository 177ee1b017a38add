"""Near-duplicate images (re-encoded, resized, lightly edited copies) found by perceptual hash.

Byte-identical files are removed by trainer.data.remove_duplicates; a copy saved again
as JPEG or at another size has other bytes but shows the same field, and one in the
training split with its twin in the test split inflates test accuracy. Each image gets a
64-bit DCT perceptual hash (`imagehash.phash`; OpenCV's img_hash is only in the contrib
build); images within MAX_DISTANCE bits are linked, linked images form a group, and a
group is kept together in one split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.errors import BadInput
from trainer.data import Item

MAX_DISTANCE = 4  # of 64 bits; re-encoded/resized copies measured 0, distinct synthetic fields >= 8 (median 30)
HASH = "phash-64 (imagehash)"


def phash64(path: Path) -> int:
    """The 64-bit perceptual hash of an image file as an int."""
    try:
        with Image.open(path) as img:
            return int(str(imagehash.phash(img.convert("RGB"))), 16)
    except (OSError, UnidentifiedImageError) as exc:
        raise BadInput(f"{path}: cannot hash for near-duplicates ({exc})") from None


def near_duplicate_groups(items: Sequence[Item], max_distance: int = MAX_DISTANCE) -> list[list[Item]]:
    """Groups (two or more images each) whose hashes chain within `max_distance` bits (union-find)."""
    if max_distance < 0 or len(items) < 2:
        return []
    hashes = np.array([phash64(i.path) for i in items], dtype=np.uint64)
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(items) - 1):
        close = np.flatnonzero(np.bitwise_count(hashes[i] ^ hashes[i + 1:]) <= max_distance) + i + 1
        for j in close:
            a, b = root(i), root(int(j))
            if a != b:
                parent[b] = a
    members: dict[int, list[Item]] = {}
    for k, item in enumerate(items):
        members.setdefault(root(k), []).append(item)
    return [g for g in members.values() if len(g) > 1]


def drop_near_test(items: Sequence[Item], groups: Sequence[Sequence[Item]], test: Sequence[Item]
                   ) -> tuple[list[Item], list[tuple[Item, Item]]]:
    """Remove training-side images that are near-duplicates of an external test image."""
    test_paths = {t.path for t in test}
    twin: dict[Path, Item] = {}
    for g in groups:
        in_test = [m for m in g if m.path in test_paths]
        if in_test:
            twin.update({m.path: in_test[0] for m in g if m.path not in test_paths})
    kept = [i for i in items if i.path not in twin]
    return kept, [(i, twin[i.path]) for i in items if i.path in twin]


def keep_groups_together(splits: Mapping[str, list[Item]], groups: Sequence[Sequence[Item]],
                         fixed: Sequence[str] = ()) -> tuple[dict[str, list[Item]], int]:
    """Move every group into the split of its first member (in split order of the first seen).

    The first member's split was drawn at random with the split ratios, so groups land
    in each split in proportion. `fixed` splits (an external test folder) are never
    changed. Returns (splits, number of images moved)."""
    where = {i.path: name for name, items in splits.items() for i in items}
    out = {name: list(items) for name, items in splits.items()}
    moved = 0
    for g in groups:
        present = [m for m in g if m.path in where]
        if len(present) < 2:
            continue
        home = next((where[m.path] for m in present if where[m.path] in fixed), where[present[0].path])
        for m in present[1:]:
            now = where[m.path]
            if now != home and now not in fixed:
                out[now] = [i for i in out[now] if i.path != m.path]
                out[home].append(m)
                where[m.path] = home
                moved += 1
    return out, moved


def summary(groups: Sequence[Sequence[Item]], moved: int, removed_near_test: int, max_distance: int) -> dict:
    """The `near_duplicates` record of split.json and the report."""
    return {"groups": len(groups), "images_in_groups": int(sum(len(g) for g in groups)),
            "cross_class_groups": sum(len({m.label for m in g}) > 1 for g in groups),
            "moved_to_keep_groups_whole": moved, "removed_near_external_test": removed_near_test,
            "max_distance_bits": max_distance, "hash": HASH,
            "examples": [[str(m.path.name) for m in g][:4] for g in groups[:5]]}
