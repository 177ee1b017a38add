"""A lab system for the demo: it knows which slide is under the microscope and says so over MQTT.

A laboratory information system opens a sample when a slide goes on the stage and
closes it when the slide comes off (`cmd/sample/start` with the slide's id, then
`cmd/sample/end`), so the agent pools exactly one patient's fields into each sample
decision. Here the stage is a recorded video whose sidecar lists the slides' frame
ranges; the agent's `stats` messages (sent every fraction of a second in the demo)
say how far it has read (the first one also says it listens to commands), and
between two slides there is more than a second of moving and blurred frames for the
commands to arrive.

A sample's `decision` is the slide's class, `refer` (with its `reason`: not confident, or
unfamiliar input) or `insufficient` (fewer familiar fields than `min_fields`): the lab
system prints it in words and never counts `insufficient` as a class.
"""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt

from edge.messages import command_leaf, topic


def field_reason(result: dict) -> str:
    """Why a field was referred, in a few words (older agents send no reason)."""
    reason, ood = result.get("reason"), result.get("ood") or {}
    if reason == "unfamiliar":
        return f" (unfamiliar input{': ' + ood['reason'] if ood.get('reason') else ''})"
    return f" ({reason})" if reason else ""


def slide_id(slide: dict) -> str:
    return f"slide-{slide['slide'] + 1}"


class LabSystem:
    """Subscribes to one device's topics, prints results and samples, sends sample commands at slide changes."""

    def __init__(self, port: int, prefix: str, device: str, slides: list[dict], verbose: bool = True):
        self.prefix, self.device, self.slides, self.verbose = prefix, device, slides, verbose
        self.results: dict[str, dict] = {}
        self.samples: list[dict] = []
        self.sent: list[tuple[str, str | None]] = []
        self.current = -1  # the slide whose sample is open
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="leukedge-lab-system")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic(prefix, device, "#"), qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _command(self, name: str, sample_id: str | None = None) -> None:
        payload = json.dumps({"sample_id": sample_id}) if sample_id else ""
        self.client.publish(topic(self.prefix, self.device, command_leaf(f"sample/{name}")), payload, qos=1)
        self.sent.append((name, sample_id))

    def on_frames(self, frames: int) -> None:
        """The agent has read `frames` frames: name the first slide's sample, change samples at slide ends.

        The first slide's sample is started with `sample/id`: it starts a sample with that id
        when none is open, or names the one an unattended box (`auto_open`) opened at its first field.
        """
        if self.current < 0:
            self.current = 0
            self._command("id", slide_id(self.slides[0]))
        while self.current < len(self.slides) - 1 and frames >= self.slides[self.current]["frames"][1]:
            self._command("end")
            self.current += 1
            self._command("start", slide_id(self.slides[self.current]))

    def _on_message(self, client, userdata, msg) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        if kind not in ("result", "sample", "stats"):
            return
        payload = json.loads(msg.payload)
        with self.lock:
            if kind == "stats":
                self.on_frames(payload["frames"]["total"])
            elif kind == "sample":
                self.samples.append(payload)
                self._say(f"  sample {payload['sample_id']}: {sample_words(payload)} over {payload['n_fields']} fields"
                          f"{unfamiliar(payload)} (truth {self.truth(payload['sample_id'])}, "
                          f"closed by {payload['closed_by']})")
            elif payload["id"] not in self.results:
                self.results[payload["id"]] = payload
                top = max(payload["probs"].values())
                self._say(f"  result {payload['id']}: sample {payload['sample_id']} field {payload['field']} "
                          f"{payload['label']} p={top:.2f} -> {payload['decision']}{field_reason(payload)}  "
                          f"invoke {payload['latency_ms']['invoke']:.1f} ms")

    def truth(self, sample_id: str | None) -> str:
        return next((s["label"] for s in self.slides if slide_id(s) == sample_id), "unknown")

    def _say(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)

    def finish(self, timeout: float = 10.0) -> None:
        """The video is over: the last slide comes off the stage (End); wait for its sample message."""
        with self.lock:
            self._command("end")
        deadline = time.monotonic() + timeout
        while len(self.samples) < len(self.slides) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def summary(self, wall: float) -> list[str]:
        """The agent's field counts; the per-slide table (leukedge/demoreport.py) says the rest."""
        decisions: dict[str, int] = {}
        for r in self.results.values():
            decisions[r["decision"]] = decisions.get(r["decision"], 0) + 1
        return [f"agent: {len(self.results)} fields classified, field decisions {decisions}, {wall:.1f} s wall "
                f"(paced at the video's frame rate, incl. start-up); {len(self.samples)} samples closed "
                f"for {len(self.slides)} slides"]


def sample_words(sample: dict) -> str:
    """A `sample` message's decision in words: 'Early', 'refer (not confident; most likely Pre)',
    'insufficient evidence (too few fields: 2 of 5 — scan more fields or refer)'."""
    d, reason = sample["decision"], sample.get("reason")
    if d == "insufficient":
        return f"insufficient evidence ({reason})"
    if d == "refer":
        return f"refer ({reason}" + (f"; most likely {sample['label']})" if sample.get("label") else ")")
    return d


def unfamiliar(sample: dict) -> str:
    return f", {sample['n_unfamiliar']} unfamiliar" if sample.get("n_unfamiliar") else ""
