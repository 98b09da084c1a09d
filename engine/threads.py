"""Ending a worker thread that used the engine.

MLX keeps streams per thread. A worker thread's streams, left alone, are torn down while the process
exits, after the runtime they need has gone, and the process may abort ("terminate called without an
active exception", exit status 134: a crash report on a Mac). MLX releases the main thread's itself
at exit; a worker thread must release its own before it ends (mlx#3395, mlx#4373).
"""

from __future__ import annotations

import mlx.core as mx


def finish_thread() -> None:
    """Release the calling worker thread's MLX streams: its last engine call before it ends.

    Arrays computed on the thread stay readable elsewhere; the thread itself must run no more MLX work.
    """
    mx.clear_streams()
