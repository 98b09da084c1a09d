"""Command line: `python -m engine.bench --variant e2b --bits 4 --layers 6 -p 128 -g 16`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mlx.core as mx

from .long_chat import long_chat
from .runner import run_cell
from .variants import text_config
from .writer import write_checkpoint

BANDWIDTHS = {"m4pro": 273.0, "m4max": 546.0}
TINY_CHAT_FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "models" / "tiny-e2b"


def _bandwidth(value: str) -> float:
    return BANDWIDTHS[value] if value in BANDWIDTHS else float(value)


def checkpoint_folder(out: Path, variant: str, bits: int | None, layers: int | None, tiny: bool,
                      dtype: str) -> Path:
    """Written once per shape; config.json is written last, so its presence means the folder is complete."""
    name = f"{variant}-{'q' + str(bits) if bits else dtype}-{'L' + str(layers) if layers else 'full'}-{dtype}"
    folder = out / (name + ("-tiny" if tiny else ""))
    if not (folder / "config.json").is_file():
        write_checkpoint(folder, text_config(variant, layers, tiny), bits, getattr(mx, dtype))
    return folder


def _figure(record: dict, side: str, key: str) -> str:
    return f"{record[side][key]:.4g}" if side in record else "-"


def print_cell(record: dict) -> None:
    print(f"\n{record['variant']}  status={record['status']}  prompt={record['prompt']} gen={record['gen']} "
          f"weights={record['weight_bytes'] / 1e9:.3f} GB  bytes/token={record['bytes_per_token'] / 1e9:.3f} GB  "
          f"bound@{record['bandwidth_gbps']:g}GB/s={record['bound_tps']:.1f} tok/s")
    print(f"{'figure':<22}{'ours':>12}{'mlx-lm':>12}{'ours/mlx-lm':>14}")
    for key in ("ttft_s", "prefill_tps", "decode_tps", "peak_memory_bytes"):
        ratio = f"{record['ratio'][key]:.3f}" if "ratio" in record else "-"
        print(f"{key:<22}{_figure(record, 'ours', key):>12}{_figure(record, 'mlx_lm', key):>12}{ratio:>14}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m engine.bench", description=__doc__)
    ap.add_argument("--variant", default="e2b", choices=["e2b", "e4b", "26b-a4b", "31b"])
    ap.add_argument("--bits", type=int, nargs="+", default=[4], choices=[4, 8])
    ap.add_argument("--layers", type=int, default=6, help="shape-true truncation; 0 = every layer")
    ap.add_argument("--tiny", action="store_true", help="shrunk widths (for smoke tests)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="float type of scales/biases/norms in the written file")
    ap.add_argument("-p", "--prompt", type=int, nargs="+", default=[128])
    ap.add_argument("-g", "--gen", type=int, default=16)
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--gate", type=int, default=8, help="greedy tokens that must equal mlx-lm's")
    ap.add_argument("--bandwidth", type=_bandwidth, default=BANDWIDTHS["m4pro"])
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache" / "lantern-bench")
    ap.add_argument("--json", type=Path, help="append one JSON line per cell")
    ap.add_argument("--long-chat", type=int, metavar="TURNS", help="prompt-cache vs re-prefill on tiny-e2b")
    return ap.parse_args(argv)


def _append(path: Path | None, record: dict) -> None:
    if path is not None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.long_chat:
        record = long_chat(TINY_CHAT_FIXTURE, args.long_chat)
        print(json.dumps(record))
        _append(args.json, record)
        return [record]
    records = []
    for bits in args.bits:
        folder = checkpoint_folder(args.out, args.variant, bits, args.layers or None, args.tiny, args.dtype)
        for prompt in args.prompt:
            record = run_cell(folder, prompt_len=prompt, gen=args.gen, trials=args.trials, gate_tokens=args.gate,
                              bandwidth_gbps=args.bandwidth)
            print_cell(record)
            _append(args.json, record)
            records.append(record)
    return records


if __name__ == "__main__":
    main()
