"""The station page's slide (sample) flow in a real headless Chromium against the agent as its own
process on a replayed folder (every image a field, paced): nothing opens after End, a second End
is a visible no-op, a slide with too few fields is "Insufficient evidence", and the closed slide's
card stays the largest thing on the page until the next Start.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest
from selenium.webdriver.support import expected_conditions

from leukedge.agent_process import AgentProcess, agent_config, write_images
from leukedge.bundle_factory import make_small_bundle
from tests.test_station_browser import browser, pytestmark, screenshot, text, until  # noqa: F401

MIN_FIELDS = 5
CARD_IS_LARGEST = """
const area = (id) => { const r = document.getElementById(id).getBoundingClientRect(); return r.width * r.height; };
const card = area('closed');
return document.body.classList.contains('slide-closed') && ['live', 'sample', 'recent'].every(id => area(id) < card);
"""


def api_state(url: str) -> dict:
    with urllib.request.urlopen(url + "api/state", timeout=10) as r:
        return json.loads(r.read())


def seq_on_page(driver) -> int:
    """How many fields the page has shown (its frame counter moves with every classified field)."""
    return driver.execute_script("return document.getElementById('thumb').src.split('v=')[1] | 0")


def closed_card(driver) -> tuple[str, str, str, str]:
    return tuple(text(driver, i) for i in ("closed-id", "closed-meta", "closed-decision", "closed-reason"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Without the unfamiliar-input guard: the replay fields are colour noise, which the guard
    (rightly) refers, and this test is about how a slide is opened, closed and decided."""
    return make_small_bundle(tmp_path_factory.mktemp("bundle"), guard=False)


def test_slide_flow_double_end_min_fields_and_the_card(tmp_path, bundle, browser):  # noqa: F811
    work = tmp_path / "agent"
    folder = write_images(tmp_path / "fields", n=40)
    cfg = agent_config(work, bundle, folder, None, device_id="scope-9", source={"fps": 2.0},
                       sample={"fields_per_sample": 0, "min_fields": MIN_FIELDS}, ui={"listen": "127.0.0.1:0"})
    agent = AgentProcess(work, cfg).start()
    try:
        url = agent.page_url()
        browser.get(url)
        until(browser, lambda d: text(d, "field-meta"), 60, "no field")
        # the page is on, so nothing opens by itself: fields are shown, counted, pooled nowhere
        assert text(browser, "sample-id") == "none open" and "scan the slide's id" in text(browser, "sample-none")
        until(browser, lambda d: "not pooled so far" in text(d, "sample-none"), 15)
        assert "Enter starts the sample" in text(browser, "id-form")
        assert api_state(url)["counts"]["samples_closed"] == 0

        # an id the box does not take: the page says what is allowed
        box = browser.find_element("id", "sample-input")
        box.send_keys("SLIDE#41")
        browser.find_element("id", "btn-start").click()
        assert "letters, digits, spaces inside it and - _ . / :" in text(browser, "msg")
        box.clear()

        # a slide ended after two fields: "Insufficient evidence", the reason, never a class
        box.send_keys("SLIDE-0042")
        box.submit()  # Enter in the id box (a barcode scanner) starts the sample
        until(browser, lambda d: text(d, "sample-id") == "SLIDE-0042", 15, "the scanned id did not start a sample")
        until(browser, lambda d: re.match(r"[2-9] fields since", text(d, "sample-fields")), 30)
        browser.find_element("id", "btn-end").click()
        until(browser, lambda d: text(d, "closed-id") == "SLIDE-0042", 15, "closed sample not shown")
        n = int(re.match(r"(\d+) fields", text(browser, "closed-meta")).group(1))
        assert 2 <= n < MIN_FIELDS
        assert text(browser, "closed-decision") == "Insufficient evidence"
        assert text(browser, "closed-reason") == f"Reason: too few fields: {n} of {MIN_FIELDS} — scan more fields or refer"
        assert len(browser.find_elements("css selector", "#closed-probs .p")) == 4  # pooled bars still shown
        until(browser, lambda d: "Ended SLIDE-0042" in text(d, "msg"), 15)
        last = api_state(url)["last_sample"]
        assert (last["decision"], last["n_fields"], last["min_fields"], last["n_unfamiliar"]) == ("insufficient", n, 5, 0)
        card = closed_card(browser)
        screenshot(browser, "station-slide-insufficient.png", 800, 480)

        # a second End: nothing to end, said on the page; no new sample, the card unchanged
        browser.find_element("id", "btn-end").click()
        until(browser, lambda d: "No sample open — nothing to end" in text(d, "msg"), 15, "no-op End not shown")
        # the card stays, the largest thing on the page, while unpooled fields go by
        seen = seq_on_page(browser)
        until(browser, lambda d: seq_on_page(d) >= seen + 3, 30, "fields stopped")
        assert closed_card(browser) == card and browser.execute_script(CARD_IS_LARGEST)
        assert text(browser, "sample-id") == "none open" and text(browser, "sample-decision") == "No sample open"
        state = api_state(url)
        assert state["counts"]["samples_closed"] == 1 and len(state["recent_samples"]) == 1
        assert state["last_sample"]["sample_id"] == "SLIDE-0042" and state["sample"]["unpooled"] >= 3

        # the next Start (from the card): the card gives way to the new sample
        browser.find_element("id", "btn-next").click()
        until(browser, lambda d: text(d, "sample-id").startswith("scope-9-"), 15, "next sample not started")
        until(browser, lambda d: not d.execute_script("return document.body.classList.contains('slide-closed')"), 5)
        assert text(browser, "closed-h").lower() == "last closed sample" and text(browser, "closed-id") == "SLIDE-0042"
        opened = text(browser, "sample-id")

        # Start with a sample open asks first; accepted, the page says which sample it closed
        until(browser, lambda d: re.match(rf"[{MIN_FIELDS}-9]|\d\d+ fields since", text(d, "sample-fields")), 30)
        box.send_keys("SLIDE-0043")
        browser.find_element("id", "btn-start").click()
        alert = until(browser, expected_conditions.alert_is_present(), 5, "no confirmation asked")
        assert f"Sample {opened} is open" in alert.text
        alert.accept()
        until(browser, lambda d: text(d, "sample-id") == "SLIDE-0043", 15)
        until(browser, lambda d: f"Closed {opened} (" in text(d, "msg") and "started sample SLIDE-0043" in text(d, "msg"), 15)
        c = api_state(url)["last_sample"]
        assert c["sample_id"] == opened and c["closed_by"] == "command" and c["n_fields"] >= MIN_FIELDS
        assert c["decision"] != "insufficient" and (c["decision"] == c["label"]) == (c["reason"] is None)
        words = "\u26A0 REFER" if c["decision"] == "refer" else c["decision"]  # the card is one line now
        assert text(browser, "closed-decision") == words  # enough fields: a class, or refer
        assert api_state(url)["counts"]["samples_closed"] == 2
    finally:
        agent.terminate()
