"""Chat history storage and the message tree, without any window."""

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import files_cut_at
from app.conversation import Conversation, Variant
from app.storage import MIGRATIONS, Attachment, Library, LibraryUnwritable

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def library(tmp_path):
    lib = Library(tmp_path)
    yield lib
    lib.close()


def test_data_dir_env_override_and_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("LANTERN_DATA_DIR", str(tmp_path / "data"))
    lib = Library()
    assert lib.path == tmp_path / "data" / "history.sqlite3"
    assert lib.schema_version == len(MIGRATIONS)
    assert lib.quick_check()
    mode = sqlite3.connect(lib.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    lib.close()
    assert Library(tmp_path / "data").schema_version == len(MIGRATIONS)  # reopening migrates nothing twice


def test_rename_pin_order_and_delete_with_undo(library):
    first = library.create_conversation("first")
    second = library.create_conversation("second")
    library.set_pinned(first, True)
    assert [c.id for c in library.conversations()] == [first, second]
    library.rename(second, "  renamed ")
    assert library.conversation(second).title == "renamed"
    library.delete(first)
    assert [c.id for c in library.conversations()] == [second]
    library.restore(first)
    assert {c.id for c in library.conversations()} == {first, second}
    library.delete(first)
    library.purge_deleted()
    with pytest.raises(KeyError):
        library.conversation(first)


def test_messages_of_a_purged_conversation_go_with_it(library):
    chat = Conversation(library, library.create_conversation())
    chat.add_user_message("remember the walrus")
    library.delete(chat.id)
    assert library.search("walrus") == []
    library.purge_deleted()
    assert library.messages(chat.id) == []


def test_search_finds_words_across_chats_and_ignores_fts_syntax(library):
    a = Conversation(library, library.create_conversation())
    b = Conversation(library, library.create_conversation())
    a.add_user_message("How do I bake sourdough bread?")
    b.add_user_message("Tell me about tidal pools")
    hits = library.search("sourdo")
    assert [(h.conversation_id, h.title) for h in hits] == [(a.id, "How do I bake sourdough bread?")]
    assert "[sourdough]" in hits[0].snippet
    assert library.search('tidal "OR NEAR(') == []
    assert [h.conversation_id for h in library.search("tidal pools")] == [b.id]


def test_search_finds_a_chat_by_its_title_once(library):
    renamed = Conversation(library, library.create_conversation())
    renamed.add_user_message("How do I bake sourdough?")
    library.rename(renamed.id, "Weekend baking plan")
    titled_by_its_question = Conversation(library, library.create_conversation())
    titled_by_its_question.add_user_message("weekend hikes nearby")
    [by_title, by_message] = library.search("weekend")
    assert (by_title.conversation_id, by_title.message_id) == (renamed.id, None)   # the chat, not a message
    assert by_title.title == "Weekend baking plan" and by_title.snippet == "[Weekend] baking plan"
    assert by_message.conversation_id == titled_by_its_question.id and by_message.message_id is not None
    library.rename(renamed.id, "Bread")
    assert [h.conversation_id for h in library.search("weekend")] == [titled_by_its_question.id]
    library.delete(renamed.id)
    assert library.search("Bread") == []



def _library_at_version(folder: Path, version: int) -> sqlite3.Connection:
    """A history file as a release with the first `version` migrations wrote it, left open for more rows."""
    db = sqlite3.connect(folder / "history.sqlite3")
    db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied REAL)")
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        db.executescript(script)
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (number,))
    return db

def test_an_older_library_gains_a_search_index_of_its_chat_titles(tmp_path):
    db = _library_at_version(tmp_path, 4)   # written before titles were searched
    db.execute("INSERT INTO conversations (title, created, updated) VALUES ('Weekend baking plan', 0, 0)")
    db.commit()
    db.close()
    lib = Library(tmp_path)
    assert lib.schema_version == len(MIGRATIONS)
    assert [(h.conversation_id, h.title) for h in lib.search("baking")] == [(1, "Weekend baking plan")]
    lib.close()


def test_search_finds_chinese_and_japanese_words_inside_a_sentence(library):
    chinese = Conversation(library, library.create_conversation())
    chinese.add_user_message("我喜欢吃苹果和香蕉")
    japanese = Conversation(library, library.create_conversation())
    japanese.add_user_message("東京で美味しいラーメンを食べました")
    [hit] = library.search("苹果")
    assert hit.conversation_id == chinese.id and hit.snippet == "我喜欢吃[苹果]和香蕉"
    assert [h.conversation_id for h in library.search("ラーメン")] == [japanese.id]
    assert [h.conversation_id for h in library.search("香蕉 苹果")] == [chinese.id]   # every word, in any order
    assert library.search("苹果 ラーメン") == []
    library.rename(japanese.id, "日本の旅行")
    assert [(h.conversation_id, h.message_id) for h in library.search("旅行")] == [(japanese.id, None)]


def test_a_word_with_symbols_at_its_edge_is_found_only_with_them(library):
    languages = Conversation(library, library.create_conversation())
    languages.add_user_message("I write C++ and some C# at work")
    chat = Conversation(library, library.create_conversation())
    chat.add_user_message("chat about cats")
    assert [h.conversation_id for h in library.search("c++")] == [languages.id]   # not every word starting with c
    assert [h.conversation_id for h in library.search("C#")] == [languages.id]
    assert [h.snippet for h in library.search("++")] == ["I write C[++] and some C# at work"]
    assert [h.conversation_id for h in library.search('"cats"')] == [chat.id]   # quotes are not part of a word
    assert library.search("cats!") == []


def test_edits_update_the_search_index(library):
    chat = Conversation(library, library.create_conversation())
    user = chat.add_user_message("question")
    answer = chat.add_answer(user, "partial")
    library.update_message(answer, "final answer about zebras", "", {"generated_tokens": 3})
    assert library.search("partial") == []
    assert [h.message_id for h in library.search("zebras")] == [answer]


def test_regenerate_keeps_variants_and_switches_between_them(library):
    chat = Conversation(library, library.create_conversation())
    user = chat.add_user_message("hi")
    first = chat.add_answer(user, "one")
    second = chat.add_answer(chat.regeneration_parent(first), "two")
    third = chat.add_answer(chat.regeneration_parent(second), "three")
    assert [m.content for m in chat.path] == ["hi", "three"]
    assert chat.tree.variant(third) == Variant(3, 3)
    assert chat.switch_variant(third, -1) == second
    assert [m.content for m in chat.path] == ["hi", "two"]
    assert chat.switch_variant(second, 2) == first  # wraps around
    reopened = Conversation(library, chat.id)
    assert [m.content for m in reopened.path] == ["hi", "one"]
    assert reopened.tree.variant(first).position == 1


def test_edit_branches_and_keeps_what_followed(library):
    chat = Conversation(library, library.create_conversation())
    u1 = chat.add_user_message("first question")
    a1 = chat.add_answer(u1, "first answer")
    u2 = chat.add_user_message("follow-up")
    chat.add_answer(u2, "second answer")
    edited = chat.edit_user_message(u1, "better question")
    assert [m.content for m in chat.path] == ["better question"]
    chat.add_answer(edited, "better answer")
    chat.switch_variant(edited, -1)
    assert [m.content for m in chat.path] == ["first question", "first answer", "follow-up", "second answer"]
    assert [(turn["role"], turn["text"]) for turn in chat.turns_before(u2)] == [
        ("user", "first question"), ("assistant", "first answer")]
    with pytest.raises(ValueError):
        chat.edit_user_message(a1, "not a user message")


def test_history_carries_answers_without_thoughts(library):
    chat = Conversation(library, library.create_conversation())
    user = chat.add_user_message("2+2?")
    chat.add_answer(user, "4", thinking="two plus two is four")
    follow = chat.add_user_message("and 3+3?")
    history = chat.turns_before(follow)
    assert [(turn["role"], turn["text"]) for turn in history] == [("user", "2+2?"), ("assistant", "4")]
    assert all("two plus two" not in str(turn) for turn in history)
    assert chat.library.conversation(chat.id).title == "2+2?"


def test_a_writer_killed_mid_transaction_loses_only_its_own_change(tmp_path):
    library = Library(tmp_path)
    chat = Conversation(library, library.create_conversation())
    kept = chat.add_user_message("kept message")
    library.close()
    script = textwrap.dedent(f"""
        import os
        from app.storage import Library
        lib = Library({str(tmp_path)!r})
        with lib.transaction() as db:
            db.execute("INSERT INTO messages (conversation_id, parent_id, role, content, created) "
                       "VALUES ({chat.id}, {kept}, 'assistant', 'half written', 0)")
            os._exit(9)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert result.returncode == 9
    reopened = Library(tmp_path)
    assert reopened.quick_check()
    assert [m.content for m in reopened.messages(chat.id)] == ["kept message"]
    assert reopened.search("half") == []
    reopened.close()


WRITER = textwrap.dedent("""
    import sys
    from app.conversation import Conversation
    from app.storage import Library
    lib = Library(sys.argv[1])
    chat = Conversation(lib, lib.conversations()[0].id if lib.conversations() else lib.create_conversation())
    while True:
        user = chat.add_user_message("question " * 50)
        answer = chat.add_answer(user, "")
        for size in range(1, 6):   # a reply saved as it grows, as a streaming writer would
            lib.update_message(answer, "word " * 200 * size, "", {"generated_tokens": size})
        print(user, answer, flush=True)   # both rows are committed in full
""")


def test_killing_the_writer_many_times_loses_at_most_the_message_being_written(tmp_path):
    import random
    import signal

    rng = random.Random(6)
    committed: list[int] = []
    in_flight: set[int] = set()
    for _ in range(15):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                                  text=True)
        for _ in range(rng.randint(1, 4)):
            committed += [int(n) for n in writer.stdout.readline().split()]
        time_to_kill = rng.random() * 0.02
        subprocess.run(["sleep", f"{time_to_kill:.3f}"])
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        committed += [int(n) for line in writer.stdout for n in line.split()]   # confirmed before the kill
        library = Library(tmp_path)
        assert library.quick_check()
        stored = {m.id: m for m in library.messages(library.conversations()[0].id)}
        assert set(committed) <= set(stored)
        assert all(stored[i].content.count("word") == 1000 for i in committed if stored[i].role == "assistant")
        # Beyond what the writers confirmed: per kill at most the one turn in flight (a question, its answer).
        unconfirmed = set(stored) - set(committed)
        assert len(unconfirmed - in_flight) <= 2
        in_flight = unconfirmed
        library.close()


def test_an_older_library_gains_per_image_budgets_and_keeps_its_message_wide_budget(tmp_path):
    db = _library_at_version(tmp_path, 2)   # written before budgets per image
    db.execute("INSERT INTO conversations (title, created, updated) VALUES ('old', 0, 0)")
    db.execute("INSERT INTO messages (conversation_id, role, content, stats, created) "
               "VALUES (1, 'user', 'look', '{\"image_budget\": 560}', 0)")
    db.execute("INSERT INTO attachments (message_id, kind, file, name) VALUES (1, 'image', 'abc.png', 'a.png')")
    db.commit()
    db.close()
    (tmp_path / "attachments").mkdir()
    (tmp_path / "attachments" / "abc.png").write_bytes(b"an image")
    lib = Library(tmp_path)
    assert lib.schema_version == len(MIGRATIONS) and lib.attachments(1)[0].budget is None
    assert Conversation(lib, 1).media_of(1)["images"] == [[str(lib.attachments_dir / "abc.png"), 560]]
    chat = Conversation(lib, 1)
    new = chat.add_user_message("and these", [Attachment("image", REPO / "tests/fixtures/media/image_wide.png",
                                                         budget=70),
                                              Attachment("image", REPO / "tests/fixtures/media/image_tall.png")])
    assert [a.budget for a in lib.attachments(new)] == [70, None]
    assert chat.media_of(new)["images"][0][1] == 70 and isinstance(chat.media_of(new)["images"][1], str)
    lib.close()


def test_a_history_that_cannot_be_written_is_reported_as_such_and_left_alone(tmp_path, monkeypatch):
    Library(tmp_path).close()

    def read_only(self):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    monkeypatch.setattr(Library, "_configure", read_only)
    with pytest.raises(LibraryUnwritable, match="cannot be written to"):
        Library.open_checked(tmp_path)
    assert [path.name for path in tmp_path.iterdir() if "corrupt" in path.name] == []


def test_a_new_session_starts_with_an_empty_staging_folder_and_keeps_the_history(tmp_path):
    library = Library(tmp_path)
    chat = Conversation(library, library.create_conversation())
    image = tmp_path / "photo.png"
    image.write_bytes(b"not really a png")
    user = chat.add_user_message("look", [Attachment("image", image)])
    library.staging_dir.mkdir()
    for name in ("draft.png", "recording.wav", "cut.png.partial"):
        (library.staging_dir / name).write_bytes(b"left by the last session")
    library.close()
    reopened = Library(tmp_path)
    assert list(reopened.staging_dir.iterdir()) == []
    assert [a.path.read_bytes() for a in reopened.attachments(user)] == [b"not really a png"]
    assert image.is_file()
    reopened.close()


def test_a_staged_file_cut_short_never_takes_its_final_name(tmp_path):
    from app.media.attachments import ImageAttachment
    from app.media.composer import image_file

    item = ImageAttachment("Pasted image 1.png", None, (1, 1), 70, data=bytes(range(256)) * 40)
    with files_cut_at(4000), pytest.raises(OSError):
        image_file(item, tmp_path)
    assert list(tmp_path.iterdir()) == []
    written = image_file(item, tmp_path)
    assert written.read_bytes() == item.data


def test_a_history_whose_folder_cannot_be_written_opens_read_only_at_start(tmp_path):
    library = Library(tmp_path)
    chat = Conversation(library, library.create_conversation())
    chat.add_answer(chat.add_user_message("where are the pineapples?"), "on the left")
    library.close()
    with files_cut_at(0):   # no byte can be written, as on a full disk
        read_only, notice = Library.open_at_start(tmp_path)
    assert read_only.read_only and "read-only" in notice and "Free some disk space" in notice
    assert [m.content for m in Conversation(read_only, chat.id).path] == ["where are the pineapples?", "on the left"]
    assert [hit.conversation_id for hit in read_only.search("pineapples")] == [chat.id]
    with pytest.raises(sqlite3.OperationalError):
        read_only.rename(chat.id, "renamed")
    read_only.close()
    writable, notice = Library.open_at_start(tmp_path)   # once there is room again
    assert not writable.read_only and notice is None and writable.conversation(chat.id).title != "renamed"
    writable.close()


def test_an_older_history_is_not_opened_read_only_since_it_needs_its_migrations_written(tmp_path):
    older = _library_at_version(tmp_path, 2)
    older.commit()
    older.close()
    with files_cut_at(0):
        try:
            Library.open_at_start(tmp_path)
            outcome = "opened"
        except LibraryUnwritable:
            outcome = "refused"
    assert outcome == "refused"


def test_a_load_on_a_full_disk_goes_ahead_without_its_crash_marker(tmp_path):
    from app.load_marker import LoadMarker

    marker = LoadMarker(tmp_path)
    with files_cut_at(0):
        marker.begin(tmp_path / "gemma-4-e2b")   # no room for the note: no exception either
    assert marker.crashed_model() is None and list(tmp_path.iterdir()) == []
    marker.begin(tmp_path / "gemma-4-e2b")
    assert marker.crashed_model() == tmp_path / "gemma-4-e2b"
