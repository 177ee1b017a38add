"""The station page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium; nothing is downloaded at run time), against the agent as its own process on a
synthetic microscope video with a real Mosquitto.

Screenshots go to test-artifacts/ (or $LEUKEDGE_TEST_ARTIFACTS).
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from edge.commands import valid_sample_id
from edge.messages import DEFAULT_PREFIX, topic
from leukedge.agent_process import AgentProcess, ResultFeed, agent_config
from leukedge.bundle_factory import make_small_bundle
from tests.agent_proc import ROOT

from leukedge.screenshots import CHROMEDRIVER, CHROMIUM
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="needs Debian's chromium and chromium-driver (CI installs them with apt-get)"),
]
ARTIFACTS = Path(os.environ.get("LEUKEDGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_small_bundle(tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from trainer.synth.video import write_video

    path = tmp_path_factory.mktemp("video") / "smear.mp4"
    write_video(path, n_fields=6, size=320, seed=3, fps=15)
    return path


@pytest.fixture
def browser():
    from leukedge.screenshots import chromium

    driver = chromium(800, 480)  # the viewport of the Pi's 7" touchscreen
    yield driver
    driver.quit()


def text(driver, element_id: str) -> str:
    return css_text(driver, "#" + element_id)


def css_text(driver, selector: str) -> str:
    """The element's visible text read in one script call: the page re-renders its panels every poll,
    so a found element can go stale before `.text` reads it."""
    return driver.execute_script("const e = document.querySelector(arguments[0]);"
                                 "return e ? e.innerText : '';", selector)


def until(driver, predicate, timeout: float = 30.0, what: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: predicate(d), what)


def screenshot(driver, name: str, width: int = 800, height: int | None = None) -> Path:
    """The page as the technician sees it at width x height CSS px; `height=None` = the whole page."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    frame = driver.execute_script("return window.outerHeight - window.innerHeight")
    if height is None:
        driver.set_window_size(width, 1800)  # tall: the full layout, not the 800x480 one
        height = driver.execute_script(
            "return Math.ceil(document.querySelector('footer').getBoundingClientRect().bottom + window.scrollY)")
    driver.set_window_size(width, height + frame)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    driver.set_window_size(800, 480 + frame)
    return path


# the status bar's content height in lines of its text: one line is 1.0 (the Details button's border adds a little)
ONE_LINE = """
const bar = document.querySelector('.bar'), cs = getComputedStyle(bar);
const inner = bar.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
return inner / parseFloat(getComputedStyle(document.getElementById('mqtt')).lineHeight);
"""


def api_state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=10) as r:
        return json.loads(r.read())


def kept(status: str) -> int:
    """The results waiting on the box, from the bar's connection item ('... 12 results kept on this box')."""
    m = re.search(r"(\d+) results? kept", status)
    return int(m.group(1)) if m else 0


def test_station_page_live_samples_and_broker_loss(tmp_path, bundle, video, broker, browser):
    work = tmp_path / "agent"
    cfg = agent_config(work, bundle, video, broker.url, device_id="scope-7", gate={"mode": "still"},
                       source={"fps": 15.0}, sample={"fields_per_sample": 0}, ui={"listen": "127.0.0.1:0"})
    agent = AgentProcess(work, cfg).start()
    feed = ResultFeed(broker.port, device="scope-7", client_id="lab", extra_topics=[topic(DEFAULT_PREFIX, "scope-7", "sample")])
    try:
        url = agent.page_url()
        browser.get(url)
        assert browser.title == "leukedge station"
        # a field result appears within seconds: one line, its class and top probability, and the thumbnail
        until(browser, lambda d: text(d, "field-decision") not in ("", "No field yet"), 60, "no field result")
        until(browser, lambda d: d.execute_script("return document.getElementById('thumb').naturalWidth") > 0, 10)
        decision = text(browser, "field-decision")
        assert re.fullmatch(r"(Benign|Early|Pre|Pro) \d+\.\d % *|\u26A0 (REFER|UNFAMILIAR INPUT).*", decision), decision
        assert "refers below" in text(browser, "field-meta")
        # the status bar in plain words on one line; the engineer's figures only behind Details
        assert text(browser, "device") == "scope-7" and text(browser, "source") == "Video file"
        until(browser, lambda d: text(d, "mqtt").startswith("Online"), 30, "not online")
        state = api_state(url)
        bar = css_text(browser, ".bar")
        assert state["model"]["short"] not in bar and "litert" not in bar and "sha256" not in bar.lower(), bar
        assert "focus" not in bar and "invoke" not in bar and "camera open" not in bar
        assert browser.execute_script(ONE_LINE) < 1.6, "the status bar wraps"
        browser.find_element("css selector", "#details summary").click()
        details = css_text(browser, "#details")
        assert state["model"]["short"] in details and "litert-cpu" in details and "invoke" in details, details
        browser.find_element("css selector", "#details summary").click()
        assert "litert" not in css_text(browser, ".bar")
        assert "Screening aid, not a diagnosis" in browser.find_element("tag name", "footer").text
        frame = browser.execute_script("return window.outerHeight - window.innerHeight")
        browser.set_window_size(390, 844 + frame)  # a phone: one column
        lefts = browser.execute_script("return ['live', 'sample', 'controls', 'recent'].map("
                                       "id => document.getElementById(id).getBoundingClientRect().left)")
        assert len(set(lefts)) == 1, lefts
        browser.set_window_size(800, 480 + frame)

        # an id with a character the box does not take: the page says what is allowed, sends nothing
        browser.execute_script("window.posts = 0; const f = window.fetch; window.fetch = (u, o) => "
                               "{ if (o && o.method === 'POST') window.posts++; return f(u, o); };")
        box = browser.find_element("id", "sample-input")
        for bad in ("SLIDE<42>", "H#2024"):
            box.clear()
            box.send_keys(bad)
            browser.find_element("id", "btn-start").click()
            msg = text(browser, "msg")
            assert msg.startswith(f'Not a sample id: "{bad}"') and "letters, digits, spaces inside it and - _ . / :" in msg
            assert "sample-input" == browser.execute_script("return document.activeElement.id")
        assert browser.execute_script("return window.posts") == 0 and text(browser, "sample-id") == "none open"
        # the page's rule is the agent's: the same verdict on ids either side of it
        ids = ["H 2024/00417", "a:b.c_d-e", " x", "x ", "-x", "a<b", "x" * 64, "x" * 65, "a\nb", "caf\u00e9"]
        page = browser.execute_script("const r = new RegExp(document.querySelector('meta[name=\"sample-id-pattern\"]')"
                                      ".content); return arguments[0].map(i => r.test(i))", ids)
        assert page == [valid_sample_id(i) for i in ids]

        # Start sample with a scanned id (a space, a slash, padding trimmed): on the page and on MQTT
        box.clear()
        box.send_keys("  H 2024/00417 ")
        browser.find_element("id", "btn-start").click()
        until(browser, lambda d: text(d, "sample-id") == "H 2024/00417", 15, "sample id not on the page")
        assert browser.execute_script("return window.posts") == 1
        assert until(browser, lambda d: any(r["sample_id"] == "H 2024/00417" for r, _ in list(feed.results)), 60)
        until(browser, lambda d: re.match(r"[1-9]\d* fields? since", text(d, "sample-fields")), 30)
        until(browser, lambda d: text(d, "sample-decision") not in ("", "No field yet"), 30)
        # on the 800x480 touchscreen: the slide decision, its cut-off and the controls without scrolling
        assert re.fullmatch(r"refers below \d+(\.\d)? % confidence", text(browser, "sample-cutoff"))
        below = browser.execute_script(
            "window.scrollTo(0, 0); return ['sample-decision', 'sample-cutoff', 'field-decision', 'sample-input', "
            "'btn-start', 'btn-end', 'btn-id'].filter(id => { const r = document.getElementById(id)"
            ".getBoundingClientRect(); return r.height === 0 || r.bottom > window.innerHeight || r.right > window.innerWidth; })")
        assert below == [], f"hidden or below the fold at 800x480: {below}"
        assert browser.execute_script(ONE_LINE) < 1.6, "the status bar wraps"
        screenshot(browser, "station-800x480.png", 800, 480)
        screenshot(browser, "station.png", 1024)
        browser.find_element("id", "btn-id").click()  # Set id with an empty box sends nothing
        assert browser.execute_script("return window.posts") == 1

        # End sample: the closed sample stays on the page, and its `sample` message goes out
        browser.find_element("id", "btn-end").click()
        until(browser, lambda d: text(d, "closed-id") == "H 2024/00417", 15, "closed sample not shown")
        assert "(command)" in text(browser, "closed-meta") and text(browser, "closed-decision")
        assert re.fullmatch(r"refers below \d+(\.\d)? % confidence", text(browser, "closed-cutoff"))
        if text(browser, "closed-decision").startswith("\u26A0 REFER"):
            assert "refer: send the slide for a haematologist's second read" in text(browser, "closed-decision")
        assert until(browser, lambda d: [p for t, p in list(feed.other) if t.endswith("/sample")
                                         and b'"sample_id":"H 2024/00417"' in p and b'"closed_by":"command"' in p], 30)
        # the closed sample's print view: its id, pooled probabilities, decision and model sha256, nothing else
        browser.execute_script("window.print = () => { window.printed = true; }")
        browser.find_element("id", "btn-print").click()
        assert browser.execute_script("return window.printed")
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        report = browser.find_element("id", "report")
        assert report.is_displayed() and not browser.find_element("tag name", "main").is_displayed()
        assert text(browser, "r-id") == "H 2024/00417"
        assert re.search(r"sha256 [0-9a-f]{64}", report.text) and "Pooled probabilities" in report.text
        assert "Screening aid, not a diagnosis" in report.text
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})

        # The broker goes away: offline since when, and the results kept on the box grow on the page
        broker.stop()
        until(browser, lambda d: "Offline since" in text(d, "mqtt"), 30, "offline not shown")
        first = kept(text(browser, "mqtt"))
        until(browser, lambda d: kept(text(d, "mqtt")) > first, 60, "backlog did not grow")
        assert browser.execute_script(ONE_LINE) < 1.6, "the status bar wraps"
        assert "oldest" in browser.execute_script("return document.getElementById('details-list').textContent")
        screenshot(browser, "station-offline.png", 1024)
    finally:
        feed.close()
        agent.terminate()


def test_lan_page_asks_for_the_password(tmp_path, bundle, video, browser):
    pw = tmp_path / "station.pw"
    pw.write_text("tech:s3cret-station\n")
    work = tmp_path / "agent"
    cfg = agent_config(work, bundle, video, None, gate={"mode": "still"}, source={"fps": 15.0},
                       ui={"listen": "0.0.0.0:0", "password_file": str(pw)})
    agent = AgentProcess(work, cfg).start()
    try:
        url = agent.page_url()
        assert "password crosses the LAN in clear" in agent.log()  # warned at start
        for auth in (None, "tech:wrong", "nobody:s3cret-station"):
            req = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
                auth.encode()).decode()} if auth else {})
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 401 and err.value.headers["WWW-Authenticate"].startswith("Basic")
        browser.get(url)  # no credentials: the browser gets the 401 (headless: no prompt), not the page
        assert not browser.find_elements("id", "sample-input") and "Screening aid" not in browser.page_source
        browser.get(url.replace("://", "://tech:s3cret-station@"))
        until(browser, lambda d: "without HTTPS" in css_text(d, "#warnings .w-insecure"), 30, "no warning")
        # a browser without Server-Sent Events still follows the agent, by polling /api/state
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"})
        browser.get(url.replace("://", "://tech:s3cret-station@"))
        assert browser.execute_script("return typeof EventSource") == "undefined"
        until(browser, lambda d: text(d, "field-meta"), 60, "no field")
        first = text(browser, "field-meta")
        until(browser, lambda d: text(d, "field-meta") not in ("", first), 60, "the page did not follow by polling")
        # and its buttons work behind the password (basic auth + CSRF token from the page)
        browser.find_element("id", "sample-input").send_keys("LAN-7")
        browser.find_element("id", "btn-start").click()
        until(browser, lambda d: text(d, "sample-id") == "LAN-7", 30, "Start sample failed behind the password")
        assert "s3cret-station" not in agent.log()  # the secret is never logged
    finally:
        agent.terminate()
