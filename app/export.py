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


def export_markdown(library: Library, conversation_id: int, folder: Path) -> Path:
    """The active branch as `<title>.md` in `folder`, attachments in `<title> files/` linked from it."""
    conversation = Conversation(library, conversation_id)
    title = library.conversation(conversation_id).title
    name = safe_name(title)
    files = Path(folder) / f"{name} files"
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
    target = Path(folder) / f"{name}.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines), encoding="utf-8")
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
    target = Path(folder) / f"{safe_name(library.conversation(conversation_id).title)}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(conversation_json(library, conversation_id), ensure_ascii=False, indent=2),
                      encoding="utf-8")
    return target


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
