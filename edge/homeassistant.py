"""Home Assistant MQTT discovery (opt-in, `mqtt.homeassistant`): the box appears in HA with no YAML.

On every connect the publisher sends one retained config per entity to
`<homeassistant_prefix>/<component>/<device>/<object>/config` (HA's documented discovery
schema): the last slide decision (from `sample`), the outbox backlog (from `stats`) and
the online state (a connectivity `binary_sensor` on `status`). Every entity names the
agent's own topics, so HA reads exactly what any other subscriber reads.
"""

from __future__ import annotations

import re

from edge import __version__
from edge.messages import SAMPLE, STATS, STATUS, discovery_topic, topic

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
ONLINE, OFFLINE = "online", "offline"  # the retained `status` payloads (and the Last Will)


def node_id(device_id: str) -> str:
    """HA accepts only [a-zA-Z0-9_-] in a discovery topic's node id; a device id may also hold `.`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def discovery_configs(prefix: str, device_id: str, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX
                      ) -> dict[str, dict]:
    """{discovery topic: config payload} for the device's three entities."""
    node = node_id(device_id)
    status = topic(prefix, device_id, STATUS)
    device = {"identifiers": [f"leukedge_{node}"], "name": f"leukedge {device_id}", "manufacturer": "leukedge",
              "model": "leukedge edge agent", "sw_version": __version__}
    available = {"availability_topic": status, "payload_available": ONLINE, "payload_not_available": OFFLINE}
    entities = {
        ("sensor", "decision"): {
            "name": "Slide decision", "state_topic": topic(prefix, device_id, SAMPLE),
            "value_template": "{{ value_json.decision }}", "icon": "mdi:microscope", **available},
        ("sensor", "backlog"): {
            "name": "Outbox backlog", "state_topic": topic(prefix, device_id, STATS),
            "value_template": "{{ value_json.outbox.backlog }}", "unit_of_measurement": "messages",
            "state_class": "measurement", "icon": "mdi:tray-full", **available},
        ("binary_sensor", "online"): {
            "name": "Online", "state_topic": status, "payload_on": ONLINE, "payload_off": OFFLINE,
            "device_class": "connectivity"},
    }
    return {discovery_topic(discovery_prefix, component, node, obj):
            {**cfg, "unique_id": f"leukedge_{node}_{obj}", "device": device}
            for (component, obj), cfg in entities.items()}
