"""Command line: `lantern-bench` (or `python -m engine.bench`) `--variant e2b --bits 4 --layers 6 -p 128 -g 16`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import mlx.core as mx

from .dispatch_costs import dispatch_costs
from .long_chat import long_chat
from .runner import PRECISION_SLACK, run_cell, shard_digests
from .variants import media_config, text_config
from .vlm import run_vlm
from .writer import write_checkpoint

BANDWIDTHS = {"m4pro": 273.0, "m4max": 546.0}
TINY_CHAT_FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "models" / "tiny-e2b"


def _bandwidth(value: str) -> float:
    return BANDWIDTHS[value] if value in BANDWIDTHS else float(value)


def checkpoint_folder(out: Path, variant: str, bits: int | None, layers: int | None, tiny: bool,
                      dtype: str, media: bool = False) -> Path:
    """Written once per shape; config.json is written last, so its presence means the folder is complete.

    A folder written for other shapes (an older benchmark's widths) is written again from scratch.
    """
    name = f"{variant}-{'q' + str(bits) if bits else dtype}-{'L' + str(layers) if layers else 'full'}-{dtype}"
    folder = out / (name + ("-vlm" if media else "") + ("-tiny" if tiny else ""))
    text = text_config(variant, layers, tiny)
    if not _written_for(folder, text):
        shutil.rmtree(folder, ignore_errors=True)
        write_checkpoint(folder, text, bits, getattr(mx, dtype), media=media_config(variant, tiny) if media else None)
    return folder


def _written_for(folder: Path, text: dict) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    written = json.loads(config.read_text())["text_config"]
    written.pop("dtype", None)
    return written == json.loads(json.dumps(text))


CELL_FIGURES = ("ttft_s", "prefill_tps", "decode_tps", "efficiency", "peak_memory_bytes", "graph_build_ms",
                "dispatch_ms", "ops_per_step", "kernel_ops_per_step", "launches_per_step",
                "kernel_launches_per_step")


def _figure(values: dict | None, key: str) -> str:
    return f"{values[key]:.4g}" if values and key in values else "-"


def print_table(columns: tuple[str, str], rows: dict[str, tuple[dict | None, dict | None, dict | None]]) -> None:
    """One line per figure: left, right and their ratio (left/right)."""
    print(f"{'figure':<22}{columns[0]:>12}{columns[1]:>12}{columns[0] + '/' + columns[1]:>16}")
    for key, (left, right, ratio) in rows.items():
        print(f"{key:<22}{_figure(left, key):>12}{_figure(right, key):>12}{_figure(ratio, key):>16}")


def print_cell(record: dict) -> None:
    print(f"\n{record['variant']}  status={record['status']}  compute={record['compute_dtype']}  "
          f"prompt={record['prompt']} gen={record['gen']} "
          f"weights={record['weight_bytes'] / 1e9:.3f} GB  bytes/token={record['bytes_per_token'] / 1e9:.3f} GB  "
          f"bound@{record['bandwidth_gbps']:g}GB/s={record['bound_tps']:.1f} tok/s")
    if record.get("ours_head_cores", 1) > 1:
        print(f"ours: large quantized matmuls split over {record['ours_head_cores']} CPU cores (mlx-lm: one)")
    recorded = " (recorded, not gated)" if record.get("gate_kind") == "precision" else ""
    equal = record["ours_tokens"] == record["mlx_lm_tokens"]
    print(f"gate{recorded}: {record['gate_tokens']} greedy tokens equal={equal} "
          f"({record['distinct_tokens']} distinct); last-token logits max|diff|={record['logits_max_abs_diff']:.3g} "
          f"= {record['logits_rel_diff']:.3g} x scale {record['logits_scale']:.3g} (tol {record['logits_tol']:g})")
    if record.get("gate_kind") == "precision":
        print(f"precision gate (tokens not gated): distance from float32 ours={record['ours_vs_float32_rel_diff']:.3g}"
              f" mlx-lm={record['mlx_lm_vs_float32_rel_diff']:.3g} x scale; ours may be "
              f"{PRECISION_SLACK:g}x mlx-lm's + {record['logits_tol']:g}")
    sides = (record.get("ours"), record.get("mlx_lm"), record.get("ratio"))
    print_table(("ours", "mlx-lm"), {key: sides for key in CELL_FIGURES})


def _vlm_side(record: dict, side: str) -> dict | None:
    return record.get(side) if isinstance(record.get(side), dict) else None


def _vlm_ratio(record: dict) -> dict | None:
    ours, theirs = _vlm_side(record, "ours"), _vlm_side(record, "mlx_vlm")
    return {k: ours[k] / theirs[k] for k in ours if theirs.get(k)} if ours and theirs else None


def print_image_cell(cell: dict) -> None:
    gate = (f"features rel diff={cell['image_features_rel_diff']:.3g}, first token equal="
            f"{cell['first_token_equal']}" if "image_features_rel_diff" in cell else "no mlx-vlm gate")
    print(f"image budget {cell['budget']}: {cell['soft_tokens']} soft tokens, prompt {cell['prompt_tokens']} "
          f"tokens; {gate}")
    print_table(("ours", "mlx-vlm"), {k: (_vlm_side(cell, "ours"), _vlm_side(cell, "mlx_vlm"), _vlm_ratio(cell))
                                      for k in ("vision_encoder_s", "image_ttft_s")})


def print_audio_cell(cell: dict) -> None:
    gate = (f"features rel diff={cell['audio_features_rel_diff']:.3g}" if "audio_features_rel_diff" in cell
            else "no mlx-vlm gate")
    print(f"audio {cell['clip_s']:g} s: {cell['audio_tokens']} tokens; {gate}")
    print_table(("ours", "mlx-vlm"), {"audio_encoder_s": (_vlm_side(cell, "ours"), _vlm_side(cell, "mlx_vlm"),
                                                          _vlm_ratio(cell))})


def print_vlm_cell(kind: str, cell: dict) -> None:
    (print_image_cell if kind == "image" else print_audio_cell)(cell)
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="lantern-bench", description=__doc__)
    ap.add_argument("--variant", default="e2b", choices=["e2b", "e4b", "26b-a4b", "31b"])
    ap.add_argument("--bits", type=int, nargs="+", default=[4], choices=[0, 4, 8], help="0 = unquantized")
    ap.add_argument("--layers", type=int, default=6, help="shape-true truncation; 0 = every layer")
    ap.add_argument("--tiny", action="store_true",
                    help="skeleton widths (64): a decode step costs its overhead, not its kernels")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="float type of scales/biases/norms in the written file")
    ap.add_argument("--compute-dtype", choices=["float32", "bfloat16", "float16"],
                    help="activation dtype of both engines (default: the one our engine picks); below float32 "
                         "the gate compares both engines' distance from float32 instead of their tokens")
    ap.add_argument("-p", "--prompt", type=int, nargs="+", default=[128])
    ap.add_argument("-g", "--gen", type=int, default=16)
    ap.add_argument("--trials", type=int, default=1)
    ap.add_argument("--gate", type=int, default=8, help="greedy tokens that must equal mlx-lm's")
    ap.add_argument("--logits-tol", type=float, default=1e-3,
                    help="largest last-token logits difference, relative to the logits' largest magnitude")
    ap.add_argument("--bandwidth", type=_bandwidth, default=BANDWIDTHS["m4pro"])
    ap.add_argument("--out", type=Path, default=Path.home() / ".cache" / "lantern-bench")
    ap.add_argument("--json", type=Path, help="append one JSON line per cell")
    ap.add_argument("--vlm", action="store_true",
                    help="image and audio encoders and image-prompt TTFT against mlx-vlm (towers added)")
    ap.add_argument("--budgets", type=int, nargs="+", default=[70, 140, 280, 560, 1120])
    ap.add_argument("--clips", type=float, nargs="+", default=[10.0, 30.0], help="audio clip lengths in seconds")
    ap.add_argument("--long-chat", type=int, metavar="TURNS", help="prompt-cache vs re-prefill on tiny-e2b")
    ap.add_argument("--turn-words", type=int, default=10,
                    help="words per user turn in --long-chat")
    ap.add_argument("--answer-tokens", type=int, default=8, help="longest model answer in --long-chat")
    ap.add_argument("--dispatch-costs", action="store_true",
                    help="host microseconds to dispatch one primitive of each kind (meaningful on a GPU)")
    return ap.parse_args(argv)


def _append(path: Path | None, record: dict) -> None:
    if path is not None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.dispatch_costs:
        record = {"dispatch_costs_us": dispatch_costs(), "device": str(mx.default_device()), "mlx": mx.__version__}
        for kind, cost in record["dispatch_costs_us"].items():
            print(f"{kind:<28}{cost:>10.2f} us")
        _append(args.json, record)
        return [record]
    if args.long_chat:
        record = long_chat(TINY_CHAT_FIXTURE, args.long_chat, max_tokens=args.answer_tokens,
                           words_per_turn=args.turn_words)
        print(json.dumps(record))
        _append(args.json, record)
        return [record]
    records = []
    for bits in args.bits:
        folder = checkpoint_folder(args.out, args.variant, bits or None, args.layers or None, args.tiny, args.dtype,
                                   media=args.vlm)
        if args.vlm:
            print(f"\n{folder.name}  vlm  trials={args.trials}", flush=True)
            record = run_vlm(folder, args.budgets, args.clips, args.trials, on_cell=print_vlm_cell)
            print(f"mlx-vlm: {record['mlx_vlm']}")
            _append(args.json, record)
            records.append(record)
            continue
        digests = shard_digests(folder)
        for prompt in args.prompt:
            record = run_cell(folder, prompt_len=prompt, gen=args.gen, trials=args.trials, gate_tokens=args.gate,
                              bandwidth_gbps=args.bandwidth, checkpoint_sha256=digests, logits_tol=args.logits_tol,
                              compute_dtype=getattr(mx, args.compute_dtype) if args.compute_dtype else None)
            print_cell(record)
            _append(args.json, record)
            records.append(record)
    return records


def cli() -> None:
    """`lantern-bench`: exit status 1 when a cell failed its correctness gate, so a script can stop on it."""
    records = main()
    sys.exit(1 if any(record.get("status") == "FAILED" for record in records) else 0)


if __name__ == "__main__":
    cli()
