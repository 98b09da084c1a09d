"""A chat as files anyone can read without Lantern: Markdown (attachments copied beside it) and JSON."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from .conversation import Conversation
from .storage import Attachment, Library

FORMAT_VERSION = 2   # 2: an attachment's "file" is a path relative to the JSON file (null: lost), not a stored name
# File systems allow 255 bytes a name; the rest leaves room for " 12", " files" and ".json".
NAME_BYTES = 200
# A line that opens or closes a code block; a backtick fence's info string cannot hold a backtick.
FENCE = re.compile(r"( *)(`{3,}(?=[^`]*$)|~{3,})(.*)")


def safe_name(title: str) -> str:
    """A file name from a chat title: no path separators or characters Finder or Windows refuse, and short
    enough in bytes (an emoji takes four) for the numbered and " files" names made from it."""
    name = " ".join(re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", " ", title).split())
    name = name.encode("utf-8")[:NAME_BYTES].decode("utf-8", "ignore")   # "ignore" drops a cut character
    return name.strip(" .") or "Chat"


def _unused_name(folder: Path, name: str, *suffixes: str) -> str:
    """`name`, else `name 2`, `name 3`…: the first for which no `<name><suffix>` exists in `folder`."""
    candidate, number = name, 1
    while any((folder / (candidate + suffix)).exists() for suffix in suffixes):
        number += 1
        candidate = f"{name} {number}"
    return candidate


def _write_new(target: Path, text: str) -> None:
    # Mode "x" refuses a file that appeared after the name was chosen: an export never replaces one.
    with open(target, "x", encoding="utf-8") as handle:
        handle.write(text)


def export_markdown(library: Library, conversation_id: int, folder: Path) -> Path:
    """The active branch as `<title>.md` in `folder`, attachments in `<title> files/` linked from it.
    A name already taken there gets a number (`<title> 2.md`); returns the file written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    conversation = Conversation(library, conversation_id)
    title = library.conversation(conversation_id).title
    name = _unused_name(folder, safe_name(title), ".md", " files")
    files = folder / f"{name} files"
    lines = [f"# {title}", ""]
    for message in conversation.path:
        speaker = "You" if message.role == "user" else "Gemma"
        lines += [f"## {speaker}", ""]
        for attachment in library.attachments(message.id):
            lines += [_attachment_line(attachment, files), ""]
        if message.thinking:
            thinking = closed_fences(message.thinking)
            lines += ["<details><summary>Thoughts</summary>", "", thinking, "", "</details>", ""]
        lines += [closed_fences(message.content), ""]
    target = folder / f"{name}.md"
    _write_new(target, "\n".join(lines))
    return target


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
    name = _unused_name(folder, safe_name(library.conversation(conversation_id).title), ".json", " files")
    target = folder / f"{name}.json"
    data = conversation_json(library, conversation_id, folder / f"{name} files")
    _write_new(target, json.dumps(data, ensure_ascii=False, indent=2))
    return target


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
