"""Hostile input, end to end: images and videos that must never stop the agent."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from leukedge.agent_process import write_images
from tests.agent_proc import blank_png
from tests.hostile import assert_refused, bundle, leukedge, queued  # noqa: F401  (bundle: a fixture)

# =========================================================================== frames and sources
# (issue 10 items 3, 6, 11, 13, 14; bad-frame warnings rate-limited; skipped files named)


class TestFramesAndSources:
    """One hostile image or video never stops the agent: each frame is classified or counted
    as bad with its reason, named in the results log, and what was queued stays queued."""

    @staticmethod
    def run_agent(tmp_path: Path, bundle: Path, source: Path, *extra, config: str | None = None):
        """`leukedge agent` offline on `source`: (process, results-log records, outbox rows)."""
        work = tmp_path / "run"
        work.mkdir(exist_ok=True)
        args = ["agent", "--bundle", bundle, "--source", source, "--mqtt", "off", "--backend", "litert", "--fps", "max",
                "--outbox", work / "outbox.sqlite", "--result-log", work / "results.jsonl", *extra]
        if config:
            (work / "agent.yaml").write_text(config)
            args += ["--config", work / "agent.yaml"]
        proc = leukedge(*args, timeout=300)
        log = work / "results.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        rows = queued(work / "outbox.sqlite") if (work / "outbox.sqlite").exists() else []
        return proc, records, rows

    @staticmethod
    def assert_nothing_lost(records: list[dict], rows) -> None:
        """Offline, every result and sample in the results log is also waiting in the outbox."""
        logged = sorted(r["id"] for r in records if r["type"] in ("result", "sample") and "id" in r)
        outbox = sorted(json.loads(p)["id"] for t, p in rows if t.endswith(("/result", "/sample")))
        assert logged == outbox and logged

    @staticmethod
    def skipped(records: list[dict]) -> dict[str, str]:
        return {r["frame"]: r["reason"] for r in records if r["type"] == "skipped"}

    def test_hostile_images_in_a_folder(self, tmp_path, bundle):
        """A 60000x20 PNG used to end the agent with exit 1 (the files after it never read); a
        16000x16000 PNG (750 kB) made it peak at 1.6 GB; a corrupt `grayscale_dtype.jpg` was
        counted as grayscale. Now: each is processed or skipped with its reason, the run goes on."""
        import cv2
        import numpy as np

        folder = write_images(tmp_path / "in", n=3, size=96)
        rng = np.random.default_rng(5)
        cv2.imwrite(str(folder / "a_panorama.png"), rng.integers(0, 256, (20, 60000, 3), dtype=np.uint8))
        (folder / "b_bomb.png").write_bytes(blank_png(16000, 16000))
        (folder / "c_grayscale_dtype.jpg").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
        proc, records, rows = self.run_agent(tmp_path, bundle, folder)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        fields = sorted((r["frame"]["w"], r["frame"]["h"]) for r in records if r["type"] == "result")
        assert fields == [(96, 96)] * 3 + [(60000, 20)]
        assert self.skipped(records) == {"b_bomb.png": "too_large", "c_grayscale_dtype.jpg": "corrupt"}
        self.assert_nothing_lost(records, rows)
        # the same folder looped: it used to crash at every restart
        shutil.rmtree(tmp_path / "run")
        proc, records, rows = self.run_agent(tmp_path, bundle, folder, "--loop", "--max-frames", "18",
                                             "--gate", "continuous")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert sum(r["type"] == "result" for r in records) == 12
        assert [r["frame"] for r in records if r["type"] == "skipped"] == ["b_bomb.png", "c_grayscale_dtype.jpg"]
        self.assert_nothing_lost(records, rows)

    def test_video_broken_part_way_is_reported(self, tmp_path, bundle):
        """A video cut in the middle used to end with exit 0 after half its fields and no word.
        Now the fields before the break are kept and the run ends with one error line, exit 2."""
        import cv2
        import numpy as np

        path = tmp_path / "v.avi"
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 96))
        rng = np.random.default_rng(0)
        for _ in range(120):
            w.write(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
        w.release()
        data = path.read_bytes()
        (tmp_path / "cut.avi").write_bytes(data[: len(data) // 2])
        proc, records, rows = self.run_agent(tmp_path, bundle, tmp_path / "cut.avi", "--gate", "continuous")
        line = assert_refused(proc, "cut.avi", "stops decoding", "120")
        assert "Traceback" not in proc.stderr
        results = [r for r in records if r["type"] == "result"]
        assert 30 < len(results) < 90, line
        self.assert_nothing_lost(records, rows)
        shutil.rmtree(tmp_path / "run")
        proc, records, _ = self.run_agent(tmp_path, bundle, path, "--gate", "continuous")
        assert proc.returncode == 0 and sum(r["type"] == "result" for r in records) == 120, proc.stderr[-2000:]

    def test_a_folder_of_images_classifies_each_with_the_default_gate(self, tmp_path, bundle):
        """`leukedge agent --source folder/` used to give 0 fields with the default still gate."""
        import cv2
        import numpy as np

        folder = tmp_path / "scans"
        folder.mkdir()
        rng = np.random.default_rng(3)
        for i in range(5):
            img = np.full((128, 128, 3), 225, np.uint8)
            for _ in range(12):
                x, y = (int(v) for v in rng.integers(12, 116, 2))
                cv2.circle(img, (x, y), int(rng.integers(4, 12)), tuple(int(c) for c in rng.integers(40, 160, 3)), -1)
            cv2.imwrite(str(folder / f"scan-{i}.png"), img)
        cv2.imwrite(str(folder / "scan-9-blank.png"), np.full((128, 128, 3), 210, np.uint8))
        proc, records, rows = self.run_agent(tmp_path, bundle, folder)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert sum(r["type"] == "result" for r in records) == 5
        self.assert_nothing_lost(records, rows)
        shutil.rmtree(tmp_path / "run")
        proc, records, _ = self.run_agent(tmp_path, bundle, folder / "scan-2.png")  # a one-image source
        assert proc.returncode == 0 and sum(r["type"] == "result" for r in records) == 1, proc.stderr[-2000:]

    def test_a_source_that_yields_no_field_says_why(self, tmp_path, bundle):
        """All images blurred: no field, and the log says which gate setting rejected them."""
        import cv2
        import numpy as np

        folder = tmp_path / "blurred"
        folder.mkdir()
        for i in range(4):  # cell-like discs, out of focus: contrast kept, sharpness gone
            img = np.full((96, 96, 3), 225, np.uint8)
            for x, y in np.random.default_rng(i).integers(10, 86, (10, 2)):
                cv2.circle(img, (int(x), int(y)), 7, (90, 60, 140), -1)
            cv2.imwrite(str(folder / f"b{i}.png"), cv2.GaussianBlur(img, (0, 0), 3))
        proc, records, _ = self.run_agent(tmp_path, bundle, folder)
        assert proc.returncode == 0 and not [r for r in records if r["type"] == "result"]
        why = [line for line in proc.stderr.splitlines() if "no field" in line]
        assert len(why) == 1 and "4 blurred" in why[0] and "gate.focus_threshold" in why[0], proc.stderr[-2000:]

    def test_bad_frame_warnings_are_rate_limited_but_all_counted(self, tmp_path, bundle):
        """300 corrupt files: a few warning lines, every one counted in stats and named in the log."""
        folder = write_images(tmp_path / "in", n=2, size=96)
        for i in range(300):
            (folder / f"junk-{i:03d}.jpg").write_bytes(b"\xff\xd8 not an image %d" % i)
        proc, records, rows = self.run_agent(tmp_path, bundle, folder, "--gate", "continuous")
        assert proc.returncode == 0, proc.stderr[-2000:]
        warnings = [line for line in proc.stderr.splitlines() if "bad frame skipped" in line]
        assert 1 <= len(warnings) <= 20, len(warnings)
        assert len(self.skipped(records)) == 300 and set(self.skipped(records).values()) == {"corrupt"}
        final = [line for line in proc.stderr.splitlines() if "stats:" in line][-1]
        assert "bad frames 300" in final, final
        self.assert_nothing_lost(records, rows)

    def test_backend_threads_follow_the_allowed_cores(self, tmp_path, bundle):
        """LiteRT's default was 1 thread whatever the box; now the allowed cores (at most 4)
        unless `backend.threads` says otherwise."""
        folder = write_images(tmp_path / "in", n=2, size=96)
        cores = sorted(os.sched_getaffinity(0))
        want = min(len(cores), 4)
        proc, _, _ = self.run_agent(tmp_path, bundle, folder, "--gate", "continuous")
        assert proc.returncode == 0 and f"litert-cpu, {want} CPU threads" in proc.stderr, proc.stderr[-2000:]
        shutil.rmtree(tmp_path / "run")
        proc, _, _ = self.run_agent(tmp_path, bundle, folder, "--gate", "continuous",
                                    config=f"bundle: {bundle}\nbackend: {{threads: 1}}\n")
        assert proc.returncode == 0 and "litert-cpu, 1 CPU threads" in proc.stderr, proc.stderr[-2000:]
