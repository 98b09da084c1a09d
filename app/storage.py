"""Chat history in one SQLite file: conversations, messages as a tree, full-text search.

Every change runs in one transaction, so a crash mid-write leaves the file as it was before that
change. The database runs in WAL mode, which keeps readers unblocked and survives a killed writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
import unicodedata
from collections.abc import Callable
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

DATA_DIR_ENV = "LANTERN_DATA_DIR"
DATABASE_NAME = "history.sqlite3"
UNTITLED = "New chat"   # the title of a chat nobody has named
ATTACHMENTS_DIR = "attachments"
STAGING_DIR = "media"   # pasted images and recordings on their way to the engine process, never kept
# Han, kana, Thai, Lao, Myanmar and Khmer: scripts written without spaces between words.
UNSPACED_SCRIPT = re.compile(r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf"
                             r"\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")
QUOTES = "\"'“”‘’«»"   # around a search word, they mean no more than the word
EXCERPT_CHARS = 20   # of a snippet, either side of the match
# How long opening waits for another program to finish with the file before reporting it in use.
BUSY_TIMEOUT_S = 5.0

# Each entry upgrades the schema by one version; entries are never edited once released.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}',
        active_leaf INTEGER REFERENCES messages(id) ON DELETE SET NULL,
        deleted REAL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
        content TEXT NOT NULL DEFAULT '',
        thinking TEXT NOT NULL DEFAULT '',
        stats TEXT NOT NULL DEFAULT '{}',
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, parent_id);
    CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    """,
    """
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('image', 'audio')),
        file TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX attachments_by_message ON attachments(message_id);
    CREATE TABLE presets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    """,
    """
    ALTER TABLE attachments ADD COLUMN budget INTEGER;
    """,
    # Deleting a message looks up its replies (ON DELETE CASCADE); without this, each one scans every message.
    """
    CREATE INDEX messages_by_parent ON messages(parent_id);
    """,
    # Chat titles in a search index of their own, tokenized like the messages, so search finds a chat by its name.
    """
    CREATE VIRTUAL TABLE conversations_fts USING fts5(title, content='conversations', content_rowid='id');
    CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
        INSERT INTO conversations_fts(rowid, title) VALUES (new.id, new.title);
    END;
    CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title) VALUES ('delete', old.id, old.title);
    END;
    CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title) VALUES ('delete', old.id, old.title);
        INSERT INTO conversations_fts(rowid, title) VALUES (new.id, new.title);
    END;
    INSERT INTO conversations_fts(conversations_fts) VALUES ('rebuild');
    """,
)


def data_dir() -> Path:
    """The app's data folder: $LANTERN_DATA_DIR, else the platform's app-data folder."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    from PySide6.QtCore import QStandardPaths

    return Path(QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation))


class LibraryUnavailable(Exception):
    """The history file cannot be used now, for a reason that says nothing about damage: it is left as it
    is, and the message says why in plain words, for the user."""

    def __init__(self, path: Path, message: str):
        super().__init__(message)
        self.path = path


class LibraryLocked(LibraryUnavailable):
    """Another program holds the history file locked."""

    def __init__(self, path: Path):
        super().__init__(path, f"The chat history could not be opened: another program is using {path}. Close "
                               "that program (a backup, sync or database tool) and start Lantern again.")


class LibraryUnwritable(LibraryUnavailable):
    """The history's folder or file cannot be written: a full disk, a read-only volume, changed permissions."""

    def __init__(self, path: Path):
        super().__init__(path, f"The chat history could not be opened: {path.parent} cannot be written to. Free "
                               "some disk space, or check the disk and the folder's permissions, then start "
                               "Lantern again.")


@dataclass(frozen=True)
class ConversationRow:
    id: int
    title: str
    pinned: bool
    created: float
    updated: float
    settings: dict
    active_leaf: int | None
    deleted: float | None


@dataclass(frozen=True)
class MessageRow:
    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    content: str
    thinking: str
    stats: dict
    created: float


@dataclass(frozen=True)
class Attachment:
    kind: str      # "image" | "audio"
    path: Path     # the stored copy beside the database (for `add_message`: the file to copy in)
    name: str = ""   # what the user attached, for display; "" takes the file's name
    budget: int | None = None   # an image's soft-token budget; None: the chat's default


@dataclass(frozen=True)
class SearchHit:
    conversation_id: int
    message_id: int | None   # None: the chat's title matched, not one of its messages
    title: str
    snippet: str


@dataclass(frozen=True)
class _SearchTerms:
    """The words of a search, by how they are found (see `_search_terms`); each must be in a hit."""
    words: tuple[str, ...]     # through the full-text index, as the start of a word, in any case and accents
    literal: tuple[str, ...]   # as typed, anywhere in the text (ASCII letters in any case)

    def __bool__(self) -> bool:
        return bool(self.words or self.literal)


def _conversation(row: sqlite3.Row) -> ConversationRow:
    return ConversationRow(row["id"], row["title"], bool(row["pinned"]), row["created"], row["updated"],
                           json.loads(row["settings"]), row["active_leaf"], row["deleted"])


def _message(row: sqlite3.Row) -> MessageRow:
    return MessageRow(row["id"], row["conversation_id"], row["parent_id"], row["role"], row["content"],
                      row["thinking"], json.loads(row["stats"]), row["created"])


def _search_terms(text: str) -> _SearchTerms:
    """The words of `text`, sorted by how they can be found. FTS5's unicode61 tokenizer ends a word only at a
    space or punctuation and drops the punctuation, so two kinds are also (or only) looked for as typed:
    a word in a script written without spaces (Chinese, Japanese, Thai…), which the index holds only as part
    of its whole sentence; and a word with a symbol at an edge ("C++", "C#", ".NET"), which without it would
    match every word that starts like it. Quotes around a word mean no more than the word."""
    words, literal = [], []
    for term in (each.strip(QUOTES) for each in text.split()):
        if UNSPACED_SCRIPT.search(term):
            literal.append(term)
            continue
        if any(character.isalnum() for character in term):
            words.append(term)
        if term and (_is_symbol(term[0]) or _is_symbol(term[-1])):
            literal.append(term)
    return _SearchTerms(tuple(words), tuple(literal))


def _is_symbol(character: str) -> bool:
    return unicodedata.category(character)[0] in "PS"   # punctuation or symbol; not a letter's accent mark


def _fts_query(words: tuple[str, ...]) -> str:
    """Each word as a quoted prefix term, so user input can never be read as FTS syntax."""
    return " ".join('"{}"*'.format(word.replace('"', '""')) for word in words)


def _containing(column: str, literal: tuple[str, ...]) -> tuple[str, list[str]]:
    """SQL conditions (each after " AND ") that `column` holds every one of `literal`, and their parameters."""
    patterns = ["%" + re.sub(r"([\\%_])", r"\\\1", term) + "%" for term in literal]
    return "".join(f" AND {column} LIKE ? ESCAPE '\\'" for _ in patterns), patterns


def _excerpt(text: str, term: str) -> str:
    """`text` around the first `term` in it, the term in brackets: a snippet where the index gave none."""
    # LIKE matched ASCII letters in any case; IGNORECASE finds all that it does, and more.
    found = re.search(re.escape(term), text, re.IGNORECASE)
    start, end = found.span()
    before = ("…" if start > EXCERPT_CHARS else "") + text[max(0, start - EXCERPT_CHARS):start]
    after = text[end:end + EXCERPT_CHARS] + ("…" if end + EXCERPT_CHARS < len(text) else "")
    return " ".join(f"{before}[{found[0]}]{after}".split())   # on one line, as the index's snippets are


class Library:
    """All conversations of one user, stored in `folder`/history.sqlite3, attachments beside it."""

    def __init__(self, folder: Path | None = None, *, read_only: bool = False):
        """`read_only`: for a history whose folder cannot be written (a full disk): it is read, searched and
        exported, and every change raises sqlite3.OperationalError."""
        self.folder = Path(folder) if folder is not None else data_dir()
        self.path = self.folder / DATABASE_NAME
        self.attachments_dir = self.folder / ATTACHMENTS_DIR
        self.staging_dir = self.folder / STAGING_DIR
        self.read_only = read_only
        if read_only:
            self._open_read_only()
        else:
            self._open_for_writing()

    def _open_for_writing(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._configure()
            self._migrate()
        except sqlite3.OperationalError as error:
            self._db.close()
            if _is_locked(error):
                raise LibraryLocked(self.path) from error
            if _is_unwritable(error):
                raise LibraryUnwritable(self.path) from error
            raise
        # "Undo delete" is offered only in the session that deleted, so an earlier session's deletions are final.
        # A full disk must not keep Lantern from starting: the chats then stay hidden until a later start.
        with suppress(sqlite3.OperationalError, OSError):
            self.purge_deleted()
        self._empty_staging()

    def _open_read_only(self) -> None:
        if not self.path.is_file():
            raise LibraryUnwritable(self.path)
        # Immutable: SQLite then writes no lock and no WAL index, which a full disk refuses too. What an unfinished
        # earlier session left in the WAL is not seen now; it stays there for the next start with room.
        self._db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            current = self.schema_version == len(MIGRATIONS)
        except sqlite3.DatabaseError:
            current = False
        if not current:   # an older history needs its migrations written before this Lantern can read it
            self._db.close()
            raise LibraryUnwritable(self.path)

    @classmethod
    def open_at_start(cls, folder: Path | None = None) -> tuple["Library", str | None]:
        """`open_checked`; when the history's folder cannot be written (a full disk, a read-only volume), the
        history read-only, with a notice that says so. Raises `LibraryUnavailable` when neither can be had."""
        try:
            return cls.open_checked(folder)
        except LibraryUnwritable as error:
            try:
                library = cls(folder, read_only=True)
            except (LibraryUnavailable, sqlite3.Error):
                raise error from None
        return library, (f"The chat history is read-only: {library.folder} cannot be written to (is the disk "
                         "full?). You can read, search, copy and export your chats; new messages and changes "
                         "need room. Free some disk space, then start Lantern again.")

    @classmethod
    def open_checked(cls, folder: Path | None = None) -> tuple["Library", str | None]:
        """Open the library after `PRAGMA quick_check`. A damaged file is moved aside (kept, never
        deleted) and a fresh library starts; the second value then says so in plain words. Raises
        `LibraryUnavailable`, touching nothing, while the file is locked or cannot be written."""
        folder = Path(folder) if folder is not None else data_dir()
        damage = _damage(folder / DATABASE_NAME)
        if damage is None:
            return cls(folder), None
        try:
            kept = _move_aside(folder / DATABASE_NAME)
        except OSError as error:   # a damaged file on a read-only volume stays where it is
            raise LibraryUnwritable(folder / DATABASE_NAME) from error
        return cls(folder), (f"The chat history could not be read ({damage}). A copy of the damaged file is "
                             f"kept at {kept}; Lantern started with an empty history.")

    def backup(self, target: Path) -> Path:
        """A consistent copy of the library in a new folder inside `target`, named for the date and time
        ("Lantern backup 2026-11-24 07.40", numbered when taken), so no earlier backup is ever replaced.
        The copy comes from the SQLite backup API (safe while the app writes), without the chats pending
        deletion, and is checked; the attachment files its messages refer to are copied beside it. Returns the
        copy's database file."""
        folder = _new_backup_folder(Path(target))
        try:
            self._backup_into(folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)   # a folder named as a backup must hold a whole one
            raise
        return folder / DATABASE_NAME

    def _backup_into(self, folder: Path) -> None:
        partial = folder / (DATABASE_NAME + ".partial")
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            copy.execute("PRAGMA foreign_keys=ON")
            self._db.backup(copy)
            if _delete_pending(copy):
                copy.execute("VACUUM")   # the copy has the library's free pages too; see purge_deleted
            if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("the backup copy failed its integrity check")
            files = _referenced_files(copy)
        finally:
            copy.close()
        self._copy_attachments(files, folder / ATTACHMENTS_DIR)
        # Named last: even after a crash, a folder holding history.sqlite3 holds a whole backup.
        os.replace(partial, folder / DATABASE_NAME)

    def _copy_attachments(self, files: set[str], folder: Path) -> None:
        for name in files:
            source = self.attachments_dir / name
            if source.is_file():   # a row can outlive its file, e.g. in a library copied without attachments
                folder.mkdir(exist_ok=True)
                shutil.copy2(source, folder / name)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All statements inside commit together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- schema ------------------------------------------------------------------------------------

    def _configure(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Cheap, and a checkpoint then reaches the disk on a Mac, not just the drive's cache.
        self._db.execute("PRAGMA checkpoint_fullfsync=ON")
        # Deleted text is zeroed in the transaction that deletes it, so no crash can leave it in a free page.
        # Debian's SQLite does this by default, python.org's macOS build does not.
        self._db.execute("PRAGMA secure_delete=ON")

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied REAL)")
            done = db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
            for version, script in enumerate(MIGRATIONS[done:], start=done + 1):
                for statement in _statements(script):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, time.time()))

    @property
    def schema_version(self) -> int:
        return self._db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]

    def quick_check(self) -> bool:
        return self._db.execute("PRAGMA quick_check").fetchone()[0] == "ok"

    # -- conversations -----------------------------------------------------------------------------

    def create_conversation(self, title: str = UNTITLED, settings: dict | None = None) -> int:
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute("INSERT INTO conversations (title, created, updated, settings) VALUES (?, ?, ?, ?)",
                                (title, now, now, json.dumps(settings or {})))
        return cursor.lastrowid

    def conversation(self, conversation_id: int) -> ConversationRow:
        row = self._db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise KeyError(f"no conversation {conversation_id}")
        return _conversation(row)

    def conversations(self) -> list[ConversationRow]:
        """Live conversations, pinned first, then the most recently updated."""
        rows = self._db.execute("SELECT * FROM conversations WHERE deleted IS NULL "
                                "ORDER BY pinned DESC, updated DESC, id DESC").fetchall()
        return [_conversation(row) for row in rows]

    def _set(self, conversation_id: int, column: str, value) -> None:
        with self.transaction() as db:
            db.execute(f"UPDATE conversations SET {column} = ? WHERE id = ?", (value, conversation_id))

    def rename(self, conversation_id: int, title: str) -> None:
        self._set(conversation_id, "title", title.strip() or UNTITLED)

    def set_pinned(self, conversation_id: int, pinned: bool) -> None:
        self._set(conversation_id, "pinned", int(pinned))

    def set_settings(self, conversation_id: int, settings: dict) -> None:
        self._set(conversation_id, "settings", json.dumps(settings))

    def set_active_leaf(self, conversation_id: int, message_id: int | None) -> None:
        self._set(conversation_id, "active_leaf", message_id)

    def delete(self, conversation_id: int) -> None:
        """Hide a conversation; `restore` undoes this until `purge_deleted` runs."""
        self._set(conversation_id, "deleted", time.time())

    def restore(self, conversation_id: int) -> None:
        self._set(conversation_id, "deleted", None)

    def purge_deleted(self) -> None:
        """Delete the hidden conversations for good: their rows, their words in the search index, every
        copy of their text in the database file and its WAL, and the attachment files no message refers to.

        Call it while no message is being added (as when the library opens): a file is stored before the
        row that refers to it, and would look unreferenced in between.
        """
        with self.transaction() as db:
            purged = _delete_pending(db)
        if purged:
            # secure_delete zeroes only what is freed while it is on; VACUUM also drops what an earlier Lantern
            # (or an SQLite built without it) left in free pages, such as the drafts of a streamed answer.
            self._db.execute("VACUUM")
        self._remove_unreferenced_attachments()
        # The WAL still holds earlier versions of the zeroed pages until a checkpoint; TRUNCATE empties it.
        # Run every time, so a purge cut short by a crash before this point is completed on the next start.
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _empty_staging(self) -> None:
        """Files an earlier session staged are never needed again: drafts it never sent, recordings since
        stored in the history (or deleted with their chat), files a crash left half written."""
        for path in self.staging_dir.glob("*"):
            with suppress(OSError):
                path.unlink()

    def _remove_unreferenced_attachments(self) -> None:
        referenced = _referenced_files(self._db)
        for path in self.attachments_dir.glob("*"):
            if path.is_file() and path.name not in referenced:
                path.unlink()

    # -- messages ----------------------------------------------------------------------------------

    def add_message(self, conversation_id: int, parent_id: int | None, role: str, content: str,
                    thinking: str = "", stats: dict | None = None,
                    attachments: list[Attachment] = ()) -> int:
        """Store a message under `parent_id` and make it the end of the conversation's active branch.

        The `attachments`' files are copied beside the database first, so a row never points at a file
        that is not there.
        """
        stored = [(item.kind, self._store_file(Path(item.path)), item.name or Path(item.path).name, item.budget)
                  for item in attachments]
        now = time.time()
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO messages (conversation_id, parent_id, role, content, thinking, stats, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, parent_id, role, _clean(content), _clean(thinking), json.dumps(stats or {}), now))
            db.executemany("INSERT INTO attachments (message_id, kind, file, name, budget) VALUES (?, ?, ?, ?, ?)",
                           [(cursor.lastrowid, *row) for row in stored])
            db.execute("UPDATE conversations SET active_leaf = ?, updated = ? WHERE id = ?",
                       (cursor.lastrowid, now, conversation_id))
        return cursor.lastrowid

    def _store_file(self, source: Path) -> str:
        """Copy `source` to attachments/<sha256><suffix> (written aside, synced, then renamed)."""
        data = source.read_bytes()
        name = hashlib.sha256(data).hexdigest() + source.suffix.lower()
        final = self.attachments_dir / name
        if not final.exists():
            write_whole(final, data)
        return name

    def attachments(self, message_id: int) -> list[Attachment]:
        rows = self._db.execute("SELECT kind, file, name, budget FROM attachments WHERE message_id = ? ORDER BY id",
                                (message_id,)).fetchall()
        return [Attachment(row["kind"], self.attachments_dir / row["file"], row["name"], row["budget"])
                for row in rows]

    # -- presets -----------------------------------------------------------------------------------

    def presets(self) -> dict[str, dict]:
        rows = self._db.execute("SELECT name, settings FROM presets ORDER BY name").fetchall()
        return {row["name"]: json.loads(row["settings"]) for row in rows}

    def save_preset(self, name: str, settings: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO presets (name, settings) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET settings = excluded.settings", (name, json.dumps(settings)))

    def delete_preset(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM presets WHERE name = ?", (name,))

    def update_message(self, message_id: int, content: str, thinking: str, stats: dict) -> None:
        with self.transaction() as db:
            db.execute("UPDATE messages SET content = ?, thinking = ?, stats = ? WHERE id = ?",
                       (_clean(content), _clean(thinking), json.dumps(stats), message_id))

    def messages(self, conversation_id: int) -> list[MessageRow]:
        rows = self._db.execute("SELECT * FROM messages WHERE conversation_id = ? ORDER BY id",
                                (conversation_id,)).fetchall()
        return [_message(row) for row in rows]

    def search(self, text: str, limit: int = 50) -> list[SearchHit]:
        """Live conversations that hold every word of `text` (see `_search_terms`): first, as one hit each,
        those found by their title alone, then the messages that hold them all."""
        terms = _search_terms(text)
        if not terms:
            return []
        messages = self._message_hits(terms, limit)
        listed = {hit.conversation_id for hit in messages}
        # A chat already listed for a message is not listed again for its title, which it often takes from it.
        titles = [hit for hit in self._title_hits(terms, limit) if hit.conversation_id not in listed]
        return (titles + messages)[:limit]

    def _message_hits(self, terms: _SearchTerms, limit: int) -> list[SearchHit]:
        literal, patterns = _containing("m.content", terms.literal)
        if terms.words:
            rows = self._db.execute(
                "SELECT m.conversation_id, m.id, c.title, snippet(messages_fts, 0, '[', ']', '…', 8) "
                "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
                "JOIN conversations c ON c.id = m.conversation_id "
                f"WHERE messages_fts MATCH ? AND c.deleted IS NULL{literal} ORDER BY rank LIMIT ?",
                (_fts_query(terms.words), *patterns, limit)).fetchall()
            return [SearchHit(*row) for row in rows]
        # Without the index there is no rank to sort by: the newest messages come first.
        rows = self._db.execute(
            "SELECT m.conversation_id, m.id, c.title, m.content FROM messages m "
            "JOIN conversations c ON c.id = m.conversation_id "
            f"WHERE c.deleted IS NULL{literal} ORDER BY m.id DESC LIMIT ?", (*patterns, limit)).fetchall()
        return [SearchHit(chat, message, title, _excerpt(content, terms.literal[0]))
                for chat, message, title, content in rows]

    def _title_hits(self, terms: _SearchTerms, limit: int) -> list[SearchHit]:
        literal, patterns = _containing("c.title", terms.literal)
        if terms.words:
            rows = self._db.execute(
                "SELECT c.id, c.title, highlight(conversations_fts, 0, '[', ']') "
                "FROM conversations_fts JOIN conversations c ON c.id = conversations_fts.rowid "
                f"WHERE conversations_fts MATCH ? AND c.deleted IS NULL{literal} ORDER BY rank LIMIT ?",
                (_fts_query(terms.words), *patterns, limit)).fetchall()
            return [SearchHit(chat, None, title, snippet) for chat, title, snippet in rows]
        rows = self._db.execute(f"SELECT c.id, c.title FROM conversations c WHERE c.deleted IS NULL{literal} "
                                "ORDER BY c.updated DESC LIMIT ?", (*patterns, limit)).fetchall()
        return [SearchHit(chat, None, title, _excerpt(title, terms.literal[0])) for chat, title in rows]


def _delete_pending(db: sqlite3.Connection) -> bool:
    """Delete the conversations pending deletion (their messages and attachment rows cascade) on a
    connection with foreign_keys and secure_delete on; False when there were none."""
    if not db.execute("DELETE FROM conversations WHERE deleted IS NOT NULL").rowcount:
        return False
    # FTS5 records a deletion as a marker beside the old entry, which keeps the words in the index until
    # its segments merge; 'optimize' merges them all now (several times faster than a 'rebuild').
    db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")
    db.execute("INSERT INTO conversations_fts(conversations_fts) VALUES ('optimize')")
    return True


def _new_backup_folder(parent: Path) -> Path:
    """A folder created now in `parent`, named for the minute; a second backup that minute gets a number."""
    parent.mkdir(parents=True, exist_ok=True)
    name = f"Lantern backup {time.strftime('%Y-%m-%d %H.%M')}"   # dots: Finder and Windows refuse a colon
    number = 1
    while True:
        folder = parent / (name if number == 1 else f"{name} {number}")
        try:
            folder.mkdir()   # fails when the name is taken, even by a backup started at the same moment
            return folder
        except FileExistsError:
            number += 1


def _referenced_files(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT DISTINCT file FROM attachments")}


@contextmanager
def change_or_report(report: Callable[[str], None]) -> Iterator[None]:
    """A change to the history. One SQLite cannot write (a full disk, a read-only history) ends the block and
    is reported in words; nothing else happens."""
    try:
        yield
    except sqlite3.Error as exc:
        report(f"Not changed: the chat history could not be written ({exc}). Free some disk space, then try again.")


def write_whole(path: Path, data: bytes) -> None:
    """Write `path` aside (`<name>.partial`), sync it, then rename it into place: after a crash the name holds
    the whole file or nothing, so a file found under a content-derived name can be trusted."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        write_synced(partial, data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_synced(path: Path, data: bytes) -> None:
    """`data` as the file `path`, on the disk (not only in its cache) before this returns."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _clean(text: str) -> str:
    """Lone surrogates (possible in model output cut mid-character) make sqlite3 refuse the row."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _damage(path: Path) -> str | None:
    """Why the database at `path` cannot be trusted, or None when it reads fine (or does not exist).
    Raises `LibraryUnavailable` when it cannot be read for another reason (a lock, a read-only folder)."""
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        try:
            verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        if _is_locked(error):
            raise LibraryLocked(path) from error
        if not _is_corrupt(error):   # a full disk, an I/O error, permissions: nothing is known to be wrong inside
            raise LibraryUnwritable(path) from error
        return str(error)
    return None if verdict == "ok" else verdict


def _is_locked(error: sqlite3.Error) -> bool:
    """Whether SQLite gave up waiting for another connection's lock (SQLITE_BUSY, SQLITE_LOCKED). Told by the
    message, "database is locked" or "database table is locked": Python 3.10 gives no error code."""
    return "is locked" in str(error)


def _is_corrupt(error: sqlite3.Error) -> bool:
    """Whether SQLite found the file itself damaged (SQLITE_CORRUPT, SQLITE_NOTADB). On a full disk it reports
    "disk I/O error" while opening: only these two justify moving a history aside."""
    return any(sign in str(error) for sign in ("malformed", "not a database"))


def _is_unwritable(error: sqlite3.Error) -> bool:
    """Whether SQLite could not write the file or create its journal beside it (SQLITE_READONLY, SQLITE_CANTOPEN,
    SQLITE_FULL, or SQLITE_IOERR, which a full disk gives while the WAL is set up), told by the message for the
    same reason as `_is_locked`."""
    return any(sign in str(error) for sign in ("readonly database", "unable to open database file", "disk is full",
                                               "disk I/O error"))


def _move_aside(path: Path) -> Path:
    """Rename a damaged database (and its WAL files) to <name>.corrupt-<time>; returns the new path."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        companion = Path(str(path) + suffix)
        if companion.exists():
            os.replace(companion, Path(str(kept) + suffix))
    return kept


def _statements(script: str) -> list[str]:
    """Split a migration into statements, keeping trigger bodies whole."""
    statements, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
