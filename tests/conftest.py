"""Shared test settings: offscreen Qt everywhere, user data in a temporary folder."""

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
