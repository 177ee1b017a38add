"""Near-duplicates (trainer.neardup): re-encoded and resized copies are grouped and kept in one split."""

from __future__ import annotations

import json
import shutil

import cv2
import pytest

from leukedge.bundle_factory import small_dataset
from trainer.data import remove_duplicates, scan
from trainer.neardup import drop_near_test, near_duplicate_groups

pytest.importorskip("imagehash")


@pytest.fixture
def data_with_copies(tmp_path):
    """The synthetic set plus, for three fields, a JPEG re-encode (quality 40) and two resized copies."""
    data = tmp_path / "data"
    shutil.copytree(small_dataset(per_class=16, size=64, seed=0), data)
    originals = [sorted((data / "Original" / c).glob("*.jpg"))[k] for c, k in (("Benign", 2), ("Pre", 5), ("Pro", 0))]
    copies = {}
    for n, src in enumerate(originals):
        img = cv2.imread(str(src))
        folder = src.parent
        made = [folder / f"WBC-{folder.name}-{900 + 3 * n:03d}.jpg", folder / f"WBC-{folder.name}-{901 + 3 * n:03d}.jpg",
                folder / f"WBC-{folder.name}-{902 + 3 * n:03d}.png"]
        cv2.imwrite(str(made[0]), img, [cv2.IMWRITE_JPEG_QUALITY, 40])
        cv2.imwrite(str(made[1]), cv2.resize(img, (48, 48), interpolation=cv2.INTER_AREA))
        cv2.imwrite(str(made[2]), cv2.resize(img, (100, 100), interpolation=cv2.INTER_CUBIC))
        copies[src.name] = {m.name for m in made}
    return data, copies


def test_reencoded_and_resized_copies_form_groups(data_with_copies):
    data, copies = data_with_copies
    items, dups = remove_duplicates(scan(data, "Original").items)
    assert not dups  # none of the copies is byte-identical
    groups = near_duplicate_groups(items)
    found = {frozenset(m.path.name for m in g) for g in groups}
    assert found == {frozenset({orig} | made) for orig, made in copies.items()}  # and no distinct fields grouped
    assert near_duplicate_groups(items, max_distance=-1) == []


def test_groups_stay_in_one_split_and_are_reported(data_with_copies, tmp_path):
    from trainer.train import TrainConfig, prepare_data

    data, copies = data_with_copies
    for seed in (0, 1, 2):
        run = tmp_path / f"run{seed}"
        prepare_data(TrainConfig(data=str(data), out=str(run), img_size=32, seed=seed, verbose=0), run)
        split = json.loads((run / "split.json").read_text())
        where = {row["path"].split("/")[-1]: name for name, rows in split["splits"].items() for row in rows}
        for orig, made in copies.items():
            assert len({where[f] for f in {orig} | made}) == 1, (seed, orig)
        near = split["near_duplicates"]
        assert near["groups"] == 3 and near["images_in_groups"] == 12 and near["cross_class_groups"] == 0
        assert sum(split["counts"][s][c] for s in split["counts"] for c in split["counts"][s]) == 4 * 16 + 9


def test_near_duplicates_of_an_external_test_set_leave_training(data_with_copies):
    data, copies = data_with_copies
    items = scan(data, "Original").items
    test = [i for i in items if i.path.name in copies]  # the three originals form the external test set
    rest = [i for i in items if i.path.name not in copies]
    kept, removed = drop_near_test(rest, near_duplicate_groups(rest + test), test)
    assert len(removed) == 9 and len(kept) == len(rest) - 9
    assert {twin.path.name for _, twin in removed} == set(copies)
