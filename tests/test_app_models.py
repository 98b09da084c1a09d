"""Model discovery in the Hugging Face cache and user folders, and the memory check before loading."""

import json
import os
import shutil

from app.models import (check_memory, folder_problem, hf_cache_dir, kv_cache_bytes, picker_labels, read_entry,
                        scan_folder, scan_hf_cache)
from engine.convert import STAGING_SUFFIX
from tests.conftest import MODELS


def test_hf_cache_location_honours_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hf_cache_dir() == tmp_path / "cache"


def test_scan_finds_gemma4_snapshots_and_skips_other_models(tmp_path):
    snapshot = tmp_path / "models--google--gemma-4-tiny" / "snapshots" / "abc123"
    shutil.copytree(MODELS / "tiny-e2b-q4", snapshot)
    other = tmp_path / "models--someone--llama" / "snapshots" / "def"
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    entries = scan_hf_cache(tmp_path)
    assert [e.name for e in entries] == ["google/gemma-4-tiny"]
    entry = entries[0]
    assert entry.quantization is not None and entry.quantization[0] == 4
    assert entry.modalities == {"text", "image", "audio"}
    assert entry.size_bytes == sum(f.stat().st_size for f in snapshot.glob("*.safetensors"))


def test_scan_skips_snapshots_still_missing_files_for_the_newest_complete_one(tmp_path):
    repo = tmp_path / "models--google--gemma-4-tiny" / "snapshots"
    complete = repo / "old"
    shutil.copytree(MODELS / "tiny-e2b-q4", complete)
    unfinished = repo / "new"   # a newer revision whose download has not brought the tokenizer yet
    shutil.copytree(MODELS / "tiny-e2b-q4", unfinished)
    (unfinished / "tokenizer.json").unlink()
    os.utime(complete, (1, 1))
    only_config = tmp_path / "models--google--gemma-4-other" / "snapshots" / "abc"
    only_config.mkdir(parents=True)
    shutil.copy(MODELS / "tiny-e2b-q4" / "config.json", only_config)
    assert [entry.path for entry in scan_hf_cache(tmp_path)] == [complete]


def test_user_folder_lists_each_model_with_its_modalities():
    entries = {e.name: e for e in scan_folder(MODELS)}
    assert {"tiny-e2b", "tiny-26b", "tiny-31b-q8"} <= set(entries)
    assert "audio" in entries["tiny-e2b"].modalities
    assert "audio" not in entries["tiny-26b"].modalities
    assert scan_folder(MODELS / "tiny-e2b")[0].name == "tiny-e2b"


def test_a_model_is_listed_with_the_inputs_a_message_can_carry():
    entries = {e.name: e for e in scan_folder(MODELS)}
    assert entries["tiny-e2b"].label.endswith(" · text, image, audio")
    assert entries["tiny-26b"].label.endswith(" · text, image")


def test_kv_estimate_grows_with_context_until_sliding_layers_saturate():
    config = read_entry(MODELS / "tiny-e2b").config
    window = config.text.sliding_window
    small, large = kv_cache_bytes(config, window), kv_cache_bytes(config, 4 * window)
    assert 0 < small < large < 4 * small  # sliding layers stop growing past one window


def test_memory_check_refuses_with_a_suggestion_and_accepts_when_it_fits():
    entry = read_entry(MODELS / "tiny-e2b")
    refused = check_memory(entry, context=4096, ram_bytes=entry.size_bytes)
    assert not refused.fits
    assert "4-bit" in refused.message and entry.name in refused.message
    quantized = read_entry(MODELS / "tiny-e2b-q4")
    assert "smaller variant" in check_memory(quantized, ram_bytes=quantized.size_bytes).message
    accepted = check_memory(entry, context=4096, ram_bytes=64 * 2**30)
    assert accepted.fits and accepted.needed_bytes == refused.needed_bytes


def test_models_in_lm_studio_folders_are_found(tmp_path, monkeypatch):
    import shutil

    from app.models import discover
    from tests.conftest import MODELS

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path / "data"))
    target = tmp_path / ".lmstudio" / "models" / "mlx-community" / "gemma-4-tiny"
    shutil.copytree(MODELS / "tiny-e2b-q4", target)
    (tmp_path / ".lmstudio" / "models" / "someone" / "not-a-model").mkdir(parents=True)
    found = discover([])
    assert [entry.path for entry in found] == [target]
    assert found[0].name == "mlx-community/gemma-4-tiny"  # matches the hub repo, so it is not downloaded again


def test_an_added_folder_is_scanned_two_levels_deep_as_lm_studio_lays_models_out(tmp_path):
    shutil.copytree(MODELS / "tiny-e2b-q4", tmp_path / "mlx-community" / "gemma-4-tiny")
    shutil.copytree(MODELS / "tiny-e2b", tmp_path / "flat-model")
    shutil.copytree(MODELS / "tiny-26b", tmp_path / "flat-model" / "inner-model")   # not a model of its own
    shutil.copytree(MODELS / "tiny-e4b", tmp_path / "a" / "b" / "too-deep")
    entries = scan_folder(tmp_path)
    assert [e.name for e in entries] == ["flat-model", "mlx-community/gemma-4-tiny"]
    assert [e.path for e in entries] == [tmp_path / "flat-model", tmp_path / "mlx-community" / "gemma-4-tiny"]


def test_models_converted_in_the_library_are_found_once(tmp_path, monkeypatch):
    from app.models import converted_models_dir, discover

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path / "data"))
    converted = tmp_path / "data" / "models" / "gemma-4-e2b-it-4bit"
    shutil.copytree(MODELS / "tiny-e2b-q4", converted)
    assert converted_models_dir() == converted.parent
    assert [entry.path for entry in discover([])] == [converted]
    assert [entry.path for entry in discover([converted.parent, converted])] == [converted]


def test_a_conversions_staging_folder_is_never_listed_though_it_holds_a_config_and_weights(tmp_path, monkeypatch):
    from app.models import discover

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path / "data"))
    converted = tmp_path / "data" / "models" / "gemma-4-e2b-it-4bit"
    staging = converted.with_name(converted.name + STAGING_SUFFIX)
    nested = tmp_path / "added" / "publisher" / f"gemma{STAGING_SUFFIX}"
    for folder in (converted, staging, nested):
        shutil.copytree(MODELS / "tiny-e2b-q4", folder)
    assert [entry.path for entry in discover([tmp_path / "added"])] == [converted]
    assert scan_folder(staging) == []


def test_two_copies_of_one_model_are_told_apart_by_their_folder(tmp_path):
    for drive in ("internal", "external"):
        shutil.copytree(MODELS / "tiny-e2b", tmp_path / drive / "gemma")
    entries = scan_folder(tmp_path / "internal") + scan_folder(tmp_path / "external") + scan_folder(MODELS)
    labels = picker_labels(entries)
    assert labels[0].endswith(f"in {tmp_path / 'internal'}") and labels[1].endswith(f"in {tmp_path / 'external'}")
    assert labels[2:] == [entry.label for entry in entries[2:]]   # unique names stay as they were


def test_folder_problem_says_why_a_folder_cannot_be_loaded(tmp_path):
    assert folder_problem(MODELS / "tiny-e2b") is None
    assert "no longer exists" in folder_problem(tmp_path / "gone")
    assert "no config.json" in folder_problem(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    assert "cannot be read" in folder_problem(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    assert "does not hold a Gemma 4 model" in folder_problem(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "gemma4", "text_config": {"hidden_size": "wide"}}')
    assert "is not usable" in folder_problem(tmp_path)
