"""The edge agent's loop, run and timed stage by stage for benchmarks/bench_agent.py.

`run_mode` drives a real `edge.agent.Agent` step by step (the body of `Agent.run`), on a
replay folder or on RGB arrays handed over as a live camera does, with the station page
off, idle or watched by one client, and returns per-stage percentiles, the loop thread's
CPU time outside `invoke`, and the time spent in the station's hooks.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np

from edge.agent import Agent
from edge.config import load_config
from edge.sources import END, Frame, Watchdog
from edge.stats import STAGES, Stats  # noqa: F401 - STAGES re-exported for bench_agent


class ArraySource:
    """Frames handed over as RGB arrays, as a live camera does: no file, no decoding."""

    live = False

    def __init__(self, frames: list):
        self.uri, self.frames, self.i = "arrays", frames, 0

    def open(self):
        return self

    def read(self):
        frame = Frame(self.frames[self.i % len(self.frames)], self.i, f"arrays#{self.i}", 0.0)
        self.i += 1
        return frame

    def close(self):
        pass


class PageClient(threading.Thread):
    """One browser's worth of load: the SSE stream, and /frame.jpg whenever the field changes."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.events, self.thumbs, self.stop = url, 0, 0, False

    def run(self) -> None:
        seen = None
        with urllib.request.urlopen(self.url + "api/events", timeout=30) as stream:
            for line in stream:
                if self.stop:
                    return
                if not line.startswith(b"data: "):
                    continue
                self.events += 1
                field = json.loads(line[6:])["field"]
                if field and field["frame_version"] != seen:
                    seen = field["frame_version"]
                    urllib.request.urlopen(self.url + f"frame.jpg?v={seen}", timeout=30).read()
                    self.thumbs += 1


def run_mode(mode: str, args, bundle: Path, frames: Path, broker, work: Path, raw: list | None = None) -> dict:
    """The agent loop on the replay folder (or `raw` arrays) with the page off, idle or watched."""
    tag = f"{mode}-{frames.name}{'-raw' if raw else ''}"

    cfg = load_config(None, {
        "bundle": str(bundle), "device_id": f"bench-{mode}",
        "source": {"uri": str(frames), "loop": True, "fps": "max"}, "gate": {"mode": "continuous"},
        "backend": {"threads": args.threads}, "max_frames": args.frames + 100,
        "mqtt": {"url": broker.url if broker else None, "stats_interval_s": 3600},
        "outbox": {"path": str(work / f"outbox-{tag}.sqlite")},
        "result_log": {"path": str(work / f"results-{tag}.jsonl")},
        "ui": {"listen": "off" if mode == "off" else "127.0.0.1:0"},
    })
    agent = Agent(cfg, source=Watchdog(lambda: ArraySource(raw), loop=True).open() if raw else None)
    agent.start()
    if args.cv_threads is not None:  # after start: the agent sets its own
        cv2.setNumThreads(args.cv_threads)
    if broker:  # measure the connected steady state, not the first connect
        agent.parts.publisher.connected.wait(10)
    client = None
    if mode == "client":
        client = PageClient(agent.station.url)
        client.start()

    # CPU time of this thread, outside and inside invoke: the overhead without the waits
    # a busy machine adds (wall-clock numbers include being preempted by other processes).
    infer, in_invoke, cpu_overhead = agent.parts.backend.infer_with_features, [0.0], []

    def timed_infer(x):
        c0 = time.thread_time()
        try:
            return infer(x)
        finally:
            in_invoke[0] += time.thread_time() - c0

    agent.parts.backend.infer_with_features = timed_infer

    # Time the loop thread spends in the station's hooks, per frame: the page's own cost,
    # attributed directly rather than as a difference of two noisy runs (perf_counter: cheap
    # enough not to inflate what it measures; a p50 of short spans is rarely preempted)
    in_station, hooks_ms = [0.0], []

    def timed(method):
        def wrapper(*a):
            c0 = time.perf_counter()
            try:
                return method(*a)
            finally:
                in_station[0] += time.perf_counter() - c0
        return wrapper

    st_ = agent.station
    st_.on_frame, st_.on_message, st_.tick = timed(st_.on_frame), timed(st_.on_message), timed(st_.tick)

    def step():  # the body of Agent.run's loop
        c0, in_invoke[0], in_station[0] = time.thread_time(), 0.0, 0.0
        frame = agent.parts.source.read()
        if frame is not None and frame is not END:
            agent.process(frame)
        agent.housekeeping()
        cpu_overhead.append((time.thread_time() - c0 - in_invoke[0]) * 1e3)
        hooks_ms.append(in_station[0] * 1e3)

    while agent.parts.stats.frames < 100:  # warm-up
        step()
    agent.parts.stats = Stats(window=args.frames)
    cpu_overhead.clear()
    hooks_ms.clear()
    load = os.getloadavg()[0]
    t_run = time.perf_counter()
    while agent.parts.stats.frames < args.frames:
        step()
    wall = time.perf_counter() - t_run
    st = agent.parts.stats
    out = {"mode": mode, "load": load, "fps": args.frames / wall, "backlog": agent.parts.outbox.rows,
           "backend": agent.parts.backend.name, "threads": agent.parts.backend.threads, "stages": {},
           "cpu": np.percentile(cpu_overhead, [50, 95]),
           "hooks": (float(np.percentile(hooks_ms, 50)), float(np.mean(hooks_ms)))}
    for name in STAGES:
        values = np.fromiter(st.stages[name], float)
        if len(values):
            out["stages"][name] = np.percentile(values, [50, 95])
    if client:
        client.stop = True
        out["client"] = f"{client.events} SSE updates, {client.thumbs} thumbnails"
    agent.shutdown()
    return out
