"""Soft-token counts and resized sizes for every budget (architecture reference §4.1)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import EngineError
from engine.vision.sizing import BUDGETS, check_budget, soft_token_count, target_size

# Reference §4.1, computed there with the transformers function: (height, width) -> per budget
# (soft tokens, resized height, resized width).
SECTION_4_1 = {
    (1024, 1024): [(64, 384, 384), (121, 528, 528), (256, 768, 768), (529, 1104, 1104), (1089, 1584, 1584)],
    (224, 224): [(64, 384, 384), (121, 528, 528), (256, 768, 768), (529, 1104, 1104), (1089, 1584, 1584)],
    (768, 1024): [(63, 336, 432), (130, 480, 624), (266, 672, 912), (540, 960, 1296), (1064, 1344, 1824)],
    (1080, 1920): [(66, 288, 528), (120, 384, 720), (264, 576, 1056), (527, 816, 1488), (1100, 1200, 2112)],
}


@pytest.mark.parametrize("height, width", list(SECTION_4_1))
def test_resize_table_of_the_reference(height: int, width: int) -> None:
    for budget, (tokens, new_height, new_width) in zip(BUDGETS, SECTION_4_1[(height, width)]):
        assert target_size(width, height, budget) == (new_width, new_height)
        assert soft_token_count(width, height, budget) == tokens


def test_matches_transformers_over_many_sizes() -> None:
    reference = pytest.importorskip("transformers.models.gemma4.processing_gemma4")
    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(1, 5000, size=(400, 2))]
    sizes += [(1, 1), (1, 9000), (9000, 1), (2, 3000), (47, 48), (48, 48), (49, 47)]
    for width, height in sizes:
        for budget in BUDGETS:
            new_height, new_width = reference.get_aspect_ratio_preserving_size(
                height=height, width=width, patch_size=16, max_patches=budget * 9, pooling_kernel_size=3)
            assert target_size(width, height, budget) == (new_width, new_height), (width, height, budget)
            assert soft_token_count(width, height, budget) == new_height * new_width // (16 * 16 * 9)


@pytest.mark.parametrize("width, height", [(37, 91), (3000, 20), (1, 300), (640, 480)])
def test_sizes_respect_budget_and_block_multiple(width: int, height: int) -> None:
    for budget in BUDGETS:
        new_width, new_height = target_size(width, height, budget)
        assert new_width % 48 == 0 and new_height % 48 == 0
        assert 0 < soft_token_count(width, height, budget) <= budget


@pytest.mark.parametrize("budget", [0, 69, 100, 281, 2240, -70, True, 280.0])
def test_unsupported_budget_is_refused(budget) -> None:
    with pytest.raises(EngineError, match="budget"):
        soft_token_count(100, 100, budget)


def test_supported_budgets_pass_validation_as_plain_ints() -> None:
    checked = [check_budget(np.int64(b)) for b in BUDGETS]
    assert checked == list(BUDGETS) and all(type(b) is int for b in checked)


@pytest.mark.parametrize("width, height", [(0, 10), (10, 0), (-5, 10)])
def test_image_without_area_is_refused(width: int, height: int) -> None:
    with pytest.raises(EngineError, match="no area"):
        soft_token_count(width, height, 280)
