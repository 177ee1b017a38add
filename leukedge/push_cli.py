"""`leukedge push NAME.leukedge --mqtt URL --device-id ID [...]`: send a pack over MQTT, wait for each `event`.

The pack goes in chunks on `<prefix>/<device>/cmd/bundle/chunk` (QoS 1, never retained).
The first chunk doubles as a probe: the device answers with a `transfer` status listing
what it still misses (it keeps what it received on disk), and only that is sent, so an
interrupted push resumes where it stopped. Then it waits for the device's bundle event.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import queue
import time
from pathlib import Path

from edge.errors import BadInput
from edge.messages import EVENT, command_leaf, topic
from leukedge import mqtt_client

RESEND_S = 10.0
PROBE_S = 30.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pack", type=Path, help="NAME.leukedge (leukedge pack)")
    p.add_argument("--device-id", action="append", required=True, help="target device (repeat for several)")
    p.add_argument("--chunk-kb", type=int, default=256, help="chunk size in KiB (default 256)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each device (default 300)")
    mqtt_client.add_arguments(p)


def run(args) -> int:
    if not args.pack.is_file():
        raise BadInput(f"{args.pack}: no such pack file")
    if not 1 <= args.chunk_kb <= 16384:
        raise BadInput("--chunk-kb: between 1 and 16384")
    data = args.pack.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    size = args.chunk_kb * 1024
    chunks = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    inbox: dict[str, queue.Queue] = {d: queue.Queue() for d in args.device_id}

    def on_message(_c, _u, msg):
        device = msg.topic.split("/")[-2]
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if device in inbox and isinstance(body, dict) and sha in (body.get("sha256"), body.get("pack_sha256")):
            inbox[device].put(body)

    client = mqtt_client.connect(args, "leukedge-push", on_message, [topic(args.prefix, "+", EVENT)])
    print(f"pack {args.pack.name}: {len(data)} bytes, sha256 {sha[:16]}..., {len(chunks)} chunks")
    worst = 0
    try:
        for device in args.device_id:
            code, line = _push_one(client, args, device, sha, chunks, inbox[device])
            print(f"{device}: {line}")
            worst = max(worst, code)
    finally:
        client.disconnect()
        client.loop_stop()
    return worst


def _push_one(client, args, device: str, sha: str, chunks: list[bytes], answers: queue.Queue) -> tuple[int, str]:
    chunk_topic, total = topic(args.prefix, device, command_leaf("bundle/chunk")), len(chunks)
    sent_at: dict[int, float] = {}
    t0 = time.monotonic()

    def send(i: int) -> None:
        body = {"sha256": sha, "index": i, "total": total, "data": base64.b64encode(chunks[i]).decode()}
        client.publish(chunk_topic, json.dumps(body, separators=(",", ":")), qos=1)
        sent_at[i] = time.monotonic()

    send(0)
    missing: list[int] = []
    heard = False
    while time.monotonic() - t0 < args.timeout:
        try:
            msg = answers.get(timeout=1.0)
        except queue.Empty:
            msg = None
        now = time.monotonic()
        if msg is not None:
            heard = True
            msg = _freshest(msg, answers)
            if msg.get("type") == "bundle":
                sent = f"sent {len(sent_at)}/{total} chunks"
                if msg.get("status") == "installed":
                    return 0, (f"installed release {msg.get('release')} (manifest {str(msg.get('manifest_sha256'))[:12]}) "
                               f"in {now - t0:.1f} s, {sent}")
                return 2, f"{msg.get('status')}: {msg.get('reason')} ({sent})"
            missing = msg.get("missing", [])
        elif not heard and now - t0 > PROBE_S:
            return 1, f"no answer within {PROBE_S:.0f} s (offline, or no trust.keys on the device?)"
        for i in missing if heard else [0]:  # unanswered probe: ask again; stalled chunks: send again
            if 0 <= i < total and now - sent_at.get(i, -1e9) > RESEND_S:
                send(i)
    return 1, f"no event within {args.timeout:.0f} s ({len(sent_at)}/{total} chunks sent)"


def _freshest(msg: dict, answers: queue.Queue, settle: float = 0.5) -> dict:
    """The queued status that has received the most (some were sent before this push began and
    list chunks that arrived since), or a bundle event as soon as one comes."""
    deadline = time.monotonic() + settle
    while msg.get("type") != "bundle" and time.monotonic() < deadline:
        try:
            nxt = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if nxt.get("type") == "bundle" or nxt.get("received", 0) >= msg.get("received", 0):
            msg = nxt
    return msg
