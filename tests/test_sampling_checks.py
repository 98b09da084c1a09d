"""Sampling options and generation_config.json values that cannot work are refused with a clear EngineError."""

import json

import mlx.core as mx
import numpy as np
import pytest

import engine
from conftest import MODELS
from engine.cli import main
from engine.sampling import REPETITION_WINDOW, SamplingOptions, TokenSampler, generation_defaults

NAN = float("nan")


@pytest.fixture(scope="module")
def e2b():
    return engine.load(MODELS / "tiny-e2b")


@pytest.mark.parametrize("options, named", [
    ({"temperature": NAN}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"repetition_penalty": NAN}, "repetition penalty"),
    ({"temperature": "0.7"}, "temperature"),
    ({"top_k": 2.5}, "top-k"),
    ({"top_k": True}, "top-k"),
    ({"seed": "7"}, "seed"),
])
def test_options_that_cannot_work_are_refused(options, named):
    with pytest.raises(engine.EngineError, match=named):
        SamplingOptions(**options).validated()


def test_numpy_numbers_sample_like_python_numbers(e2b):
    def sample(**numbers):
        return list(e2b.generate_ids([2, 3, 4], max_tokens=5, seed=5, **numbers))

    assert sample(temperature=np.float32(0.7), top_p=np.float32(0.9), min_p=np.float32(0.05), top_k=np.int64(20)) \
        == sample(temperature=0.7, top_p=float(np.float32(0.9)), min_p=float(np.float32(0.05)), top_k=20)


def test_the_repetition_penalty_looks_at_the_latest_window_of_tokens():
    repeated, old = 7, 9
    history = [old] + [repeated] * (REPETITION_WINDOW - 1)
    sampler = TokenSampler(SamplingOptions(temperature=0.0, repetition_penalty=1e6), history)
    logits = mx.zeros((1, 16)).at[:, [repeated, old]].add(mx.array([[1.0, 0.5]]))
    assert sampler(logits).item() == repeated, "both penalised: the larger one still leads"
    sampler.observe(mx.array([repeated]))  # the old token falls out of the window and keeps its lead over 0
    assert sampler(logits).item() == old


def test_a_seed_is_a_64_bit_unsigned_number(e2b):
    for seed in (-1, 2**64):
        with pytest.raises(engine.EngineError, match="seed"):
            list(e2b.generate_ids([2, 3], max_tokens=2, temperature=1.0, seed=seed))
    assert len(list(e2b.generate_ids([2, 3], max_tokens=2, temperature=1.0, seed=2**64 - 1))) == 2


def test_bad_options_fail_when_the_chat_is_made(e2b):
    with pytest.raises(engine.EngineError, match="temperature"):
        e2b.chat(temperature=NAN)
    with pytest.raises(engine.EngineError, match="seed"):
        e2b.chat(seed=-1)
    with pytest.raises(engine.EngineError, match="tokens to generate"):
        e2b.chat(max_tokens=-1)


def test_a_negative_token_limit_is_refused_before_any_work(e2b):
    with pytest.raises(engine.EngineError, match="tokens to generate"):
        list(e2b.generate_ids([2, 3], max_tokens=-5))


def test_a_top_k_at_or_over_the_vocabulary_keeps_every_token(e2b):
    vocab = e2b.config.text.vocab_size

    def sample(top_k):
        return list(e2b.generate_ids([2, 3, 4], max_tokens=6, temperature=1.0, top_k=top_k, seed=11))

    assert sample(vocab) == sample(10**6) == sample(0)


def test_the_cli_refuses_a_negative_seed_with_one_line(capsys):
    code = main(["generate", "--model", str(MODELS / "tiny-e2b"), "--prompt", "Hi", "--seed", "-1"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("lantern: ") and "seed" in err and err.count("\n") == 0


@pytest.mark.parametrize("content", ['{"temperature": "0.7"}', '{"top_k": 1.5}', '{"top_p": NaN}',
                                    '[1.0, 0.95]', '"temperature"'])
def test_a_generation_config_with_bad_values_is_an_error_naming_the_file(tmp_path, content):
    (tmp_path / "generation_config.json").write_text(content)
    with pytest.raises(engine.EngineError, match="generation_config.json"):
        generation_defaults(tmp_path)


def test_a_model_with_a_bad_generation_config_fails_with_the_file_named(model_copy):
    folder = model_copy("tiny-e2b")
    path = folder / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "temperature": "0.7"}))
    with pytest.raises(engine.EngineError, match="generation_config.json"):
        engine.load(folder).chat()
