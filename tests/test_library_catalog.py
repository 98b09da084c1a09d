"""The curated catalog: sizes agree with the blueprint's independent figures; recommendations fit."""

import pytest

from app.library.catalog import CATALOG, GIB, VARIANT_ORDER, VARIANTS, describe, fits, recommend, weight_bytes

# §9 of the blueprint: "resident weights, 4-bit text + bf16 towers" and "all bf16", in GiB.
BLUEPRINT_4BIT = {"e2b": 3.31, "e4b": 4.80, "26b-a4b": 14.3, "31b": 17.2}
BLUEPRINT_BF16 = {"e2b": 9.51, "e4b": 14.79, "26b-a4b": 48.1, "31b": 58.3}


@pytest.mark.parametrize("variant", VARIANT_ORDER)
def test_sizes_agree_with_the_blueprint_tables(variant):
    size = VARIANTS[variant]
    assert weight_bytes(size, 4) / GIB == pytest.approx(BLUEPRINT_4BIT[variant], rel=0.01)
    # The Google files also carry the unused KV-shared k/v weights, which §9 leaves out.
    bf16_without_extra = weight_bytes(size, None) - size.hf_extra * 1e6 * 2
    assert bf16_without_extra / GIB == pytest.approx(BLUEPRINT_BF16[variant], rel=0.01)


def test_every_variant_has_an_original_and_both_quantizations():
    for variant in VARIANT_ORDER:
        assert sorted((e.bits or 0) for e in CATALOG if e.variant == variant) == [0, 4, 8]
    assert len({entry.repo_id for entry in CATALOG}) == len(CATALOG)


def test_memory_needed_exceeds_the_download_and_grows_with_precision():
    for entry in CATALOG:
        assert entry.memory_bytes > entry.download_bytes
    by_key = {(entry.variant, entry.bits): entry for entry in CATALOG}
    for variant in VARIANT_ORDER:
        assert by_key[variant, 4].memory_bytes < by_key[variant, 8].memory_bytes < by_key[variant, None].memory_bytes


@pytest.mark.parametrize("ram_gib", [8, 16, 24, 36, 64, 128, 192])
def test_recommendation_is_the_best_entry_that_fits(ram_gib):
    ram = ram_gib * GIB
    best = recommend(ram)
    assert best is not None and fits(best, ram) and best.runnable
    rank = (VARIANT_ORDER.index(best.variant), best.bits)
    better = [e for e in CATALOG if e.runnable and (VARIANT_ORDER.index(e.variant), e.bits) > rank]
    assert not any(fits(entry, ram) for entry in better)
    assert "fits this Mac" in describe(best, ram)


def test_nothing_is_recommended_when_nothing_fits():
    assert recommend(2 * GIB) is None
    assert "too large" in describe(CATALOG[0], 2 * GIB)


def test_this_machine_gets_an_answer_from_its_own_memory():
    best = recommend()
    assert best is None or fits(best)
