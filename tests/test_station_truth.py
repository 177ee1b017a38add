"""The station page tells the truth about itself, in a real headless Chromium against the agent
as its own process: NOT LIVE within seconds of the agent stopping (SIGTERM: its last `stopping`
event; kill -9: three seconds without a heartbeat), controls disabled, and back by itself when
the agent is; MQTT off by configuration is a calm offline mode, a broker that is down the
warning, and `/metrics` says which (`leukedge_mqtt_state`) with a real Mosquitto.
"""

from __future__ import annotations

import re
import signal
import time
import urllib.request

from leukedge.agent_process import AgentProcess, agent_config, write_images
from tests.broker import free_port
from tests.test_station_browser import browser, bundle, pytestmark, screenshot, text, until  # noqa: F401

CONTROLS = ("btn-start", "btn-end", "btn-id", "sample-input")


def mqtt_state(url: str) -> dict[str, float]:
    """`leukedge_mqtt_state` by its `state` label, and `leukedge_mqtt_connected`, parsed from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        body = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.name == "leukedge_mqtt_state":
                out[s.labels["state"]] = s.value
            elif s.name == "leukedge_mqtt_connected":
                out["connected_gauge"] = s.value
    return out


def not_live(driver) -> bool:
    return driver.execute_script("return !document.getElementById('notlive').hidden")


def disabled(driver) -> list[bool]:
    return driver.execute_script("return arguments[0].map(id => document.getElementById(id).disabled)", list(CONTROLS))


def test_not_live_on_stop_and_back_by_itself_in_offline_mode(tmp_path, bundle, browser):  # noqa: F811
    frames = write_images(tmp_path / "frames", 12)
    port = free_port()
    work = tmp_path / "agent"
    cfg = agent_config(work, bundle, frames, None, source={"fps": 5.0}, ui={"listen": f"127.0.0.1:{port}"})
    agent = AgentProcess(work, cfg).start()
    try:
        url = agent.page_url()
        browser.get(url)
        until(browser, lambda d: text(d, "field-meta"), 60, "no field result")
        # MQTT off by configuration: calm offline mode, no amber backlog that could never clear
        until(browser, lambda d: "Offline mode" in text(d, "mqtt"), 10)
        assert re.fullmatch(r"Offline mode \u2014 (\d+ results?|results) kept on this box", text(browser, "mqtt"))
        assert browser.execute_script("return document.getElementById('mqtt').className") == "item calm"
        assert text(browser, "source") == "Image folder"
        assert mqtt_state(url) == {"connected_gauge": 0, "off": 1, "connected": 0, "down": 0}
        assert not not_live(browser) and disabled(browser) == [False] * len(CONTROLS)
        screenshot(browser, "station-offline-mode-800x480.png", 800, 480)

        # SIGTERM: the agent's last `stopping` event greys the page over at once
        time.sleep(1.5)  # a few heartbeats in: the NOT LIVE below is the agent's doing, not a slow start
        t0 = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        until(browser, not_live, 5, "NOT LIVE not shown within 5 s of SIGTERM")
        shown_after = time.monotonic() - t0
        banner = text(browser, "notlive")
        assert re.search(r"NOT LIVE\s+agent stopped or unreachable since \d\d:\d\d:\d\d", banner), banner
        assert disabled(browser) == [True] * len(CONTROLS)
        on_top = browser.execute_script(  # a tap on a button lands on the overlay, not the button
            "const r = document.getElementById('btn-start').getBoundingClientRect();"
            "return document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2).closest('#notlive') !== null")
        assert on_top
        screenshot(browser, "station-not-live-800x480.png", 800, 480)
        assert agent.wait(30) == 0
        print(f"NOT LIVE shown {shown_after:.2f} s after SIGTERM")

        # the agent comes back on the same address: the page lifts the overlay by itself
        agent.start()
        until(browser, lambda d: not not_live(d), 120, "the page did not come back with the agent")
        until(browser, lambda d: disabled(d) == [False] * len(CONTROLS), 10, "controls still disabled")

        # kill -9 sends nothing: three seconds without a heartbeat are enough
        time.sleep(1.5)
        t0 = time.monotonic()
        agent.kill9()
        until(browser, not_live, 8, "NOT LIVE not shown after kill -9")
        print(f"NOT LIVE shown {time.monotonic() - t0:.2f} s after kill -9")
        assert disabled(browser) == [True] * len(CONTROLS)
    finally:
        if agent.alive():
            agent.terminate()


def test_broker_down_is_the_warning_and_metrics_say_so(tmp_path, bundle, broker, browser):  # noqa: F811
    frames = write_images(tmp_path / "frames", 12)
    work = tmp_path / "agent"
    cfg = agent_config(work, bundle, frames, broker.url, source={"fps": 5.0}, ui={"listen": "127.0.0.1:0"})
    agent = AgentProcess(work, cfg).start()
    try:
        url = agent.page_url()
        browser.get(url)
        until(browser, lambda d: text(d, "mqtt").startswith("Online"), 60, "not connected")
        assert browser.execute_script("return document.getElementById('mqtt').className") == "item good"
        assert mqtt_state(url) == {"connected_gauge": 1, "off": 0, "connected": 1, "down": 0}

        broker.stop()
        until(browser, lambda d: "Offline since" in text(d, "mqtt"), 30, "broker down not shown")
        assert browser.execute_script("return document.getElementById('mqtt').className") == "item warn"
        assert "Offline mode" not in text(browser, "mqtt")
        until(browser, lambda d: re.search(r"\d+ results? kept on this box", text(d, "mqtt")), 30, "no count kept")
        assert mqtt_state(url) == {"connected_gauge": 0, "off": 0, "connected": 0, "down": 1}
        assert not not_live(browser)  # the agent runs on: a broker down is not a page that lies
    finally:
        agent.terminate()
