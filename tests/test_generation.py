"""Cached generation equals repeated argmax over the uncached forward, for every fixture shape."""

import json
import threading

import numpy as np
import pytest

import engine
from conftest import MODELS, REFERENCE

SHAPES = ["tiny-e2b", "tiny-e4b", "tiny-26b", "tiny-31b", "tiny-e2b-q4"]


def _argmax_continuation(model, prompt, count):
    sequence, out = list(prompt), []
    for _ in range(count):
        token = int(np.argmax(np.array(model.logits(sequence))[-1]))
        out.append(token)
        sequence.append(token)
    return out


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("chunk", [512, 5])
def test_cached_greedy_equals_uncached_argmax(name, chunk):
    model = engine.load(MODELS / name)
    prompt = np.load(REFERENCE / f"{name}.npz")["input_ids"].astype(int).tolist()
    window = model.config.text.sliding_window
    steps = window + 3  # the decode itself wraps the ring once more
    ours = list(model.generate_ids(prompt, max_tokens=steps, prefill_chunk=chunk, stop_ids=[]))
    assert ours == _argmax_continuation(model, prompt, steps)


def test_generation_stops_on_a_stop_id():
    model = engine.load(MODELS / "tiny-e2b")
    prompt = np.load(REFERENCE / "tiny-e2b.npz")["input_ids"].astype(int).tolist()
    free = list(model.generate_ids(prompt, max_tokens=12, stop_ids=[]))
    stop = free[4]
    stopped = list(model.generate_ids(prompt, max_tokens=12, stop_ids=[stop]))
    assert stopped == free[: free.index(stop) + 1]


def test_model_stop_ids_include_end_of_turn():
    model = engine.load(MODELS / "tiny-e2b")
    assert model.tokenizer.token_id("<turn|>") in model.stop_ids
    assert model.tokenizer.token_id("<eos>") in model.stop_ids


def test_sampling_is_reproducible_with_a_seed():
    model = engine.load(MODELS / "tiny-e2b")
    prompt = [2, 10, 11, 12, 13]
    first = list(model.generate_ids(prompt, max_tokens=10, temperature=1.0, seed=7, stop_ids=[]))
    second = list(model.generate_ids(prompt, max_tokens=10, temperature=1.0, seed=7, stop_ids=[]))
    other = list(model.generate_ids(prompt, max_tokens=10, temperature=1.0, seed=8, stop_ids=[]))
    assert first == second
    assert first != other


def test_repetition_penalty_changes_greedy_output():
    model = engine.load(MODELS / "tiny-26b")
    prompt = [2, 10, 11, 12, 13]
    plain = list(model.generate_ids(prompt, max_tokens=16, stop_ids=[]))
    penalised = list(model.generate_ids(prompt, max_tokens=16, repetition_penalty=5.0, stop_ids=[]))
    assert len(set(penalised)) >= len(set(plain))
    assert plain != penalised


def test_bad_sampling_settings_are_refused():
    model = engine.load(MODELS / "tiny-e2b")
    with pytest.raises(engine.EngineError, match="top-p"):
        next(model.generate_ids([2, 3], top_p=1.5))


def test_prefill_chunks_shrink_so_long_contexts_keep_the_score_matrix_bounded():
    from engine.generate import SCORE_BUDGET_BYTES, Generator

    model = engine.load(MODELS / "tiny-31b")
    generator = Generator(model, prefill_chunk=512)
    heads = model.config.text.num_attention_heads
    assert generator._chunk_size(1000) == 512
    long_context = 4_000_000
    chunk = generator._chunk_size(long_context)
    assert chunk < 512 and heads * chunk * long_context * 4 <= max(SCORE_BUDGET_BYTES, heads * 32 * long_context * 4)


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-31b"])
def test_quantized_kv_cache_for_full_layers_stays_close(name):
    # 8-bit keys and values move the logits by well under a percent of their scale on these random
    # models, and the sliding rings (unquantized) are untouched; 4-bit costs more but still works.
    from engine.generate import Generator, Prompt
    from engine.sampling import SamplingOptions

    model = engine.load(MODELS / name)
    prompt = np.load(REFERENCE / f"{name}.npz")["input_ids"].astype(int)
    greedy = SamplingOptions(temperature=0.0)
    errors = {}
    for bits in (None, 8, 4):
        generator = Generator(model, prefill_chunk=7, kv_bits=bits)
        logits = generator._prefill(Prompt(prompt), snapshot_at=[])
        errors[bits] = np.array(logits)
        assert list(generator.run(Prompt(prompt), max_tokens=4, sampling=greedy, stop_ids=[]))
    scale = np.abs(errors[None]).max()
    eight = np.abs(errors[8] - errors[None]).max() / scale
    four = np.abs(errors[4] - errors[None]).max() / scale
    assert 0 < eight < 1e-2 and eight < four < 0.2


def test_quantized_kv_cache_bits_are_checked():
    model = engine.load(MODELS / "tiny-e2b")
    with pytest.raises(engine.EngineError, match="4 or 8 bits"):
        next(model.generate_ids([2, 3], kv_bits=3))


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-26b"])
def test_rings_that_grow_in_steps_give_the_uncached_tokens(name, model_copy):
    """A window wider than the rings' growth step: the prefill chunks and the decode grow the rings,
    then wrap them, and the tokens still equal the uncached argmax."""
    folder = model_copy(name)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"]["sliding_window"] = 300
    (folder / "config.json").write_text(json.dumps(config))
    model = engine.load(folder)
    text_ids = np.load(REFERENCE / f"{name}.npz")["input_ids"].astype(int).tolist()[1:]
    prompt = (text_ids * 8)[:290]
    ours = list(model.generate_ids(prompt, max_tokens=14, prefill_chunk=100, stop_ids=[]))
    assert ours == _argmax_continuation(model, prompt, 14)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("chunk", [512, 7])
def test_prefill_logits_equal_the_uncached_forward(name, chunk):
    """The prefill computes only the last position past the last cache-writing layer; its logits must
    still be the full forward's, to the float32 tolerance (greedy tokens alone can hide a wrong layer)."""
    from engine.generate import Generator, Prompt

    model = engine.load(MODELS / name)
    prompt = np.load(REFERENCE / f"{name}.npz")["input_ids"].astype(int)
    prefilled = np.array(Generator(model, prefill_chunk=chunk)._prefill(Prompt(prompt), snapshot_at=[]))[0]
    full = np.array(model.logits(prompt.tolist()))[-1]
    assert np.abs(prefilled - full).max() <= 1e-4 * np.abs(full).max()
