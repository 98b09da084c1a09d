"""A chat as files anyone can read without Lantern: Markdown (attachments copied beside it) and JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from .conversation import Conversation
from .storage import Attachment, Library, write_synced

FORMAT_VERSION = 2   # 2: an attachment's "file" is a path relative to the JSON file (null: lost), not a stored name
# File systems allow 255 bytes a name; the rest leaves room for " 12", " files" and ".json".
NAME_BYTES = 200
# A line that opens or closes a code block; a backtick fence's info string cannot hold a backtick.
FENCE = re.compile(r"( *)(`{3,}(?=[^`]*$)|~{3,})(.*)")
# Marks a Markdown viewer takes as formatting anywhere in a line: emphasis and code, links, HTML and entities,
# GFM's tables and strikethrough, GitHub's math. Prose's own marks (. , : ? ! ' " ( ) /) stay bare, so the file
# still reads well as text.
INLINE_MARK = re.compile(r"([\\`*_\[\]<&|~$])")
# Marks that open a block only at the start of a line: a heading, quote, list item ("-", "+", "1." or "1)")
# or, under a line of text, a heading's underline ("===").
BLOCK_MARK = re.compile(r"^(?:[#>+=-]|\d+[.)])")
# The files an export writes beside its attachments folder, `<name> files`.
EXPORT_SUFFIXES = (".md", ".json")


def safe_name(title: str) -> str:
    """A file name from a chat title: no path separators or characters Finder or Windows refuse, and short
    enough in bytes (an emoji takes four) for the numbered and " files" names made from it."""
    name = " ".join(re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", " ", title).split())
    name = name.encode("utf-8")[:NAME_BYTES].decode("utf-8", "ignore")   # "ignore" drops a cut character
    return name.strip(" .") or "Chat"


def _unused_name(folder: Path, name: str, suffix: str) -> str:
    """`name`, else `name 2`, `name 3`…: the first for which an export to `<name><suffix>` in `folder`
    takes no file or folder that is not its own (see `_taken`)."""
    candidate, number = name, 1
    while _taken(folder, candidate, suffix):
        number += 1
        candidate = f"{name} {number}"
    return candidate


def _taken(folder: Path, name: str, suffix: str) -> bool:
    """Whether `<name><suffix>` exists in `folder`, or a `<name> files` folder other than the one the export
    of that name in the other format made. That one is shared (Markdown, then JSON of a chat): attachments
    are named by their content, so a copy into it never replaces a different file. Any other is the user's."""
    if (folder / (name + suffix)).exists():
        return True
    other_exports = [folder / (name + other) for other in EXPORT_SUFFIXES if other != suffix]
    return (folder / f"{name} files").exists() and not any(path.exists() for path in other_exports)


def _write_new(target: Path, text: str) -> None:
    """Write `target` aside, then give it its name only if that is still free: an export never replaces a
    file, and a crash or power cut while writing leaves no half export that looks whole (just a hidden
    partial file)."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        # Named only once it is on the disk: a power cut leaves no empty export.
        write_synced(partial, text.encode("utf-8"))
        _name_if_free(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _name_if_free(source: Path, target: Path) -> None:
    try:
        os.link(source, target)   # refuses a name taken after it was chosen, atomically
    except FileExistsError:
        raise
    except OSError:   # a file system without hard links (FAT and exFAT memory sticks): claim the name empty
        os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        os.replace(source, target)


def export_markdown(library: Library, conversation_id: int, folder: Path) -> Path:
    """The active branch as `<title>.md` in `folder`, attachments in `<title> files/` linked from it.
    A name already taken there gets a number (`<title> 2.md`); returns the file written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    conversation = Conversation(library, conversation_id)
    title = library.conversation(conversation_id).title
    name = _unused_name(folder, safe_name(title), ".md")
    files = folder / f"{name} files"
    lines = [f"# {literal_markdown(title)}", ""]
    for message in conversation.path:
        speaker = "You" if message.role == "user" else "Gemma"
        lines += [f"## {speaker}", ""]
        for attachment in library.attachments(message.id):
            lines += [_attachment_line(attachment, files), ""]
        if message.thinking:
            thinking = closed_fences(message.thinking)
            lines += ["<details><summary>Thoughts</summary>", "", thinking, "", "</details>", ""]
        # The app shows what the user typed as typed, and the model's answers as the Markdown they are.
        text = literal_markdown(message.content) if message.role == "user" else closed_fences(message.content)
        lines += [text, ""]
    target = folder / f"{name}.md"
    _write_new(target, "\n".join(lines))
    return target


def literal_markdown(text: str) -> str:
    """`text` as Markdown that a viewer shows as typed: no mark read as formatting, indentation kept (not
    read as code) and every line break kept (not joined into one paragraph)."""
    lines = [_literal_line(line) for line in text.splitlines()]
    # A backslash ending a line breaks it there; before a blank line (or at the end) the paragraph ends anyway.
    return "\n".join(line + "\\" if line and following else line
                     for line, following in zip(lines, lines[1:] + [""]))


def _literal_line(line: str) -> str:
    if not line.strip():
        return ""
    text = line.lstrip(" \t")
    indent = line[:len(line) - len(text)].expandtabs(4)
    escaped = BLOCK_MARK.sub(lambda mark: mark[0][:-1] + "\\" + mark[0][-1], INLINE_MARK.sub(r"\\\1", text))
    # Leading spaces would be dropped, or four of them start a code block; no-break spaces are only shown.
    return "&nbsp;" * len(indent) + escaped


def closed_fences(text: str) -> str:
    """`text` with the code block it leaves open closed: an answer stopped mid-code would otherwise turn
    everything after it in the file, later questions and answers included, into code."""
    opening = None
    for line in text.split("\n"):
        fence = FENCE.fullmatch(line)
        if fence is None:
            continue
        if opening is None:
            opening = fence
        elif _closes(fence, opening):
            opening = None
    if opening is None:
        return text
    # At the opening's indentation, so a block inside a list item is closed inside that item.
    return text.rstrip("\n") + "\n" + opening[1] + opening[2]


def _closes(fence: re.Match, opening: re.Match) -> bool:
    marker, opened = fence[2], opening[2]
    return marker[0] == opened[0] and len(marker) >= len(opened) and not fence[3].strip()


def _attachment_line(attachment: Attachment, files: Path) -> str:
    label = re.sub(r"([\\\[\]])", r"\\\1", attachment.name)   # a lone bracket would end the link text early
    copied = _copied(attachment, files)
    if copied is None:
        return f"{label} (the file is missing from the library)"
    link = quote(copied, safe="/")   # '#', '%', '?' or '(' in the title must not end or change the link
    return f"![{label}]({link})" if attachment.kind == "image" else f"[{label}]({link})"


def _copied(attachment: Attachment, files: Path) -> str | None:
    """Copies an attachment into the export's `files` folder; returns its path relative to the export, or
    None when the library has lost the file (a row can outlive it), which must not stop the export."""
    if not attachment.path.is_file():
        return None
    files.mkdir(parents=True, exist_ok=True)
    shutil.copy2(attachment.path, files / attachment.path.name)
    return f"{files.name}/{attachment.path.name}"


def conversation_json(library: Library, conversation_id: int, files: Path) -> dict:
    """Every message of the chat (all branches and variants), with parents, stats and attachments, the
    attachments copied into `files`."""
    row = library.conversation(conversation_id)
    messages = [{"id": m.id, "parent_id": m.parent_id, "role": m.role, "content": m.content,
                 "thinking": m.thinking, "stats": m.stats, "created": _iso(m.created),
                 "attachments": [{"kind": a.kind, "name": a.name, "file": _copied(a, files)}
                                 for a in library.attachments(m.id)]}
                for m in library.messages(conversation_id)]
    return {"format": "lantern-chat", "version": FORMAT_VERSION, "title": row.title, "created": _iso(row.created),
            "settings": row.settings, "active_leaf": row.active_leaf, "messages": messages}


def export_json(library: Library, conversation_id: int, folder: Path) -> Path:
    """The whole chat as `<title>.json` in `folder`, attachments in `<title> files/` (numbered like Markdown
    exports); returns the file written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = _unused_name(folder, safe_name(library.conversation(conversation_id).title), ".json")
    target = folder / f"{name}.json"
    data = conversation_json(library, conversation_id, folder / f"{name} files")
    _write_new(target, json.dumps(data, ensure_ascii=False, indent=2))
    return target


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
