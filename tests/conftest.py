"""Shared test settings: offscreen Qt everywhere, user data and caches in temporary folders."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("MPLBACKEND", "Agg")
if "MERGE_STUDIO_CACHE_DIR" not in os.environ:  # remembered hashes stay out of the user's cache
    _cache = tempfile.mkdtemp(prefix="merge-studio-test-cache-")
    os.environ["MERGE_STUDIO_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
if "MERGE_STUDIO_DATA_DIR" not in os.environ:  # merge history (and demo models) stay out of the user's data
    _data = tempfile.mkdtemp(prefix="merge-studio-test-data-")
    os.environ["MERGE_STUDIO_DATA_DIR"] = _data
    atexit.register(shutil.rmtree, _data, ignore_errors=True)
