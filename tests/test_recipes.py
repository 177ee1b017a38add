"""`--recipe quick|full` presets (explicit flags win) and `--cnn-depth 1|2` (the paper's one conv per block)."""

from __future__ import annotations

import argparse

import pytest

from edge.errors import BadInput
from trainer.recipes import RECIPES, resolve


def _parse(argv):
    from trainer.train_cli import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(["--data", "d", "--out", "o", *argv])


def test_recipe_presets_and_explicit_flags_override():
    from trainer.train_cli import config_from

    cfg = config_from(_parse(["--recipe", "quick"]))
    assert (cfg.epochs, cfg.patience, cfg.bn_recal_images, cfg.recipe) == (14, 5, 128, "quick")
    cfg = config_from(_parse(["--recipe", "quick", "--epochs", "3", "--patience", "9", "--cnn-depth", "1"]))
    assert (cfg.epochs, cfg.patience, cfg.recipe, cfg.cnn_depth) == (3, 9, "quick", 1)
    cfg = config_from(_parse([]))
    assert (cfg.epochs, cfg.patience, cfg.recipe, cfg.cnn_depth, cfg.near_dup_distance) == (None, 10, "full", 2, 4)
    assert RECIPES["full"] == {}
    with pytest.raises(BadInput, match="--recipe 'fast'"):
        resolve("fast", {})


def test_cnn_depth_one_is_the_papers_lighter_network():
    pytest.importorskip("keras")
    from trainer.models import build_model

    convs = {}
    for depth in (1, 2):
        model = build_model("custom_cnn", 64, cnn_depth=depth)
        convs[depth] = [layer.name for layer in model.layers if layer.name.endswith(("conv1", "conv2"))]
        convs[f"params{depth}"] = model.count_params()
    assert len(convs[1]) == 4 and len(convs[2]) == 7  # block 1 always has one
    assert convs["params1"] < convs["params2"] / 2
    with pytest.raises(BadInput, match="--cnn-depth 3"):
        build_model("custom_cnn", 64, cnn_depth=3)
