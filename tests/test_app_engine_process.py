"""The engine process on its own: the protocol over real pipes, and the history reuse inside it."""

import subprocess
import sys
from pathlib import Path

from engine.chat import Message

from app import engine_protocol as protocol
from app.engine_host import engine_command, explain_exit
from app.engine_process import Turn, reuse_messages
from tests.conftest import MODELS

REPO = Path(__file__).resolve().parents[1]
TINY = MODELS / "tiny-e2b"


def replies_until(process, kind):
    seen = []
    for line in process.stdout:
        seen.append(protocol.decode(line))
        if seen[-1]["ev"] == kind:
            return seen
    raise AssertionError(f"the engine exited before {kind!r}; got {seen}")


def test_engine_process_loads_counts_streams_and_quits():
    process = subprocess.Popen(engine_command(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert replies_until(process, "ready")[-1]["pid"] == process.pid
        protocol.write(process.stdin, {"op": "count", "request": 1, "texts": ["hello"]})
        assert replies_until(process, "counted")[-1]["counts"] is None   # no model yet
        protocol.write(process.stdin, {"op": "load", "folder": str(TINY)})
        loading = replies_until(process, "loaded")
        assert [m["step"] for m in loading if m["ev"] == "stage"] == [1, 2, 3]
        assert loading[-1]["info"]["context_length"] > 0 and "text" in loading[-1]["info"]["modalities"]
        protocol.write(process.stdin, {"op": "count", "request": 2, "texts": ["hello world", ""]})
        counted = replies_until(process, "counted")[-1]
        assert counted["request"] == 2 and counted["counts"][0] > 0 and counted["counts"][1] == 0
        protocol.write(process.stdin, {"op": "turn", "turn": 7, "conversation": 1, "history": [],
                                       "text": "Hi", "options": {"max_tokens": 5, "temperature": 0.0}})
        turn = replies_until(process, "done")
        texts = [m["text"] for m in turn if m["ev"] == "event"]
        assert all(m["turn"] == 7 for m in turn) and turn[-1]["stats"]["generated_tokens"] == 5
        assert len(texts) >= 1
        protocol.write(process.stdin, {"op": "quit"})
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.wait()


def test_a_corrupt_model_is_a_load_failure_not_a_dead_engine(model_copy):
    broken = model_copy("tiny-e2b")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    process = subprocess.Popen(engine_command(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
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
    image = str(REPO / "tests" / "fixtures" / "media" / "image_wide.png")
    new = reuse_messages(old, old_turns, [Turn("user", "a", images=(image,)), Turn("assistant", "b")])
    assert all(n is not o for n, o in zip(new, old))
    assert len(new[0].images) == 1 and new[0].images[0].size[0] > new[0].images[0].size[1]
    assert reuse_messages(old, old_turns, []) == []
