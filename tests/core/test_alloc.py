"""The allocator tuning that lets a streaming merge reuse its chunk buffers."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from merge_studio.core.alloc import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"), reason="glibc only")
def test_glibc_thresholds_are_set_once_and_report_success():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
