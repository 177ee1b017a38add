"""The demo's choice of the model the agent runs: gate passed and colour baseline beaten."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import LeukedgeError
from leukedge.demo import choose_deployed


def report(acc: float, base: float = 0.53) -> dict:
    return {"accuracy": acc, "baseline_accuracy": base, "beats_baseline": round((acc - base) * 100, 2)}


def test_mobilenetv2_is_deployed_when_it_passed_the_gate_and_beats_the_baseline():
    bundles = {"custom_cnn": Path("c"), "mobilenetv2": Path("m")}
    assert choose_deployed(bundles, {"custom_cnn": report(0.95), "mobilenetv2": report(0.80)}) == "mobilenetv2"


def test_a_chance_level_model_with_a_small_int8_drop_is_not_deployed():
    bundles = {"custom_cnn": Path("c"), "mobilenetv2": Path("m")}  # both passed the int8 gate
    assert choose_deployed(bundles, {"custom_cnn": report(0.82), "mobilenetv2": report(0.17)}) == "custom_cnn"


def test_a_model_refused_by_the_gate_is_not_deployed_however_accurate():
    assert choose_deployed({"custom_cnn": Path("c")}, {"custom_cnn": report(0.7), "mobilenetv2": report(0.99)}) == "custom_cnn"


def test_nothing_that_beats_the_baseline_stops_the_demo_naming_every_model():
    with pytest.raises(LeukedgeError, match=r"custom_cnn 0\.500 vs baseline 0\.530.*mobilenetv2 0\.900 .*refused"):
        choose_deployed({"custom_cnn": Path("c")}, {"custom_cnn": report(0.50), "mobilenetv2": report(0.90)})
