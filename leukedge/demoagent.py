"""The demo's agent step: the agent as its own process on the microscope video, a lab system on
MQTT, and the station page left up after the video for a person to look at.

The agent runs with `--linger -1`: when the video ends it keeps its page, commands and MQTT up
until stopped. The demo notices the end in the agent's log (edge.agent.SOURCE_ENDED), has the
lab system take the last slide off the stage (End), and gathers what the summary needs while the
page is still up; it stops the agent (SIGTERM: flush, exit 0) only after the summary is printed
and the page had its time (`hold_page`): until Enter in a terminal, PAGE_LINGER_S otherwise,
until Ctrl-C with `--serve`.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from edge.agent import SOURCE_ENDED
from edge.errors import LeukedgeError
from edge.messages import DEFAULT_PREFIX
from leukedge import demoreport
from leukedge.lab import LabSystem, slide_id
from leukedge.localbroker import Broker, free_port, mosquitto_available

DEVICE = "demo-scope"  # the demo agent's device id
PAGE_LINGER_S = 30  # the page stays up this long after the summary when no one can press Enter
VIDEO_TIMEOUT_S = 600  # a video of a few hundred frames at its frame rate: far less


def page_hold(serve: bool) -> float | str:
    """How long the page stays up after the summary: 'enter' in a terminal, -1 (until Ctrl-C) with
    --serve, else PAGE_LINGER_S seconds."""
    if serve:
        return -1
    return "enter" if sys.stdin.isatty() and sys.stdout.isatty() else PAGE_LINGER_S


class DemoAgent:
    """`with DemoAgent(...) as agent: run = agent.wait_video(); ...; agent.hold_page(how)`."""

    def __init__(self, bundle: Path, video: Path, work: Path, offline: bool):
        self.bundle, self.video, self.work = bundle, video, work
        self.meta = json.loads(Path(f"{video}.json").read_text())
        self.broker = None if offline or not mosquitto_available() else Broker(work / "broker")
        self.lab: LabSystem | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path = work / "agent.log"
        self.url = ""
        self.t0 = 0.0

    def __enter__(self) -> "DemoAgent":
        work, meta = self.work, self.meta
        work.mkdir(parents=True, exist_ok=True)
        (work / "outbox.db").unlink(missing_ok=True)
        (work / "results.jsonl").unlink(missing_ok=True)  # the log appends: a rerun's summary reads this run only
        config = {"source": {"fps": meta["fps"]}, "mqtt": {"stats_interval_s": 0.2}}
        if self.broker is None:  # no lab system to say where slides change: pool a slide's worth of fields per sample
            config["sample"] = {"fields_per_sample": meta["per_slide"], "auto_open": True}  # unattended, page or not
        (work / "agent.yaml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        cmd = [sys.executable, "-m", "leukedge.cli", "agent", "--config", str(work / "agent.yaml"),
               "--bundle", str(self.bundle), "--source", str(self.video), "--device-id", DEVICE,
               "--outbox", str(work / "outbox.db"), "--result-log", str(work / "results.jsonl"),
               "--drain-timeout", "10", "--ui", f"127.0.0.1:{port}", "--linger", "-1"]
        if self.broker is not None:
            self.broker.start()
        cmd += ["--mqtt", self.broker.url if self.broker else "off"]
        print(f"  station page: {self.url}  (open it in a browser; it stays up after the summary)", flush=True)
        if self.broker is None:
            print("  no mosquitto binary (or --offline): the agent runs offline, results stay in the outbox;\n"
                  f"  without a lab system a sample closes after {meta['per_slide']} fields")
        else:
            self.lab = LabSystem(self.broker.port, DEFAULT_PREFIX, DEVICE, meta["slides"])
            print("  slides: " + ", ".join(f"{slide_id(s)} {s['label']}" for s in meta["slides"]))
        self.t0 = time.monotonic()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=self._log)
        return self

    def wait_video(self) -> dict:
        """Block until the agent has read the whole video; then what the summary needs: `lines`, the
        `samples` and `results` the agent sent, the video's `slides`, the `mode` and the `seconds`."""
        deadline = time.monotonic() + VIDEO_TIMEOUT_S
        while SOURCE_ENDED not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise LeukedgeError(f"the agent exited with code {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise LeukedgeError(f"the agent did not finish the video in {VIDEO_TIMEOUT_S} s; see {self.log_path}")
            time.sleep(0.2)
        wall = time.monotonic() - self.t0
        print(f"  agent log: {self.log_path}")
        slides = self.meta["slides"]
        if self.lab is None:
            samples, results = demoreport.read_log(self.work / "results.jsonl")
            return {"lines": _offline_summary(self.work / "outbox.db", wall), "samples": samples,
                    "results": results, "slides": slides, "mode": "offline", "seconds": wall}
        self.lab.finish()
        return {"lines": self.lab.summary(wall), "samples": self.lab.samples, "results": list(self.lab.results.values()),
                "slides": slides, "mode": "broker", "seconds": wall}

    def hold_page(self, how: float | str) -> None:
        """Keep the page up: 'enter' until Enter is pressed, -1 until Ctrl-C, else that many seconds."""
        try:
            if how == "enter":
                print(f"\n  station page still up at {self.url} — press Enter to stop it", flush=True)
                input()
            elif how == -1:
                print(f"\n  station page up at {self.url} until Ctrl-C", flush=True)
                while self.proc.poll() is None:
                    time.sleep(0.2)
            elif how:
                print(f"\n  station page stays up at {self.url} for {how:.0f} s", flush=True)
                time.sleep(how)
        except (EOFError, KeyboardInterrupt):  # Ctrl-C reached the agent too: it flushes and exits 0
            print()

    def __exit__(self, *exc) -> None:
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)  # flush and exit 0; a Ctrl-C reached it already
                try:
                    rc = self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    rc = self.proc.wait()
                self._log.close()
                if rc != 0 and exc[0] is None:
                    raise LeukedgeError(f"the agent exited with code {rc}; see {self.log_path}")
        finally:
            if self.lab is not None:
                self.lab.stop()
            if self.broker is not None:
                self.broker.stop()


def _offline_summary(outbox: Path, wall: float) -> list[str]:
    with sqlite3.connect(outbox) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        counts = {t: db.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}
    return [f"agent ran offline in {wall:.1f} s; outbox {outbox} holds {counts} (sent when a broker is reachable)"]
