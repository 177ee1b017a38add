"""`leukedge fleet --mqtt URL`: every device seen in retained `info`/`status`, one line each."""

from __future__ import annotations

import argparse
import json
import threading
import time

from leukedge import mqtt_client


def add_arguments(p: argparse.ArgumentParser) -> None:
    mqtt_client.add_arguments(p)
    p.add_argument("--wait", type=float, default=2.0, help="seconds to collect retained messages (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object per device instead of a table")


def run(args) -> int:
    devices: dict[str, dict] = {}
    lock = threading.Lock()

    def on_message(_c, _u, msg):
        parts = msg.topic.split("/")
        if len(parts) < 3:
            return
        device, kind = parts[-2], parts[-1]
        with lock:
            d = devices.setdefault(device, {"device": device, "status": "?"})
            if kind == "status":
                d["status"] = msg.payload.decode(errors="replace")[:16]
            elif kind == "info":
                try:
                    info = json.loads(msg.payload)
                except ValueError:
                    return
                b = info.get("bundle", {})
                d.update(bundle=b.get("name"), release=b.get("release"), manifest_sha256=b.get("manifest_sha256"),
                         backend=info.get("backend"), agent_version=info.get("agent_version"), info_ts=info.get("ts"))

    p = args.prefix
    client = mqtt_client.connect(args, "leukedge-fleet", on_message, [f"{p}/+/info", f"{p}/+/status"])
    time.sleep(args.wait)
    client.disconnect()
    client.loop_stop()
    rows = [devices[k] for k in sorted(devices)]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'device':<20} {'status':<8} {'bundle':<20} {'release':>7}  {'manifest sha256':<14} {'backend':<16} agent")
    for r in rows:
        sha = (r.get("manifest_sha256") or "-")[:12]
        print(f"{r['device']:<20} {r['status']:<8} {str(r.get('bundle') or '-'):<20} {str(r.get('release') or '-'):>7}  "
              f"{sha:<14} {str(r.get('backend') or '-'):<16} {r.get('agent_version') or '-'}")
    print(f"{len(rows)} device(s), {sum(r['status'] == 'online' for r in rows)} online")
    return 0
