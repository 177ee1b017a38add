"""`leukedge install NAME.leukedge --config agent.yaml` (or `--rollback [--factory]`) on the box's shell.

Hands the pack (or the rollback request) to the running agent through its store's inbox,
the same install path as MQTT and the drop folder, and prints the resulting `event`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from edge.config import load_config
from edge.errors import BadInput


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pack", type=Path, nargs="?", help="NAME.leukedge (leukedge pack)")
    p.add_argument("--config", type=Path, required=True, help="the agent's config (its store and trust keys)")
    p.add_argument("--rollback", action="store_true", help="return to the previous bundle instead")
    p.add_argument("--factory", action="store_true", help="with --rollback: return to the configured `bundle:`")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the agent's event (default 120)")


def run(args) -> int:
    if bool(args.pack) == bool(args.rollback):
        raise BadInput("install: give a pack file or --rollback (not both)")
    if args.factory and not args.rollback:
        raise BadInput("install: --factory goes with --rollback")
    cfg = load_config(args.config)
    if not cfg.trust.keys:
        raise BadInput(f"{args.config}: no trust.keys configured, so this box takes no updates")
    inbox = cfg.store / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    if args.rollback:
        name = f"rollback-{time.time_ns()}.rollback"
        (inbox / f".{name}").write_text(json.dumps({"factory": args.factory}))
    else:
        if not args.pack.is_file():
            raise BadInput(f"{args.pack}: no such pack file")
        name = args.pack.name if args.pack.name.endswith(".leukedge") else args.pack.name + ".leukedge"
        shutil.copyfile(args.pack, inbox / f".{name}")
    done = inbox / f"{name}.event.json"
    done.unlink(missing_ok=True)
    (inbox / f".{name}").replace(inbox / name)  # whole, at once: the agent never sees half a pack
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if done.exists():
            text = done.read_text()
            done.unlink(missing_ok=True)
            print(text.strip())
            return 0 if json.loads(text).get("status") in ("installed", "rolled_back") else 2
        time.sleep(0.2)
    print(f"no event from the agent within {args.timeout:.0f} s (is it running?); {inbox / name} stays queued")
    return 1
