"""A chat as files anyone can read without Lantern: Markdown (attachments copied beside it) and JSON."""

from __future__ import annotations

import json
import re
import shutil
from datetime import datetime
from pathlib import Path

from .conversation import Conversation
from .storage import Library

FORMAT_VERSION = 1


def safe_name(title: str) -> str:
    """A file name from a chat title: no path separators or characters Finder or Windows refuse."""
    name = " ".join(re.sub(r"[\\/:*?\"<>|\x00-\x1f]+", " ", title).split()).strip(" .")
    return name[:80] or "Chat"


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
            files.mkdir(parents=True, exist_ok=True)
            shutil.copy2(attachment.path, files / attachment.path.name)
            link = f"{files.name}/{attachment.path.name}".replace(" ", "%20")
            lines.append(f"![{attachment.name}]({link})" if attachment.kind == "image"
                         else f"[{attachment.name}]({link})")
            lines.append("")
        if message.thinking:
            lines += ["<details><summary>Thoughts</summary>", "", message.thinking, "", "</details>", ""]
        lines += [message.content, ""]
    target = folder / f"{name}.md"
    _write_new(target, "\n".join(lines))
    return target


def conversation_json(library: Library, conversation_id: int) -> dict:
    """Every message of the chat (all branches and variants), with parents, stats and attachments."""
    row = library.conversation(conversation_id)
    messages = [{"id": m.id, "parent_id": m.parent_id, "role": m.role, "content": m.content,
                 "thinking": m.thinking, "stats": m.stats, "created": _iso(m.created),
                 "attachments": [{"kind": a.kind, "file": a.path.name, "name": a.name}
                                 for a in library.attachments(m.id)]}
                for m in library.messages(conversation_id)]
    return {"format": "lantern-chat", "version": FORMAT_VERSION, "title": row.title, "created": _iso(row.created),
            "settings": row.settings, "active_leaf": row.active_leaf, "messages": messages}


def export_json(library: Library, conversation_id: int, folder: Path) -> Path:
    """The whole chat as `<title>.json` in `folder` (numbered like Markdown exports); returns the file written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = _unused_name(folder, safe_name(library.conversation(conversation_id).title), ".json")
    target = folder / f"{name}.json"
    _write_new(target, json.dumps(conversation_json(library, conversation_id), ensure_ascii=False, indent=2))
    return target


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
