"""The station page under a bounded hostile load: does `/healthz` answer, does the loop slow?

Runs the real agent (`leukedge agent`, its own process) on a looped folder of frames with
the page on 127.0.0.1, measures its frame rate idle (from `leukedge_frames_total` in
`/metrics`), then again while leukedge/station_load.py's clients hit the page (slow clients
reconnecting as they are closed, SSE clients, oversized requests), polling `/healthz`
throughout. Prints healthz latency p50/max and frames/s idle vs under load. Target: every
probe answered, frames/s under load within 20 % of idle.

    python benchmarks/bench_station_load.py [--seconds 15] [--slow 200] [--streams 40]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leukedge.agent_process import AgentProcess, agent_config, write_images  # noqa: E402
from leukedge.bundle_factory import make_small_bundle  # noqa: E402
from leukedge.station_load import Load, probe_healthz  # noqa: E402


def frames_total(url: str) -> float:
    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("leukedge_frames_total "):
                return float(line.split()[1])
    raise RuntimeError("no leukedge_frames_total in /metrics")


def frame_rate(url: str, seconds: float) -> float:
    n0, t0 = frames_total(url), time.monotonic()
    time.sleep(seconds)
    return (frames_total(url) - n0) / (time.monotonic() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="each phase (idle, under load); at most 60")
    ap.add_argument("--slow", type=int, default=200, help="slow clients (at most 400)")
    ap.add_argument("--streams", type=int, default=40, help="SSE clients (at most 100)")
    ap.add_argument("--fps", type=float, default=20.0, help="the source's frame rate (a camera's pace)")
    args = ap.parse_args()
    seconds, slow, streams = min(args.seconds, 60.0), min(args.slow, 400), min(args.streams, 100)
    work = Path(tempfile.mkdtemp(prefix="leukedge-bench-station-"))
    bundle = make_small_bundle(work)
    frames = write_images(work / "frames", 20)
    cfg = agent_config(work, bundle, frames, ui={"listen": "127.0.0.1:0"},
                       source={"uri": str(frames), "loop": True, "fps": args.fps})
    agent = AgentProcess(work, cfg).start()
    try:
        url = agent.page_url()
        time.sleep(3.0)  # past start-up
        idle = frame_rate(url, seconds)
        idle_probe = probe_healthz(url, 2.0)
        with Load(int(url.rsplit(":", 1)[1].strip("/")), slow=slow, streams=streams) as load:
            time.sleep(2.0)  # every client connected
            n0, t0 = frames_total(url), time.monotonic()
            loaded_probe = probe_healthz(url, seconds)
            loaded = (frames_total(url) - n0) / (time.monotonic() - t0)
        counts = load.counts
    finally:
        agent.terminate()
    ms = lambda xs: (1000 * statistics.median(xs), 1000 * max(xs))  # noqa: E731
    print(f"load: {slow} slow clients, {streams} SSE clients, oversized requests; {seconds:g} s per phase; "
          f"source at {args.fps:g} fps")
    print(f"  clients: {counts}")
    print(f"  /healthz idle:       p50 {ms(idle_probe)[0]:.1f} ms  max {ms(idle_probe)[1]:.1f} ms  "
          f"({len(idle_probe)} probes)")
    print(f"  /healthz under load: p50 {ms(loaded_probe)[0]:.1f} ms  max {ms(loaded_probe)[1]:.1f} ms  "
          f"({len(loaded_probe)} probes, all answered 200)")
    change = 100 * (loaded - idle) / idle
    print(f"  frames/s idle {idle:.1f}, under load {loaded:.1f} ({change:+.1f} %; target within 20 %)")
    return 0 if abs(change) <= 20 else 1


if __name__ == "__main__":
    sys.exit(main())
