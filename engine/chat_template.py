"""Rendering the model's chat template in a sandbox, with limits on time and output size.

A template is code that came with a download: it runs in Jinja's immutable sandbox, on a worker
thread we stop waiting for after a time limit, and its output may not grow past a size limit.
"""

from __future__ import annotations

import threading
from pathlib import Path

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import EngineError

TEMPLATE_FILE = "chat_template.jinja"
_TIME_LIMIT_S = 5.0
_SIZE_LIMIT = 64 * 1024 * 1024


def _raise(message: str):
    raise TemplateError(message)


class ChatTemplate:
    def __init__(self, source: str, time_limit_s: float = _TIME_LIMIT_S):
        self.time_limit_s = time_limit_s
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise EngineError(f"the model's chat template does not parse: {exc}") from None

    @classmethod
    def from_folder(cls, folder: str | Path, tokenizer_config: dict) -> "ChatTemplate":
        path = Path(folder) / TEMPLATE_FILE
        if path.is_file():
            try:
                source = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise EngineError(f"{path} is not UTF-8 text; the file is damaged: download the model again") from None
            return cls(source)
        source = tokenizer_config.get("chat_template")
        if isinstance(source, str) and source:
            return cls(source)
        raise EngineError(f"{folder} has no chat template ({TEMPLATE_FILE} or tokenizer_config.json); "
                          "download the model folder again")

    def render(self, **context) -> str:
        result: dict = {}

        def work() -> None:
            try:
                pieces, size = [], 0
                for piece in self._template.generate(**context):
                    size += len(piece)
                    if size > _SIZE_LIMIT:
                        raise EngineError("the chat template produced an absurdly long prompt")
                    pieces.append(piece)
                result["text"] = "".join(pieces)
            except Exception as exc:  # reported on the caller's thread below
                result["error"] = exc

        worker = threading.Thread(target=work, name="chat-template", daemon=True)
        worker.start()
        worker.join(self.time_limit_s)
        if worker.is_alive():
            raise EngineError(f"the chat template took longer than {self.time_limit_s:g} s to render")
        error = result.get("error")
        if isinstance(error, EngineError):
            raise error
        if error is not None:
            raise EngineError(f"the chat template failed: {error}") from None
        return result["text"]
