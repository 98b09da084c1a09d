"""The model folder's tokenizer (tokenizer.json through the `tokenizers` library)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer

from .errors import EngineError


class Tokenizer:
    def __init__(self, folder: str | Path):
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise EngineError(f"{folder} has no tokenizer.json; the model folder is incomplete: download it again")
        try:
            self._tokenizer = _HFTokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises a bare Exception on bad files
            raise EngineError(f"{path} could not be read: {exc}") from None
        self.config = _read_json(folder / "tokenizer_config.json")
        specials = [t.content for t in self._tokenizer.get_added_tokens_decoder().values() if t.special]
        self.special_ids = {self._tokenizer.token_to_id(content) for content in specials}
        self.special_strings = frozenset(specials)
        # Literal encoding flips a switch on the shared tokenizer; token counts may run on another thread.
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        """Token ids of already-rendered text; the chat template emits <bos> itself, so none is added."""
        return self._encode(text, literal=False)

    def encode_literal(self, text: str) -> list[int]:
        """Token ids of user-supplied text: a special-token string in it (`<|turn>`) stays ordinary text."""
        return self._encode(text, literal=True)

    def _encode(self, text: str, literal: bool) -> list[int]:
        with self._lock:
            self._tokenizer.encode_special_tokens = literal
            try:
                return self._tokenizer.encode(text, add_special_tokens=False).ids
            finally:
                self._tokenizer.encode_special_tokens = False

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    def token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EngineError(f"{path} is not valid JSON") from None
    return value if isinstance(value, dict) else {}
