"""Lantern desktop app (PySide6): chat window, history, model picker, engine process."""
