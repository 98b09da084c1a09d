"""A chat is named after its first message, unless the user named it first."""

import pytest

from app.conversation import Conversation
from app.storage import Library


@pytest.fixture
def library(tmp_path):
    library = Library(tmp_path)
    yield library
    library.close()


def test_an_unnamed_chat_is_named_after_its_first_message(library):
    chat = Conversation(library, library.create_conversation())
    chat.add_user_message("How   long do\n snails sleep?")
    chat.add_user_message("And slugs?")
    assert library.conversation(chat.id).title == "How long do snails sleep?"


def test_a_title_the_user_chose_before_the_first_message_is_kept(library):
    chat = Conversation(library, library.create_conversation())
    library.rename(chat.id, "Project Phoenix")   # what the sidebar's rename does
    chat.add_user_message("first question in the renamed chat")
    assert library.conversation(chat.id).title == "Project Phoenix"


def test_clearing_the_title_of_an_empty_chat_lets_its_first_message_name_it(library):
    chat = Conversation(library, library.create_conversation())
    library.rename(chat.id, "  ")
    chat.add_user_message("Snails")
    assert library.conversation(chat.id).title == "Snails"
