"""Soak: 20,000 fields through the agent on a replay source; does memory stay flat?

Runs `leukedge agent` in its own process on a looping image folder (continuous gate: every
frame is a field) publishing to a local Mosquitto with a lab subscriber, and prints RSS at
start and end, the outbox and results-log sizes, throughput and delivery. Target: RSS
growth under 20 MB. Prints numbers; not a test.

    python benchmarks/bench_soak.py [--fields 20000] [--bundle DIR] [--offline]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from leukedge.agent_process import (AgentProcess, ResultFeed, agent_config, iso_ts, log_files,  # noqa: E402
                                    logged, write_images)
from leukedge.bundle_factory import make_small_bundle  # noqa: E402
from leukedge.localbroker import Broker, mosquitto_available  # noqa: E402

TARGET_MB = 20.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=20_000)
    ap.add_argument("--bundle", type=Path, help="bundle to run (default: a small one from leukedge.bundle_factory)")
    ap.add_argument("--offline", action="store_true", help="no broker: everything stays in the outbox")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, outbox) for a look")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="leukedge-soak-"))
    bundle = args.bundle
    if bundle is None:
        print("building a small bundle (trains and converts a tiny model, about a minute)...", flush=True)
        bundle = make_small_bundle(work)
    frames = write_images(work / "fields", n=200, size=96)
    broker = None if args.offline or not mosquitto_available() else Broker(work / "broker").start()
    feed = ResultFeed(broker.port, client_id="soak-feed") if broker else None
    cfg = agent_config(work / "agent", bundle, frames, broker.url if broker else None, max_frames=args.fields,
                       mqtt={"stats_interval_s": 5.0}, outbox={"max_rows": max(100_000, args.fields * 2)},
                       drain_timeout_s=60.0)
    agent = AgentProcess(work / "agent", cfg).start()
    rss: list[tuple[float, float, int]] = []  # (t, MB, results logged so far)
    log = work / "agent" / "results.jsonl"
    t0 = time.monotonic()
    try:
        while agent.alive():
            try:
                mb = agent.rss_mb()
            except (OSError, RuntimeError):
                break
            n = sum(sum(1 for _ in open(p)) for p in log_files(log))
            rss.append((time.monotonic() - t0, mb, n))
            time.sleep(1.0)
        rc = agent.wait(120)
    finally:
        if agent.alive():
            agent.kill9()
    results = logged(log)
    sent = [r["id"] for r in results]
    warm = next(((t, mb, n) for t, mb, n in rss if n >= min(1000, args.fields // 10)), rss[0])
    end = rss[-1]
    first, last = iso_ts(results[0]["ts"]), iso_ts(results[-1]["ts"])
    outbox = work / "agent" / "outbox.sqlite"
    outbox_bytes = sum(p.stat().st_size for p in outbox.parent.glob(outbox.name + "*"))
    print(f"\nsoak: {len(sent)} fields, agent exit code {rc}, bundle {bundle}")
    print(f"  RSS   after {warm[2]} fields {warm[1]:.1f} MB, at the end {end[1]:.1f} MB "
          f"(max {max(mb for _, mb, _ in rss):.1f} MB): growth {end[1] - warm[1]:+.1f} MB "
          f"(target < {TARGET_MB:.0f} MB: {'met' if end[1] - warm[1] < TARGET_MB else 'MISSED'})")
    print(f"  throughput {len(sent) / max(last - first, 1e-6):.0f} fields/s over {last - first:.1f} s "
          f"(continuous gate, 96 px JPEG replay, {Path(bundle).name})")
    print(f"  outbox file {outbox_bytes / 1e6:.2f} MB at the end; results log {sum(p.stat().st_size for p in log_files(log)) / 1e6:.1f} MB "
          f"in {len(log_files(log))} files (rotated)")
    if feed:
        f = feed.figures(sent)
        print(f"  MQTT  delivered {f['delivered']}/{f['sent']}, duplicates {f['duplicates']}, "
              f"max delay {f['max_delay_s']} s, in order {f['in_order']}")
        feed.close()
    if broker:
        broker.stop()
    print(f"  RSS timeline (s, MB, fields): {[(round(t), round(mb, 1), n) for t, mb, n in rss[1:: max(1, len(rss) // 8)]]}")
    if args.keep:
        print(f"  work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
