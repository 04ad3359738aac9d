"""Keep freed memory in the process for the next frame (glibc only).

Streaming allocates the same large tensors on every frame. By default glibc serves each block over 128 KiB-32 MiB
with its own ``mmap`` and gives it back with ``munmap`` when it is freed, so the next frame's tensor starts on fresh
pages and pays one page fault per 4 KiB it writes. At 512x1024 that was a fifth of an int8 frame's time. ONNX Runtime
and OpenVINO avoid it with their own memory arenas; PyTorch on CPU uses malloc, so vidseg tells glibc to serve every
block from its heap and to keep freed memory (up to 2 GiB) for reuse instead of returning it to the system.

The setting is process-wide: the process keeps the memory of its largest frame after it is done with it. It is
made once, by ``vidseg.Segmenter`` on the CPU; elsewhere (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # free memory at the top of the heap kept before it is returned to the system
_M_MMAP_MAX = -4  # the most blocks served by mmap at once: 0 serves every block from the heap
_KEEP_BYTES = 2**31 - 1  # mallopt takes an int

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep freed memory for reuse; True where it applied.
    Called again, it returns the first call's answer without calling glibc again."""
    global _applied
    if _applied is None:
        _applied = _mallopt(_M_MMAP_MAX, 0) and _mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES)
    return _applied


def _mallopt(option: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(option, value) == 1
