"""The procedural smear generator: layout, determinism, morphology vs colour, shortcut, video, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.bundle import LABELS
from edge.errors import BadInput
from leukedge.cli import main
from trainer.synth.video import write_video
from trainer.synth.fields import generate_dataset, image_seed, image_style, render_field

NAMES = {"Benign": "WBC-Benign", "Early": "WBC-Malignant-Early", "Pre": "WBC-Malignant-Pre", "Pro": "WBC-Malignant-Pro"}


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def _fields(label, n, size=64, seed=5, shortcut=False):
    out = []
    for i in range(1, n + 1):
        rng = image_seed(seed, label, i)
        out.append(render_field(rng, label, size, **image_style(rng, label, shortcut)))
    return out


def test_layout_and_file_names(tmp_path):
    counts = generate_dataset(tmp_path, per_class=3, size=64, seed=0, progress=False)
    assert counts == {label: 3 for label in LABELS}
    expected = sorted(f"Original/{label}/{NAMES[label]}-{i:03d}.jpg" for label in LABELS for i in (1, 2, 3))
    assert _files(tmp_path) == expected
    img = cv2.imread(str(tmp_path / "Original/Pro/WBC-Malignant-Pro-002.jpg"))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["seed"] == 0 and meta["shortcut"] is False and meta["counts"] == counts


def test_same_seed_same_bytes_and_independent_of_count(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_dataset(a, per_class=2, size=48, seed=3, progress=False)
    generate_dataset(b, per_class=3, size=48, seed=3, progress=False)
    generate_dataset(c, per_class=2, size=48, seed=4, progress=False)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel  # per-image child seeds
        assert (a / rel).read_bytes() != (c / rel).read_bytes(), rel


@pytest.mark.parametrize("size", [32, 77, 224])
def test_render_field_shape_and_range(size):
    img = render_field(np.random.default_rng(1), "Early", size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert 150 < np.percentile(img, 90) and img.min() < 150  # light background, darker cells


def test_unknown_label_is_bad_input():
    with pytest.raises(BadInput, match="unknown class"):
        render_field(np.random.default_rng(0), "Blast", 64)


def _nucleus_and_cytoplasm(img):
    """Pixel masks under a fixed neutral stain: dark purple nucleus, blue cytoplasm."""
    r, g, b = (img[..., i].astype(int) for i in range(3))
    nucleus = (g < 120) & (b > r)
    return nucleus, (b - r > 20) & ~nucleus


NEUTRAL = dict(hue_deg=0.0, brightness=0.97, vignette=0.0, gradient=(0.0, 0.0), blur=0.5, noise=0.005,
               scale=1.0, n_wbc=1, rbc_coverage=0.2, rbc_density=0.45, tint=np.zeros(3, np.float32),
               eosin_od=np.array([0.25, 0.72, 0.64], np.float32), azure_od=np.array([0.85, 0.8, 0.3], np.float32))


def test_classes_differ_in_morphology():
    """Under one fixed stain: Benign nuclei are smallest, Early has the highest N:C ratio, Pre the lowest."""
    area, nc = {}, {}
    for label in LABELS:
        a, r = [], []
        for i in range(1, 16):
            nuc, cyto = _nucleus_and_cytoplasm(render_field(image_seed(7, label, i), label, 96, **NEUTRAL))
            a.append(nuc.sum())
            r.append(nuc.sum() / (nuc.sum() + cyto.sum()))
        area[label], nc[label] = np.mean(a), np.mean(r)
    assert area["Benign"] < 0.7 * min(area["Early"], area["Pro"])
    assert nc["Early"] > nc["Pro"] > nc["Pre"] + 0.05
    assert nc["Benign"] > nc["Pre"] + 0.1


def test_dark_fraction_differs_under_random_stains():
    """With stain, light and blur randomised, large blasts still cover more dark pixels than hematogones."""
    def dark(img):
        gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(float)
        return float((gray < 0.6 * np.percentile(gray, 90)).mean())

    benign = np.mean([dark(x) for x in _fields("Benign", 30)])
    assert np.mean([dark(x) for x in _fields("Early", 30)]) > 1.5 * benign
    assert np.mean([dark(x) for x in _fields("Pro", 30)]) > 1.3 * benign


def _red_cell_hue(img):
    """Hue (degrees) of the lightly stained pixels' optical density: the stain's colour, not the cells' amount."""
    x = img.reshape(-1, 3).astype(float) + 1
    od = -np.log(np.minimum(x / np.percentile(x, 97, axis=0), 1))
    s = od.sum(1)
    r, g, b = od[(s > 0.2) & (s < 0.8)].mean(0)
    return (np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) - 150 + 180) % 360 - 180


def test_stain_hue_overlaps_without_shortcut_and_separates_with_it():
    for shortcut in (False, True):
        hues = {label: [_red_cell_hue(x) for x in _fields(label, 30, shortcut=shortcut)] for label in LABELS}
        means = np.array([np.mean(hues[label]) for label in LABELS])
        spread = np.mean([np.std(hues[label]) for label in LABELS])
        if shortcut:  # classes ordered by their hue offset, each well apart
            assert np.all(np.diff(means) > 2 * spread), (means, spread)
        else:
            assert means.max() - means.min() < 0.8 * spread, (means, spread)


@pytest.mark.slow
def test_colour_baseline_collapses_on_decorrelated_data():
    """A colour-statistics classifier fitted on shortcut data is near-perfect there and fails on normal data."""
    from threadpoolctl import threadpool_limits

    from trainer.baseline import color_features, fit_color_baseline

    def data(seed, shortcut):
        x = [f for label in LABELS for f in _fields(label, 40, size=48, seed=seed, shortcut=shortcut)]
        return np.stack(x), np.repeat(np.arange(len(LABELS)), 40)

    def accuracy(x, y):
        return float((clf.predict(color_features(x)) == y).mean())

    with threadpool_limits(1):  # tiny fit: threads only contend on a shared runner
        clf = fit_color_baseline(*data(0, True))
        same, decorrelated = accuracy(*data(1, True)), accuracy(*data(2, False))
    assert same > 0.8 and decorrelated < same - 0.3, (same, decorrelated)


def _read_frames(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _sharpness(frame):
    return cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()


@pytest.mark.parametrize("name", ["slide.mp4", "slide.avi"])
def test_video_is_readable_and_sidecar_marks_still_sharp_fields(tmp_path, name):
    path = tmp_path / name
    labels = ["Pro", "Benign", "Early", "Pre"]
    meta = write_video(path, n_fields=4, size=128, seed=2, fps=10, labels=labels)
    assert json.loads((tmp_path / (name + ".json")).read_text())["fields"] == meta["fields"]
    frames = _read_frames(path)
    assert len(frames) == meta["n_frames"] == len(meta["frame_kinds"])
    assert frames[0].shape == (128, 128, 3)
    assert [f["label"] for f in meta["fields"]] == labels

    sharp = [_sharpness(f) for f in frames]
    blurred = [i for i, k in enumerate(meta["frame_kinds"]) if k == "blurred"]
    assert blurred, "at least one field has a focus change"
    for field in meta["fields"]:
        start, stop = field["still"]
        assert stop - start == 10 and set(meta["frame_kinds"][start:stop]) == {"still"}
        still = frames[start:stop]
        assert min(sharp[start:stop]) > 2 * max(sharp[i] for i in blurred)
        if field["blurred"]:  # the focus hunt comes right before this field's still period
            b0, b1 = field["blurred"]
            assert b1 == start and min(sharp[start:stop]) > 3 * max(sharp[b0:b1])
        # a still period differs only by sensor noise; a pan changes the picture
        noise = max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(still, still[1:]))
        s0, s1 = field["moving"]
        pan = np.abs(frames[s1 - 1].astype(int) - frames[s1 - 2].astype(int)).mean()
        assert noise < 4 and pan > 2 * noise


def test_video_bad_inputs(tmp_path):
    with pytest.raises(BadInput, match=".mp4 or .avi"):
        write_video(tmp_path / "v.mkv", n_fields=1, size=64)
    with pytest.raises(BadInput, match="labels"):
        write_video(tmp_path / "v.mp4", n_fields=2, size=64, labels=["Benign", "Blast"])


def test_cli_writes_data_and_video(tmp_path, capsys):
    out = tmp_path / "data"
    rc = main(["synth", "--out", str(out), "--per-class", "2", "--size", "40", "--seed", "1", "--no-progress",
               "--video", str(tmp_path / "v.avi"), "--video-fields", "2", "--video-size", "64"])
    assert rc == 0
    assert len(_files(out)) == 8
    assert len(_read_frames(tmp_path / "v.avi")) == json.loads((tmp_path / "v.avi.json").read_text())["n_frames"]
    printed = capsys.readouterr().out
    assert "wrote 8 fields" in printed and "v.avi" in printed


def _exit_code(argv):
    """main's return code; argparse's own usage errors leave through SystemExit."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args, message", [
    (["--per-class", "0"], "--per-class"),
    (["--per-class", "2", "--size", "16"], "--size"),
    (["--per-class", "x"], "invalid int"),
    ([], "--per-class"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, args, message):
    assert _exit_code(["synth", "--out", str(tmp_path / "d"), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_out_is_a_file_and_nothing_to_do(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert _exit_code(["synth", "--out", str(f), "--per-class", "1"]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert _exit_code(["synth"]) == 2
    assert "--out" in capsys.readouterr().err
