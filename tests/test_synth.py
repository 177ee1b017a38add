"""The procedural smear generator: layout, determinism, the ALL set's scale, morphology vs colour, sessions,
shortcut, video slides, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from edge.errors import BadInput
from edge.manifest import LABELS
from leukedge.cli import main
from trainer.synth.fields import N_SESSIONS, generate_dataset, image_seed, image_style, render, render_field
from trainer.synth.style import AZURE_OD, EOSIN_OD, background_tint
from trainer.synth.video import write_video

NAMES = {"Benign": "WBC-Benign", "Early": "WBC-Malignant-Early", "Pre": "WBC-Malignant-Pre", "Pro": "WBC-Malignant-Pro"}


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def _renders(label, n, size=64, seed=5, shortcut=False):
    out = []
    for i in range(1, n + 1):
        rng = image_seed(seed, label, i)
        out.append(render(rng, label, size, **image_style(rng, label, shortcut, seed)))
    return out


def _fields(label, n, size=64, seed=5, shortcut=False):
    return [f.image for f in _renders(label, n, size, seed, shortcut)]


def test_layout_and_file_names(tmp_path):
    counts = generate_dataset(tmp_path, per_class=3, size=64, seed=0, progress=False)
    assert counts == {label: 3 for label in LABELS}
    expected = sorted(f"Original/{label}/{NAMES[label]}-{i:03d}.jpg" for label in LABELS for i in (1, 2, 3))
    assert _files(tmp_path) == expected
    img = cv2.imread(str(tmp_path / "Original/Pro/WBC-Malignant-Pro-002.jpg"))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    meta = json.loads((tmp_path / "synth.json").read_text())
    assert meta["seed"] == 0 and meta["shortcut"] is False and meta["counts"] == counts
    assert meta["look"] == "all" and meta["sessions"] == N_SESSIONS


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


def test_unknown_label_or_look_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="unknown class"):
        render_field(np.random.default_rng(0), "Blast", 64)
    with pytest.raises(BadInput, match="unknown look"):
        generate_dataset(tmp_path, 1, look="wide")


def _labelled(layer, threshold=0.05):
    """Label image and areas (index = label) of a density layer's connected regions."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((layer > threshold).astype(np.uint8), connectivity=8)
    return labels, stats[:, cv2.CC_STAT_AREA]


def _single_cell_areas(layer, cells, size):
    """Areas of the regions that hold exactly one of `cells` (x, y, r), for cells wholly inside the field."""
    labels, areas = _labelled(layer)
    hit = [labels[int(y), int(x)] if 0 <= x < size and 0 <= y < size else 0 for x, y, _ in cells]
    return [areas[h] for (x, y, r), h in zip(cells, hit)
            if h and hit.count(h) == 1 and r < x < size - r and r < y < size - r]


def test_default_look_has_the_all_sets_scale_and_crowding():
    """Measured on drawn masks of 224 px fields: red cells 14-20 px, 60-150, touching; leukocytes 25-45 px, 1-15."""
    rbc_d, wbc_d, n_rbc, n_wbc, touching, bars = [], [], [], [], [], []
    for i in range(24):
        label = LABELS[i % 4]
        f = render(image_seed(11, label, i), label, 224)
        assert len(_labelled(f.azure)[1]) - 1 <= len(f.wbcs)  # leukocytes may touch, never overlap
        wbc_d += [2 * np.sqrt(a / np.pi) for a in _single_cell_areas(f.azure, f.wbcs, 224)]
        rbc_d += [2 * np.sqrt(a / np.pi) for a in _single_cell_areas(f.rbc, f.rbcs, 224)]
        n_rbc.append(len(f.rbcs))
        n_wbc.append(len(f.wbcs))
        c = np.array(f.rbcs)
        d = np.hypot(c[:, None, 0] - c[None, :, 0], c[:, None, 1] - c[None, :, 1]) + np.eye(len(c)) * 1e9
        touching.append(np.mean(np.min(d - c[:, None, 2] - c[None, :, 2], axis=1) < 0.5))
        bars.append(f.image[-6:, -30:].min() < 80)
    assert 14 <= np.median(rbc_d) <= 20 and 12 < np.percentile(rbc_d, 5) and np.percentile(rbc_d, 95) < 22, rbc_d
    assert 60 <= min(n_rbc) and max(n_rbc) <= 150 and np.ptp(n_rbc) > 40, n_rbc
    assert np.mean(touching) > 0.3  # most red cells touch or overlap a neighbour
    assert 1 <= min(n_wbc) and max(n_wbc) <= 15 and max(n_wbc) >= 6, n_wbc
    assert 27 <= np.median(wbc_d) <= 42 and 20 < np.percentile(wbc_d, 5) and np.percentile(wbc_d, 95) < 50, wbc_d
    assert 0.6 <= np.mean(bars) < 1.0  # a scale-bar label in most fields, not all


def test_closeup_look_is_three_times_the_magnification():
    f = render(np.random.default_rng(2), "Pre", 224, "closeup", scale=1.0)
    radii = [r for *_, r in f.rbcs]
    assert 14 < np.median(radii) < 19 and len(f.rbcs) <= 28 and len(f.wbcs) <= 4


def _mode_colour(img):
    """The median colour of the lightest quarter of pixels: the background."""
    x = img.reshape(-1, 3)
    light = x[x.sum(1) >= np.percentile(x.sum(1), 75)]
    return np.median(light, axis=0)


def _chromaticity(rgb):
    """Colour without brightness: each channel's share of the sum, in thousandths."""
    return 1000 * np.asarray(rgb, float) / np.sum(rgb)


FLAT = dict(hue_deg=0.0, brightness=0.97, vignette=0.0, gradient=(0.0, 0.0), blur=0.5, noise=0.003,
            scale_bar=False, n_wbc=1, rbc_density=0.45, eosin_od=EOSIN_OD, azure_od=AZURE_OD)


def test_background_and_red_cells_span_the_all_sets_colours():
    """Background from pale yellow-white to lilac; red cells from pink to grey-lilac (stain, not class)."""
    yellow = _mode_colour(render_field(np.random.default_rng(0), "Pre", 224, rbc_azure=0.0, **FLAT,
                                       tint=background_tint(0.0)))
    lilac = _mode_colour(render_field(np.random.default_rng(0), "Pre", 224, rbc_azure=0.0, **FLAT,
                                      tint=background_tint(1.0)))
    assert yellow.min() > 200 and lilac.min() > 200  # pale
    assert yellow[2] < yellow[1] <= yellow[0]        # blue lowest: yellow-white
    assert lilac[1] < min(lilac[0], lilac[2]) - 5    # green lowest: lilac

    def rbc_colour(rbc_azure):
        f = render(np.random.default_rng(1), "Pre", 224, rbc_azure=rbc_azure, tint=background_tint(0.5), **FLAT)
        return f.image[(f.rbc > 0.3) & (f.azure == 0)].mean(0)

    pink, grey = rbc_colour(0.0), rbc_colour(0.6)
    assert pink[0] - pink[1] > 30 and pink[2] > pink[1]   # pink: red well above green, blue above green
    assert grey[0] - grey[1] < 0.7 * (pink[0] - pink[1])  # greyer
    assert grey[2] - grey[0] > pink[2] - pink[0] + 10     # and bluer: lilac


def test_sessions_are_shared_by_classes_and_alike_within():
    """Every class draws from every capture session; fields of one session look alike, sessions differ."""
    seen = {label: set() for label in LABELS}
    colours: dict[int, list] = {}
    for label in LABELS:
        for i in range(1, 31):
            rng = image_seed(3, label, i)
            style = image_style(rng, label, False, seed=3)
            seen[label].add(style["session"])
            if i <= 12:
                colours.setdefault(style["session"], []).append(_red_cell_chromaticity(render(rng, label, 96, **style)))
            assert image_style(image_seed(3, label, i), label, True)["session"] == LABELS.index(label)
    assert all(len(s) >= N_SESSIONS - 1 for s in seen.values()), seen
    table = np.array([[sum(image_style(image_seed(4, label, i), label, False, 4)["session"] == k for i in range(300))
                       for k in range(N_SESSIONS)] for label in LABELS])
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert ((table - expected) ** 2 / expected).sum() < 37.7, table  # chi-square, 15 dof, p = 0.001: independent
    means = np.array([np.mean(v, 0) for v in colours.values() if len(v) > 2])
    within = np.mean([np.std(v, 0).mean() for v in colours.values() if len(v) > 2])
    assert np.std(means, 0).mean() > 2 * within, (means, within)


def _red_cell_chromaticity(field):
    """Mean chromaticity of red-cell pixels away from leukocytes: the stain's colour."""
    return _chromaticity(field.image[(field.rbc > 0.3) & (field.azure == 0)].mean(0))


def _nucleus_and_cytoplasm(img):
    """Pixel masks under a fixed neutral stain: dark purple nucleus, blue cytoplasm."""
    r, g, b = (img[..., i].astype(int) for i in range(3))
    nucleus = (g < 120) & (b > r)
    return nucleus, (b - r > 20) & ~nucleus


NEUTRAL = dict(FLAT, noise=0.005, scale=1.0, n_rbc=60, rbc_azure=0.0, tint=np.zeros(3, np.float32))


@pytest.mark.parametrize("look, size", [("all", 224), ("closeup", 96)])
def test_classes_differ_in_morphology(look, size):
    """Under one fixed stain: Benign nuclei are smallest, Early has the highest N:C ratio, Pre the lowest."""
    area, nc = {}, {}
    for label in LABELS:
        a, r = [], []
        for i in range(1, 16):
            img = render_field(image_seed(7, label, i), label, size, look, **NEUTRAL)
            nuc, cyto = _nucleus_and_cytoplasm(img)
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

    benign = np.mean([dark(x) for x in _fields("Benign", 30, size=128)])
    assert np.mean([dark(x) for x in _fields("Early", 30, size=128)]) > 1.5 * benign
    assert np.mean([dark(x) for x in _fields("Pro", 30, size=128)]) > 1.3 * benign


def _red_cell_hue(field):
    """Hue (degrees) of the red cells' mean optical density: the stain's colour, not the cells' amount."""
    x = field.image[(field.rbc > 0.3) & (field.azure == 0)].astype(float) + 1
    white = np.percentile(field.image.reshape(-1, 3), 97, axis=0) + 1
    r, g, b = -np.log(np.minimum(x / white, 1)).mean(0)
    return (np.degrees(np.arctan2(np.sqrt(3) * (g - b), 2 * r - g - b)) - 150 + 180) % 360 - 180


def test_stain_hue_overlaps_without_shortcut_and_separates_with_it():
    for shortcut in (False, True):
        hues = {label: [_red_cell_hue(f) for f in _renders(label, 30, size=96, shortcut=shortcut)]
                for label in LABELS}
        means = np.array([np.mean(hues[label]) for label in LABELS])
        spread = np.mean([np.std(hues[label]) for label in LABELS])
        if shortcut:  # classes ordered by their hue offset, each well apart
            assert np.all(np.diff(means) > 2 * spread), (means, spread)
        else:  # every class sees every session: each class's usual hues cover every other class's median
            for label in LABELS:
                lo, hi = np.percentile(hues[label], [10, 90])
                assert all(lo < np.median(hues[other]) < hi for other in LABELS), (label, lo, hi, hues)


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
    meta = write_video(path, n_fields=5, size=128, seed=2, fps=10, labels=["Pro", "Benign", "Early"], per_slide=2)
    sidecar = json.loads((tmp_path / (name + ".json")).read_text())
    assert sidecar["fields"] == meta["fields"] and sidecar["slides"] == meta["slides"]
    frames = _read_frames(path)
    assert len(frames) == meta["n_frames"] == len(meta["frame_kinds"])
    assert frames[0].shape == (128, 128, 3)
    assert [f["label"] for f in meta["fields"]] == ["Pro", "Pro", "Benign", "Benign", "Early"]
    assert [f["slide"] for f in meta["fields"]] == [0, 0, 1, 1, 2]

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


def test_video_slides_are_patients_with_time_to_change_samples(tmp_path):
    """One slide = one class; a slide change leaves a lab system at least a second of non-still frames."""
    meta = write_video(tmp_path / "v.avi", n_fields=6, size=96, seed=3, fps=10, per_slide=3)
    slides, kinds = meta["slides"], meta["frame_kinds"]
    assert [s["fields"] for s in slides] == [[0, 3], [3, 6]] and slides[0]["label"] != slides[1]["label"]
    assert slides[0]["frames"][0] == 0 and slides[0]["frames"][1] == slides[1]["frames"][0]
    assert slides[-1]["frames"][1] == meta["n_frames"]
    for s in slides:
        fields = meta["fields"][s["fields"][0]:s["fields"][1]]
        assert {f["label"] for f in fields} == {s["label"]} and {f["slide"] for f in fields} == {s["slide"]}
        assert s["frames"][0] <= fields[0]["still"][0] and fields[-1]["still"][1] == s["frames"][1]
    change = kinds[slides[0]["frames"][1]:meta["fields"][3]["still"][0]]
    assert len(change) >= meta["fps"] and "still" not in change


def test_video_default_labels_use_every_class(tmp_path):
    meta = write_video(tmp_path / "v.avi", n_fields=4, size=64, seed=9, fps=2, per_slide=1, look="closeup")
    assert sorted(s["label"] for s in meta["slides"]) == sorted(LABELS) and meta["look"] == "closeup"


def test_video_bad_inputs(tmp_path):
    with pytest.raises(BadInput, match=".mp4 or .avi"):
        write_video(tmp_path / "v.mkv", n_fields=1, size=64)
    with pytest.raises(BadInput, match="labels"):
        write_video(tmp_path / "v.mp4", n_fields=2, size=64, labels=["Benign", "Blast"], per_slide=1)
    with pytest.raises(BadInput, match="one per slide"):
        write_video(tmp_path / "v.mp4", n_fields=4, size=64, labels=["Benign", "Pro", "Pre"], per_slide=2)


def test_cli_writes_data_and_video(tmp_path, capsys):
    out = tmp_path / "data"
    rc = main(["synth", "--out", str(out), "--per-class", "2", "--size", "40", "--seed", "1", "--no-progress",
               "--video", str(tmp_path / "v.avi"), "--video-fields", "2", "--video-size", "64"])
    assert rc == 0
    assert len(_files(out)) == 8
    assert len(_read_frames(tmp_path / "v.avi")) == json.loads((tmp_path / "v.avi.json").read_text())["n_frames"]
    printed = capsys.readouterr().out
    assert "wrote 8 all fields" in printed and "v.avi" in printed and "1 slides of 2 fields" in printed


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
