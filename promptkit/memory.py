"""Give memory that was freed back to the operating system.

glibc keeps freed blocks below its (self-raising) mmap threshold inside the process, so the
temporaries of a forward pass (or the slices read while loading) stay resident after use
and the heap creeps up with fragmentation: the peak RSS of a long scoring run then drifts
upward with the number of batches, by chance. ``malloc_trim`` hands the free blocks back;
promptkit calls it after each scoring batch and after loading. It does not touch live
memory, and costs far less than a batch.
"""

from __future__ import annotations

import ctypes

try:
    _TRIM = ctypes.CDLL(None).malloc_trim
except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
    _TRIM = None


def release_freed_memory() -> None:
    """``malloc_trim(0)`` where the C library has it; a no-op elsewhere."""
    if _TRIM is not None:
        _TRIM(0)
