"""How a server process allocates memory.

glibc gives every thread that allocates its own heap arena (up to eight per core) and keeps what
is freed in each for reuse. A service scoring texts of every length from a pool of threads (the
micro-batcher's scoring thread, answers built off the event loop, onnxruntime's workers) ends up
holding freed memory in many arenas. Two arenas held less: in a 10-minute soak of mixed traffic
the memory held between batches stayed at 0.84-1.02 GB with two and rose to 0.89-1.24 GB with
glibc's default (`benchmarks/serve_soak.py`). An explicit `MALLOC_ARENA_MAX` is kept.
"""

from __future__ import annotations

import ctypes
import os
import sys

MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas() -> None:
    """At most `MALLOC_ARENA_MAX` (default 2) arenas, in this process (before its threads start)
    and in any it starts (glibc reads the variable when a process starts)."""
    arenas = int(os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS)))
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):  # not glibc (musl, for one): its allocator works otherwise
        pass
