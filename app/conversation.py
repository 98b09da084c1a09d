"""One conversation as a tree of messages, and the branch the user is looking at.

Regenerating an answer adds a sibling of that answer; editing a user message adds a sibling of
that message. Nothing is ever overwritten, so every earlier variant stays reachable (‹ 1/3 ›).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .storage import UNTITLED, Attachment, Library, MessageRow


@dataclass(frozen=True)
class Variant:
    position: int   # 1-based, as shown to the user
    count: int


class MessageTree:
    """Parent/child lookups over one conversation's messages (a pure view, no storage)."""

    def __init__(self, messages: list[MessageRow]):
        self.by_id = {message.id: message for message in messages}
        self.children: dict[int | None, list[MessageRow]] = defaultdict(list)
        for message in messages:
            self.children[message.parent_id].append(message)

    def path_to(self, leaf_id: int | None) -> list[MessageRow]:
        """The messages from the root down to `leaf_id`."""
        path = []
        while leaf_id is not None:
            message = self.by_id[leaf_id]
            path.append(message)
            leaf_id = message.parent_id
        return path[::-1]

    def siblings(self, message_id: int) -> list[MessageRow]:
        return self.children[self.by_id[message_id].parent_id]

    def variant(self, message_id: int) -> Variant:
        ids = [sibling.id for sibling in self.siblings(message_id)]
        return Variant(ids.index(message_id) + 1, len(ids))

    def newest_leaf_under(self, message_id: int) -> int:
        """Follow the most recent child down to a leaf: where a branch the user switches to ends."""
        while self.children[message_id]:
            message_id = self.children[message_id][-1].id
        return message_id


class Conversation:
    """A stored conversation plus its active branch; every change goes straight to the library."""

    def __init__(self, library: Library, conversation_id: int):
        self.library = library
        self.id = conversation_id
        self.reload()

    def reload(self) -> None:
        self.tree = MessageTree(self.library.messages(self.id))
        self.active_leaf = self.library.conversation(self.id).active_leaf

    @property
    def path(self) -> list[MessageRow]:
        return self.tree.path_to(self.active_leaf)

    @property
    def settings(self) -> dict:
        return self.library.conversation(self.id).settings

    def update_settings(self, **changes) -> None:
        self.library.set_settings(self.id, {**self.settings, **changes})

    def _add(self, parent_id: int | None, role: str, content: str, thinking: str = "",
             stats: dict | None = None, attachments: list[Attachment] = ()) -> int:
        message_id = self.library.add_message(self.id, parent_id, role, content, thinking, stats, attachments)
        self.reload()
        return message_id

    def add_user_message(self, text: str, attachments: list[Attachment] = ()) -> int:
        """A new user turn at the end of the active branch; names the chat after its first message unless
        the user named it already. `attachments` are stored beside the history with their names and the
        budget each image was given, so a regenerated answer sees them the same way."""
        if not self.path and self._untitled():
            self.library.rename(self.id, _title_from(text))
        parent, last = self.active_leaf, self.tree.by_id.get(self.active_leaf)
        if last is not None and last.role == "user":
            # A question left unanswered (its turn failed, say for being too long) is not built upon: the
            # new one goes beside it, reachable with ‹ ›, and the failed one stays out of the history.
            parent = last.parent_id
        return self._add(parent, "user", text, attachments=attachments)

    def _untitled(self) -> bool:
        """Before its first message only the user can give a chat a title of its own (by renaming it)."""
        return self.library.conversation(self.id).title == UNTITLED

    def add_answer(self, user_id: int, content: str, thinking: str = "", stats: dict | None = None) -> int:
        return self._add(user_id, "assistant", content, thinking, stats)

    def edit_user_message(self, message_id: int, text: str, added: list[Attachment] = ()) -> int:
        """A sibling of user message `message_id` carrying `text`, the same attachments (those whose file
        is still there: a library copied without its attachments folder lacks them) and then `added`; what
        followed the old one is kept."""
        original = self.tree.by_id[message_id]
        if original.role != "user":
            raise ValueError(f"message {message_id} is not a user message")
        kept = [attachment for attachment in self.library.attachments(message_id) if attachment.path.is_file()]
        return self._add(original.parent_id, "user", text, stats=original.stats, attachments=kept + list(added))

    def regeneration_parent(self, message_id: int) -> int:
        """The user message a regenerated answer to assistant message `message_id` hangs under."""
        message = self.tree.by_id[message_id]
        if message.role != "assistant" or message.parent_id is None:
            raise ValueError(f"message {message_id} is not an answer")
        return message.parent_id

    def switch_variant(self, message_id: int, step: int) -> int:
        """Show the sibling `step` places away (wrapping), down to the newest leaf of its branch."""
        siblings = self.tree.siblings(message_id)
        index = [s.id for s in siblings].index(message_id)
        chosen = siblings[(index + step) % len(siblings)].id
        self.select_leaf(self.tree.newest_leaf_under(chosen))
        return chosen

    def select_leaf(self, message_id: int) -> None:
        self.library.set_active_leaf(self.id, message_id)
        self.reload()

    def media_of(self, message_id: int) -> dict[str, list]:
        """The stored attachments of a message, by kind, as the engine process takes them: audio as
        paths, images as [path, budget] (messages stored before images had budgets of their own carry
        one budget for all in their stats) or as a path when the chat's default applies. A file gone from the
        history folder (a library copied without it) is left out: the chat goes on without it."""
        found = [attachment for attachment in self.library.attachments(message_id) if attachment.path.is_file()]
        shared = self.tree.by_id[message_id].stats.get("image_budget") if message_id in self.tree.by_id else None
        images = [_image_ref(a.path, a.budget or shared) for a in found if a.kind == "image"]
        return {"images": images, "audio": [str(a.path) for a in found if a.kind == "audio"]}

    def turns_before(self, message_id: int) -> list[dict]:
        """The branch before `message_id` as the engine process takes it: answers only, with media."""
        return self._wire(self.tree.path_to(message_id)[:-1])

    def branch_turns(self) -> list[dict]:
        """The whole active branch as the engine process takes it (the history a new message follows)."""
        return self._wire(self.path)

    def _wire(self, messages: list[MessageRow]) -> list[dict]:
        return [{"role": message.role, "text": message.content, **self.media_of(message.id)}
                for message in messages]


def _image_ref(path: Path, budget: int | None) -> list | str:
    return [str(path), budget] if budget else str(path)


def _title_from(text: str, limit: int = 48) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
