"""Chat sessions: prompt reuse across turns, snapshots, cancel, streaming text, thinking and tools."""

import threading

import numpy as np
import pytest

import engine
from conftest import MODELS
from engine.output_stream import OutputStream
from engine.tool_calls import ToolCall

TURNS = ["Hello there", "Tell me about the sea", "And the mountains?", "Why is that?", "Thanks, one more thing"]


def _run(events):
    events = list(events)
    text = "".join(e.text for e in events if e.kind == "text")
    return text, events[-1].stats


@pytest.fixture(scope="module")
def e2b():
    return engine.load(MODELS / "tiny-e2b")


def test_turn_five_prefills_only_its_new_tokens_and_matches_a_fresh_session(e2b):
    session = e2b.chat(temperature=0.0, max_tokens=12)
    for text in TURNS[:4]:
        _run(session.send(text))
    cached_before = session.generator.cache.length
    answer, stats = _run(session.send(TURNS[4]))
    assert stats.cached_tokens == cached_before
    prompt, _ = session._prompt_for(session.messages[:-1])
    new_text = e2b.tokenizer.decode(prompt.ids[stats.cached_tokens:].tolist())
    # Only the last answer token (sampled but never fed back) and the new turn are prefilled.
    suffix = f"<turn|>\n<|turn>user\n{TURNS[4]}<turn|>\n<|turn>model\n"
    assert new_text.endswith(suffix)
    assert len(prompt.ids) - stats.cached_tokens - len(e2b.tokenizer.encode(suffix)) <= 1

    fresh = e2b.chat(temperature=0.0, max_tokens=12)
    fresh_answer, fresh_stats = _run(fresh._turn(list(session.messages[:-1])))
    assert fresh_stats.cached_tokens == 0
    assert fresh_stats.prompt_tokens == stats.prompt_tokens
    assert fresh_answer == answer


def test_regenerate_reuses_the_snapshot_before_the_last_token(e2b):
    session = e2b.chat(temperature=1.0, seed=3, max_tokens=40)
    for text in TURNS[:3]:
        _run(session.send(text))
    _, stats = _run(session.regenerate())
    assert stats.cached_tokens == stats.prompt_tokens - 1


def test_edit_of_an_earlier_turn_does_not_reprefill_everything(e2b):
    session = e2b.chat(temperature=0.0, max_tokens=30)
    for text in TURNS[:4]:
        _run(session.send(text))
    _, stats = _run(session.edit(4, "A different third question"))
    assert stats.cached_tokens > 0
    fresh = e2b.chat(temperature=0.0, max_tokens=30)
    _, fresh_stats = _run(fresh._turn(list(session.messages[:-1])))
    assert fresh_stats.prompt_tokens == stats.prompt_tokens


def test_cancel_from_another_thread_stops_quickly_and_leaves_the_session_usable(e2b):
    session = e2b.chat(temperature=1.0, seed=1, max_tokens=5000)
    seen = []
    streaming = threading.Event()
    canceller = threading.Thread(target=lambda: streaming.wait(30) and session.cancel())
    canceller.start()
    for event in session.send("Write a very long story"):
        seen.append(event)
        streaming.set()
    canceller.join()
    assert seen[-1].kind == "done" and seen[-1].stats.stop_reason == "cancelled"
    assert seen[-1].stats.generated_tokens < 100
    session.options.max_tokens = 8
    _, stats = _run(session.send("Are you still there?"))
    assert stats.stop_reason in ("stop", "length")
    assert stats.cached_tokens > 0


def test_a_model_is_used_on_the_thread_that_loaded_it(e2b):
    errors = []

    def use():
        try:
            e2b.logits([2, 3, 4])
        except engine.EngineError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=use)
    worker.start()
    worker.join()
    assert errors and "thread that loaded it" in errors[0]


def test_audio_is_refused_by_a_model_without_an_audio_tower():
    model = engine.load(MODELS / "tiny-31b")
    session = model.chat()
    with pytest.raises(engine.EngineError, match="no audio tower"):
        session.send("listen", audio=[(np.zeros(16000, np.float32), 16000)])


class _Scripted:
    """Feeds chosen token ids through the real tokenizer and stream splitter."""

    def __init__(self, model):
        self.tokenizer = model.tokenizer

    def stream(self, text_pieces):
        stream = OutputStream(self.tokenizer, self.tokenizer.special_ids)
        events = []
        for piece in text_pieces:
            ids = [self.tokenizer.token_id(piece)] if self.tokenizer.token_id(piece) is not None and piece.startswith("<") \
                else self.tokenizer.encode(piece)
            for token in ids:
                events += stream.push(token)
        events += stream.finish()
        return stream, events


def test_text_events_are_valid_utf8_across_split_multibyte_tokens(e2b):
    scripted = _Scripted(e2b)
    text = "naïve café 東京 🙂 ok"
    ids = e2b.tokenizer.encode(text)
    assert len(ids) > len(text.encode("utf-8")) // 4  # byte-fallback pieces really split characters
    stream = OutputStream(e2b.tokenizer, e2b.tokenizer.special_ids)
    pieces = []
    for token in ids:
        for event in stream.push(token):
            assert "\ufffd" not in event.text
            event.text.encode("utf-8")
            pieces.append(event.text)
    pieces += [e.text for e in stream.finish()]
    assert "".join(pieces) == text
    del scripted


def test_thinking_and_answer_are_split(e2b):
    stream, events = _Scripted(e2b).stream(["<|channel>", "thought\nLet me think.", "<channel|>", "The answer."])
    assert stream.thinking == "Let me think."
    assert stream.answer == "The answer."
    assert [e.kind for e in events if e.text] == sorted([e.kind for e in events if e.text], key=["thinking", "text"].index)


def test_tool_calls_become_structured_events(e2b):
    stream, events = _Scripted(e2b).stream(
        ["Checking.", "<|tool_call>", "call:get_weather{city:", '<|"|>', "Paris", '<|"|>', ",days:3}", "<tool_call|>"])
    calls = [e.tool_call for e in events if e.kind == "tool_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].arguments == {"city": "Paris", "days": 3}
    assert "call:" not in stream.answer


def test_a_tool_result_is_answered_in_the_model_turn_that_called_the_tool(e2b):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city."}}]
    session = e2b.chat(temperature=0.0, max_tokens=4, tools=tools)
    session.messages += [engine.chat.Message("user", "Weather in Paris?"),
                         engine.chat.Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Paris"})])]
    events = list(session.add_tool_result("get_weather", "15 degrees, sunny"))
    assert events[-1].kind == "done" and events[-1].stats.generated_tokens >= 1
    assert [(m.role, m.name) for m in session.messages[-2:]] == [("tool", "get_weather"), ("assistant", None)]
    prompt, _ = session._prompt_for(session.messages[:-1])
    rendered = e2b.tokenizer.decode(prompt.ids.tolist())
    # The answer continues the open model turn right after the response: no new turn is started.
    assert rendered.endswith('<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
                             '<|tool_response>response:get_weather{value:<|"|>15 degrees, sunny<|"|>}<tool_response|>')


def _render(model, messages, **options):
    return model.chat_template.render(messages=messages, add_generation_prompt=True, **options)


def test_template_with_and_without_system_thinking_and_tools():
    e2b = engine.load(MODELS / "tiny-e2b")
    plain = _render(e2b, [{"role": "user", "content": "Hi"}])
    assert plain == "<bos><|turn>user\nHi<turn|>\n<|turn>model\n"
    system = _render(e2b, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                     enable_thinking=True)
    assert system.startswith("<bos><|turn>system\n<|think|>\nBe brief.<turn|>\n")
    tools = [{"type": "function", "function": {"name": "get_time", "description": "Now."}}]
    with_tools = _render(e2b, [{"role": "user", "content": "Time?"}], tools=tools)
    assert "<|tool>declaration:get_time" in with_tools
    big = engine.load(MODELS / "tiny-26b")
    assert _render(big, [{"role": "user", "content": "Hi"}]).endswith("<|turn>model\n<|channel>thought\n<channel|>")


def test_bos_appears_exactly_once(e2b):
    session = e2b.chat(system="Be brief.")
    session.messages.append(engine.chat.Message("user", "Hi"))
    prompt, _ = session._prompt()
    bos = e2b.config.text.bos_token_id
    assert prompt.ids.tolist().count(bos) == 1 and prompt.ids[0] == bos


def test_large_model_template_reuses_the_history_before_the_prefilled_thought_block():
    model = engine.load(MODELS / "tiny-26b")
    session = model.chat(temperature=0.0, max_tokens=6)
    _, first = _run(session.send("Hello there"))
    history, _ = session._prompt_for(session.messages[:1])
    # The second prompt re-renders turn one without the empty thought block the first prompt pre-filled,
    # so everything up to the model turn's start is reused and only the rest is prefilled again.
    _, second = _run(session.send("And again"))
    prefill_block = len(model.tokenizer.encode("<|channel>thought\n<channel|>"))
    assert second.cached_tokens >= first.prompt_tokens - prefill_block - len(model.tokenizer.encode("<|turn>model\n"))
    assert second.cached_tokens < first.prompt_tokens + first.generated_tokens


def test_a_runaway_chat_template_is_stopped():
    from engine.chat_template import ChatTemplate

    slow = ChatTemplate("{% for i in range(100000) %}{% for j in range(10) %}{% endfor %}{% endfor %}",
                        time_limit_s=0.01)
    with pytest.raises(engine.EngineError, match="took longer than"):
        slow.render(messages=[])
    failing = ChatTemplate("{{ raise_exception('no system role') }}")
    with pytest.raises(engine.EngineError, match="no system role"):
        failing.render(messages=[])
    sandboxed = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(engine.EngineError, match="chat template failed"):
        sandboxed.render(messages=[])
