"""The allocator setting both programs apply at start (schemas/memory.py)."""

from __future__ import annotations

import os

import pytest

from schemas import memory


def _glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="glibc only")
def test_glibc_takes_the_thresholds() -> None:
    assert memory.keep_large_buffers() is True
    big = bytes(32 * memory.MiB)  # allocations still work, above and below the thresholds
    assert len(big) == 32 * memory.MiB and len(bytearray(4 * memory.MiB)) == 4 * memory.MiB


def test_another_c_library_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_such_name(name: str) -> str:
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(memory.os, "confstr", no_such_name)
    assert memory.keep_large_buffers() is False
    monkeypatch.setattr(memory.os, "confstr", lambda name: None)  # what musl answers
    assert memory.keep_large_buffers() is False
