"""Keep the C allocator from handing large buffers back to the kernel after every answer.

A page of a large file is a few megabytes that each side copies several times (read,
decode, JSON, WebSocket frame). glibc serves blocks that large with a fresh ``mmap``
and gives them back when freed, and trims the heap's free top above a small
threshold, so each page paid for the kernel mapping and zeroing every 4 KiB page
again: measured, that fault-and-zero was about half of the client's CPU time for a
ranged read (``BENCHMARKS.md``). Raising both thresholds lets each of the allocator's
arenas (the event loop's, and one per worker thread that allocates) keep up to
``TRIM_BYTES`` free for the next answer: that is the memory held on to after a large
read. Both programs call :func:`keep_large_buffers` once at start; it does nothing
where the C library is not glibc.
"""

from __future__ import annotations

import os

MiB = 1024 * 1024
#: Blocks below this come from the heap (and are reused) instead of a mapping of their own.
MMAP_THRESHOLD_BYTES = 16 * MiB
#: Free memory at the top of an arena is given back to the kernel only beyond this.
TRIM_BYTES = 32 * MiB
_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3


def keep_large_buffers() -> bool:
    """Apply the thresholds above to this process's allocator; whether both took (glibc only)."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # glibc answers "glibc 2.xx"; others raise or say nothing
            return False
        import ctypes  # here: a Python built without ctypes still starts

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (ImportError, OSError, ValueError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # Each on its own: a threshold refused (a 32-bit glibc caps the mmap one lower) keeps the other.
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    trimmed = mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    return bool(mapped) and bool(trimmed)
