"""Data layer: ALL layout parsing, class-name aliases, duplicates, bad files, decoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import BadInput
from edge.manifest import LABELS, InputSpec
from edge.pixels import preprocess, read_image
from trainer.data import Item, canonical_label, load_images, number_key, remove_duplicates, scan

PATTERNS = {
    "Benign": "WBC-Benign-{:03d}.jpg",
    "Early": "WBC-Malignant-Early-{:03d}.jpg",
    "Pre": "WBC-Malignant-Pre-{:03d}.jpg",
    "Pro": "WBC-Malignant-Pro-{:03d}.jpg",
}


def write_images(folder: Path, pattern: str, numbers, seed: int = 0, size=(40, 48)) -> list[Path]:
    """Tiny distinct JPEGs named like the real set (each one's pixels differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in numbers:
        rng = np.random.default_rng([seed, n])
        img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        path = folder / pattern.format(n)
        assert cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def make_all_layout(root: Path, subset: str = "Original", per_class: int = 5, folders=None) -> Path:
    folders = folders or {label: label for label in LABELS}
    for label, folder in folders.items():
        write_images(root / subset / folder, PATTERNS[label], range(1, per_class + 1), seed=LABELS.index(label))
    return root


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    "name, label",
    [
        ("Benign", "Benign"),
        ("benign", "Benign"),
        ("hem", "Benign"),
        ("Hematogones", "Benign"),
        ("Early", "Early"),
        ("EarlyPreB", "Early"),
        ("early Pre-B", "Early"),
        ("early_pre_b", "Early"),
        ("[Malignant] early Pre-B", "Early"),
        ("Pre", "Pre"),
        ("pre-B", "Pre"),
        ("PreB", "Pre"),
        ("[Malignant] Pre-B", "Pre"),
        ("Pro", "Pro"),
        ("pro-b", "Pro"),
        ("Pro-B cells", "Pro"),
        ("[Malignant] Pro-B", "Pro"),
    ],
)
def test_canonical_label_aliases(name, label):
    assert canonical_label(name) == label


@pytest.mark.parametrize("name", ["prepro", "Normal", "blasts", "preprob", "", "earlypro", "B"])
def test_canonical_label_refuses_unknown_or_ambiguous(name):
    with pytest.raises(BadInput, match="not a known class"):
        canonical_label(name)


def test_number_key_orders_by_file_number():
    names = ["WBC-Malignant-Pro-100.jpg", "WBC-Malignant-Pro-012.jpg", "WBC-Malignant-Pro-2.jpg", "notes.jpg"]
    ordered = [p.name for p in sorted((Path(n) for n in names), key=number_key)]
    assert ordered == ["WBC-Malignant-Pro-2.jpg", "WBC-Malignant-Pro-012.jpg", "WBC-Malignant-Pro-100.jpg", "notes.jpg"]


# --------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("subset", ["Original", "Segmented"])
def test_scan_all_layout_picks_subset(tmp_path, subset):
    make_all_layout(tmp_path, "Original", per_class=3)
    make_all_layout(tmp_path, "Segmented", per_class=4)
    result = scan(tmp_path, subset=subset.lower())
    per_class = 3 if subset == "Original" else 4
    assert result.counts() == {label: per_class for label in LABELS}
    assert all(item.path.parts[-3] == subset for item in result.items)
    assert [item.label for item in result.items] == [label for label in LABELS for _ in range(per_class)]
    # the real name patterns, in file-number order within each class
    pro = [item.path.name for item in result.items if item.label == "Pro"]
    assert pro == [f"WBC-Malignant-Pro-{n:03d}.jpg" for n in range(1, per_class + 1)]


def test_scan_folder_per_class_tree_with_aliases(tmp_path):
    folders = {"Benign": "hem", "Early": "[Malignant] early Pre-B", "Pre": "[Malignant] Pre-B", "Pro": "pro-B"}
    for label, folder in folders.items():
        write_images(tmp_path / folder, PATTERNS[label], [3, 1, 2], seed=LABELS.index(label))
    result = scan(tmp_path)
    assert result.counts() == {label: 3 for label in LABELS}
    for item in result.items:
        assert item.path.parent.name == folders[item.label]
    assert [i.path.name for i in result.items[:3]] == [PATTERNS["Benign"].format(n) for n in (1, 2, 3)]


def test_scan_missing_subset_names_what_exists(tmp_path):
    make_all_layout(tmp_path, "Original", per_class=2)
    with pytest.raises(BadInput, match="no 'Segmented' folder.*Original"):
        scan(tmp_path, subset="Segmented")


def test_scan_structural_errors(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        scan(tmp_path / "nowhere")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(BadInput, match="no class folders"):
        scan(tmp_path / "empty_root")
    make_all_layout(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "Original" / "Monocytes").mkdir()
    with pytest.raises(BadInput, match=r"Monocytes.*not a known class"):
        scan(tmp_path / "d")


def test_scan_empty_class_folder_is_an_error_naming_it(tmp_path):
    make_all_layout(tmp_path, per_class=2)
    pre = tmp_path / "Original" / "Pre"
    shutil.rmtree(pre)
    pre.mkdir()
    (pre / "readme.txt").write_text("no images here")
    with pytest.raises(BadInput, match=r"Pre: class folder has no images"):
        scan(tmp_path)


def test_scan_two_folders_for_one_class_is_an_error(tmp_path):
    write_images(tmp_path / "Pre", PATTERNS["Pre"], [1])
    write_images(tmp_path / "pre-b", PATTERNS["Pre"], [2])
    with pytest.raises(BadInput, match="maps to Pre"):
        scan(tmp_path)


def test_scan_skips_and_counts_non_images_and_hidden_files(tmp_path):
    make_all_layout(tmp_path, per_class=2)
    benign = tmp_path / "Original" / "Benign"
    (benign / "Thumbs.db").write_bytes(b"\0\1")
    (benign / "notes.txt").write_text("x")
    (benign / ".DS_Store").write_bytes(b"x")
    (tmp_path / "Original" / ".cache").mkdir()
    result = scan(tmp_path)
    assert result.counts() == {label: 2 for label in LABELS}
    assert sorted(p.name for p, _ in result.skipped) == ["Thumbs.db", "notes.txt"]
    assert all("not an image" in reason for _, reason in result.skipped)


def test_scan_reads_the_synthetic_set(synth_data):
    result = scan(synth_data)
    assert result.counts() == {label: 12 for label in LABELS}
    assert not result.skipped


# --------------------------------------------------------------------------- duplicates


def test_remove_duplicates_keeps_first_and_reports_pairs(tmp_path):
    make_all_layout(tmp_path, per_class=6)
    pro = tmp_path / "Original" / "Pro"
    for n, src in ((7, 2), (8, 3), (9, 3)):
        shutil.copy(pro / PATTERNS["Pro"].format(src), pro / PATTERNS["Pro"].format(n))
    items = scan(tmp_path).items
    kept, pairs = remove_duplicates(items)
    assert len(items) == 27 and len(kept) == 24 and len(pairs) == 3
    assert [(r.path.name, k.path.name) for r, k in pairs] == [
        ("WBC-Malignant-Pro-007.jpg", "WBC-Malignant-Pro-002.jpg"),
        ("WBC-Malignant-Pro-008.jpg", "WBC-Malignant-Pro-003.jpg"),
        ("WBC-Malignant-Pro-009.jpg", "WBC-Malignant-Pro-003.jpg"),
    ]
    assert kept == [i for i in items if i.path.name not in {"WBC-Malignant-Pro-00%d.jpg" % n for n in (7, 8, 9)}]


def test_remove_duplicates_across_classes_and_against_a_test_set(tmp_path):
    make_all_layout(tmp_path / "data", per_class=3)
    original = tmp_path / "data" / "Original"
    shutil.copy(original / "Benign" / PATTERNS["Benign"].format(1), original / "Pre" / "WBC-Malignant-Pre-050.jpg")
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    shutil.copytree(original / "Early", test_dir / "Early")
    (test_dir / "Early" / PATTERNS["Early"].format(2)).unlink()
    items = scan(tmp_path / "data").items
    test_items = scan(test_dir).items
    kept, pairs = remove_duplicates(items, reference=test_items)
    removed = {(r.path.name, r.label, k.label) for r, k in pairs}
    assert ("WBC-Malignant-Pre-050.jpg", "Pre", "Benign") in removed  # cross-class twin: first (Benign) kept
    assert {r.path.name for r, k in pairs if k in test_items} == {PATTERNS["Early"].format(n) for n in (1, 3)}
    assert len(kept) == len(items) - 3


# --------------------------------------------------------------------------- decoding


def test_load_images_matches_the_shared_preprocess_and_skips_bad_files(tmp_path):
    make_all_layout(tmp_path, per_class=3)
    early = tmp_path / "Original" / "Early"
    (early / "WBC-Malignant-Early-010.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (early / "WBC-Malignant-Early-011.png").write_bytes(b"")
    cv2.imwrite(str(early / "WBC-Malignant-Early-012.png"), np.zeros((30, 30), np.uint8))  # grayscale
    items = scan(tmp_path).items
    x, y, bad = load_images(items, 32, progress=False)
    assert sorted(p.name for p, _ in bad) == [
        "WBC-Malignant-Early-010.jpg",
        "WBC-Malignant-Early-011.png",
        "WBC-Malignant-Early-012.png",
    ]
    assert all(reason and str(path) not in reason for path, reason in bad)
    good = [i for i in items if i.path not in {p for p, _ in bad}]
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [LABELS.index(i.label) for i in good]
    for k in (0, 5, 11):
        np.testing.assert_array_equal(x[k], preprocess(read_image(good[k].path), 32))


def test_load_images_keeps_a_non_square_input_spec(tmp_path):
    """The converter passes the model's InputSpec: a 48x32 model must get 48-wide images, not 32x32."""
    make_all_layout(tmp_path, per_class=1)
    items = scan(tmp_path).items
    spec = InputSpec(height=32, width=48)
    x, _, bad = load_images(items, spec, progress=False)
    assert not bad and x.shape == (len(items), 32, 48, 3)
    np.testing.assert_array_equal(x[0], preprocess(read_image(items[0].path), spec))


def test_load_images_refuses_more_than_the_memory_budget(tmp_path):
    items = [Item(tmp_path / f"{k}.jpg", "Benign") for k in range(100)]
    with pytest.raises(BadInput, match="smaller --img-size"):
        load_images(items, 224, progress=False, memory_budget=1 << 20)


def test_load_images_synthetic_set(synth_data):
    items = scan(synth_data).items
    x, y, bad = load_images(items, 48, progress=False)
    assert not bad and x.shape == (48, 48, 48, 3)
    assert np.bincount(y).tolist() == [12, 12, 12, 12]
