"""How big an image becomes for a soft-token budget, without touching any pixels.

The vision tower sees 16x16 patches and pools them in 3x3 blocks, so an image is scaled (up or down,
keeping its aspect ratio) to the largest size whose sides are multiples of 48 and whose patch count
fits `budget * 9`. The app's token meter calls `soft_token_count` before any image is decoded fully.
"""

from __future__ import annotations

import math
import numbers

from ..errors import EngineError

BUDGETS = (70, 140, 280, 560, 1120)
DEFAULT_BUDGET = 280
PATCH_SIZE = 16
POOLING_KERNEL = 3


def check_budget(budget: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral) or budget not in BUDGETS:
        raise EngineError(f"image budget {budget!r} is not supported; choose one of {', '.join(map(str, BUDGETS))}")
    return int(budget)


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise EngineError(f"an image of {width}x{height} pixels has no area; it cannot be encoded")


def target_size(width: int, height: int, budget: int) -> tuple[int, int]:
    """(width, height) the image is resized to for `budget` soft tokens."""
    budget = check_budget(budget)
    _check_size(width, height)
    side = POOLING_KERNEL * PATCH_SIZE
    max_patches = budget * POOLING_KERNEL**2
    factor = math.sqrt(max_patches * PATCH_SIZE**2 / (width * height))
    new_width = math.floor(factor * width / side) * side
    new_height = math.floor(factor * height / side) * side
    # A very thin image rounds its short side to zero: it keeps one block there and grows along the
    # long side by the whole aspect ratio, capped at one block row/column of the budget.
    longest = budget * side
    if new_height == 0:
        return min(width // height * side, longest), side
    if new_width == 0:
        return side, min(height // width * side, longest)
    return new_width, new_height


def soft_token_count(width: int, height: int, budget: int) -> int:
    """Number of image placeholder tokens a `width` x `height` image takes at `budget`."""
    new_width, new_height = target_size(width, height, budget)
    return (new_width // PATCH_SIZE) * (new_height // PATCH_SIZE) // POOLING_KERNEL**2
