"""The menu bar, with the roles macOS moves into the application menu and the usual Cmd shortcuts.

Qt's default role guesses from the text ("Settings…" would move by accident), so every action gets
an explicit role: About, Preferences and Quit go to the app menu, everything else stays put.
"""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence


def _action(menu, text: str, slot, shortcut: str | QKeySequence.StandardKey | tuple[str, ...] | None = None,
            role: QAction.MenuRole = QAction.MenuRole.NoRole) -> QAction:
    """`shortcut` may be several spellings of one key: a shifted symbol arrives as either, by platform."""
    action = menu.addAction(text)
    action.triggered.connect(lambda _checked=False: slot())
    if isinstance(shortcut, tuple):
        action.setShortcuts([QKeySequence(keys) for keys in shortcut])
    elif shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
    action.setMenuRole(role)
    return action


def build_menus(window) -> dict[str, QAction]:
    """Menus for `window` (a MainWindow); returns the actions by name, for tests and enabling."""
    bar = window.menuBar()
    file_menu, edit_menu, view_menu = bar.addMenu("&File"), bar.addMenu("&Edit"), bar.addMenu("&View")
    chat_menu, window_menu, help_menu = bar.addMenu("&Chat"), bar.addMenu("&Window"), bar.addMenu("&Help")
    keys = QKeySequence.StandardKey
    actions = {
        "new": _action(file_menu, "New Chat", window.new_chat, QKeySequence.StandardKey.New),
        "export_markdown": _action(file_menu, "Export Chat as Markdown…", window.export_chat_markdown),
        "export_json": _action(file_menu, "Export Chat as JSON…", window.export_chat_json),
        "backup": _action(file_menu, "Back Up Library…", window.backup_library),
        "models": _action(file_menu, "Model Library…", window.open_model_library, "Ctrl+Shift+L"),
        "forget_folder": _action(file_menu, "Remove Added Folder…", window.ask_folder_to_forget),
        "close": _action(file_menu, "Close Window", window.close, QKeySequence.StandardKey.Close),
        "settings": _action(file_menu, "Settings…", window.open_settings, "Ctrl+,",
                            QAction.MenuRole.PreferencesRole),
        "quit": _action(file_menu, "Quit Lantern", window.close, QKeySequence.StandardKey.Quit,
                        QAction.MenuRole.QuitRole),
        **{name: _action(edit_menu, text, lambda name=name: window.edit_focused(name), key)
           for name, text, key in (("undo", "Undo", keys.Undo), ("redo", "Redo", keys.Redo), ("cut", "Cut", keys.Cut),
                                   ("copy", "Copy", keys.Copy), ("paste", "Paste", keys.Paste),
                                   ("selectAll", "Select All", keys.SelectAll))},
        "find": _action(edit_menu, "Find…", window.open_find, keys.Find),
        "find_next": _action(edit_menu, "Find Next", window.find_next, keys.FindNext),
        "find_previous": _action(edit_menu, "Find Previous", lambda: window.find_next(-1), keys.FindPrevious),
        # Ctrl+Meta is ⌃⌘ on a Mac, where Qt swaps the two names.
        "sidebar": _action(view_menu, "Toggle Sidebar", window.toggle_sidebar, "Ctrl+Meta+S"),
        "bigger": _action(view_menu, "Bigger Text", lambda: window.change_text_size(1), keys.ZoomIn),
        "smaller": _action(view_menu, "Smaller Text", lambda: window.change_text_size(-1), keys.ZoomOut),
        "actual_size": _action(view_menu, "Actual Size", lambda: window.change_text_size(0), "Ctrl+0"),
        "full_screen": _action(view_menu, "Enter Full Screen", window.toggle_full_screen, keys.FullScreen),
        "minimize": _action(window_menu, "Minimize", window.showMinimized, "Ctrl+M"),
        "zoom": _action(window_menu, "Zoom", window.toggle_zoom),
        "edit_last": _action(chat_menu, "Edit Last Message", window.edit_last_message),
        "search": _action(chat_menu, "Search Chats", window.focus_search, "Ctrl+K"),
        "next_chat": _action(chat_menu, "Next Chat", lambda: window.step_chat(1), ("Ctrl+Shift+]", "Ctrl+Shift+}")),
        "previous_chat": _action(chat_menu, "Previous Chat", lambda: window.step_chat(-1),
                                 ("Ctrl+Shift+[", "Ctrl+Shift+{")),
        "stop": _action(chat_menu, "Stop", window.stop, "Ctrl+."),
        "regenerate": _action(chat_menu, "Regenerate Answer", window.regenerate_last, "Ctrl+R"),
        "chat_settings": _action(chat_menu, "Chat Settings…", window.open_chat_settings, "Ctrl+Shift+,"),
        "about": _action(help_menu, "About Lantern", window.show_about, role=QAction.MenuRole.AboutRole),
    }
    for action in actions.values():
        window.addAction(action)   # shortcuts work even where the menu bar is hidden (offscreen, tests)
    return actions
