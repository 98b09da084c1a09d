"""The engine worker's history reuse: unchanged leading turns keep their Message objects (and cached ids)."""

from engine.chat import Message

from app.engine_worker import reuse_messages


def test_unchanged_prefix_is_reused_and_the_rest_rebuilt():
    old = [Message("user", "a"), Message("assistant", "b", token_ids=[1, 2]), Message("user", "c")]
    new = reuse_messages(old, (("user", "a"), ("assistant", "b"), ("user", "edited")))
    assert new[0] is old[0] and new[1] is old[1]
    assert new[1].token_ids == [1, 2]
    assert new[2] is not old[2] and (new[2].role, new[2].text) == ("user", "edited")


def test_a_changed_turn_rebuilds_everything_after_it():
    old = [Message("user", "a"), Message("assistant", "b")]
    new = reuse_messages(old, (("user", "x"), ("assistant", "b")))
    assert all(n is not o for n, o in zip(new, old))
    assert [(m.role, m.text) for m in new] == [("user", "x"), ("assistant", "b")]
    assert reuse_messages(old, ()) == []
