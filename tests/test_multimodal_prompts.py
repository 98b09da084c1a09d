"""Images and audio inside prompts: soft tokens scattered in order, counts checked, vision groups on 26B/31B."""

import dataclasses

import numpy as np
import pytest
import soundfile
from PIL import Image

import engine
from conftest import FIXTURES, MODELS, REFERENCE

MEDIA = FIXTURES / "media"
BUDGET = 70


def _images(reference):
    return [Image.open(MEDIA / str(name)) for name in reference["image_files"]]


def _audio():
    samples, rate = soundfile.read(MEDIA / "audio_16k.wav", dtype="float64")
    return [(samples.astype(np.float32), rate)]


def _scale_error(ours, reference):
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("name,with_audio", [("tiny-e2b", True), ("tiny-e4b", True), ("tiny-26b", False),
                                             ("tiny-31b", False), ("tiny-26b-q4", False)])
def test_multimodal_prompt_logits_match_reference(name, with_audio):
    reference = np.load(REFERENCE / f"{name}.npz")
    model = engine.load(MODELS / name)
    logits = model.logits(reference["mm_input_ids"].tolist(), images=_images(reference), image_budget=BUDGET,
                          audio=_audio() if with_audio else None)
    rows = reference["mm_logit_rows"]
    assert _scale_error(np.array(logits)[rows], reference["mm_logits"]) < 1e-4


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-26b"])
def test_embed_image_matches_reference(name):
    reference = np.load(REFERENCE / f"{name}.npz")
    model = engine.load(MODELS / name)
    features = np.concatenate([np.array(model.embed_image(image, BUDGET)) for image in _images(reference)])
    assert features.shape == reference["image_features"].shape
    assert _scale_error(features, reference["image_features"]) < 1e-4


def test_embed_audio_matches_reference():
    reference = np.load(REFERENCE / "tiny-e2b.npz")
    model = engine.load(MODELS / "tiny-e2b")
    wave, rate = _audio()[0]
    features = np.array(model.embed_audio(wave, rate))
    assert features.shape[0] == int(reference["audio_token_counts"][0])
    assert _scale_error(features, reference["audio_features"]) < 1e-4


def test_a_count_mismatch_names_both_counts():
    reference = np.load(REFERENCE / "tiny-e2b.npz")
    model = engine.load(MODELS / "tiny-e2b")
    ids = reference["mm_input_ids"].tolist()
    image_token = model.config.image_token_id
    first = ids.index(image_token)
    ids.insert(first, image_token)  # one placeholder too many
    with pytest.raises(ValueError, match="63 soft tokens but its placeholder run in the prompt has 64"):
        model.logits(ids, images=_images(reference), image_budget=BUDGET, audio=_audio())


def test_images_without_placeholders_are_refused():
    model = engine.load(MODELS / "tiny-e2b")
    with pytest.raises(engine.EngineError, match="0 image placeholder run.*1 image"):
        model.logits([2, 10, 11], images=[Image.new("RGB", (64, 64))], image_budget=BUDGET)


def test_generation_refuses_media_without_a_placeholder_run_of_its_own():
    reference = np.load(REFERENCE / "tiny-e2b.npz")
    model = engine.load(MODELS / "tiny-e2b")
    ids, images = reference["mm_input_ids"].tolist(), _images(reference)
    cases = [(dict(images=images + images[:1], audio=_audio()), f"{len(images)} image placeholder run.*{len(images) + 1} image"),
             (dict(images=images, audio=_audio() * 2), "1 audio clip placeholder run.*2 audio clip"),
             (dict(images=images), "1 audio clip placeholder run.*0 audio clip")]
    for media, message in cases:
        with pytest.raises(engine.EngineError, match=message):
            next(model.generate_ids(ids, max_tokens=2, image_budget=BUDGET, **media))


def test_generation_refuses_media_the_model_has_no_tower_for():
    model = engine.load(MODELS / "tiny-31b")
    with pytest.raises(engine.EngineError, match="no audio tower"):
        next(model.generate_ids([2, 10, 11], audio=_audio()))
    model.info = dataclasses.replace(model.info, modalities=frozenset({"text"}))  # as a text-only checkpoint
    with pytest.raises(engine.EngineError, match="no vision tower"):
        next(model.generate_ids([2, 10, 11], images=[Image.new("RGB", (64, 64))]))


def test_the_same_image_is_not_encoded_twice():
    model = engine.load(MODELS / "tiny-e2b")
    image = Image.open(MEDIA / "image_wide.png")
    first = model.embed_image(image, BUDGET)
    assert model.embed_image(image.copy(), BUDGET) is first


def test_chat_with_two_images_and_audio_counts_the_prompt_tokens():
    model = engine.load(MODELS / "tiny-e2b")
    session = model.chat(temperature=0.0, max_tokens=4, image_budget=BUDGET)
    images = [Image.open(MEDIA / "image_wide.png"), Image.open(MEDIA / "image_tall.png")]
    events = list(session.send("What is this?", images=images, audio=_audio()))
    stats = events[-1].stats
    assert stats.image_tokens == sum(model.image_token_count(i, BUDGET) for i in images)
    assert stats.audio_tokens == 28
    # A second turn reuses everything, images included.
    events = list(session.send("And now?"))
    assert events[-1].stats.cached_tokens >= stats.prompt_tokens


def test_long_audio_is_split_and_the_user_is_told():
    model = engine.load(MODELS / "tiny-e2b")
    session = model.chat(temperature=0.0, max_tokens=2)
    long_wave = (0.1 * np.sin(np.arange(16000 * 45) * 0.05)).astype(np.float32)
    events = list(session.send("Transcribe", audio=[(long_wave, 16000)]))
    notices = [e.text for e in events if e.kind == "notice"]
    assert notices and "split into 2" in notices[0]
    assert len(session.messages[0].audio) == 2
    assert events[-1].stats.audio_tokens == 2 * 563


@pytest.mark.parametrize("name,with_audio", [("tiny-e2b", True), ("tiny-26b", False)])
@pytest.mark.parametrize("chunk", [512, 7])
def test_cached_generation_with_media_equals_uncached_argmax(name, with_audio, chunk):
    # Small chunks would cut through the images; the prefill must keep each image in one chunk.
    reference = np.load(REFERENCE / f"{name}.npz")
    model = engine.load(MODELS / name)
    ids = reference["mm_input_ids"].tolist()
    media = dict(images=_images(reference), image_budget=BUDGET, audio=_audio() if with_audio else None)
    ours = list(model.generate_ids(ids, max_tokens=6, prefill_chunk=chunk, stop_ids=[], **media))
    sequence, expected = list(ids), []
    for _ in range(6):
        token = int(np.argmax(np.array(model.logits(sequence, **media))[-1]))
        expected.append(token)
        sequence.append(token)
    assert ours == expected


@pytest.mark.parametrize("name", ["tiny-e2b", "tiny-26b"])
def test_video_prompt_logits_match_reference(name):
    # 26B: each frame is its own bidirectional group.
    from engine.vision.video import frames_from_file

    reference = np.load(REFERENCE / f"video_{name}.npz")
    model = engine.load(MODELS / name)
    video = frames_from_file(MEDIA / "clip.gif")
    ids = reference["input_ids"]
    logits = np.array(model.logits(ids.tolist(), videos=[video], video_budget=BUDGET))[reference["logit_rows"]]
    text_rows = ids[reference["logit_rows"]] != model.config.video_token_id
    assert _scale_error(logits[text_rows], reference["logits"][text_rows]) < 1e-4
    # The frame features agree within 3e-6 relative (checked against get_video_features); at the 180 soft-token
    # positions themselves the random decoder amplifies that float32 noise to about 1.2e-4 of the logits' scale.
    assert _scale_error(logits[~text_rows], reference["logits"][~text_rows]) < 3e-4


@pytest.mark.parametrize("chunk", [512, 9])
def test_cached_generation_with_a_video_equals_uncached_argmax(chunk):
    from engine.vision.video import frames_from_file

    reference = np.load(REFERENCE / "video_tiny-26b.npz")
    model = engine.load(MODELS / "tiny-26b")
    ids, media = reference["input_ids"].tolist(), dict(videos=[frames_from_file(MEDIA / "clip.gif")])
    ours = list(model.generate_ids(ids, max_tokens=4, prefill_chunk=chunk, stop_ids=[], **media))
    sequence, expected = list(ids), []
    for _ in range(4):
        expected.append(int(np.argmax(np.array(model.logits(sequence, **media))[-1])))
        sequence.append(expected[-1])
    assert ours == expected


def test_chat_session_expands_a_video_like_the_reference():
    reference = np.load(REFERENCE / "video_tiny-e2b.npz")
    model = engine.load(MODELS / "tiny-e2b")
    session = model.chat(temperature=0.0, max_tokens=3)
    events = list(session.send("What happens?", videos=[MEDIA / "clip.gif"]))
    prompt, _ = session._prompt_for(session.messages[:1])
    assert prompt.ids.tolist() == reference["input_ids"].tolist()
    assert events[-1].stats.image_tokens == int(reference["frame_token_counts"].sum())


def test_video_frames_without_placeholders_are_refused():
    model = engine.load(MODELS / "tiny-e2b")
    with pytest.raises(engine.EngineError, match="0 video frame placeholder run.*3 video frame"):
        model.logits([2, 10, 11], videos=[[Image.new("RGB", (48, 48))] * 3], video_budget=BUDGET)


def test_each_image_can_carry_its_own_budget():
    model = engine.load(MODELS / "tiny-e2b")
    wide, tall = Image.open(MEDIA / "image_wide.png"), Image.open(MEDIA / "image_tall.png")
    session = model.chat(temperature=0.0, max_tokens=2, image_budget=70)
    events = list(session.send("Compare", images=[(wide, 140), tall]))
    expected = model.image_token_count(wide, 140) + model.image_token_count(tall, 70)
    assert model.image_token_count(wide, 140) != model.image_token_count(wide, 70)
    assert events[-1].stats.image_tokens == expected
    features = model.encode_images([(wide, 140), tall], budget=70)
    assert [f.shape[0] for f in features] == [model.image_token_count(wide, 140), model.image_token_count(tall, 70)]
    np.testing.assert_array_equal(np.array(features[1]), np.array(model.embed_image(tall, 70)))


def test_a_draft_message_is_counted_exactly_as_it_will_be_sent():
    model = engine.load(MODELS / "tiny-e2b")
    session = model.chat(temperature=0.0, max_tokens=2, image_budget=BUDGET)
    list(session.send("Hello"))
    images = [Image.open(MEDIA / "image_wide.png")]
    counted = session.count_tokens("What is this?", images=images, audio=_audio())
    assert len(session.messages) == 2  # counting sends nothing
    stats = list(session.send("What is this?", images=images, audio=_audio()))[-1].stats
    assert counted == {"total": stats.prompt_tokens, "image": stats.image_tokens, "audio": stats.audio_tokens}
