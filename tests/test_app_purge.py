"""A deleted chat is gone for good after the next start: from the database file, its WAL, the search index,
the attachments folder, and from backups; until then "Undo delete" can bring it back."""

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from app.conversation import Conversation
from app.storage import ATTACHMENTS_DIR, Attachment, Library
from tests.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[1]
SECRET = "zanzibarquux"   # in the deleted chat only, so finding it anywhere on disk is a leak
SHARED_IMAGE = FIXTURES / "media" / "image_wide.png"
OWN_IMAGE = FIXTURES / "media" / "image_tall.png"


@pytest.fixture(autouse=True)
def sqlite_that_keeps_deleted_bytes(monkeypatch):
    """SQLite as python.org's macOS build ships it, leaving deleted content in free pages unless told
    otherwise; Debian's build overwrites it by default, which would hide a missing request."""
    connect = sqlite3.connect

    def connect_without_secure_delete(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.execute("PRAGMA secure_delete=OFF")
        return connection

    monkeypatch.setattr(sqlite3, "connect", connect_without_secure_delete)


def library_with_a_deleted_chat(folder: Path) -> tuple[Library, int, int]:
    """A kept chat (deleted once and undone) and a deleted chat; both show one image, the deleted chat also
    one of its own. Its answer was streamed in by an earlier Lantern, whose every save of the growing text
    left the previous draft in a free page."""
    library = Library(folder)
    kept = Conversation(library, library.create_conversation())
    kept.add_user_message("a question to keep", [Attachment("image", SHARED_IMAGE)])
    library.delete(kept.id)
    library.restore(kept.id)
    gone = Conversation(library, library.create_conversation())
    user = gone.add_user_message(f"my bank PIN is 4321 {SECRET}", [Attachment("image", SHARED_IMAGE), Attachment("image", OWN_IMAGE)])
    answer = gone.add_answer(user, "")
    library.close()
    earlier = sqlite3.connect(folder / "history.sqlite3")
    for size in range(1, 40):
        earlier.execute("UPDATE messages SET content = ? WHERE id = ?", (f"noted {SECRET} " * 20 * size, answer))
        earlier.commit()
    earlier.close()
    library = Library(folder)
    library.delete(gone.id)
    return library, kept.id, gone.id


def files_holding(folder: Path, text: str) -> list[str]:
    return sorted(path.name for path in folder.rglob("*") if path.is_file() and text.encode() in path.read_bytes())


def attachment_names(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / ATTACHMENTS_DIR).iterdir())


def test_a_chat_deleted_in_an_earlier_session_is_gone_from_disk_at_the_next_start(tmp_path):
    library, kept, gone = library_with_a_deleted_chat(tmp_path)
    shared = library.attachments(Conversation(library, kept).path[0].id)[0].path
    library.close()
    reopened = Library(tmp_path)
    with pytest.raises(KeyError):
        reopened.conversation(gone)
    assert reopened.messages(gone) == [] and reopened.search(SECRET) == []
    assert [c.id for c in reopened.conversations()] == [kept]   # the undone delete is kept
    assert attachment_names(tmp_path) == [shared.name]   # the image both chats showed stays
    assert files_holding(tmp_path, SECRET) == []   # checked while open: the WAL counts too
    reopened.close()


def test_files_no_message_refers_to_are_removed_at_the_next_start(tmp_path):
    library = Library(tmp_path)
    Conversation(library, library.create_conversation()).add_user_message("look", [Attachment("image", SHARED_IMAGE)])
    stored = attachment_names(tmp_path)
    library.close()
    # What a crash leaves: a file stored before its row was written, and one half written.
    (tmp_path / ATTACHMENTS_DIR / "0123abcd.png").write_bytes(b"orphan")
    (tmp_path / ATTACHMENTS_DIR / "4567ef.wav.partial").write_bytes(b"half")
    Library(tmp_path).close()
    assert attachment_names(tmp_path) == stored


def test_a_backup_leaves_out_chats_pending_deletion_and_undo_still_works(tmp_path):
    library, kept, gone = library_with_a_deleted_chat(tmp_path / "data")
    shared = library.attachments(Conversation(library, kept).path[0].id)[0].path
    copy = library.backup(tmp_path / "backup")
    assert files_holding(copy.parent, SECRET) == []
    assert attachment_names(copy.parent) == [shared.name]
    saved = sqlite3.connect(copy)
    assert [row[0] for row in saved.execute("SELECT id FROM conversations")] == [kept]
    saved.close()
    library.restore(gone)   # the undo offer of this session still stands
    assert Conversation(library, gone).path[-1].content.startswith(f"noted {SECRET}")
    library.close()


def test_a_full_disk_does_not_keep_lantern_from_starting_and_the_purge_waits(tmp_path, monkeypatch):
    library, kept, gone = library_with_a_deleted_chat(tmp_path)
    library.close()
    connect = sqlite3.connect

    class FullDisk(sqlite3.Connection):
        def execute(self, sql, *parameters):
            if sql.startswith("DELETE"):
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *parameters)

    monkeypatch.setattr(sqlite3, "connect", lambda *args, **kwargs: connect(*args, factory=FullDisk, **kwargs))
    starting = Library(tmp_path)
    assert [c.id for c in starting.conversations()] == [kept] and starting.messages(gone)   # hidden, not gone
    starting.close()
    monkeypatch.setattr(sqlite3, "connect", connect)
    reopened = Library(tmp_path)
    assert reopened.messages(gone) == [] and files_holding(tmp_path, SECRET) == []
    reopened.close()


CRASH_BEFORE_VACUUM = textwrap.dedent("""
    import os
    import sqlite3
    import sys
    from app.storage import Library

    connect = sqlite3.connect

    def connect_and_crash_at_vacuum(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.execute("PRAGMA secure_delete=OFF")
        connection.set_trace_callback(lambda sql: os._exit(9) if sql == "VACUUM" else None)
        return connection

    sqlite3.connect = connect_and_crash_at_vacuum
    Library(sys.argv[1])
""")


def test_a_purge_cut_short_after_its_commit_leaves_no_deleted_text(tmp_path):
    library = Library(tmp_path)
    gone = Conversation(library, library.create_conversation())
    gone.add_answer(gone.add_user_message(f"my bank PIN is 4321 {SECRET}"), f"noted {SECRET} " * 400)
    library.delete(gone.id)
    library.close()
    crashed = subprocess.run([sys.executable, "-c", CRASH_BEFORE_VACUUM, str(tmp_path)], cwd=REPO)
    assert crashed.returncode == 9
    reopened = Library(tmp_path)
    assert files_holding(tmp_path, SECRET) == []
    reopened.close()


def test_the_replies_of_a_deleted_message_are_found_through_an_index(tmp_path):
    # ON DELETE CASCADE looks up every deleted message's replies: scanning for them made purging a chat of
    # 100 messages take seconds in a library of 50,000.
    Library(tmp_path).close()
    db = sqlite3.connect(tmp_path / "history.sqlite3")
    [plan] = db.execute("EXPLAIN QUERY PLAN SELECT id FROM messages WHERE parent_id = 1").fetchall()
    db.close()
    assert plan[-1].startswith("SEARCH messages USING COVERING INDEX")
