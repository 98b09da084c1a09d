"""`lantern generate` and `lantern chat`: the engine from a terminal.

Errors print one clear line and exit non-zero, except in a chat, where a turn's error is printed and the
chat goes on; nothing goes online.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Iterator, Sequence

from .errors import EngineError

_DIM = "\033[2m"
_RESET = "\033[0m"
_CHAT_HELP = "Lantern chat: /quit to leave, /regen to answer again, /help for this list, //text to send /text."
# A line that is just "/word" is meant as a command: a typo such as /qiut must never reach the model.
_COMMAND = re.compile(r"/\w+")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a Gemma 4 model folder (Hugging Face or MLX layout)")
    parser.add_argument("--think", action="store_true", help="let the model think before answering")
    parser.add_argument("--system", default=None, help="a system prompt")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--temp", type=float, default=None, help="sampling temperature (0 = greedy)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--image-budget", type=int, default=280, choices=[70, 140, 280, 560, 1120])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lantern", description="Private, offline Gemma 4 on MLX.")
    commands = parser.add_subparsers(dest="command", required=True)
    generate = commands.add_parser("generate", help="answer one prompt and print statistics")
    _add_model_options(generate)
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    generate.add_argument("--audio", action="append", default=[], help="an audio file (repeatable)")
    chat = commands.add_parser("chat", help="a multi-turn chat in the terminal")
    _add_model_options(chat)
    convert = commands.add_parser("convert", help="quantize a float checkpoint to 4 or 8 bits (MLX layout)")
    convert.add_argument("--model", required=True, help="the float (bf16/fp16/fp32) model folder")
    convert.add_argument("--out", required=True, help="a new folder for the quantized model")
    convert.add_argument("--bits", type=int, required=True, choices=[4, 8])
    convert.add_argument("--group-size", type=int, default=64, choices=[32, 64, 128])
    return parser


def _session(args):
    import engine

    model = engine.load(args.model)
    sampling = {key: value for key, value in (("temperature", args.temp), ("top_p", args.top_p),
                                               ("top_k", args.top_k), ("seed", args.seed)) if value is not None}
    return model, model.chat(system=args.system, thinking=args.think, max_tokens=args.max_tokens,
                             image_budget=args.image_budget, **sampling)


def _load_media(images: Sequence[str], audio: Sequence[str]):
    from .audio.clips import split_clips
    from .audio.features import SAMPLE_RATE
    from .audio.io import read_audio
    from .vision import open_image

    clips = []
    for path in audio:
        pieces, note = split_clips(read_audio(path))
        if note:
            print(f"{_DIM}{note}{_RESET}", file=sys.stderr)
        clips += [(piece, SAMPLE_RATE) for piece in pieces]
    return [open_image(path) for path in images], clips


def format_stats(stats) -> str:
    return (f"prompt {stats.prompt_tokens} tokens ({stats.cached_tokens} cached), "
            f"TTFT {stats.time_to_first_token * 1000:.0f} ms, prefill {stats.prefill_tokens_per_second:.1f} tok/s, "
            f"decode {stats.decode_tokens_per_second:.1f} tok/s ({stats.generated_tokens} tokens), "
            f"peak memory {stats.peak_memory_bytes / 2**20:.0f} MiB, stop: {stats.stop_reason}")


def _print_events(events) -> None:
    thinking = False
    for event in events:
        if event.kind == "thinking":
            print(f"{_DIM}{event.text}{_RESET}", end="", flush=True)
            thinking = True
        elif event.kind == "text":
            if thinking:
                print()
                thinking = False
            print(event.text, end="", flush=True)
        elif event.kind == "tool_call":
            print(f"\n[tool call] {event.tool_call.name}({event.tool_call.arguments})", flush=True)
        elif event.kind == "done":
            print(f"\n{_DIM}{format_stats(event.stats)}{_RESET}", file=sys.stderr)


def _generate(args) -> None:
    _, session = _session(args)
    images, audio = _load_media(args.image, args.audio)
    _print_events(session.send(args.prompt, images=images, audio=audio))


def _chat(args) -> None:
    _, session = _session(args)
    _print_dim(_CHAT_HELP)
    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return
        command = line.strip()
        if command in ("/quit", "/exit"):
            return
        if command == "/regen":
            _chat_turn(session.regenerate)
        elif command == "/help":
            _print_dim(_CHAT_HELP)
        elif _COMMAND.fullmatch(command):
            _print_dim(f"{command} is not a command. {_CHAT_HELP}")
        elif command:
            _chat_turn(lambda: session.send(_unescaped(line)))


def _unescaped(line: str) -> str:
    """The message a line sends: `//text` stands for `/text`, so a message can start with a slash."""
    stripped = line.lstrip()
    return stripped[1:] if stripped.startswith("//") else line


def _print_dim(text: str) -> None:
    print(f"{_DIM}{text}{_RESET}", file=sys.stderr)


def _chat_turn(start: Callable[[], Iterator]) -> None:
    """One exchange. A turn that fails leaves the history as it was, so the chat goes on after the message."""
    try:
        events = start()
    except EngineError as exc:
        print(f"lantern: {exc}", file=sys.stderr)
        return
    try:
        _print_events(events)
    except EngineError as exc:
        print(f"\nlantern: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        events.close()  # keeps the partial answer in the history; the session stays usable
        print(f"\n{_DIM}(stopped){_RESET}", file=sys.stderr)


def _convert(args) -> None:
    from .convert import convert

    def report(progress) -> None:
        print(f"\r{_DIM}{progress.done_bytes / max(progress.total_bytes, 1):6.1%} "
              f"{progress.done_tensors}/{progress.total_tensors} tensors{_RESET}", end="", file=sys.stderr, flush=True)

    result = convert(args.model, args.out, args.bits, args.group_size, progress=report)
    print(f"\n{result.folder}: {result.quantized_modules} modules quantized to {args.bits} bits, "
          f"{result.output_bytes / 2**20:.1f} MiB in {result.shards} shard(s)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"generate": _generate, "chat": _chat, "convert": _convert}[args.command](args)
    except EngineError as exc:
        print(f"lantern: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
