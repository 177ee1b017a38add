"""Split protocols (image, block, external test) and the split.json round trip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.errors import BadInput
from edge.manifest import LABELS
from trainer.data import BLOCK_SIZE, Item, number_key, remove_duplicates, scan, split_items
from trainer.run import read_split
from trainer.split import write_split

from tests.test_data import PATTERNS, make_all_layout, write_images

SIZES = {"Benign": 100, "Early": 197, "Pre": 160, "Pro": 141}


def fake_items(sizes=SIZES, root=Path("/data/Original")) -> list[Item]:
    """Item lists with the real name patterns; splitting never opens the files."""
    return [
        Item(root / label / PATTERNS[label].format(n), label) for label, count in sizes.items() for n in range(1, count + 1)
    ]


def paths(split) -> list[Path]:
    return [item.path for item in split]


def assert_partition(items, splits):
    everything = [p for name in ("train", "val", "test") for p in paths(splits[name])]
    assert len(everything) == len(set(everything)) == len(items), "a file is in two splits or lost"
    assert set(everything) == set(paths(items))


@pytest.mark.parametrize("protocol", ["image", "block"])
def test_split_is_a_partition_deterministic_and_seeded(protocol):
    items = fake_items()
    a = split_items(items, protocol, seed=3)
    assert_partition(items, a)
    assert a == split_items(items, protocol, seed=3)
    assert a != split_items(items, protocol, seed=4)
    assert a == split_items(list(reversed(items)), protocol, seed=3)


def test_image_split_is_stratified():
    items = fake_items()
    splits = split_items(items, "image", seed=0)
    for label, n in SIZES.items():
        got = [sum(i.label == label for i in splits[name]) for name in ("train", "val", "test")]
        assert sum(got) == n
        for count, ratio in zip(got, (0.7, 0.15, 0.15)):
            assert abs(count - ratio * n) <= 1, (label, got)


def test_image_split_small_classes_still_reach_every_split():
    items = fake_items({"Benign": 4, "Early": 5, "Pre": 3, "Pro": 12})
    splits = split_items(items, "image", seed=0)
    for name in ("train", "val", "test"):
        assert {i.label for i in splits[name]} == set(LABELS), name


def block_of(item: Item) -> tuple[str, int]:
    number = number_key(item.path)[0][1]
    return item.label, (number - 1) // BLOCK_SIZE


def test_block_split_keeps_runs_of_twenty_whole():
    items = fake_items()
    splits = split_items(items, "block", seed=1)
    assert_partition(items, splits)
    where = {}
    for name, split in splits.items():
        for item in split:
            assert where.setdefault(block_of(item), name) == name, f"block {block_of(item)} is split"
    for label, n in SIZES.items():
        got = [sum(i.label == label for i in splits[name]) for name in ("train", "val", "test")]
        assert all(got), (label, got)
        assert abs(got[0] / n - 0.7) < 0.16, (label, got)
    total = len(items)
    assert abs(len(splits["train"]) / total - 0.7) < 0.06


def test_block_split_orders_by_file_number_not_by_given_order():
    items = fake_items({"Benign": 60, "Early": 60, "Pre": 60, "Pro": 60})
    shuffled = sorted(items, key=lambda i: i.path.name[::-1])
    splits = split_items(shuffled, "block", seed=0)
    for split in splits.values():
        numbers = {block_of(i) for i in split}
        for label, block in numbers:
            members = [i for i in split if block_of(i) == (label, block)]
            assert len(members) == BLOCK_SIZE


def test_external_test_set_splits_data_into_train_and_val_only():
    items = fake_items()
    test_items = fake_items({"Benign": 5, "Pro": 7}, root=Path("/elsewhere"))
    splits = split_items(items, "image", seed=0, ratios=(0.7, 0.15, 0.15), test_items=test_items)
    assert splits["test"] == test_items
    assert len(splits["train"]) + len(splits["val"]) == len(items)
    assert abs(len(splits["val"]) / len(items) - 0.15 / 0.85) < 0.02
    with pytest.raises(BadInput, match="both the data and the external test set"):
        split_items(items, "image", test_items=items[:3])


def test_split_rejects_bad_arguments():
    with pytest.raises(BadInput, match="protocol"):
        split_items(fake_items(), "patient")
    with pytest.raises(BadInput, match="add up to 1"):
        split_items(fake_items(), "image", ratios=(0.5, 0.2, 0.2))
    with pytest.raises(BadInput, match="seed"):
        split_items(fake_items(), "image", seed=-1)


# --------------------------------------------------------------------------- split.json


def test_split_json_round_trip_and_re_rooting(tmp_path):
    data = make_all_layout(tmp_path / "data", per_class=4)
    pro = data / "Original" / "Pro"
    shutil.copy(pro / PATTERNS["Pro"].format(1), pro / PATTERNS["Pro"].format(9))
    (pro / "notes.txt").write_text("x")
    result = scan(data)
    kept, dups = remove_duplicates(result.items)
    test_root = tmp_path / "ext"
    test_items = [Item(p, "Pre") for p in write_images(test_root / "Pre", PATTERNS["Pre"], [1, 2], seed=99)]
    splits = split_items(kept, "block", seed=5, test_items=test_items)
    meta = {"protocol": "block", "seed": 5, "ratios": [0.7, 0.15, 0.15], "data_root": data, "test_root": test_root,
            "subset": "Original", "duplicates": dups, "skipped": result.skipped, "img_size": 64}
    path = write_split(tmp_path / "run", splits, meta)

    record = json.loads(path.read_text())
    assert list(record)[:15] == ["schema", "labels", "protocol", "seed", "ratios", "data_root", "test_root", "subset",
                                 "duplicates_removed", "duplicates", "skipped", "counts", "fingerprint",
                                 "img_size", "splits"]
    assert record["labels"] == list(LABELS) and record["duplicates_removed"] == 1
    assert record["duplicates"] == [["Original/Pro/WBC-Malignant-Pro-009.jpg", "Original/Pro/WBC-Malignant-Pro-001.jpg"]]
    assert record["skipped"][0][0] == "Original/Pro/notes.txt"
    assert record["counts"]["test"] == {"Pre": 2}
    assert record["splits"]["test"][0] == {"path": "Pre/WBC-Malignant-Pre-001.jpg", "label": "Pre"}
    assert all(not row["path"].startswith("/") for rows in record["splits"].values() for row in rows)

    info = read_split(tmp_path / "run")
    assert info.splits == splits and info.meta["fingerprint"] == record["fingerprint"]

    # move both data sets: stale roots fail clearly, re-rooting finds the files again
    shutil.move(data, tmp_path / "moved")
    shutil.move(test_root, tmp_path / "moved_ext")
    with pytest.raises(BadInput, match="missing under .*point --data"):
        read_split(tmp_path / "run")
    with pytest.raises(BadInput, match="point --test-data"):
        read_split(tmp_path / "run", data=tmp_path / "moved")
    info = read_split(tmp_path / "run", data=tmp_path / "moved", test_data=tmp_path / "moved_ext")
    assert [i.path.relative_to(tmp_path / "moved") for i in info.splits["train"]] == [
        i.path.relative_to(data) for i in splits["train"]
    ]
    assert info.splits["test"][1].path == tmp_path / "moved_ext" / "Pre" / "WBC-Malignant-Pre-002.jpg"


def test_fingerprint_changes_with_file_contents(tmp_path):
    data = make_all_layout(tmp_path / "data", per_class=3)
    items = scan(data).items
    splits = split_items(items, "image", seed=0)
    first = json.loads(write_split(tmp_path / "a", splits, {"data_root": data}).read_text())["fingerprint"]
    again = json.loads(write_split(tmp_path / "b", splits, {"data_root": data}).read_text())["fingerprint"]
    write_images(data / "Original" / "Pro", PATTERNS["Pro"], [2], seed=1234)
    changed = json.loads(write_split(tmp_path / "c", splits, {"data_root": data}).read_text())["fingerprint"]
    assert first == again != changed


def test_read_split_errors(tmp_path):
    with pytest.raises(BadInput, match=r"split\.json: no split file"):
        read_split(tmp_path)
    (tmp_path / "split.json").write_text("{not json")
    with pytest.raises(BadInput, match="not a readable split file"):
        read_split(tmp_path)
    (tmp_path / "split.json").write_text(json.dumps({"schema": 7}))
    with pytest.raises(BadInput, match="schema 7"):
        read_split(tmp_path)
