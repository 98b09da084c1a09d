#!/usr/bin/env bash
# lantern-bench under MLX CUDA on a lent GPU machine, which has CUDA 13 and its libraries but no MLX
# and no network. The mlx-cuda-13 wheel (90 MB) is larger than one call may carry, so it travels as an
# xz tar of its unpacked files, split over several calls (see tools/README.md).
#   bash tools/device_bench.sh stash DIR     keep the parts and wheels carried in DIR for a later call
#   bash tools/device_bench.sh install       join the parts, unpack them into python3's site-packages,
#                                            add mlx, mlx-lm and soundfile, and check MLX sees the GPU
#   bash tools/device_bench.sh bench ARGS    python3 -m engine.bench ARGS, checkpoints under /root/bench,
#                                            JSON lines to $OUT/bench.jsonl, the printout to $OUT/bench.log
set -euo pipefail
STASH=/root/lantern-wheels
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

case "${1:-}" in
  stash)
    [ -d "${2:-}" ] || { echo "usage: $0 stash DIR" >&2; exit 2; }
    mkdir -p "$STASH" && cp "$2"/* "$STASH"/ && ls -l "$STASH" ;;
  install)
    site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    cat "$STASH"/part.* | xz -d | tar -x -C "$site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$STASH"/*.whl
    # MLX compiles its quantized-matmul kernels at run time against the pip CUDA headers, whose
    # mma.h includes crt/mma.h, which only the full toolkit ships.
    [ -d "$CUDA_HOME/include/crt" ] || { echo "no CUDA toolkit headers at $CUDA_HOME (set CUDA_HOME)" >&2; exit 1; }
    ln -sfn "$CUDA_HOME/include/crt" "$site/nvidia/cu13/include/crt"
    python3 -c 'import mlx.core as mx; print(mx.__version__, mx.default_device(), (mx.ones(4) + 1).tolist())' ;;
  bench)
    shift
    mkdir -p /root/bench
    # MLX runs float32 matrix products as TF32 on tensor cores unless told not to: a 1e-3 relative
    # error per product, which the correctness gate would read as a difference between the engines.
    # Decode's matrix-vector kernels never use TF32, so the decode figures are unchanged.
    export MLX_ENABLE_TF32=${MLX_ENABLE_TF32:-0}
    # tee: what was printed comes back under $OUT even when a timeout kills the pipeline.
    PYTHONUNBUFFERED=1 python3 -m engine.bench --out /root/bench --json "${OUT:-/tmp}/bench.jsonl" "$@" 2>&1 |
      tee -a "${OUT:-/tmp}/bench.log" ;;
  *)
    echo "usage: $0 stash DIR | install | bench ARGS" >&2; exit 2 ;;
esac
