"""`--recipe quick|full`: named presets of TrainConfig fields; explicit flags override them.

full keeps the documented defaults (60 epochs from scratch, 30 pretrained, patience 10)
for GPU workstations. quick is for a 2-core box without a GPU: on the real ALL set a
from-scratch MobileNetV2 at 224 px reached its best validation accuracy within about ten
epochs (98.5-98.9 % from epoch 6 on; 14 epochs took 35.7 min on 2 cores), so 14 epochs
with early stopping after 5 idle ones keeps a run under an hour there.
"""

from __future__ import annotations

from edge.errors import BadInput

RECIPES: dict[str, dict] = {
    "full": {},
    "quick": {"epochs": 14, "patience": 5},
}


def resolve(recipe: str, explicit: dict) -> dict:
    """TrainConfig keyword arguments: the recipe's preset, then every explicitly given (non-None) value."""
    if recipe not in RECIPES:
        raise BadInput(f"--recipe {recipe!r}: unknown (choose from {', '.join(RECIPES)})")
    return {**RECIPES[recipe], **{k: v for k, v in explicit.items() if v is not None}, "recipe": recipe}
