"""`--recipe quick|full`: named presets of TrainConfig fields; explicit flags override them.

full keeps the documented defaults (60 epochs from scratch, 30 pretrained, patience 10)
for GPU workstations. quick is for a 2-core box without a GPU: on the real ALL set a
from-scratch MobileNetV2 at 224 px reached its best validation accuracy within about ten
epochs (98.5-98.9 % from epoch 6 on; 14 epochs took 35.7 min on 2 cores), so 14 epochs
with early stopping after 5 idle ones keeps a run under an hour there. It also recomputes the
batch-norm statistics before each validation from 128 training images instead of 512: that
pass runs eagerly, and for MobileNetV2 at 224 px on 2 cores it took 34.9 s per epoch with 512
images and 12.4 s with 128 (on a box that trained it at about 6 img/s that day), while validation
accuracy after recalibrating from 32, 64, 128 or all 280 training images of the demo's set
agreed within one image of 60 (docs/trainer.md).
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
