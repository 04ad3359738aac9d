"""vidseg.allocator: glibc keeps freed memory for the next frame."""

from __future__ import annotations

import platform

import pytest

from vidseg import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_settings_once(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    calls = []
    real = allocator._mallopt

    def counting(option, value):
        calls.append((option, value))
        return real(option, value)

    monkeypatch.setattr(allocator, "_mallopt", counting)
    assert allocator.keep_freed_memory() is True  # glibc returned 1 for both options
    assert allocator.keep_freed_memory() is True
    # glibc's malloc.h: M_MMAP_MAX is -4 (0 = no mmap), M_TRIM_THRESHOLD is -1; mallopt takes an int.
    assert calls == [(-4, 0), (-1, 2**31 - 1)]


def test_elsewhere_it_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
