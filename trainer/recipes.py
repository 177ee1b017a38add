"""`--recipe quick|full`: named presets of TrainConfig fields; explicit flags override them.

full keeps the documented defaults (60 epochs from scratch, 30 pretrained, patience 10)
for GPU workstations. quick is for a 2-core box without a GPU: on the real ALL set a
from-scratch MobileNetV2 at 224 px reached its best validation accuracy within about ten
epochs, so 14 epochs with early stopping after 5 idle ones keeps a run under an hour there.
It also recomputes the batch-norm statistics before each validation from 128 training images
instead of 512: that pass runs eagerly, so it costs a large share of each epoch on a CPU, and
recalibrating from 32 to 280 images gave the same validation accuracy within one image. The
measurements and their commands are in docs/trainer.md.
"""

from __future__ import annotations

from edge.errors import BadInput

RECIPES: dict[str, dict] = {
    "full": {},
    "quick": {"epochs": 14, "patience": 5, "bn_recal_images": 128},
}


def resolve(recipe: str, explicit: dict) -> dict:
    """TrainConfig keyword arguments: the recipe's preset, then every explicitly given (non-None) value."""
    if recipe not in RECIPES:
        raise BadInput(f"--recipe {recipe!r}: unknown (choose from {', '.join(RECIPES)})")
    return {**RECIPES[recipe], **{k: v for k, v in explicit.items() if v is not None}, "recipe": recipe}
