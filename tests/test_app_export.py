"""Attachments beside the database, the start-up check, backups, and export to Markdown and JSON."""

import json
import re
import sqlite3
from urllib.parse import unquote, urlsplit

import pytest
from PySide6.QtGui import QTextDocument

from app.conversation import Conversation
from app import export as export_module
from app.export import closed_fences, export_json, export_markdown, safe_name
from app import storage
from app.storage import DATABASE_NAME, Attachment, Library
from tests.conftest import FIXTURES, files_cut_at

IMAGE = FIXTURES / "media" / "image_wide.png"


@pytest.fixture
def library(tmp_path):
    lib = Library(tmp_path / "data")
    yield lib
    lib.close()


def chat_with_an_image(library):
    chat = Conversation(library, library.create_conversation())
    user = chat.add_user_message("What is in this picture?", [Attachment("image", IMAGE)])
    chat.add_answer(user, "A **wide** picture.", thinking="look closely", stats={"generated_tokens": 4})
    return chat, user


def test_attachments_are_copied_beside_the_database_and_kept_on_edit(library):
    chat, user = chat_with_an_image(library)
    [stored] = library.attachments(user)
    assert stored.kind == "image" and stored.name == IMAGE.name
    assert stored.path.parent == library.attachments_dir and stored.path.read_bytes() == IMAGE.read_bytes()
    assert chat.media_of(user) == {"images": [str(stored.path)], "audio": []}
    edited = chat.edit_user_message(user, "Describe it")
    assert [a.path for a in library.attachments(edited)] == [stored.path]   # stored once, by content
    assert chat.turns_before(chat.add_answer(edited, "ok")) == [
        {"role": "user", "text": "Describe it", "images": [str(stored.path)], "audio": []}]


def test_export_markdown_includes_images_as_files(library, tmp_path):
    chat, _ = chat_with_an_image(library)
    library.rename(chat.id, "Pictures: wide/tall?")
    target = export_markdown(library, chat.id, tmp_path / "out")
    assert target.name == "Pictures wide tall.md"
    text = target.read_text(encoding="utf-8")
    assert text.startswith("# Pictures: wide/tall?\n")
    assert "## You" in text and "## Gemma" in text and "A **wide** picture." in text
    assert "<summary>Thoughts</summary>" in text and "look closely" in text
    link = next(line for line in text.splitlines() if line.startswith("!["))
    relative = link[link.index("(") + 1:-1].replace("%20", " ")
    assert (target.parent / relative).read_bytes() == IMAGE.read_bytes()


def test_exports_never_overwrite_an_earlier_file_of_the_same_name(library, tmp_path):
    first, _ = chat_with_an_image(library)
    second = Conversation(library, library.create_conversation())
    second.add_answer(second.add_user_message("What is in this picture?"), "ANSWER OF THE SECOND CHAT")
    out = tmp_path / "out"
    (out / "What is in this picture 3 files").mkdir(parents=True)   # a folder of the user's, not ours
    markdown = [export_markdown(library, chat.id, out) for chat in (first, second, first)]
    assert [p.name for p in markdown] == ["What is in this picture.md", "What is in this picture 2.md",
                                          "What is in this picture 4.md"]
    texts = [p.read_text(encoding="utf-8") for p in markdown]
    assert "A **wide** picture." in texts[0] and "ANSWER OF THE SECOND CHAT" in texts[1]
    link = next(line for line in texts[2].splitlines() if line.startswith("!["))
    assert link[link.index("(") + 1:-1].startswith("What%20is%20in%20this%20picture%204%20files/")
    assert not list((out / "What is in this picture 3 files").iterdir())
    json_files = [export_json(library, chat.id, tmp_path / "json") for chat in (first, second)]
    assert [p.name for p in json_files] == ["What is in this picture.json", "What is in this picture 2.json"]
    assert [json.loads(p.read_text(encoding="utf-8"))["messages"][-1]["content"] for p in json_files] == [
        "A **wide** picture.", "ANSWER OF THE SECOND CHAT"]


def test_an_export_cut_short_leaves_no_file_that_looks_whole(library, tmp_path):
    chat = Conversation(library, library.create_conversation())
    chat.add_answer(chat.add_user_message("A long question"), "A long answer. " * 400)
    (tmp_path / "out").mkdir()
    for export in (export_markdown, export_json):
        with files_cut_at(2000), pytest.raises(OSError):
            export(library, chat.id, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert export_markdown(library, chat.id, tmp_path / "out").name == "A long question.md"


def test_exports_on_a_file_system_without_hard_links_never_replace_a_file(library, tmp_path, monkeypatch):
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("app.export.os.link", no_links)
    chat, _ = chat_with_an_image(library)
    first = export_markdown(library, chat.id, tmp_path / "out")
    second = export_markdown(library, chat.id, tmp_path / "out")
    assert first != second and second.read_text(encoding="utf-8").startswith("# What is in this picture?")
    taken = tmp_path / "out" / "taken.md"
    taken.write_text("the user's own file")
    with pytest.raises(FileExistsError):
        export_module._name_if_free(first, taken)
    assert taken.read_text() == "the user's own file"
    assert sorted(path.name for path in (tmp_path / "out").iterdir() if path.suffix == ".md") == sorted([
        first.name, second.name, "taken.md"])


def test_markdown_then_json_of_a_chat_share_its_name_and_attachments_folder(library, tmp_path):
    chat, _ = chat_with_an_image(library)
    markdown, json_file = export_markdown(library, chat.id, tmp_path), export_json(library, chat.id, tmp_path)
    assert [markdown.name, json_file.name] == ["What is in this picture.md", "What is in this picture.json"]
    [link] = attachment_links(markdown.read_text(encoding="utf-8"))
    [attachment] = json.loads(json_file.read_text(encoding="utf-8"))["messages"][0]["attachments"]
    assert unquote(link) == attachment["file"] and (tmp_path / attachment["file"]).read_bytes() == IMAGE.read_bytes()
    assert export_json(library, chat.id, tmp_path).name == "What is in this picture 2.json"   # its own name taken


def rendered_lines(markdown: str) -> list[str]:
    """The lines of text a Markdown viewer shows (Qt's: CommonMark with GitHub's additions)."""
    document = QTextDocument()
    document.setMarkdown(markdown)
    return document.toPlainText().splitlines()


TYPED = ("## Gemma\nI typed a heading\n\n    indented code I pasted\n1. not a list\n- nor this\n> nor a quote\n===\n"
         "| a | b |\n|---|---|\n```\nan unclosed fence, <b>not bold</b>, List<String>, *stars*, __init__, [a](link),"
         " &amp; ~~kept~~ $x$ \\")


def test_markdown_shows_what_the_user_typed_as_typed(library, tmp_path, qapp):
    chat = Conversation(library, library.create_conversation())
    chat.add_answer(chat.add_user_message(TYPED), "A **bold** answer.")
    library.rename(chat.id, "List<String> & *stars*")
    text = export_markdown(library, chat.id, tmp_path).read_text(encoding="utf-8")
    assert re.findall(r"^#+ .*$", text, re.M)[1:] == ["## You", "## Gemma"]   # the user's "## Gemma" is no speaker
    title, you = text.split("\n## You\n")
    assert rendered_lines(title) == ["List<String> & *stars*"]
    typed = you.split("\n## Gemma\n")[0]
    assert rendered_lines(typed) == [line for line in TYPED.splitlines() if line]   # the viewer drops blank lines
    assert text.endswith("## Gemma\n\nA **bold** answer.\n")   # the model's Markdown stays Markdown


def test_export_json_keeps_every_branch(library, tmp_path):
    chat, user = chat_with_an_image(library)
    chat.edit_user_message(user, "Another question")
    data = json.loads(export_json(library, chat.id, tmp_path).read_text(encoding="utf-8"))
    assert data["format"] == "lantern-chat" and data["title"] == "What is in this picture?"
    assert [m["content"] for m in data["messages"]] == ["What is in this picture?", "A **wide** picture.",
                                                       "Another question"]
    assert data["messages"][1]["parent_id"] == data["messages"][0]["id"]
    assert data["messages"][0]["attachments"][0]["kind"] == "image"
    assert data["messages"][1]["stats"] == {"generated_tokens": 4}


def test_backup_is_a_checked_copy_with_attachments(library, tmp_path):
    chat, user = chat_with_an_image(library)
    copy = library.backup(tmp_path / "backup")
    restored = Library(copy.parent)
    assert [m.content for m in restored.messages(chat.id)] == [m.content for m in library.messages(chat.id)]
    assert restored.attachments(user)[0].path.read_bytes() == IMAGE.read_bytes()
    assert not list(copy.parent.glob("*.partial"))
    restored.close()


def test_each_backup_gets_a_new_folder_so_none_replaces_an_earlier_one(library, tmp_path, monkeypatch):
    monkeypatch.setattr(storage.time, "strftime", lambda pattern: "2026-11-24 07.40")   # both in one minute
    monday, _ = chat_with_an_image(library)
    first = library.backup(tmp_path / "Backups")
    library.delete(monday.id)
    library.purge_deleted()
    tuesday = Conversation(library, library.create_conversation())
    tuesday.add_user_message("Tuesday")
    second = library.backup(tmp_path / "Backups")
    assert [first.parent.name, second.parent.name] == ["Lantern backup 2026-11-24 07.40",
                                                       "Lantern backup 2026-11-24 07.40 2"]
    for copy, chat in ((first, monday), (second, tuesday)):
        restored = Library(copy.parent)
        assert [row.id for row in restored.conversations()] == [chat.id]
        restored.close()
    inside = library.backup(library.folder)   # into the library's own folder: the live file is left alone
    assert inside.parent.parent == library.folder and library.quick_check()
    assert [row.id for row in library.conversations()] == [tuesday.id]


def test_a_failed_backup_leaves_no_folder_that_looks_like_one(library, tmp_path, monkeypatch):
    chat_with_an_image(library)

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Library, "_copy_attachments", disk_full)
    with pytest.raises(OSError):
        library.backup(tmp_path / "Backups")
    assert list((tmp_path / "Backups").iterdir()) == []


def test_a_damaged_database_is_moved_aside_and_a_fresh_one_starts(tmp_path):
    folder = tmp_path / "data"
    lib = Library(folder)
    Conversation(lib, lib.create_conversation()).add_user_message("precious")
    lib.close()
    with open(folder / DATABASE_NAME, "r+b") as handle:   # garbage over page 2 onwards
        handle.seek(4096)
        handle.write(b"\xde\xad" * 8192)
    fresh, notice = Library.open_checked(folder)
    assert notice is not None and "could not be read" in notice and "copy of the damaged file" in notice
    assert fresh.conversations() == [] and fresh.quick_check()
    kept = list(folder.glob(f"{DATABASE_NAME}.corrupt-*"))
    assert len(kept) == 1 and str(kept[0]) in notice
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(kept[0]).execute("PRAGMA quick_check").fetchall()
    fresh.close()
    again, notice = Library.open_checked(folder)
    assert notice is None
    again.close()


def test_a_history_on_a_full_disk_is_reported_and_never_taken_for_damaged(tmp_path):
    folder = tmp_path / "data"
    lib = Library(folder)
    chat = lib.create_conversation("Precious chat")
    lib.close()
    # No byte can be written: opening reports "disk I/O error", as on a full disk, where the WAL cannot grow.
    with files_cut_at(0):
        try:
            Library.open_checked(folder)
            outcome = "opened"
        except storage.LibraryUnavailable as error:
            outcome = type(error).__name__
    assert outcome == "LibraryUnwritable" and not list(folder.glob("*.corrupt-*"))
    reopened, notice = Library.open_checked(folder)   # once there is room again, every chat is there
    assert notice is None and [c.id for c in reopened.conversations()] == [chat]
    reopened.close()


@pytest.mark.parametrize("journal_mode", ["WAL", "DELETE"])   # Lantern's own, and a file from elsewhere
def test_a_history_locked_by_another_program_is_reported_and_left_alone(tmp_path, monkeypatch, journal_mode):
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_S", 0.05)
    folder = tmp_path / "data"
    lib = Library(folder)
    chat = lib.create_conversation("Precious chat")
    lib.close()
    holder = sqlite3.connect(folder / DATABASE_NAME, isolation_level=None)
    holder.execute(f"PRAGMA journal_mode={journal_mode}")
    holder.execute("BEGIN EXCLUSIVE")
    files = sorted(folder.iterdir())
    with pytest.raises(storage.LibraryLocked, match="another program is using"):
        Library.open_checked(folder)
    assert sorted(folder.iterdir()) == files and not list(folder.glob("*.corrupt-*"))
    holder.execute("ROLLBACK")
    holder.close()
    reopened, notice = Library.open_checked(folder)
    assert notice is None and [c.id for c in reopened.conversations()] == [chat]
    reopened.close()


def test_lone_surrogates_from_a_cut_token_are_stored_not_refused(library):
    chat = Conversation(library, library.create_conversation())
    user = chat.add_user_message("hi")
    answer = chat.add_answer(user, "half \ud83d emoji")
    assert library.messages(chat.id)[-1].content == "half ? emoji" and answer


def test_safe_names():
    assert safe_name("a/b:c") == "a b c" and safe_name("...") == "Chat" and len(safe_name("x" * 300)) == 200
    assert safe_name("x" + "🎉" * 80) == "x" + "🎉" * 49   # 197 bytes: a fiftieth emoji would pass 200


def test_a_long_emoji_title_fits_the_file_system_in_both_exports(library, tmp_path):
    chat, _ = chat_with_an_image(library)
    library.rename(chat.id, "🎉" * 80)
    out = tmp_path / "out"
    written = [export_markdown(library, chat.id, out), export_json(library, chat.id, out)]
    assert [p.name for p in written] == ["🎉" * 50 + ".md", "🎉" * 50 + ".json"]


def attachment_links(markdown: str) -> list[str]:
    return re.findall(r"\]\(([^)]*)\)", markdown)


def test_markdown_links_survive_url_special_characters_in_the_title(library, tmp_path):
    chat = Conversation(library, library.create_conversation())
    chat.add_user_message("see", [Attachment("image", IMAGE, name="shot [1.png")])
    library.rename(chat.id, "100% sure #1? (v2)")
    target = export_markdown(library, chat.id, tmp_path)
    text = target.read_text(encoding="utf-8")
    assert "![shot \\[1.png](" in text   # a lone bracket would end the link text
    [link] = attachment_links(text)
    parts = urlsplit(link)   # as a viewer reads it: a raw '#' or '?' would cut the path short
    assert parts.fragment == parts.query == ""
    assert (target.parent / unquote(parts.path)).read_bytes() == IMAGE.read_bytes()


def test_export_json_copies_attachments_beside_it(library, tmp_path):
    chat_with_an_image(library)
    target = export_json(library, library.conversations()[0].id, tmp_path)
    [attachment] = json.loads(target.read_text(encoding="utf-8"))["messages"][0]["attachments"]
    assert attachment["name"] == IMAGE.name and attachment["file"].startswith("What is in this picture files/")
    assert (target.parent / attachment["file"]).read_bytes() == IMAGE.read_bytes()


def test_an_attachment_lost_from_the_library_does_not_stop_an_export(library, tmp_path):
    chat, user = chat_with_an_image(library)
    library.attachments(user)[0].path.unlink()
    text = export_markdown(library, chat.id, tmp_path).read_text(encoding="utf-8")
    assert "image_wide.png (the file is missing from the library)" in text and not attachment_links(text)
    data = json.loads(export_json(library, chat.id, tmp_path).read_text(encoding="utf-8"))
    assert data["messages"][0]["attachments"][0]["file"] is None


def test_a_code_block_an_answer_left_open_is_closed_before_the_next_message(library, tmp_path):
    chat = Conversation(library, library.create_conversation())
    chat.add_answer(chat.add_user_message("write code"), "Sure:\n\n```python\ndef f(x):\n    return",
                    thinking="~~~\nplan")   # both stopped mid-block
    chat.add_answer(chat.add_user_message("Now explain it"), "It **returns** x.")
    text = export_markdown(library, chat.id, tmp_path).read_text(encoding="utf-8")
    assert "def f(x):\n    return\n```\n" in text and "~~~\nplan\n~~~\n" in text
    assert text.endswith("## You\n\nNow explain it\n\n## Gemma\n\nIt **returns** x.\n")


def test_only_an_open_fence_is_closed_and_with_its_own_marker():
    balanced = "```\ncode\n```\n~~~\nmore\n~~~~"
    assert closed_fences(balanced) == balanced
    assert closed_fences("````md\n```\ninner\n```\n") == "````md\n```\ninner\n```\n````"
    assert closed_fences("1. Run:\n   ```sh\n   make") == "1. Run:\n   ```sh\n   make\n   ```"
    assert closed_fences("```py\nx\n``` not a close") == "```py\nx\n``` not a close\n```"
    assert closed_fences("inline ```code``` only") == "inline ```code``` only"
