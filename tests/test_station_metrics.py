"""`/metrics` of a real agent: every labelled counter has its series at 0 before anything is
counted, slides are counted by decision, the disk, last-field and process gauges are there,
and `promtool check metrics` (Prometheus' own linter) finds nothing to say about the output.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from edge.agent import Agent
from edge.errors import BAD_FRAME_REASONS
from edge.station.gate import DROP_REASONS
from leukedge.agent_process import write_images
from tests.test_station import agent_cfg, bundle, get, start, wait_for  # noqa: F401

pytestmark = pytest.mark.slow


def scrape(url: str) -> tuple[str, dict]:
    """(/metrics text, {(name, ((label, value),...)): value}) read through prometheus-client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, body = get(url + "metrics")
    assert status == 200
    text, samples = body.decode(), {}
    for family in text_string_to_metric_families(text):
        for x in family.samples:
            samples[(x.name, tuple(sorted(x.labels.items())))] = x.value
    return text, samples


def by_label(samples: dict, name: str) -> dict[str, float]:
    return {lab[0][1]: v for (n, lab), v in samples.items() if n == name}


def promtool_clean(text: str) -> None:
    """`promtool check metrics` reads the exposition on stdin; it exits 1 and names each problem."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`)")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stdout + done.stderr


def run_agent(tmp_path, bundle, frames, **over):  # noqa: F811
    agent = Agent(agent_cfg(tmp_path, bundle, frames, ui={"listen": "127.0.0.1:0", "linger_s": 60}, **over))
    return agent, start(agent)


def test_every_labelled_series_exists_at_zero_before_any_field(tmp_path, bundle):  # noqa: F811
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "field-0000.jpg").write_bytes(b"not a jpeg at all")  # one bad frame, and no field ever
    agent, t = run_agent(tmp_path, bundle, frames)
    try:
        text, samples = wait_for(lambda: (lambda got: got if got[1].get(("leukedge_frames_total", ())) == 1
                                          else None)(scrape(agent.station.url)), 30)
        labels = agent.station.snap["model"]["labels"]
    finally:
        agent.request_stop()
        t.join(30)
    assert samples[("leukedge_fields_total", ())] == 0
    assert by_label(samples, "leukedge_results_total") == dict.fromkeys([*labels, "refer"], 0)
    assert by_label(samples, "leukedge_samples_total") == dict.fromkeys([*labels, "refer", "insufficient"], 0)
    bad = by_label(samples, "leukedge_bad_frames_total")
    assert set(bad) == set(BAD_FRAME_REASONS) and sum(bad.values()) == 1
    assert by_label(samples, "leukedge_ui_connections_dropped_total") == dict.fromkeys(DROP_REASONS, 0)
    assert samples[("leukedge_last_field_timestamp_seconds", ())] == 0
    promtool_clean(text)


def test_slides_by_decision_gauges_and_process_metrics_pass_promtool(tmp_path, bundle):  # noqa: F811
    frames = write_images(tmp_path / "frames", 10)
    began = time.time()
    agent, t = run_agent(tmp_path, bundle, frames, sample={"auto_open": True, "fields_per_sample": 5})
    try:
        text, samples = wait_for(lambda: (lambda got: got if sum(by_label(got[1], "leukedge_samples_total").values())
                                          == 2 else None)(scrape(agent.station.url)), 60)
        state = agent.station.snap
    finally:
        agent.request_stop()
        t.join(30)
    assert samples[("leukedge_fields_total", ())] == 10
    slides = by_label(samples, "leukedge_samples_total")
    expected = dict.fromkeys([*state["model"]["labels"], "refer", "insufficient"], 0)
    for s in state["recent_samples"]:
        expected[s["decision"]] += 1
    assert slides == expected and sum(slides.values()) == state["counts"]["samples_closed"] == 2
    last = samples[("leukedge_last_field_timestamp_seconds", ())]
    assert began - 1 <= last <= time.time()
    usage = shutil.disk_usage(tmp_path)
    assert abs(samples[("leukedge_disk_free_bytes", ())] - usage.free) < 0.05 * usage.total
    assert samples[("process_resident_memory_bytes", ())] > 0 and ("process_cpu_seconds_total", ()) in samples
    promtool_clean(text)
