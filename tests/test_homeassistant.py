"""Home Assistant MQTT discovery against a real Mosquitto: the retained configs a late HA would read."""

from __future__ import annotations

import json
import re

import pytest

from edge.agent import Agent
from edge.config import load_config
from edge.homeassistant import discovery_configs, node_id
from edge.messages import SAMPLE, STATS, STATUS, topic
from tests.test_edge_agent import Subscriber, bundle, config  # noqa: F401 - the bundle fixture

pytestmark = pytest.mark.slow

# HA's MQTT discovery schema (home-assistant.io/integrations/mqtt, sensor.mqtt, binary_sensor.mqtt)
REQUIRED = {"name", "unique_id", "state_topic", "device"}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version"}
ALLOWED = {"sensor": REQUIRED | {"value_template", "availability_topic", "payload_available",
                                 "payload_not_available", "unit_of_measurement", "state_class", "icon"},
           "binary_sensor": REQUIRED | {"payload_on", "payload_off", "device_class"}}
DISCOVERY = re.compile(r"^homeassistant/(sensor|binary_sensor)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config$")


def render(template: str, value_json: dict):
    """HA's `{{ value_json.a.b }}`, the only template form the configs use (jinja2 is not a dependency)."""
    m = re.fullmatch(r"\{\{ value_json((?:\.[A-Za-z_]+)+) \}\}", template)
    assert m, f"unexpected template {template!r}"
    value = value_json
    for key in m.group(1).strip(".").split("."):
        value = value[key]
    return value


class HASubscriber(Subscriber):
    """Everything under homeassistant/# as well as leukedge/#."""

    def __init__(self, port: int, client_id: str):
        super().__init__(port, client_id)
        self.c.subscribe("homeassistant/#", qos=1)

    def discovery(self) -> dict[str, tuple[bool, dict]]:
        with self.lock:
            return {t: (r, json.loads(p)) for t, r, p in self.messages if t.startswith("homeassistant/")}


def test_discovery_configs_are_retained_and_match_the_schema(tmp_path, bundle, broker):  # noqa: F811
    from trainer.synth.video import write_video

    write_video(tmp_path / "v.mp4", n_fields=4, size=320, seed=1, fps=15)
    live = Subscriber(broker.port, "live")
    cfg = config(tmp_path, bundle, tmp_path / "v.mp4", broker.url, device_id="box.1",
                 sample={"fields_per_sample": 2}, mqtt={"url": broker.url, "homeassistant": True})
    assert Agent(cfg).run() == 0
    assert live.wait(lambda: live.on("sample") and live.on("stats") and live.on("status")[-1][1] == b"offline")
    late = HASubscriber(broker.port, "ha")
    assert late.wait(lambda: len(late.discovery()) == 3)
    configs = late.discovery()
    assert set(configs) == set(discovery_configs("leukedge", "box.1"))
    assert all(retained for retained, _ in configs.values())
    by_object = {}
    for t, (_, c) in configs.items():
        component, node, obj = DISCOVERY.match(t).groups()
        assert node == node_id("box.1") == "box_1"
        assert REQUIRED <= set(c) <= ALLOWED[component], (t, set(c) - ALLOWED[component])
        assert set(c["device"]) == DEVICE_KEYS and c["device"]["identifiers"] == ["leukedge_box_1"]
        by_object[obj] = c
    assert len({c["unique_id"] for c in by_object.values()}) == 3
    status = topic("leukedge", "box.1", STATUS)
    for obj in ("decision", "backlog"):
        c = by_object[obj]
        assert (c["availability_topic"], c["payload_available"], c["payload_not_available"]) == \
            (status, "online", "offline")
    assert by_object["decision"]["state_topic"] == topic("leukedge", "box.1", SAMPLE)
    assert by_object["backlog"]["state_topic"] == topic("leukedge", "box.1", STATS)
    online = by_object["online"]
    assert (online["state_topic"], online["payload_on"], online["payload_off"]) == (status, "online", "offline")
    # the templates render against what the agent really published on those topics
    sample, stats = live.json("sample")[-1], live.json("stats")[-1]
    assert render(by_object["decision"]["value_template"], sample) == sample["decision"]
    assert render(by_object["backlog"]["value_template"], stats) == stats["outbox"]["backlog"] == 0
    # and the state topics HA reads are the ones the agent publishes on
    published = {t for t, _, _ in live.messages}
    assert {by_object[o]["state_topic"] for o in by_object} <= published
    live.close()
    late.close()


def test_nothing_under_homeassistant_when_off(tmp_path, bundle, broker):  # noqa: F811
    from trainer.synth.video import write_video

    write_video(tmp_path / "v.mp4", n_fields=2, size=320, seed=2, fps=15)
    ha = HASubscriber(broker.port, "ha-off")
    assert ha.wait(lambda: ha.c.is_connected())
    cfg = config(tmp_path, bundle, tmp_path / "v.mp4", broker.url, sample={"fields_per_sample": 2})
    assert not cfg.mqtt.homeassistant
    assert Agent(cfg).run() == 0
    assert ha.wait(lambda: ha.on("status") and ha.on("status")[-1][1] == b"offline")
    assert ha.discovery() == {}
    ha.close()


def test_discovery_prefix_is_checked():
    cfg = load_config(None, {"bundle": "b", "device_id": "d", "mqtt": {"homeassistant": True,
                                                                     "homeassistant_prefix": "ha"}})
    assert cfg.mqtt.homeassistant_prefix == "ha"
    with pytest.raises(Exception, match="homeassistant_prefix"):
        load_config(None, {"bundle": "b", "device_id": "d", "mqtt": {"homeassistant_prefix": "ha/#"}})
