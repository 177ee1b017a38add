"""One MQTT client for the workstation commands (`push`, `fleet`): URL, credentials, TLS.

`mqtt://user:pass@host:1883` or `mqtts://host:8883` (with `--ca-file`); a password may also
come from `--password-file`, so it need not appear in a shell history.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from edge.errors import BadInput
from edge.redact import redact_url


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt", required=True, metavar="URL", help="broker: mqtt://[user:pass@]host:1883 or mqtts://host:8883")
    p.add_argument("--username", help="broker user (or in the URL)")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--ca-file", type=Path, help="CA certificate for mqtts://")
    p.add_argument("--prefix", default="leukedge", help="topic prefix (default leukedge)")


def connect(args, client_id: str, on_message, subscriptions: list[str], timeout: float = 10.0):
    """A connected, subscribed paho client with its network loop running; BadInput when unreachable."""
    import paho.mqtt.client as mqtt

    u = urlsplit(args.mqtt)
    if u.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not u.hostname:
        raise BadInput(f"--mqtt {redact_url(args.mqtt)!r}: not mqtt://host[:port] or mqtts://host[:port]")
    tls = u.scheme in ("mqtts", "ssl")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{client_id}-{time.monotonic_ns() % 10**9}")
    password = args.password_file.read_text().strip() if args.password_file else u.password
    if args.username or u.username:
        c.username_pw_set(args.username or u.username, password)
    if tls:
        c.tls_set(ca_certs=str(args.ca_file) if args.ca_file else None)
    ready, refused = threading.Event(), []

    def on_connect(client, _u, _f, reason, _p=None):
        if reason.is_failure:
            refused.append(str(reason))
            ready.set()
        else:
            client.subscribe([(t, 1) for t in subscriptions])

    c.on_connect, c.on_message = on_connect, on_message
    c.on_subscribe = lambda *_a: ready.set()
    try:
        c.connect(u.hostname, u.port or (8883 if tls else 1883), keepalive=30)
    except OSError as exc:
        raise BadInput(f"cannot reach {redact_url(args.mqtt)}: {exc}") from None
    c.loop_start()
    if not ready.wait(timeout) or refused:
        c.loop_stop()
        raise BadInput(f"{redact_url(args.mqtt)}: {'refused: ' + refused[0] if refused else 'no answer'}")
    return c
