"""The engine process on its own: the protocol over real pipes, and the history reuse inside it."""

import gc
import subprocess
import threading
import weakref
from pathlib import Path

from engine.chat import Message
from PySide6.QtCore import QProcess

from app import engine_protocol as protocol
from app.engine_host import EngineHost, engine_command, explain_exit
from app.engine_process import IDLE_CACHE_SHARE, EngineService, Turn, reuse_messages
from tests.conftest import FIXTURES, MODELS

REPO = Path(__file__).resolve().parents[1]
TINY = MODELS / "tiny-e2b"
MEDIA = FIXTURES / "media"


def image_token_count(path: Path, budget: int) -> int:
    from engine.vision import open_image, soft_token_count, upright_size

    return soft_token_count(*upright_size(open_image(path)), budget)


def replies_until(process, kind):
    seen = []
    for line in process.stdout:
        seen.append(protocol.decode(line))
        if seen[-1]["ev"] == kind:
            return seen
    raise AssertionError(f"the engine exited before {kind!r}; got {seen}")


def start_engine(**pipes):
    process = subprocess.Popen(engine_command(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, **pipes)
    assert replies_until(process, "ready")[-1]["pid"] == process.pid
    return process


def test_engine_process_loads_with_progress_counts_the_draft_exactly_streams_and_quits():
    process = start_engine()
    try:
        draft = {"conversation": 1, "history": [], "text": "Compare these", "options": {"image_budget": 280},
                 "images": [[str(MEDIA / "image_wide.png"), 70], str(MEDIA / "image_tall.png")]}
        protocol.write(process.stdin, {"op": "count", "request": 1, **draft})
        assert replies_until(process, "counted")[-1]["counts"] is None   # no model yet
        protocol.write(process.stdin, {"op": "load", "folder": str(TINY)})
        loading = replies_until(process, "loaded")
        fractions = [m["fraction"] for m in loading if m["ev"] == "stage"]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(set(fractions)) > 3
        assert any("reading weights" in m["text"].lower() for m in loading if m["ev"] == "stage")
        assert loading[-1]["info"]["context_length"] > 0 and "text" in loading[-1]["info"]["modalities"]

        protocol.write(process.stdin, {"op": "count", "request": 2, **draft})
        counted = replies_until(process, "counted")[-1]
        # Each image at its own budget: the wide one at 70, the tall one at the chat's 280.
        expected = image_token_count(MEDIA / "image_wide.png", 70) + image_token_count(MEDIA / "image_tall.png", 280)
        assert counted["request"] == 2 and counted["counts"]["image"] == expected
        assert counted["counts"]["audio"] == 0 and counted["counts"]["total"] > expected
        protocol.write(process.stdin, {"op": "turn", "turn": 7, **draft,
                                       "options": {"max_tokens": 5, "temperature": 0.0, "image_budget": 280}})
        turn = replies_until(process, "done")
        stats = turn[-1]["stats"]
        assert all(m["turn"] == 7 for m in turn) and stats["generated_tokens"] == 5
        assert stats["prompt_tokens"] == counted["counts"]["total"] and stats["image_tokens"] == expected
        assert [m for m in turn if m["ev"] == "event"]
        protocol.write(process.stdin, {"op": "quit"})
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()


def test_a_load_cancelled_at_once_leaves_no_model_and_the_engine_loads_again():
    process = start_engine()
    try:
        protocol.write(process.stdin, {"op": "load", "folder": str(TINY)})
        protocol.write(process.stdin, {"op": "cancel_load"})
        assert replies_until(process, "load_cancelled")[-1] == {"ev": "load_cancelled"}
        protocol.write(process.stdin, {"op": "turn", "turn": 1, "conversation": 1, "history": [], "text": "x"})
        assert "No model is loaded" in replies_until(process, "failed")[-1]["error"]
        protocol.write(process.stdin, {"op": "load", "folder": str(TINY)})
        assert replies_until(process, "loaded")[-1]["info"]["folder"] == str(TINY)
    finally:
        process.kill()
        process.wait()


def test_a_corrupt_model_is_a_load_failure_not_a_dead_engine(model_copy):
    broken = model_copy("tiny-e2b")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    process = start_engine(stderr=subprocess.DEVNULL)
    try:
        protocol.write(process.stdin, {"op": "load", "folder": str(broken)})
        failure = replies_until(process, "load_failed")[-1]
        assert "safetensors" in failure["error"] or "model.safetensors" in failure["error"]
        protocol.write(process.stdin, {"op": "turn", "turn": 1, "conversation": 1, "history": [], "text": "x"})
        assert "No model is loaded" in replies_until(process, "failed")[-1]["error"]
        process.stdin.close()   # the window went away: the engine ends by itself
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()


def test_protocol_lines_are_ascii_and_round_trip():
    message = {"ev": "event", "turn": 3, "kind": "text", "text": "naïve 👋\nline"}
    line = protocol.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1 and line.isascii()
    assert protocol.decode(line) == message


def test_exit_explanations_name_memory_or_the_crash():
    memory = explain_exit(-6, True, ["[METAL] Command buffer execution failed: Insufficient Memory"])
    assert "ran out of memory" in memory and "smaller model" in memory
    crashed = explain_exit(9, True, ["something odd"])
    assert "crashed" in crashed and "something odd" in crashed
    assert "exit code 3" in explain_exit(3, False, [])


def test_unchanged_prefix_is_reused_and_the_rest_rebuilt():
    old = [Message("user", "a"), Message("assistant", "b", token_ids=[1, 2]), Message("user", "c")]
    old_turns = [Turn("user", "a"), Turn("assistant", "b"), Turn("user", "c")]
    new = reuse_messages(old, old_turns, [Turn("user", "a"), Turn("assistant", "b"), Turn("user", "edited")])
    assert new[0] is old[0] and new[1] is old[1] and new[1].token_ids == [1, 2]
    assert new[2] is not old[2] and (new[2].role, new[2].text) == ("user", "edited")


def test_a_changed_turn_or_new_media_rebuilds_everything_after_it():
    old = [Message("user", "a"), Message("assistant", "b")]
    old_turns = [Turn("user", "a"), Turn("assistant", "b")]
    image = str(MEDIA / "image_wide.png")
    new = reuse_messages(old, old_turns, [Turn("user", "a", images=((image, None), (image, 560))),
                                          Turn("assistant", "b")])
    assert all(n is not o for n, o in zip(new, old))
    assert len(new[0].images) == 2 and new[0].images[0].size[0] > new[0].images[0].size[1]
    assert new[0].images[1][1] == 560 and new[0].images[1][0].size == new[0].images[0].size
    assert reuse_messages(old, old_turns, []) == []


def test_a_stop_pressed_as_a_reply_ends_does_not_stop_the_next_reply():
    replies = []

    def reply(message):
        replies.append(message)
        if message["ev"] == "done" and message["turn"] == 1:
            service.cancel(1)   # the user's Stop crossed the end of the reply

    service = EngineService(reply)
    service.load(str(TINY), threading.Event())
    request = {"conversation": 1, "history": [], "text": "hi", "options": {"max_tokens": 4, "temperature": 0.0}}
    service.turn({"turn": 1, **request})
    service.turn({"turn": 2, **request})
    done = [message for message in replies if message["ev"] == "done"]
    assert [message["turn"] for message in done] == [1, 2]
    assert done[1]["stats"]["stop_reason"] != "cancelled" and done[1]["stats"]["generated_tokens"] == 4


def test_an_answer_sent_back_as_the_window_stored_it_keeps_the_ids_the_cache_holds():
    replies = []
    service = EngineService(replies.append)
    service.load(str(TINY), threading.Event())
    options = {"max_tokens": 12, "temperature": 0.0}
    history = []
    for turn, text in enumerate(["Hello", "Tell me about dragons", "And cats?"]):
        replies.clear()
        service.turn({"turn": turn, "conversation": 1, "history": list(history), "text": text, "options": options})
        answer = "".join(r["text"] for r in replies if r["ev"] == "event" and r["kind"] == "text")
        history += [{"role": "user", "text": text}, {"role": "assistant", "text": answer}]
    session = service._sessions[1][1]
    earlier = [message for message in session.messages if message.role == "assistant"][:-1]
    assert len(earlier) == 2 and all(message.token_ids for message in earlier)
    stats = next(r for r in replies if r["ev"] == "done")["stats"]
    suffix = session.model.tokenizer.encode("<turn|>\n<|turn>user\nAnd cats?<turn|>\n<|turn>model\n")
    # Only the new turn is prefilled, and the last answer token, which was sampled but never fed back.
    assert stats["prompt_tokens"] - stats["cached_tokens"] <= len(suffix) + 1


def test_loading_another_model_frees_the_last_one_first():
    service = EngineService(lambda message: None)
    service.load(str(TINY), threading.Event())
    service.turn({"turn": 1, "conversation": 1, "history": [], "text": "hi",
                  "options": {"max_tokens": 3, "temperature": 0.0}})
    weights = weakref.ref(service.model.net.text)
    gc.disable()   # what reference counting alone would free: not the model, which sits in cycles
    try:
        service.load(str(MODELS / "tiny-31b"), threading.Event())
        assert weights() is None and service.model is not None
    finally:
        gc.enable()


def test_idle_chats_keep_their_caches_only_within_the_memory_share_and_newest_first(monkeypatch):
    service = EngineService(lambda message: None)
    service.load(str(TINY), threading.Event())
    options = {"max_tokens": 3, "temperature": 0.0}

    def ask(conversation: int) -> None:
        service.turn({"turn": conversation, "conversation": conversation, "history": [], "text": "hi",
                      "options": options})

    for conversation in (1, 2, 3):
        ask(conversation)
    assert list(service._sessions) == [1, 2, 3]   # a tiny model's caches fit the share many times over
    one_cache = service._sessions[1][1].generator.cache.nbytes
    monkeypatch.setattr("app.engine_process.machine_memory", lambda: int(1.5 * one_cache / IDLE_CACHE_SHARE))
    ask(1)   # chat 1 answers again: the idle chat used longest ago (2) goes, the newer idle one (3) stays
    assert list(service._sessions) == [3, 1]
    monkeypatch.setattr("app.engine_process.MAX_IDLE_CHATS", 0)
    ask(2)
    assert list(service._sessions) == [2] and service._sessions[2][1].generator.cache.length > 0


def test_stopping_during_a_reply_cancels_it_so_the_engine_quits_by_itself_and_reports_nothing_more(qtbot):
    host = EngineHost()
    try:
        with qtbot.waitSignal(host.loaded, timeout=60000):
            host.load(TINY)
        with qtbot.waitSignal(host.event, timeout=20000):   # the reply is streaming
            host.start_turn(1, [], "Tell me a long story", {"max_tokens": 1_000_000, "temperature": 0.0})
        reported = []
        host.event.connect(lambda *event: reported.append(event))
        host.turn_finished.connect(lambda *finished: reported.append(finished))
        host.stop()
        assert host.process.exitStatus() == QProcess.ExitStatus.NormalExit and host.process.exitCode() == 0
        assert reported == []   # the window has kept the reply as it showed it
    finally:
        host.kill()


def host_answering_by_hand(monkeypatch) -> tuple[EngineHost, list[dict]]:
    """A host whose requests are recorded and whose replies the test gives, in the order it chooses. (Patched
    on the class: an instance attribute holding a bound method would put the QObject in a reference cycle,
    and a QObject destroyed by the garbage collector in the middle of Qt's event loop can crash it.)"""
    sent = []
    monkeypatch.setattr(EngineHost, "_send", lambda _host, message: sent.append(message))
    return EngineHost(), sent


def test_only_the_last_load_asked_for_is_answered_to_the_window(qtbot, monkeypatch):
    host, sent = host_answering_by_hand(monkeypatch)
    loaded, progress = [], []
    host.loaded.connect(loaded.append)
    host.loading.connect(lambda text, _fraction: progress.append(text))
    host.load("/models/e2b")
    host.load("/models/31b")   # a second click before the first load ended
    host._dispatch({"ev": "stage", "text": "Reading weights (e2b)…", "fraction": 0.5})
    host._dispatch({"ev": "loaded", "info": {"folder": "/models/e2b"}})
    host._dispatch({"ev": "stage", "text": "Reading weights (31b)…", "fraction": 0.1})
    assert progress == ["Reading weights (31b)…"]
    assert loaded == [] and host.info is None and host.folder == "/models/31b"
    host._dispatch({"ev": "loaded", "info": {"folder": "/models/31b"}})
    assert loaded == [{"folder": "/models/31b"}] and host.folder == "/models/31b"
    assert [message["folder"] for message in sent] == ["/models/e2b", "/models/31b"]


def test_a_cancel_that_crosses_the_end_of_a_load_keeps_the_model_for_a_restart(qtbot, monkeypatch):
    host, _ = host_answering_by_hand(monkeypatch)
    cancelled = []
    host.load_cancelled.connect(lambda: cancelled.append(True))
    host.load("/models/e2b")
    host.cancel_load()   # the engine had already finished: it answers "loaded", and nothing for the cancel
    host._dispatch({"ev": "loaded", "info": {"folder": "/models/e2b"}})
    assert host.folder == "/models/e2b" and not cancelled   # what Restart engine would load again
    host.load("/models/31b")
    host._dispatch({"ev": "load_cancelled"})
    assert cancelled == [True] and host.folder is None and host.info is None
