"""Freed memory handed back to the operating system, for the demo's processes.

glibc keeps the pages a Python or torch object freed for later reuse, so a
long-lived process that allocates a round's worth of tensors and frees most of
them stays at its high-water mark. Measured on the default fleet (rounds 8-15,
docs/demo.md): the training process sat at 570-625 MB after each round where
440 MB were in use. `malloc_trim` returns the free pages in well under a
millisecond; without glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # another C library
        return None


def give_back_freed_memory() -> None:
    """Return the allocator's free pages to the OS (glibc's `malloc_trim(0)`)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
