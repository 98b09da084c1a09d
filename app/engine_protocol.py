"""The messages between the window and the engine process: one JSON object per line.

Requests (window -> engine), by "op":
  load    folder                                    load a model; answered by stage*, then
                                                    loaded | load_failed | load_cancelled
  cancel_load                                       stop the load in progress (between weight reads)
  turn    turn, conversation, history, text,        generate an answer; answered by event*, then done | failed
          options, images, audio                    (history items: role, text, images, audio; media as
                                                    paths, an image as [path, budget] where it has its own
                                                    budget). Conversation null: a side turn (dictation)
                                                    outside every conversation, remembered nowhere.
  cancel  turn                                      stop that turn now (or before it starts)
  count   request, conversation, options, history,  the exact token count of the prompt that sending the
          text, images, audio                       draft (text, images, audio) would build; answered by counted
  quit                                              finish and exit

Replies (engine -> window), by "ev":
  ready                                             the process runs and reads requests
  stage   text, fraction                            loading progress, 0 .. 1 over the whole load
  loaded  info                                      model info (variant, modalities, context_length, ...)
  load_failed  error
  load_cancelled
  event   turn, kind, text                          kind: "thinking" | "text" | "notice"
  done    turn, stats
  failed  turn, error
  counted request, counts                           counts: {total, image, audio}; null without a model
"""

from __future__ import annotations

import json
from typing import BinaryIO

ENGINE_FLAG = "--engine-process"


def encode(message: dict) -> bytes:
    # ensure_ascii keeps every line pure ASCII: no encoding questions, no stray newlines inside.
    return json.dumps(message, ensure_ascii=True).encode("ascii") + b"\n"


def decode(line: bytes) -> dict:
    message = json.loads(line.decode("ascii"))
    if not isinstance(message, dict):
        raise ValueError(f"not a protocol message: {line[:80]!r}")
    return message


def write(stream: BinaryIO, message: dict) -> None:
    stream.write(encode(message))
    stream.flush()
